//! Strata turns an image reference into a container root filesystem.
//!
//! ```text
//! reference::ImageRef ─▶ store::Store::pull ─▶ source (oci:, docker-archive:, registry)
//!                                   │
//!                                   ▼
//!                         layer::unpack (one streaming pass, verified, contained)
//!                                   │
//!                                   ▼
//!                 <root>/store/layers/sha256/<diff_id>/rootfs  (shared, overlay-ready)
//! ```
//!
//! The library never prints and never exits; the `strata` binary does.
//!
//! References are parsed and normalized as the docker CLI does; the normalized form is
//! the store's cache key:
//!
//! ```
//! use strata::reference::ImageRef;
//!
//! let short = ImageRef::parse("alpine")?;
//! let long = ImageRef::parse("docker://docker.io/library/alpine:latest")?;
//! assert_eq!(short.cache_key(), long.cache_key());
//! assert!(ImageRef::parse("Alpine").is_err()); // repository names are lower case
//! # Ok::<(), strata::reference::ParseError>(())
//! ```
//!
//! Digests are validated before they can become a path or a URL:
//!
//! ```
//! use strata::digest::Digest;
//!
//! let d: Digest = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".parse()?;
//! assert_eq!(d, Digest::of_bytes(b""));
//! assert!("sha256:../../etc/passwd".parse::<Digest>().is_err());
//! # Ok::<(), strata::digest::DigestError>(())
//! ```

pub mod backend;
pub mod bundle;
pub mod config;
pub mod digest;
pub mod durable;
pub mod error;
pub mod gc;
pub mod image;
pub mod layer;
pub mod mount;
pub mod provisioner;
pub mod reference;
pub mod registry;
pub mod server;
pub mod store;
pub mod sys;
