//! Image references with skopeo-style transports.
//!
//! | form | meaning |
//! |---|---|
//! | `docker://[HOST[:PORT]/]REPO[:TAG][@sha256:HEX]` | a registry image |
//! | `REPO[:TAG]` | the same as `docker://REPO[:TAG]` |
//! | `oci:PATH[:TAG]` | an OCI image layout directory |
//! | `docker-archive:PATH[:REPO:TAG]` | a `docker save` archive |
//!
//! The normalized form ([`ImageRef::cache_key`]) is what the store keys images by, so
//! `alpine` and `docker.io/library/alpine:latest` are one entry.

mod appc;
mod docker;

use std::fmt;
use std::path::{Path, PathBuf};

pub use self::appc::{is_ac_identifier, AppcRef, BadImageId, ImageId};
pub use self::docker::{DockerRef, DEFAULT_REGISTRY, DEFAULT_TAG};

/// A malformed image reference; names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference '{input}': {why} (at '{part}')")]
pub struct ParseError {
    input: String,
    part: String,
    why: String,
}

impl ParseError {
    pub(crate) fn new(input: &str, part: &str, why: &str) -> Self {
        Self { input: input.to_owned(), part: part.to_owned(), why: why.to_owned() }
    }

    /// The part of the input that is wrong.
    pub fn part(&self) -> &str {
        &self.part
    }
}

/// A parsed image reference: where the image comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ImageRef {
    /// `docker://…`: a registry (or the configured local image directory).
    Docker(DockerRef),
    /// `oci:PATH[:TAG]`: an OCI image layout.
    Oci {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to pick; `None` means the only image.
        tag: Option<String>,
    },
    /// `docker-archive:PATH[:REPO:TAG]`: a `docker save` tar.
    DockerArchive {
        /// The archive file.
        path: PathBuf,
        /// Which of the archive's images to take; `None` means the only one.
        name: Option<DockerRef>,
    },
    /// `aci:PATH`: an appc image archive.
    Aci {
        /// The ACI file.
        path: PathBuf,
    },
    /// `appc:…`: an appc image from the store or simple discovery.
    Appc(AppcRef),
}

const DOCKER_PREFIX: &str = "docker://";
const OCI_PREFIX: &str = "oci:";
const DOCKER_ARCHIVE_PREFIX: &str = "docker-archive:";
const ACI_PREFIX: &str = "aci:";
const APPC_PREFIX: &str = "appc:";

