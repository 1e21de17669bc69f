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

    fn provision(
        &self,
        layers: &[PathBuf],
        rootfs: &Path,
        _scratch: &Path,
    ) -> Result<(), BackendError> {
        for layer in layers {
            apply_layer(layer, rootfs)?;
        }
        Ok(())
    }
}

/// Applies one overlay-form layer directory onto `target` with OCI semantics.
pub fn apply_layer(layer: &Path, target: &Path) -> Result<(), SysError> {
    let src = sysfs::open_dir(layer).context("open", layer)?;
    let dst = sysfs::open_dir(target).context("open", target)?;
    let mut copier = Copier {
        root: target.to_owned(),
        privileged: crate::sys::is_root(),
        links: HashMap::new(),
    };
    copier.apply_dir(src.as_fd(), dst.as_fd(), Path::new(""))
}

struct Copier {
    root: PathBuf,
    privileged: bool,
    /// (dev, ino) of a multiply-linked source file → where its first copy went.
    links: HashMap<(u64, u64), PathBuf>,
}

fn is_whiteout(st: &Stat) -> bool {
    sysfs::file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

fn time_of(st: &Stat) -> Time {
    #[allow(clippy::unnecessary_cast)] // the field types differ by arch
    Time {
        secs: st.st_mtime as i64,
        nanos: u32::try_from(st.st_mtime_nsec).unwrap_or(0),
    }
}

impl Copier {
    fn apply_dir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        rel: &Path,
    ) -> Result<(), SysError> {
        let base = self.root.join(rel);
        let at = |name: &OsStr| base.join(name);
        for name in sysfs::list_dir(src).context("list", self.root.join(rel))? {
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
                self.apply_subdir(src, dst, name, &st, existing.as_ref(), rel)?;
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
                FileType::RegularFile => self.copy_file(src, dst, name, &st, rel)?,
                FileType::Symlink => {
                    let target = sysfs::read_link_at(src, name).context("readlink", at(name))?;
                    sysfs::symlink_at(&target, dst, name).context("symlink", at(name))?;
                    if self.privileged {
                        sysfs::chown_at(dst, name, st.st_uid, st.st_gid)
                            .context("chown", at(name))?;
                    }
                    sysfs::utimens_at(dst, name, time_of(&st)).context("utimens", at(name))?;
                }
                FileType::Fifo | FileType::CharacterDevice | FileType::BlockDevice => {
                    let special = match kind {
                        FileType::Fifo => SpecialKind::Fifo,
                        FileType::CharacterDevice => SpecialKind::Char,
                        _ => SpecialKind::Block,
                    };
                    let (major, minor) =
                        (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev));
                    sysfs::mknod_at(dst, name, special, 0o600, major, minor)
                        .context("mknod", at(name))?;
                    if self.privileged {
                        sysfs::chown_at(dst, name, st.st_uid, st.st_gid)
                            .context("chown", at(name))?;
                    }
                    sysfs::chmod_special_at(dst, name, st.st_mode).context("chmod", at(name))?;
                    sysfs::utimens_at(dst, name, time_of(&st)).context("utimens", at(name))?;
                }
                _ => {
                    tracing::warn!(path = %at(name).display(), "skipping an entry of unknown type")
                }
            }
        }
        Ok(())
    }

    fn apply_subdir(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
        existing: Option<&Stat>,
        rel: &Path,
    ) -> Result<(), SysError> {
        let path = self.root.join(rel).join(name);
        let src_dir = sysfs::open_dir_at(src, name).context("open", &path)?;
        let opaque = is_opaque(src_dir.as_fd());
        match existing.map(sysfs::file_type) {
            Some(FileType::Directory) if opaque => {
                // Opaque: what lower layers put here disappears, this layer's content stays.
                let dir = sysfs::open_dir_at(dst, name).context("open", &path)?;
                for child in sysfs::list_dir(dir.as_fd()).context("list", &path)? {
                    let child = OsString::from_vec(child.into_bytes());
                    sysfs::remove_all_at(dir.as_fd(), &child)
                        .context("remove", path.join(&child))?;
                }
            }
            Some(FileType::Directory) => {}
            Some(_) => {
                sysfs::unlink_at(dst, name).context("unlink", &path)?;
                sysfs::mkdir_at(dst, name, 0o700).context("mkdir", &path)?;
            }
            None => sysfs::mkdir_at(dst, name, 0o700).context("mkdir", &path)?,
        }
        let dst_dir: OwnedFd = sysfs::open_dir_at(dst, name).context("open", &path)?;
        self.apply_dir(src_dir.as_fd(), dst_dir.as_fd(), &rel.join(name))?;
        self.copy_metadata(
            src_dir.as_fd(),
            dst_dir.as_fd(),
            st,
            &path,
            if self.privileged { 0 } else { 0o700 },
        )?;
        sysfs::futimens(dst_dir.as_fd(), time_of(st)).context("utimens", &path)
    }

    fn copy_file(
        &mut self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        name: &OsStr,
        st: &Stat,
        rel: &Path,
    ) -> Result<(), SysError> {
        let relative = rel.join(name);
        let path = self.root.join(&relative);
        if st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(first) = self.links.get(&key) {
                if let (Some(parent), Some(first_name)) = (first.parent(), first.file_name()) {
                    let root = sysfs::open_dir(&self.root).context("open", &self.root)?;
                    let first_dir = sysfs::resolve_dir_in_root(root.as_fd(), parent, true)
                        .context("resolve", first)?;
                    if sysfs::link_at(first_dir.as_fd(), first_name, dst, name).is_ok() {
                        return Ok(());
                    }
                }
            }
            self.links.insert(key, relative);
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
            for xattr in names
                .iter()
                .filter(|n| !n.starts_with("trusted.overlay.") && !n.starts_with("user.overlay."))
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
