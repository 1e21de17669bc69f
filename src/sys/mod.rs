//! The one place strata talks to the kernel: `openat2(RESOLVE_IN_ROOT)`, `*at()`
//! creation calls, xattrs, `renameat2`, `syncfs`, `flock`, mounts.
//!
//! Everything above this module works with paths relative to a directory fd it
//! holds, so that no path from an archive is ever resolved against the host's `/`.

#[allow(unsafe_code)] // the one module that may: see the SAFETY notes
pub mod fs;
pub mod mount;

use std::io;
use std::path::{Path, PathBuf};

/// A failed system call, with the operation and the path it was applied to.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}: {source}", path.display())]
pub struct SysError {
    /// The operation, e.g. `rename`.
    pub op: &'static str,
    /// The path operated on.
    pub path: PathBuf,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl SysError {
    /// Wraps an `io::Error` with the operation and path.
    pub fn new(op: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Self { op, path: path.as_ref().to_owned(), source }
    }

    /// Is this "no such file or directory"?
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// Extension to attach an operation and a path to an `io::Result`.
pub trait Context<T> {
    /// Attaches `op` and `path`.
    fn context(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, SysError>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, op: &'static str, path: impl AsRef<Path>) -> Result<T, SysError> {
        self.map_err(|e| SysError::new(op, path, e))
    }
}

/// Is the effective user root? Root may chown, create devices and set `trusted.*` xattrs.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
