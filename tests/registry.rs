//! Pulls from real registries (Debian's docker-registry on 127.0.0.1), images pushed
//! with real skopeo: anonymous, basic auth, token auth with a token server that signs
//! real JWTs, token reuse and refresh, bad credentials, unknown names, mirrors, and a
//! fault-injecting proxy (503s, 429s, truncated and corrupted bodies, slowness).

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::registry::{Auth, FaultProxy, Registry, TokenServer, PASSWORD, USER};
use common::{layer_rootfs, stderr, strata, strata_ok, tar, Comp, Entry, Layout};

struct Env {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    root: PathBuf,
    layout: PathBuf,
    layers: Vec<Vec<u8>>,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().to_owned();
    let layers = vec![
        tar(&[
            Entry::file("etc/os", b"registry test"),
            Entry::file("gone", b"x"),
            Entry::file("big", &vec![7u8; 3 << 20]),
        ]),
        tar(&[Entry::whiteout("", "gone"), Entry::file("top", b"top layer")]),
        tar(&[Entry::file("third", b"3")]),
    ];
    let mut layout = Layout::new(&work.join("layout"));
    layout.add_image("v1", &layers.iter().map(|l| (l.clone(), Comp::Gzip)).collect::<Vec<_>>());
    Env { root: work.join("root"), layout: layout.dir.clone(), work, layers, _tmp: tmp }
}

