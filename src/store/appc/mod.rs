//! appc images (Mesos' second image type): the typed ACI manifest, image ids, the
//! matching rules and the dependency order. Import, discovery and the
//! `store/appc/images/<id>/{manifest,rootfs}` layout build on these (issue 7).

mod import;
mod spec;

pub use self::import::{import, ImportError, APPC_IMAGES_DIR, MANIFEST_FILE, ROOTFS_DIR};

pub use self::spec::{
    dependency_order, pick, AppcError, Candidate, Dependency, ImageId, ImageManifest, Label, MAX_MANIFEST_BYTES,
};
