//! The TOML configuration file (`--config`, env `STRATA_CONFIG`). Every key is
//! optional; command-line flags override it.
//!
//! ```toml
//! root = "/var/lib/strata"          # state directory
//! platform = "linux/amd64"          # default: the host's
//! local_images_dir = "/srv/images"  # docker:// names served from DIR/NAME[:TAG].tar
//! parallel_layers = 2               # layers of one image unpacked at once
//! backend = "overlay"               # default backend; default: overlay when usable, else copy
//! appc_discovery_prefix = "https://" # appc simple discovery: PREFIX{name}-{version}-{os}-{arch}.aci
//!
//! [limits]
//! max_layer_bytes = 68719476736     # 64 GiB: cap on one layer's uncompressed bytes
//!
//! [unpack]
//! allow_devices = false             # create device nodes from layers (root only)
//! max_zstd_window_log = 27           # largest zstd window, 2^N bytes (31 for zstd --long=31 layers)
//!
//! [serve]
//! socket = "/run/strata/strata.sock" # default; --socket overrides
//! gc_max_store_bytes = 107374182400  # automatic GC above this (default: off)
//! gc_keep_bytes = 85899345920        # ... down to this (default: 80% of the max)
//! gc_interval_secs = 300             # how often to check (default: 300)
//!
//! [registries."registry.example:5000"]
//! insecure = false                  # plain HTTP / unverified TLS allowed (default true for loopback)
//! ca_file = "/etc/strata/example-ca.pem"
//! mirrors = ["mirror.example:5000"] # tried in order, then the registry itself
//! username = "robot"
//! password = "…"
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The parsed configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// State directory. Default: `/var/lib/strata` as root, else `$XDG_DATA_HOME/strata`.
    pub root: Option<PathBuf>,
    /// Platform to pick from indexes, `OS/ARCH[/VARIANT]`. Default: the host's.
    pub platform: Option<String>,
    /// Directory of `docker save` archives that serves `docker://` names. Default: none.
    pub local_images_dir: Option<PathBuf>,
    /// Layers of one image unpacked at once. Default: 2.
    pub parallel_layers: Option<usize>,
    /// Default provisioner backend: `copy`, `bind` or `overlay`. Default: overlay
    /// when usable, else copy.
    pub backend: Option<String>,
    /// appc simple discovery prefix or template (Mesos'
    /// `--appc_simple_discovery_uri_prefix`). Default: `https://`.
    pub appc_discovery_prefix: Option<String>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Unpacking permissions.
    #[serde(default)]
    pub unpack: Unpack,
    /// The daemon (`strata serve`).
    #[serde(default)]
    pub serve: Serve,
    /// Per-registry settings, keyed by `HOST[:PORT]` (`docker.io` for Docker Hub).
    #[serde(default)]
    pub registries: std::collections::BTreeMap<String, RegistryConfig>,
}

/// `[serve]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Serve {
    /// Socket path. Default: /run/strata/strata.sock (`--socket` overrides).
    pub socket: Option<PathBuf>,
    /// Automatic GC starts when the store's layers pass this many bytes. Default: off.
    pub gc_max_store_bytes: Option<u64>,
    /// Automatic GC collects down to this many bytes. Default: 80% of `gc_max_store_bytes`.
    pub gc_keep_bytes: Option<u64>,
    /// Seconds between automatic GC checks. Default: 300.
    pub gc_interval_secs: Option<u64>,
}

/// `[registries."HOST[:PORT]"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RegistryConfig {
    /// Allow plain HTTP and unverified TLS. Default: false (true for 127.0.0.0/8 and localhost).
    pub insecure: Option<bool>,
    /// PEM file of extra CA certificates to trust for this registry.
    pub ca_file: Option<PathBuf>,
    /// Mirrors (`HOST[:PORT]`), tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// User name for this registry.
    pub username: Option<String>,
    /// Password for this registry (keep the file private).
    pub password: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Limits {
    /// Cap on one layer's uncompressed bytes. Default: 64 GiB.
    pub max_layer_bytes: Option<u64>,
}

/// `[unpack]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Unpack {
    /// Create block/char device nodes found in layers (as root only). Default: false.
    pub allow_devices: Option<bool>,
    /// Largest zstd window accepted, 2^N bytes (10 to 31). Default: 27 (128 MiB).
    pub max_zstd_window_log: Option<u32>,
}

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
#[error("config file {}: {why}", path.display())]
pub struct ConfigError {
    path: PathBuf,
    why: String,
}

impl Config {
    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError { path: path.to_owned(), why: e.to_string() })?;
        toml::from_str(&text).map_err(|e| ConfigError { path: path.to_owned(), why: one_line_toml_error(&text, &e) })
    }
}

/// The parser's complaint with its line number, on one line (its own display draws a
/// caret under the source over several lines).
fn one_line_toml_error(text: &str, error: &toml::de::Error) -> String {
    match error.span() {
        Some(span) => {
            let line = text.get(..span.start).map_or(1, |before| before.matches('\n').count() + 1);
            format!("line {line}: {}", error.message().trim())
        }
        None => error.message().trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_key_and_refuses_unknown() {
        let c: Config = toml::from_str(
            "root='/r'\nplatform='linux/arm64'\nlocal_images_dir='/i'\nparallel_layers=3\n[limits]\nmax_layer_bytes=10\n[unpack]\nallow_devices=true\nmax_zstd_window_log=31\n[registries.'r:5000']\ninsecure=true\nmirrors=['m:1']\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_layer_bytes, Some(10));
        assert_eq!(c.unpack.allow_devices, Some(true));
        assert_eq!(c.unpack.max_zstd_window_log, Some(31));
        assert!(toml::from_str::<Config>("bogus=1").is_err());
        let text = "root = '/r'\n[unpack]\nbogus = 1\n";
        let e = toml::from_str::<Config>(text).unwrap_err();
        let why = one_line_toml_error(text, &e);
        assert!(why.starts_with("line 3: unknown field `bogus`"), "{why}");
        assert!(!why.contains('\n'), "{why}");
    }
}
