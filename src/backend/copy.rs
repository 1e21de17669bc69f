//! `copy`: applies the layers in order into a private directory, honouring the
//! overlay-form whiteouts the store keeps (0/0 char device: delete; opaque xattr:
//! drop what lower layers put there), as Mesos' copy backend does with `.wh.` files.
//!
//! Works on directory fds only: every component is opened with `O_NOFOLLOW`, and an
//! existing entry of another type is removed, never followed, so a symlink from a
//! lower layer cannot redirect an upper layer's writes. Files are cloned with
//! FICLONE where the file system shares extents (XFS, btrfs), else copied in the
//! kernel (`copy_file_range`). Runs without root (owners are then not kept).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use rustix::fs::FileType;

use super::{Backend, BackendError, BackendKind};
use crate::layer::whiteout::{OPAQUE_XATTR_TRUSTED, OPAQUE_XATTR_USER};
use crate::sys::fs::{self as sysfs, SpecialKind, Stat, Time};
use crate::sys::{Context, SysError};

#[derive(Debug)]
pub(super) struct Copy;

impl Backend for Copy {
    fn kind(&self) -> BackendKind {
        BackendKind::Copy
    }

    fn provision(&self, layers: &[PathBuf], rootfs: &Path, _scratch: &Path) -> Result<(), BackendError> {
        for layer in layers {
            apply_layer(layer, rootfs)?;
        }
        Ok(())
    }
}

/// Applies one overlay-form layer directory onto `target` with OCI semantics.
///
/// Directories are handed out to worker threads (one per core, at most 4): each
/// worker applies the entries of one directory and queues its subdirectories. Links
/// to a file that another name already copied are made after all copies, and
/// directory metadata and times are set last (a read-only directory must not stop
/// its own children from being created).
pub fn apply_layer(layer: &Path, target: &Path) -> Result<(), SysError> {
    let shared = Shared {
        layer_root: sysfs::open_dir(layer).context("open", layer)?,
        target_root: sysfs::open_dir(target).context("open", target)?,
        target: target.to_owned(),
        privileged: crate::sys::is_root(),
        links: Mutex::new(HashMap::new()),
        deferred_links: Mutex::new(Vec::new()),
        dirs: Mutex::new(Vec::new()),
        queue: Mutex::new(Queue { jobs: vec![PathBuf::new()], pending: 1, failed: None }),
        wake: Condvar::new(),
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, MAX_WORKERS);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| shared.work());
        }
    });
    let queue = shared.queue.into_inner().map_err(|_| poisoned(target))?;
    if let Some(e) = queue.failed {
        return Err(e);
    }
    let links = shared.deferred_links.into_inner().map_err(|_| poisoned(target))?;
    for (first, rel) in links {
        link_in_root(shared.target_root.as_fd(), target, &first, &rel)?;
    }
    let mut dirs = shared.dirs.into_inner().map_err(|_| poisoned(target))?;
    // Deepest first, so that a parent's times are set after its children's.
    dirs.sort_by_key(|(rel, _)| std::cmp::Reverse(rel.components().count()));
    let copier = Copier { root: target.to_owned(), privileged: crate::sys::is_root() };
    for (rel, st) in dirs {
        let path = target.join(&rel);
        let src =
            sysfs::resolve_dir_in_root(shared.layer_root.as_fd(), &rel, false).context("open", layer.join(&rel))?;
        let dst = sysfs::resolve_dir_in_root(shared.target_root.as_fd(), &rel, false).context("open", &path)?;
        let extra = if copier.privileged { 0 } else { 0o700 };
        copier.copy_metadata(src.as_fd(), dst.as_fd(), &st, &path, extra)?;
        sysfs::futimens(dst.as_fd(), time_of(&st)).context("utimens", &path)?;
    }
    Ok(())
}

/// Worker threads of one layer copy.
const MAX_WORKERS: usize = 4;

fn poisoned(target: &Path) -> SysError {
    SysError::new("copy", target, std::io::Error::other("a copy worker panicked"))
}

struct Queue {
    jobs: Vec<PathBuf>,
    /// Directories queued or being worked on.
    pending: usize,
    failed: Option<SysError>,
}

