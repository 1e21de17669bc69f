//! The provisioner through the binary: every backend, destroy, nested containers,
//! recover, bad input, concurrency. Mount tests need root and skip otherwise.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{snapshot, strata, strata_ok, tar, Comp, Entry, Layout};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    image: String,
    single: String,
    layers: Vec<Vec<u8>>,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Never leave a mount behind, even when a test fails.
        let _ = strata::mount::unmount_all_under(&self.root);
    }
}

fn layers() -> Vec<Vec<u8>> {
    vec![
        tar(&[
            Entry::dir("etc"),
            Entry::file("etc/conf", b"base"),
            Entry::dir("opt/app"),
            Entry::file("opt/app/old", b"old"),
            Entry::file("gone", b"whited out later"),
            Entry::file("file-then-dir", b"f"),
            Entry::dir("dir-then-file"),
            Entry::file("dir-then-file/x", b""),
            Entry::symlink("link", "etc/conf"),
            Entry::file("bin/tool", b"#!").mode(0o4755).owner(0, 0),
            Entry::hardlink("bin/tool2", "bin/tool"),
        ]),
        tar(&[
            Entry::whiteout("", "gone"),
            Entry::dir("opt/app"),
            Entry::file("opt/app/.wh..wh..opq", b""),
            Entry::file("opt/app/new", b"new"),
            Entry::whiteout("", "file-then-dir"),
            Entry::dir("file-then-dir"),
            Entry::file("file-then-dir/inner", b"i"),
            Entry::whiteout("", "dir-then-file"),
            Entry::file("dir-then-file", b"now a file"),
            Entry::file("etc/conf", b"top"),
        ]),
    ]
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let layers = layers();
    let mut layout = Layout::new(&tmp.path().join("img"));
    layout.add_image("v1", &[(layers[0].clone(), Comp::Gzip), (layers[1].clone(), Comp::Gzip)]);
    layout.add_image("single", &[(tar(&[Entry::file("only", b"one layer")]), Comp::Gzip)]);
    let image = format!("oci:{}:v1", layout.dir.display());
    let single = format!("oci:{}:single", layout.dir.display());
    Env { root, image, single, layers, _tmp: tmp }
}

fn provision(e: &Env, id: &str, image: &str, backend: &str) -> PathBuf {
    let out = strata_ok(&e.root, &["provision", id, image, "--backend", backend]);
    PathBuf::from(out.lines().last().unwrap())
}

fn mounts_under(root: &Path) -> Vec<PathBuf> {
    strata::mount::mounts_under(root).unwrap()
}

fn check_flattened(rootfs: &Path) {
    assert_eq!(std::fs::read(rootfs.join("etc/conf")).unwrap(), b"top");
    assert!(!rootfs.join("gone").exists(), "whiteout applied");
    assert!(!rootfs.join("opt/app/old").exists(), "opaque dir hides the lower content");
    assert_eq!(std::fs::read(rootfs.join("opt/app/new")).unwrap(), b"new");
    assert!(rootfs.join("file-then-dir").is_dir());
    assert!(!rootfs.join("file-then-dir/x").exists());
    assert_eq!(std::fs::read(rootfs.join("dir-then-file")).unwrap(), b"now a file");
    assert_eq!(std::fs::read_link(rootfs.join("link")).unwrap(), Path::new("etc/conf"));
}

#[test]
fn copy_backend_flattens_with_whiteouts() {
    let e = env();
    let rootfs = provision(&e, "c1", &e.image, "copy");
    assert!(rootfs.starts_with(e.root.join("provisioner/containers/c1/backends/copy/rootfses")));
    check_flattened(&rootfs);
    use std::os::unix::fs::MetadataExt;
    let (a, b) =
        (std::fs::metadata(rootfs.join("bin/tool")).unwrap(), std::fs::metadata(rootfs.join("bin/tool2")).unwrap());
    assert_eq!(a.ino(), b.ino(), "hardlinks stay hardlinks");
    assert_eq!(a.mode() & 0o7777, 0o4755);
    // writes stay private to the rootfs
    std::fs::write(rootfs.join("etc/conf"), b"changed").unwrap();
    let layer = common::layer_rootfs(&e.root, &e.layers[1]);
    assert_eq!(std::fs::read(layer.join("etc/conf")).unwrap(), b"top");
    assert_eq!(strata_ok(&e.root, &["destroy", "c1"]).trim(), "destroyed");
    assert!(!e.root.join("provisioner/containers/c1").exists());
}