impl ImageRef {
    /// Parses a reference; a bare name means `docker://`.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if let Some(rest) = input.strip_prefix(DOCKER_PREFIX) {
            return DockerRef::parse(rest).map(Self::Docker).map_err(|e| ParseError { input: input.to_owned(), ..e });
        }
        if let Some(rest) = input.strip_prefix(OCI_PREFIX) {
            let (path, tag) = split_path_suffix(rest);
            if path.is_empty() {
                return Err(ParseError::new(input, rest, "the OCI layout path is empty"));
            }
            if let Some(tag) = tag {
                if tag.is_empty() || tag.chars().any(|c| c.is_control()) {
                    return Err(ParseError::new(input, tag, "the OCI layout tag is empty or has control characters"));
                }
            }
            return Ok(Self::Oci { path: PathBuf::from(path), tag: tag.map(str::to_owned) });
        }
        if let Some(rest) = input.strip_prefix(DOCKER_ARCHIVE_PREFIX) {
            let (path, name) = split_path_suffix(rest);
            if path.is_empty() {
                return Err(ParseError::new(input, rest, "the archive path is empty"));
            }
            let name = name
                .map(|n| DockerRef::parse(n).map_err(|e| ParseError { input: input.to_owned(), ..e }))
                .transpose()?;
            return Ok(Self::DockerArchive { path: PathBuf::from(path), name });
        }
        if let Some(path) = input.strip_prefix(ACI_PREFIX) {
            if path.is_empty() {
                return Err(ParseError::new(input, path, "the ACI path is empty"));
            }
            return Ok(Self::Aci { path: PathBuf::from(path) });
        }
        if let Some(rest) = input.strip_prefix(APPC_PREFIX) {
            return AppcRef::parse(input, rest).map(Self::Appc);
        }
        if let Some((transport, _)) = input.split_once(':') {
            if matches!(transport, "dir" | "oci-archive" | "containers-storage" | "docker-daemon") {
                return Err(ParseError::new(input, transport, "this transport is not supported yet"));
            }
        }
        if input.contains("://") {
            let scheme = input.split("://").next().unwrap_or_default();
            return Err(ParseError::new(
                input,
                scheme,
                "unknown transport (expected docker://, oci:, docker-archive:, aci: or appc:)",
            ));
        }
        DockerRef::parse(input).map(Self::Docker)
    }

    /// The store's key for this image: the normalized reference, with local paths made
    /// absolute so that the same layout reached two ways is one entry.
    pub fn cache_key(&self) -> String {
        match self {
            Self::Docker(r) => r.to_string(),
            Self::Oci { path, tag } => {
                format!(
                    "{OCI_PREFIX}{}{}",
                    absolute(path).display(),
                    tag.as_ref().map(|t| format!(":{t}")).unwrap_or_default()
                )
            }
            Self::DockerArchive { path, name } => format!(
                "{DOCKER_ARCHIVE_PREFIX}{}{}",
                absolute(path).display(),
                name.as_ref().map(|n| format!(":{n}")).unwrap_or_default()
            ),
            Self::Aci { path } => format!("{ACI_PREFIX}{}", absolute(path).display()),
            Self::Appc(r) => r.to_string(),
        }
    }

    /// Is this an appc image (`aci:` or `appc:`)?
    pub fn is_appc(&self) -> bool {
        matches!(self, Self::Aci { .. } | Self::Appc(_))
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cache_key())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// `PATH[:SUFFIX]`, split at the first ':' as skopeo does (so a path cannot hold ':',
/// but the suffix can: `docker-archive:a.tar:localhost:5000/app:v1`).
fn split_path_suffix(s: &str) -> (&str, Option<&str>) {
    match s.split_once(':') {
        Some((path, suffix)) => (path, Some(suffix)),
        None => (s, None),
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports() {
        assert_eq!(
            ImageRef::parse("alpine").unwrap(),
            ImageRef::parse("docker://docker.io/library/alpine:latest").unwrap()
        );
        assert_eq!(ImageRef::parse("alpine").unwrap().cache_key(), "docker.io/library/alpine:latest");
        assert_eq!(
            ImageRef::parse("oci:/x/y:v1").unwrap(),
            ImageRef::Oci { path: "/x/y".into(), tag: Some("v1".into()) }
        );
        assert_eq!(ImageRef::parse("oci:/x/y").unwrap(), ImageRef::Oci { path: "/x/y".into(), tag: None });
        match ImageRef::parse("docker-archive:/a/b.tar:localhost:5000/app:v2").unwrap() {
            ImageRef::DockerArchive { path, name } => {
                assert_eq!(path, Path::new("/a/b.tar"));
                assert_eq!(name.unwrap().to_string(), "localhost:5000/app:v2");
            }
            other => panic!("{other:?}"),
        }
        match ImageRef::parse("docker-archive:b.tar").unwrap() {
            ImageRef::DockerArchive { path, name } => {
                assert_eq!(path, Path::new("b.tar"));
                assert!(name.is_none());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_references() {
        assert_eq!(ImageRef::parse("oci:").unwrap_err().part(), "");
        assert_eq!(ImageRef::parse("http://x/y").unwrap_err().part(), "http");
        assert_eq!(ImageRef::parse("docker://UPPER").unwrap_err().part(), "UPPER");
        assert!(ImageRef::parse("docker-archive:x.tar:Bad").is_err());
        let msg = ImageRef::parse("docker://a:b:c").unwrap_err().to_string();
        assert!(msg.contains("docker://a:b:c"), "{msg}");
    }

    proptest::proptest! {
        /// Whatever the input, parsing returns, and an accepted reference's store key
        /// parses back to the same key (the store finds what it stored).
        #[test]
        fn store_keys_are_fixed_points(
            input in "(docker://|oci:|docker-archive:|aci:|appc:)?[a-zA-Z0-9:/@._?=&~-]{0,60}|.{0,60}"
        ) {
            if let Ok(parsed) = ImageRef::parse(&input) {
                let key = parsed.cache_key();
                let again = ImageRef::parse(&key).map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{key}: {e}")))?;
                proptest::prop_assert_eq!(again.cache_key(), key);
            }
        }
    }
}
