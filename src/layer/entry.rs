//! Applies tar entries to a directory tree, contained in it whatever the archive says.
//!
//! Every entry's parent is resolved by the kernel inside the tree
//! ([`sysfs::resolve_dir_in_root`]); nothing is cached between entries
//! (CVE-2025-47290). The final component is created with no-follow, exclusive
//! semantics after removing whatever was there (never written through: RUSTSEC-2018-0002),
//! and metadata is set on the new fd or with `AT_SYMLINK_NOFOLLOW` (CVE-2021-32760).

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::FileType;
use tar::EntryType;

use super::error::UnpackError;
use super::whiteout::{self, Marker};
use crate::sys::fs::{self as sysfs, SpecialKind, Time};

/// Linux's NAME_MAX.
const MAX_NAME_LEN: usize = 255;
/// Linux's PATH_MAX.
const MAX_PATH_LEN: usize = 4096;
/// PAX record prefix for extended attributes (GNU tar, bsdtar, Go's archive/tar).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";
/// Mode for parent directories an archive did not list.
const IMPLIED_DIR_MODE: u32 = 0o755;
/// Files at least this big start their writeback as soon as they are written, so the
/// layer's final flush finds most data on disk already.
const WRITEBACK_THRESHOLD: u64 = 64 * 1024;
/// Copy buffer for file contents.
const COPY_BUFFER: usize = 256 * 1024;

/// What an applier may do beyond plain files (see [`super::UnpackOptions`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Privileges {
    /// chown and set `trusted.*`/`security.*` xattrs (running as root).
    pub(crate) root: bool,
    /// Create block and character devices.
    pub(crate) devices: bool,
}

/// Counters for the caller's log line and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EntryStats {
    /// Entries applied.
    pub entries: u64,
    /// Whiteouts stored.
    pub whiteouts: u64,
    /// Entries skipped (devices without permission, aufs metadata).
    pub skipped: u64,
}

/// Applies entries into one tree.
pub(crate) struct Applier {
    root: OwnedFd,
    privileges: Privileges,
    opaque_xattr: &'static str,
    dir_times: Vec<(PathBuf, Time)>,
    buffer: Vec<u8>,
    pub(crate) stats: EntryStats,
}

