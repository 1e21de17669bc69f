//! One line of an image listing: what `strata images` and `pull --json` print and
//! what the daemon answers, for both image kinds, in one shape.

use serde::{Deserialize, Serialize};

use super::appc::StoredAci;
use super::Image;
use crate::reference::AppcRef;

/// An image as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageSummary {
    /// The normalized reference (the store key; `appc:NAME?LABELS` for appc).
    pub reference: String,
    /// The manifest digest, or the appc image id.
    pub digest: String,
    /// The config digest (empty for appc).
    pub config_digest: String,
    /// `os/arch[/variant]`; for appc the `os` and `arch` labels (`-` when absent).
    pub platform: String,
    /// Layers; for appc the image and its direct dependencies.
    pub layers: usize,
    /// Bytes: the layer blobs, or the uncompressed ACI (0 when not recorded).
    pub size: u64,
    /// When it was pulled or imported, seconds since the epoch.
    pub pulled_at: u64,
    /// When it was last pulled or used, seconds since the epoch.
    pub last_used: u64,
}

impl ImageSummary {
    /// An OCI or Docker image.
    pub fn of_image(image: &Image) -> Self {
        Self {
            reference: image.record.reference.clone(),
            digest: image.record.manifest_digest.to_string(),
            config_digest: image.config_digest.to_string(),
            platform: image.platform().to_string(),
            layers: image.layers.len(),
            size: image.layers.iter().map(|l| l.record.size).sum(),
            pulled_at: image.record.pulled_at,
            last_used: image.record.last_used,
        }
    }

    /// An appc image: its name and labels as an `appc:` reference, its id as the
    /// digest.
    pub fn of_appc(image: &StoredAci) -> Self {
        let m = &image.manifest;
        let label = |k: &str| m.labels.get(k).cloned().unwrap_or_else(|| "-".into());
        Self {
            reference: AppcRef::Name { name: m.name.clone(), labels: m.labels.clone() }.to_string(),
            digest: image.id.to_string(),
            config_digest: String::new(),
            platform: format!("{}/{}", label("os"), label("arch")),
            layers: 1 + m.dependencies.len(),
            size: image.size.unwrap_or_default(),
            pulled_at: image.imported_at,
            last_used: image.imported_at,
        }
    }
}