struct Shared {
    layer_root: OwnedFd,
    target_root: OwnedFd,
    target: PathBuf,
    privileged: bool,
    /// (dev, ino) of a multiply-linked source file → the first name copied.
    links: Mutex<HashMap<(u64, u64), PathBuf>>,
    /// (first name, other name) pairs to link once every file is copied.
    deferred_links: Mutex<Vec<(PathBuf, PathBuf)>>,
    /// Directories applied, with their source metadata, to finish last.
    dirs: Mutex<Vec<(PathBuf, Stat)>>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn work(&self) {
        let copier = Copier { root: self.target.clone(), privileged: self.privileged };
        loop {
            let job = {
                let Ok(mut queue) = self.queue.lock() else {
                    return;
                };
                loop {
                    if queue.failed.is_some() {
                        return;
                    }
                    if let Some(job) = queue.jobs.pop() {
                        break job;
                    }
                    if queue.pending == 0 {
                        return;
                    }
                    queue = match self.wake.wait(queue) {
                        Ok(q) => q,
                        Err(_) => return,
                    };
                }
            };
            let result = self.apply_job(&copier, &job);
            let Ok(mut queue) = self.queue.lock() else {
                return;
            };
            queue.pending -= 1;
            if let Err(e) = result {
                queue.failed.get_or_insert(e);
            }
            self.wake.notify_all();
        }
    }

    fn apply_job(&self, copier: &Copier, rel: &Path) -> Result<(), SysError> {
        let src = sysfs::resolve_dir_in_root(self.layer_root.as_fd(), rel, false).context("open", rel)?;
        let dst =
            sysfs::resolve_dir_in_root(self.target_root.as_fd(), rel, false).context("open", self.target.join(rel))?;
        let subdirs = copier.apply_dir(src.as_fd(), dst.as_fd(), rel, self)?;
        if subdirs.is_empty() {
            return Ok(());
        }
        let mut queue = self.queue.lock().map_err(|_| poisoned(&self.target))?;
        queue.pending += subdirs.len();
        queue.jobs.extend(subdirs);
        self.wake.notify_all();
        Ok(())
    }
}

fn link_in_root(root: BorrowedFd<'_>, target: &Path, first: &Path, rel: &Path) -> Result<(), SysError> {
    let (Some(first_parent), Some(first_name), Some(parent), Some(name)) =
        (first.parent(), first.file_name(), rel.parent(), rel.file_name())
    else {
        return Ok(());
    };
    let from = sysfs::resolve_dir_in_root(root, first_parent, true).context("resolve", target.join(first))?;
    let to = sysfs::resolve_dir_in_root(root, parent, true).context("resolve", target.join(rel))?;
    sysfs::link_at(from.as_fd(), first_name, to.as_fd(), name).context("link", target.join(rel))
}

struct Copier {
    root: PathBuf,
    privileged: bool,
}

fn is_whiteout(st: &Stat) -> bool {
    sysfs::file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

fn time_of(st: &Stat) -> Time {
    #[allow(clippy::unnecessary_cast)] // the field types differ by arch
    Time { secs: st.st_mtime as i64, nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0) }
}

impl Copier {
    /// Applies the entries of one directory; returns the subdirectories to apply next.
    fn apply_dir(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
        shared: &Shared,
    ) -> Result<Vec<PathBuf>, SysError> {
        let base = self.root.join(rel);
        let at = |name: &OsStr| base.join(name);
        let mut subdirs = Vec::new();
        for name in sysfs::list_dir(src).context("list", &base)? {
            let name = OsStr::from_bytes(name.to_bytes()).to_owned();
            let name = name.as_os_str();
            let Some(st) = sysfs::stat_at(src, name).context("stat", at(name))? else {
                continue;
            };
            let existing = sysfs::stat_at(dst, name).context("stat", at(name))?;
            let kind = sysfs::file_type(&st);
            if is_whiteout(&st) {
                if existing.is_some() {
                    sysfs::remove_all_at(dst, name).context("remove", at(name))?;
                }
                continue;
            }
            if kind == FileType::Directory {
                self.prepare_subdir(src, dst, name, existing.as_ref(), &at(name))?;
                let child = rel.join(name);
                shared.dirs.lock().map_err(|_| poisoned(&self.root))?.push((child.clone(), st));
                subdirs.push(child);
                continue;
            }
            if let Some(existing) = &existing {
                if sysfs::file_type(existing) == FileType::Directory {
                    sysfs::remove_all_at(dst, name).context("remove", at(name))?;
                } else {
                    sysfs::unlink_at(dst, name).context("unlink", at(name))?;
                }
            }
            match kind {
                FileType::RegularFile => self.copy_file(src, dst, name, &st, rel, shared)?,
                FileType::Symlink => {
                    let target = sysfs::read_link_at(src, name).context("readlink", at(name))?;
                    sysfs::symlink_at(&target, dst, name).context("symlink", at(name))?;
                    if self.privileged {
                        sysfs::chown_at(dst, name, st.st_uid, st.st_gid).context("chown", at(name))?;
                    }
                    sysfs::utimens_at(dst, name, time_of(&st)).context("utimens", at(name))?;
                }
                FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                    let special = match kind {
                        FileType::Fifo => SpecialKind::Fifo,
                        FileType::CharacterDevice => SpecialKind::Char,
                        _ => SpecialKind::Block,
                    };
                    let (major, minor) = (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                    sysfs::mknod_at(dst, name, special, 0o600, major, minor).context("mknod", at(name))?;
                    if self.privileged {
                        sysfs::chown_at(dst, name, st.st_uid, st.st_gid).context("chown", at(name))?;
                    }
                    sysfs::chmod_special_at(dst, name, st.st_mode).context("chmod", at(name))?;
                    sysfs::utimens_at(dst, name, time_of(&st)).context("utimens", at(name))?;
                }
                _ => {
                    tracing::warn!(path = %at(name).display(), "skipping an entry of unknown type")
                }
            }
        }
        Ok(subdirs)
    }

