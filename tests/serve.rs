//! `strata serve` over a real unix socket: the API, one pull for 100 concurrent
//! provisions, one writer at a time, metrics, bad input, SIGTERM during a pull.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::registry::{Auth, FaultProxy, Registry, PASSWORD, USER};
use common::{stderr, strata, tar, Comp, Entry, Layout};
use serde_json::{json, Value};

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(root: &Path, socket: &Path) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["--root", root.to_str().unwrap(), "--socket", socket.to_str().unwrap(), "serve"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(socket).is_err() {
            assert!(Instant::now() < deadline, "strata serve did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { child }
    }

    fn terminate(mut self) -> std::process::ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request over the socket.
fn http(socket: &Path, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let mut stream = UnixStream::connect(socket).unwrap();
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: strata\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn image(dir: &Path) -> String {
    let mut layout = Layout::new(dir);
    layout.add_image(
        "v1",
        &[(tar(&[Entry::file("etc/hello", b"served")]), Comp::Gzip), (tar(&[Entry::file("two", b"2")]), Comp::Gzip)],
    );
    format!("oci:{}:v1", layout.dir.display())
}

#[test]
fn api_over_the_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, socket) = (tmp.path().join("root"), tmp.path().join("s.sock"));
    let reference = image(&tmp.path().join("img"));
    let daemon = Daemon::start(&root, &socket);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o600);

    assert_eq!(http(&socket, "GET", "/v1/health", None).1["status"], "ok");
    let (status, pulled) = http(&socket, "POST", "/v1/images", Some(&json!({"image": reference}).to_string()));
    assert_eq!(status, 200, "{pulled}");
    assert!(pulled["digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(http(&socket, "GET", "/v1/images", None).1.as_array().unwrap().len(), 1);
    let (status, provisioned) = http(
        &socket,
        "POST",
        "/v1/containers",
        Some(&json!({"id": "c1", "image": reference, "backend": "copy"}).to_string()),
    );
    assert_eq!(status, 200, "{provisioned}");
    let rootfs = PathBuf::from(provisioned["rootfs"].as_str().unwrap());
    assert_eq!(std::fs::read(rootfs.join("etc/hello")).unwrap(), b"served");
    assert_eq!(provisioned["config"]["config"]["Entrypoint"][0], "/bin/sh");
    let (_, list) = http(&socket, "GET", "/v1/containers", None);
    assert_eq!(list[0]["container"], "c1");
    let (status, details) = http(&socket, "GET", &format!("/v1/images/inspect?image={reference}"), None);
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["digest"], pulled["digest"]);
    assert_eq!(details["layers"].as_array().unwrap().len(), 2, "{details}");
    assert_eq!(details["entrypoint"][0], "/bin/sh", "{details}");

    // the CLI goes through the daemon with --socket, and refuses to write the root beside it
    let sock = socket.to_str().unwrap();
    let out = common::strata_ok(&root, &["--socket", sock, "provision", "c2", &reference, "--backend", "copy"]);
    assert!(Path::new(out.trim()).join("two").exists());
    // flags the daemon cannot honour are refused, not dropped, and nothing is provisioned
    for flags in [&["--tls-verify=false"][..], &["--max-layer-bytes", "10"], &["--appc-discovery-prefix", "/x"]] {
        let mut args = vec!["--socket", sock, "provision", "c4", &reference];
        args.extend_from_slice(flags);
        let o = strata(&root, &args);
        assert!(!o.status.success(), "{flags:?} through the daemon must fail");
        let message = stderr(&o);
        assert!(message.contains(flags[0].split('=').next().unwrap()) && message.contains("daemon"), "{message}");
    }
    assert!(!root.join("provisioner/containers/c4").exists());
    let o = strata(&root, &["provision", "c3", &reference, "--backend", "copy"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains(&format!("pid {}", daemon.child.id())), "{}", stderr(&o));
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", root.to_str().unwrap(), "--socket", tmp.path().join("other.sock").to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    assert!(!o.status.success(), "a second daemon on the same root must be refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("only one writer"), "{}", String::from_utf8_lossy(&o.stderr));

    // bad input: 4xx with a message, never a 500
    for (method, path, body, want) in [
        ("POST", "/v1/containers", "{not json", 400),
        ("POST", "/v1/containers", r#"{"id":"../x","image":"alpine"}"#, 400),
        ("POST", "/v1/containers", r#"{"id":"c9","image":"Bad//Ref"}"#, 400),
        ("POST", "/v1/containers", r#"{"id":"c9","image":"oci:/does/not/exist:1"}"#, 400),
        ("POST", "/v1/containers", r#"{"id":"c9","image":"x","backend":"zfs"}"#, 400),
        ("POST", "/v1/containers", r#"{"id":"c9","image":"x","surprise":1}"#, 400),
        ("GET", "/v1/images/inspect?image=oci:/nope:1", "", 404),
        ("DELETE", "/v1/images?image=oci:/nope:1", "", 404),
        ("GET", "/v1/nothing", "", 404),
    ] {
        let (status, answer) = http(&socket, method, path, Some(body));
        assert_eq!(status, want, "{method} {path} {body}: {answer}");
        assert!(answer["error"].as_str().is_some_and(|e| !e.is_empty()), "{answer}");
    }
    assert!(!root.join("provisioner/containers/c9").exists());

    // destroy, recover, gc, metrics
    assert_eq!(http(&socket, "DELETE", "/v1/containers/c1", None).1["result"], "destroyed");
    assert_eq!(http(&socket, "DELETE", "/v1/containers/c1", None).1["result"], "not found");
    assert_eq!(http(&socket, "POST", "/v1/recover", Some("{}")).0, 200);
    assert_eq!(http(&socket, "DELETE", "/v1/containers/c2", None).1["result"], "destroyed");
    let (status, gc) = http(&socket, "POST", "/v1/gc", Some("{}"));
    assert_eq!(status, 200, "{gc}");
    assert_eq!(gc["images_removed"].as_array().unwrap().len(), 1);
    let (_, metrics) = http(&socket, "GET", "/metrics", None);
    let metrics = metrics.as_str().unwrap().to_owned();
    for name in [
        "strata_pulls_total",
        "strata_pull_duration_seconds_bucket",
        "strata_pull_bytes_total",
        "strata_provisions_total{backend=\"copy\"}",
        "strata_provision_duration_seconds_bucket",
        "strata_destroys_total",
        "strata_remove_container_errors",
        "strata_remove_rootfs_errors",
        "strata_store_bytes",
        "strata_store_layers",
        "strata_store_images",
        "strata_inflight_operations",
        "strata_token_cache_hits",
        "strata_pull_failures_total{reason=\"bad_request\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    assert!(daemon.terminate().success());
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[test]
fn a_hundred_concurrent_provisions_pull_once() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Auth::None);
    let reference_dir = tmp.path().join("img");
    let layers = [tar(&[Entry::file("a", &vec![1u8; 500_000])]), tar(&[Entry::file("b", b"b")])];
    let mut layout = Layout::new(&reference_dir);
    layout.add_image("v1", &layers.iter().map(|l| (l.clone(), Comp::Gzip)).collect::<Vec<_>>());
    registry.push(&layout.dir, "v1", "app:1", None);
    let proxy = FaultProxy::start(registry.port);
    let reference = format!("{}/app:1", proxy.host());
    let (root, socket) = (tmp.path().join("root"), tmp.path().join("s.sock"));
    let _daemon = Daemon::start(&root, &socket);
    let backend = if common::is_root() { "overlay" } else { "copy" };
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..100)
            .map(|i| {
                let (socket, reference) = (&socket, &reference);
                s.spawn(move || {
                    let body = json!({"id": format!("c{i}"), "image": reference, "backend": backend}).to_string();
                    http(socket, "POST", "/v1/containers", Some(&body)).0
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let paths = proxy.faults.lock().unwrap().paths.clone();
    let manifests = paths.iter().filter(|p| p.contains("/manifests/")).count();
    assert_eq!(manifests, 1, "one manifest request for 100 provisions: {paths:?}");
    for layer in &layers {
        let digest = common::sha256_hex(&common::compress(layer, Comp::Gzip));
        assert_eq!(paths.iter().filter(|p| p.ends_with(&digest)).count(), 1);
    }
    for i in 0..100 {
        assert_eq!(http(&socket, "DELETE", &format!("/v1/containers/c{i}"), None).0, 200);
    }
    assert!(strata::mount::mounts_under(&root).unwrap().is_empty());
}

#[test]
fn sigterm_during_a_pull_leaves_a_consistent_state() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = Registry::start(Auth::None);
    let mut layout = Layout::new(&tmp.path().join("img"));
    layout.add_image(
        "v1",
        &[(tar(&[Entry::file("big", &vec![3u8; 4 << 20])]), Comp::Gzip), (tar(&[Entry::file("x", b"x")]), Comp::Gzip)],
    );
    registry.push(&layout.dir, "v1", "app:1", None);
    let proxy = FaultProxy::start(registry.port);
    proxy.faults.lock().unwrap().delay = Duration::from_millis(300);
    let reference = format!("{}/app:1", proxy.host());
    let (root, socket) = (tmp.path().join("root"), tmp.path().join("s.sock"));
    let daemon = Daemon::start(&root, &socket);
    let pulling = {
        let (socket, reference) = (socket.clone(), reference.clone());
        std::thread::spawn(move || http(&socket, "POST", "/v1/images", Some(&json!({"image": reference}).to_string())))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(daemon.terminate().success(), "SIGTERM is a clean stop");
    let _ = pulling.join();
    // restart: the state is whole (image complete or absent), staging clean, pull works
    proxy.faults.lock().unwrap().delay = Duration::ZERO;
    let daemon = Daemon::start(&root, &socket);
    let (_, images) = http(&socket, "GET", "/v1/images", None);
    for image in images.as_array().unwrap() {
        let (status, _) =
            http(&socket, "GET", &format!("/v1/images/inspect?image={}", image["reference"].as_str().unwrap()), None);
        assert_eq!(status, 200);
    }
    assert_eq!(std::fs::read_dir(root.join("store/staging")).unwrap().count(), 0);
    let (status, answer) = http(&socket, "POST", "/v1/images", Some(&json!({"image": reference}).to_string()));
    assert_eq!(status, 200, "{answer}");
    drop(daemon);
}

#[test]
fn appc_images_through_the_api() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, socket) = (tmp.path().join("root"), tmp.path().join("s.sock"));
    let manifest = r#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app",
        "labels":[{"name":"version","value":"1.0"}],"app":{"exec":["/bin/app"],"user":"0","group":"0"}}"#;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar(&[
        Entry::file("manifest", manifest.as_bytes()),
        Entry::dir("rootfs"),
        Entry::file("rootfs/hello", b"appc"),
    ]))
    .unwrap();
    let aci = tmp.path().join("app.aci");
    std::fs::write(&aci, gz.finish().unwrap()).unwrap();
    let daemon = Daemon::start(&root, &socket);

    let body = json!({"image": format!("aci:{}", aci.display())}).to_string();
    let (status, pulled) = http(&socket, "POST", "/v1/images", Some(&body));
    assert_eq!(status, 200, "{pulled}");
    assert!(pulled["digest"].as_str().unwrap().starts_with("sha512-"), "{pulled}");
    let body = json!({"id": "a1", "image": "appc:example.com/app:1.0", "backend": "copy"}).to_string();
    let (status, provisioned) = http(&socket, "POST", "/v1/containers", Some(&body));
    assert_eq!(status, 200, "{provisioned}");
    assert_eq!(std::fs::read(PathBuf::from(provisioned["rootfs"].as_str().unwrap()).join("hello")).unwrap(), b"appc");
    assert_eq!(provisioned["config"]["config"]["Entrypoint"][0], "/bin/app");
    // the daemon lists appc images as the CLI does, with their size
    let (_, list) = http(&socket, "GET", "/v1/images", None);
    let listed = list.as_array().unwrap().iter().find(|i| i["digest"] == pulled["digest"]).cloned();
    let listed = listed.unwrap_or_else(|| panic!("the appc image is not listed: {list}"));
    assert!(listed["reference"].as_str().unwrap().starts_with("appc:example.com/app"), "{listed}");
    assert!(listed["size"].as_u64().unwrap() > 0, "{listed}");
    let out = common::strata_ok(&root, &["--socket", socket.to_str().unwrap(), "images"]);
    assert!(out.contains("appc:example.com/app"), "{out}");
    // inspect answers what `strata inspect --json` prints, for appc images too
    let query = format!("/v1/images/inspect?image={}", listed["reference"].as_str().unwrap().replace('&', "%26"));
    let (status, details) = http(&socket, "GET", &query, None);
    assert_eq!(status, 200, "{details}");
    assert_eq!(details["id"], pulled["digest"], "{details}");
    assert_eq!(details["entrypoint"][0], "/bin/app", "{details}");
    assert_eq!(details["name"], "example.com/app");
    let out = common::strata_ok(&root, &["--socket", socket.to_str().unwrap(), "inspect", "appc:example.com/app:1.0"]);
    assert!(out.contains("Chain (base first):") && out.contains("example.com/app"), "{out}");
    let body = json!({"image": "appc:example.com/missing", "pull": "never"}).to_string();
    let (status, answer) = http(&socket, "POST", "/v1/images", Some(&body));
    assert_eq!(status, 404, "{answer}");
    assert_eq!(http(&socket, "DELETE", "/v1/containers/a1", None).1["result"], "destroyed");
    assert!(daemon.terminate().success());
}

#[test]
fn each_call_brings_its_platform_and_credentials() {
    let tmp = tempfile::tempdir().unwrap();
    let (root, socket) = (tmp.path().join("root"), tmp.path().join("s.sock"));
    let sock = socket.to_str().unwrap();
    let other = if common::host_arch() == "arm64" { "amd64" } else { "arm64" };
    let host_layer = tar(&[Entry::file("arch", common::host_arch().as_bytes())]);
    let other_layer = tar(&[Entry::file("arch", other.as_bytes())]);
    let mut layout = Layout::new(&tmp.path().join("multi"));
    layout.add_index(
        "v1",
        &[(other, vec![(other_layer.clone(), Comp::Gzip)]), (common::host_arch(), vec![(host_layer, Comp::Gzip)])],
    );
    let multi = format!("oci:{}:v1", layout.dir.display());
    let registry = Registry::start(Auth::Htpasswd);
    let creds = format!("{USER}:{PASSWORD}");
    let private_image = tmp.path().join("img");
    image(&private_image);
    registry.push(&private_image, "v1", "private/app:1", Some(&creds));
    let private = format!("{}/private/app:1", registry.host());
    let daemon = Daemon::start(&root, &socket);

    // The platform asked for is the one provisioned, through the API and the CLI.
    let (status, answer) = http(
        &socket,
        "POST",
        "/v1/containers",
        Some(&json!({"id": "p1", "image": multi, "backend": "copy", "platform": format!("linux/{other}")}).to_string()),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(std::fs::read(Path::new(answer["rootfs"].as_str().unwrap()).join("arch")).unwrap(), other.as_bytes());
    let out = common::strata_ok(&root, &["--socket", sock, "provision", "p2", &multi, "--backend", "copy"]);
    assert_eq!(std::fs::read(Path::new(out.trim()).join("arch")).unwrap(), common::host_arch().as_bytes());
    let (status, answer) =
        http(&socket, "POST", "/v1/images", Some(&json!({"image": multi, "platform": "linux/s390x"}).to_string()));
    assert!(status == 404 || status == 400, "{status} {answer}");
    let (status, answer) =
        http(&socket, "POST", "/v1/images", Some(&json!({"image": multi, "platform": "no-slash"}).to_string()));
    assert_eq!(status, 400, "{answer}");

    // Credentials come with the call; wrong or missing ones fail and are never echoed.
    let o = strata(&root, &["--socket", sock, "pull", &private]);
    assert!(!o.status.success(), "no credentials must fail");
    let o = strata(&root, &["--socket", sock, "pull", &private, "--creds", &format!("{USER}:not-the-password")]);
    assert!(!o.status.success(), "a wrong password must fail");
    assert!(!stderr(&o).contains("not-the-password"), "{}", stderr(&o));
    let (status, answer) = http(
        &socket,
        "POST",
        "/v1/images",
        Some(&json!({"image": private, "credentials": {"username": USER, "password": "nope-nope"}}).to_string()),
    );
    assert_eq!(status, 403, "{answer}");
    assert!(!answer.to_string().contains("nope-nope"), "{answer}");
    let (status, answer) = http(
        &socket,
        "POST",
        "/v1/images",
        Some(&json!({"image": private, "credentials": {"username": USER}}).to_string()),
    );
    assert_eq!(status, 400, "a user without a password: {answer}");
    let out = common::strata_ok(
        &root,
        &["--socket", sock, "provision", "a1", &private, "--backend", "copy", "--creds", &creds],
    );
    assert_eq!(std::fs::read(Path::new(out.trim()).join("etc/hello")).unwrap(), b"served");
    assert!(daemon.terminate().success());
}
