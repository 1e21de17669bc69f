//! The one way disk changes become visible: build in staging, flush, rename into
//! place, flush the parent directory. After a crash at any instant a reader sees the
//! old state or the new one, never a half-written file or tree. Layers use the
//! unflushed rename and detect power-cut tears instead (`store::flush`).

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;

use crate::sys::fs as sysfs;
use crate::sys::{Context, SysError};

/// What [`commit_dir`] found at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The staged tree is now in place.
    Done,
    /// Something was already there (another writer won); the staged tree was left where it was.
    AlreadyPresent,
}

/// Writes `bytes` to `dir/name` atomically: a temp file in `staging` (same file system),
/// fsync, rename over the target, fsync `dir`.
pub fn write_file(staging: &Path, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SysError> {
    write_file_with(staging, dir, name, bytes, true)
}

/// Like [`write_file`] but without the fsyncs: still atomic (a reader sees the old or
/// the new content), but a power cut may lose the update. For advisory data such as
/// an image's last use.
pub fn write_file_relaxed(staging: &Path, dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SysError> {
    write_file_with(staging, dir, name, bytes, false)
}

fn write_file_with(staging: &Path, dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<(), SysError> {
    let tmp_name = format!("{}.{}.tmp", name.replace('/', "_"), uuid::Uuid::new_v4().simple());
    let tmp = staging.join(&tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp).context("create", &tmp)?;
        f.write_all(bytes).context("write", &tmp)?;
        if sync {
            f.sync_all().context("fsync", &tmp)?;
        }
        let staging_fd = sysfs::open_dir(staging).context("open", staging)?;
        let dir_fd = sysfs::open_dir(dir).context("open", dir)?;
        sysfs::rename_replace(staging_fd.as_fd(), OsStr::new(&tmp_name), dir_fd.as_fd(), OsStr::new(name))
            .context("rename", dir.join(name))?;
        sysfs::fsync(dir_fd.as_fd()).context("fsync", dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Moves the finished tree `staged` to `parent/name`, never replacing what is there.
/// Flushes the whole file system first (one `syncfs` instead of an fsync per file),
/// then the parent after the rename.
pub fn commit_dir(staged: &Path, parent: &Path, name: &str) -> Result<Commit, SysError> {
    let staged_fd = sysfs::open_dir(staged).context("open", staged)?;
    sysfs::syncfs(staged_fd.as_fd()).context("syncfs", staged)?;
    drop(staged_fd);
    let (Some(staged_parent), Some(staged_name)) = (staged.parent(), staged.file_name()) else {
        return Err(SysError::new("commit", staged, std::io::Error::other("staged path has no parent")));
    };
    let from = sysfs::open_dir(staged_parent).context("open", staged_parent)?;
    let to = sysfs::open_dir(parent).context("open", parent)?;
    match sysfs::rename_noreplace(from.as_fd(), staged_name, to.as_fd(), OsStr::new(name)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(Commit::AlreadyPresent),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => return Ok(Commit::AlreadyPresent),
        Err(e) => return Err(SysError::new("rename", parent.join(name), e)),
    }
    sysfs::fsync(to.as_fd()).context("fsync", parent)?;
    Ok(Commit::Done)
}

/// Moves the finished tree `staged` to `parent/name` (never replacing what is there)
/// without flushing anything: atomic against a killed process, and the caller makes
/// power-cut tears detectable itself (the store's layers: `store::flush`).
pub fn commit_dir_unflushed(staged: &Path, parent: &Path, name: &str) -> Result<Commit, SysError> {
    let (Some(staged_parent), Some(staged_name)) = (staged.parent(), staged.file_name()) else {
        return Err(SysError::new("commit", staged, std::io::Error::other("staged path has no parent")));
    };
    let from = sysfs::open_dir(staged_parent).context("open", staged_parent)?;
    let to = sysfs::open_dir(parent).context("open", parent)?;
    match sysfs::rename_noreplace(from.as_fd(), staged_name, to.as_fd(), OsStr::new(name)) {
        Ok(()) => Ok(Commit::Done),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(Commit::AlreadyPresent),
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => Ok(Commit::AlreadyPresent),
        Err(e) => Err(SysError::new("rename", parent.join(name), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_file_replaces_atomically() {
        let t = tempfile::tempdir().unwrap();
        let (staging, dir) = (t.path().join("staging"), t.path().join("dir"));
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        write_file(&staging, &dir, "a", b"one").unwrap();
        write_file(&staging, &dir, "a", b"two").unwrap();
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn commit_dir_never_replaces() {
        let t = tempfile::tempdir().unwrap();
        let (s1, s2, dest) = (t.path().join("s1"), t.path().join("s2"), t.path().join("dest"));
        for d in [&s1, &s2, &dest] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(s1.join("f"), "1").unwrap();
        std::fs::write(s2.join("f"), "2").unwrap();
        assert_eq!(commit_dir(&s1, &dest, "x").unwrap(), Commit::Done);
        assert_eq!(commit_dir(&s2, &dest, "x").unwrap(), Commit::AlreadyPresent);
        assert_eq!(std::fs::read(dest.join("x/f")).unwrap(), b"1");
    }
}
