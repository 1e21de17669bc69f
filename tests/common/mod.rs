//! Test fixtures: a raw tar writer (hostile names included), OCI layout and
//! `docker save` archive builders, tree snapshots, and a runner for the binary.
#![allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::too_many_arguments,
    clippy::type_complexity
)]

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

pub mod registry;

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The host's architecture in Go's naming, as images name it.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Skips a test (with a message) unless running as root.
#[macro_export]
macro_rules! require_root {
    () => {
        if !common::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
    };
}

/// One raw tar entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
    pub data: Vec<u8>,
    pub link: Vec<u8>,
    pub dev: (u32, u32),
    pub pax: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(path: &str, kind: u8, mode: u32) -> Self {
        Self {
            path: path.as_bytes().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: 1_700_000_000,
            data: Vec::new(),
            link: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
        }
    }
    pub fn file(path: &str, data: &[u8]) -> Self {
        Self { data: data.to_vec(), ..Self::new(path, b'0', 0o644) }
    }
    pub fn dir(path: &str) -> Self {
        Self::new(path, b'5', 0o755)
    }
    pub fn symlink(path: &str, target: &str) -> Self {
        Self { link: target.as_bytes().to_vec(), ..Self::new(path, b'2', 0o777) }
    }
    pub fn hardlink(path: &str, target: &str) -> Self {
        Self { link: target.as_bytes().to_vec(), ..Self::new(path, b'1', 0o644) }
    }
    pub fn char_dev(path: &str, major: u32, minor: u32) -> Self {
        Self { dev: (major, minor), ..Self::new(path, b'3', 0o666) }
    }
    pub fn fifo(path: &str) -> Self {
        Self::new(path, b'6', 0o644)
    }
    pub fn whiteout(dir: &str, name: &str) -> Self {
        Self::file(&format!("{dir}.wh.{name}"), b"")
    }
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }
    pub fn owner(mut self, uid: u32, gid: u32) -> Self {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub fn xattr(mut self, name: &str, value: &[u8]) -> Self {
        self.pax.push((format!("SCHILY.xattr.{name}"), value.to_vec()));
        self
    }
}

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}\0", value, width = field.len() - 1);
    field.copy_from_slice(s.as_bytes());
}

fn header(
    name: &[u8],
    kind: u8,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: u64,
    link: &[u8],
    dev: (u32, u32),
) -> [u8; 512] {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    octal(&mut h[100..108], u64::from(mode));
    octal(&mut h[108..116], u64::from(uid));
    octal(&mut h[116..124], u64::from(gid));
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime);
    h[156] = kind;
    let l = link.len().min(100);
    h[157..157 + l].copy_from_slice(&link[..l]);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    octal(&mut h[329..337], u64::from(dev.0));
    octal(&mut h[337..345], u64::from(dev.1));
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
    h
}

