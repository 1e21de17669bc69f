//! OCI runtime bundles: a `config.json` (OCI runtime spec 1.0) that `crun run` and
//! `runc run` accept as is, for a provisioned rootfs and its image config.
//!
//! The process comes from the image (entrypoint + cmd, env, working dir, user); the
//! rest is the usual container default: fresh pid, ipc, uts, mount, network and cgroup
//! namespaces, /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, a read-only /sys, Docker's
//! default capabilities, masked and read-only kernel paths, no new privileges.
//! User names are looked up in the rootfs' /etc/passwd and /etc/group, opened inside
//! the rootfs (a symlink there cannot point the lookup at the host), bounded in size.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::image::ImageConfig;
use crate::sys::fs as sysfs;

/// The OCI runtime spec version written.
pub const OCI_VERSION: &str = "1.0.2";
/// Largest /etc/passwd or /etc/group read (CVE-2026-47262: unbounded parsing).
const MAX_ID_FILE: u64 = 4 * 1024 * 1024;
/// Used when the image sets no PATH.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's default capability set.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Why a bundle could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The image names no program.
    #[error("the image has neither an entrypoint nor a cmd: nothing to run")]
    NoCommand,
    /// The image's user does not resolve.
    #[error("user '{0}' of the image is not in the rootfs' /etc/passwd or /etc/group")]
    UnknownUser(String),
    /// Writing the bundle failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Builds the runtime config for `rootfs` (an absolute path) from the image config.
pub fn runtime_config(rootfs: &Path, hostname: &str, image: &ImageConfig) -> Result<Value, BundleError> {
    let c = &image.config;
    let args: Vec<&String> = c.entrypoint.iter().chain(c.cmd.iter()).collect();
    if args.is_empty() {
        return Err(BundleError::NoCommand);
    }
    let mut env = c.env.clone();
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_owned());
    }
    let (uid, gid, additional) = resolve_user(rootfs, &c.user)?;
    let cwd = if c.working_dir.is_empty() { "/".to_owned() } else { c.working_dir.clone() };
    let caps = CAPABILITIES.to_vec();
    Ok(json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": false,
            "user": {"uid": uid, "gid": gid, "additionalGids": additional},
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": rootfs, "readonly": false},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}, {"type": "cgroup"}],
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                            "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    }))
}

/// Writes `dir/config.json` (creating `dir`).
pub fn write(dir: &Path, config: &Value) -> Result<(), BundleError> {
    let err = |path: &Path| {
        let path = path.display().to_string();
        move |source| BundleError::Write { path, source }
    };
    std::fs::create_dir_all(dir).map_err(err(dir))?;
    let path = dir.join("config.json");
    let bytes = serde_json::to_vec_pretty(config)
        .map_err(|e| BundleError::Write { path: path.display().to_string(), source: e.into() })?;
    std::fs::write(&path, bytes).map_err(err(&path))
}

/// `USER` → (uid, gid, additional gids): numbers as they are, names looked up.
fn resolve_user(rootfs: &Path, user: &str) -> Result<(u32, u32, Vec<u32>), BundleError> {
    if user.is_empty() {
        return Ok((0, 0, Vec::new()));
    }
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_root(rootfs, "etc/passwd");
    let (uid, primary_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, lookup(&passwd, 2, |f| f[2] == user_part).and_then(|f| f[3].parse().ok()).unwrap_or(uid)),
        Err(_) => {
            let fields =
                lookup(&passwd, 0, |f| f[0] == user_part).ok_or_else(|| BundleError::UnknownUser(user.to_owned()))?;
            let uid = fields[2].parse().map_err(|_| BundleError::UnknownUser(user.to_owned()))?;
            let gid = fields[3].parse().map_err(|_| BundleError::UnknownUser(user.to_owned()))?;
            (uid, gid)
        }
    };
    let gid = match group_part {
        None => primary_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group = read_in_root(rootfs, "etc/group");
                let fields =
                    lookup(&group, 0, |f| f[0] == g).ok_or_else(|| BundleError::UnknownUser(user.to_owned()))?;
                fields[2].parse().map_err(|_| BundleError::UnknownUser(user.to_owned()))?
            }
        },
    };
    Ok((uid, gid, Vec::new()))
}

fn lookup<'a>(text: &'a str, _key: usize, matches: impl Fn(&[&'a str]) -> bool) -> Option<Vec<&'a str>> {
    text.lines().map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 4).find(|f| matches(f))
}

/// Reads a small file of the rootfs, resolved inside it; empty if absent or unreadable.
fn read_in_root(rootfs: &Path, rel: &str) -> String {
    let read = || -> std::io::Result<String> {
        let root = sysfs::open_dir(rootfs)?;
        let rel = Path::new(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else { return Ok(String::new()) };
        let dir = sysfs::resolve_dir_in_root(std::os::fd::AsFd::as_fd(&root), parent, true)?;
        let file = sysfs::open_file_at(std::os::fd::AsFd::as_fd(&dir), name)?;
        let mut text = String::new();
        file.take(MAX_ID_FILE).read_to_string(&mut text)?;
        Ok(text)
    };
    read().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_image() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let mut image = ImageConfig::default();
        image.config.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        image.config.cmd = vec!["echo hi".into()];
        image.config.user = "app:staff".into();
        let c = runtime_config(dir.path(), "c1", &image).unwrap();
        assert_eq!(c["process"]["args"], json!(["/bin/sh", "-c", "echo hi"]));
        assert_eq!(c["process"]["user"]["uid"], 1000);
        assert_eq!(c["process"]["user"]["gid"], 50);
        assert!(c["process"]["env"][0].as_str().unwrap().starts_with("PATH="));
        image.config.user = "app".into();
        assert_eq!(runtime_config(dir.path(), "c1", &image).unwrap()["process"]["user"]["gid"], 1001);
        image.config.user = "nobody".into();
        assert!(runtime_config(dir.path(), "c1", &image).is_err());
        image.config.user = "42:43".into();
        assert_eq!(runtime_config(dir.path(), "c1", &image).unwrap()["process"]["user"]["gid"], 43);
        image.config.entrypoint.clear();
        image.config.cmd.clear();
        assert!(matches!(runtime_config(dir.path(), "c1", &image), Err(BundleError::NoCommand)));
    }

    #[test]
    fn passwd_symlink_cannot_reach_the_host() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("etc/passwd")).unwrap();
        // /etc/passwd resolved inside the rootfs is the link itself pointing at rootfs/etc/passwd: a loop, not the host's
        let mut image = ImageConfig::default();
        image.config.cmd = vec!["x".into()];
        image.config.user = "root".into();
        assert!(runtime_config(dir.path(), "c", &image).is_err(), "the host's /etc/passwd must not be read");
    }
}
