//! File-system calls relative to directory fds.
//!
//! Path resolution inside an image tree goes through [`resolve_dir_in_root`], i.e.
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel treats the tree's
//! top as `/` for every `..` and absolute symlink, atomically, so a symlink planted by
//! one archive entry cannot redirect a later one outside the tree (CVE-2018-15664,
//! CVE-2025-47290). Creation then happens on the last component only, with
//! `O_NOFOLLOW`/`O_EXCL` semantics, and metadata is set through the fd just made.

use std::ffi::{CStr, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use rustix::fs::{
    AtFlags, Dev, FileType, FlockOperation, Mode, OFlags, RenameFlags, ResolveFlags, Timespec, Timestamps, XattrFlags,
};

pub use rustix::fs::Stat;

/// `stat` mode bits of a file type.
pub fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Opens a directory we own (not one inside an untrusted tree) for `*at()` calls.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Resolves `rel` inside the tree at `root` (the kernel treats `root` as `/`) and opens
/// it as a directory. `rel` may be empty for the root itself. With `path_only`, the fd
/// is `O_PATH` (enough for `*at()` calls; not for xattrs or fchown).
pub fn resolve_dir_in_root(root: BorrowedFd<'_>, rel: &Path, path_only: bool) -> io::Result<OwnedFd> {
    let rel: &Path = if rel.as_os_str().is_empty() { Path::new(".") } else { rel };
    let mode = if path_only { OFlags::PATH } else { OFlags::RDONLY };
    Ok(rustix::fs::openat2(
        root,
        rel,
        mode | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// Opens the directory `name` in `dir` without following a symlink.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `lstat` of `name` in `dir`; `Ok(None)` if absent.
pub fn stat_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<Option<Stat>> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => Ok(Some(s)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `fstat`.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// Creates directory `name` in `dir`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode))?)
}

/// Creates a new regular file `name` in `dir`; fails if anything exists there, and
/// never follows a symlink.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )?;
    Ok(File::from(fd))
}

/// Opens `name` in `dir` for reading, never following a symlink.
pub fn open_file_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<File> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    Ok(File::from(fd))
}

/// Creates symlink `name` in `dir` pointing at `target` (stored, never followed here).
pub fn symlink_at(target: &OsStr, dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// Hard-links `old` in `old_dir` as `new` in `new_dir`, not following a symlink at `old`.
pub fn link_at(old_dir: BorrowedFd<'_>, old: &OsStr, new_dir: BorrowedFd<'_>, new: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::linkat(old_dir, old, new_dir, new, AtFlags::empty())?)
}

/// Kinds of special files [`mknod_at`] makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialKind {
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
}

/// Creates a device node or fifo.
pub fn mknod_at(
    dir: BorrowedFd<'_>,
    name: &OsStr,
    kind: SpecialKind,
    mode: u32,
    major: u32,
    minor: u32,
) -> io::Result<()> {
    let ft = match kind {
        SpecialKind::Char => FileType::CharacterDevice,
        SpecialKind::Block => FileType::BlockDevice,
        SpecialKind::Fifo => FileType::Fifo,
    };
    let dev: Dev = rustix::fs::makedev(major, minor);
    Ok(rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(mode), dev)?)
}

/// Removes `name` (a non-directory) from `dir`.
pub fn unlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
}

/// Removes `name` in `dir`, recursively if it is a directory, through fds only: never
/// follows a symlink, and never descends into another mount, even a bind mount of the
/// same file system (mount ids are compared, not devices): a mount point is left in
/// place and reported as `EBUSY`.
pub fn remove_all_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let Some(stat) = stat_at(dir, name)? else {
        return Ok(());
    };
    if file_type(&stat) != FileType::Directory {
        return unlink_at(dir, name);
    }
    let mount = mount_id_at(dir, OsStr::new("."))?;
    if mount_id_at(dir, name)? != mount {
        return Err(io::Error::new(io::ErrorKind::ResourceBusy, "refusing to remove a mount point"));
    }
    let sub = open_dir_at(dir, name)?;
    empty_dir(sub.as_fd(), mount)?;
    drop(sub);
    Ok(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?)
}

