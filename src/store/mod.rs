//! The content-addressed image store: verified documents by digest, each layer
//! unpacked once (keyed by diff_id) and shared, and image records.
//!
//! ```text
//! <root>/store/
//! ├── blobs/sha256/<hex>              manifests and configs, exact verified bytes
//! ├── layers/sha256/<diff_id>/        one unpacked layer: rootfs/ (overlay whiteout form) + layer.json
//! ├── images/<sha256 of key>.json     reference → manifest digest, last use
//! ├── appc/                           appc images (see [`appc`])
//! └── staging/                        in-flight work, each entry flock'ed by its owner
//! ```
//!
//! Every write is staged and renamed into place (`durable`); a layer directory that
//! exists is complete. An image record is written last, so it never points at content
//! that is not there, except when someone deletes layers by hand: then the next use
//! fetches them again (Mesos' missing-layer self-heal).

pub mod appc;
mod describe;
mod flush;
mod sources;

pub use self::describe::{AppcDetails, ImageDetails, ImageSummary, LayerDetails};
pub use self::flush::WriteStamp;

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use self::sources::registry::RegistrySource;
use self::sources::{docker_archive::DockerArchive, oci_layout::OciLayout, Documents, Plan, PlannedLayer, Source};
use crate::digest::Digest;
use crate::durable::{self, Commit};
use crate::image::{media_type, Compression, Descriptor, Document, DocumentError, ImageConfig, Manifest, Platform};
use crate::layer::{self, UnpackError, UnpackOptions};
use crate::reference::{DockerRef, ImageRef};
use crate::sys::fs as sysfs;
use crate::sys::{Context, SysError};

const STORE_DIR: &str = "store";
const BLOBS_DIR: &str = "blobs/sha256";
const LAYERS_DIR: &str = "layers/sha256";
const IMAGES_DIR: &str = "images";
const STAGING_DIR: &str = "staging";
/// One flock file per layer being fetched, so that two processes fetch it once.
const LOCKS_DIR: &str = "locks";
/// Held shared by pulls, exclusively by garbage collection.
const STORE_LOCK: &str = "lock";
/// Inside a layer directory: the unpacked tree.
pub const LAYER_ROOTFS: &str = "rootfs";
/// Inside a layer directory: its facts.
const LAYER_META: &str = "layer.json";

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file-system operation on the store failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The image source is unusable or its content is invalid.
    #[error("{source_name}: {why}")]
    Source {
        /// The source, e.g. `oci:/path`.
        source_name: String,
        /// What is wrong.
        why: String,
    },
    /// A layer failed to unpack.
    #[error("failed to unpack layer {layer} of {image}")]
    Unpack {
        /// The image.
        image: String,
        /// The layer (digest, or position when the digest is not known in advance).
        layer: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// A stored document does not parse (the store was tampered with).
    #[error("stored document {digest} is invalid")]
    Document {
        /// Its digest.
        digest: Digest,
        /// Why.
        #[source]
        source: DocumentError,
    },
    /// The image is not in the store (and the policy forbids pulling it).
    #[error("image '{0}' is not in the store")]
    NotFound(String),
    /// The appc store failed.
    #[error(transparent)]
    Appc(#[from] appc::AppcStoreError),
    /// The registry failed.
    #[error("cannot pull {reference}")]
    Registry {
        /// The image.
        reference: String,
        /// Why.
        #[source]
        source: crate::registry::RegistryError,
    },
    /// The image is built for another platform than the one asked for, and has no
    /// other to choose from (a plain manifest, not an index).
    #[error("image {reference} is for {found}, not the requested {wanted}")]
    PlatformMismatch {
        /// The image.
        reference: String,
        /// The platform asked for, as `os/arch[/variant]`.
        wanted: String,
        /// The platform the image's config names.
        found: String,
    },
    /// A layer worker thread panicked.
    #[error("a layer worker failed unexpectedly")]
    Worker,
}

impl StoreError {
    /// Is this "the image is not in the store"?
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_) | Self::Appc(appc::AppcStoreError::NotFound(_)))
    }
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// When to go to the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Use the stored image if complete; fetch what is missing. The default.
    #[default]
    Missing,
    /// Resolve the reference again; layers already present are still reused.
    Always,
    /// Never fetch; fail if the image is not stored complete.
    Never,
}

impl std::str::FromStr for PullPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "missing" => Ok(Self::Missing),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!("unknown pull policy '{other}' (expected missing, always or never)")),
        }
    }
}

/// What one call may set beyond the store's options: a daemon serves callers that
/// each ask for a platform or bring credentials (see [`Store::for_call`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct CallOptions {
    /// The platform to pick from an index; strict (a single-platform image for another
    /// platform is refused). Default: the store's.
    pub platform: Option<Platform>,
    /// Registry credentials over every configured ones, as `--creds`. Default: none.
    pub credentials: Option<crate::registry::Credentials>,
}

impl CallOptions {
    /// Options that ask for `platform`.
    #[must_use]
    pub fn with_platform(mut self, platform: Option<Platform>) -> Self {
        self.platform = platform;
        self
    }

