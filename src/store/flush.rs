//! Deferred flushing of layers, with torn layers detected after a power cut.
//!
//! A layer is committed by a rename as soon as it is unpacked, without waiting for the
//! disk: killing strata at any moment cannot tear it (the page cache survives a
//! process), and a pull does not wait for a `syncfs` that also drains every other
//! writer's dirty data on the file system. What a power cut could tear is caught
//! instead:
//!
//! - each such layer's `layer.json` carries a [`WriteStamp`]: the boot it was written
//!   in and a monotonic time taken after its last data write;
//! - a flush (`syncfs`) records, durably, the time it started for the current boot in
//!   `flushed.json`; every layer stamped before that time is on disk;
//! - a layer stamped in an earlier boot that no flush covers may be torn: it is
//!   treated as absent (removed and fetched again).
//!
//! Flushes happen when strata next touches the store (pulls, provisions: only for
//! layers older than [`QUIET_AGE`], whose data the kernel has usually written back
//! already, so the `syncfs` is cheap), in `recover`, and every 30 s in the daemon.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sys::fs as sysfs;
use crate::sys::{Context, SysError};

/// Under the store dir: the latest flush start per boot.
const MARKS_FILE: &str = "flushed.json";
/// Under the store dir: exists while layers of this boot may be unflushed; its mtime is
/// the last such commit.
const PENDING_FILE: &str = "flush-pending";
/// Serializes the read-modify-write of the marks.
const LOCK_FILE: &str = "locks/flush.lock";
/// Marks of this many boots are kept (older boots' layers are judged by then).
const BOOTS_KEPT: usize = 8;
/// Pending layers at least this old are flushed by the next pull or provision.
pub(crate) const QUIET_AGE: Duration = Duration::from_secs(30);

/// When a layer's data was last written, unflushed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteStamp {
    /// `/proc/sys/kernel/random/boot_id` at the time.
    pub boot_id: String,
    /// `CLOCK_MONOTONIC` nanoseconds, after the last data write.
    pub at_ns: u64,
}