#[test]
fn overlay_backend_matches_copy_and_writes_to_upper_only() {
    require_root!();
    let e = env();
    let copy = provision(&e, "copy", &e.image, "copy");
    let before: Vec<_> = e.layers.iter().map(|l| snapshot(&common::layer_rootfs(&e.root, l))).collect();
    let out = strata_ok(&e.root, &["provision", "--json", "ov", &e.image, "--backend", "overlay"]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rootfs = PathBuf::from(json["rootfs"].as_str().unwrap());
    assert_eq!(json["backend"], "overlay");
    assert!(json["image_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(json["config"]["config"]["Entrypoint"][0], "/bin/sh");
    let upper = PathBuf::from(json["upper_dir"].as_str().unwrap());
    assert!(json["work_dir"].is_string());
    assert_eq!(mounts_under(&e.root), vec![rootfs.clone()]);
    check_flattened(&rootfs);
    assert_eq!(snapshot(&rootfs), snapshot(&copy), "overlay and copy give the same tree");

    std::fs::write(rootfs.join("etc/conf"), b"changed").unwrap();
    std::fs::write(rootfs.join("added"), b"new file").unwrap();
    std::fs::remove_file(rootfs.join("opt/app/new")).unwrap();
    assert_eq!(std::fs::read(upper.join("added")).unwrap(), b"new file");
    assert_eq!(std::fs::read(upper.join("etc/conf")).unwrap(), b"changed");
    let after: Vec<_> = e.layers.iter().map(|l| snapshot(&common::layer_rootfs(&e.root, l))).collect();
    assert_eq!(before, after, "lower layers are never modified");

    assert_eq!(strata_ok(&e.root, &["destroy", "ov"]).trim(), "destroyed");
    assert!(mounts_under(&e.root).is_empty());
    assert!(!e.root.join("provisioner/containers/ov").exists());
}

#[test]
fn bind_backend_is_read_only_and_single_layer() {
    require_root!();
    let e = env();
    let rootfs = provision(&e, "b", &e.single, "bind");
    assert_eq!(std::fs::read(rootfs.join("only")).unwrap(), b"one layer");
    let err = std::fs::write(rootfs.join("x"), b"").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    let o = strata(&e.root, &["provision", "b2", &e.image, "--backend", "bind"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("single-layer"), "{}", common::stderr(&o));
    assert!(!e.root.join("provisioner/containers/b2").exists(), "nothing created");
    strata_ok(&e.root, &["destroy", "b"]);
    assert!(mounts_under(&e.root).is_empty());
}

#[test]
fn several_rootfses_nested_containers_and_listing() {
    let e = env();
    let first = provision(&e, "p", &e.image, "copy");
    let second = provision(&e, "p", &e.single, "copy");
    assert_ne!(first, second);
    let child = PathBuf::from(
        strata_ok(&e.root, &["provision", "kid", &e.single, "--backend", "copy", "--parent", "p"]).trim(),
    );
    assert!(child.starts_with(e.root.join("provisioner/containers/p/containers/kid/backends/copy/rootfses")));
    let list: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["containers", "--json"])).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["container"], "p");
    assert_eq!(list[0]["rootfses"].as_array().unwrap().len(), 2);
    assert_eq!(list[1]["container"], "p/kid");
    assert_eq!(list[1]["rootfses"][0]["record"]["state"], "ready");
    let text = strata_ok(&e.root, &["containers"]);
    assert!(text.contains("p/kid"), "{text}");
    let o = strata(&e.root, &["provision", "orphan", &e.single, "--backend", "copy", "--parent", "nobody"]);
    assert!(common::stderr(&o).contains("parent container 'nobody' does not exist"));
    // destroying the parent takes the child first
    assert_eq!(strata_ok(&e.root, &["destroy", "p"]).trim(), "destroyed");
    assert!(!e.root.join("provisioner/containers/p").exists());
    assert_eq!(strata_ok(&e.root, &["destroy", "p"]).trim(), "not found");
}

#[test]
fn bad_ids_and_unknown_images_create_nothing() {
    let e = env();
    for bad in ["a/b", "..", ".", "", &"x".repeat(256), "tab\there"] {
        let o = strata(&e.root, &["provision", bad, &e.image, "--backend", "copy"]);
        assert!(!o.status.success(), "{bad:?} accepted");
        assert!(common::stderr(&o).contains("container id"), "{}", common::stderr(&o));
        let o = strata(&e.root, &["destroy", bad]);
        assert!(!o.status.success());
    }
    let o = strata(&e.root, &["provision", "c", "oci:/nonexistent:x", "--backend", "copy"]);
    assert!(!o.status.success());
    let o = strata(&e.root, &["provision", "c", &e.image, "--backend", "zfs"]);
    assert!(common::stderr(&o).contains("unknown backend 'zfs'"));
    let containers = e.root.join("provisioner/containers");
    assert_eq!(std::fs::read_dir(&containers).unwrap().count(), 0, "nothing created");
}

#[test]
fn destroy_works_while_a_file_is_held_open() {
    require_root!();
    let e = env();
    let rootfs = provision(&e, "busy", &e.image, "overlay");
    // MESOS-9196: a process inside the rootfs must not make destroy fail.
    let mut child = Command::new("sleep").arg("30").current_dir(&rootfs).spawn().unwrap();
    let held = std::fs::File::open(rootfs.join("etc/conf")).unwrap();
    assert_eq!(strata_ok(&e.root, &["destroy", "busy"]).trim(), "destroyed");
    assert!(mounts_under(&e.root).is_empty());
    assert!(!e.root.join("provisioner/containers/busy").exists());
    drop(held);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn recover_keeps_alive_and_removes_orphans_and_half_made_rootfses() {
    require_root!();
    let e = env();
    let alive = provision(&e, "alive", &e.image, "overlay");
    provision(&e, "orphan", &e.image, "overlay");
    provision(&e, "kept-too", &e.image, "copy");
    // a half-made rootfs: record in state `provisioning`, dir present
    let half_id = "0b7c2f2e-7c55-4d6c-9d7e-111111111111";
    let backend = e.root.join("provisioner/containers/alive/backends/overlay");
    std::fs::create_dir_all(backend.join("rootfses").join(half_id)).unwrap();
    std::fs::write(
        backend.join("records").join(format!("{half_id}.json")),
        format!(r#"{{"rootfs_id":"{half_id}","backend":"overlay","image":"x","manifest_digest":"sha256:{}","layers":[],"state":"provisioning","created":0}}"#, "0".repeat(64)),
    )
    .unwrap();
    let report: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["recover", "--json", "--alive", "alive,kept-too"])).unwrap();
    assert_eq!(report["destroyed"], serde_json::json!(["orphan"]));
    assert_eq!(report["incomplete_rootfses_removed"], 1);
    assert!(!backend.join("rootfses").join(half_id).exists());
    assert!(!e.root.join("provisioner/containers/orphan").exists());
    assert_eq!(mounts_under(&e.root), vec![alive.clone()]);
    check_flattened(&alive);

    // after a "reboot" (mount gone) a kept overlay rootfs is mounted again
    strata::mount::unmount_all_under(&alive).unwrap();
    let report: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["recover", "--json"])).unwrap();
    assert_eq!(report["remounted"], 1);
    check_flattened(&alive);

    // a stray mount under the root is undone
    let stray = e.root.join("provisioner/containers/alive/stray");
    std::fs::create_dir_all(&stray).unwrap();
    assert!(Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&stray).status().unwrap().success());
    let report: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["recover", "--json"])).unwrap();
    assert_eq!(report["stray_mounts_unmounted"], 1);
    assert_eq!(mounts_under(&e.root), vec![alive]);
}

