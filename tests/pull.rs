//! `strata pull / images / inspect / rmi` on OCI layouts and docker archives built
//! here, through the binary, as a user would run them.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use common::{
    compress, docker_archive, layer_rootfs, legacy_docker_archive, sha256_hex, strata, strata_ok, tar, xattr, Comp,
    Entry, Layout,
};

fn base_layer() -> Vec<u8> {
    tar(&[
        Entry::dir("etc"),
        Entry::file("etc/os-release", b"ID=test\n"),
        Entry::dir("usr/share/doc"),
        Entry::file("usr/share/doc/readme", b"docs"),
        Entry::dir("opt/app"),
        Entry::file("opt/app/old", b"old"),
        Entry::file("replace-me", b"file that becomes a dir"),
        Entry::dir("becomes-file"),
        Entry::file("becomes-file/x", b""),
        Entry::file("bin/su", b"#!").mode(0o4755),
        Entry::hardlink("bin/su-link", "bin/su"),
        Entry::file(&format!("long/{}", "n".repeat(120)), b"long"),
        Entry::file("attr", b"").xattr("user.k", b"v"),
    ])
}

fn top_layer() -> Vec<u8> {
    tar(&[
        Entry::whiteout("usr/share/", "doc"),
        Entry::dir("opt/app"),
        Entry::file("opt/app/.wh..wh..opq", b""),
        Entry::file("opt/app/new", b"new"),
        Entry::whiteout("", "replace-me"),
        Entry::dir("replace-me"),
        Entry::file("replace-me/inside", b"now a dir"),
        Entry::whiteout("", "becomes-file"),
        Entry::file("becomes-file", b"now a file"),
    ])
}

struct Env {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    work: std::path::PathBuf,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    Env { root, work, _tmp: tmp }
}

fn staging_is_empty(root: &Path) -> bool {
    std::fs::read_dir(root.join("store/staging")).map(|mut d| d.next().is_none()).unwrap_or(true)
}

#[test]
fn pull_multi_layer_oci_layout() {
    let e = env();
    let (base, top) = (base_layer(), top_layer());
    let mut layout = Layout::new(&e.work.join("img"));
    let manifest = layout.add_image("v1", &[(base.clone(), Comp::Gzip), (top.clone(), Comp::Zstd)]);
    let reference = format!("oci:{}:v1", layout.dir.display());
    let out = strata_ok(&e.root, &["pull", &reference]);
    assert_eq!(out.lines().last().unwrap(), manifest);

    let b = layer_rootfs(&e.root, &base);
    assert_eq!(std::fs::read(b.join("etc/os-release")).unwrap(), b"ID=test\n");
    assert_eq!(std::fs::metadata(b.join("bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(
        std::fs::metadata(b.join("bin/su")).unwrap().ino(),
        std::fs::metadata(b.join("bin/su-link")).unwrap().ino()
    );
    assert_eq!(xattr(&b.join("attr"), "user.k").as_deref(), Some(&b"v"[..]));
    let t = layer_rootfs(&e.root, &top);
    let wh = std::fs::symlink_metadata(t.join("usr/share/doc")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout stored as 0/0 char device");
    let opaque = if common::is_root() { "trusted.overlay.opaque" } else { "user.overlay.opaque" };
    assert_eq!(xattr(&t.join("opt/app"), opaque).as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr(&t.join("replace-me"), opaque).as_deref(), Some(&b"y"[..]));
    assert_eq!(std::fs::read(t.join("becomes-file")).unwrap(), b"now a file");
    assert!(staging_is_empty(&e.root));

    // images and inspect show it, by the same normalized key
    let images = strata_ok(&e.root, &["images"]);
    assert!(images.contains(&format!("oci:{}:v1", layout.dir.display())), "{images}");
    let json: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["images", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["layers"], 2);
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["inspect", "--json", &reference])).unwrap();
    assert_eq!(inspect["digest"], manifest);
    assert_eq!(inspect["platform"], "linux/amd64");
    assert_eq!(inspect["entrypoint"][0], "/bin/sh");
    assert_eq!(inspect["cmd"][1], "true");
    assert_eq!(inspect["env"][0], "PATH=/bin");
    assert_eq!(inspect["workdir"], "/w");
    assert_eq!(inspect["user"], "1:2");
    assert_eq!(inspect["layers"][1]["compression"], "zstd");
    assert_eq!(inspect["layers"][0]["diff_id"], format!("sha256:{}", sha256_hex(&base)));
    let text = strata_ok(&e.root, &["inspect", &reference]);
    assert!(text.contains("Entrypoint:  [\"/bin/sh\"]"), "{text}");

    // a second image sharing the base layer reuses it
    let mut other = Layout::new(&e.work.join("img2"));
    other.add_image("latest", &[(base.clone(), Comp::Gzip)]);
    let before = std::fs::metadata(&b).unwrap().ino();
    strata_ok(&e.root, &["pull", &format!("oci:{}", other.dir.display())]);
    assert_eq!(std::fs::metadata(&b).unwrap().ino(), before, "shared layer unpacked once");

    // rmi forgets the image; the layers stay for gc
    strata_ok(&e.root, &["rmi", &reference]);
    assert!(b.exists());
    let o = strata(&e.root, &["inspect", &reference]);
    assert!(!o.status.success());
    let o = strata(&e.root, &["rmi", &reference]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("not in the store"));
}

#[test]
fn platform_is_chosen_from_an_index() {
    let e = env();
    let amd = tar(&[Entry::file("arch", b"amd64")]);
    let arm = tar(&[Entry::file("arch", b"arm64")]);
    let mut layout = Layout::new(&e.work.join("multi"));
    layout.add_index("v1", &[("arm64", vec![(arm.clone(), Comp::Gzip)]), ("amd64", vec![(amd.clone(), Comp::Gzip)])]);
    let reference = format!("oci:{}:v1", layout.dir.display());
    strata_ok(&e.root, &["pull", "--platform", "linux/arm64", &reference]);
    assert!(layer_rootfs(&e.root, &arm).join("arch").exists());
    assert!(!layer_rootfs(&e.root, &amd).exists());
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["inspect", "--json", &reference])).unwrap();
    assert_eq!(inspect["platform"], "linux/arm64");
    assert!(inspect["index_digest"].is_string());
    let o = strata(&e.root, &["pull", "--pull", "always", "--platform", "linux/s390x", &reference]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("no manifest for platform linux/s390x"), "{}", common::stderr(&o));

    // The stored arm64 choice does not answer a request for amd64: the index is asked again.
    strata_ok(&e.root, &["pull", "--platform", "linux/amd64", &reference]);
    assert!(layer_rootfs(&e.root, &amd).join("arch").exists());
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["inspect", "--json", &reference])).unwrap();
    assert_eq!(inspect["platform"], "linux/amd64");
    let o = strata(&e.root, &["pull", "--pull", "never", "--platform", "linux/arm64", &reference]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("is for linux/amd64, not the requested linux/arm64"), "{}", common::stderr(&o));
}