/// The boot this process runs in; `STRATA_BOOT_ID` stands in for it in tests that
/// play a reboot.
pub(crate) fn boot_id() -> String {
    if let Some(id) = std::env::var("STRATA_BOOT_ID").ok().filter(|v| !v.is_empty()) {
        return id;
    }
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// The flush bookkeeping of one store directory.
#[derive(Debug, Clone)]
pub(crate) struct Flusher {
    dir: PathBuf,
    staging: PathBuf,
    boot_id: String,
}

impl Flusher {
    pub(crate) fn new(store_dir: &Path, staging: &Path) -> Self {
        Self { dir: store_dir.to_owned(), staging: staging.to_owned(), boot_id: boot_id() }
    }

    /// The stamp for a layer whose data writes are all done; call before writing its
    /// record and committing it.
    pub(crate) fn stamp(&self) -> WriteStamp {
        WriteStamp { boot_id: self.boot_id.clone(), at_ns: monotonic_ns() }
    }

    /// After the commit of a stamped layer: tells the next flush there is work.
    pub(crate) fn note_commit(&self) -> Result<(), SysError> {
        let path = self.dir.join(PENDING_FILE);
        std::fs::write(&path, b"").context("write", &path)
    }

    /// Can a layer with this stamp be trusted to be whole on disk?
    pub(crate) fn is_trusted(&self, stamp: Option<&WriteStamp>) -> bool {
        let Some(stamp) = stamp else { return true }; // flushed before its commit
        if stamp.boot_id == self.boot_id {
            return true; // no reboot since: the page cache has it
        }
        self.marks().get(&stamp.boot_id).is_some_and(|&flushed| flushed >= stamp.at_ns)
    }

    fn marks(&self) -> BTreeMap<String, u64> {
        std::fs::read(self.dir.join(MARKS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Marks>(&b).ok())
            .map(|m| m.boots.into_iter().map(|b| (b.boot_id, b.flushed_ns)).collect())
            .unwrap_or_default()
    }

    /// Flushes the store's file system if layers of this boot committed at least
    /// `min_age` ago may be unflushed, and records it. Returns whether it flushed.
    pub(crate) fn flush_pending(&self, min_age: Duration) -> Result<bool, SysError> {
        let pending = self.dir.join(PENDING_FILE);
        let age = match std::fs::metadata(&pending).and_then(|m| m.modified()) {
            Ok(modified) => modified.elapsed().unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SysError::new("stat", &pending, e)),
        };
        if age < min_age {
            return Ok(false);
        }
        let _lock = sysfs::lock_file(&self.dir.join(LOCK_FILE), sysfs::LockMode::Exclusive)?;
        // Order matters: the marker goes first and the time is read before the flush,
        // so a layer stamped after `started` re-creates the marker for the next flush,
        // and every layer stamped before it had finished writing when syncfs began.
        match std::fs::remove_file(&pending) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false), // flushed meanwhile
            Err(e) => return Err(SysError::new("remove", &pending, e)),
        }
        let started = monotonic_ns();
        let fd = sysfs::open_dir(&self.dir).context("open", &self.dir)?;
        if let Err(e) = sysfs::syncfs(std::os::fd::AsFd::as_fd(&fd)) {
            let _ = std::fs::write(&pending, b"");
            return Err(SysError::new("syncfs", &self.dir, e));
        }
        let mut boots: Vec<BootMark> = self
            .marks()
            .into_iter()
            .filter(|(id, _)| *id != self.boot_id)
            .map(|(boot_id, flushed_ns)| BootMark { boot_id, flushed_ns })
            .collect();
        boots.push(BootMark { boot_id: self.boot_id.clone(), flushed_ns: started });
        let excess = boots.len().saturating_sub(BOOTS_KEPT);
        boots.drain(..excess);
        let bytes = serde_json::to_vec_pretty(&Marks { boots })
            .map_err(|e| SysError::new("encode", self.dir.join(MARKS_FILE), e.into()))?;
        crate::durable::write_file(&self.staging, &self.dir, MARKS_FILE, &bytes)?;
        tracing::debug!(age_ms = age.as_millis() as u64, "store flushed");
        Ok(true)
    }
}

/// `flushed.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Marks {
    /// Oldest first.
    boots: Vec<BootMark>,
}

#[derive(Debug, Serialize, Deserialize)]
struct BootMark {
    boot_id: String,
    flushed_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_judged_by_boot_and_flush_marks() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, staging) = (tmp.path().join("store"), tmp.path().join("store/staging"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::create_dir_all(dir.join("locks")).unwrap();
        let now = Flusher { dir: dir.clone(), staging: staging.clone(), boot_id: "boot-a".into() };
        assert!(now.is_trusted(None), "layers flushed at commit (no stamp)");
        let before_flush = now.stamp();
        assert!(now.is_trusted(Some(&before_flush)), "same boot: the page cache has it");
        let after_reboot = Flusher { boot_id: "boot-b".into(), ..now.clone() };
        assert!(!after_reboot.is_trusted(Some(&before_flush)), "earlier boot, no flush: may be torn");

        assert!(!now.flush_pending(Duration::ZERO).unwrap(), "nothing pending: no flush");
        now.note_commit().unwrap();
        assert!(!now.flush_pending(Duration::from_secs(3600)).unwrap(), "too recent for a lazy flush");
        assert!(now.flush_pending(Duration::ZERO).unwrap());
        assert!(after_reboot.is_trusted(Some(&before_flush)), "the flush covers what was stamped before it");
        let after_flush = now.stamp();
        assert!(!after_reboot.is_trusted(Some(&after_flush)), "stamped after the flush began");
        // A flush in the new boot keeps the old boot's mark.
        after_reboot.note_commit().unwrap();
        after_reboot.flush_pending(Duration::ZERO).unwrap();
        assert!(after_reboot.is_trusted(Some(&before_flush)));
        assert_eq!(now.marks().len(), 2);
    }
}
