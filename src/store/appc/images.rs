//! The appc image store: imported images under `<store>/appc/images/<id>/`, found by
//! id or by name and labels, fetched by simple discovery when missing, with their
//! dependencies resolved into the order a rootfs is assembled in.
//!
//! ```text
//! <store>/appc/
//! ├── images/sha512-<128 hex>/   manifest, rootfs/, signature.asc (when discovery found one)
//! ├── refs/<sha256 of key>.json  aci:PATH → image id, with the file's size and mtime
//! └── rendered/<sha256>/rootfs/  a dependency chain assembled and cut to its pathWhitelist
//! ```
//!
//! Policies: `missing` uses a stored match and discovers otherwise; `always`
//! discovers the requested image again (dependencies still come from the store when
//! they match); `never` uses the store only. Dependencies follow the spec: a pinned
//! `imageID` must be exactly that image; labels must match; `size` caps a download.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::discovery::{Discovery, DiscoveryError, DEFAULT_PREFIX};
use super::import::{import, AciSource, ImportError, APPC_IMAGES_DIR, MANIFEST_FILE, ROOTFS_DIR};
use super::spec::{dependency_order, host_labels, pick, AppcError, Candidate, Dependency, ImageManifest};
use crate::digest::Digest;
use crate::durable::{self, Commit};
use crate::layer::UnpackOptions;
use crate::reference::ImageId;
use crate::reference::{AppcRef, ImageRef};
use crate::store::{PullPolicy, Staging};
use crate::sys::{Context, SysError};

const REFS_DIR: &str = "appc/refs";
const RENDERED_DIR: &str = "appc/rendered";

/// Errors of the appc store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppcStoreError {
    /// A file-system operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// An ACI could not be imported.
    #[error(transparent)]
    Import(#[from] ImportError),
    /// Discovery failed.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// No stored image matches and fetching is not allowed (or not possible).
    #[error("appc image '{0}' is not in the store")]
    NotFound(String),
    /// A dependency could not be resolved.
    #[error("{image}: dependency {dependency}")]
    Dependency {
        /// The dependent image.
        image: String,
        /// The dependency as its dependent names it.
        dependency: String,
        /// Why.
        #[source]
        source: Box<AppcStoreError>,
    },
    /// The dependency graph is invalid (a cycle).
    #[error("{image}: invalid dependencies")]
    Graph {
        /// The requested image.
        image: String,
        /// Why.
        #[source]
        source: AppcError,
    },
}

type Result<T, E = AppcStoreError> = std::result::Result<T, E>;

/// One imported image.
#[derive(Debug, Clone)]
pub struct StoredAci {
    /// Its id.
    pub id: ImageId,
    /// Its manifest.
    pub manifest: ImageManifest,
    /// `<store>/appc/images/<id>`.
    pub dir: PathBuf,
    /// When it was imported, seconds since the epoch.
    pub imported_at: u64,
    /// The bytes of the uncompressed ACI; `None` for images imported before strata
    /// recorded it.
    pub size: Option<u64>,
}

impl StoredAci {
    /// The image's own files.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join(ROOTFS_DIR)
    }
}

/// An entry of `appc/images` that is not a valid image.
#[derive(Debug, Clone, Serialize)]
pub struct InvalidEntry {
    /// The directory name.
    pub entry: String,
    /// What is wrong.
    pub why: String,
}

/// A requested image with its dependencies, ready to provision.
#[derive(Debug, Clone)]
pub struct AppcImage {
    /// The normalized reference asked for.
    pub reference: String,
    /// The requested image.
    pub image: StoredAci,
    /// Every image of the rootfs, dependencies before dependents, the requested one last.
    pub chain: Vec<ImageId>,
    /// The directories a backend stacks, base first: each image's rootfs in chain
    /// order, or one rendered directory when the image has a `pathWhitelist`.
    pub layers: Vec<PathBuf>,
}

/// `refs/<sha256 of aci:PATH>.json`.
#[derive(Debug, Serialize, Deserialize)]
struct AciRecord {
    reference: String,
    image_id: ImageId,
    size: u64,
    mtime_ns: i64,
}

/// The appc half of the store (see the module docs).
#[derive(Debug, Clone)]
pub struct AppcStore {
    store_dir: PathBuf,
    staging: PathBuf,
    unpack: UnpackOptions,
    discovery_prefix: String,
    timeouts: (Duration, Duration),
}

