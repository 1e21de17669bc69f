//! Image garbage collection (Mesos' `image_gc_config`, done well): removes images no
//! rootfs uses and no one pinned, least recently used first, then the layers and
//! documents no remaining image or rootfs needs.
//!
//! GC holds the provisioner lock and the store's GC lock exclusively, so no provision
//! and no pull is in flight while it decides; every removal is atomic (an image record
//! is unlinked; a layer directory is renamed into staging, then deleted), so a crash
//! leaves the old state or the new one, and `recover` clears what was half deleted.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::digest::Digest;
use crate::provisioner::{ProvisionError, Provisioner};
use crate::reference::ImageRef;
use crate::store::StoreError;

/// What to keep.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GcPolicy {
    /// Stop removing images once the store holds at most this many (uncompressed layer)
    /// bytes. `None`: remove every unused, unpinned image.
    pub keep_bytes: Option<u64>,
    /// Images never removed.
    pub keep: Vec<ImageRef>,
}

impl GcPolicy {
    /// A policy.
    pub fn new(keep_bytes: Option<u64>, keep: Vec<ImageRef>) -> Self {
        Self { keep_bytes, keep }
    }
}

/// What GC freed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GcReport {
    /// Image references removed, in removal order.
    pub images_removed: Vec<String>,
    /// Layers removed.
    pub layers_removed: usize,
    /// Manifests and configs removed.
    pub blobs_removed: usize,
    /// Uncompressed layer bytes freed.
    pub bytes_freed: u64,
    /// Uncompressed layer bytes left.
    pub bytes_left: u64,
}

/// Errors of GC.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The provisioner failed.
    #[error(transparent)]
    Provisioner(#[from] ProvisionError),
}

/// Runs one collection.
pub fn collect(provisioner: &Provisioner, policy: &GcPolicy) -> Result<GcReport, GcError> {
    let _provisions = provisioner.lock_exclusive()?;
    let store = provisioner.store();
    let _pulls = store.lock_for_gc()?;
    let crate::provisioner::InUse { images: used_images, layers: used_layers, .. } = provisioner.images_in_use()?;
    let pinned: BTreeSet<String> = policy.keep.iter().map(ImageRef::cache_key).collect();

    let mut images = Vec::new();
    for record in store.images()? {
        let layers = store.image_layers(&record)?;
        images.push((record, layers));
    }
    let layer_sizes = store.layer_sizes()?;
    let size_of = |set: &BTreeSet<Digest>| set.iter().map(|d| layer_sizes.get(d).copied().unwrap_or(0)).sum::<u64>();
    let live_layers = |images: &[(crate::store::ImageRecord, Vec<Digest>)]| {
        let mut set: BTreeSet<Digest> = used_layers.clone();
        for (_, layers) in images {
            set.extend(layers.iter().cloned());
        }
        set
    };

    let mut report = GcReport::default();
    let before: u64 = layer_sizes.values().sum();
    // Least recently used first.
    let mut candidates: Vec<usize> = (0..images.len())
        .filter(|&i| !used_images.contains(&images[i].0.reference) && !pinned.contains(&images[i].0.reference))
        .collect();
    candidates.sort_by_key(|&i| images[i].0.last_used);
    let mut removed = BTreeSet::new();
    for i in candidates {
        if let Some(limit) = policy.keep_bytes {
            let remaining: Vec<_> =
                images.iter().enumerate().filter(|(j, _)| !removed.contains(j)).map(|(_, x)| x.clone()).collect();
            if size_of(&live_layers(&remaining)) <= limit {
                break;
            }
        }
        let reference = &images[i].0.reference;
        if store.remove_key(reference)? {
            tracing::info!(image = %reference, "gc: image removed");
            report.images_removed.push(reference.clone());
            provisioner.crash_point("gc:image-removed");
        }
        removed.insert(i);
    }
    let remaining: Vec<_> =
        images.iter().enumerate().filter(|(j, _)| !removed.contains(j)).map(|(_, x)| x.clone()).collect();
    let keep_layers = live_layers(&remaining);
    for (digest, size) in &layer_sizes {
        if !keep_layers.contains(digest) {
            store.remove_layer(digest)?;
            provisioner.crash_point("gc:layer-removed");
            report.layers_removed += 1;
            report.bytes_freed += size;
        }
    }
    let mut keep_blobs = BTreeSet::new();
    for (record, _) in &remaining {
        keep_blobs.extend(store.image_blobs(record)?);
    }
    report.blobs_removed = store.remove_blobs_except(&keep_blobs)?;
    report.bytes_left = before - report.bytes_freed;
    Ok(report)
}