#[test]
fn recover_refuses_rootfses_of_an_unusable_backend() {
    let e = env();
    provision(&e, "c", &e.image, "copy");
    let odd = e.root.join("provisioner/containers/c/backends/aufs/rootfses/x");
    std::fs::create_dir_all(&odd).unwrap();
    let o = strata(&e.root, &["recover", "--alive", "none"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("aufs"), "{}", common::stderr(&o));
    assert!(odd.exists() && e.root.join("provisioner/containers/c/backends/copy").exists(), "nothing deleted");
}

#[test]
fn overlay_with_128_layers() {
    require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let mut layout = Layout::new(&tmp.path().join("deep"));
    let layers: Vec<(Vec<u8>, Comp)> = (0..128)
        .map(|i| {
            (
                tar(&[
                    Entry::file(&format!("layer-{i:03}"), format!("{i}").as_bytes()),
                    Entry::file("top", format!("{i}").as_bytes()),
                ]),
                Comp::Gzip,
            )
        })
        .collect();
    layout.add_image("deep", &layers);
    let out =
        strata_ok(&root, &["provision", "deep", &format!("oci:{}:deep", layout.dir.display()), "--backend", "overlay"]);
    let rootfs = PathBuf::from(out.trim());
    assert_eq!(std::fs::read(rootfs.join("top")).unwrap(), b"127", "top layer wins");
    assert_eq!(std::fs::read_dir(&rootfs).unwrap().count(), 129);
    strata_ok(&root, &["destroy", "deep"]);
    assert!(strata::mount::mounts_under(&root).unwrap().is_empty());
}

#[test]
fn concurrent_provisions_from_several_processes() {
    let e = env();
    strata_ok(&e.root, &["pull", &e.image]);
    let backend = if common::is_root() { "overlay" } else { "copy" };
    let spawn = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("--root")
            .arg(&e.root)
            .args(["provision", id, &e.image, "--backend", backend])
            .output()
    };
    let outputs: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> =
            ["a", "b", "c", "d", "same", "same"].iter().map(|id| s.spawn(move || spawn(id).unwrap())).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outputs {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // both provisions of the same id succeed, one after the other, each with its own rootfs
    let list: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["containers", "--json"])).unwrap();
    let same = list.as_array().unwrap().iter().find(|c| c["container"] == "same").unwrap();
    assert_eq!(same["rootfses"].as_array().unwrap().len(), 2);
    for id in ["a", "b", "c", "d", "same"] {
        strata_ok(&e.root, &["destroy", id]);
    }
    assert!(mounts_under(&e.root).is_empty());
}

#[test]
fn removal_never_empties_a_mount_it_could_not_unmount() {
    require_root!();
    // A bind mount of a directory on the same file system has the same st_dev: the
    // removal must still stop at it (mount ids differ).
    let tmp = tempfile::tempdir().unwrap();
    let precious = tmp.path().join("precious");
    std::fs::create_dir_all(&precious).unwrap();
    std::fs::write(precious.join("data"), b"keep me").unwrap();
    let victim = tmp.path().join("victim/inner");
    std::fs::create_dir_all(&victim).unwrap();
    assert!(Command::new("mount").arg("--bind").arg(&precious).arg(&victim).status().unwrap().success());
    let parent = std::fs::File::open(tmp.path()).unwrap();
    let err =
        strata::sys::fs::remove_all_at(std::os::fd::AsFd::as_fd(&parent), std::ffi::OsStr::new("victim")).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ResourceBusy);
    assert_eq!(std::fs::read(precious.join("data")).unwrap(), b"keep me");
    assert!(Command::new("umount").arg(&victim).status().unwrap().success());
}