#[test]
fn a_single_platform_image_for_another_platform_is_refused_when_a_platform_is_asked_for() {
    let e = env();
    let foreign = if common::host_arch() == "s390x" { "ppc64le" } else { "s390x" };
    let layer = tar(&[Entry::file("arch", foreign.as_bytes())]);
    let mut layout = Layout::new(&e.work.join("foreign"));
    layout.add_image_for("v1", &[(layer.clone(), Comp::Gzip)], foreign);
    let reference = format!("oci:{}:v1", layout.dir.display());

    let o = strata(&e.root, &["pull", "--platform", &format!("linux/{}", common::host_arch()), &reference]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(err.contains(&format!("is for linux/{foreign}, not the requested linux/{}", common::host_arch())), "{err}");
    assert!(!layer_rootfs(&e.root, &layer).exists(), "nothing was fetched");
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");

    // Without a platform asked for, it is used (as Docker does, with a warning).
    strata_ok(&e.root, &["pull", &reference]);
    assert!(layer_rootfs(&e.root, &layer).join("arch").exists());
    // Once stored, asking for another platform is still refused.
    let o = strata(&e.root, &["pull", "--platform", &format!("linux/{}", common::host_arch()), &reference]);
    assert!(!o.status.success());
    strata_ok(&e.root, &["pull", "--platform", &format!("linux/{foreign}"), &reference]);
}

#[test]
fn docker_archives_current_and_legacy() {
    let e = env();
    let (base, top) = (base_layer(), top_layer());
    let current = e.work.join("current.tar");
    docker_archive(&current, "example.com/app:1.0", &[base.clone(), top.clone()]);
    let out = strata_ok(&e.root, &["pull", &format!("docker-archive:{}", current.display())]);
    assert!(out.trim().starts_with("sha256:"));
    assert!(layer_rootfs(&e.root, &top).join("becomes-file").is_file());
    strata_ok(&e.root, &["pull", &format!("docker-archive:{}:example.com/app:1.0", current.display())]);
    let o = strata(&e.root, &["pull", &format!("docker-archive:{}:example.com/other:2", current.display())]);
    assert!(o.status.success(), "a single-image archive serves any name, as Mesos' local puller does");

    let legacy = e.work.join("legacy.tar");
    let l1 = tar(&[Entry::file("one", b"1")]);
    let l2 = tar(&[Entry::file("two", b"2"), Entry::whiteout("", "one")]);
    legacy_docker_archive(&legacy, "busybox", "latest", &[l1.clone(), l2.clone()]);
    let reference = format!("docker-archive:{}:busybox:latest", legacy.display());
    strata_ok(&e.root, &["pull", &reference]);
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["inspect", "--json", &reference])).unwrap();
    assert_eq!(inspect["layers"].as_array().unwrap().len(), 2);
    assert_eq!(inspect["layers"][0]["diff_id"], format!("sha256:{}", sha256_hex(&l1)), "base layer first");
    assert_eq!(inspect["env"][0], "LEGACY=1");
    assert!(layer_rootfs(&e.root, &l2).join("two").exists());
}