fn pad(out: &mut Vec<u8>) {
    let rem = out.len() % 512;
    if rem != 0 {
        out.extend(std::iter::repeat_n(0u8, 512 - rem));
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> <key>=<value>\n" where len counts itself.
    let body_len = 1 + key.len() + 1 + value.len() + 1;
    let mut len = body_len + 1;
    while format!("{len}").len() + body_len != len {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Builds a tar stream; names over 100 bytes and link targets over 100 bytes get PAX records.
pub fn tar(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut pax = e.pax.clone();
        if e.path.len() > 100 {
            pax.push(("path".into(), e.path.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            let body: Vec<u8> = pax.iter().flat_map(|(k, v)| pax_record(k, v)).collect();
            out.extend_from_slice(&header(
                b"./PaxHeaders/x",
                b'x',
                0o644,
                0,
                0,
                body.len() as u64,
                e.mtime,
                b"",
                (0, 0),
            ));
            out.extend_from_slice(&body);
            pad(&mut out);
        }
        out.extend_from_slice(&header(
            &e.path,
            e.kind,
            e.mode,
            e.uid,
            e.gid,
            e.data.len() as u64,
            e.mtime,
            &e.link,
            e.dev,
        ));
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

/// Builds a tar with GNU long-name (`L`) and long-link (`K`) records instead of PAX.
pub fn gnu_long_tar(path: &str, link_target: Option<&str>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut name = path.as_bytes().to_vec();
    name.push(0);
    out.extend_from_slice(&header(b"././@LongLink", b'L', 0o644, 0, 0, name.len() as u64, 0, b"", (0, 0)));
    out.extend_from_slice(&name);
    pad(&mut out);
    if let Some(target) = link_target {
        let mut t = target.as_bytes().to_vec();
        t.push(0);
        out.extend_from_slice(&header(b"././@LongLink", b'K', 0o644, 0, 0, t.len() as u64, 0, b"", (0, 0)));
        out.extend_from_slice(&t);
        pad(&mut out);
        out.extend_from_slice(&header(&path.as_bytes()[..100], b'2', 0o777, 0, 0, 0, 1_700_000_000, b"x", (0, 0)));
    } else {
        out.extend_from_slice(&header(
            &path.as_bytes()[..100],
            b'0',
            0o644,
            0,
            0,
            data.len() as u64,
            1_700_000_000,
            b"",
            (0, 0),
        ));
        out.extend_from_slice(data);
        pad(&mut out);
    }
    out.extend(std::iter::repeat_n(0u8, 1024));
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
    /// zstd with a 2 GiB window, as `zstd --long=31` writes it.
    ZstdLong,
}

pub fn compress(data: &[u8], comp: Comp) -> Vec<u8> {
    match comp {
        Comp::None => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Comp::Zstd => zstd::encode_all(data, 3).unwrap(),
        Comp::ZstdLong => {
            let mut e = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            e.long_distance_matching(true).unwrap();
            e.window_log(31).unwrap();
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
    }
}

fn layer_media_type(comp: Comp) -> &'static str {
    match comp {
        Comp::None => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd | Comp::ZstdLong => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

pub fn config_json(diff_ids: &[String], arch: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"], "Cmd": ["-c", "true"], "WorkingDir": "/w", "User": "1:2"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": diff_ids.iter().enumerate().map(|(i, _)| serde_json::json!({"created_by": format!("layer {i}")})).collect::<Vec<_>>(),
    }))
    .unwrap()
}

/// Writes an OCI image layout.
pub struct Layout {
    pub dir: PathBuf,
    manifests: Vec<serde_json::Value>,
}

impl Layout {
    pub fn new(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        let l = Self { dir: dir.to_owned(), manifests: Vec::new() };
        l.write_index();
        l
    }

    pub fn blob(&self, bytes: &[u8]) -> String {
        let hex = sha256_hex(bytes);
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        format!("sha256:{hex}")
    }

    /// Adds an image; returns the manifest digest.
    pub fn add_image(&mut self, tag: &str, layers: &[(Vec<u8>, Comp)]) -> String {
        self.add_image_for(tag, layers, "amd64")
    }

    /// Adds a single-platform image whose config names `arch`; returns the manifest digest.
    pub fn add_image_for(&mut self, tag: &str, layers: &[(Vec<u8>, Comp)], arch: &str) -> String {
        let manifest = self.image_manifest(layers, arch);
        let digest = self.blob(&manifest);
        self.manifests.push(serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag}
        }));
        self.write_index();
        digest
    }

    /// A manifest with the given layers; blobs written, manifest bytes returned.
    pub fn image_manifest(&self, layers: &[(Vec<u8>, Comp)], arch: &str) -> Vec<u8> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (tar, comp) in layers {
            diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
            let blob = compress(tar, *comp);
            let digest = self.blob(&blob);
            descriptors
                .push(serde_json::json!({"mediaType": layer_media_type(*comp), "digest": digest, "size": blob.len()}));
        }
        let config = config_json(&diff_ids, arch);
        let config_digest = self.blob(&config);
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap()
    }

    /// Adds a multi-platform index under `tag`.
    pub fn add_index(&mut self, tag: &str, per_arch: &[(&str, Vec<(Vec<u8>, Comp)>)]) -> String {
        let mut entries = Vec::new();
        for (arch, layers) in per_arch {
            let m = self.image_manifest(layers, arch);
            let d = self.blob(&m);
            entries.push(serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d,
                "size": m.len(), "platform": {"os": "linux", "architecture": arch}}));
        }
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}))
        .unwrap();
        let digest = self.blob(&index);
        self.manifests
            .push(serde_json::json!({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest,
            "size": index.len(), "annotations": {"org.opencontainers.image.ref.name": tag}}));
        self.write_index();
        digest
    }

    fn write_index(&self) {
        let index = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": self.manifests});
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// Writes a `docker save` archive in the current format.
pub fn docker_archive(path: &Path, repo_tag: &str, layers: &[Vec<u8>]) {
    let mut members: Vec<Entry> = Vec::new();
    let mut names = Vec::new();
    let mut diff_ids = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let name = format!("layer{i}/layer.tar");
        members.push(Entry::file(&name, layer));
        names.push(name);
        diff_ids.push(format!("sha256:{}", sha256_hex(layer)));
    }
    let config = config_json(&diff_ids, "amd64");
    let config_name = format!("{}.json", sha256_hex(&config));
    members.push(Entry::file(&config_name, &config));
    let manifest = serde_json::json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": names}]);
    members.push(Entry::file("manifest.json", &serde_json::to_vec(&manifest).unwrap()));
    std::fs::write(path, tar(&members)).unwrap();
}

