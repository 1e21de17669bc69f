//! The provisioner: rootfs per container from an image, with the Mesos layout,
//! destroy, and recovery after a crash at any point.
//!
//! A rootfs moves through three on-disk states, each made durable before the next
//! step: a record in state `provisioning` → the rootfs dir (mounted or filled) → the
//! record in state `ready`. Destroy first writes a `destroying` marker in the
//! container dir. `recover` reads only the disk (and `/proc/self/mountinfo`): a rootfs
//! without a `ready` record, a container marked `destroying`, and every container not
//! named alive are torn down; mounts under the root that belong to nothing are undone.
//!
//! Concurrency: provision and destroy hold a shared lock on the provisioner and an
//! exclusive lock per container; recover holds the provisioner lock exclusively. Two
//! provisions of the same container id run one after the other and both succeed, each
//! adding a rootfs (as Mesos does for image volumes); destroy waits for an in-flight
//! provision of its container.

mod id;
pub mod paths;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use self::id::{ContainerId, ContainerPath, InvalidId, RootfsId};
use crate::backend::{self, Backend, BackendError, BackendKind};
use crate::digest::Digest;
use crate::durable;
use crate::image::ImageConfig;
use crate::reference::ImageRef;
use crate::store::{CallOptions, PullPolicy, Store, StoreError};
use crate::sys::fs as sysfs;
use crate::sys::{Context, SysError};

/// The marker a destroy leaves in a container dir until it is done.
const DESTROYING_MARKER: &str = "destroying";
/// The provisioner-wide lock file.
const PROVISIONER_LOCK: &str = "lock";

/// Errors of the provisioner.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProvisionError {
    /// A bad container id.
    #[error(transparent)]
    InvalidId(#[from] InvalidId),
    /// The image could not be had.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A backend failed or is unusable.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A file-system operation failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// No backend can work here.
    #[error("no usable provisioner backend: {0}")]
    NoUsableBackend(String),
    /// The parent of a nested container does not exist.
    #[error("parent container '{0}' does not exist")]
    NoParent(String),
    /// Recover found rootfses of a backend this process cannot use.
    #[error("container '{container}' has rootfses of backend {backend}, which is not usable here ({why}); nothing was deleted")]
    BackendUnavailable {
        /// The container.
        container: String,
        /// The backend.
        backend: String,
        /// Why it is unusable.
        why: String,
    },
    /// Some of a container's state could not be removed (still busy); a later destroy
    /// or recover retries.
    #[error("could not remove all of container '{container}': {why}")]
    Busy {
        /// The container.
        container: String,
        /// What was left.
        why: String,
    },
    /// A stored record is unreadable.
    #[error("record {} is corrupt: {why}", path.display())]
    Record {
        /// The record.
        path: PathBuf,
        /// Why.
        why: String,
    },
}

type Result<T, E = ProvisionError> = std::result::Result<T, E>;

/// The state of one rootfs, as recorded on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootfsState {
    /// Being made (or crashed half way): recover removes it. A rootfs with no record
    /// at all is incomplete too.
    Provisioning,
    /// Handed out.
    Ready,
}

/// `records/<rootfs_id>.json`: what a rootfs was made from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsRecord {
    /// The rootfs id.
    pub rootfs_id: RootfsId,
    /// The backend.
    pub backend: BackendKind,
    /// The image's normalized reference.
    pub image: String,
    /// The image's manifest digest (OCI) or image id (appc).
    pub manifest_digest: String,
    /// The layers' diff_ids, base first (what GC must keep).
    pub layers: Vec<Digest>,
    /// The appc images used, dependencies first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub appc_images: Vec<crate::store::appc::ImageId>,
    /// Provisioning or ready.
    pub state: RootfsState,
    /// Seconds since the epoch.
    pub created: u64,
}

/// What the rootfses on disk use (see [`Provisioner::images_in_use`]).
#[derive(Debug, Default)]
pub struct InUse {
    /// Image references (cache keys).
    pub images: BTreeSet<String>,
    /// OCI layers (diff_ids).
    pub layers: BTreeSet<Digest>,
    /// appc images.
    pub appc: BTreeSet<crate::store::appc::ImageId>,
}

