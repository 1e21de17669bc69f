//! `oci:PATH[:TAG]`: an OCI image layout directory (OCI image spec, "Image Layout").

use std::fs::File;
use std::path::{Path, PathBuf};

use super::{Documents, Plan, PlannedLayer, Source};
use crate::digest::{read_bounded, Digest};
use crate::image::{
    media_type, Compression, Descriptor, Document, ImageConfig, Manifest, Platform, ANNOTATION_REF_NAME,
    MAX_DOCUMENT_BYTES,
};
use crate::layer::Expected;
use crate::store::StoreError;

const LAYOUT_FILE: &str = "oci-layout";
const INDEX_FILE: &str = "index.json";

/// An OCI layout on disk.
pub(crate) struct OciLayout {
    path: PathBuf,
    tag: Option<String>,
    platform: Platform,
}

impl OciLayout {
    pub(crate) fn new(path: &Path, tag: Option<&str>, platform: &Platform) -> Self {
        Self { path: path.to_owned(), tag: tag.map(str::to_owned), platform: platform.clone() }
    }

    fn invalid(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Source { source_name: self.describe(), why: why.to_string() }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.path.join("blobs").join(digest.algorithm()).join(digest.hex())
    }

    /// Reads a small blob (manifest, index, config), bounded and verified.
    fn read_document(&self, desc: &Descriptor) -> Result<Vec<u8>, StoreError> {
        if desc.size > MAX_DOCUMENT_BYTES {
            return Err(self.invalid(format!("{} is {} bytes, over the 4 MiB document limit", desc.digest, desc.size)));
        }
        let path = self.blob_path(&desc.digest);
        let file = File::open(&path).map_err(|e| self.invalid(format!("cannot open blob {}: {e}", desc.digest)))?;
        let bytes =
            read_bounded(file, MAX_DOCUMENT_BYTES).map_err(|e| self.invalid(format!("blob {}: {e}", desc.digest)))?;
        verify(&bytes, desc).map_err(|why| self.invalid(why))?;
        Ok(bytes)
    }

    fn pick_from_layout_index(&self, index: &crate::image::Index) -> Result<Descriptor, StoreError> {
        let candidates: Vec<&Descriptor> = match &self.tag {
            Some(tag) => index
                .manifests
                .iter()
                .filter(|d| d.annotations.get(ANNOTATION_REF_NAME).is_some_and(|n| n == tag))
                .collect(),
            None => index.manifests.iter().collect(),
        };
        let tags = || {
            let names: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|d| d.annotations.get(ANNOTATION_REF_NAME).map(String::as_str))
                .collect();
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        match candidates.as_slice() {
            [] => match &self.tag {
                Some(tag) => Err(self.invalid(format!("no image tagged '{tag}' (tags: {})", tags()))),
                None => Err(self.invalid("the layout holds no image")),
            },
            [one] => Ok((*one).clone()),
            many => {
                // Several entries for one name: a per-platform list, as some tools write.
                let sub = crate::image::Index { manifests: many.iter().map(|d| (*d).clone()).collect() };
                if let Some(d) = sub.select(&self.platform) {
                    return Ok(d.clone());
                }
                Err(self
                    .invalid(format!("the layout holds several images; name one as oci:PATH:TAG (tags: {})", tags())))
            }
        }
    }
}

fn verify(bytes: &[u8], desc: &Descriptor) -> Result<(), String> {
    if bytes.len() as u64 != desc.size {
        return Err(format!("blob {} is {} bytes, the descriptor says {}", desc.digest, bytes.len(), desc.size));
    }
    let actual = Digest::of_bytes(bytes);
    if actual != desc.digest {
        return Err(format!("blob {} hashes to {actual}: corrupt or tampered", desc.digest));
    }
    Ok(())
}

impl Source for OciLayout {
    fn describe(&self) -> String {
        format!("oci:{}", self.path.display())
    }

    fn resolve(&self) -> Result<Plan, StoreError> {
        let layout = std::fs::read(self.path.join(LAYOUT_FILE))
            .map_err(|e| self.invalid(format!("not an OCI image layout ({LAYOUT_FILE}: {e})")))?;
        let layout: serde_json::Value =
            serde_json::from_slice(&layout).map_err(|e| self.invalid(format!("{LAYOUT_FILE}: {e}")))?;
        let version = layout.get("imageLayoutVersion").and_then(|v| v.as_str()).unwrap_or_default();
        if !version.starts_with("1.") {
            return Err(self.invalid(format!("unsupported imageLayoutVersion '{version}'")));
        }
        let index_file =
            File::open(self.path.join(INDEX_FILE)).map_err(|e| self.invalid(format!("{INDEX_FILE}: {e}")))?;
        let index_bytes =
            read_bounded(index_file, MAX_DOCUMENT_BYTES).map_err(|e| self.invalid(format!("{INDEX_FILE}: {e}")))?;
        let Document::Index(layout_index) = Document::parse(&index_bytes, Some(media_type::OCI_INDEX))
            .map_err(|e| self.invalid(format!("{INDEX_FILE}: {e}")))?
        else {
            return Err(self.invalid(format!("{INDEX_FILE} is not an index")));
        };
        let mut desc = self.pick_from_layout_index(&layout_index)?;
        let mut index_digest = None;
        let mut bytes = self.read_document(&desc)?;
        let mut doc = Document::parse(&bytes, Some(&desc.media_type))
            .map_err(|e| self.invalid(format!("{}: {e}", desc.digest)))?;
        if let Document::Index(index) = &doc {
            let chosen = index.select_or_explain(&self.platform).map_err(|why| self.invalid(why))?.clone();
            index_digest = Some(desc.digest.clone());
            desc = chosen;
            bytes = self.read_document(&desc)?;
            doc = Document::parse(&bytes, Some(&desc.media_type))
                .map_err(|e| self.invalid(format!("{}: {e}", desc.digest)))?;
        }
        let Document::Manifest(manifest) = doc else {
            return Err(self.invalid("an index points at another index"));
        };
        let config_bytes = self.read_document(&manifest.config)?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| self.invalid(e))?;
        let layers = plan_layers(&manifest, &config).map_err(|e| self.invalid(e))?;
        Ok(Plan { documents: Documents::Verbatim { manifest_bytes: bytes, config_bytes, index_digest }, layers })
    }

    fn open_layer(
        &self,
        _index: usize,
        layer: &PlannedLayer,
    ) -> Result<Box<dyn std::io::Read + Send + '_>, StoreError> {
        let digest = layer.expected.digest.as_ref().ok_or_else(|| self.invalid("layer without digest"))?;
        let file =
            File::open(self.blob_path(digest)).map_err(|e| self.invalid(format!("cannot open layer {digest}: {e}")))?;
        Ok(Box::new(file))
    }
}

/// Pairs each manifest layer with its diff_id; their counts must agree.
pub(crate) fn plan_layers(manifest: &Manifest, config: &ImageConfig) -> Result<Vec<PlannedLayer>, String> {
    let diff_ids = &config.rootfs.diff_ids;
    if diff_ids.len() != manifest.layers.len() {
        return Err(format!(
            "the manifest lists {} layers but the config has {} diff_ids",
            manifest.layers.len(),
            diff_ids.len()
        ));
    }
    Ok(manifest
        .layers
        .iter()
        .zip(diff_ids)
        .map(|(desc, diff_id)| PlannedLayer {
            expected: Expected {
                digest: Some(desc.digest.clone()),
                size: Some(desc.size),
                diff_id: Some(diff_id.clone()),
                compression: Compression::of_layer_media_type(&desc.media_type),
            },
            archive_member: None,
        })
        .collect())
}