/// Writes a legacy `docker save` archive (`repositories` + `<id>/json` + `<id>/layer.tar`).
pub fn legacy_docker_archive(path: &Path, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let mut members = Vec::new();
    let mut parent: Option<String> = None;
    for (i, layer) in layers.iter().enumerate() {
        let id = sha256_hex(format!("layer-{i}-{repo}").as_bytes());
        let mut json = serde_json::json!({"id": id, "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["/bin/sh"], "Env": ["LEGACY=1"]}});
        if let Some(p) = &parent {
            json["parent"] = serde_json::Value::String(p.clone());
        }
        members.push(Entry::file(&format!("{id}/json"), &serde_json::to_vec(&json).unwrap()));
        members.push(Entry::file(&format!("{id}/layer.tar"), layer));
        members.push(Entry::file(&format!("{id}/VERSION"), b"1.0"));
        parent = Some(id);
    }
    let repos = serde_json::json!({ repo: { tag: parent.unwrap() } });
    members.push(Entry::file("repositories", &serde_json::to_vec(&repos).unwrap()));
    std::fs::write(path, tar(&members)).unwrap();
}

/// What a tree holds, path by path: kind, mode, owner, link target, content hash, xattrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub detail: String,
}

pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let md = std::fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let (kind, detail) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_symlink() {
            ("symlink", std::fs::read_link(&path).unwrap().display().to_string())
        } else if ft.is_file() {
            ("file", sha256_hex(&std::fs::read(&path).unwrap()))
        } else if ft.is_char_device() {
            ("char", format!("{}", md.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{}", md.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("other", String::new())
        };
        let rel = path.strip_prefix(root).unwrap().to_owned();
        out.insert(rel, Node { kind, mode: md.permissions().mode() & 0o7777, uid: md.uid(), gid: md.gid(), detail });
        if ft.is_dir() {
            walk(root, &path, out);
        }
    }
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(_) => None,
    }
}

/// Runs the `strata` binary with `--root root`.
pub fn strata(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("STRATA_CONFIG")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs strata and asserts success; returns stdout.
pub fn strata_ok(root: &Path, args: &[&str]) -> String {
    let o = strata(root, args);
    assert!(o.status.success(), "strata {args:?} failed: {}", stderr(&o));
    stdout(&o)
}

/// The single layer dirs of a store, by diff_id hex.
pub fn layer_rootfs(root: &Path, tar: &[u8]) -> PathBuf {
    root.join("store/layers/sha256").join(sha256_hex(tar)).join("rootfs")
}
