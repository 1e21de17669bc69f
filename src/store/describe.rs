//! How images are described to people and programs, for both image kinds: a line of
//! a listing (`strata images`, `pull --json`) and the details of `strata inspect`.
//! The CLI prints them and the daemon answers them, so both show the same shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::appc::{AppcImage, StoredAci};
use super::Image;
use crate::image::RuntimeConfig;
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

/// `strata inspect` of an OCI or Docker image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ImageDetails {
    /// The normalized reference.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
    /// The index it was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_digest: Option<String>,
    /// The config digest.
    pub config_digest: String,
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The config's `created`, as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Layers, base first.
    pub layers: Vec<LayerDetails>,
    /// How it runs.
    pub entrypoint: Vec<String>,
    /// Default arguments.
    pub cmd: Vec<String>,
    /// Environment, `NAME=value`.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: String,
    /// User, as the config says it.
    pub user: String,
}

/// One layer of [`ImageDetails`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LayerDetails {
    /// The blob digest.
    pub digest: String,
    /// The uncompressed tar digest.
    pub diff_id: String,
    /// Blob bytes.
    pub size: u64,
    /// Uncompressed bytes.
    pub uncompressed_size: u64,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
}

impl ImageDetails {
    /// The details of a stored image.
    pub fn of_image(image: &Image) -> Self {
        let RuntimeConfig { entrypoint, cmd, env, working_dir, user, .. } = image.config.config.clone();
        Self {
            reference: image.record.reference.clone(),
            digest: image.record.manifest_digest.to_string(),
            index_digest: image.record.index_digest.as_ref().map(ToString::to_string),
            config_digest: image.config_digest.to_string(),
            platform: image.platform().to_string(),
            created: image.config.created.clone(),
            layers: image
                .layers
                .iter()
                .map(|l| LayerDetails {
                    digest: l.record.digest.to_string(),
                    diff_id: l.record.diff_id.to_string(),
                    size: l.record.size,
                    uncompressed_size: l.record.uncompressed_size,
                    compression: format!("{:?}", l.record.compression).to_lowercase(),
                })
                .collect(),
            entrypoint,
            cmd,
            env,
            workdir: working_dir,
            user,
        }
    }
}

/// `strata inspect` of an appc image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppcDetails {
    /// The normalized reference.
    pub reference: String,
    /// The image id (`sha512-…`).
    pub id: String,
    /// The AC name.
    pub name: String,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Dependencies first, the image last.
    pub chain: Vec<String>,
    /// The names of its direct dependencies.
    pub dependencies: Vec<String>,
    /// Its `pathWhitelist`.
    pub path_whitelist: Vec<String>,
    /// Was a signature recorded at discovery (not verified)?
    pub signed: bool,
    /// `app.exec`.
    pub entrypoint: Vec<String>,
    /// `app.environment`, `NAME=value`.
    pub env: Vec<String>,
    /// `app.workingDirectory`.
    pub workdir: String,
    /// `app.user`.
    pub user: String,
}

impl AppcDetails {
    /// The details of a resolved appc image.
    pub fn of_appc(image: &AppcImage) -> Self {
        let m = &image.image.manifest;
        let RuntimeConfig { entrypoint, env, working_dir, user, .. } = m.runtime_config().config;
        Self {
            reference: image.reference.clone(),
            id: image.image.id.to_string(),
            name: m.name.clone(),
            labels: m.labels.clone(),
            chain: image.chain.iter().map(ToString::to_string).collect(),
            dependencies: m.dependencies.iter().map(|d| d.image_name.clone()).collect(),
            path_whitelist: m.path_whitelist.clone(),
            signed: image.image.dir.join(super::appc::SIGNATURE_FILE).is_file(),
            entrypoint,
            env,
            workdir: working_dir,
            user,
        }
    }
}
