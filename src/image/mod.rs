//! Image documents: media types, manifests and indexes, configs, platforms.
//!
//! Everything here parses bytes that the caller has already bounded
//! ([`MAX_DOCUMENT_BYTES`]) and verified against a digest; nothing here does I/O.

mod config;
mod manifest;
pub mod media_type;
mod platform;

pub use self::config::{ImageConfig, RootFs, RuntimeConfig};
pub use self::manifest::{
    Descriptor, Document, DocumentError, Index, Manifest, ANNOTATION_REF_NAME, MAX_DOCUMENT_BYTES,
};
pub use self::media_type::Compression;
pub use self::platform::{Platform, PlatformError};
