//! The unpacker against well-formed and hostile layers: every escape attempt is
//! refused or contained, and nothing outside the target directory changes.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{compress, gnu_long_tar, snapshot, tar, xattr, Comp, Entry};
use strata::digest::Digest;
use strata::image::Compression;
use strata::layer::{unpack, Expected, UnpackError, UnpackErrorKind, UnpackOptions, Unpacked};

/// A work dir with `dest/` (the layer root) and `outside/` (must never change).
struct Sandbox {
    _tmp: tempfile::TempDir,
    top: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().to_owned();
        std::fs::create_dir_all(top.join("dest")).unwrap();
        std::fs::create_dir_all(top.join("outside/dir")).unwrap();
        std::fs::write(top.join("outside/secret"), "do not touch").unwrap();
        std::fs::set_permissions(top.join("outside/secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(top.join("outside/dir/file"), "inner").unwrap();
        Self { _tmp: tmp, top }
    }

    fn dest(&self) -> PathBuf {
        self.top.join("dest")
    }

    fn outside(&self) -> std::collections::BTreeMap<PathBuf, common::Node> {
        let mut all = snapshot(&self.top);
        all.retain(|p, _| !p.starts_with("dest"));
        all
    }

    /// Unpacks `entries` and asserts that nothing but `dest/` changed.
    fn unpack(&self, entries: &[Entry]) -> Result<Unpacked, UnpackError> {
        self.unpack_bytes(&tar(entries), &Expected::default(), &UnpackOptions::default())
    }

    fn unpack_bytes(&self, blob: &[u8], expected: &Expected, options: &UnpackOptions) -> Result<Unpacked, UnpackError> {
        let before = self.outside();
        let result = unpack(blob, expected, &self.dest(), options);
        assert_eq!(before, self.outside(), "something outside dest changed");
        result
    }
}

fn refused(result: Result<Unpacked, UnpackError>, needle: &str) {
    let err = result.expect_err("expected the layer to be refused");
    let msg = err.to_string();
    assert!(msg.contains(needle), "error '{msg}' should mention '{needle}'");
}

#[test]
fn regular_tree_with_metadata() {
    let s = Sandbox::new();
    let long = format!("deep/{}/file", "n".repeat(150));
    let data = vec![42u8; 300_000];
    let out = s
        .unpack(&[
            Entry::dir("./"),
            Entry::dir("etc").mode(0o750),
            Entry::file("etc/conf", b"x=1").mode(0o640),
            Entry::file("bin/tool", &data).mode(0o4755),
            Entry::dir("tmp").mode(0o1777),
            Entry::symlink("lib", "usr/lib"),
            Entry::symlink("abs", "/etc/conf"),
            Entry::hardlink("etc/conf-link", "etc/conf"),
            Entry::fifo("run/fifo").mode(0o600),
            Entry::file(&long, b"long name"),
            Entry::file("attrs", b"a").xattr("user.note", b"hello"),
        ])
        .unwrap();
    let d = s.dest();
    assert_eq!(std::fs::read(d.join("etc/conf")).unwrap(), b"x=1");
    assert_eq!(std::fs::metadata(d.join("etc")).unwrap().permissions().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::metadata(d.join("etc/conf")).unwrap().permissions().mode() & 0o7777, 0o640);
    assert_eq!(std::fs::metadata(d.join("bin/tool")).unwrap().permissions().mode() & 0o7777, 0o4755);
    assert_eq!(std::fs::read(d.join("bin/tool")).unwrap(), data);
    assert_eq!(std::fs::metadata(d.join("tmp")).unwrap().permissions().mode() & 0o7777, 0o1777);
    assert_eq!(std::fs::read_link(d.join("lib")).unwrap(), Path::new("usr/lib"));
    assert_eq!(std::fs::read_link(d.join("abs")).unwrap(), Path::new("/etc/conf"));
    let (a, b) = (std::fs::metadata(d.join("etc/conf")).unwrap(), std::fs::metadata(d.join("etc/conf-link")).unwrap());
    assert_eq!(a.ino(), b.ino(), "hardlink shares the inode");
    assert!(std::fs::symlink_metadata(d.join("run/fifo")).unwrap().file_type().is_fifo());
    assert_eq!(std::fs::read(d.join(&long)).unwrap(), b"long name");
    assert_eq!(xattr(&d.join("attrs"), "user.note").as_deref(), Some(&b"hello"[..]));
    assert_eq!(std::fs::metadata(d.join("etc/conf")).unwrap().mtime(), 1_700_000_000);
    assert_eq!(std::fs::metadata(d.join("etc")).unwrap().mtime(), 1_700_000_000, "directory mtimes are set last");
    assert!(out.stats.entries >= 10);
}

#[test]
fn owners_are_kept_as_root() {
    require_root!();
    let s = Sandbox::new();
    s.unpack(&[Entry::file("f", b"x").owner(1234, 5678).mode(0o6755), Entry::symlink("l", "f").owner(7, 8)]).unwrap();
    let md = std::fs::metadata(s.dest().join("f")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));
    assert_eq!(md.permissions().mode() & 0o7777, 0o6755, "setuid/setgid survive chown");
    let l = std::fs::symlink_metadata(s.dest().join("l")).unwrap();
    assert_eq!((l.uid(), l.gid()), (7, 8));
}

