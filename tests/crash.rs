//! Crash safety, proven: strata is killed (SIGKILL) at named points of provision and
//! destroy, and at random moments, 50+ times each; after `strata recover` there is no
//! mount left that belongs to nothing, no directory of a destroyed or half-made
//! container, the store still serves the image, and the same id provisions again.
//! appc provisions (import, dependency discovery, whitelist render) are killed too.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{strata_ok, tar, Comp, Entry, Layout};

const TRIALS: usize = 50;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    image: String,
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = strata::mount::unmount_all_under(&self.root);
    }
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let mut layout = Layout::new(&tmp.path().join("img"));
    let base =
        tar(&[Entry::file("etc/conf", b"base"), Entry::file("gone", b"x"), Entry::dir("d"), Entry::file("d/f", b"1")]);
    let top = tar(&[Entry::whiteout("", "gone"), Entry::file("etc/conf", b"top")]);
    layout.add_image("v1", &[(base, Comp::Gzip), (top, Comp::Gzip)]);
    Env { root: tmp.path().join("root"), image: format!("oci:{}:v1", layout.dir.display()), _tmp: tmp }
}

fn backend() -> &'static str {
    if common::is_root() {
        "overlay"
    } else {
        "copy"
    }
}

fn strata_cmd(root: &Path, crash_at: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_strata"));
    cmd.arg("--root").arg(root).args(args).stdout(Stdio::null()).stderr(Stdio::null());
    match crash_at {
        Some(point) => cmd.env("STRATA_CRASH_AT", point),
        None => cmd.env_remove("STRATA_CRASH_AT"),
    };
    cmd
}

/// Runs strata and SIGKILLs it after `delay`, if still running.
fn run_and_kill(root: &Path, args: &[&str], delay: Duration) {
    let mut child = strata_cmd(root, None, args).spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let _ = child.wait();
}

/// A tiny deterministic generator, so a failing trial can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next_millis(&mut self, max: u64) -> Duration {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        Duration::from_micros((self.0 >> 33) % (max * 1000))
    }
}

/// The invariants after a recover.
fn assert_consistent(e: &Env, trial: &str) {
    let list: serde_json::Value = serde_json::from_str(&strata_ok(&e.root, &["containers", "--json"])).unwrap();
    let mut kept_rootfses = Vec::new();
    for c in list.as_array().unwrap() {
        assert_eq!(c["destroying"], false, "{trial}: an interrupted destroy survived recover");
        let rootfses = c["rootfses"].as_array().unwrap();
        assert!(!rootfses.is_empty(), "{trial}: a container dir without a rootfs survived: {c}");
        for r in rootfses {
            assert_eq!(r["record"]["state"], "ready", "{trial}: a half-made rootfs survived: {r}");
            let path = PathBuf::from(r["path"].as_str().unwrap());
            assert_eq!(std::fs::read(path.join("etc/conf")).unwrap(), b"top", "{trial}: kept rootfs is broken");
            assert!(!path.join("gone").exists());
            kept_rootfses.push(path);
        }
    }
    let mut mounts = strata::mount::mounts_under(&e.root).unwrap();
    mounts.sort();
    if backend() == "overlay" {
        kept_rootfses.sort();
        assert_eq!(mounts, kept_rootfses, "{trial}: mounts and kept rootfses differ");
    } else {
        assert!(mounts.is_empty());
    }
    // Every directory under containers/ belongs to a listed container.
    let listed: Vec<String> =
        list.as_array().unwrap().iter().map(|c| c["container"].as_str().unwrap().to_owned()).collect();
    for entry in std::fs::read_dir(e.root.join("provisioner/containers")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(listed.contains(&name), "{trial}: stray container dir {name}");
    }
    // The store still serves the image, complete, and staging is clean.
    strata_ok(&e.root, &["inspect", &e.image]);
    strata_ok(&e.root, &["pull", "--pull", "never", &e.image]);
    assert_eq!(std::fs::read_dir(e.root.join("store/staging")).unwrap().count(), 0, "{trial}: staging not cleared");
}

#[test]
fn killed_provisions_recover_cleanly() {
    let e = env();
    strata_ok(&e.root, &["pull", &e.image]);
    let points = ["provision:mounted", "provision:dirs", "provision:mounted", "provision:ready"];
    let mut rng = Lcg(7);
    for trial in 0..TRIALS {
        let id = format!("c{}", trial % 3);
        let label = if trial % 5 == 4 {
            let delay = rng.next_millis(15);
            run_and_kill(&e.root, &["provision", &id, &e.image, "--backend", backend()], delay);
            format!("trial {trial}: provision killed after {delay:?}")
        } else {
            let point = points[trial % points.len()];
            let status = strata_cmd(&e.root, Some(point), &["provision", &id, &e.image, "--backend", backend()])
                .status()
                .unwrap();
            assert!(!status.success(), "crash point {point} was not reached");
            format!("trial {trial}: provision killed at {point}")
        };
        strata_ok(&e.root, &["recover"]);
        assert_consistent(&e, &label);
        // the same id provisions again
        let out = strata_ok(&e.root, &["provision", &id, &e.image, "--backend", backend()]);
        assert!(Path::new(out.trim()).join("etc/conf").exists(), "{label}");
        if trial % 2 == 0 {
            strata_ok(&e.root, &["destroy", &id]);
        }
    }
}

