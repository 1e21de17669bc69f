//! appc images through the binary: ACIs built and validated by the real `actool`
//! (Debian `appc-spec`), import in every compression, simple discovery over HTTP from
//! a local server, dependency chains, pathWhitelist, provisioning with every backend,
//! and the failures (bad manifests, hostile archives, cycles, missing or wrong
//! dependencies) leaving nothing behind.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{snapshot, stderr, strata, strata_ok, tar, Entry};
use sha2::{Digest as _, Sha512};

/// A test's private root; unmounts whatever the test mounted, even on failure.
struct Env {
    tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Env {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        Self { tmp, root }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = strata::mount::unmount_all_under(&self.root);
    }
}

fn actool_present() -> bool {
    Command::new("actool").arg("version").output().is_ok_and(|o| o.status.success())
}

/// A manifest for `name` at `version` on this host, depending on `deps` (name, version).
fn manifest(name: &str, version: &str, deps: &[(&str, &str)], extra: &str) -> String {
    let deps: Vec<String> = deps
        .iter()
        .map(|(n, v)| format!(r#"{{"imageName":"{n}","labels":[{{"name":"version","value":"{v}"}}]}}"#))
        .collect();
    format!(
        r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"{name}",
        "labels":[{{"name":"version","value":"{version}"}},{{"name":"os","value":"linux"}},{{"name":"arch","value":"{}"}}],
        "app":{{"exec":["/bin/{}"],"user":"0","group":"0","workingDirectory":"/srv",
                "environment":[{{"name":"APP","value":"{name}"}}]}},
        "dependencies":[{}]{extra}}}"#,
        strata::store::appc::host_labels().1,
        name.rsplit('/').next().unwrap(),
        deps.join(",")
    )
}

/// Builds an ACI with `actool build` from a manifest and files; `compress` false
/// gives a plain tar.
fn actool_build(dir: &Path, name: &str, manifest: &str, files: &[(&str, &[u8])], compress: bool) -> PathBuf {
    let layout = dir.join(format!("{name}.layout"));
    std::fs::create_dir_all(layout.join("rootfs")).unwrap();
    std::fs::write(layout.join("manifest"), manifest).unwrap();
    for (path, data) in files {
        let p = layout.join("rootfs").join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
    let out = dir.join(format!("{name}.aci"));
    let mut cmd = Command::new("actool");
    cmd.arg("build").arg("--overwrite").arg("--owner-root");
    if !compress {
        cmd.arg("--no-compression");
    }
    let o = cmd.arg(&layout).arg(&out).output().unwrap();
    assert!(o.status.success(), "actool build: {}", String::from_utf8_lossy(&o.stderr));
    let v = Command::new("actool").arg("validate").arg(&out).output().unwrap();
    assert!(v.status.success(), "actool validate: {}", String::from_utf8_lossy(&v.stderr));
    out
}

/// An ACI written directly (for archives actool would never build).
fn raw_aci(path: &Path, entries: &[Entry]) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar(entries)).unwrap();
    std::fs::write(path, gz.finish().unwrap()).unwrap();
}

fn sha512_id(tar: &[u8]) -> String {
    format!("sha512-{}", Sha512::digest(tar).iter().map(|b| format!("{b:02x}")).collect::<String>())
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn image_dirs(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("store/appc/images"))
        .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// A static HTTP server on 127.0.0.1 for discovery: serves files under a directory,
/// 404 otherwise, and records the paths asked for. Stops when dropped.
struct FileServer {
    port: u16,
    hits: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    fn start(dir: &Path) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hits, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (dir, h, s) = (dir.to_owned(), Arc::clone(&hits), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let _ = answer(stream, &dir, &h);
                }
            }
        });
        Self { port, hits, stop, thread: Some(thread) }
    }

    fn prefix(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    fn hits(&self) -> Vec<String> {
        self.hits.lock().unwrap().clone()
    }
}