fn config_file(e: &Env, text: &str) -> String {
    let path = e.work.join(format!("strata-{}.toml", common::sha256_hex(text.as_bytes())));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn assert_pulled(e: &Env, root: &Path) {
    assert_eq!(std::fs::read(layer_rootfs(root, &e.layers[0]).join("etc/os")).unwrap(), b"registry test");
    assert!(layer_rootfs(root, &e.layers[2]).join("third").exists());
}

fn nothing_stored(root: &Path) {
    let layers = root.join("store/layers/sha256");
    let count = std::fs::read_dir(&layers).map(|d| d.count()).unwrap_or(0);
    assert_eq!(count, 0, "no layer may be stored");
    assert_eq!(strata_ok(root, &["images", "--json"]).trim(), "[]");
    assert_eq!(std::fs::read_dir(root.join("store/staging")).unwrap().count(), 0);
}

#[test]
fn anonymous_pull_provision_and_clear_errors() {
    let e = env();
    let registry = Registry::start(Auth::None);
    registry.push(&e.layout, "v1", "team/app:1.0", None);
    let reference = format!("{}/team/app:1.0", registry.host());
    let digest = strata_ok(&e.root, &["pull", &reference]);
    assert!(digest.trim().starts_with("sha256:"));
    assert_pulled(&e, &e.root);
    // docker:// form, by digest, and provisioning straight from the registry
    strata_ok(&e.root, &["pull", &format!("docker://{}/team/app@{}", registry.host(), digest.trim())]);
    let rootfs = strata_ok(&e.root, &["provision", "c1", &reference, "--backend", "copy"]);
    let rootfs = PathBuf::from(rootfs.trim());
    assert_eq!(std::fs::read(rootfs.join("top")).unwrap(), b"top layer");
    assert!(!rootfs.join("gone").exists());
    strata_ok(&e.root, &["destroy", "c1"]);
    // --pull always refetches the manifest, reuses layers
    strata_ok(&e.root, &["pull", "--pull", "always", &reference]);

    let root2 = e.work.join("root2");
    let o = strata(&root2, &["pull", &format!("{}/team/app:nope", registry.host())]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = strata(&root2, &["pull", &format!("{}/no/such-repo:1", registry.host())]);
    assert!(stderr(&o).contains("not found"), "{}", stderr(&o));
    let o = strata(&root2, &["pull", &format!("127.0.0.1:{}/x:1", common::registry::free_port())]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    nothing_stored(&root2);
}

#[test]
fn platform_choice_from_a_pushed_index() {
    let e = env();
    let registry = Registry::start(Auth::None);
    let amd = tar(&[Entry::file("arch", b"amd64")]);
    let arm = tar(&[Entry::file("arch", b"arm64")]);
    let mut layout = Layout::new(&e.work.join("multi"));
    layout.add_index("v1", &[("arm64", vec![(arm.clone(), Comp::Gzip)]), ("amd64", vec![(amd.clone(), Comp::Gzip)])]);
    registry.push_all(&layout.dir, "v1", "multi:v1");
    strata_ok(&e.root, &["pull", "--platform", "linux/arm64", &format!("{}/multi:v1", registry.host())]);
    assert!(layer_rootfs(&e.root, &arm).join("arch").exists());
    assert!(!layer_rootfs(&e.root, &amd).exists());
}

#[test]
fn basic_auth_registry() {
    let e = env();
    let registry = Registry::start(Auth::Htpasswd);
    registry.push(&e.layout, "v1", "private/app:1", Some(&format!("{USER}:{PASSWORD}")));
    let reference = format!("{}/private/app:1", registry.host());

    let o = strata(&e.root, &["pull", &reference]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("wants a user and password"), "{}", stderr(&o));
    let o = strata(&e.root, &["pull", "--creds", &format!("{USER}:wrong"), &reference]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("authentication to") && !stderr(&o).contains("wrong"), "{}", stderr(&o));
    nothing_stored(&e.root);

    strata_ok(&e.root, &["pull", "--creds", &format!("{USER}:{PASSWORD}"), &reference]);
    assert_pulled(&e, &e.root);

    // from Docker's config.json
    let docker = e.work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("{USER}:{PASSWORD}"));
    std::fs::write(docker.join("config.json"), format!(r#"{{"auths":{{"{}":{{"auth":"{auth}"}}}}}}"#, registry.host()))
        .unwrap();
    let root2 = e.work.join("root2");
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", root2.to_str().unwrap(), "pull", &reference])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // from the config file, and a password from the environment with --creds USER
    let cfg = config_file(
        &e,
        &format!("[registries.\"{}\"]\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n", registry.host()),
    );
    strata_ok(&e.work.join("root3"), &["--config", &cfg, "pull", &reference]);
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", e.work.join("root4").to_str().unwrap(), "pull", "--creds", USER, &reference])
        .env("STRATA_REGISTRY_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn token_auth_registry() {
    let e = env();
    let tokens = TokenServer::start();
    let registry = Registry::start(Auth::Token(std::sync::Arc::clone(&tokens)));
    let creds = format!("{USER}:{PASSWORD}");
    registry.push(&e.layout, "v1", "secure/app:1", Some(&creds));
    let reference = format!("{}/secure/app:1", registry.host());

    // anonymous, not allowed: a clear error; wrong password: a clear error
    let o = strata(&e.root, &["pull", &reference]);
    assert!(stderr(&o).contains("authentication to"), "{}", stderr(&o));
    let o = strata(&e.root, &["pull", "--creds", &format!("{USER}:nope"), &reference]);
    assert!(stderr(&o).contains("refused the credentials"), "{}", stderr(&o));
    nothing_stored(&e.root);

    // one token serves the manifest, the config and all three blobs
    let before = tokens.issued.load(Ordering::SeqCst);
    strata_ok(&e.root, &["pull", "--creds", &creds, &reference]);
    assert_pulled(&e, &e.root);
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 1, "one token for the whole pull");

    // anonymous pulls with anonymous tokens when the server allows them
    tokens.anonymous_pull.store(true, Ordering::SeqCst);
    strata_ok(&e.work.join("anon"), &["pull", &reference]);

    // Docker's identitytoken: exchanged with an OAuth2 refresh-token POST
    let docker = e.work.join("docker");
    std::fs::create_dir_all(&docker).unwrap();
    std::fs::write(
        docker.join("config.json"),
        format!(r#"{{"auths":{{"{}":{{"identitytoken":"{}"}}}}}}"#, registry.host(), common::registry::REFRESH_TOKEN),
    )
    .unwrap();
    tokens.anonymous_pull.store(false, Ordering::SeqCst);
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["--root", e.work.join("oauth").to_str().unwrap(), "pull", &reference])
        .env("DOCKER_CONFIG", &docker)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(tokens.refreshes.load(Ordering::SeqCst), 1);

    // a token the registry refuses is replaced once, transparently
    tokens.bad_tokens.store(1, Ordering::SeqCst);
    let before = tokens.issued.load(Ordering::SeqCst);
    strata_ok(&e.work.join("retry"), &["pull", "--creds", &creds, &reference]);
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 2, "refused token replaced once");
    tokens.stop();
}

#[test]
fn token_cache_expiry_and_refresh_in_process() {
    let e = env();
    let tokens = TokenServer::start();
    let registry = Registry::start(Auth::Token(std::sync::Arc::clone(&tokens)));
    let creds = format!("{USER}:{PASSWORD}");
    registry.push(&e.layout, "v1", "secure/app:1", Some(&creds));
    *tokens.lifetime.lock().unwrap() = 2;
    let options = {
        let mut o = strata::registry::RegistryOptions::default();
        o.call_credentials = Some(strata::registry::Credentials::parse_user_password(&creds).unwrap());
        o
    };
    let client = strata::registry::Registry::new(options);
    let name = strata::reference::DockerRef::parse(&format!("{}/secure/app:1", registry.host())).unwrap();
    let session = client.session(&name).unwrap();
    let before = tokens.issued.load(Ordering::SeqCst);
    session.manifest("1").unwrap();
    session.manifest("1").unwrap();
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 1, "cached token reused");
    let (hits, misses, _) = client.tokens().stats();
    assert!(hits >= 1 && misses >= 1);
    std::thread::sleep(Duration::from_millis(2200));
    session.manifest("1").unwrap();
    assert_eq!(tokens.issued.load(Ordering::SeqCst) - before, 2, "expired token refreshed");
    tokens.stop();
}

#[test]
fn faults_are_survived_or_reported_with_nothing_stored() {
    let e = env();
    let registry = Registry::start(Auth::None);
    registry.push(&e.layout, "v1", "app:1", None);
    let proxy = FaultProxy::start(registry.port);
    let reference = format!("{}/app:1", proxy.host());
    let fresh = |name: &str| e.work.join(name);

    // transient 503s and 429s (Retry-After honoured) are retried
    proxy.faults.lock().unwrap().unavailable = 2;
    proxy.faults.lock().unwrap().too_many = 1;
    strata_ok(&fresh("r503"), &["pull", &reference]);
    assert_pulled(&e, &fresh("r503"));

    // truncated blob bodies resume with Range
    proxy.faults.lock().unwrap().truncate_blobs = 2;
    strata_ok(&fresh("rtrunc"), &["pull", &reference]);
    assert_pulled(&e, &fresh("rtrunc"));

    // slow responses
    proxy.faults.lock().unwrap().delay = Duration::from_millis(150);
    strata_ok(&fresh("rslow"), &["pull", &reference]);
    proxy.faults.lock().unwrap().delay = Duration::ZERO;

    // wrong bytes: a digest error, nothing stored
    proxy.faults.lock().unwrap().corrupt_blobs = true;
    let o = strata(&fresh("rbad"), &["pull", &reference]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.contains("failed to unpack layer sha256:") && err.contains("checksum"), "{err}");
    // The corrupted layer is not stored and no image is recorded; the intact small
    // layers are verified content and stay cached for the next try.
    assert!(!layer_rootfs(&fresh("rbad"), &e.layers[0]).exists());
    assert_eq!(strata_ok(&fresh("rbad"), &["images", "--json"]).trim(), "[]");
    assert_eq!(std::fs::read_dir(fresh("rbad").join("store/staging")).unwrap().count(), 0);
    proxy.faults.lock().unwrap().corrupt_blobs = false;

    // a registry that stays down: a clear error after the retries, nothing stored
    proxy.faults.lock().unwrap().unavailable = 1000;
    let o = strata(&fresh("rdown"), &["pull", &reference]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("503"), "{}", stderr(&o));
    nothing_stored(&fresh("rdown"));
}

#[test]
fn mirrors_are_tried_in_order_then_the_origin() {
    let e = env();
    let origin = Registry::start(Auth::None);
    origin.push(&e.layout, "v1", "app:1", None);
    let empty_mirror = Registry::start(Auth::None);
    let dead = format!("127.0.0.1:{}", common::registry::free_port());
    let cfg = config_file(
        &e,
        &format!("[registries.\"{}\"]\nmirrors = [\"{dead}\", \"{}\"]\n", origin.host(), empty_mirror.host()),
    );
    strata_ok(&e.root, &["--config", &cfg, "pull", &format!("{}/app:1", origin.host())]);
    assert_pulled(&e, &e.root);

    // a mirror that has the image serves it even when the origin is gone
    let mirror = Registry::start(Auth::None);
    mirror.push(&e.layout, "v1", "app:1", None);
    let gone = format!("127.0.0.1:{}", common::registry::free_port());
    let cfg = config_file(&e, &format!("[registries.\"{gone}\"]\nmirrors = [\"{}\"]\n", mirror.host()));
    strata_ok(&e.work.join("root2"), &["--config", &cfg, "pull", &format!("{gone}/app:1")]);
    assert_pulled(&e, &e.work.join("root2"));
}

#[test]
fn concurrent_pulls_share_layers_across_processes() {
    let e = env();
    let registry = Registry::start(Auth::None);
    registry.push(&e.layout, "v1", "app:1", None);
    let proxy = FaultProxy::start(registry.port);
    let reference = format!("{}/app:1", proxy.host());
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_strata"))
                .args(["--root", e.root.to_str().unwrap(), "pull", &reference])
                .output()
        })
        .collect();
    for c in children {
        let c = c.unwrap();
        assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
    }
    assert_pulled(&e, &e.root);
    // each layer blob was downloaded once, whichever process got there first
    let paths = proxy.faults.lock().unwrap().paths.clone();
    for layer in &e.layers {
        let blob = common::compress(layer, Comp::Gzip);
        let digest = format!("sha256:{}", common::sha256_hex(&blob));
        let gets = paths.iter().filter(|p| p.ends_with(&digest)).count();
        assert_eq!(gets, 1, "layer {digest} fetched {gets} times");
    }
}