#[test]
fn killed_destroys_recover_cleanly() {
    let e = env();
    strata_ok(&e.root, &["pull", &e.image]);
    let points = ["destroy:marked", "destroy:unmounted", "destroy:rootfs", "destroy:done"];
    let mut rng = Lcg(11);
    for trial in 0..TRIALS {
        let id = format!("d{trial}");
        strata_ok(&e.root, &["provision", &id, &e.image, "--backend", backend()]);
        strata_ok(&e.root, &["provision", &id, &e.image, "--backend", backend()]);
        let nested = trial % 4 == 1;
        if nested {
            strata_ok(&e.root, &["provision", "kid", &e.image, "--backend", backend(), "--parent", &id]);
        }
        let label = if trial % 5 == 4 {
            let delay = rng.next_millis(10);
            run_and_kill(&e.root, &["destroy", &id], delay);
            format!("trial {trial}: destroy killed after {delay:?}")
        } else {
            let point = points[trial % points.len()];
            let status = strata_cmd(&e.root, Some(point), &["destroy", &id]).status().unwrap();
            assert!(!status.success(), "crash point {point} was not reached");
            let dir = e.root.join("provisioner/containers").join(&id);
            strata_ok(&e.root, &["recover"]);
            assert!(!dir.exists(), "trial {trial}: recover did not finish the destroy interrupted at {point}");
            format!("trial {trial}: destroy killed at {point}")
        };
        strata_ok(&e.root, &["recover"]);
        assert_consistent(&e, &label);
        // a destroy that was killed before it marked the container leaves it intact; either way it can go now
        strata_ok(&e.root, &["destroy", &id]);
        strata_ok(&e.root, &["provision", &id, &e.image, "--backend", backend()]);
        strata_ok(&e.root, &["destroy", &id]);
    }
    assert!(strata::mount::mounts_under(&e.root).unwrap().is_empty());
}

#[test]
fn killed_pulls_leave_no_half_layer() {
    let e = env();
    let mut rng = Lcg(3);
    for trial in 0..20 {
        let root = e.root.join(format!("pull{trial}"));
        let delay = rng.next_millis(8);
        run_and_kill(&root, &["pull", &e.image], delay);
        strata_ok(&root, &["recover"]);
        assert_eq!(std::fs::read_dir(root.join("store/staging")).unwrap().count(), 0);
        // every layer dir present is complete: it has its record and its tree
        if let Ok(layers) = std::fs::read_dir(root.join("store/layers/sha256")) {
            for layer in layers {
                let layer = layer.unwrap().path();
                assert!(
                    layer.join("layer.json").is_file() && layer.join("rootfs").is_dir(),
                    "trial {trial}: half layer {}",
                    layer.display()
                );
            }
        }
        strata_ok(&root, &["pull", &e.image]);
        strata_ok(&root, &["inspect", &e.image]);
    }
}

/// An appc image with a dependency and a pathWhitelist (so import, dependency fetch
/// and the whitelist render all run), published for discovery from a local directory.
fn appc_site(dir: &Path) -> String {
    let (os, arch) = strata::store::appc::host_labels();
    let manifest = |name: &str, extra: &str| {
        format!(
            r#"{{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/{name}",
            "labels":[{{"name":"version","value":"1"}},{{"name":"os","value":"{os}"}},{{"name":"arch","value":"{arch}"}}]{extra}}}"#
        )
    };
    let deps = r#","dependencies":[{"imageName":"example.com/base","labels":[{"name":"version","value":"1"}]}],
        "pathWhitelist":["/etc/conf","/d/f","/app"]"#;
    let many: Vec<Entry> = (0..300).map(|i| Entry::file(&format!("rootfs/junk/{i}"), &[7u8; 4096])).collect();
    for (name, extra, mut entries) in [
        ("base", String::new(), vec![Entry::file("rootfs/etc/conf", b"top"), Entry::file("rootfs/d/f", b"1")]),
        ("app", deps.to_owned(), vec![Entry::dir("rootfs"), Entry::file("rootfs/app", b"app")]),
    ] {
        entries.insert(0, Entry::file("manifest", manifest(name, &extra).as_bytes()));
        entries.extend(many.iter().cloned());
        let path = dir.join(format!("example.com/{name}-1-{os}-{arch}.aci"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, common::compress(&tar(&entries), Comp::Gzip)).unwrap();
    }
    format!("{}/", dir.display())
}

