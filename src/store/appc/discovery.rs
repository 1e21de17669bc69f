//! appc simple discovery: an image name and labels become the URL of an ACI (and of
//! its detached signature, `.aci.asc`).
//!
//! The prefix works as Mesos' `--appc_simple_discovery_uri_prefix`: the URL is
//! `PREFIX{name}-{version}-{os}-{arch}.aci` (`version` defaults to `latest`, `os`
//! and `arch` to the host's). A prefix with `{…}` placeholders is a full template
//! instead (the appc spec's `https://{name}-{version}-{os}-{arch}.{ext}` form). The
//! prefix may be `https://`, `http://`, `file://` or an absolute path (a local
//! directory tree laid out the same way); the default is `https://`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::time::Duration;

use super::import::AciSource;
use super::spec::host_labels;

/// The default prefix: HTTPS to the host named by the image name (appc spec).
pub const DEFAULT_PREFIX: &str = "https://";
/// Largest detached signature kept.
const MAX_SIGNATURE_BYTES: u64 = 64 * 1024;

/// Why discovery could not produce an ACI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The configured prefix is unusable.
    #[error("appc discovery prefix '{prefix}': {why}")]
    BadPrefix {
        /// The prefix.
        prefix: String,
        /// Why.
        why: String,
    },
    /// Nothing is published at the URL.
    #[error("appc discovery: no image at {url} ({status})")]
    NotFound {
        /// The URL tried.
        url: String,
        /// What the server said.
        status: String,
    },
    /// The request failed.
    #[error("appc discovery: {url}: {why}")]
    Transport {
        /// The URL tried.
        url: String,
        /// Why.
        why: String,
    },
}

/// Where and how to look up images by name.
#[derive(Debug, Clone)]
pub struct Discovery {
    prefix: String,
    client: reqwest::blocking::Client,
}

impl Discovery {
    /// Discovery under `prefix` (see the module docs), with HTTP timeouts.
    pub fn new(prefix: &str, connect_timeout: Duration, io_timeout: Duration) -> Result<Self, DiscoveryError> {
        let bad = |why: &str| DiscoveryError::BadPrefix { prefix: prefix.to_owned(), why: why.to_owned() };
        if !["https://", "http://", "file://", "/"].iter().any(|s| prefix.starts_with(s)) {
            return Err(bad("expected https://, http://, file:// or an absolute path"));
        }
        crate::registry::install_tls_provider();
        let client = reqwest::blocking::Client::builder()
            .connect_timeout(connect_timeout)
            .timeout(io_timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| bad(&format!("HTTP client: {e}")))?;
        Ok(Self { prefix: prefix.to_owned(), client })
    }

    /// The URL of the ACI for `name` with `labels` (`ext` is `aci` or `aci.asc`).
    pub fn url(&self, name: &str, labels: &BTreeMap<String, String>, ext: &str) -> String {
        let (host_os, host_arch) = host_labels();
        let label = |key: &str, default: &str| labels.get(key).map_or(default, String::as_str).to_owned();
        let (version, os, arch) = (label("version", "latest"), label("os", host_os), label("arch", host_arch));
        if self.prefix.contains('{') {
            self.prefix
                .replace("{name}", name)
                .replace("{version}", &version)
                .replace("{os}", &os)
                .replace("{arch}", &arch)
                .replace("{ext}", ext)
        } else {
            format!("{}{name}-{version}-{os}-{arch}.{ext}", self.prefix)
        }
    }

