//! In-process provisioner benchmarks, driven by `bench/provision.sh`:
//!
//! ```text
//! cargo bench --bench provision -- cycles ROOT REF BACKEND N     # N provision+destroy cycles: rate, p50, p99
//! cargo bench --bench provision -- populate ROOT REF BACKEND N   # N containers left on disk (for recover)
//! ```

#![allow(clippy::print_stdout, clippy::unwrap_used, missing_docs)]

use std::path::Path;
use std::time::Instant;

use strata::backend::BackendKind;
use strata::provisioner::{ContainerPath, CrashPoints, Provisioner};
use strata::reference::ImageRef;
use strata::store::{PullPolicy, Store, StoreOptions};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [mode, root, reference, backend, n] = args.as_slice() else {
        println!("usage: provision (cycles|populate) ROOT REF BACKEND N");
        return;
    };
    let n: usize = n.parse().unwrap();
    let backend: BackendKind = backend.parse().unwrap();
    let image = ImageRef::parse(reference).unwrap();
    let store = Store::open(Path::new(root), StoreOptions::default()).unwrap();
    let provisioner = Provisioner::new(Path::new(root), store, Some(backend), CrashPoints::default()).unwrap();
    provisioner.store().pull(&image, PullPolicy::Missing).unwrap();
    match mode.as_str() {
        "cycles" => {
            let mut latencies = Vec::with_capacity(n);
            let start = Instant::now();
            for i in 0..n {
                let t = Instant::now();
                let id: ContainerPath = format!("cycle-{i}").parse().unwrap();
                provisioner.provision(&id, &image, Some(backend), PullPolicy::Missing).unwrap();
                provisioner.destroy(&id).unwrap();
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            let total = start.elapsed().as_secs_f64();
            latencies.sort_by(f64::total_cmp);
            let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p) as usize];
            println!(
                "cycles={n} backend={backend} seconds={total:.3} rate_per_s={:.0} p50_ms={:.2} p99_ms={:.2}",
                n as f64 / total,
                pct(0.5),
                pct(0.99)
            );
        }
        "populate" => {
            let start = Instant::now();
            for i in 0..n {
                let id: ContainerPath = format!("pop-{i}").parse().unwrap();
                provisioner.provision(&id, &image, Some(backend), PullPolicy::Missing).unwrap();
            }
            println!("populated={n} backend={backend} seconds={:.3}", start.elapsed().as_secs_f64());
        }
        other => println!("unknown mode {other}"),
    }
}