#[test]
fn killed_appc_provisions_leave_no_half_image() {
    let e = env();
    let prefix = appc_site(&e.root.with_file_name("site"));
    let args =
        ["provision", "c1", "appc:example.com/app:1", "--backend", backend(), "--appc-discovery-prefix", &prefix];
    // Kill moments spread over a whole uninterrupted run (import, fetch, render, mount).
    let started = std::time::Instant::now();
    strata_ok(&e.root.join("appc-timing"), &args);
    let span = u64::try_from(started.elapsed().as_millis()).unwrap().max(5) * 6 / 5;
    let mut rng = Lcg(11);
    for trial in 0..20 {
        let root = e.root.join(format!("appc{trial}"));
        run_and_kill(&root, &args, rng.next_millis(span));
        let report: serde_json::Value = serde_json::from_str(&strata_ok(&root, &["--json", "recover"])).unwrap();
        assert_eq!(report["appc_skipped"], serde_json::json!([]), "trial {trial}: a half image is visible");
        assert_eq!(std::fs::read_dir(root.join("store/staging")).unwrap().count(), 0, "trial {trial}");
        if let Ok(rendered) = std::fs::read_dir(root.join("store/appc/rendered")) {
            for r in rendered {
                assert!(r.unwrap().path().join("rootfs/app").is_file(), "trial {trial}: half render");
            }
        }
        strata_ok(&root, &["destroy", "c1"]);
        let rootfs = strata_ok(&root, &args);
        let rootfs = Path::new(rootfs.trim());
        assert_eq!(std::fs::read(rootfs.join("etc/conf")).unwrap(), b"top", "trial {trial}");
        assert!(rootfs.join("app").is_file() && !rootfs.join("junk").exists(), "trial {trial}");
        strata_ok(&root, &["destroy", "c1"]);
        assert!(strata::mount::mounts_under(&root).unwrap().is_empty(), "trial {trial}");
    }
    strata_ok(&e.root.join("appc-timing"), &["destroy", "c1"]);
}

/// strata with a stand-in boot id (a "reboot" is a new id; the page cache is not
/// really lost, so this checks the bookkeeping, not the disk).
fn strata_boot(root: &Path, boot: &str, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("--root")
        .arg(root)
        .args(args)
        .env("STRATA_BOOT_ID", boot)
        .env_remove("STRATA_CRASH_AT")
        .output()
        .unwrap();
    assert!(o.status.success(), "strata {args:?} ({boot}): {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The boot a stored layer was written in (a layer fetched again has the new one).
fn written_in(layer: &Path) -> String {
    let meta: serde_json::Value = serde_json::from_slice(&std::fs::read(layer.join("layer.json")).unwrap()).unwrap();
    meta["written"]["boot_id"].as_str().unwrap_or_default().to_owned()
}

/// Layers are committed without waiting for the disk; after a power cut (a new boot
/// id) every layer no flush covered is fetched again, a flushed one is trusted, and
/// recover removes a rootfs whose layer had to go instead of mounting a torn tree.
#[test]
fn layers_unflushed_at_a_power_cut_are_fetched_again() {
    let e = env();
    let root = &e.root;
    strata_boot(root, "boot-1", &["pull", &e.image]);
    let layers = root.join("store/layers/sha256");
    let base =
        std::fs::read_dir(&layers).unwrap().map(|d| d.unwrap().path()).find(|p| p.join("rootfs/d/f").exists()).unwrap();
    assert_eq!(written_in(&base), "boot-1");
    strata_boot(root, "boot-1", &["pull", &e.image]);
    assert_eq!(written_in(&base), "boot-1", "same boot: trusted");

    // Reboot without any flush: fetched again.
    strata_boot(root, "boot-2", &["pull", &e.image]);
    assert_eq!(written_in(&base), "boot-2", "a layer no flush covered was trusted after a reboot");
    assert_eq!(std::fs::read(base.join("rootfs/d/f")).unwrap(), b"1");
    // recover flushes; after the next reboot the layer stays.
    strata_boot(root, "boot-2", &["recover"]);
    strata_boot(root, "boot-3", &["pull", &e.image]);
    assert_eq!(written_in(&base), "boot-2", "a flushed layer was fetched again");

    // A rootfs on a layer torn by the cut is removed by recover, a sound one remounted.
    let mut layout = Layout::new(&e.root.with_file_name("img2"));
    layout.add_image("v2", &[(tar(&[Entry::file("etc/conf", b"top")]), Comp::Gzip)]);
    let second_image = format!("oci:{}:v2", layout.dir.display());
    strata_boot(root, "boot-3", &["provision", "sound", &e.image, "--backend", backend()]);
    strata_boot(root, "boot-3", &["provision", "torn", &second_image, "--backend", backend()]);
    strata::mount::unmount_all_under(root).unwrap(); // the reboot
    let report: serde_json::Value = serde_json::from_str(&strata_boot(root, "boot-4", &["--json", "recover"])).unwrap();
    assert_eq!(report["torn_layers_dropped"], 1, "{report}");
    if backend() == "overlay" {
        assert_eq!(report["unmountable_rootfses_removed"], 1, "{report}");
        assert_eq!(report["remounted"], 1, "{report}");
    }
    let sound = strata_boot(root, "boot-4", &["provision", "again", &e.image, "--backend", backend()]);
    assert_eq!(std::fs::read(Path::new(sound.trim()).join("etc/conf")).unwrap(), b"top");
    strata_boot(root, "boot-4", &["provision", "torn2", &second_image, "--backend", backend()]);
    for c in ["sound", "torn", "again", "torn2"] {
        strata_boot(root, "boot-4", &["destroy", c]);
    }
}