    /// Options that pull with `credentials`.
    #[must_use]
    pub fn with_credentials(mut self, credentials: Option<crate::registry::Credentials>) -> Self {
        self.credentials = credentials;
        self
    }
}

/// How the store behaves.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Unpacking limits and permissions.
    pub unpack: UnpackOptions,
    /// The platform to pick from indexes. Default: the host's.
    pub platform: Platform,
    /// Refuse an image without a choice of platforms (a plain manifest) whose config
    /// names another platform than [`Self::platform`]. Off by default: as with Docker,
    /// such an image is used, with a warning, when the platform is the host's default
    /// (emulated or mislabelled images); the CLI turns it on when a platform is asked
    /// for (`--platform`, or `platform` in the config file).
    pub strict_platform: bool,
    /// Like Mesos' `--docker_registry=/dir`: serve `docker://NAME[:TAG]` from
    /// `DIR/NAME:TAG.tar` or `DIR/NAME.tar` (docker save archives). Default: none.
    pub local_images_dir: Option<PathBuf>,
    /// Layers of one image fetched and unpacked at once. Default 3 (gzip inflate is
    /// single-core; parallelism comes from layers and from overlapping the network).
    pub parallel_layers: usize,
    /// How to reach registries.
    pub registry: crate::registry::RegistryOptions,
    /// Told about layer downloads (the CLI draws progress bars with it). Default: none.
    pub progress: Option<std::sync::Arc<dyn Progress>>,
    /// appc simple discovery prefix or template (Mesos'
    /// `--appc_simple_discovery_uri_prefix`). Default: `https://`.
    pub appc_discovery_prefix: Option<String>,
}

/// Receives progress of layer fetches; called from worker threads.
pub trait Progress: Send + Sync + std::fmt::Debug {
    /// A layer download starts; `total` is its size when known.
    fn layer_started(&self, layer: &str, total: Option<u64>);
    /// `bytes` more of the layer arrived.
    fn layer_advanced(&self, layer: &str, bytes: u64);
    /// The layer is unpacked and stored.
    fn layer_finished(&self, layer: &str);
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            unpack: UnpackOptions::default(),
            platform: Platform::host(),
            strict_platform: false,
            local_images_dir: None,
            parallel_layers: 3,
            registry: crate::registry::RegistryOptions::default(),
            progress: None,
            appc_discovery_prefix: None,
        }
    }
}

/// The on-disk image record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ImageRecord {
    /// The normalized reference (the cache key).
    pub reference: String,
    /// The platform manifest's digest.
    pub manifest_digest: Digest,
    /// The index it was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<Digest>,
    /// The platform it was chosen for from that index (a later request for another
    /// platform chooses again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// When it was pulled, seconds since the epoch.
    pub pulled_at: u64,
    /// When it was last pulled or used, seconds since the epoch.
    pub last_used: u64,
}

/// A stored layer's facts (`layer.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// Digest of the uncompressed tar (the directory's key).
    pub diff_id: Digest,
    /// Digest of the blob it was unpacked from.
    pub digest: Digest,
    /// Size of that blob.
    pub size: u64,
    /// Its compression.
    pub compression: Compression,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// When its data was written, if it was committed before a flush (see `flush`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<WriteStamp>,
}

/// A complete stored image, ready to provision.
#[derive(Debug, Clone)]
pub struct Image {
    /// The record.
    pub record: ImageRecord,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// The config's digest.
    pub config_digest: Digest,
    /// Layers, base first, with their directories.
    pub layers: Vec<StoredLayer>,
}

impl Image {
    /// The platform its config names (`os/arch[/variant]` when shown).
    pub fn platform(&self) -> Platform {
        platform_of(&self.config)
    }
}

/// An image of either kind (OCI/Docker or appc) as a backend takes it: the layer
/// directories base first, how to run it, and what garbage collection must keep.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The normalized reference.
    pub reference: String,
    /// The manifest digest (OCI) or image id (appc) of what was resolved.
    pub digest: String,
    /// The directories to stack, base first.
    pub layers: Vec<PathBuf>,
    /// How to run it.
    pub config: ImageConfig,
    /// The OCI layers used (diff_ids).
    pub layer_ids: Vec<Digest>,
    /// The appc images used, dependencies first.
    pub appc_images: Vec<appc::ImageId>,
}

impl From<Image> for Prepared {
    fn from(image: Image) -> Self {
        Self {
            reference: image.record.reference,
            digest: image.record.manifest_digest.to_string(),
            layers: image.layers.iter().map(|l| l.rootfs.clone()).collect(),
            layer_ids: image.layers.into_iter().map(|l| l.record.diff_id).collect(),
            config: image.config,
            appc_images: Vec::new(),
        }
    }
}

/// One layer of an [`Image`].
#[derive(Debug, Clone)]
pub struct StoredLayer {
    /// The layer's facts.
    pub record: LayerRecord,
    /// The unpacked tree (the overlay lowerdir).
    pub rootfs: PathBuf,
}

/// The store. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    options: StoreOptions,
    registry: std::sync::Arc<crate::registry::Registry>,
    flusher: flush::Flusher,
}