impl AppcStore {
    /// The appc store inside the store directory `store_dir`; `staging` is the
    /// store's staging directory. Discovery uses `prefix` (default `https://`).
    pub fn new(
        store_dir: &Path,
        staging: &Path,
        unpack: UnpackOptions,
        prefix: Option<&str>,
        timeouts: (Duration, Duration),
    ) -> Self {
        Self {
            store_dir: store_dir.to_owned(),
            staging: staging.to_owned(),
            unpack,
            discovery_prefix: prefix.unwrap_or(DEFAULT_PREFIX).to_owned(),
            timeouts,
        }
    }

    fn images_dir(&self) -> PathBuf {
        self.store_dir.join(APPC_IMAGES_DIR)
    }

    /// Reads one image directory; `Err` says why it is not a valid image.
    fn load(&self, name: &str) -> std::result::Result<StoredAci, String> {
        let id: ImageId = name.parse().map_err(|e: crate::reference::BadImageId| e.to_string())?;
        let dir = self.images_dir().join(name);
        let rootfs = dir.join(ROOTFS_DIR);
        if rootfs.is_symlink() || !rootfs.is_dir() {
            return Err("no rootfs directory".into());
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let file = std::fs::File::open(&manifest_path).map_err(|e| format!("manifest: {e}"))?;
        let bytes =
            crate::digest::read_bounded(file, super::MAX_MANIFEST_BYTES).map_err(|e| format!("manifest: {e}"))?;
        let manifest = ImageManifest::parse(&bytes).map_err(|e| e.to_string())?;
        let imported_at = std::fs::metadata(&dir)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let size = read_size(&dir);
        Ok(StoredAci { id, manifest, dir, imported_at, size })
    }

    /// Every valid image, and the names of invalid entries with the reason.
    pub fn scan(&self) -> Result<(Vec<StoredAci>, Vec<InvalidEntry>)> {
        let dir = self.images_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
            Err(e) => return Err(SysError::new("read", &dir, e).into()),
        };
        let (mut valid, mut invalid) = (Vec::new(), Vec::new());
        for entry in entries {
            let name = entry.context("read", &dir)?.file_name().to_string_lossy().into_owned();
            match self.load(&name) {
                Ok(image) => valid.push(image),
                Err(why) => invalid.push(InvalidEntry { entry: name, why }),
            }
        }
        valid.sort_by(|a, b| a.manifest.name.cmp(&b.manifest.name).then(a.id.cmp(&b.id)));
        Ok((valid, invalid))
    }

    /// Mesos' recover: every valid image is usable; each invalid entry is skipped with
    /// a warning naming it (it is left for an operator to look at, not deleted).
    /// Returns how many are valid and the skipped entries.
    pub fn recover(&self) -> Result<(usize, Vec<InvalidEntry>)> {
        let (valid, invalid) = self.scan()?;
        for bad in &invalid {
            tracing::warn!(entry = %self.images_dir().join(&bad.entry).display(), why = %bad.why, "skipping invalid appc image");
        }
        Ok((valid.len(), invalid))
    }

    /// The image with this id, if stored and valid.
    pub fn get(&self, id: &ImageId) -> Result<Option<StoredAci>> {
        if !self.images_dir().join(id.as_str()).exists() {
            return Ok(None);
        }
        Ok(self.load(id.as_str()).ok())
    }