/// The metadata of one entry, PAX records applied.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Time,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl Applier {
    /// `root` must be an empty directory this process created.
    pub(crate) fn new(root: &Path, privileges: Privileges) -> io::Result<Self> {
        Ok(Self {
            root: sysfs::open_dir(root)?,
            privileges,
            opaque_xattr: whiteout::opaque_xattr(),
            dir_times: Vec::new(),
            buffer: vec![0; COPY_BUFFER],
            stats: EntryStats::default(),
        })
    }

    /// Applies one entry.
    pub(crate) fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let raw_path = entry.path_bytes().into_owned();
        let path = normalize(&raw_path)?;
        self.apply_at(entry, &path).map_err(|e| e.at(&path))
    }

    fn apply_at<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &Path) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let meta = read_meta(entry)?;
        let (parent, name) = match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) => (parent, name),
            _ => return self.apply_root(kind, &meta),
        };
        let name_str = name.to_str().unwrap_or_default();
        match whiteout::classify(name_str).map_err(UnpackError::refused)? {
            Marker::Opaque => return self.mark_opaque(parent),
            Marker::Whiteout(target) => return self.whiteout(parent, OsStr::new(target)),
            Marker::AufsMeta => {
                self.stats.skipped += 1;
                return Ok(());
            }
            Marker::None => {}
        }
        let dir = self.ensure_dir(parent)?;
        let dir = dir.as_fd();
        let existing = sysfs::stat_at(dir, name).map_err(|e| UnpackError::io("stat", e))?;
        let existing_type = existing.as_ref().map(sysfs::file_type);
        match kind {
            EntryType::Directory => {
                let was_whiteout = existing.as_ref().is_some_and(is_whiteout);
                if existing_type != Some(FileType::Directory) {
                    if existing.is_some() {
                        sysfs::remove_all_at(dir, name).map_err(|e| UnpackError::io("remove", e))?;
                    }
                    sysfs::mkdir_at(dir, name, 0o700).map_err(|e| UnpackError::io("mkdir", e))?;
                }
                let fd = sysfs::open_dir_at(dir, name).map_err(|e| UnpackError::io("open", e))?;
                let mode = if self.privileges.root { meta.mode } else { meta.mode | 0o700 };
                self.set_owner_mode_xattrs(fd.as_fd(), &meta, mode)?;
                if was_whiteout {
                    // `.wh.X` then `X/` in one layer: the lower X is gone, this X starts empty.
                    self.set_opaque(fd.as_fd())?;
                }
                self.dir_times.push((path.to_owned(), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(dir, name, existing_type)?;
                let mut file = sysfs::create_file_at(dir, name, 0o600).map_err(|e| UnpackError::io("create", e))?;
                let written = copy(entry, &mut file, &mut self.buffer)?;
                if written >= WRITEBACK_THRESHOLD {
                    sysfs::start_writeback(&file);
                }
                self.set_owner_mode_xattrs(file.as_fd(), &meta, meta.mode)?;
                sysfs::futimens(file.as_fd(), meta.mtime).map_err(|e| UnpackError::io("utimens", e))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::refused("symlink without a target"))?
                    .into_owned();
                if target.is_empty() || target.contains(&0) {
                    return Err(UnpackError::refused("symlink target is empty or holds a NUL byte"));
                }
                self.clear(dir, name, existing_type)?;
                sysfs::symlink_at(OsStr::from_bytes(&target), dir, name).map_err(|e| UnpackError::io("symlink", e))?;
                if self.privileges.root {
                    sysfs::chown_at(dir, name, meta.uid, meta.gid).map_err(|e| UnpackError::io("chown", e))?;
                }
                sysfs::utimens_at(dir, name, meta.mtime).map_err(|e| UnpackError::io("utimens", e))?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| UnpackError::refused("hardlink without a target"))?
                    .into_owned();
                self.hardlink(dir, name, existing_type, &target)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let special = match kind {
                    EntryType::Char => SpecialKind::Char,
                    EntryType::Block => SpecialKind::Block,
                    _ => SpecialKind::Fifo,
                };
                if special != SpecialKind::Fifo && !(self.privileges.root && self.privileges.devices) {
                    tracing::debug!(entry = ?path, "skipping device node (devices are not allowed)");
                    self.stats.skipped += 1;
                    return Ok(());
                }
                let major = header_number(entry.header().device_major())?;
                let minor = header_number(entry.header().device_minor())?;
                self.clear(dir, name, existing_type)?;
                sysfs::mknod_at(dir, name, special, 0o600, major, minor).map_err(|e| UnpackError::io("mknod", e))?;
                if self.privileges.root {
                    sysfs::chown_at(dir, name, meta.uid, meta.gid).map_err(|e| UnpackError::io("chown", e))?;
                }
                self.chmod_special(dir, name, meta.mode)?;
                sysfs::utimens_at(dir, name, meta.mtime).map_err(|e| UnpackError::io("utimens", e))?;
            }
            other => return Err(UnpackError::refused(format!("unsupported tar entry type {other:?}"))),
        }
        self.stats.entries += 1;
        Ok(())
    }

    /// A `./` entry: the layer root's own metadata. Anything but a directory there would
    /// replace the root (CVE-2021-29136) and is refused.
    fn apply_root(&mut self, kind: EntryType, meta: &Meta) -> Result<(), UnpackError> {
        if kind != EntryType::Directory {
            return Err(UnpackError::refused("entry would replace the layer root"));
        }
        let mode = if self.privileges.root { meta.mode } else { meta.mode | 0o700 };
        let root = self.root.try_clone().map_err(|e| UnpackError::io("dup", e))?;
        self.set_owner_mode_xattrs(root.as_fd(), meta, mode)?;
        self.dir_times.push((PathBuf::new(), meta.mtime));
        self.stats.entries += 1;
        Ok(())
    }

    /// Opens the entry's parent inside the root, creating missing directories one
    /// component at a time (archives may omit them).
    fn ensure_dir(&self, parent: &Path) -> Result<OwnedFd, UnpackError> {
        match sysfs::resolve_dir_in_root(self.root.as_fd(), parent, true) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(UnpackError::io("resolve parent", e)),
        }
        let mut prefix = PathBuf::new();
        let mut current = sysfs::resolve_dir_in_root(self.root.as_fd(), &prefix, true)
            .map_err(|e| UnpackError::io("open root", e))?;
        for component in parent.components() {
            prefix.push(component);
            match sysfs::resolve_dir_in_root(self.root.as_fd(), &prefix, true) {
                Ok(fd) => current = fd,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let name = component.as_os_str();
                    match sysfs::mkdir_at(current.as_fd(), name, IMPLIED_DIR_MODE) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            return Err(UnpackError::refused(format!(
                                "parent '{}' is a dangling symlink",
                                prefix.display()
                            )))
                        }
                        Err(e) => return Err(UnpackError::io("mkdir parent", e)),
                    }
                    current = sysfs::resolve_dir_in_root(self.root.as_fd(), &prefix, true)
                        .map_err(|e| UnpackError::io("resolve parent", e))?;
                }
                Err(e) => return Err(UnpackError::io("resolve parent", e)),
            }
        }
        Ok(current)
    }

    /// Removes what stands at `name` before a non-directory entry takes its place.
    fn clear(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        existing: Option<FileType>,
    ) -> Result<(), UnpackError> {
        match existing {
            None => Ok(()),
            Some(FileType::Directory) => sysfs::remove_all_at(dir, name).map_err(|e| UnpackError::io("remove", e)),
            Some(_) => sysfs::unlink_at(dir, name).map_err(|e| UnpackError::io("unlink", e)),
        }
    }

    fn hardlink(
        &self,
        dir: std::os::fd::BorrowedFd<'_>,
        name: &OsStr,
        existing: Option<FileType>,
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let target = normalize(target)?;
        let (Some(target_parent), Some(target_name)) = (target.parent(), target.file_name()) else {
            return Err(UnpackError::refused("hardlink to the layer root"));
        };
        let target_dir = sysfs::resolve_dir_in_root(self.root.as_fd(), target_parent, true).map_err(|e| {
            UnpackError::refused(format!("hardlink target '{}' not found in this layer: {e}", target.display()))
        })?;
        let target_stat =
            sysfs::stat_at(target_dir.as_fd(), target_name).map_err(|e| UnpackError::io("stat", e))?.ok_or_else(
                || UnpackError::refused(format!("hardlink target '{}' not found in this layer", target.display())),
            )?;
        if sysfs::file_type(&target_stat) == FileType::Directory {
            return Err(UnpackError::refused(format!("hardlink target '{}' is a directory", target.display())));
        }
        if let Some(here) = sysfs::stat_at(dir, name).map_err(|e| UnpackError::io("stat", e))? {
            if here.st_ino == target_stat.st_ino && here.st_dev == target_stat.st_dev {
                return Ok(());
            }
        }
        self.clear(dir, name, existing)?;
        sysfs::link_at(target_dir.as_fd(), target_name, dir, name).map_err(|e| UnpackError::io("link", e))
    }

    /// `.wh.NAME`: store a 0/0 char device NAME, unless this layer itself has NAME
    /// (a whiteout only deletes from lower layers). A directory of this layer at NAME
    /// becomes opaque instead, so that lower contents stay hidden.
    fn whiteout(&mut self, parent: &Path, target: &OsStr) -> Result<(), UnpackError> {
        let dir = self.ensure_dir(parent)?;
        match sysfs::stat_at(dir.as_fd(), target).map_err(|e| UnpackError::io("stat", e))? {
            Some(st) if sysfs::file_type(&st) == FileType::Directory => {
                let fd = sysfs::open_dir_at(dir.as_fd(), target).map_err(|e| UnpackError::io("open", e))?;
                self.set_opaque(fd.as_fd())?;
            }
            Some(_) => {}
            None => {
                sysfs::mknod_at(dir.as_fd(), target, SpecialKind::Char, 0, 0, 0)
                    .map_err(|e| UnpackError::io("mknod whiteout", e))?;
            }
        }
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// `.wh..wh..opq`: the parent hides everything below it.
    fn mark_opaque(&mut self, parent: &Path) -> Result<(), UnpackError> {
        self.ensure_dir(parent)?;
        let fd = sysfs::resolve_dir_in_root(self.root.as_fd(), parent, false)
            .map_err(|e| UnpackError::io("open opaque dir", e))?;
        self.set_opaque(fd.as_fd())?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    fn set_opaque(&self, fd: std::os::fd::BorrowedFd<'_>) -> Result<(), UnpackError> {
        sysfs::fsetxattr(fd, self.opaque_xattr, b"y").map_err(|e| UnpackError::io("set opaque xattr", e))
    }

    fn set_owner_mode_xattrs(
        &self,
        fd: std::os::fd::BorrowedFd<'_>,
        meta: &Meta,
        mode: u32,
    ) -> Result<(), UnpackError> {
        if self.privileges.root {
            sysfs::fchown(fd, meta.uid, meta.gid).map_err(|e| UnpackError::io("chown", e))?;
        }
        // After chown, which clears setuid/setgid.
        sysfs::fchmod(fd, mode).map_err(|e| UnpackError::io("chmod", e))?;
        for (name, value) in &meta.xattrs {
            if let Err(e) = sysfs::fsetxattr(fd, name, value) {
                // As tar does: a file system or a user that cannot hold the attribute
                // loses it, with a warning, rather than failing the image.
                tracing::warn!(xattr = ?name, error = %e, "could not set xattr");
            }
        }
        Ok(())
    }

    fn chmod_special(&self, dir: std::os::fd::BorrowedFd<'_>, name: &OsStr, mode: u32) -> Result<(), UnpackError> {
        sysfs::chmod_special_at(dir, name, mode).map_err(|e| UnpackError::io("chmod", e))
    }

    /// Sets directory times last, since creating entries inside a directory changes them.
    pub(crate) fn finish(&mut self) -> Result<(), UnpackError> {
        for (path, time) in std::mem::take(&mut self.dir_times) {
            let result = match (path.parent(), path.file_name()) {
                (Some(parent), Some(name)) => sysfs::resolve_dir_in_root(self.root.as_fd(), parent, true)
                    .and_then(|dir| sysfs::utimens_at(dir.as_fd(), name, time)),
                _ => sysfs::futimens(self.root.as_fd(), time),
            };
            match result {
                Ok(()) => {}
                // Replaced or removed by a later entry.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(UnpackError::io("set directory times", e).at(&path)),
            }
        }
        Ok(())
    }
}

fn is_whiteout(st: &sysfs::Stat) -> bool {
    sysfs::file_type(st) == FileType::CharacterDevice && st.st_rdev == 0
}

/// Turns an archive path into components relative to the root: leading `/` and `.`
/// components dropped (absolute names are contained), `..` refused, names checked.
pub(crate) fn normalize(raw: &[u8]) -> Result<PathBuf, UnpackError> {
    if raw.contains(&0) {
        return Err(UnpackError::refused("path holds a NUL byte"));
    }
    if raw.len() > MAX_PATH_LEN {
        return Err(UnpackError::refused("path is longer than PATH_MAX"));
    }
    let mut out = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::refused(format!(
                    "path '{}' climbs out with '..'",
                    String::from_utf8_lossy(raw)
                )))
            }
            Component::Normal(name) => {
                if name.len() > MAX_NAME_LEN {
                    return Err(UnpackError::refused("a path component is longer than NAME_MAX"));
                }
                out.push(name);
            }
            Component::Prefix(_) => return Err(UnpackError::refused("path has a prefix")),
        }
    }
    Ok(out)
}

