//! `overlay`: overlayfs with the shared layer dirs as read-only lowers (top first) and
//! a private upper and work dir per rootfs; lower layers are never modified.

use std::path::{Path, PathBuf};

use super::{Backend, BackendError, BackendKind};
use crate::sys::{self, Context};

/// Overlay scratch: the writable layer.
pub(super) const UPPER_DIR: &str = "upperdir";
/// Overlay scratch: overlayfs's work dir.
pub(super) const WORK_DIR: &str = "workdir";

/// statfs(2) magic numbers of file systems overlayfs cannot stack on.
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
const ZFS_MAGIC: i64 = 0x2fc1_2fc1;
/// overlayfs' limit on lower layers.
const MAX_LOWERS: usize = 500;

#[derive(Debug)]
pub(super) struct Overlay;

pub(super) fn dirs(scratch: &Path) -> (PathBuf, PathBuf) {
    (scratch.join(UPPER_DIR), scratch.join(WORK_DIR))
}

/// Root, overlayfs in the kernel, and both the store and the provisioner dirs on a
/// file system it can use (Mesos checked only the provisioner dir).
pub(super) fn check_usable(store_dir: &Path, provisioner_dir: &Path) -> Result<(), String> {
    if !sys::is_root() {
        return Err("overlay mounts need root".into());
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").map_err(|e| format!("/proc/filesystems: {e}"))?;
    if !filesystems.lines().any(|l| l.split_whitespace().last() == Some("overlay")) {
        return Err("the kernel has no overlayfs".into());
    }
    for dir in [store_dir, provisioner_dir] {
        let magic = sys::fs::fs_magic(dir).map_err(|e| format!("statfs {}: {e}", dir.display()))?;
        if magic == OVERLAYFS_MAGIC {
            return Err(format!("{} is on overlayfs, which cannot be stacked", dir.display()));
        }
        if magic == ZFS_MAGIC {
            return Err(format!("{} is on zfs, which overlayfs does not support", dir.display()));
        }
        if !sys::fs::supports_d_type(dir).map_err(|e| format!("d_type probe in {}: {e}", dir.display()))? {
            return Err(format!("{} is on a file system without d_type", dir.display()));
        }
    }
    Ok(())
}

impl Backend for Overlay {
    fn kind(&self) -> BackendKind {
        BackendKind::Overlay
    }

    fn check(&self, layers: &[PathBuf]) -> Result<(), BackendError> {
        if layers.len() > MAX_LOWERS {
            return Err(BackendError::Unsupported {
                backend: BackendKind::Overlay,
                why: format!("{} layers exceed overlayfs' limit of {MAX_LOWERS}", layers.len()),
            });
        }
        Ok(())
    }

    fn provision(&self, layers: &[PathBuf], rootfs: &Path, scratch: &Path) -> Result<(), BackendError> {
        self.check(layers)?;
        let (upper, work) = dirs(scratch);
        std::fs::create_dir_all(&upper).context("create", &upper)?;
        std::fs::create_dir_all(&work).context("create", &work)?;
        // overlayfs needs at least one lower: an image without layers gets an empty one.
        let empty = scratch.join("empty");
        let mut lowers: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
        if lowers.is_empty() {
            std::fs::create_dir_all(&empty).context("create", &empty)?;
            lowers.push(&empty);
        }
        sys::mount::mount_overlay(&lowers, &upper, &work, rootfs).context("mount overlay", rootfs)?;
        sys::mount::make_slave_then_shared(rootfs).context("make shared", rootfs)?;
        Ok(())
    }
}
