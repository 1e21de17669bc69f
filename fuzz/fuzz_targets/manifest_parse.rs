//! Any bytes as each document a registry or an archive hands over: OCI/Docker
//! manifests and indexes (under every declared media type), image configs, Docker
//! schema 1 manifests and appc image manifests. Parsing returns, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::image::{Document, ImageConfig};
use strata::registry::schema1::Schema1;
use strata::store::appc::ImageManifest;

const DECLARED: &[Option<&str>] = &[
    None,
    Some("application/vnd.oci.image.manifest.v1+json"),
    Some("application/vnd.oci.image.index.v1+json"),
    Some("application/vnd.docker.distribution.manifest.v2+json"),
    Some("application/vnd.docker.distribution.manifest.list.v2+json"),
    Some("application/vnd.docker.distribution.manifest.v1+prettyjws"),
];

fuzz_target!(|bytes: &[u8]| {
    let Some((&selector, document)) = bytes.split_first() else { return };
    let declared = DECLARED[usize::from(selector) % DECLARED.len()];
    if let Ok(Document::Index(index)) = Document::parse(document, declared) {
        let _ = index.select_or_explain(&strata::image::Platform::host());
        let _ = index.platforms();
    }
    let _ = ImageConfig::parse(document);
    let _ = Schema1::parse(document);
    let _ = ImageManifest::parse(document);
});