impl Store {
    /// Opens (creating if needed) the store under `root`.
    pub fn open(root: &Path, options: StoreOptions) -> Result<Self> {
        let dir = root.join(STORE_DIR);
        for sub in [BLOBS_DIR, LAYERS_DIR, IMAGES_DIR, STAGING_DIR] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).context("create", &path)?;
        }
        std::fs::create_dir_all(dir.join(LOCKS_DIR)).context("create", dir.join(LOCKS_DIR))?;
        let registry = std::sync::Arc::new(crate::registry::Registry::new(options.registry.clone()));
        let flusher = flush::Flusher::new(&dir, &dir.join(STAGING_DIR));
        Ok(Self { dir, options, registry, flusher })
    }

    /// The store's directory (`<root>/store`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The registry client (and its token cache) this store pulls with.
    pub fn registry(&self) -> &crate::registry::Registry {
        &self.registry
    }

    /// The options it was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.options
    }

    /// The same store seen by one call with its own platform or credentials: same
    /// directory, locks, flushes and token cache (tokens stay apart per holder).
    #[must_use]
    pub fn for_call(&self, call: &CallOptions) -> Self {
        let mut options = self.options.clone();
        if let Some(platform) = &call.platform {
            options.platform = platform.clone();
            options.strict_platform = true;
        }
        let registry = match &call.credentials {
            Some(credentials) => std::sync::Arc::new(self.registry.for_caller(credentials.clone())),
            None => std::sync::Arc::clone(&self.registry),
        };
        Self { dir: self.dir.clone(), options, registry, flusher: self.flusher.clone() }
    }

    /// The platform this store picks from indexes.
    pub fn platform(&self) -> &Platform {
        &self.options.platform
    }

    /// The directory of the layer with this diff_id (whether or not it exists).
    pub fn layer_dir(&self, diff_id: &Digest) -> PathBuf {
        self.dir.join(LAYERS_DIR).join(diff_id.hex())
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join(BLOBS_DIR).join(digest.hex())
    }

    fn record_path(&self, key: &str) -> PathBuf {
        self.dir.join(IMAGES_DIR).join(format!("{}.json", Digest::of_bytes(key.as_bytes()).hex()))
    }

    /// Makes sure the image is in the store, complete, following `policy`; returns it.
    /// Concurrent pulls of the same content in several processes are safe: the first
    /// commit of a layer wins and the others discard their copy.
    pub fn pull(&self, reference: &ImageRef, policy: PullPolicy) -> Result<Image> {
        if let Err(e) = self.flusher.flush_pending(flush::QUIET_AGE) {
            tracing::warn!(error = %e, "could not flush earlier layers; will try again");
        }
        let _gc = self.lock_store(false)?;
        let key = reference.cache_key();
        if policy != PullPolicy::Always {
            match self.lookup(&key)? {
                Lookup::Usable(image) => {
                    self.touch(&image.record)?;
                    return Ok(*image);
                }
                Lookup::OtherPlatform(found) if policy == PullPolicy::Never => {
                    return Err(StoreError::PlatformMismatch {
                        reference: key,
                        wanted: self.options.platform.to_string(),
                        found: found.to_string(),
                    });
                }
                _ if policy == PullPolicy::Never => return Err(StoreError::NotFound(key)),
                _ => {}
            }
        }
        let source = self.source_for(reference)?;
        self.fetch(&key, source.as_ref())
    }

    /// Makes sure an image of any kind is stored complete (see [`Store::pull`] and
    /// [`appc::AppcStore::resolve`]); returns what a backend needs.
    pub fn prepare(&self, reference: &ImageRef, policy: PullPolicy) -> Result<Prepared> {
        if !reference.is_appc() {
            return self.pull(reference, policy).map(Prepared::from);
        }
        let _gc = self.lock_store(false)?;
        let image = self.appc().resolve(reference, policy)?;
        Ok(Prepared {
            reference: image.reference,
            digest: image.image.id.to_string(),
            layers: image.layers,
            config: image.image.manifest.runtime_config(),
            layer_ids: Vec::new(),
            appc_images: image.chain,
        })
    }

    /// Flushes layers committed without a flush (see `flush`) and records it, so
    /// that they are trusted after a power cut. The daemon calls it periodically,
    /// `recover` once.
    pub fn flush(&self) -> Result<bool> {
        Ok(self.flusher.flush_pending(std::time::Duration::ZERO)?)
    }

    /// Removes every layer that may have been torn by a power cut (written in an earlier
    /// boot, no flush since); images using them fetch them again. Returns how many.
    pub fn drop_torn_layers(&self) -> Result<usize> {
        let dir = self.dir.join(LAYERS_DIR);
        let mut dropped = 0;
        for entry in std::fs::read_dir(&dir).context("read", &dir)? {
            let name = entry.context("read", &dir)?.file_name();
            let Ok(diff_id) = Digest::from_hex(&name.to_string_lossy()) else { continue };
            if self.layer_record(&diff_id).is_none() && !self.layer_dir(&diff_id).exists() {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    /// The appc half of the store.
    pub fn appc(&self) -> appc::AppcStore {
        let registry = &self.options.registry;
        appc::AppcStore::new(
            &self.dir,
            &self.dir.join(STAGING_DIR),
            self.options.unpack.clone(),
            self.options.appc_discovery_prefix.as_deref(),
            (registry.connect_timeout, registry.io_timeout),
        )
    }

    /// The stored image for `reference` if it serves a pull as it is: recorded, every
    /// layer present, and for the wanted platform. Fetches nothing.
    pub fn usable(&self, reference: &ImageRef) -> Result<Option<Image>> {
        Ok(match self.lookup(&reference.cache_key())? {
            Lookup::Usable(image) => Some(*image),
            _ => None,
        })
    }

    fn lookup(&self, key: &str) -> Result<Lookup> {
        let Some(image) = self.cached(key)? else { return Ok(Lookup::Absent) };
        let chosen_for = match &image.record.platform {
            Some(p) => self.options.platform.matches(p),
            None => self.fits_platform(key, &image.config, image.record.index_digest.is_some())?,
        };
        if !chosen_for {
            let found = platform_of(&image.config);
            tracing::info!(image = %key, stored = %found, wanted = %self.options.platform,
                "stored image is for another platform; its index is asked again");
            return Ok(Lookup::OtherPlatform(found));
        }
        if !image.layers.iter().all(|l| l.rootfs.is_dir()) {
            tracing::warn!(image = %key, "stored image has missing layers; fetching them again");
            return Ok(Lookup::Incomplete);
        }
        Ok(Lookup::Usable(Box::new(image)))
    }

    /// Every stored image of both kinds as a listing shows it (`strata images`, the
    /// daemon's `GET /v1/images`); a record that cannot be read is skipped with a warning.
    pub fn summaries(&self) -> Result<Vec<ImageSummary>> {
        let mut out = Vec::new();
        for record in self.images()? {
            let Ok(reference) = ImageRef::parse(&record.reference) else { continue };
            match self.get(&reference) {
                Ok(Some(image)) => out.push(ImageSummary::of_image(&image)),
                Ok(None) => {}
                Err(e) => tracing::warn!(image = %record.reference, error = %e, "skipping unreadable image"),
            }
        }
        let (appc_images, _) = self.appc().scan()?;
        out.extend(appc_images.iter().map(ImageSummary::of_appc));
        Ok(out)
    }

    /// The stored image for `reference`, if recorded (layers not checked).
    pub fn get(&self, reference: &ImageRef) -> Result<Option<Image>> {
        self.cached(&reference.cache_key())
    }

    /// Every image record, sorted by reference.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.dir.join(IMAGES_DIR);
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).context("read", &dir)? {
            let path = entry.context("read", &dir)?.path();
            if path.extension() != Some(OsStr::new("json")) {
                continue;
            }
            match read_json::<ImageRecord>(&path) {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "skipping unreadable image record")
                }
            }
        }
        out.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(out)
    }

    /// Forgets an image; its layers stay until garbage collection. `Ok(false)` if unknown.
    pub fn remove(&self, reference: &ImageRef) -> Result<bool> {
        self.remove_key(&reference.cache_key())
    }

    /// Forgets the image recorded under a cache key (see [`ImageRef::cache_key`]).
    pub fn remove_key(&self, key: &str) -> Result<bool> {
        let path = self.record_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SysError::new("remove", &path, e).into()),
        }
        let dir = self.dir.join(IMAGES_DIR);
        let fd = sysfs::open_dir(&dir).context("open", &dir)?;
        sysfs::fsync(fd.as_fd()).context("fsync", &dir)?;
        Ok(true)
    }

    /// Takes the store lock exclusively for garbage collection: waits for in-flight
    /// pulls (which hold it shared) and keeps new ones out while held.
    pub fn lock_for_gc(&self) -> Result<std::fs::File> {
        self.lock_store(true)
    }

    fn lock_store(&self, exclusive: bool) -> Result<std::fs::File> {
        let mode = if exclusive { sysfs::LockMode::Exclusive } else { sysfs::LockMode::Shared };
        Ok(sysfs::lock_file(&self.dir.join(STORE_LOCK), mode)?)
    }

    /// The diff_ids of a recorded image's layers (from its stored config).
    pub fn image_layers(&self, record: &ImageRecord) -> Result<Vec<Digest>> {
        let manifest = self.manifest_of(record)?;
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config = ImageConfig::parse(&config_bytes)
            .map_err(|source| StoreError::Document { digest: manifest.config.digest.clone(), source })?;
        Ok(config.rootfs.diff_ids)
    }

    /// The documents (manifest, config, index) a recorded image needs.
    pub fn image_blobs(&self, record: &ImageRecord) -> Result<Vec<Digest>> {
        let manifest = self.manifest_of(record)?;
        let mut blobs = vec![record.manifest_digest.clone(), manifest.config.digest.clone()];
        blobs.extend(record.index_digest.clone());
        Ok(blobs)
    }

    fn manifest_of(&self, record: &ImageRecord) -> Result<Manifest> {
        let bytes = self.read_blob(&record.manifest_digest)?;
        match Document::parse(&bytes, None)
            .map_err(|source| StoreError::Document { digest: record.manifest_digest.clone(), source })?
        {
            Document::Manifest(m) => Ok(m),
            Document::Index(_) => Err(StoreError::Document {
                digest: record.manifest_digest.clone(),
                source: DocumentError::Inconsistent("image record points at an index".into()),
            }),
        }
    }

    /// Every stored layer and its uncompressed size.
    pub fn layer_sizes(&self) -> Result<std::collections::BTreeMap<Digest, u64>> {
        let dir = self.dir.join(LAYERS_DIR);
        let mut out = std::collections::BTreeMap::new();
        for entry in std::fs::read_dir(&dir).context("read", &dir)? {
            let name = entry.context("read", &dir)?.file_name();
            let Some(digest) = name.to_str().and_then(|n| Digest::from_hex(n).ok()) else { continue };
            let size = self.layer_record(&digest).map_or(0, |r| r.uncompressed_size);
            out.insert(digest, size);
        }
        Ok(out)
    }

    /// Removes a layer: renamed into staging first (atomic: it is gone or whole), then
    /// deleted; an interrupted delete is finished by `clear_staging`.
    pub fn remove_layer(&self, diff_id: &Digest) -> Result<()> {
        let layers = self.dir.join(LAYERS_DIR);
        let staging = self.dir.join(STAGING_DIR);
        let from = sysfs::open_dir(&layers).context("open", &layers)?;
        let to = sysfs::open_dir(&staging).context("open", &staging)?;
        let trash = format!("gc-{}-{}", diff_id.short(), uuid::Uuid::new_v4().simple());
        sysfs::rename_noreplace(from.as_fd(), OsStr::new(diff_id.hex()), to.as_fd(), OsStr::new(&trash))
            .context("rename", self.layer_dir(diff_id))?;
        sysfs::fsync(from.as_fd()).context("fsync", &layers)?;
        sysfs::remove_all_at(to.as_fd(), OsStr::new(&trash)).context("remove", staging.join(&trash))?;
        tracing::info!(layer = %diff_id, "gc: layer removed");
        Ok(())
    }

    /// Removes every stored document not in `keep`; returns how many went.
    pub fn remove_blobs_except(&self, keep: &std::collections::BTreeSet<Digest>) -> Result<usize> {
        let dir = self.dir.join(BLOBS_DIR);
        let mut removed = 0;
        for entry in std::fs::read_dir(&dir).context("read", &dir)? {
            let entry = entry.context("read", &dir)?;
            let Some(digest) = entry.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) else { continue };
            if !keep.contains(&digest) {
                std::fs::remove_file(entry.path()).context("remove", entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Removes staging entries left by dead processes (their flock is free).
    /// Returns how many were removed.
    pub fn clear_staging(&self) -> Result<usize> {
        let staging = self.dir.join(STAGING_DIR);
        let fd = sysfs::open_dir(&staging).context("open", &staging)?;
        let mut removed = 0;
        for name in sysfs::list_dir(fd.as_fd()).context("list", &staging)? {
            let name = OsStr::new(name.to_str().unwrap_or_default());
            if name.is_empty() {
                continue;
            }
            let path = staging.join(name);
            // Directories are flock'ed by their owner; loose files are temp files of a
            // dead or finished writer (durable::write_file removes its own on error).
            if path.is_dir() {
                let Ok(entry) = sysfs::open_dir(&path) else {
                    continue;
                };
                if !sysfs::try_lock_exclusive(entry.as_fd()).context("flock", &path)? {
                    continue;
                }
            }
            sysfs::remove_all_at(fd.as_fd(), name).context("remove", &path)?;
            removed += 1;
        }
        Ok(removed)
    }

    fn source_for(&self, reference: &ImageRef) -> Result<Box<dyn Source>> {
        match reference {
            ImageRef::Aci { .. } | ImageRef::Appc(_) => Err(StoreError::Source {
                source_name: reference.cache_key(),
                why: "appc images are stored by the appc store (Store::prepare)".into(),
            }),
            ImageRef::Oci { path, tag } => Ok(Box::new(OciLayout::new(path, tag.as_deref(), &self.options.platform))),
            ImageRef::DockerArchive { path, name } => Ok(Box::new(DockerArchive::new(path, name.clone()))),
            ImageRef::Docker(name) => match &self.options.local_images_dir {
                Some(dir) => Ok(Box::new(DockerArchive::new(&local_archive_path(dir, name)?, Some(name.clone())))),
                None => Ok(Box::new(RegistrySource::new(&self.registry, name, &self.options.platform)?)),
            },
        }
    }

    fn cached(&self, key: &str) -> Result<Option<Image>> {
        let Some(record) = read_json::<ImageRecord>(&self.record_path(key))? else {
            return Ok(None);
        };
        if record.reference != key {
            return Ok(None); // a hash collision of keys is not a hit
        }
        let manifest_bytes = self.read_blob(&record.manifest_digest)?;
        let manifest = match Document::parse(&manifest_bytes, None)
            .map_err(|source| StoreError::Document { digest: record.manifest_digest.clone(), source })?
        {
            Document::Manifest(m) => m,
            Document::Index(_) => {
                return Err(StoreError::Document {
                    digest: record.manifest_digest.clone(),
                    source: DocumentError::Inconsistent("image record points at an index".into()),
                })
            }
        };
        let config_bytes = self.read_blob(&manifest.config.digest)?;
        let config = ImageConfig::parse(&config_bytes)
            .map_err(|source| StoreError::Document { digest: manifest.config.digest.clone(), source })?;
        let layers = manifest
            .layers
            .iter()
            .zip(&config.rootfs.diff_ids)
            .map(|(desc, diff_id)| StoredLayer {
                record: LayerRecord {
                    diff_id: diff_id.clone(),
                    digest: desc.digest.clone(),
                    size: desc.size,
                    compression: Compression::of_layer_media_type(&desc.media_type).unwrap_or(Compression::None),
                    uncompressed_size: self.layer_record(diff_id).map_or(0, |r| r.uncompressed_size),
                    written: None,
                },
                rootfs: self.layer_dir(diff_id).join(LAYER_ROOTFS),
            })
            .collect();
        Ok(Some(Image { record, config_digest: manifest.config.digest.clone(), manifest, config, layers }))
    }

    /// The record of a stored layer that can be trusted whole; a layer a power cut may
    /// have torn (see `flush`) is removed here, so that it is fetched again.
    fn layer_record(&self, diff_id: &Digest) -> Option<LayerRecord> {
        let record: LayerRecord = read_json(&self.layer_dir(diff_id).join(LAYER_META)).ok().flatten()?;
        if self.flusher.is_trusted(record.written.as_ref()) {
            return Some(record);
        }
        tracing::warn!(layer = %diff_id, "layer written before a reboot and never flushed; fetching it again");
        if let Err(e) = self.remove_layer(diff_id) {
            if self.layer_dir(diff_id).exists() {
                tracing::warn!(layer = %diff_id, error = %e, "could not remove a possibly torn layer");
            }
        }
        None
    }

    /// Reads a stored blob and checks it still hashes to its name.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).context("read", &path)?;
        if Digest::of_bytes(&bytes) != *digest {
            return Err(StoreError::Source {
                source_name: "store".into(),
                why: format!("stored blob {digest} is corrupt"),
            });
        }
        Ok(bytes)
    }

    fn write_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of_bytes(bytes);
        if !self.blob_path(&digest).exists() {
            durable::write_file(&self.dir.join(STAGING_DIR), &self.dir.join(BLOBS_DIR), digest.hex(), bytes)?;
        }
        Ok(digest)
    }

    /// Updates `last_used`, at most once a minute and without fsync: it only orders GC.
    fn touch(&self, record: &ImageRecord) -> Result<()> {
        let now = now();
        if now.saturating_sub(record.last_used) < 60 {
            return Ok(());
        }
        self.write_record(&ImageRecord { last_used: now, ..record.clone() }, false)
    }

    fn write_record(&self, record: &ImageRecord, durable_write: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| StoreError::Source {
            source_name: "store".into(),
            why: format!("cannot encode image record: {e}"),
        })?;
        let path = self.record_path(&record.reference);
        let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default().to_owned();
        let (staging, images) = (self.dir.join(STAGING_DIR), self.dir.join(IMAGES_DIR));
        if durable_write {
            durable::write_file(&staging, &images, &name, &bytes)?;
        } else {
            durable::write_file_relaxed(&staging, &images, &name, &bytes)?;
        }
        Ok(())
    }

    /// Is an image with this config what the wanted platform asks for? An image chosen
    /// from an index must match (else `Ok(false)`: choose again); a single-platform
    /// image that does not match is refused when the platform is strict, else used with
    /// a warning. A config that names no platform fits anything.
    fn fits_platform(&self, key: &str, config: &ImageConfig, from_index: bool) -> Result<bool> {
        let found = platform_of(config);
        if found.os.is_empty() || found.architecture.is_empty() || self.options.platform.matches(&found) {
            return Ok(true);
        }
        if from_index {
            return Ok(false);
        }
        if self.options.strict_platform {
            return Err(StoreError::PlatformMismatch {
                reference: key.to_owned(),
                wanted: self.options.platform.to_string(),
                found: found.to_string(),
            });
        }
        tracing::warn!(image = %key, image_platform = %found, host = %self.options.platform,
            "the image is for another platform than this host's");
        Ok(true)
    }

    fn fetch(&self, key: &str, source: &dyn Source) -> Result<Image> {
        let plan = source.resolve()?;
        // Before any layer is fetched: an image for the wrong platform costs nothing.
        let (config_bytes, from_index) = match &plan.documents {
            Documents::Verbatim { config_bytes, index_digest, .. } => (Some(config_bytes), index_digest.is_some()),
            Documents::Synthesized { config_bytes, .. } => (config_bytes.as_ref(), false),
        };
        if let Some(config) = config_bytes.and_then(|b| ImageConfig::parse(b).ok()) {
            self.fits_platform(key, &config, from_index)?;
        }
        let unpacked = self.fetch_layers(key, source, &plan)?;
        let (manifest_bytes, index_digest) = match &plan.documents {
            Documents::Verbatim { manifest_bytes, config_bytes, index_digest, .. } => {
                self.write_blob(config_bytes)?;
                (manifest_bytes.clone(), index_digest.clone())
            }
            Documents::Synthesized { config_bytes, legacy_config } => {
                let config_bytes = match (config_bytes, legacy_config) {
                    (Some(bytes), _) => bytes.clone(),
                    (None, Some(legacy)) => legacy_to_config(legacy, &unpacked),
                    (None, None) => {
                        return Err(StoreError::Source {
                            source_name: source.describe(),
                            why: "no image config".into(),
                        })
                    }
                };
                let config_digest = self.write_blob(&config_bytes)?;
                (synthesize_manifest(&config_digest, config_bytes.len() as u64, &unpacked), None)
            }
        };
        let manifest_digest = self.write_blob(&manifest_bytes)?;
        let now = now();
        let platform = index_digest.is_some().then(|| self.options.platform.clone());
        let record = ImageRecord {
            reference: key.to_owned(),
            manifest_digest,
            index_digest,
            platform,
            pulled_at: now,
            last_used: now,
        };
        self.write_record(&record, true)?;
        tracing::info!(image = %key, manifest = %record.manifest_digest, layers = unpacked.len(), "image stored");
        self.cached(key)?.ok_or_else(|| StoreError::NotFound(key.to_owned()))
    }

    /// Unpacks every layer not already present, `parallel_layers` at a time, and
    /// returns the facts of all of them in order.
    fn fetch_layers(&self, key: &str, source: &dyn Source, plan: &Plan) -> Result<Vec<LayerRecord>> {
        let mut results: Vec<Option<LayerRecord>> =
            plan.layers.iter().map(|l| l.expected.diff_id.as_ref().and_then(|d| self.layer_record(d))).collect();
        let todo: Vec<usize> = (0..plan.layers.len()).filter(|&i| results[i].is_none()).collect();
        let workers = self.options.parallel_layers.clamp(1, 16).min(todo.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let Some(&i) = todo.get(n) else { return Ok(()) };
                            let record = self.fetch_layer(key, source, i, &plan.layers[i])?;
                            done.lock().map_err(|_| StoreError::Worker)?.push((i, record));
                        }
                    })
                })
                .collect();
            for handle in handles {
                handle.join().map_err(|_| StoreError::Worker)??;
            }
            Ok::<(), StoreError>(())
        })?;
        for (i, record) in done.into_inner().map_err(|_| StoreError::Worker)? {
            results[i] = Some(record);
        }
        results.into_iter().map(|r| r.ok_or(StoreError::Worker)).collect()
    }

    fn fetch_layer(&self, key: &str, source: &dyn Source, index: usize, layer: &PlannedLayer) -> Result<LayerRecord> {
        let label = layer.expected.digest.as_ref().map_or_else(|| format!("#{}", index + 1), ToString::to_string);
        // Single flight across threads and processes: whoever holds the layer's lock
        // fetches it; the others wait, then find it stored.
        let lock_key = layer.expected.diff_id.as_ref().or(layer.expected.digest.as_ref());
        let _lock = match lock_key {
            Some(d) => Some(self.lock_layer(d)?),
            None => None,
        };
        if let Some(record) = layer.expected.diff_id.as_ref().and_then(|d| self.layer_record(d)) {
            tracing::debug!(layer = %record.diff_id, "layer stored meanwhile by another pull");
            return Ok(record);
        }
        let progress = self.options.progress.clone();
        if let Some(p) = &progress {
            p.layer_started(&label, layer.expected.size);
        }
        let staging = Staging::create(&self.dir.join(STAGING_DIR))?;
        let rootfs = staging.path.join(LAYER_ROOTFS);
        std::fs::create_dir(&rootfs).context("create", &rootfs)?;
        let blob = source.open_layer(index, layer)?;
        let blob = ProgressReader { inner: blob, progress: progress.as_deref(), label: &label };
        let started = std::time::Instant::now();
        let unpacked = layer::unpack(blob, &layer.expected, &rootfs, &self.options.unpack)
            .map_err(|source| StoreError::Unpack { image: key.to_owned(), layer: label.clone(), source })?;
        if unpacked.stats.skipped > 0 {
            tracing::warn!(
                layer = %unpacked.diff_id,
                skipped = unpacked.stats.skipped,
                "skipped device nodes (not allowed: unpack.allow_devices) or aufs metadata"
            );
        }
        // Every data write of the layer is done: stamp it (the flush protocol needs the
        // stamp taken after them).
        let record = LayerRecord {
            diff_id: unpacked.diff_id.clone(),
            digest: unpacked.digest.clone(),
            size: unpacked.size,
            compression: unpacked.compression,
            uncompressed_size: unpacked.uncompressed_size,
            written: Some(self.flusher.stamp()),
        };
        let meta = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Source {
            source_name: "store".into(),
            why: format!("cannot encode layer record: {e}"),
        })?;
        let meta_path = staging.path.join(LAYER_META);
        std::fs::write(&meta_path, meta).context("write", &meta_path)?;
        let committed = durable::commit_dir_unflushed(&staging.path, &self.dir.join(LAYERS_DIR), record.diff_id.hex())?;
        self.flusher.note_commit()?;
        match committed {
            Commit::Done => tracing::info!(
                layer = %record.diff_id,
                bytes = record.uncompressed_size,
                entries = unpacked.stats.entries,
                ms = started.elapsed().as_millis() as u64,
                "layer unpacked"
            ),
            Commit::AlreadyPresent => {
                tracing::debug!(layer = %record.diff_id, "layer committed by another writer")
            }
        }
        if let Some(p) = &progress {
            p.layer_finished(&label);
        }
        Ok(record)
    }

    fn lock_layer(&self, digest: &Digest) -> Result<std::fs::File> {
        let path = self.dir.join(LOCKS_DIR).join(format!("{}.lock", digest.hex()));
        Ok(sysfs::lock_file(&path, sysfs::LockMode::Exclusive)?)
    }
}

