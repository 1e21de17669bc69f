//! appc images (Mesos' second image type): the typed ACI manifest and matching rules
//! (`spec`), ACI import (`import`), simple discovery (`discovery`), and the store of
//! imported images with dependency resolution (`images`).

mod discovery;
mod images;
mod import;
mod spec;

pub use self::discovery::{Discovery, DiscoveryError, DEFAULT_PREFIX};
pub use self::images::{AppcImage, AppcStore, AppcStoreError, InvalidEntry, StoredAci};
pub use self::import::{
    import, AciSource, ImportError, APPC_IMAGES_DIR, MANIFEST_FILE, ROOTFS_DIR, SIGNATURE_FILE, SIZE_FILE,
};
pub use self::spec::{
    dependency_order, host_labels, pick, AppcError, Candidate, Dependency, ImageManifest, Label, MAX_MANIFEST_BYTES,
};
pub use crate::reference::ImageId;