    /// The best stored match for `name` and `labels` (Mesos' rules; tie-break in
    /// [`pick`]).
    pub fn find(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<Option<StoredAci>> {
        let (images, _) = self.scan()?;
        let matching: Vec<&StoredAci> =
            images.iter().filter(|i| i.manifest.matches(name, labels, host_labels())).collect();
        let candidates: Vec<Candidate<'_>> = matching
            .iter()
            .map(|i| Candidate { id: &i.id, manifest: &i.manifest, imported_at: i.imported_at })
            .collect();
        let Some(best) = pick(&candidates) else { return Ok(None) };
        Ok(matching.into_iter().find(|i| &i.id == best).cloned())
    }

    /// Removes an image (it must not be in use; the caller checks).
    pub fn remove(&self, id: &ImageId) -> Result<bool> {
        let dir = self.images_dir().join(id.as_str());
        if !dir.exists() {
            return Ok(false);
        }
        let trash = self.staging.join(format!("trash-appc-{}", uuid::Uuid::new_v4().simple()));
        std::fs::rename(&dir, &trash).context("rename", &dir)?;
        std::fs::remove_dir_all(&trash).context("remove", &trash)?;
        Ok(true)
    }

    /// Makes sure the image `reference` (`aci:` or `appc:`) and its dependencies are
    /// stored, following `policy`; returns them in assembly order.
    pub fn resolve(&self, reference: &ImageRef, policy: PullPolicy) -> Result<AppcImage> {
        let key = reference.cache_key();
        let image = match reference {
            ImageRef::Aci { path } => self.import_file(path, &key, policy)?,
            ImageRef::Appc(AppcRef::Id(id)) => self.get(id)?.ok_or_else(|| AppcStoreError::NotFound(key.clone()))?,
            ImageRef::Appc(AppcRef::Name { name, labels }) => {
                let stored = if policy == PullPolicy::Always { None } else { self.find(name, labels)? };
                match stored {
                    Some(image) => image,
                    None if policy == PullPolicy::Never => return Err(AppcStoreError::NotFound(key)),
                    None => self.discover(name, labels, None, None)?,
                }
            }
            _ => return Err(AppcStoreError::NotFound(format!("{key} is not an appc reference"))),
        };
        let mut known: HashMap<ImageId, StoredAci> = HashMap::new();
        known.insert(image.id.clone(), image.clone());
        let mut failure = None;
        let order = dependency_order(&image.id, |id| {
            let Some(dependent) = known.get(id).cloned() else {
                return Err(AppcError::MissingDependency(id.to_string()));
            };
            let mut ids = Vec::new();
            for dep in &dependent.manifest.dependencies {
                match self.resolve_dependency(dep, policy) {
                    Ok(found) => {
                        ids.push(found.id.clone());
                        known.insert(found.id.clone(), found);
                    }
                    Err(e) => {
                        let name = dependency_name(dep);
                        failure = Some(AppcStoreError::Dependency {
                            image: dependent.manifest.name.clone(),
                            dependency: name.clone(),
                            source: Box::new(e),
                        });
                        return Err(AppcError::MissingDependency(name));
                    }
                }
            }
            Ok(ids)
        });
        let chain = match (order, failure) {
            (Ok(chain), _) => chain,
            // The graph walk stopped on a dependency that could not be had: say why.
            (Err(_), Some(failure)) => return Err(failure),
            (Err(source), None) => return Err(AppcStoreError::Graph { image: key, source }),
        };
        let images: Vec<&StoredAci> = chain.iter().filter_map(|id| known.get(id)).collect();
        let layers = self.layers(&images)?;
        Ok(AppcImage { reference: key, image, chain, layers })
    }

    /// The directories a backend stacks for a resolved chain (the requested image
    /// last): each rootfs in order, or one render cut to the image's `pathWhitelist`.
    fn layers(&self, chain: &[&StoredAci]) -> Result<Vec<PathBuf>> {
        let whitelist = chain.last().map(|top| top.manifest.path_whitelist.as_slice()).unwrap_or_default();
        if whitelist.is_empty() {
            Ok(chain.iter().map(|i| i.rootfs()).collect())
        } else {
            Ok(vec![self.render(chain, whitelist)?])
        }
    }

    /// The directories of a chain recorded earlier (a rootfs remounted after a
    /// reboot); `None` when an image of it is not stored any more.
    pub fn chain_layers(&self, chain: &[ImageId]) -> Result<Option<Vec<PathBuf>>> {
        let mut images = Vec::new();
        for id in chain {
            match self.get(id)? {
                Some(image) => images.push(image),
                None => return Ok(None),
            }
        }
        let refs: Vec<&StoredAci> = images.iter().collect();
        self.layers(&refs).map(Some)
    }

    fn resolve_dependency(&self, dep: &Dependency, policy: PullPolicy) -> Result<StoredAci> {
        let labels: BTreeMap<String, String> = dep.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        let pinned = dep.image_id.as_deref().map(str::parse::<ImageId>).transpose().map_err(AppcError::from);
        let pinned = pinned.map_err(|e| AppcStoreError::Graph { image: dep.image_name.clone(), source: e })?;
        let stored = match &pinned {
            Some(id) => self.get(id)?,
            None => self.find(&dep.image_name, &labels)?,
        };
        match stored {
            Some(image) => Ok(image),
            None if policy == PullPolicy::Never => Err(AppcStoreError::NotFound(dependency_name(dep))),
            None => self.discover(&dep.image_name, &labels, pinned.as_ref(), dep.size),
        }
    }

    /// Fetches `name`/`labels` by discovery and imports it if it is what was asked.
    fn discover(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        pinned: Option<&ImageId>,
        size: Option<u64>,
    ) -> Result<StoredAci> {
        let discovery = Discovery::new(&self.discovery_prefix, self.timeouts.0, self.timeouts.1)?;
        let source = discovery.open(name, labels, size)?;
        let expect = |id: &ImageId, manifest: &ImageManifest| {
            if let Some(pinned) = pinned {
                if id != pinned {
                    return Err(format!("its id is {id}, the dependency pins {pinned}"));
                }
            }
            if !manifest.matches(name, labels, host_labels()) {
                return Err(format!(
                    "it is {} with labels {:?}, asked for {name} with {labels:?}",
                    manifest.name, manifest.labels
                ));
            }
            Ok(())
        };
        let (id, _) = import(&self.store_dir, &self.staging, source, &self.unpack, &expect)?;
        self.get(&id)?.ok_or_else(|| AppcStoreError::NotFound(id.to_string()))
    }

    /// `aci:PATH`: imported unless the same file (size and mtime) was imported before.
    fn import_file(&self, path: &Path, key: &str, policy: PullPolicy) -> Result<StoredAci> {
        let refs = self.store_dir.join(REFS_DIR);
        let record_name = format!("{}.json", Digest::of_bytes(key.as_bytes()).hex());
        let meta = std::fs::metadata(path).context("stat", path);
        if policy != PullPolicy::Always {
            let record: Option<AciRecord> =
                std::fs::read(refs.join(&record_name)).ok().and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(record) = record {
                let unchanged = meta.as_ref().is_ok_and(|m| {
                    m.size() == record.size && m.mtime_nsec() + m.mtime() * 1_000_000_000 == record.mtime_ns
                });
                if unchanged || policy == PullPolicy::Never {
                    if let Some(image) = self.get(&record.image_id)? {
                        return Ok(image);
                    }
                }
            }
            if policy == PullPolicy::Never {
                return Err(AppcStoreError::NotFound(key.to_owned()));
            }
        }
        let meta = meta?;
        let (id, _) = import(&self.store_dir, &self.staging, AciSource::file(path)?, &self.unpack, &|_, _| Ok(()))?;
        let record = AciRecord {
            reference: key.to_owned(),
            image_id: id.clone(),
            size: meta.size(),
            mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
        };
        std::fs::create_dir_all(&refs).context("create", &refs)?;
        let bytes = serde_json::to_vec_pretty(&record).map_err(|e| SysError::new("encode", &refs, e.into()))?;
        durable::write_file(&self.staging, &refs, &record_name, &bytes)?;
        self.get(&id)?.ok_or_else(|| AppcStoreError::NotFound(id.to_string()))
    }

    /// Assembles `images` (in order) into one tree holding only `whitelist` and the
    /// directories above it; cached by content, so every container of the image
    /// shares it.
    fn render(&self, images: &[&StoredAci], whitelist: &[String]) -> Result<PathBuf> {
        let mut key = String::new();
        for image in images {
            key.push_str(image.id.as_str());
            key.push('\n');
        }
        for path in whitelist {
            key.push_str(path);
            key.push('\n');
        }
        let name = Digest::of_bytes(key.as_bytes()).hex().to_owned();
        let parent = self.store_dir.join(RENDERED_DIR);
        let done = parent.join(&name).join(ROOTFS_DIR);
        if done.is_dir() {
            return Ok(done);
        }
        std::fs::create_dir_all(&parent).context("create", &parent)?;
        let staging = Staging::create(&self.staging).map_err(|e| match e {
            crate::store::StoreError::Sys(e) => e,
            other => SysError::new("stage", &self.staging, std::io::Error::other(other.to_string())),
        })?;
        let target = staging.path.join(ROOTFS_DIR);
        std::fs::create_dir(&target).context("create", &target)?;
        for image in images {
            crate::backend::apply_layer(&image.rootfs(), &target)?;
        }
        prune(&target, Path::new("/"), &Whitelist::new(whitelist))?;
        if let Commit::Done = durable::commit_dir(&staging.path, &parent, &name)? {
            tracing::info!(image = %images.last().map(|i| i.manifest.name.as_str()).unwrap_or_default(),
                rendered = %name, "appc dependency chain rendered with its pathWhitelist");
        }
        Ok(done)
    }
}

/// The recorded size. An image imported before strata wrote it may hold the archive's
/// own entry of that name: it is read without following links and bounded, and
/// anything but a number means unknown.
fn read_size(dir: &Path) -> Option<u64> {
    use std::os::fd::AsFd as _;

    use crate::sys::fs::{file_type, open_dir, open_file_at, stat_at};
    use rustix::fs::FileType;
    let dir = open_dir(dir).ok()?;
    let stat = stat_at(dir.as_fd(), super::SIZE_FILE.as_ref()).ok()??;
    if file_type(&stat) != FileType::RegularFile {
        return None; // a fifo would block the open
    }
    let file = open_file_at(dir.as_fd(), super::SIZE_FILE.as_ref()).ok()?;
    let bytes = crate::digest::read_bounded(file, 32).ok()?;
    std::str::from_utf8(&bytes).ok()?.trim().parse().ok()
}

fn dependency_name(dep: &Dependency) -> String {
    let labels: Vec<String> = dep.labels.iter().map(|l| format!("{}={}", l.name, l.value)).collect();
    match (&dep.image_id, labels.is_empty()) {
        (Some(id), _) => format!("{} ({id})", dep.image_name),
        (None, true) => dep.image_name.clone(),
        (None, false) => format!("{}?{}", dep.image_name, labels.join("&")),
    }
}

/// The paths a `pathWhitelist` keeps, and the directories leading to them.
struct Whitelist {
    kept: std::collections::BTreeSet<String>,
    parents: std::collections::BTreeSet<String>,
}

impl Whitelist {
    fn new(paths: &[String]) -> Self {
        let mut kept = std::collections::BTreeSet::new();
        let mut parents = std::collections::BTreeSet::new();
        for path in paths {
            let clean: String = path.trim_end_matches('/').to_owned();
            let clean = if clean.is_empty() { "/".to_owned() } else { clean };
            let mut at = clean.as_str();
            while let Some((parent, _)) = at.rsplit_once('/') {
                let parent = if parent.is_empty() { "/" } else { parent };
                parents.insert(parent.to_owned());
                if parent == "/" {
                    break;
                }
                at = parent;
            }
            kept.insert(clean);
        }
        Self { kept, parents }
    }
}

/// Removes from `dir` (which is `at` in the rootfs) what the whitelist does not keep:
/// the list is complete (appc spec), so a listed directory keeps only listed children.
/// Only real directories are entered; symlinks are kept or removed, never followed.
fn prune(dir: &Path, at: &Path, whitelist: &Whitelist) -> Result<(), SysError> {
    for entry in std::fs::read_dir(dir).context("read", dir)? {
        let entry = entry.context("read", dir)?;
        let path = entry.path();
        let inside = at.join(entry.file_name());
        let key = inside.to_string_lossy();
        let file_type = entry.file_type().context("stat", &path)?;
        // The list is complete: a listed directory keeps only its listed children.
        if whitelist.kept.contains(key.as_ref()) || whitelist.parents.contains(key.as_ref()) {
            if file_type.is_dir() {
                prune(&path, &inside, whitelist)?;
            }
            continue;
        }
        if file_type.is_dir() {
            std::fs::remove_dir_all(&path).context("remove", &path)?;
        } else {
            std::fs::remove_file(&path).context("remove", &path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitelist_keeps_listed_paths_and_their_parents_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        for d in ["etc/app", "etc/other", "usr/bin", "var"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for f in ["etc/app/conf", "etc/app/extra", "etc/passwd", "usr/bin/app", "usr/bin/sh", "var/x"] {
            std::fs::write(root.join(f), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let list = ["/etc/app/conf", "/usr/bin/app", "/var/", "/link"].map(String::from);
        prune(root, Path::new("/"), &Whitelist::new(&list)).unwrap();
        let mut left = Vec::new();
        let mut stack = vec![root.to_owned()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                left.push(p.strip_prefix(root).unwrap().display().to_string());
                if p.is_dir() && !p.is_symlink() {
                    stack.push(p);
                }
            }
        }
        left.sort();
        assert_eq!(left, ["etc", "etc/app", "etc/app/conf", "link", "usr", "usr/bin", "usr/bin/app", "var"]);
    }
}