fn answer(mut stream: TcpStream, dir: &Path, hits: &Mutex<Vec<String>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_owned();
    hits.lock().unwrap().push(path.clone());
    let file = dir.join(path.trim_start_matches('/'));
    match (path.contains(".."), std::fs::read(&file)) {
        (false, Ok(body)) => {
            write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len())?;
            stream.write_all(&body)
        }
        _ => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Publishes an ACI where simple discovery looks: `DIR/NAME-VERSION-OS-ARCH.aci`.
fn publish(dir: &Path, aci: &Path, name: &str, version: &str) -> PathBuf {
    let (os, arch) = strata::store::appc::host_labels();
    let target = dir.join(format!("{name}-{version}-{os}-{arch}.aci"));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(aci, &target).unwrap();
    target
}

fn json(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&strata_ok(root, &all)).unwrap()
}

fn backends() -> Vec<&'static str> {
    if common::is_root() {
        vec!["copy", "overlay", "bind"]
    } else {
        eprintln!("not root: only the copy backend is exercised");
        vec!["copy"]
    }
}

#[test]
fn an_aci_actool_builds_imports_and_provisions_with_every_backend() {
    if !actool_present() {
        panic!("actool (Debian appc-spec) is required; scripts/test.sh installs it");
    }
    let env = Env::new();
    let files: &[(&str, &[u8])] = &[("bin/app", b"#!/bin/sh\necho app\n"), ("etc/app.conf", b"conf")];
    let aci = actool_build(env.tmp.path(), "app", &manifest("example.com/app", "1.0", &[], ""), files, true);
    let id = strata_ok(&env.root, &["pull", &format!("aci:{}", aci.display())]);
    assert_eq!(id.trim(), sha512_id(&gunzip(&std::fs::read(&aci).unwrap())), "id = sha512 of the uncompressed tar");
    let dir = env.root.join("store/appc/images").join(id.trim());
    assert!(dir.join("manifest").is_file() && dir.join("rootfs/bin/app").is_file(), "the Mesos layout");

    let details = json(&env.root, &["inspect", "appc:example.com/app:1.0"]);
    assert_eq!(details["id"], id.trim());
    assert_eq!(details["entrypoint"], serde_json::json!(["/bin/app"]));
    assert_eq!(details["workdir"], "/srv");
    assert_eq!(details["user"], "0:0");
    let listed = json(&env.root, &["images"]);
    assert!(listed.as_array().unwrap().iter().any(|i| i["digest"] == id.trim()), "{listed}");

    for (i, backend) in backends().into_iter().enumerate() {
        let c = format!("c{i}");
        let p = json(&env.root, &["provision", &c, "appc:example.com/app:1.0", "--backend", backend]);
        let rootfs = PathBuf::from(p["rootfs"].as_str().unwrap());
        assert_eq!(std::fs::read(rootfs.join("etc/app.conf")).unwrap(), b"conf", "{backend}");
        assert_eq!(p["image_digest"], id.trim());
        assert_eq!(p["config"]["config"]["Entrypoint"], serde_json::json!(["/bin/app"]));
        // by id, and by file (the second import of the same file is skipped)
        let by_id = json(&env.root, &["provision", &format!("{c}-id"), &format!("appc:{}", id.trim())]);
        assert!(PathBuf::from(by_id["rootfs"].as_str().unwrap()).join("bin/app").is_file());
        strata_ok(&env.root, &["destroy", &c]);
        strata_ok(&env.root, &["destroy", &format!("{c}-id")]);
    }
    let p = json(&env.root, &["provision", "file", &format!("aci:{}", aci.display()), "--backend", "copy"]);
    assert!(PathBuf::from(p["rootfs"].as_str().unwrap()).join("bin/app").is_file());

    // In use: rmi refuses; once destroyed it goes.
    let o = strata(&env.root, &["rmi", "appc:example.com/app"]);
    assert!(!o.status.success() && stderr(&o).contains("used by a provisioned rootfs"), "{}", stderr(&o));
    strata_ok(&env.root, &["destroy", "file"]);
    strata_ok(&env.root, &["rmi", "appc:example.com/app"]);
    assert!(image_dirs(&env.root).is_empty());
}