    /// Makes `name` a directory in `dst`: kept if it is one (emptied if this layer's
    /// is opaque), else whatever is there is replaced.
    fn prepare_subdir(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        existing: Option<&Stat>,
        path: &Path,
    ) -> Result<(), SysError> {
        let src_dir = sysfs::open_dir_at(src, name).context("open", path)?;
        match existing.map(sysfs::file_type) {
            Some(FileType::Directory) if is_opaque(src_dir.as_fd()) => {
                // Opaque: what lower layers put here disappears, this layer's content stays.
                let dir = sysfs::open_dir_at(dst, name).context("open", path)?;
                for child in sysfs::list_dir(dir.as_fd()).context("list", path)? {
                    let child = OsString::from_vec(child.into_bytes());
                    sysfs::remove_all_at(dir.as_fd(), &child).context("remove", path.join(&child))?;
                }
                Ok(())
            }
            Some(FileType::Directory) => Ok(()),
            Some(_) => {
                sysfs::unlink_at(dst, name).context("unlink", path)?;
                sysfs::mkdir_at(dst, name, 0o700).context("mkdir", path)
            }
            None => sysfs::mkdir_at(dst, name, 0o700).context("mkdir", path),
        }
    }

    fn copy_file(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
        rel: &Path,
        shared: &Shared,
    ) -> Result<(), SysError> {
        let relative = rel.join(name);
        let path = self.root.join(&relative);
        if st.st_nlink > 1 {
            let mut links = shared.links.lock().map_err(|_| poisoned(&self.root))?;
            match links.get(&(st.st_dev, st.st_ino)) {
                Some(first) => {
                    let pair = (first.clone(), relative);
                    drop(links);
                    shared.deferred_links.lock().map_err(|_| poisoned(&self.root))?.push(pair);
                    return Ok(());
                }
                None => {
                    links.insert((st.st_dev, st.st_ino), relative);
                }
            }
        }
        let from = sysfs::open_file_at(src, name).context("open", &path)?;
        let to = sysfs::create_file_at(dst, name, 0o600).context("create", &path)?;
        if sysfs::clone_file(from.as_fd(), to.as_fd()).is_err() {
            #[allow(clippy::unnecessary_cast)] // st_size's type differs by arch
            sysfs::copy_file_contents(&from, &to, st.st_size as u64).context("copy", &path)?;
        }
        self.copy_metadata(from.as_fd(), to.as_fd(), st, &path, 0)?;
        sysfs::futimens(to.as_fd(), time_of(st)).context("utimens", &path)
    }

    /// Owner (as root), mode, and xattrs other than overlay's own marks.
    fn copy_metadata(
        &self,
        from: BorrowedFd<'_>,
        to: BorrowedFd<'_>,
        st: &Stat,
        path: &Path,
        extra_mode: u32,
    ) -> Result<(), SysError> {
        if self.privileged {
            sysfs::fchown(to, st.st_uid, st.st_gid).context("chown", path)?;
        }
        sysfs::fchmod(to, st.st_mode | extra_mode).context("chmod", path)?;
        if let Ok(names) = sysfs::flistxattr(from) {
            for xattr in names.iter().filter(|n| !n.starts_with("trusted.overlay.") && !n.starts_with("user.overlay."))
            {
                if let Ok(Some(value)) = sysfs::fgetxattr(from, xattr) {
                    if let Err(e) = sysfs::fsetxattr(to, xattr, &value) {
                        tracing::warn!(path = %path.display(), xattr = %xattr, error = %e, "could not copy xattr");
                    }
                }
            }
        }
        Ok(())
    }
}

fn is_opaque(dir: BorrowedFd<'_>) -> bool {
    [OPAQUE_XATTR_TRUSTED, OPAQUE_XATTR_USER]
        .iter()
        .any(|name| matches!(sysfs::fgetxattr(dir, name), Ok(Some(v)) if v == b"y"))
}
