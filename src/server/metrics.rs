//! Prometheus metrics of the node service (OpenMetrics text at `GET /metrics`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::provisioner::Provisioner;
use crate::store::Progress;

/// A backend label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BackendLabel {
    /// copy, bind or overlay.
    pub(crate) backend: String,
}

/// A failure-reason label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    /// What kind of failure.
    pub(crate) reason: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 18))
}

/// Every metric the service exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub(crate) pulls: Counter,
    pub(crate) pull_failures: Family<ReasonLabel, Counter>,
    pub(crate) pull_duration: Histogram,
    pub(crate) pull_bytes: Counter,
    pub(crate) provisions: Family<BackendLabel, Counter>,
    pub(crate) provision_duration: Family<BackendLabel, Histogram>,
    pub(crate) destroys: Counter,
    pub(crate) destroy_duration: Histogram,
    pub(crate) inflight: Gauge,
    remove_container_errors: Gauge<i64, AtomicI64>,
    remove_rootfs_errors: Gauge<i64, AtomicI64>,
    store_bytes: Gauge<i64, AtomicI64>,
    store_layers: Gauge<i64, AtomicI64>,
    store_images: Gauge<i64, AtomicI64>,
    token_hits: Gauge<i64, AtomicI64>,
    token_misses: Gauge<i64, AtomicI64>,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("strata");
        let m = Self {
            pulls: Counter::default(),
            pull_failures: Family::default(),
            pull_duration: duration_histogram(),
            pull_bytes: Counter::default(),
            provisions: Family::default(),
            provision_duration: Family::new_with_constructor(duration_histogram),
            destroys: Counter::default(),
            destroy_duration: duration_histogram(),
            inflight: Gauge::default(),
            remove_container_errors: Gauge::default(),
            remove_rootfs_errors: Gauge::default(),
            store_bytes: Gauge::default(),
            store_layers: Gauge::default(),
            store_images: Gauge::default(),
            token_hits: Gauge::default(),
            token_misses: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register("pulls", "Image pulls (successful or not)", m.pulls.clone());
        registry.register("pull_failures", "Failed pulls by reason", m.pull_failures.clone());
        registry.register("pull_duration_seconds", "Duration of image pulls", m.pull_duration.clone());
        registry.register("pull_bytes", "Layer bytes downloaded", m.pull_bytes.clone());
        registry.register("provisions", "Rootfses provisioned, by backend", m.provisions.clone());
        registry.register(
            "provision_duration_seconds",
            "Duration of provisions, by backend",
            m.provision_duration.clone(),
        );
        registry.register("destroys", "Containers destroyed", m.destroys.clone());
        registry.register("destroy_duration_seconds", "Duration of destroys", m.destroy_duration.clone());
        registry.register("inflight_operations", "Requests being served", m.inflight.clone());
        registry.register(
            "remove_container_errors",
            "Container dirs that could not be removed (Mesos' metric)",
            m.remove_container_errors.clone(),
        );
        registry.register(
            "remove_rootfs_errors",
            "Rootfs dirs that could not be removed (Mesos' metric)",
            m.remove_rootfs_errors.clone(),
        );
        registry.register("store_bytes", "Uncompressed bytes of the stored layers", m.store_bytes.clone());
        registry.register("store_layers", "Stored layers", m.store_layers.clone());
        registry.register("store_images", "Stored images", m.store_images.clone());
        registry.register("token_cache_hits", "Bearer tokens served from the cache", m.token_hits.clone());
        registry.register("token_cache_misses", "Bearer tokens fetched from token servers", m.token_misses.clone());
        Arc::new(Self { registry, ..m })
    }

    /// Refreshes the gauges read from the store and provisioner, then encodes.
    pub fn render(&self, provisioner: &Provisioner) -> String {
        let store = provisioner.store();
        let set = |gauge: &Gauge<i64, AtomicI64>, value: u64| gauge.set(i64::try_from(value).unwrap_or(i64::MAX));
        if let Ok(sizes) = store.layer_sizes() {
            set(&self.store_layers, sizes.len() as u64);
            set(&self.store_bytes, sizes.values().sum());
        }
        if let Ok(images) = store.images() {
            set(&self.store_images, images.len() as u64);
        }
        let counters = provisioner.counters();
        set(&self.remove_container_errors, counters.remove_container_errors.load(Ordering::Relaxed));
        set(&self.remove_rootfs_errors, counters.remove_rootfs_errors.load(Ordering::Relaxed));
        let (hits, misses, _) = store.registry().tokens().stats();
        set(&self.token_hits, hits);
        set(&self.token_misses, misses);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Counts downloaded layer bytes for the metrics.
#[derive(Debug)]
pub(crate) struct BytesCounter(pub(crate) Arc<Metrics>);

impl Progress for BytesCounter {
    fn layer_started(&self, _layer: &str, _total: Option<u64>) {}
    fn layer_advanced(&self, _layer: &str, bytes: u64) {
        self.0.pull_bytes.inc_by(bytes);
    }
    fn layer_finished(&self, _layer: &str) {}
}
