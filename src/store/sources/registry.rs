//! `docker://` images from a registry: manifest (or index → platform → manifest) and
//! config fetched and verified, layers streamed from the registry into the unpacker.

use std::io::Read;

use super::oci_layout::plan_layers;
use super::{Documents, Plan, PlannedLayer, Source};
use crate::digest::Digest;
use crate::image::{Document, ImageConfig, Platform};
use crate::layer::Expected;
use crate::reference::DockerRef;
use crate::registry::{schema1, Registry, Session};
use crate::store::StoreError;

/// An image in a registry.
pub(crate) struct RegistrySource {
    name: DockerRef,
    session: Session,
    platform: Platform,
}

impl RegistrySource {
    pub(crate) fn new(registry: &Registry, name: &DockerRef, platform: &Platform) -> Result<Self, StoreError> {
        let session =
            registry.session(name).map_err(|e| StoreError::Registry { reference: name.to_string(), source: e })?;
        Ok(Self { name: name.clone(), session, platform: platform.clone() })
    }

    fn fail(&self, e: crate::registry::RegistryError) -> StoreError {
        StoreError::Registry { reference: self.name.to_string(), source: e }
    }

    fn invalid(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Source { source_name: self.describe(), why: why.to_string() }
    }

    /// Fetches a manifest or index and checks its digest: against the one asked for,
    /// and against `Docker-Content-Digest` when the registry sends it.
    fn fetch_document(
        &self,
        reference: &str,
        pinned: Option<&Digest>,
    ) -> Result<(Vec<u8>, Option<String>, Digest), StoreError> {
        let fetched = self.session.manifest(reference).map_err(|e| self.fail(e))?;
        let is_schema1 = fetched.media_type.as_deref().is_some_and(schema1::is_schema1);
        let digest = if is_schema1 { schema1::digest_of(&fetched.bytes) } else { Digest::of_bytes(&fetched.bytes) };
        if let Some(pinned) = pinned {
            if *pinned != digest {
                return Err(self.invalid(format!("manifest {reference} hashes to {digest}: corrupt or tampered")));
            }
        }
        if let Some(header) = &fetched.content_digest {
            let header: Digest = header.parse().map_err(|e| self.invalid(format!("bad Docker-Content-Digest: {e}")))?;
            if header != digest {
                return Err(self.invalid(format!(
                    "manifest {reference}: Docker-Content-Digest says {header}, the body hashes to {digest}"
                )));
            }
        }
        Ok((fetched.bytes, fetched.media_type, digest))
    }
}

impl Source for RegistrySource {
    fn describe(&self) -> String {
        format!("docker://{}", self.name)
    }

    fn resolve(&self) -> Result<Plan, StoreError> {
        let reference = self.name.reference();
        let (mut bytes, mut media_type, digest) = self.fetch_document(&reference, self.name.digest())?;
        if media_type.as_deref().is_some_and(schema1::is_schema1) {
            let manifest = schema1::Schema1::parse(&bytes).map_err(|e| self.invalid(e))?;
            tracing::info!(image = %self.name, "schema 1 manifest: layers reversed into base-first order");
            let layers = manifest
                .layers
                .iter()
                .map(|d| PlannedLayer {
                    expected: Expected { digest: Some(d.clone()), ..Expected::default() },
                    archive_member: None,
                })
                .collect();
            return Ok(Plan {
                documents: Documents::Synthesized { config_bytes: None, legacy_config: Some(manifest.top) },
                layers,
            });
        }
        let mut index_digest = None;
        let mut doc =
            Document::parse(&bytes, media_type.as_deref()).map_err(|e| self.invalid(format!("{reference}: {e}")))?;
        if let Document::Index(index) = &doc {
            let chosen = index.select_or_explain(&self.platform).map_err(|why| self.invalid(why))?.clone();
            index_digest = Some(digest);
            let (b, m, _) = self.fetch_document(&chosen.digest.to_string(), Some(&chosen.digest))?;
            bytes = b;
            media_type = m.or(Some(chosen.media_type.clone()));
            doc = Document::parse(&bytes, media_type.as_deref())
                .map_err(|e| self.invalid(format!("{}: {e}", chosen.digest)))?;
        }
        let Document::Manifest(manifest) = doc else {
            return Err(self.invalid("an index points at another index"));
        };
        let config_bytes =
            self.session.small_blob(&manifest.config.digest, manifest.config.size).map_err(|e| self.fail(e))?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| self.invalid(e))?;
        let layers = plan_layers(&manifest, &config).map_err(|e| self.invalid(e))?;
        Ok(Plan { documents: Documents::Verbatim { manifest_bytes: bytes, config_bytes, index_digest }, layers })
    }

    fn open_layer(&self, _index: usize, layer: &PlannedLayer) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let digest = layer.expected.digest.as_ref().ok_or_else(|| self.invalid("layer without digest"))?;
        let blob = self.session.blob(digest, layer.expected.size).map_err(|e| self.fail(e))?;
        Ok(Box::new(blob))
    }
}
