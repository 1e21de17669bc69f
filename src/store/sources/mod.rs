//! Where images come from: an OCI layout, a `docker save` archive, (later) a registry.
//!
//! A source resolves a reference to a [`Plan`]: the manifest and config when it has
//! them verbatim, or what is needed to synthesize them (docker archives carry no OCI
//! manifest), and a way to open each layer blob as a stream.

pub(crate) mod docker_archive;
pub(crate) mod oci_layout;
pub(crate) mod registry;

use std::io::Read;

use super::StoreError;
use crate::digest::Digest;
use crate::layer::Expected;

/// One layer to fetch.
#[derive(Debug, Clone)]
pub(crate) struct PlannedLayer {
    /// What the blob must be.
    pub(crate) expected: Expected,
    /// Offset and length of the layer inside a `docker save` archive.
    pub(crate) archive_member: Option<(u64, u64)>,
}

/// How the stored manifest and config come about.
#[derive(Debug, Clone)]
pub(crate) enum Documents {
    /// The source has a manifest and config: store their exact bytes.
    Verbatim { manifest_bytes: Vec<u8>, config_bytes: Vec<u8>, index_digest: Option<Digest> },
    /// A docker archive: the config is verbatim (current format) or built from the
    /// legacy per-layer json once the diff_ids are known; the manifest is built after
    /// the layers are unpacked.
    Synthesized { config_bytes: Option<Vec<u8>>, legacy_config: Option<serde_json::Value> },
}

/// The result of resolving a reference.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    pub(crate) documents: Documents,
    pub(crate) layers: Vec<PlannedLayer>,
}

/// An image source.
pub(crate) trait Source: Sync {
    /// Resolves the image.
    fn resolve(&self) -> Result<Plan, StoreError>;
    /// Opens layer `index` of the plan as a stream of the blob's bytes.
    fn open_layer(&self, index: usize, layer: &PlannedLayer) -> Result<Box<dyn Read + Send + '_>, StoreError>;
    /// For messages: where the image comes from.
    fn describe(&self) -> String;
}
