//! Cross-check against umoci: for the same image, the tree strata stores (read through
//! a real overlayfs mount of its layer dirs, which is what interprets the whiteouts)
//! equals `umoci unpack`'s rootfs: paths, types, modes, owners, link targets, content.
//! Also reads a docker archive written by real skopeo. Needs root, umoci and skopeo.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{layer_rootfs, snapshot, strata_ok, tar, Comp, Entry, Layout};

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A real-world layer made by GNU tar from host files: symlinks, hardlinks, many dirs.
fn gnu_tar_layer(work: &Path) -> Vec<u8> {
    let out = work.join("host.tar");
    run(Command::new("tar").args(["--format=pax", "--numeric-owner", "-C", "/", "-cf"]).arg(&out).args([
        "usr/share/zoneinfo",
        "etc/ssl",
        "usr/share/doc/tar",
        "usr/bin/tar",
    ]));
    std::fs::read(out).unwrap()
}

fn top_layer() -> Vec<u8> {
    tar(&[
        Entry::whiteout("usr/share/zoneinfo/", "Europe"),
        Entry::dir("etc/ssl"),
        Entry::file("etc/ssl/.wh..wh..opq", b""),
        Entry::file("etc/ssl/only-this", b"opaque dir content"),
        Entry::whiteout("usr/bin/", "tar"),
        Entry::dir("usr/bin/tar"),
        Entry::file("usr/bin/tar/now-a-dir", b"x"),
        Entry::file("usr/share/doc/tar", b"dir replaced by a file").mode(0o600).owner(12, 34),
        Entry::file("new/setuid", b"s").mode(0o4711),
        Entry::symlink("new/link", "../usr/share/zoneinfo/UTC"),
    ])
}

/// Mounts the layer dirs (top first) read-only as overlayfs; unmounts on drop.
struct OverlayView(PathBuf);

impl OverlayView {
    fn mount(lowers: &[PathBuf], target: &Path) -> Self {
        std::fs::create_dir_all(target).unwrap();
        let lowerdir = lowers.iter().rev().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        run(Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &format!("ro,lowerdir={lowerdir}")])
            .arg(target));
        Self(target.to_owned())
    }
}

impl Drop for OverlayView {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A two-layer image (host files by GNU tar, then whiteouts and replacements) in a
/// fresh work dir, and an empty strata root.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
    base: Vec<u8>,
    top: Vec<u8>,
    layout: Layout,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let (root, work) = (tmp.path().join("root"), tmp.path().join("work"));
    std::fs::create_dir_all(&work).unwrap();
    let (base, top) = (gnu_tar_layer(&work), top_layer());
    let mut layout = Layout::new(&work.join("img"));
    layout.add_image("v1", &[(base.clone(), Comp::Gzip), (top.clone(), Comp::Gzip)]);
    Fixture { _tmp: tmp, root, work, base, top, layout }
}

fn assert_same_tree(ours: &Path, theirs: &Path) {
    let (a, b) = (snapshot(ours), snapshot(theirs));
    let only_ours: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_theirs: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(only_ours.is_empty() && only_theirs.is_empty(), "only strata: {only_ours:?}\nonly umoci: {only_theirs:?}");
    for (path, node) in &a {
        assert_eq!(Some(node), b.get(path), "{}", path.display());
    }
    assert!(a.len() > 100, "the comparison covered {} paths", a.len());
}

#[test]
fn strata_tree_equals_umoci_unpack() {
    require_root!();
    if !have("umoci") {
        panic!("umoci is not installed: run the README's test command, which installs it");
    }
    let Fixture { _tmp, root, work, base, top, layout } = fixture();

    let bundle = work.join("bundle");
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:v1", layout.dir.display())).arg(&bundle));
    strata_ok(&root, &["pull", &format!("oci:{}:v1", layout.dir.display())]);
    let view = OverlayView::mount(&[layer_rootfs(&root, &base), layer_rootfs(&root, &top)], &work.join("view"));
    assert_same_tree(&view.0, &bundle.join("rootfs"));
    let zone = view.0.join("usr/share/zoneinfo");
    assert!(!zone.join("Europe").exists() && zone.join("UTC").exists());
}

#[test]
fn reads_a_docker_archive_written_by_skopeo() {
    require_root!();
    if !have("skopeo") {
        panic!("skopeo is not installed: run the README's test command, which installs it");
    }
    let Fixture { _tmp, root, work, base, top, layout } = fixture();
    let archive = work.join("saved.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}:v1", layout.dir.display()))
        .arg(format!("docker-archive:{}:example.com/saved:v1", archive.display())));
    strata_ok(&root, &["pull", &format!("docker-archive:{}:example.com/saved:v1", archive.display())]);
    // docker archives hold uncompressed layers: same diff_ids, same unpacked trees
    let view = OverlayView::mount(&[layer_rootfs(&root, &base), layer_rootfs(&root, &top)], &work.join("view"));
    let bundle = work.join("bundle");
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:v1", layout.dir.display())).arg(&bundle));
    assert_same_tree(&view.0, &bundle.join("rootfs"));
}

#[test]
fn copy_backend_tree_equals_umoci_unpack() {
    require_root!();
    let Fixture { _tmp, root, work, layout, .. } = fixture();
    let bundle = work.join("bundle");
    run(Command::new("umoci").arg("unpack").arg("--image").arg(format!("{}:v1", layout.dir.display())).arg(&bundle));
    let out = strata_ok(&root, &["provision", "c", &format!("oci:{}:v1", layout.dir.display()), "--backend", "copy"]);
    assert_same_tree(Path::new(out.trim()), &bundle.join("rootfs"));
}