/// The result of a provision.
#[derive(Debug, Clone, Serialize)]
pub struct Provisioned {
    /// The container.
    pub container: ContainerPath,
    /// The new rootfs' id.
    pub rootfs_id: RootfsId,
    /// The rootfs path to hand to a runtime.
    pub rootfs: PathBuf,
    /// The backend used.
    pub backend: BackendKind,
    /// The image's normalized reference.
    pub image: String,
    /// The image's manifest digest (OCI) or image id (appc).
    pub image_digest: String,
    /// The image config (entrypoint, env, …).
    pub config: ImageConfig,
    /// overlay: the writable upper dir (Mesos' ephemeral volume).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upper_dir: Option<PathBuf>,
    /// overlay: the work dir.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_dir: Option<PathBuf>,
}

/// What destroy found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destroyed {
    /// The container existed and is gone.
    Destroyed,
    /// There was no such container (not an error).
    NotFound,
}

/// A container, for listings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// The container (nested: `parent/child`).
    pub container: ContainerPath,
    /// Its rootfses.
    pub rootfses: Vec<RootfsInfo>,
    /// Is a destroy under way (or interrupted)?
    pub destroying: bool,
}

/// A rootfs, for listings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsInfo {
    /// The id.
    pub rootfs_id: RootfsId,
    /// The backend.
    pub backend: BackendKind,
    /// Where it is.
    pub path: PathBuf,
    /// The record, if one was written.
    pub record: Option<RootfsRecord>,
}

/// What recover did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RecoverReport {
    /// Containers kept.
    pub kept: Vec<String>,
    /// Containers destroyed (orphans, interrupted destroys, never completed).
    pub destroyed: Vec<String>,
    /// Incomplete rootfses removed from kept containers.
    pub incomplete_rootfses_removed: usize,
    /// Kept rootfses whose mount was gone (e.g. after a reboot) and was made again.
    pub remounted: usize,
    /// Stray mounts under the root undone.
    pub stray_mounts_unmounted: usize,
    /// Store staging entries removed.
    pub staging_cleared: usize,
    /// Store layers removed because a power cut may have torn them (fetched again on use).
    pub torn_layers_dropped: usize,
    /// Rootfses that could not be remounted after a reboot (a layer was gone), removed.
    pub unmountable_rootfses_removed: usize,
    /// Valid appc images in the store.
    pub appc_images: usize,
    /// Invalid appc store entries, skipped (left for an operator, not deleted).
    pub appc_skipped: Vec<crate::store::appc::InvalidEntry>,
}

/// Mesos' destroy error counters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rootfs dirs that could not be removed (EBUSY …).
    pub remove_rootfs_errors: AtomicU64,
    /// Container dirs that could not be removed.
    pub remove_container_errors: AtomicU64,
}

/// Named points where a test can make the process die (`SIGKILL`), to prove recovery.
#[derive(Debug, Clone, Default)]
pub struct CrashPoints(Option<String>);

impl CrashPoints {
    /// Dies at the point named `name` (`provision:mounted`, …), if given.
    pub fn at(name: Option<String>) -> Self {
        Self(name)
    }

    fn check(&self, point: &str) {
        if self.0.as_deref() == Some(point) {
            tracing::warn!(point, "crash point reached: killing this process");
            let _ = rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        }
    }
}

/// The provisioner. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Provisioner {
    dir: PathBuf,
    store: Store,
    backends: BTreeMap<BackendKind, Arc<dyn Backend>>,
    unusable: BTreeMap<BackendKind, String>,
    default_backend: BackendKind,
    crash: CrashPoints,
    counters: Counters,
}

