//! Image GC: pinned and in-use images stay, least recently used go first, layers
//! nothing needs go, and a crash during GC is repaired by recover.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layer_rootfs, strata, strata_ok, tar, Comp, Entry, Layout};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    refs: Vec<String>,
    layers: Vec<Vec<u8>>,
}

/// Four images: `shared` layer in all, one own layer each.
fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let shared = tar(&[Entry::file("shared", &vec![1u8; 100_000])]);
    let mut layout = Layout::new(&tmp.path().join("img"));
    let mut refs = Vec::new();
    let mut layers = vec![shared.clone()];
    for name in ["a", "b", "c", "d"] {
        let own = tar(&[Entry::file(name, &vec![2u8; 200_000])]);
        layout.add_image(name, &[(shared.clone(), Comp::Gzip), (own.clone(), Comp::Gzip)]);
        refs.push(format!("oci:{}:{name}", layout.dir.display()));
        layers.push(own);
    }
    let root = tmp.path().join("root");
    for r in &refs {
        strata_ok(&root, &["pull", r]);
    }
    Env { root, refs, layers, _tmp: tmp }
}

/// Sets an image's last use (records are plain JSON).
fn set_last_used(root: &Path, reference_suffix: &str, when: u64) {
    for entry in std::fs::read_dir(root.join("store/images")).unwrap() {
        let path = entry.unwrap().path();
        let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        if record["reference"].as_str().unwrap().ends_with(reference_suffix) {
            record["last_used"] = when.into();
            std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        }
    }
}

fn images(root: &Path) -> Vec<String> {
    let list: serde_json::Value = serde_json::from_str(&strata_ok(root, &["images", "--json"])).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().rsplit(':').next().unwrap().to_owned())
        .collect()
}

#[test]
fn keeps_used_and_pinned_images_and_shared_layers() {
    let e = env();
    strata_ok(&e.root, &["provision", "c1", &e.refs[0], "--backend", "copy"]);
    let report: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["gc", "--json", "--keep", &e.refs[1]])).unwrap();
    assert_eq!(report["images_removed"].as_array().unwrap().len(), 2);
    assert_eq!(images(&e.root), vec!["a", "b"]);
    assert!(layer_rootfs(&e.root, &e.layers[0]).exists(), "shared layer kept");
    assert!(layer_rootfs(&e.root, &e.layers[1]).exists() && layer_rootfs(&e.root, &e.layers[2]).exists());
    assert!(!layer_rootfs(&e.root, &e.layers[3]).exists() && !layer_rootfs(&e.root, &e.layers[4]).exists());
    assert_eq!(report["layers_removed"], 2);
    // the image in use still provisions; after destroy it can go too
    strata_ok(&e.root, &["provision", "c2", &e.refs[0], "--backend", "copy", "--pull", "never"]);
    strata_ok(&e.root, &["destroy", "c1"]);
    strata_ok(&e.root, &["destroy", "c2"]);
    strata_ok(&e.root, &["gc"]);
    assert!(images(&e.root).is_empty());
    assert_eq!(std::fs::read_dir(e.root.join("store/layers/sha256")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(e.root.join("store/blobs/sha256")).unwrap().count(), 0);
}

#[test]
fn least_recently_used_go_first_until_the_store_fits() {
    let e = env();
    for (name, when) in [("a", 400), ("b", 100), ("c", 300), ("d", 200)] {
        set_last_used(&e.root, name, when);
    }
    // each own layer is ~200 KB, the shared one ~100 KB: keeping ~550 KB leaves two images
    let report: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["gc", "--json", "--keep-bytes", "560000"])).unwrap();
    let removed: Vec<&str> = report["images_removed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(removed.len(), 2);
    assert!(removed[0].ends_with(":b") && removed[1].ends_with(":d"), "{removed:?}");
    assert_eq!(images(&e.root), vec!["a", "c"]);
}

#[test]
fn a_crash_during_gc_is_repaired_by_recover() {
    for point in ["gc:image-removed", "gc:layer-removed"] {
        let e = env();
        let status = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["--root", e.root.to_str().unwrap(), "gc"])
            .env("STRATA_CRASH_AT", point)
            .status()
            .unwrap();
        assert!(!status.success(), "{point} not reached");
        strata_ok(&e.root, &["recover"]);
        assert_eq!(std::fs::read_dir(e.root.join("store/staging")).unwrap().count(), 0);
        // every remaining image is complete or heals; a second gc finishes the job
        for r in &e.refs {
            let o = strata(&e.root, &["inspect", r]);
            if o.status.success() {
                strata_ok(&e.root, &["pull", r]);
            }
        }
        strata_ok(&e.root, &["gc"]);
        assert!(images(&e.root).is_empty());
        assert_eq!(std::fs::read_dir(e.root.join("store/layers/sha256")).unwrap().count(), 0);
    }
}
