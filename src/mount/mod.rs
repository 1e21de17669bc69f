//! Finding and undoing mounts: `/proc/self/mountinfo` parsing and the recursive,
//! deepest-first, lazy unmount every destroy and recover uses.

use std::path::{Path, PathBuf};

use crate::sys::{self, Context, SysError};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// One line of mountinfo: what we need of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountPoint {
    /// Where it is mounted.
    pub target: PathBuf,
    /// The file system type (`overlay`, `ext4`, …).
    pub fs_type: String,
}

/// Parses mountinfo text (proc(5)); lines that do not parse are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountPoint> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let target = fields.get(4)?;
            let separator = fields.iter().position(|f| *f == "-")?;
            let fs_type = fields.get(separator + 1)?;
            Some(MountPoint { target: PathBuf::from(unescape(target)), fs_type: unescape(fs_type) })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let value = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(value);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The current mounts of this process's namespace.
pub fn mounts() -> Result<Vec<MountPoint>, SysError> {
    let text = std::fs::read_to_string(MOUNTINFO).context("read", MOUNTINFO)?;
    Ok(parse_mountinfo(&text))
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, SysError> {
    let mut found: Vec<PathBuf> = mounts()?.into_iter().map(|m| m.target).filter(|t| t.starts_with(dir)).collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Lazily unmounts everything at or below `dir`, deepest first, including stacked
/// mounts on one point. Returns how many unmounts were made.
pub fn unmount_all_under(dir: &Path) -> Result<usize, SysError> {
    let mut count = 0;
    // A point may carry several stacked mounts; loop until none is left.
    for _ in 0..64 {
        let targets = mounts_under(dir)?;
        if targets.is_empty() {
            return Ok(count);
        }
        for target in targets {
            match sys::mount::unmount_lazy(&target) {
                Ok(()) => count += 1,
                // Already gone (a parent's detach took it along).
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) || e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(SysError::new("umount", &target, e)),
            }
        }
    }
    Err(SysError::new("umount", dir, std::io::Error::other("mounts keep reappearing")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    37 35 0:30 / /var/lib/strata/provisioner/containers/c1/backends/overlay/rootfses/x rw shared:5 - overlay overlay rw,lowerdir=a\n\
                    garbage line\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].fs_type, "ext3");
        assert_eq!(m[1].fs_type, "overlay");
    }
}