/// The id of the mount `name` in `dir` is on (statx `STATX_MNT_ID`, Linux 5.8+).
fn mount_id_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<u64> {
    Ok(rustix::fs::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW, rustix::fs::StatxFlags::MNT_ID)?.stx_mnt_id)
}

fn empty_dir(dir: BorrowedFd<'_>, mount: u64) -> io::Result<()> {
    let names = list_dir(dir)?;
    for name in names {
        let name = OsStr::from_bytes(name.to_bytes());
        let Some(stat) = stat_at(dir, name)? else {
            continue;
        };
        if file_type(&stat) == FileType::Directory {
            if mount_id_at(dir, name)? != mount {
                return Err(io::Error::new(io::ErrorKind::ResourceBusy, "refusing to descend into a mount point"));
            }
            let sub = open_dir_at(dir, name)?;
            empty_dir(sub.as_fd(), mount)?;
            drop(sub);
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            unlink_at(dir, name)?;
        }
    }
    Ok(())
}

/// The names in a directory, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<std::ffi::CString>> {
    let mut out = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name: &CStr = entry.file_name();
        if name != c"." && name != c".." {
            out.push(name.to_owned());
        }
    }
    Ok(out)
}

/// Sets owner and group of `name` in `dir` without following a symlink.
pub fn chown_at(dir: BorrowedFd<'_>, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rustix::process::Uid::from_raw(uid), rustix::process::Gid::from_raw(gid));
    Ok(rustix::fs::chownat(dir, name, Some(u), Some(g), AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Sets owner and group of an open file.
pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    let (u, g) = (rustix::process::Uid::from_raw(uid), rustix::process::Gid::from_raw(gid));
    Ok(rustix::fs::fchown(fd, Some(u), Some(g))?)
}

/// Sets the permission bits (incl. setuid/setgid/sticky) of an open file.
pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// Sets the mode of a device node or fifo `name` in `dir`, which cannot be opened
/// for `fchmod` without acting on the device: an `O_PATH` handle pins the inode (a
/// symlink is refused) and the chmod goes through its `/proc/self/fd` entry.
pub fn chmod_special_at(dir: BorrowedFd<'_>, name: &OsStr, mode: u32) -> io::Result<()> {
    let fd = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    if file_type(&stat_fd(fd.as_fd())?) == FileType::Symlink {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "refusing to chmod a symlink"));
    }
    let proc_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    Ok(rustix::fs::chmod(proc_path.as_str(), Mode::from_raw_mode(mode & 0o7777))?)
}

/// A timestamp: seconds and nanoseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Time {
    /// Seconds.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

fn timestamps(t: Time) -> Timestamps {
    let ts = Timespec { tv_sec: t.secs, tv_nsec: i64::from(t.nanos) };
    Timestamps { last_access: ts, last_modification: ts }
}

/// Sets atime and mtime of an open file.
pub fn futimens(fd: BorrowedFd<'_>, t: Time) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &timestamps(t))?)
}

/// Sets atime and mtime of `name` in `dir` without following a symlink.
pub fn utimens_at(dir: BorrowedFd<'_>, name: &OsStr, t: Time) -> io::Result<()> {
    Ok(rustix::fs::utimensat(dir, name, &timestamps(t), AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Sets an extended attribute on an open file.
pub fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty())?)
}

/// Reads an extended attribute of an open file; `Ok(None)` if it is not set.
pub fn fgetxattr(fd: BorrowedFd<'_>, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::fgetxattr(fd, name, &mut buf[..]) {
        Ok(n) => {
            buf.truncate(n);
            Ok(Some(buf))
        }
        Err(rustix::io::Errno::NODATA) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Lists the extended attribute names of an open file.
pub fn flistxattr(fd: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::flistxattr(fd, &mut buf[..])?;
    Ok(buf[..n].split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
}

/// Flushes the whole file system holding `fd` (one call instead of an fsync per file).
pub fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::syncfs(fd)?)
}

