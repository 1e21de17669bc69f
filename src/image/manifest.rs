//! Manifest and index documents (OCI and Docker schema 2), parsed from the exact bytes
//! that were verified against their digest, and checked for type confusion
//! (CVE-2021-41190: a blob must not be readable both as a manifest and an index).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::media_type::{self, Compression};
use super::platform::Platform;
use crate::digest::Digest;

/// Largest manifest, index or config accepted (the registries' de-facto limit).
pub const MAX_DOCUMENT_BYTES: u64 = 4 * 1024 * 1024;
/// OCI annotation naming a manifest's tag inside an image layout's index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Why a manifest, index or config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DocumentError {
    /// Not valid JSON or not of the expected shape.
    #[error("malformed {what}: {source}")]
    Json {
        /// Which document.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The media type is not one this tool handles.
    #[error("unsupported media type '{0}'")]
    UnsupportedMediaType(String),
    /// A Docker schema 1 manifest.
    #[error("docker schema 1 manifests are not supported")]
    Schema1,
    /// The document's shape disagrees with its declared media type, or is ambiguous.
    #[error("{0}")]
    Inconsistent(String),
}

/// A content descriptor: what a manifest or index points at.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// The pointed-at blob's media type.
    pub media_type: String,
    /// The blob's digest.
    pub digest: Digest,
    /// The blob's size in bytes (negative sizes fail to parse: umoci 0.5.1's bug).
    pub size: u64,
    /// For index entries: the platform of the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Free-form annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A single-platform image manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest's media type (OCI or Docker schema 2).
    pub media_type: String,
    /// The image config.
    pub config: Descriptor,
    /// Layers, base first.
    pub layers: Vec<Descriptor>,
}

/// A multi-platform index (OCI index or Docker manifest list).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Index {
    /// The entries.
    pub manifests: Vec<Descriptor>,
}

/// A manifest or an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    /// One platform.
    Manifest(Manifest),
    /// Several platforms.
    Index(Index),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<u32>,
    media_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
}

impl Document {
    /// Parses a manifest or index. `declared` is the media type the referrer gave (a
    /// descriptor's `mediaType` or an HTTP `Content-Type`); the document's own
    /// `mediaType`, when present, must agree with it and with its shape.
    pub fn parse(bytes: &[u8], declared: Option<&str>) -> Result<Self, DocumentError> {
        if declared.is_some_and(|d| d.starts_with(media_type::DOCKER_SCHEMA1_PREFIX)) {
            return Err(DocumentError::Schema1);
        }
        let raw: RawDocument = serde_json::from_slice(bytes)
            .map_err(|source| DocumentError::Json { what: "manifest or index", source })?;
        if raw.schema_version == Some(1) {
            return Err(DocumentError::Schema1);
        }
        if raw.schema_version != Some(2) {
            return Err(DocumentError::Inconsistent("schemaVersion must be 2".into()));
        }
        let own = raw.media_type.as_deref();
        if let (Some(own), Some(declared)) = (own, declared) {
            if own != declared {
                return Err(DocumentError::Inconsistent(format!(
                    "document says media type '{own}' but was referenced as '{declared}'"
                )));
            }
        }
        let media_type = own.or(declared);
        let looks_like_index = raw.manifests.is_some();
        let looks_like_manifest = raw.config.is_some() || raw.layers.is_some();
        if looks_like_index && looks_like_manifest {
            return Err(DocumentError::Inconsistent("document has both 'manifests' and 'layers'/'config'".into()));
        }
        let is_index = match media_type {
            Some(m) if media_type::is_index(m) => true,
            Some(m) if media_type::is_manifest(m) => false,
            Some(m) => return Err(DocumentError::UnsupportedMediaType(m.to_owned())),
            None => looks_like_index,
        };
        if is_index {
            let manifests =
                raw.manifests.ok_or_else(|| DocumentError::Inconsistent("index has no 'manifests'".into()))?;
            return Ok(Self::Index(Index { manifests }));
        }
        let config = raw.config.ok_or_else(|| DocumentError::Inconsistent("manifest has no 'config'".into()))?;
        if !media_type::is_config(&config.media_type) {
            return Err(DocumentError::UnsupportedMediaType(config.media_type));
        }
        let layers = raw.layers.unwrap_or_default();
        for layer in &layers {
            if Compression::of_layer_media_type(&layer.media_type).is_none() {
                return Err(DocumentError::UnsupportedMediaType(layer.media_type.clone()));
            }
        }
        Ok(Self::Manifest(Manifest {
            media_type: media_type.unwrap_or(media_type::OCI_MANIFEST).to_owned(),
            config,
            layers,
        }))
    }
}

impl Index {
    /// Picks the entry for `platform`, the first match in index order (as containerd does).
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests
            .iter()
            .filter(|d| media_type::is_manifest(&d.media_type))
            .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
    }

    /// Like [`Index::select`], with an error that lists what the index offers.
    pub fn select_or_explain(&self, platform: &Platform) -> Result<&Descriptor, String> {
        self.select(platform)
            .ok_or_else(|| format!("no manifest for platform {platform} (available: {})", self.platforms().join(", ")))
    }

    /// The platforms this index offers, for error messages.
    pub fn platforms(&self) -> Vec<String> {
        self.manifests.iter().filter_map(|d| d.platform.as_ref().map(ToString::to_string)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest_json(media_type: Option<&str>) -> String {
        let mt = media_type.map(|m| format!(r#""mediaType":"{m}","#)).unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,{mt}"config":{{"mediaType":"{}","digest":"{D1}","size":10}},
            "layers":[{{"mediaType":"{}","digest":"{D2}","size":20}}]}}"#,
            media_type::OCI_CONFIG,
            media_type::OCI_LAYER_GZIP
        )
    }

    #[test]
    fn parses_manifest_and_index() {
        let doc = Document::parse(manifest_json(Some(media_type::OCI_MANIFEST)).as_bytes(), None).unwrap();
        let Document::Manifest(m) = doc else { panic!("not a manifest") };
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.layers[0].size, 20);
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[
              {{"mediaType":"{0}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64"}}}},
              {{"mediaType":"{0}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            media_type::OCI_MANIFEST
        );
        let Document::Index(i) = Document::parse(index.as_bytes(), Some(media_type::OCI_INDEX)).unwrap() else {
            panic!("not an index")
        };
        let amd64 = i.select(&"linux/amd64".parse().unwrap()).unwrap();
        assert_eq!(amd64.digest.to_string(), D2);
        assert!(i.select(&"windows/amd64".parse().unwrap()).is_none());
    }

    #[test]
    fn refuses_confusion_and_bad_input() {
        // declared as an index, shaped as a manifest
        assert!(Document::parse(manifest_json(None).as_bytes(), Some(media_type::OCI_INDEX)).is_err());
        // own media type disagrees with the referrer's
        assert!(Document::parse(
            manifest_json(Some(media_type::OCI_MANIFEST)).as_bytes(),
            Some(media_type::DOCKER_MANIFEST)
        )
        .is_err());
        let both = r#"{"schemaVersion":2,"manifests":[],"layers":[]}"#;
        assert!(Document::parse(both.as_bytes(), None).is_err());
        assert!(matches!(Document::parse(br#"{"schemaVersion":1}"#, None), Err(DocumentError::Schema1)));
        let negative = manifest_json(None).replace("\"size\":20", "\"size\":-1");
        assert!(Document::parse(negative.as_bytes(), None).is_err());
        assert!(Document::parse(b"not json", None).is_err());
    }
}