    /// Opens the ACI for `name`/`labels` as a stream, with its signature when one is
    /// published. `max_bytes` caps the download (a dependency's declared `size`,
    /// against endless-data attacks).
    pub fn open(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
        max_bytes: Option<u64>,
    ) -> Result<AciSource<'static>, DiscoveryError> {
        let url = self.url(name, labels, "aci");
        // The image first: when the server is unreachable or lacks the image, the
        // error names the .aci, not its optional signature.
        let body = self.get(&url)?;
        let signature = match self.get(&self.url(name, labels, "aci.asc")) {
            Ok(body) => {
                let mut bytes = Vec::new();
                body.take(MAX_SIGNATURE_BYTES)
                    .read_to_end(&mut bytes)
                    .map_err(|e| DiscoveryError::Transport { url: format!("{url}.asc"), why: e.to_string() })?;
                Some(bytes)
            }
            Err(DiscoveryError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        let reader: Box<dyn Read + Send> = match max_bytes {
            Some(limit) => Box::new(Capped { inner: body, left: limit, url: url.clone() }),
            None => body,
        };
        tracing::debug!(%url, signed = signature.is_some(), "appc image discovered");
        Ok(AciSource { name: url, reader, signature })
    }

    fn get(&self, url: &str) -> Result<Box<dyn Read + Send>, DiscoveryError> {
        if let Some(path) = url.strip_prefix("file://").or_else(|| url.starts_with('/').then_some(url)) {
            let path = PathBuf::from(path);
            return match std::fs::File::open(&path) {
                Ok(f) => Ok(Box::new(f)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(DiscoveryError::NotFound { url: url.to_owned(), status: "no such file".into() })
                }
                Err(e) => Err(DiscoveryError::Transport { url: url.to_owned(), why: e.to_string() }),
            };
        }
        let response = self.client.get(url).send().map_err(|e| DiscoveryError::Transport {
            url: url.to_owned(),
            why: crate::registry::describe_http_error(e),
        })?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND || status == reqwest::StatusCode::GONE {
            return Err(DiscoveryError::NotFound { url: url.to_owned(), status: status.to_string() });
        }
        if !status.is_success() {
            return Err(DiscoveryError::Transport { url: url.to_owned(), why: format!("server answered {status}") });
        }
        Ok(Box::new(response))
    }
}

/// Fails the read once more than the declared size arrives.
struct Capped<R> {
    inner: R,
    left: u64,
    url: String,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min(usize::try_from(self.left.saturating_add(1)).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!("{} is larger than the size its dependent declares", self.url)));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn discovery(prefix: &str) -> Discovery {
        Discovery::new(prefix, Duration::from_secs(1), Duration::from_secs(1)).unwrap()
    }

    #[test]
    fn urls_as_mesos_and_the_spec_build_them() {
        let labels: BTreeMap<String, String> =
            [("version", "1.0"), ("os", "linux"), ("arch", "amd64")].map(|(k, v)| (k.into(), v.into())).into();
        assert_eq!(
            discovery("http://127.0.0.1:8080/").url("example.com/app", &labels, "aci"),
            "http://127.0.0.1:8080/example.com/app-1.0-linux-amd64.aci"
        );
        assert_eq!(
            discovery("https://").url("example.com/app", &BTreeMap::new(), "aci.asc"),
            format!("https://example.com/app-latest-{}-{}.aci.asc", host_labels().0, host_labels().1)
        );
        assert_eq!(
            discovery("https://mirror/{os}/{arch}/{name}/{version}.{ext}").url("a.b/c", &labels, "aci"),
            "https://mirror/linux/amd64/a.b/c/1.0.aci"
        );
        assert!(Discovery::new("hdfs://x/", Duration::from_secs(1), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn local_prefix_and_size_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let labels: BTreeMap<String, String> =
            [("version", "1"), ("os", "linux"), ("arch", "amd64")].map(|(k, v)| (k.into(), v.into())).into();
        std::fs::create_dir_all(tmp.path().join("example.com")).unwrap();
        std::fs::write(tmp.path().join("example.com/a-1-linux-amd64.aci"), vec![7u8; 1000]).unwrap();
        let d = discovery(&format!("{}/", tmp.path().display()));
        let mut src = d.open("example.com/a", &labels, None).unwrap();
        assert!(src.signature.is_none());
        let mut all = Vec::new();
        src.reader.read_to_end(&mut all).unwrap();
        assert_eq!(all.len(), 1000);
        let mut capped = d.open("example.com/a", &labels, Some(999)).unwrap();
        let err = capped.reader.read_to_end(&mut Vec::new()).unwrap_err();
        assert!(err.to_string().contains("larger than"), "{err}");
        assert!(matches!(d.open("example.com/b", &labels, None), Err(DiscoveryError::NotFound { .. })));
    }
}
