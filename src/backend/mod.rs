//! Backends assemble a rootfs from an image's layer directories (base first).
//!
//! | backend | how | writable | needs |
//! |---|---|---|---|
//! | `copy` | applies the layers in order into a private dir, honouring whiteouts; reflinks where possible | yes | nothing (works without root) |
//! | `bind` | read-only bind mount of the one layer dir | no | root; single-layer images |
//! | `overlay` | overlayfs: the shared layer dirs as lowers, private upper/work dirs | yes | root, overlayfs, a file system with d_type that is not overlay or zfs |
//!
//! Each backend is created once at start ([`probe`]), so an unusable backend is a
//! clear error at start, like Mesos' "No usable provisioner backend".

mod bind;
mod copy;
mod overlay;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::sys::SysError;

pub use self::copy::apply_layer;

/// The backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Copy the layers into a private directory.
    Copy,
    /// Read-only bind mount of a single layer.
    Bind,
    /// overlayfs over the shared layer directories.
    Overlay,
}

impl BackendKind {
    /// Every backend, in the order they are preferred when usable (Mesos: overlay, then copy).
    pub const ALL: [Self; 3] = [Self::Overlay, Self::Copy, Self::Bind];

    /// The name used on the command line and on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Copy => "copy",
            Self::Bind => "bind",
            Self::Overlay => "overlay",
        }
    }

    /// Does the rootfs of this backend live in a mount?
    pub fn mounts(self) -> bool {
        !matches!(self, Self::Copy)
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, BackendError> {
        match s {
            "copy" => Ok(Self::Copy),
            "bind" => Ok(Self::Bind),
            "overlay" => Ok(Self::Overlay),
            other => Err(BackendError::Unknown(other.to_owned())),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Errors of the backends.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Not a backend name.
    #[error("unknown backend '{0}' (expected copy, bind or overlay)")]
    Unknown(String),
    /// The backend cannot work here.
    #[error("backend {backend} is not usable: {why}")]
    Unusable {
        /// Which.
        backend: BackendKind,
        /// Why not.
        why: String,
    },
    /// The image does not fit the backend.
    #[error("backend {backend} cannot provision this image: {why}")]
    Unsupported {
        /// Which.
        backend: BackendKind,
        /// Why not.
        why: String,
    },
    /// A system call failed.
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// A way to turn layer directories into a rootfs.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// Checks that the image fits before anything is created (bind: one layer).
    fn check(&self, _layers: &[PathBuf]) -> Result<(), BackendError> {
        Ok(())
    }

    /// Builds the rootfs in `rootfs` (an empty directory) from `layers`, base first.
    /// `scratch` is a private directory for the backend's own state (overlay's
    /// upper and work dirs). On error the caller unmounts and removes both.
    fn provision(&self, layers: &[PathBuf], rootfs: &Path, scratch: &Path) -> Result<(), BackendError>;
}

/// Creates the backend `kind` if it can work with the store and provisioner dirs.
pub fn probe(kind: BackendKind, store_dir: &Path, provisioner_dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
    let unusable = |why: String| BackendError::Unusable { backend: kind, why };
    match kind {
        BackendKind::Copy => Ok(Box::new(copy::Copy)),
        BackendKind::Bind => {
            if !crate::sys::is_root() {
                return Err(unusable("bind mounts need root".into()));
            }
            Ok(Box::new(bind::Bind))
        }
        BackendKind::Overlay => {
            overlay::check_usable(store_dir, provisioner_dir).map_err(unusable)?;
            Ok(Box::new(overlay::Overlay))
        }
    }
}

/// The upper and work dirs overlay keeps in a rootfs' scratch dir.
pub fn overlay_dirs(scratch: &Path) -> (PathBuf, PathBuf) {
    overlay::dirs(scratch)
}