impl Provisioner {
    /// Creates the provisioner under `root` (next to the store), probing every backend
    /// once. `default_backend` None: overlay when usable, else copy. A requested default
    /// that is not usable is an error now, not at the first provision.
    pub fn new(root: &Path, store: Store, default_backend: Option<BackendKind>, crash: CrashPoints) -> Result<Self> {
        let dir = root.join(paths::PROVISIONER_DIR);
        for sub in [paths::CONTAINERS_DIR, paths::LOCKS_DIR] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).context("create", &path)?;
        }
        let mut backends: BTreeMap<BackendKind, Arc<dyn Backend>> = BTreeMap::new();
        let mut unusable = BTreeMap::new();
        for kind in BackendKind::ALL {
            match backend::probe(kind, store.dir(), &dir) {
                Ok(b) => {
                    backends.insert(kind, Arc::from(b));
                }
                Err(e) => {
                    unusable.insert(kind, e.to_string());
                }
            }
        }
        let default_backend = match default_backend {
            Some(kind) if backends.contains_key(&kind) => kind,
            Some(kind) => {
                return Err(ProvisionError::NoUsableBackend(
                    unusable.get(&kind).cloned().unwrap_or_else(|| kind.to_string()),
                ))
            }
            None => {
                [BackendKind::Overlay, BackendKind::Copy].into_iter().find(|k| backends.contains_key(k)).ok_or_else(
                    || ProvisionError::NoUsableBackend(unusable.values().cloned().collect::<Vec<_>>().join("; ")),
                )?
            }
        };
        tracing::debug!(default = %default_backend, usable = ?backends.keys().collect::<Vec<_>>(), "backends probed");
        Ok(Self { dir, store, backends, unusable, default_backend, crash, counters: Counters::default() })
    }

    /// The backend used when none is named.
    pub fn default_backend(&self) -> BackendKind {
        self.default_backend
    }

    /// Dies here if a test asked for this crash point (see [`CrashPoints`]).
    pub fn crash_point(&self, name: &str) {
        self.crash.check(name);
    }

    /// The destroy error counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The store it provisions from.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn backend(&self, kind: BackendKind) -> Result<&Arc<dyn Backend>> {
        self.backends.get(&kind).ok_or_else(|| {
            ProvisionError::Backend(BackendError::Unusable {
                backend: kind,
                why: self.unusable.get(&kind).cloned().unwrap_or_default(),
            })
        })
    }

    /// Makes a new rootfs for `container` from `image` (pulled first if needed).
    /// On error nothing new is left on disk.
    pub fn provision(
        &self,
        container: &ContainerPath,
        image: &ImageRef,
        backend: Option<BackendKind>,
        policy: PullPolicy,
    ) -> Result<Provisioned> {
        self.provision_for_call(container, image, backend, policy, &CallOptions::default())
    }

    /// [`Provisioner::provision`] for a call with its own platform or credentials
    /// (see [`crate::store::Store::for_call`]).
    pub fn provision_for_call(
        &self,
        container: &ContainerPath,
        image: &ImageRef,
        backend: Option<BackendKind>,
        policy: PullPolicy,
        call: &CallOptions,
    ) -> Result<Provisioned> {
        let kind = backend.unwrap_or(self.default_backend);
        let backend = Arc::clone(self.backend(kind)?);
        if let Some(parent) = container.parent() {
            if !paths::container_dir(&self.dir, &parent).is_dir() {
                return Err(ProvisionError::NoParent(parent.to_string()));
            }
        }
        let _global = self.lock_provisioner(false)?;
        let _lock = self.lock_container(container)?;
        let image = self.store.for_call(call).prepare(image, policy)?;
        let layers = &image.layers;
        backend.check(layers)?;

        let container_dir = paths::container_dir(&self.dir, container);
        let created_container = !container_dir.exists();
        let backend_dir = paths::backend_dir(&container_dir, kind);
        for sub in [paths::ROOTFSES_DIR, paths::SCRATCH_DIR, paths::RECORDS_DIR] {
            let path = backend_dir.join(sub);
            std::fs::create_dir_all(&path).context("create", &path)?;
        }
        let rootfs_id = RootfsId::new();
        let rootfs = paths::rootfs_dir(&backend_dir, &rootfs_id);
        let scratch = paths::scratch_dir(&backend_dir, &rootfs_id);
        let mut record = RootfsRecord {
            rootfs_id: rootfs_id.clone(),
            backend: kind,
            image: image.reference.clone(),
            manifest_digest: image.digest.clone(),
            layers: image.layer_ids.clone(),
            appc_images: image.appc_images.clone(),
            state: RootfsState::Provisioning,
            created: now(),
        };
        let made = (|| {
            // Not flushed: it only tells GC which layers a half-made rootfs may use (a
            // power cut takes the mounts with it); the `ready` record below is durable.
            self.write_record(&backend_dir, &record, false)?;
            std::fs::create_dir(&rootfs).context("create", &rootfs)?;
            std::fs::create_dir(&scratch).context("create", &scratch)?;
            self.crash.check("provision:dirs");
            backend.provision(layers, &rootfs, &scratch)?;
            self.crash.check("provision:mounted");
            record.state = RootfsState::Ready;
            self.write_record(&backend_dir, &record, true)?;
            self.crash.check("provision:ready");
            Ok::<(), ProvisionError>(())
        })();
        if let Err(e) = made {
            tracing::warn!(container = %container, error = %e, "provision failed; cleaning up");
            let _ = self.destroy_rootfs(&backend_dir, &rootfs_id);
            if created_container {
                let _ = self.remove_container_dir(container, &container_dir);
            }
            return Err(e);
        }
        let (upper_dir, work_dir) = match kind {
            BackendKind::Overlay => {
                let (u, w) = backend::overlay_dirs(&scratch);
                (Some(u), Some(w))
            }
            _ => (None, None),
        };
        tracing::info!(container = %container, rootfs = %rootfs.display(), backend = %kind, "provisioned");
        Ok(Provisioned {
            container: container.clone(),
            rootfs_id,
            rootfs,
            backend: kind,
            image: image.reference.clone(),
            image_digest: image.digest.clone(),
            config: image.config,
            upper_dir,
            work_dir,
        })
    }

    /// Destroys a container: its nested containers first, then every rootfs (lazy
    /// unmount of everything under it, deepest first; removal that never crosses a
    /// mount point), then its directory. Waits for an in-flight provision of it.
    pub fn destroy(&self, container: &ContainerPath) -> Result<Destroyed> {
        let _global = self.lock_provisioner(false)?;
        self.destroy_locked(container)
    }

    fn destroy_locked(&self, container: &ContainerPath) -> Result<Destroyed> {
        let _lock = self.lock_container(container)?;
        let dir = paths::container_dir(&self.dir, container);
        if !dir.is_dir() {
            return Ok(Destroyed::NotFound);
        }
        // Atomic but not flushed: if a power cut loses it, the destroy was not done and
        // the caller, who got no answer, destroys again; every step below is ordered so
        // that any prefix of it is a consistent state.
        durable::write_file_relaxed(&dir, &dir, DESTROYING_MARKER, b"")?;
        self.crash.check("destroy:marked");
        for child in self.children(container)? {
            self.destroy_locked(&child)?;
        }
        for (backend_dir, id) in self.rootfs_ids(&dir)? {
            self.destroy_rootfs(&backend_dir, &id)?;
            self.crash.check("destroy:rootfs");
        }
        self.remove_container_dir(container, &dir)?;
        self.crash.check("destroy:done");
        tracing::info!(container = %container, "destroyed");
        Ok(Destroyed::Destroyed)
    }

    /// Removes one rootfs of a container (unmount, directories, record), leaving the
    /// container and its other rootfses alone. `Ok(false)` if there is no such rootfs.
    pub fn remove_rootfs(&self, container: &ContainerPath, backend: BackendKind, rootfs_id: &RootfsId) -> Result<bool> {
        let _global = self.lock_provisioner(false)?;
        let _lock = self.lock_container(container)?;
        let backend_dir = paths::backend_dir(&paths::container_dir(&self.dir, container), backend);
        let known =
            paths::rootfs_dir(&backend_dir, rootfs_id).exists() || paths::record_path(&backend_dir, rootfs_id).exists();
        if known {
            self.destroy_rootfs(&backend_dir, rootfs_id)?;
        }
        Ok(known)
    }

    /// Unmounts and removes one rootfs and its scratch dir; its record goes last, so
    /// an interrupted destroy is found again.
    fn destroy_rootfs(&self, backend_dir: &Path, id: &RootfsId) -> Result<()> {
        let rootfs = paths::rootfs_dir(backend_dir, id);
        let scratch = paths::scratch_dir(backend_dir, id);
        crate::mount::unmount_all_under(&rootfs)?;
        self.crash.check("destroy:unmounted");
        for dir in [&rootfs, &scratch] {
            if let Err(e) = remove_tree(dir) {
                self.counters.remove_rootfs_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %dir.display(), error = %e, "could not remove rootfs dir; a later destroy or recover retries");
                return Err(ProvisionError::Busy { container: backend_dir.display().to_string(), why: e.to_string() });
            }
        }
        let record = paths::record_path(backend_dir, id);
        match std::fs::remove_file(&record) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SysError::new("remove", &record, e).into()),
        }
    }

    fn remove_container_dir(&self, container: &ContainerPath, dir: &Path) -> Result<()> {
        crate::mount::unmount_all_under(dir)?;
        if let Err(e) = remove_tree(dir) {
            self.counters.remove_container_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(container = %container, error = %e, "could not remove container dir; a later destroy or recover retries");
            return Err(ProvisionError::Busy { container: container.to_string(), why: e.to_string() });
        }
        Ok(())
    }

    /// Every container, nested ones after their parent.
    pub fn containers(&self) -> Result<Vec<ContainerInfo>> {
        let mut out = Vec::new();
        for container in self.all_containers()? {
            let dir = paths::container_dir(&self.dir, &container);
            let mut rootfses = Vec::new();
            for (backend_dir, id) in self.rootfs_ids(&dir)? {
                let record = self.read_record(&backend_dir, &id).ok().flatten();
                let backend = backend_dir
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(BackendKind::Copy);
                rootfses.push(RootfsInfo {
                    path: paths::rootfs_dir(&backend_dir, &id),
                    rootfs_id: id,
                    backend,
                    record,
                });
            }
            out.push(ContainerInfo { destroying: dir.join(DESTROYING_MARKER).exists(), container, rootfses });
        }
        Ok(out)
    }

    /// Rebuilds a consistent state from disk after a crash or restart (Mesos'
    /// `recover(states, orphans)`). `alive` None: keep every container with a complete
    /// rootfs. Rootfses of a backend not usable here are an error before anything is
    /// deleted.
    pub fn recover(&self, alive: Option<&[ContainerPath]>) -> Result<RecoverReport> {
        let _global = self.lock_provisioner(true)?;
        let mut report = RecoverReport { staging_cleared: self.store.clear_staging()?, ..RecoverReport::default() };
        (report.appc_images, report.appc_skipped) = self.store.appc().recover().map_err(StoreError::from)?;
        // Before any remount: a layer a power cut may have torn must not be mounted.
        report.torn_layers_dropped = self.store.drop_torn_layers()?;
        self.store.flush()?;
        let containers = self.all_containers()?;
        for container in &containers {
            let dir = paths::container_dir(&self.dir, container);
            for backend_dir in list_subdirs(&dir.join(paths::BACKENDS_DIR))? {
                let name = backend_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
                let usable = name.parse::<BackendKind>().ok().filter(|k| self.backends.contains_key(k));
                if usable.is_none() {
                    return Err(ProvisionError::BackendUnavailable {
                        container: container.to_string(),
                        why: name
                            .parse::<BackendKind>()
                            .ok()
                            .and_then(|k| self.unusable.get(&k).cloned())
                            .unwrap_or_else(|| "unknown backend".into()),
                        backend: name,
                    });
                }
            }
        }
        let keep_named = |c: &ContainerPath| match alive {
            None => true,
            Some(list) => list.iter().any(|a| a.ids().starts_with(c.ids())),
        };
        let mut kept_rootfses = BTreeSet::new();
        // One read of the mount table, not one per rootfs (10,000 containers).
        let mounted: BTreeSet<PathBuf> = crate::mount::mounts()?.into_iter().map(|m| m.target).collect();
        // Parents come before children in `containers`; destroying a parent takes its children.
        for container in &containers {
            let dir = paths::container_dir(&self.dir, container);
            if !dir.is_dir() {
                continue; // went with its parent
            }
            if dir.join(DESTROYING_MARKER).exists() || !keep_named(container) {
                self.destroy_locked(container)?;
                report.destroyed.push(container.to_string());
                continue;
            }
            let mut complete = 0;
            for (backend_dir, id) in self.rootfs_ids(&dir)? {
                let rootfs = paths::rootfs_dir(&backend_dir, &id);
                match self.read_record(&backend_dir, &id) {
                    Ok(Some(record)) if record.state == RootfsState::Ready && rootfs.is_dir() => {
                        if record.backend.mounts() && !mounted.contains(&rootfs) {
                            let layers = match self.record_layers(&record)? {
                                Ok(layers) => layers,
                                Err(gone) => {
                                    tracing::warn!(rootfs = %rootfs.display(), missing = %gone, "cannot remount: removing the rootfs");
                                    self.destroy_rootfs(&backend_dir, &id)?;
                                    report.unmountable_rootfses_removed += 1;
                                    continue;
                                }
                            };
                            self.remount(&backend_dir, &record, &layers)?;
                            report.remounted += 1;
                        }
                        kept_rootfses.insert(rootfs);
                        complete += 1;
                    }
                    _ => {
                        self.destroy_rootfs(&backend_dir, &id)?;
                        report.incomplete_rootfses_removed += 1;
                    }
                }
            }
            if complete == 0 && alive.is_none() && self.children(container)?.is_empty() {
                self.destroy_locked(container)?;
                report.destroyed.push(container.to_string());
            } else {
                report.kept.push(container.to_string());
            }
        }
        // Mounts strata may have made that no kept rootfs accounts for (never the root
        // itself, which may be a mount of its own).
        let mut stray = crate::mount::mounts_under(&self.dir)?;
        stray.extend(crate::mount::mounts_under(self.store.dir())?);
        for target in stray {
            if target != self.dir && target != self.store.dir() && !kept_rootfses.contains(&target) {
                crate::mount::unmount_all_under(&target)?;
                report.stray_mounts_unmounted += 1;
            }
        }
        Ok(report)
    }

    /// The directories a recorded rootfs is made of, or what is gone from the store.
    fn record_layers(&self, record: &RootfsRecord) -> Result<Result<Vec<PathBuf>, String>> {
        if !record.appc_images.is_empty() {
            let found = self.store.appc().chain_layers(&record.appc_images).map_err(StoreError::from)?;
            return Ok(found.ok_or_else(|| format!("an appc image of {}", record.manifest_digest)));
        }
        let layers: Vec<PathBuf> =
            record.layers.iter().map(|d| self.store.layer_dir(d).join(crate::store::LAYER_ROOTFS)).collect();
        Ok(match layers.iter().position(|l| !l.is_dir()) {
            Some(i) => Err(record.layers[i].to_string()),
            None => Ok(layers),
        })
    }

    fn remount(&self, backend_dir: &Path, record: &RootfsRecord, layers: &[PathBuf]) -> Result<()> {
        let backend = self.backend(record.backend)?;
        let rootfs = paths::rootfs_dir(backend_dir, &record.rootfs_id);
        let scratch = paths::scratch_dir(backend_dir, &record.rootfs_id);
        std::fs::create_dir_all(&scratch).context("create", &scratch)?;
        backend.provision(layers, &rootfs, &scratch)?;
        Ok(())
    }

    fn write_record(&self, backend_dir: &Path, record: &RootfsRecord, durable_write: bool) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| ProvisionError::Record {
            path: paths::record_path(backend_dir, &record.rootfs_id),
            why: e.to_string(),
        })?;
        let dir = backend_dir.join(paths::RECORDS_DIR);
        let name = format!("{}.json", record.rootfs_id);
        if durable_write {
            durable::write_file(&dir, &dir, &name, &bytes)?;
        } else {
            durable::write_file_relaxed(&dir, &dir, &name, &bytes)?;
        }
        Ok(())
    }

    fn read_record(&self, backend_dir: &Path, id: &RootfsId) -> Result<Option<RootfsRecord>> {
        let path = paths::record_path(backend_dir, id);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| ProvisionError::Record { path, why: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SysError::new("read", &path, e).into()),
        }
    }

    /// Every rootfs id a container dir knows of, from rootfs dirs, scratch dirs and
    /// records alike (a crash may leave any subset).
    fn rootfs_ids(&self, container_dir: &Path) -> Result<Vec<(PathBuf, RootfsId)>> {
        let mut out = BTreeSet::new();
        for backend_dir in list_subdirs(&container_dir.join(paths::BACKENDS_DIR))? {
            for sub in [paths::ROOTFSES_DIR, paths::SCRATCH_DIR, paths::RECORDS_DIR] {
                for entry in list_names(&backend_dir.join(sub))? {
                    let stem = entry.strip_suffix(".json").unwrap_or(&entry);
                    // Temp files of an interrupted record write are not ids.
                    if let Ok(id) = RootfsId::try_from(stem.to_owned()) {
                        out.insert((backend_dir.clone(), id));
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    fn children(&self, container: &ContainerPath) -> Result<Vec<ContainerPath>> {
        let dir = paths::container_dir(&self.dir, container).join(paths::CONTAINERS_DIR);
        Ok(list_names(&dir)?
            .into_iter()
            .filter_map(|n| n.parse::<ContainerId>().ok())
            .map(|id| container.child(id))
            .collect())
    }

    /// Every container, parents before children.
    fn all_containers(&self) -> Result<Vec<ContainerPath>> {
        let mut out = Vec::new();
        let mut queue: Vec<ContainerPath> = list_names(&self.dir.join(paths::CONTAINERS_DIR))?
            .into_iter()
            .filter_map(|n| n.parse::<ContainerId>().ok())
            .map(ContainerPath::top)
            .collect();
        queue.sort();
        let mut i = 0;
        while i < queue.len() {
            let c = queue[i].clone();
            let mut kids = self.children(&c)?;
            kids.sort();
            queue.extend(kids);
            out.push(c);
            i += 1;
        }
        Ok(out)
    }

    /// Waits for every in-flight provision and destroy and keeps new ones out while
    /// the returned lock is held (garbage collection needs a still picture).
    pub fn lock_exclusive(&self) -> Result<File> {
        self.lock_provisioner(true)
    }

    /// The images (cache keys) and layers (diff_ids) that some rootfs on disk uses,
    /// complete or not.
    pub fn images_in_use(&self) -> Result<InUse> {
        let mut used = InUse::default();
        for container in self.all_containers()? {
            let dir = paths::container_dir(&self.dir, &container);
            for (backend_dir, id) in self.rootfs_ids(&dir)? {
                if let Some(record) = self.read_record(&backend_dir, &id)? {
                    used.images.insert(record.image);
                    used.layers.extend(record.layers);
                    used.appc.extend(record.appc_images);
                }
            }
        }
        Ok(used)
    }

    fn lock_provisioner(&self, exclusive: bool) -> Result<File> {
        let mode = if exclusive { sysfs::LockMode::Exclusive } else { sysfs::LockMode::Shared };
        Ok(sysfs::lock_file(&self.dir.join(PROVISIONER_LOCK), mode)?)
    }

    fn lock_container(&self, container: &ContainerPath) -> Result<File> {
        Ok(sysfs::lock_file(&paths::lock_path(&self.dir, container), sysfs::LockMode::Exclusive)?)
    }
}

/// Removes a tree without crossing into a mount point.
fn remove_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(());
    };
    let fd = match sysfs::open_dir(parent) {
        Ok(fd) => fd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    sysfs::remove_all_at(fd.as_fd(), name)
}

fn list_names(dir: &Path) -> Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(SysError::new("read", dir, e).into()),
    }
}

fn list_subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(list_names(dir)?.into_iter().map(|n| dir.join(n)).filter(|p| p.is_dir()).collect())
}

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