#[test]
fn what_actool_rejects_strata_rejects_and_stores_nothing() {
    if !actool_present() {
        panic!("actool (Debian appc-spec) is required; scripts/test.sh installs it");
    }
    let env = Env::new();
    let good = manifest("example.com/app", "1.0", &[], "");
    let cases = [
        ("uppercase name", good.replace("example.com/app\"", "Example.com/App\"")),
        ("acVersion", good.replace("0.8.11", "eight")),
        ("label name", good.replace(r#""name":"version""#, r#""name":"Version""#)),
        ("unknown os", good.replace(r#""value":"linux""#, r#""value":"plan9""#)),
        ("no user", good.replace(r#""user":"0","#, "")),
        ("relative workingDirectory", good.replace(r#""/srv""#, r#""srv""#)),
        ("exec string", good.replace(r#""exec":["/bin/app"]"#, r#""exec":"/bin/app""#)),
        (
            "duplicate env",
            good.replace(
                r#"{"name":"APP","value":"example.com/app"}"#,
                r#"{"name":"A","value":"1"},{"name":"A","value":"2"}"#,
            ),
        ),
        ("bad dependency name", manifest("example.com/app", "1.0", &[("Base", "1")], "")),
        (
            "annotation name",
            manifest("example.com/app", "1.0", &[], r#","annotations":[{"name":"Bad Name","value":"x"}]"#),
        ),
        ("not JSON", "{".to_owned()),
    ];
    // The reference: actool accepts the good manifest, so the comparison means something.
    std::fs::write(env.path("good.json"), &good).unwrap();
    assert!(Command::new("actool").arg("validate").arg(env.path("good.json")).status().unwrap().success());
    for (what, text) in cases {
        let path = env.path("m.json");
        std::fs::write(&path, &text).unwrap();
        let actool = Command::new("actool").arg("validate").arg(&path).output().unwrap();
        assert!(!actool.status.success(), "{what}: actool accepted it, the case is wrong");
        let aci = env.path("bad.aci");
        raw_aci(&aci, &[Entry::file("manifest", text.as_bytes()), Entry::dir("rootfs"), Entry::file("rootfs/x", b"")]);
        let o = strata(&env.root, &["pull", &format!("aci:{}", aci.display())]);
        assert!(!o.status.success(), "{what}: strata accepted what actool rejects");
        assert!(stderr(&o).contains("not a valid ACI"), "{what}: {}", stderr(&o));
        assert!(image_dirs(&env.root).is_empty(), "{what}: something was stored");
    }
}

#[test]
fn bzip2_xz_gzip_and_plain_acis_are_one_image() {
    let env = Env::new();
    let plain = if actool_present() {
        let files: &[(&str, &[u8])] = &[("bin/app", b"x")];
        actool_build(env.tmp.path(), "app", &manifest("example.com/app", "1.0", &[], ""), files, false)
    } else {
        panic!("actool (Debian appc-spec) is required; scripts/test.sh installs it");
    };
    let bytes = std::fs::read(&plain).unwrap();
    let mut ids = Vec::new();
    for (tool, ext) in [("cat", "tar"), ("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz")] {
        let out = env.path(&format!("app.aci.{ext}"));
        let mut child = Command::new(tool)
            .args(if tool == "cat" { vec![] } else { vec!["-c"] })
            .stdin(std::process::Stdio::piped())
            .stdout(std::fs::File::create(&out).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        child.stdin.take().unwrap().write_all(&bytes).unwrap();
        assert!(child.wait().unwrap().success());
        ids.push(strata_ok(&env.root, &["pull", &format!("aci:{}", out.display())]).trim().to_owned());
    }
    assert!(ids.iter().all(|id| *id == sha512_id(&bytes)), "{ids:?}");
    assert_eq!(image_dirs(&env.root).len(), 1);
    // `images` shows the uncompressed ACI's bytes, whatever the compression was.
    let images = json(&env.root, &["images", "--json"]);
    assert_eq!(images[0]["size"], bytes.len() as u64, "{images}");
}

#[test]
fn hostile_acis_change_nothing_outside() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"safe").unwrap();
    let before = snapshot(env.tmp.path());
    let good = manifest("example.com/app", "1.0", &[], "");
    let cases: Vec<(&str, Vec<Entry>)> = vec![
        (
            "dot-dot",
            vec![Entry::file("manifest", good.as_bytes()), Entry::file("rootfs/../../outside/victim", b"owned")],
        ),
        (
            "symlink escape",
            vec![
                Entry::file("manifest", good.as_bytes()),
                Entry::symlink("rootfs/esc", "../../../outside"),
                Entry::file("rootfs/esc/victim", b"owned"),
            ],
        ),
        ("absolute", vec![Entry::file("manifest", good.as_bytes()), Entry::file("/tmp/strata-appc-abs", b"x")]),
    ];
    for (what, entries) in cases {
        let aci = env.path(&format!("{}.aci", what.replace(' ', "-")));
        raw_aci(&aci, &entries);
        let o = strata(&env.root, &["pull", &format!("aci:{}", aci.display())]);
        // Either refused, or contained: nothing outside the store changes.
        assert_eq!(std::fs::read(outside.join("victim")).unwrap(), b"safe", "{what}");
        assert!(!Path::new("/tmp/strata-appc-abs").exists() || !o.status.success(), "{what}");
        let _ = std::fs::remove_file(&aci);
    }
    let after = snapshot(env.tmp.path());
    for (path, node) in &before {
        assert_eq!(after.get(path), Some(node), "{} changed", path.display());
    }
    let staging = std::fs::read_dir(env.root.join("store/staging")).unwrap().count();
    assert_eq!(staging, 0, "no staging left");
}

/// An ACI may hold entries of its own where the store later writes (the signature):
/// a symlink there must not carry the write outside.
#[test]
fn a_signature_is_never_written_through_the_archives_symlink() {
    let env = Env::new();
    let outside = env.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"safe").unwrap();
    let served = env.path("served");
    let aci = env.path("sig.aci");
    let victim = outside.join("victim");
    raw_aci(
        &aci,
        &[
            Entry::file("manifest", manifest("example.com/sig", "1.0", &[], "").as_bytes()),
            Entry::dir("rootfs"),
            Entry::symlink(strata::store::appc::SIGNATURE_FILE, victim.to_str().unwrap()),
        ],
    );
    let published = publish(&served, &aci, "example.com/sig", "1.0");
    std::fs::write(format!("{}.asc", published.display()), b"-----BEGIN PGP SIGNATURE-----").unwrap();
    let server = FileServer::start(&served);
    let out = strata_ok(&env.root, &["pull", "appc:example.com/sig:1.0", "--appc-discovery-prefix", &server.prefix()]);
    assert_eq!(std::fs::read(&victim).unwrap(), b"safe", "the signature was written through the symlink");
    let image_dir = env.root.join("store/appc/images").join(out.trim());
    let signature = image_dir.join(strata::store::appc::SIGNATURE_FILE);
    assert!(!signature.is_symlink(), "the archive's entry was replaced by the signature");
    assert_eq!(std::fs::read(signature).unwrap(), b"-----BEGIN PGP SIGNATURE-----");
}

/// The acceptance test of the issue: `strata provision c1 appc:example.com/app:1.0`
/// resolves base ← mid ← app through discovery served by a local HTTP server.
#[test]
fn provision_resolves_a_three_level_chain_through_discovery() {
    if !actool_present() {
        panic!("actool (Debian appc-spec) is required; scripts/test.sh installs it");
    }
    let env = Env::new();
    let site = env.path("site");
    let base = actool_build(
        env.tmp.path(),
        "base",
        &manifest("example.com/base", "1", &[], ""),
        &[("etc/os", b"base"), ("etc/shared", b"from base"), ("bin/sh", b"sh")],
        true,
    );
    let mid = actool_build(
        env.tmp.path(),
        "mid",
        &manifest("example.com/mid", "2", &[("example.com/base", "1")], ""),
        &[("etc/shared", b"from mid"), ("lib/mid.so", b"so")],
        true,
    );
    let app = actool_build(
        env.tmp.path(),
        "app",
        &manifest("example.com/app", "1.0", &[("example.com/mid", "2")], ""),
        &[("bin/app", b"app")],
        true,
    );
    publish(&site, &base, "example.com/base", "1");
    publish(&site, &mid, "example.com/mid", "2");
    let published = publish(&site, &app, "example.com/app", "1.0");
    std::fs::write(format!("{}.asc", published.display()), b"-----BEGIN PGP SIGNATURE-----\n").unwrap();
    let server = FileServer::start(&site);
    let prefix = server.prefix();

    // Nothing stored and --pull never: a clear error, no fetch.
    let o = strata(&env.root, &["provision", "c0", "appc:example.com/app:1.0", "--pull", "never"]);
    assert!(!o.status.success() && stderr(&o).contains("is not in the store"), "{}", stderr(&o));
    assert!(server.hits().is_empty());

    for (i, backend) in backends().into_iter().filter(|b| *b != "bind").enumerate() {
        let c = format!("c{}", i + 1);
        let p = json(
            &env.root,
            &["provision", &c, "appc:example.com/app:1.0", "--backend", backend, "--appc-discovery-prefix", &prefix],
        );
        let rootfs = PathBuf::from(p["rootfs"].as_str().unwrap());
        assert_eq!(std::fs::read(rootfs.join("etc/os")).unwrap(), b"base", "{backend}");
        assert_eq!(std::fs::read(rootfs.join("etc/shared")).unwrap(), b"from mid", "{backend}: dependents win");
        assert!(rootfs.join("lib/mid.so").is_file() && rootfs.join("bin/app").is_file(), "{backend}");
        strata_ok(&env.root, &["destroy", &c]);
    }
    // Each image was fetched once: the second provision found them in the store.
    let acis: Vec<String> = server.hits().into_iter().filter(|h| h.ends_with(".aci")).collect();
    assert_eq!(acis.len(), 3, "{acis:?}");
    let details = json(&env.root, &["inspect", "appc:example.com/app:1.0"]);
    let chain: Vec<String> =
        details["chain"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
    let id_of = |aci: &Path| sha512_id(&gunzip(&std::fs::read(aci).unwrap()));
    assert_eq!(chain, vec![id_of(&base), id_of(&mid), id_of(&app)], "dependencies first");
    assert_eq!(details["signed"], true, "the .asc was recorded");

    // A multi-layer appc image does not fit bind: a clear error, nothing made.
    if common::is_root() {
        let o = strata(&env.root, &["provision", "b", "appc:example.com/app:1.0", "--backend", "bind"]);
        assert!(!o.status.success() && stderr(&o).contains("single-layer"), "{}", stderr(&o));
        assert!(!env.root.join("provisioner/containers/b").exists());
    }
}

#[test]
fn diamond_dependencies_follow_the_mesos_order_and_whitelists_cut_the_tree() {
    if !actool_present() {
        panic!("actool (Debian appc-spec) is required; scripts/test.sh installs it");
    }
    let env = Env::new();
    let site = env.path("site");
    let mut ids = std::collections::BTreeMap::new();
    for (name, deps, files) in [
        ("c", vec![], vec![("f/c", "c"), ("f/winner", "c"), ("junk/x", "junk")]),
        ("b", vec![("example.com/c", "1")], vec![("f/b", "b"), ("f/winner", "b")]),
        ("d", vec![("example.com/c", "1")], vec![("f/d", "d"), ("f/winner", "d")]),
    ] {
        let full = format!("example.com/{name}");
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, d)| (*p, d.as_bytes())).collect();
        let aci = actool_build(env.tmp.path(), name, &manifest(&full, "1", &deps, ""), &files, true);
        publish(&site, &aci, &full, "1");
        ids.insert(name, sha512_id(&gunzip(&std::fs::read(&aci).unwrap())));
    }
    let whitelist = r#","pathWhitelist":["/f/b","/f/c","/f/winner","/bin/a"]"#;
    let a = actool_build(
        env.tmp.path(),
        "a",
        &manifest("example.com/a", "1", &[("example.com/b", "1"), ("example.com/d", "1")], whitelist),
        &[("bin/a", b"a"), ("bin/extra", b"cut")],
        true,
    );
    publish(&site, &a, "example.com/a", "1");
    ids.insert("a", sha512_id(&gunzip(&std::fs::read(&a).unwrap())));
    let server = FileServer::start(&site);
    let prefix = server.prefix();

    strata_ok(&env.root, &["pull", "appc:example.com/a:1", "--appc-discovery-prefix", &prefix]);
    let details = json(&env.root, &["inspect", "appc:example.com/a:1"]);
    let want: Vec<&String> = ["c", "b", "d", "a"].iter().map(|n| &ids[n]).collect();
    let chain: Vec<String> = details["chain"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    assert_eq!(chain.iter().collect::<Vec<_>>(), want, "[C, B, D, A]");

    for backend in backends() {
        let p = json(&env.root, &["provision", backend, "appc:example.com/a:1", "--backend", backend]);
        let rootfs = PathBuf::from(p["rootfs"].as_str().unwrap());
        assert_eq!(std::fs::read(rootfs.join("f/winner")).unwrap(), b"d", "{backend}: D comes after B");
        for kept in ["f/b", "f/c", "bin/a"] {
            assert!(rootfs.join(kept).is_file(), "{backend}: {kept} is whitelisted");
        }
        for cut in ["f/d", "junk", "bin/extra"] {
            assert!(!rootfs.join(cut).exists(), "{backend}: {cut} is not whitelisted");
        }
        strata_ok(&env.root, &["destroy", backend]);
    }
}

#[test]
fn broken_dependency_graphs_fail_clearly_and_provision_nothing() {
    let env = Env::new();
    let site = env.path("site");
    let aci = |name: &str, deps: &[(&str, &str)], extra: &str| {
        let path = env.path(&format!("{}.aci", name.replace('/', "_")));
        raw_aci(
            &path,
            &[
                Entry::file("manifest", manifest(name, "1", deps, extra).as_bytes()),
                Entry::dir("rootfs"),
                Entry::file(&format!("rootfs/{}", name.replace('/', "_")), b"x"),
            ],
        );
        publish(&site, &path, name, "1");
        path
    };
    // a → b → a: a cycle.
    aci("example.com/cyc-a", &[("example.com/cyc-b", "1")], "");
    aci("example.com/cyc-b", &[("example.com/cyc-a", "1")], "");
    // m → gone: nothing published.
    aci("example.com/m", &[("example.com/gone", "1")], "");
    // p pins an id its dependency does not have.
    aci("example.com/q", &[], "");
    let pinned = format!(
        r#""dependencies":[{{"imageName":"example.com/q","imageID":"sha512-{}","labels":[{{"name":"version","value":"1"}}]}}]"#,
        "0".repeat(128)
    );
    let p = env.path("p.aci");
    raw_aci(
        &p,
        &[
            Entry::file(
                "manifest",
                manifest("example.com/p", "1", &[], "").replace(r#""dependencies":[]"#, &pinned).as_bytes(),
            ),
            Entry::dir("rootfs"),
        ],
    );
    publish(&site, &p, "example.com/p", "1");
    // wrong: published under a name it does not have.
    let liar = env.path("liar.aci");
    raw_aci(
        &liar,
        &[Entry::file("manifest", manifest("example.com/other", "1", &[], "").as_bytes()), Entry::dir("rootfs")],
    );
    publish(&site, &liar, "example.com/wrong", "1");
    let server = FileServer::start(&site);
    let prefix = server.prefix();

    for (reference, needle) in [
        ("appc:example.com/cyc-a:1", "dependency cycle"),
        ("appc:example.com/m:1", "dependency example.com/gone"),
        ("appc:example.com/p:1", "pins"),
        ("appc:example.com/wrong:1", "not the image asked for"),
        ("appc:example.com/nothing:1", "no image at"),
    ] {
        let o =
            strata(&env.root, &["provision", "c1", reference, "--backend", "copy", "--appc-discovery-prefix", &prefix]);
        assert!(!o.status.success(), "{reference} succeeded");
        assert!(stderr(&o).contains(needle), "{reference}: {}", stderr(&o));
        assert!(!env.root.join("provisioner/containers/c1").exists(), "{reference}: a container was left");
    }
    let o = strata(&env.root, &["pull", "appc:Bad"]);
    assert!(!o.status.success() && stderr(&o).contains("AC identifier"), "{}", stderr(&o));
    let o = strata(&env.root, &["pull", "appc:example.com/x", "--appc-discovery-prefix", "hdfs://nn/"]);
    assert!(!o.status.success() && stderr(&o).contains("hdfs://"), "{}", stderr(&o));
    // A server nobody answers: the error names the image's URL, not its signature's.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/", closed.local_addr().unwrap());
    drop(closed);
    let o = strata(&env.root, &["pull", "appc:example.com/x:1", "--appc-discovery-prefix", &dead]);
    let message = stderr(&o);
    assert!(!o.status.success() && message.contains(".aci") && !message.contains(".aci.asc"), "{message}");
    // The liar and the pinned mismatch were never stored.
    let stored: Vec<String> = image_dirs(&env.root);
    let q_id = sha512_id(&gunzip(&std::fs::read(env.path("example.com_q.aci")).unwrap()));
    let liar_id = sha512_id(&gunzip(&std::fs::read(&liar).unwrap()));
    assert!(!stored.contains(&liar_id), "the mislabelled image was stored");
    assert!(!stored.contains(&q_id), "the dependency with the wrong id was stored");
}

#[test]
fn recover_skips_invalid_store_entries_with_a_warning() {
    let env = Env::new();
    let aci = env.path("app.aci");
    raw_aci(
        &aci,
        &[
            Entry::file("manifest", manifest("example.com/app", "1", &[], "").as_bytes()),
            Entry::dir("rootfs"),
            Entry::file("rootfs/hello", b"hi"),
        ],
    );
    let id = strata_ok(&env.root, &["pull", &format!("aci:{}", aci.display())]).trim().to_owned();
    let images = env.root.join("store/appc/images");
    std::fs::create_dir_all(images.join("not-an-id")).unwrap();
    let broken = format!("sha512-{}", "1".repeat(128));
    std::fs::create_dir_all(images.join(&broken).join("rootfs")).unwrap();
    std::fs::write(images.join(&broken).join("manifest"), b"{\"acKind\":\"nope\"}").unwrap();

    let report = json(&env.root, &["recover"]);
    assert_eq!(report["appc_images"], 1);
    let skipped: Vec<&str> =
        report["appc_skipped"].as_array().unwrap().iter().map(|e| e["entry"].as_str().unwrap()).collect();
    assert_eq!(skipped.len(), 2, "{report}");
    assert!(skipped.contains(&"not-an-id") && skipped.contains(&broken.as_str()));
    let o = strata(&env.root, &["recover"]);
    assert!(o.status.success());
    assert!(common::stdout(&o).contains(&format!("skipped invalid appc image {broken}")));
    // The valid image still provisions; the invalid entries are left for an operator.
    let p = json(&env.root, &["provision", "c1", "appc:example.com/app", "--backend", "copy"]);
    assert_eq!(p["image_digest"], id);
    assert!(images.join("not-an-id").exists());
}