/// Counts the bytes of a layer blob for a [`Progress`].
struct ProgressReader<'a, R> {
    inner: R,
    progress: Option<&'a dyn Progress>,
    label: &'a str,
}

impl<R: std::io::Read> std::io::Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(p) = self.progress {
            p.layer_advanced(self.label, n as u64);
        }
        Ok(n)
    }
}

/// A private staging directory, flock'ed while alive and removed on drop (whether
/// its content was committed away or not).
struct Staging {
    path: PathBuf,
    parent: OwnedFd,
    _lock: OwnedFd,
}

impl Staging {
    fn create(staging_root: &Path) -> Result<Self> {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let path = staging_root.join(&name);
        std::fs::create_dir(&path).context("create", &path)?;
        let lock = sysfs::open_dir(&path).context("open", &path)?;
        sysfs::lock_exclusive(lock.as_fd()).context("flock", &path)?;
        let parent = sysfs::open_dir(staging_root).context("open", staging_root)?;
        Ok(Self { path, parent, _lock: lock })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Some(name) = self.path.file_name() {
            if let Err(e) = sysfs::remove_all_at(self.parent.as_fd(), name) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove staging directory");
            }
        }
    }
}

/// `DIR/NAME:TAG.tar`, then `DIR/NAME.tar`, with NAME docker's short form.
fn local_archive_path(dir: &Path, name: &DockerRef) -> Result<PathBuf> {
    let familiar = name.familiar_name();
    let mut candidates = Vec::new();
    if let Some(tag) = name.tag() {
        candidates.push(dir.join(format!("{familiar}:{tag}.tar")));
    }
    candidates.push(dir.join(format!("{familiar}.tar")));
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| StoreError::Source {
        source_name: format!("local image directory {}", dir.display()),
        why: format!(
            "no archive for '{name}' (looked for {})",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// What the store holds for a key, as a pull sees it.
enum Lookup {
    /// Complete and for the wanted platform.
    Usable(Box<Image>),
    /// Chosen from an index for this other platform.
    OtherPlatform(Platform),
    /// A layer directory is missing (removed by hand, or torn by a power cut).
    Incomplete,
    /// Not recorded.
    Absent,
}

/// The platform an image config names.
fn platform_of(config: &ImageConfig) -> Platform {
    Platform { os: config.os.clone(), architecture: config.architecture.clone(), variant: config.variant.clone() }
}

fn synthesize_manifest(config_digest: &Digest, config_size: u64, layers: &[LayerRecord]) -> Vec<u8> {
    let descriptor = |media_type: &str, digest: &Digest, size: u64| Descriptor {
        media_type: media_type.to_owned(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: Default::default(),
    };
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media_type::OCI_MANIFEST,
        "config": descriptor(media_type::OCI_CONFIG, config_digest, config_size),
        "layers": layers.iter().map(|l| descriptor(l.compression.oci_layer_media_type(), &l.digest, l.size)).collect::<Vec<_>>(),
    });
    serde_json::to_vec(&manifest).unwrap_or_default()
}

/// Builds an OCI config from a legacy `<id>/json` and the diff_ids found by unpacking.
fn legacy_to_config(legacy: &serde_json::Value, layers: &[LayerRecord]) -> Vec<u8> {
    let field = |k: &str| legacy.get(k).cloned().unwrap_or(serde_json::Value::Null);
    let runtime = match legacy.get("config") {
        Some(c) if !c.is_null() => c.clone(),
        _ => field("container_config"),
    };
    let config = serde_json::json!({
        "architecture": legacy.get("architecture").and_then(|v| v.as_str()).unwrap_or("amd64"),
        "os": legacy.get("os").and_then(|v| v.as_str()).unwrap_or("linux"),
        "created": field("created"),
        "author": field("author"),
        "config": runtime,
        "rootfs": { "type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>() },
    });
    serde_json::to_vec(&config).unwrap_or_default()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| StoreError::Source {
            source_name: "store".into(),
            why: format!("{} is corrupt: {e}", path.display()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SysError::new("read", path, e).into()),
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
