//! `bind`: a read-only bind mount of the single layer (Mesos' bind backend).

use std::path::{Path, PathBuf};

use super::{Backend, BackendError, BackendKind};
use crate::sys::{self, Context};

#[derive(Debug)]
pub(super) struct Bind;

impl Backend for Bind {
    fn kind(&self) -> BackendKind {
        BackendKind::Bind
    }

    fn check(&self, layers: &[PathBuf]) -> Result<(), BackendError> {
        if layers.len() != 1 {
            return Err(BackendError::Unsupported {
                backend: BackendKind::Bind,
                why: format!("it takes single-layer images only, this one has {} layers", layers.len()),
            });
        }
        Ok(())
    }

    fn provision(&self, layers: &[PathBuf], rootfs: &Path, _scratch: &Path) -> Result<(), BackendError> {
        self.check(layers)?;
        sys::mount::bind_read_only(&layers[0], rootfs).context("bind mount", rootfs)?;
        sys::mount::make_slave_then_shared(rootfs).context("make shared", rootfs)?;
        Ok(())
    }
}
