//! `strata bundle` gives an OCI runtime bundle that real crun runs as is.
//!
//! crun 1.8 refuses hosts with hybrid cgroup v1/v2 mounts like these machines
//! ("cgroups in hybrid mode not supported"); running it in a private mount namespace
//! with the cgroup2 mount (`/sys/fs/cgroup/unified`) unmounted there works, and
//! leaves the host untouched. On a pure v1 or v2 host crun runs directly.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::Path;
use std::process::Command;

use common::strata_ok;

/// The command line that runs crun on this host.
fn crun_command(bundle: &Path, id: &str) -> Command {
    let hybrid = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some("/sys/fs/cgroup/unified"));
    let run = format!("crun run --bundle '{}' '{id}'", bundle.display());
    let mut cmd = Command::new("unshare");
    if hybrid {
        cmd.args(["-m", "sh", "-c", &format!("mount --make-rprivate / && umount /sys/fs/cgroup/unified && {run}")]);
    } else {
        cmd.args(["-m", "sh", "-c", &run]);
    }
    cmd
}

#[test]
fn crun_runs_a_bundle_as_is() {
    require_root!();
    if Command::new("crun").arg("--version").output().is_err() || !Path::new("/bin/busybox").exists() {
        panic!("crun and busybox-static are not installed: run the README's test command, which installs them");
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("busybox");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-busybox-image.sh");
    let o = Command::new(script).arg(&image).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let root = tmp.path().join("root");
    for backend in ["overlay", "copy"] {
        let bundle = tmp.path().join(format!("bundle-{backend}"));
        let id = format!("strata-test-{backend}-{}", std::process::id());
        let out = strata_ok(
            &root,
            &[
                "bundle",
                &id,
                &format!("oci:{}:latest", image.display()),
                bundle.to_str().unwrap(),
                "--backend",
                backend,
            ],
        );
        assert_eq!(out.trim(), bundle.display().to_string());
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"][0], "/bin/sh");
        assert!(config["root"]["path"].as_str().unwrap().contains("/rootfses/"));
        let run = crun_command(&bundle, &id).output().unwrap();
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "crun failed: {}{}", stdout, String::from_utf8_lossy(&run.stderr));
        assert!(stdout.contains("hello from strata"), "{stdout}");
        assert!(stdout.contains(&format!("host={id}")), "{stdout}");
        assert_eq!(strata_ok(&root, &["destroy", &id]).trim(), "destroyed");
    }
    assert!(strata::mount::mounts_under(&root).unwrap().is_empty());
}

#[test]
fn a_failed_bundle_takes_back_only_its_rootfs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut layout = common::Layout::new(&tmp.path().join("img"));
    layout.add_image("v1", &[(common::tar(&[common::Entry::file("f", b"x")]), common::Comp::Gzip)]);
    let reference = format!("oci:{}:v1", layout.dir.display());
    let first = strata_ok(&root, &["provision", "c", &reference, "--backend", "copy"]);
    // the bundle dir cannot be created: a file stands where it should be
    let blocked = tmp.path().join("blocked");
    std::fs::write(&blocked, b"").unwrap();
    let o =
        common::strata(&root, &["bundle", "c", &reference, blocked.join("sub").to_str().unwrap(), "--backend", "copy"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("cannot write the bundle"), "{}", common::stderr(&o));
    let list: serde_json::Value = serde_json::from_str(&strata_ok(&root, &["containers", "--json"])).unwrap();
    let rootfses = list[0]["rootfses"].as_array().unwrap();
    assert_eq!(rootfses.len(), 1, "the earlier rootfs stays, the new one is gone");
    assert_eq!(rootfses[0]["path"].as_str().unwrap(), first.trim());
}