#[test]
fn redirects_to_blob_storage_drop_the_registry_credentials() {
    let e = env();
    let registry = Registry::start(Auth::Htpasswd);
    let creds = format!("{USER}:{PASSWORD}");
    registry.push(&e.layout, "v1", "app:1", Some(&creds));
    // "blob storage": another host that authenticates the request by itself
    let storage = FaultProxy::start(registry.port);
    let basic = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &creds));
    storage.faults.lock().unwrap().upstream_authorization = Some(basic);
    let front = FaultProxy::start(registry.port);
    front.faults.lock().unwrap().redirect_blobs_to = Some(format!("http://{}", storage.host()));
    strata_ok(&e.root, &["pull", "--creds", &creds, &format!("{}/app:1", front.host())]);
    assert_pulled(&e, &e.root);
    let storage_faults = storage.faults.lock().unwrap();
    assert!(storage_faults.requests >= 4, "blobs came from the storage host");
    assert_eq!(storage_faults.with_authorization, 0, "the registry's Authorization never reaches another host");
    assert!(front.faults.lock().unwrap().with_authorization > 0);
}

#[test]
fn tls_registry_needs_its_ca_unless_told_insecure() {
    let e = env();
    let certs = e.work.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let registry = Registry::start(Auth::Tls(certs.clone()));
    registry.push(&e.layout, "v1", "app:1", None);
    let reference = format!("{}/app:1", registry.host());
    // loopback is insecure by default; say it is not, so TLS is verified
    let strict = config_file(&e, &format!("[registries.\"{}\"]\ninsecure = false\n", registry.host()));
    let o = strata(&e.root, &["--config", &strict, "pull", &reference]);
    assert!(!o.status.success(), "an unknown CA must be refused");
    assert!(stderr(&o).contains("cannot reach"), "{}", stderr(&o));
    nothing_stored(&e.root);
    let with_ca = config_file(
        &e,
        &format!(
            "[registries.\"{}\"]\ninsecure = false\nca_file = \"{}\"\n",
            registry.host(),
            certs.join("ca.pem").display()
        ),
    );
    strata_ok(&e.root, &["--config", &with_ca, "pull", &reference]);
    assert_pulled(&e, &e.root);
    // or --tls-verify=false for one call
    strata_ok(&e.work.join("root2"), &["--config", &strict, "pull", "--tls-verify=false", &reference]);
}

#[test]
fn schema1_manifests_as_mesos_pulled_them() {
    let e = env();
    let registry = Registry::start_with(Auth::None, "compatibility:\n  schema1:\n    enabled: true\n");
    registry.push_schema1(&e.layout, "v1", "old/app:1");
    let reference = format!("{}/old/app:1", registry.host());
    strata_ok(&e.root, &["pull", &reference]);
    assert_pulled(&e, &e.root);
    let inspect: serde_json::Value =
        serde_json::from_str(&strata_ok(&e.root, &["inspect", "--json", &reference])).unwrap();
    let layers = inspect["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3, "base-first, duplicates dropped");
    assert_eq!(layers[0]["diff_id"], format!("sha256:{}", common::sha256_hex(&e.layers[0])));
    let rootfs = PathBuf::from(strata_ok(&e.root, &["provision", "c", &reference, "--backend", "copy"]).trim());
    assert_eq!(std::fs::read(rootfs.join("top")).unwrap(), b"top layer");
    assert!(!rootfs.join("gone").exists());
}