/// Starts writing a file's dirty pages back to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`), so that a later `syncfs` has less to
/// wait for: the disk works while the unpack goes on.
#[allow(unsafe_code)]
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for the lifetime of `file`; offset 0 and length 0 mean
    // "the whole file"; the call only schedules I/O and touches no memory of ours.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}

/// fsync of an open file or directory.
pub fn fsync(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// Renames, failing with `AlreadyExists` instead of replacing an existing target.
pub fn rename_noreplace(old_dir: BorrowedFd<'_>, old: &OsStr, new_dir: BorrowedFd<'_>, new: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::renameat_with(old_dir, old, new_dir, new, RenameFlags::NOREPLACE)?)
}

/// Renames, atomically replacing a non-directory target.
pub fn rename_replace(old_dir: BorrowedFd<'_>, old: &OsStr, new_dir: BorrowedFd<'_>, new: &OsStr) -> io::Result<()> {
    Ok(rustix::fs::renameat(old_dir, old, new_dir, new)?)
}

/// How [`lock_file`] locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder.
    Exclusive,
}

/// Opens (creating) the lock file `path` and flocks it, waiting; the lock lasts as
/// long as the returned file is open (and dies with the process).
pub fn lock_file(path: &Path, mode: LockMode) -> Result<File, crate::sys::SysError> {
    use crate::sys::Context;
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).context("open", path)?;
    match mode {
        LockMode::Shared => lock_shared(file.as_fd()),
        LockMode::Exclusive => lock_exclusive(file.as_fd()),
    }
    .context("flock", path)?;
    Ok(file)
}

/// Takes an exclusive lock, waiting for it.
pub fn lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, FlockOperation::LockExclusive)?)
}

/// Takes a shared lock, waiting for it.
pub fn lock_shared(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::flock(fd, FlockOperation::LockShared)?)
}

/// Tries an exclusive lock; `Ok(false)` if someone else holds it.
pub fn try_lock_exclusive(fd: BorrowedFd<'_>) -> io::Result<bool> {
    match rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The file-system magic of the file system holding `path` (statfs(2) `f_type`).
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    #[allow(clippy::useless_conversion, clippy::unnecessary_cast)]
    // the field's width differs by arch
    Ok(rustix::fs::statfs(path)?.f_type as i64)
}

/// Does the file system under `dir` report entry types in `readdir` (overlayfs needs
/// d_type)? Reads the entries already there; `dir` must hold at least one.
pub fn supports_d_type(dir: &Path) -> io::Result<bool> {
    let fd = open_dir(dir)?;
    for entry in rustix::fs::Dir::read_from(fd.as_fd())? {
        let entry = entry?;
        let name = entry.file_name();
        if name != c"." && name != c".." {
            return Ok(entry.file_type() != FileType::Unknown);
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidInput, "cannot probe d_type in an empty directory"))
}

/// Clones `src` into `dst` sharing extents (FICLONE); fails where unsupported (ext4).
pub fn clone_file(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::ioctl_ficlone(dst, src)?)
}

/// Copies `len` bytes from `src` to `dst` in the kernel (copy_file_range), with a
/// read/write fallback where the kernel refuses (cross-device on old kernels, some
/// special files).
pub fn copy_file_contents(src: &File, dst: &File, len: u64) -> io::Result<()> {
    let mut left = len;
    while left > 0 {
        let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
        match rustix::fs::copy_file_range(src, None, dst, None, chunk) {
            Ok(0) => break,
            Ok(n) => left -= n as u64,
            Err(
                rustix::io::Errno::XDEV
                | rustix::io::Errno::INVAL
                | rustix::io::Errno::NOSYS
                | rustix::io::Errno::OPNOTSUPP,
            ) => {
                io::copy(&mut &*src, &mut &*dst)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Reads a symlink's target relative to `dir`.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<std::ffi::OsString> {
    let target = rustix::fs::readlinkat(dir, name, Vec::new())?;
    Ok(std::ffi::OsString::from_vec(target.into_bytes()))
}