fn header_number(n: io::Result<Option<u32>>) -> Result<u32, UnpackError> {
    n.map_err(|e| UnpackError::refused(format!("bad header field: {e}"))).map(Option::unwrap_or_default)
}

fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, UnpackError> {
    let header = entry.header();
    let bad = |what: &str, e: io::Error| UnpackError::refused(format!("bad {what} in tar header: {e}"));
    let mode = header.mode().map_err(|e| bad("mode", e))?;
    let mut uid = u32::try_from(header.uid().map_err(|e| bad("uid", e))?)
        .map_err(|_| UnpackError::refused("uid out of range"))?;
    let mut gid = u32::try_from(header.gid().map_err(|e| bad("gid", e))?)
        .map_err(|_| UnpackError::refused("gid out of range"))?;
    let secs = header.mtime().map_err(|e| bad("mtime", e))?;
    let mut mtime = Time { secs: i64::try_from(secs).unwrap_or(i64::MAX), nanos: 0 };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
        for ext in pax {
            let ext = ext.map_err(|e| bad("PAX record", e))?;
            let key = ext.key().map_err(|_| UnpackError::refused("PAX key is not UTF-8"))?;
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_pax_id(value)?,
                "gid" => gid = parse_pax_id(value)?,
                "mtime" => mtime = parse_pax_time(value)?,
                k => {
                    if let Some(name) = k.strip_prefix(PAX_XATTR_PREFIX) {
                        if whiteout::is_allowed_xattr(name) {
                            xattrs.push((name.to_owned(), value.to_vec()));
                        } else {
                            tracing::warn!(xattr = ?name, "dropping overlay xattr from the archive");
                        }
                    }
                }
            }
        }
    }
    Ok(Meta { mode, uid, gid, mtime, xattrs })
}

