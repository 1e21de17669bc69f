//! Docker schema 1 manifests (`…manifest.v1+json`, signed `…v1+prettyjws`), as Mesos
//! pulled them: layers listed leaf first in `fsLayers` and `history`, reversed here
//! into base-first order, duplicates dropped; the image config comes from the top
//! `v1Compatibility`. A signed manifest's digest covers its JWS payload, not the
//! signatures, so that is what gets verified.

use base64::Engine as _;
use serde::Deserialize;

use crate::digest::Digest;

/// Schema 1 media types.
pub const MEDIA_TYPES: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];

/// A parsed schema 1 manifest.
#[derive(Debug, Clone)]
pub struct Schema1 {
    /// Layer blob digests, base first, without duplicates.
    pub layers: Vec<Digest>,
    /// The top layer's `v1Compatibility` (architecture, os, config, …).
    pub top: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: u32,
    fs_layers: Vec<FsLayer>,
    history: Vec<History>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FsLayer {
    blob_sum: Digest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct History {
    v1_compatibility: String,
}

#[derive(Deserialize)]
struct Signature {
    protected: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Protected {
    format_length: usize,
    format_tail: String,
}

/// Is this a schema 1 media type?
pub fn is_schema1(media_type: &str) -> bool {
    MEDIA_TYPES.contains(&media_type)
}

impl Schema1 {
    /// Parses a schema 1 manifest (Mesos' rules: non-empty `fsLayers` and `history`
    /// of equal length, every `v1Compatibility` valid JSON).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("malformed schema 1 manifest: {e}"))?;
        if raw.schema_version != 1 {
            return Err("schema 1 manifest with schemaVersion other than 1".into());
        }
        if raw.fs_layers.is_empty() || raw.fs_layers.len() != raw.history.len() {
            return Err("schema 1 manifest: fsLayers and history must be non-empty and of equal length".into());
        }
        let mut top = None;
        for (i, h) in raw.history.iter().enumerate() {
            let v: serde_json::Value =
                serde_json::from_str(&h.v1_compatibility).map_err(|e| format!("schema 1 history[{i}]: {e}"))?;
            if i == 0 {
                top = Some(v);
            }
        }
        let mut layers: Vec<Digest> = Vec::new();
        for layer in raw.fs_layers.iter().rev() {
            if !layers.contains(&layer.blob_sum) {
                layers.push(layer.blob_sum.clone());
            }
        }
        Ok(Self { layers, top: top.unwrap_or(serde_json::Value::Null) })
    }
}

/// The digest a registry gives a schema 1 manifest: of the bytes, or for a signed one,
/// of the JWS payload (the bytes up to `formatLength` plus the decoded `formatTail`).
pub fn digest_of(bytes: &[u8]) -> Digest {
    payload(bytes).map_or_else(|| Digest::of_bytes(bytes), |p| Digest::of_bytes(&p))
}

fn payload(bytes: &[u8]) -> Option<Vec<u8>> {
    #[derive(Deserialize)]
    struct Signed {
        signatures: Vec<Signature>,
    }
    let signed: Signed = serde_json::from_slice(bytes).ok()?;
    let protected = signed.signatures.first()?;
    let header =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(protected.protected.trim_end_matches('=')).ok()?;
    let header: Protected = serde_json::from_slice(&header).ok()?;
    let tail =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header.format_tail.trim_end_matches('=')).ok()?;
    let mut out = bytes.get(..header.format_length)?.to_vec();
    out.extend_from_slice(&tail);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4";
    const B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn layers_reversed_and_deduplicated() {
        let m = format!(
            r#"{{"schemaVersion":1,"name":"a","tag":"t","architecture":"amd64",
            "fsLayers":[{{"blobSum":"{A}"}},{{"blobSum":"{B}"}},{{"blobSum":"{A}"}}],
            "history":[{{"v1Compatibility":"{{\"id\":\"3\",\"config\":{{\"Cmd\":[\"sh\"]}}}}"}},{{"v1Compatibility":"{{}}"}},{{"v1Compatibility":"{{}}"}}]}}"#
        );
        let s = Schema1::parse(m.as_bytes()).unwrap();
        assert_eq!(s.layers.iter().map(ToString::to_string).collect::<Vec<_>>(), vec![A.to_owned(), B.to_owned()]);
        assert_eq!(s.top["config"]["Cmd"][0], "sh");
        assert!(Schema1::parse(br#"{"schemaVersion":1,"fsLayers":[],"history":[]}"#).is_err());
    }

    #[test]
    fn signed_digest_covers_the_payload() {
        let payload = br#"{"schemaVersion":1,"fsLayers":[],"history":[]}"#;
        let body_prefix = &payload[..payload.len() - 1]; // everything but the closing brace
        let tail = b"}";
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let protected =
            enc(format!(r#"{{"formatLength":{},"formatTail":"{}"}}"#, body_prefix.len(), enc(tail)).as_bytes());
        let signed =
            format!(r#"{},"signatures":[{{"protected":"{protected}"}}]}}"#, String::from_utf8_lossy(body_prefix));
        assert_eq!(digest_of(signed.as_bytes()), Digest::of_bytes(payload));
        assert_eq!(digest_of(payload), Digest::of_bytes(payload));
    }
}
