//! Progress bars for layer downloads (per layer and total, with rate) when stderr is
//! a terminal; nothing otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use strata::store::Progress;

/// Bars on stderr.
#[derive(Debug)]
pub(crate) struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    layers: Mutex<HashMap<String, ProgressBar>>,
}

/// A progress reporter if stderr is a terminal.
pub(crate) fn for_terminal() -> Option<Arc<dyn Progress>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let multi = MultiProgress::new();
    let total = multi.add(ProgressBar::new(0));
    total.set_style(
        ProgressStyle::with_template("total   {bytes:>10} {binary_bytes_per_sec:>12} {elapsed:>4}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    Some(Arc::new(Bars { multi, total, layers: Mutex::new(HashMap::new()) }))
}

impl Progress for Bars {
    fn layer_started(&self, layer: &str, total: Option<u64>) {
        let bar = self.multi.insert_before(&self.total, ProgressBar::new(total.unwrap_or(0)));
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:.bold} [{bar:30}] {bytes:>10}/{total_bytes:<10} {binary_bytes_per_sec:>12}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(layer.rsplit(':').next().unwrap_or(layer).chars().take(12).collect::<String>());
        if let Ok(mut layers) = self.layers.lock() {
            layers.insert(layer.to_owned(), bar);
        }
    }

    fn layer_advanced(&self, layer: &str, bytes: u64) {
        self.total.inc(bytes);
        if let Ok(layers) = self.layers.lock() {
            if let Some(bar) = layers.get(layer) {
                bar.inc(bytes);
            }
        }
    }

    fn layer_finished(&self, layer: &str) {
        if let Ok(mut layers) = self.layers.lock() {
            if let Some(bar) = layers.remove(layer) {
                bar.finish();
            }
        }
    }
}
