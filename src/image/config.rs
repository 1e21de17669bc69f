//! The image config (OCI `application/vnd.oci.image.config.v1+json` and Docker's
//! `container.image.v1`): the part a provisioner and a runtime need.
//!
//! Parsed leniently (unknown keys ignored, `null` taken as absent: Docker writes
//! `"Env": null`), from bytes that were verified against the config digest.

use serde::{Deserialize, Deserializer, Serialize};

use super::manifest::DocumentError;
use crate::digest::Digest;

/// What the provisioner and `inspect` need from an image config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// CPU architecture (`amd64`, …).
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    /// Operating system (`linux`).
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    /// Architecture variant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Creation time, RFC 3339, as the image says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// The runtime defaults.
    #[serde(default, deserialize_with = "null_default")]
    pub config: RuntimeConfig,
    /// The uncompressed layer digests, base first.
    #[serde(default, deserialize_with = "null_default")]
    pub rootfs: RootFs,
}

/// The `config` object: how to run the image.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuntimeConfig {
    /// `USER`: `user[:group]`, names or ids.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// `ENV`: `KEY=value` strings.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// `ENTRYPOINT`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    /// `CMD`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// `WORKDIR`.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "String::is_empty")]
    pub working_dir: String,
    /// `STOPSIGNAL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    /// `LABEL`s.
    #[serde(default, deserialize_with = "null_default", skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The `rootfs` object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    /// Always `layers`.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    /// sha256 of each uncompressed layer tar, base first.
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<Digest>,
}

fn null_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

impl ImageConfig {
    /// Parses config bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, DocumentError> {
        serde_json::from_slice(bytes).map_err(|source| DocumentError::Json { what: "image config", source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_with_nulls() {
        let json = br#"{"architecture":"amd64","os":"linux","config":{"Env":null,"Cmd":["/bin/sh"],"Entrypoint":null,
            "WorkingDir":"","User":"1000:1000","Labels":null},"container_config":{"Hostname":"x"},
            "rootfs":{"type":"layers","diff_ids":["sha256:1111111111111111111111111111111111111111111111111111111111111111"]}}"#;
        let c = ImageConfig::parse(json).unwrap();
        assert_eq!(c.config.cmd, vec!["/bin/sh"]);
        assert!(c.config.env.is_empty());
        assert_eq!(c.config.user, "1000:1000");
        assert_eq!(c.rootfs.diff_ids.len(), 1);
    }

    #[test]
    fn bad_diff_id_is_refused() {
        assert!(ImageConfig::parse(br#"{"rootfs":{"type":"layers","diff_ids":["sha256:../x"]}}"#).is_err());
    }
}