fn parse_pax_id(value: &[u8]) -> Result<u32, UnpackError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| UnpackError::refused("PAX uid/gid is not a 32-bit number"))
}

/// PAX `mtime`: decimal seconds with an optional fraction, possibly negative.
fn parse_pax_time(value: &[u8]) -> Result<Time, UnpackError> {
    let bad = || UnpackError::refused("PAX mtime is malformed");
    let s = std::str::from_utf8(value).map_err(|_| bad())?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().map_err(|_| bad())?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let nanos: u32 = digits.parse().map_err(|_| bad())?;
    if secs < 0 && nanos > 0 {
        return Ok(Time { secs: secs - 1, nanos: 1_000_000_000 - nanos });
    }
    Ok(Time { secs, nanos })
}

fn copy<R: Read>(from: &mut R, to: &mut std::fs::File, buffer: &mut [u8]) -> Result<u64, UnpackError> {
    let mut total = 0u64;
    loop {
        let n = match from.read(buffer) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UnpackError::io("read layer", e)),
        };
        to.write_all(&buffer[..n]).map_err(|e| UnpackError::io("write", e))?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_paths() {
        assert_eq!(normalize(b"./a/b/").unwrap(), PathBuf::from("a/b"));
        assert_eq!(normalize(b"/etc/passwd").unwrap(), PathBuf::from("etc/passwd"));
        assert_eq!(normalize(b"./").unwrap(), PathBuf::new());
        assert!(normalize(b"../x").is_err());
        assert!(normalize(b"a/../../x").is_err());
        assert!(normalize(b"a\0b").is_err());
        assert!(normalize(&[b'a'; 256]).is_err());
    }

    #[test]
    fn pax_times() {
        assert_eq!(parse_pax_time(b"1700000000.5").unwrap(), Time { secs: 1_700_000_000, nanos: 500_000_000 });
        assert_eq!(parse_pax_time(b"12").unwrap(), Time { secs: 12, nanos: 0 });
        assert_eq!(parse_pax_time(b"-1.25").unwrap(), Time { secs: -2, nanos: 750_000_000 });
        assert!(parse_pax_time(b"x").is_err());
    }
}
