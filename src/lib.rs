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

pub mod backend;
pub mod bundle;
pub mod config;
pub mod digest;
pub mod durable;
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