#[test]
fn local_image_directory_serves_docker_names() {
    let e = env();
    let dir = e.work.join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let layer = tar(&[Entry::file("hello", b"from the local dir")]);
    legacy_docker_archive(&dir.join("alpine.tar"), "alpine", "latest", std::slice::from_ref(&layer));
    let config = e.work.join("strata.toml");
    std::fs::write(&config, format!("local_images_dir = '{}'\n", dir.display())).unwrap();
    let cfg = config.display().to_string();
    strata_ok(&e.root, &["--config", &cfg, "pull", "alpine"]);
    assert!(layer_rootfs(&e.root, &layer).join("hello").exists());
    // `alpine` and its normalized form are one cache entry
    strata_ok(&e.root, &["--config", &cfg, "pull", "--pull", "never", "docker.io/library/alpine:latest"]);
    let list: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["images", "--json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["reference"], "docker.io/library/alpine:latest");
    let o = strata(&e.root, &["--config", &cfg, "pull", "nothere:1"]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("nothere:1.tar"), "{}", common::stderr(&o));
}

#[test]
fn missing_layer_is_fetched_again() {
    let e = env();
    let layer = tar(&[Entry::file("f", b"heal me")]);
    let mut layout = Layout::new(&e.work.join("img"));
    layout.add_image("latest", &[(layer.clone(), Comp::Gzip)]);
    let reference = format!("oci:{}", layout.dir.display());
    strata_ok(&e.root, &["pull", &reference]);
    let dir = layer_rootfs(&e.root, &layer).parent().unwrap().to_owned();
    std::fs::remove_dir_all(&dir).unwrap();
    let o = strata(&e.root, &["pull", "--pull", "never", &reference]);
    assert!(!o.status.success(), "--pull never cannot heal");
    strata_ok(&e.root, &["pull", &reference]);
    assert_eq!(std::fs::read(dir.join("rootfs/f")).unwrap(), b"heal me");
}

#[test]
fn bad_input_fails_cleanly_and_stores_nothing() {
    let e = env();
    // malformed references name the bad part
    for (reference, part) in
        [("Upper/Case", "Upper"), ("oci:", "OCI layout path"), ("ftp://x/y", "ftp"), ("a:b:c", "b:c")]
    {
        let o = strata(&e.root, &["pull", reference]);
        assert!(!o.status.success());
        let err = common::stderr(&o);
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        assert!(err.contains(part), "'{err}' should name '{part}'");
    }
    // a layer blob that does not match its digest
    let layer = tar(&[Entry::file("f", b"good")]);
    let mut layout = Layout::new(&e.work.join("tampered"));
    layout.add_image("latest", &[(layer.clone(), Comp::Gzip)]);
    let blob = compress(&layer, Comp::Gzip);
    let blob_path = layout.dir.join("blobs/sha256").join(sha256_hex(&blob));
    let mut bad = blob.clone();
    let n = bad.len();
    bad[n - 9] ^= 0xff; // corrupt the gzip trailer's crc
    std::fs::write(&blob_path, &bad).unwrap();
    let o = strata(&e.root, &["pull", &format!("oci:{}", layout.dir.display())]);
    assert!(!o.status.success());
    assert!(!layer_rootfs(&e.root, &layer).exists());
    assert!(staging_is_empty(&e.root));
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");

    // a hostile layer
    let mut hostile = Layout::new(&e.work.join("hostile"));
    hostile.add_image("latest", &[(tar(&[Entry::file("../../escape", b"x")]), Comp::None)]);
    let o = strata(&e.root, &["pull", &format!("oci:{}", hostile.dir.display())]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("climbs out"), "{}", common::stderr(&o));
    assert!(staging_is_empty(&e.root));

    // a layer over the byte cap
    let mut big = Layout::new(&e.work.join("big"));
    big.add_image("latest", &[(tar(&[Entry::file("z", &vec![0u8; 1 << 20])]), Comp::Gzip)]);
    let o = strata(&e.root, &["pull", "--max-layer-bytes", "65536", &format!("oci:{}", big.dir.display())]);
    assert!(!o.status.success());
    assert!(common::stderr(&o).contains("exceeds the limit of 65536 bytes"), "{}", common::stderr(&o));
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");

    // not a layout; unknown tag; registry not configured
    let o = strata(&e.root, &["pull", &format!("oci:{}", e.work.display())]);
    assert!(common::stderr(&o).contains("not an OCI image layout"));
    let o = strata(&e.root, &["pull", &format!("oci:{}:nope", layout.dir.display())]);
    assert!(common::stderr(&o).contains("no image tagged 'nope'"), "{}", common::stderr(&o));
    assert!(staging_is_empty(&e.root));
}

#[test]
fn files_that_are_no_archives_and_hostile_names_give_one_safe_line() {
    let e = env();
    let text = e.work.join("passwd");
    std::fs::write(&text, "root:x:0:0:root:/root:/bin/bash\n".repeat(40)).unwrap();
    for (reference, says) in [
        (format!("docker-archive:{}", text.display()), "not a tar archive"),
        (format!("aci:{}", text.display()), "is not an ACI: neither a tar archive nor gzip, bzip2 or xz"),
    ] {
        let o = strata(&e.root, &["pull", &reference]);
        assert!(!o.status.success());
        let err = common::stderr(&o);
        assert_eq!(err.lines().count(), 1, "one-line error: {err}");
        assert!(err.contains(says), "'{err}' should say '{says}'");
        assert!(!err.contains("/bin/bash"), "the file's bytes are not quoted: {err}");
    }
    // An entry name with a newline and a terminal escape, refused: the message names it
    // escaped, on one line.
    let mut hostile = Layout::new(&e.work.join("hostile"));
    hostile.add_image("latest", &[(tar(&[Entry::file("x\n\u{1b}[2J/../../../escape", b"x")]), Comp::None)]);
    let o = strata(&e.root, &["pull", &format!("oci:{}", hostile.dir.display())]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert_eq!(err.lines().count(), 1, "one-line error: {err}");
    assert!(!err.contains('\u{1b}'), "no raw escape reaches the terminal: {err:?}");
    assert!(err.contains("x\\n\\u{1b}[2J"), "the name is shown escaped: {err}");
    assert!(staging_is_empty(&e.root));
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");
}

#[test]
fn a_docker_archive_with_a_gigabyte_long_name_is_refused_without_holding_it() {
    let e = env();
    let mut long = tar::Header::new_gnu();
    long.set_path("././@LongLink").unwrap();
    long.set_entry_type(tar::EntryType::GNULongName);
    long.set_size(1 << 30);
    long.set_cksum();
    let path = e.work.join("huge-name.tar");
    let file = std::fs::File::create(&path).unwrap();
    std::io::Write::write_all(&mut &file, long.as_bytes()).unwrap();
    file.set_len(512 + (1 << 30) + 1024).unwrap(); // a sparse gigabyte of name
    let o = strata(&e.root, &["pull", &format!("docker-archive:{}", path.display())]);
    assert!(!o.status.success());
    let err = common::stderr(&o);
    assert!(err.contains("exceed 4 MiB"), "{err}");
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");
}

#[test]
fn zstd_layers_with_long_windows_need_the_cap_raised() {
    let e = env();
    let layer = tar(&[Entry::file("long", b"window")]);
    let mut layout = Layout::new(&e.work.join("long"));
    layout.add_image("v1", &[(layer.clone(), Comp::ZstdLong)]);
    let reference = format!("oci:{}:v1", layout.dir.display());
    let o = strata(&e.root, &["pull", &reference]);
    assert!(!o.status.success(), "a 2 GiB window is over the default cap");
    let err = common::stderr(&o);
    assert!(err.contains("128 MiB cap") && err.contains("max_zstd_window_log"), "{err}");
    assert!(staging_is_empty(&e.root));
    assert_eq!(strata_ok(&e.root, &["images", "--json"]).trim(), "[]");
    let config = e.work.join("long.toml");
    std::fs::write(&config, "[unpack]\nmax_zstd_window_log = 31\n").unwrap();
    strata_ok(&e.root, &["--config", config.to_str().unwrap(), "pull", &reference]);
    assert!(layer_rootfs(&e.root, &layer).join("long").exists());
}

#[test]
fn recover_clears_abandoned_staging() {
    let e = env();
    strata_ok(&e.root, &["images"]);
    let abandoned = e.root.join("store/staging/deadbeef/rootfs");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join("half"), b"x").unwrap();
    let out = strata_ok(&e.root, &["recover"]);
    assert!(out.contains("1 staging"), "{out}");
    assert!(staging_is_empty(&e.root));
}
