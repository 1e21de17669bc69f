//! The provisioner's on-disk layout, exactly as Mesos lays it out, as pure functions
//! of validated ids:
//!
//! ```text
//! <root>/provisioner/
//! ├── containers/<id>/                          a container
//! │   ├── backends/<backend>/rootfses/<uuid>/   a rootfs handed out
//! │   ├── backends/<backend>/scratch/<uuid>/    overlay upperdir/ and workdir/
//! │   ├── backends/<backend>/records/<uuid>.json  image, layers, state (strata's addition)
//! │   └── containers/<child>/…                  nested containers
//! └── locks/                                    one flock file per container
//! ```

use std::path::{Path, PathBuf};

use super::id::{ContainerPath, RootfsId};
use crate::backend::BackendKind;

/// `<root>/provisioner`.
pub const PROVISIONER_DIR: &str = "provisioner";
/// Under a provisioner dir or a container dir: the containers.
pub const CONTAINERS_DIR: &str = "containers";
/// Under a container: its backends.
pub const BACKENDS_DIR: &str = "backends";
/// Under a backend: rootfs directories.
pub const ROOTFSES_DIR: &str = "rootfses";
/// Under a backend: overlay scratch space.
pub const SCRATCH_DIR: &str = "scratch";
/// Under a backend: one record per rootfs.
pub const RECORDS_DIR: &str = "records";
/// Under the provisioner dir: lock files.
pub const LOCKS_DIR: &str = "locks";

/// `<provisioner>/containers/<a>/containers/<b>…`
pub fn container_dir(provisioner: &Path, container: &ContainerPath) -> PathBuf {
    let mut dir = provisioner.to_owned();
    for id in container.ids() {
        dir.push(CONTAINERS_DIR);
        dir.push(id.as_str());
    }
    dir
}

/// `<container>/backends/<backend>`
pub fn backend_dir(container_dir: &Path, backend: BackendKind) -> PathBuf {
    container_dir.join(BACKENDS_DIR).join(backend.as_str())
}

/// `<backend dir>/rootfses/<uuid>`
pub fn rootfs_dir(backend_dir: &Path, id: &RootfsId) -> PathBuf {
    backend_dir.join(ROOTFSES_DIR).join(id.as_str())
}

/// `<backend dir>/scratch/<uuid>`
pub fn scratch_dir(backend_dir: &Path, id: &RootfsId) -> PathBuf {
    backend_dir.join(SCRATCH_DIR).join(id.as_str())
}

/// `<backend dir>/records/<uuid>.json`
pub fn record_path(backend_dir: &Path, id: &RootfsId) -> PathBuf {
    backend_dir.join(RECORDS_DIR).join(format!("{id}.json"))
}

/// The lock file of a container: its path hashed, so nested ids cannot collide.
pub fn lock_path(provisioner: &Path, container: &ContainerPath) -> PathBuf {
    let key = crate::digest::Digest::of_bytes(container.to_string().as_bytes());
    provisioner.join(LOCKS_DIR).join(format!("{}.lock", &key.hex()[..32]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesos_layout() {
        let c: ContainerPath = "p/c".parse().unwrap();
        let dir = container_dir(Path::new("/r/provisioner"), &c);
        assert_eq!(dir, Path::new("/r/provisioner/containers/p/containers/c"));
        let id = RootfsId::new();
        let b = backend_dir(&dir, BackendKind::Overlay);
        assert_eq!(rootfs_dir(&b, &id), dir.join(format!("backends/overlay/rootfses/{id}")));
        assert_eq!(scratch_dir(&b, &id), dir.join(format!("backends/overlay/scratch/{id}")));
    }
}
