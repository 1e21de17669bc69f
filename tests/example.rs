//! The example image that ships in the repo builds reproducibly and pulls: the
//! README's first command stays true.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

#[test]
fn example_image_builds_reproducibly_and_pulls() {
    let tmp = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-example.sh");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    for out in [&a, &b] {
        let o = Command::new(script).arg(out).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let index = |p: &std::path::Path| std::fs::read(p.join("index.json")).unwrap();
    assert_eq!(index(&a), index(&b), "same files, same digests");

    let root = tmp.path().join("root");
    let digest = common::strata_ok(&root, &["pull", &format!("oci:{}:latest", a.display())]);
    assert!(digest.trim().starts_with("sha256:"));
    let inspect: serde_json::Value =
        serde_json::from_str(&common::strata_ok(&root, &["inspect", "--json", &format!("oci:{}:latest", a.display())]))
            .unwrap();
    assert_eq!(inspect["entrypoint"][0], "/bin/hello");
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 2);
}