#[test]
fn gnu_long_names_and_links() {
    let s = Sandbox::new();
    let long = format!("a/{}", "b".repeat(200));
    s.unpack_bytes(&gnu_long_tar(&long, None, b"data"), &Expected::default(), &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read(s.dest().join(&long)).unwrap(), b"data");
    let s = Sandbox::new();
    let target = format!("/{}", "t".repeat(180));
    s.unpack_bytes(&gnu_long_tar(&long, Some(&target), b""), &Expected::default(), &UnpackOptions::default()).unwrap();
    assert_eq!(std::fs::read_link(s.dest().join(&long)).unwrap(), Path::new(&target));
}

#[test]
fn whiteouts_become_overlay_marks() {
    let s = Sandbox::new();
    s.unpack(&[
        Entry::dir("a"),
        Entry::whiteout("a/", "gone"),
        Entry::dir("opaque"),
        Entry::file("opaque/.wh..wh..opq", b""),
        Entry::file("opaque/kept", b"k"),
        // `.wh.X` then `X/` in one layer: X must hide the lower X's contents.
        Entry::whiteout("", "redo"),
        Entry::dir("redo"),
        // A whiteout for something this layer has keeps this layer's file.
        Entry::file("mine", b"m"),
        Entry::whiteout("", "mine"),
        Entry::file(".wh..wh.plnk", b""),
    ])
    .unwrap();
    let d = s.dest();
    let gone = std::fs::symlink_metadata(d.join("a/gone")).unwrap();
    assert!(gone.file_type().is_char_device());
    assert_eq!(gone.rdev(), 0);
    let opaque_name = if common::is_root() { "trusted.overlay.opaque" } else { "user.overlay.opaque" };
    assert_eq!(xattr(&d.join("opaque"), opaque_name).as_deref(), Some(&b"y"[..]));
    assert!(!d.join("opaque/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(d.join("opaque/kept")).unwrap(), b"k");
    assert!(d.join("redo").is_dir());
    assert_eq!(xattr(&d.join("redo"), opaque_name).as_deref(), Some(&b"y"[..]));
    assert_eq!(std::fs::read(d.join("mine")).unwrap(), b"m");
    assert!(!d.join(".wh..wh.plnk").exists());
}

#[test]
fn file_replaced_by_dir_and_back_in_one_layer() {
    let s = Sandbox::new();
    s.unpack(&[
        Entry::file("x", b"1"),
        Entry::dir("x"),
        Entry::file("x/in", b"2"),
        Entry::dir("y"),
        Entry::file("y/z", b""),
        Entry::file("y", b"3"),
    ])
    .unwrap();
    assert!(s.dest().join("x").is_dir());
    assert_eq!(std::fs::read(s.dest().join("y")).unwrap(), b"3");
}

#[test]
fn dotdot_is_refused() {
    let s = Sandbox::new();
    refused(s.unpack(&[Entry::file("../outside/secret", b"pwned")]), "climbs out");
    refused(s.unpack(&[Entry::file("a/../../outside/x", b"pwned")]), "climbs out");
    refused(s.unpack(&[Entry::hardlink("h", "../outside/secret")]), "climbs out");
}

#[test]
fn absolute_names_are_contained() {
    let s = Sandbox::new();
    let outside = s.top.join("outside/abs");
    s.unpack(&[Entry::file(&format!("{}", outside.display()), b"contained")]).unwrap();
    assert!(!outside.exists());
    let rel: PathBuf = outside.strip_prefix("/").unwrap().to_owned();
    assert_eq!(std::fs::read(s.dest().join(rel)).unwrap(), b"contained");
}

#[test]
fn writes_through_symlinks_stay_inside() {
    let s = Sandbox::new();
    // Links to `/` (absolute, and climbing far past the top) are re-rooted at dest.
    s.unpack(&[
        Entry::symlink("root", "/"),
        Entry::dir("root/made-dir"),
        Entry::file("root/made-dir/f", b"z"),
        Entry::symlink("up", "../../../../../../../../../.."),
        Entry::file("up/planted", b"y"),
        Entry::dir("real"),
        Entry::symlink("abs", "/real"),
        Entry::file("abs/inside", b"x"),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(std::fs::read(s.dest().join("made-dir/f")).unwrap(), b"z");
    assert_eq!(std::fs::read(s.dest().join("planted")).unwrap(), b"y");
    assert_eq!(std::fs::read(s.dest().join("real/inside")).unwrap(), b"x");
    // A link to the real outside dir is dangling inside dest: refused, nothing written.
    let outside = s.top.join("outside").display().to_string();
    for target in [outside.clone(), "../../../../../../../../..".to_string() + &outside] {
        let s = Sandbox::new();
        refused(s.unpack(&[Entry::symlink("l", &target), Entry::file("l/planted", b"x")]), "dangling symlink");
        refused(s.unpack(&[Entry::symlink("m", &target), Entry::dir("m/sub")]), "dangling symlink");
    }
}

#[test]
fn entries_replacing_a_symlink_never_follow_it() {
    let s = Sandbox::new();
    let secret = s.top.join("outside/secret").display().to_string();
    let dir = s.top.join("outside/dir").display().to_string();
    s.unpack(&[
        Entry::symlink("s", &secret),
        Entry::file("s", b"overwritten?").mode(0o777),
        Entry::symlink("d", &dir),
        Entry::dir("d").mode(0o777),
        Entry::symlink("h", &secret),
        Entry::hardlink("h2", "h"),
    ])
    .unwrap();
    assert_eq!(std::fs::read(s.dest().join("s")).unwrap(), b"overwritten?");
    assert!(s.dest().join("d").is_dir());
    // the hardlink links the symlink itself, not its target
    assert!(std::fs::symlink_metadata(s.dest().join("h2")).unwrap().file_type().is_symlink());
}

#[test]
fn hardlinks_cannot_reach_outside() {
    let s = Sandbox::new();
    let secret = s.top.join("outside/secret").display().to_string();
    refused(s.unpack(&[Entry::hardlink("h", &secret)]), "not found in this layer");
    let s = Sandbox::new();
    let dir = s.top.join("outside").display().to_string();
    refused(s.unpack(&[Entry::symlink("l", &dir), Entry::hardlink("h", "l/secret")]), "not found in this layer");
    let s = Sandbox::new();
    refused(s.unpack(&[Entry::dir("d"), Entry::hardlink("h", "d")]), "is a directory");
}

#[test]
fn whiteouts_cannot_climb_or_follow_links() {
    let s = Sandbox::new();
    for bad in [".wh.", ".wh..", ".wh..."] {
        refused(s.unpack(&[Entry::file(bad, b"")]), "does not name a file");
    }
    refused(s.unpack(&[Entry::file("../.wh.secret", b"")]), "climbs out");
    let s = Sandbox::new();
    let outside = s.top.join("outside").display().to_string();
    s.unpack(&[Entry::symlink("l", &outside), Entry::whiteout("l/", "secret"), Entry::file("l/.wh..wh..opq", b"")])
        .map(|_| ())
        .or_else(|e| if e.is_refused() { Ok(()) } else { Err(e) })
        .unwrap();
    assert!(s.top.join("outside/secret").is_file());
}

#[test]
fn the_root_cannot_be_replaced() {
    let s = Sandbox::new();
    refused(s.unpack(&[Entry::symlink("./", "/")]), "replace the layer root");
    refused(s.unpack(&[Entry::symlink(".", "/")]), "replace the layer root");
    refused(s.unpack(&[Entry::file("/", b"")]), "replace the layer root");
}

#[test]
fn overlay_xattrs_from_the_archive_are_dropped() {
    let s = Sandbox::new();
    s.unpack(&[
        Entry::dir("d").xattr("trusted.overlay.opaque", b"y").xattr("user.overlay.opaque", b"y"),
        Entry::file("f", b"").xattr("trusted.overlay.redirect", b"/etc"),
    ])
    .unwrap();
    assert_eq!(xattr(&s.dest().join("d"), "trusted.overlay.opaque"), None);
    assert_eq!(xattr(&s.dest().join("d"), "user.overlay.opaque"), None);
    assert_eq!(xattr(&s.dest().join("f"), "trusted.overlay.redirect"), None);
}

#[test]
fn devices_are_skipped_unless_allowed() {
    let s = Sandbox::new();
    let out = s.unpack(&[Entry::char_dev("dev/null", 1, 3)]).unwrap();
    assert!(!s.dest().join("dev/null").exists());
    assert_eq!(out.stats.skipped, 1);
    if common::is_root() {
        let s = Sandbox::new();
        let options = UnpackOptions::default().with_devices(true);
        s.unpack_bytes(&tar(&[Entry::char_dev("dev/null", 1, 3)]), &Expected::default(), &options).unwrap();
        let md = std::fs::symlink_metadata(s.dest().join("dev/null")).unwrap();
        assert!(md.file_type().is_char_device());
        assert_eq!(md.permissions().mode() & 0o777, 0o666);
    }
}

#[test]
fn decompression_bombs_hit_the_cap() {
    let s = Sandbox::new();
    let big = tar(&[Entry::file("zeros", &vec![0u8; 4 << 20])]);
    let options = UnpackOptions::default().with_max_layer_bytes(1 << 20);
    for comp in [Comp::Gzip, Comp::Zstd, Comp::None] {
        let err = s.unpack_bytes(&compress(&big, comp), &Expected::default(), &options).unwrap_err();
        assert!(matches!(err.kind(), UnpackErrorKind::TooLarge { limit } if *limit == 1 << 20), "{comp:?}: {err}");
    }
}

#[test]
fn digests_sizes_and_compression_are_checked() {
    let layer = tar(&[Entry::file("f", b"content")]);
    let blob = compress(&layer, Comp::Gzip);
    let good = Expected {
        digest: Some(Digest::of_bytes(&blob)),
        size: Some(blob.len() as u64),
        diff_id: Some(Digest::of_bytes(&layer)),
        compression: Some(Compression::Gzip),
    };
    let s = Sandbox::new();
    let out = s.unpack_bytes(&blob, &good, &UnpackOptions::default()).unwrap();
    assert_eq!(out.diff_id, Digest::of_bytes(&layer));
    assert_eq!(out.uncompressed_size, layer.len() as u64);

    let wrong = Digest::of_bytes(b"other");
    let cases: Vec<(Expected, &str)> = vec![
        (Expected { digest: Some(wrong.clone()), ..good.clone() }, "blob digest mismatch"),
        (Expected { diff_id: Some(wrong), ..good.clone() }, "diff_id mismatch"),
        (Expected { size: Some(blob.len() as u64 + 5), ..good.clone() }, "size mismatch"),
        (Expected { size: Some(blob.len() as u64 - 5), ..good.clone() }, "size mismatch"),
        (Expected { compression: Some(Compression::Zstd), ..good.clone() }, "compression"),
    ];
    for (expected, needle) in cases {
        let s = Sandbox::new();
        refused_or(s.unpack_bytes(&blob, &expected, &UnpackOptions::default()), needle);
    }
}

fn refused_or(result: Result<Unpacked, UnpackError>, needle: &str) {
    let msg = result.expect_err("expected failure").to_string();
    assert!(msg.contains(needle), "error '{msg}' should mention '{needle}'");
}

#[test]
fn truncated_and_garbage_streams_fail() {
    let layer = compress(&tar(&[Entry::file("f", &vec![1u8; 100_000])]), Comp::Gzip);
    let s = Sandbox::new();
    assert!(s.unpack_bytes(&layer[..layer.len() / 2], &Expected::default(), &UnpackOptions::default()).is_err());
    let s = Sandbox::new();
    assert!(s.unpack_bytes(&[0x1f, 0x8b, 1, 2, 3, 4, 5], &Expected::default(), &UnpackOptions::default()).is_err());
}
