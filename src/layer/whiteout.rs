//! OCI whiteouts and their overlayfs form.
//!
//! In a layer tar, `.wh.NAME` deletes NAME from the layers below and `.wh..wh..opq`
//! hides everything below in its directory (OCI image spec, "Whiteouts"). The store
//! keeps them the way overlayfs reads a lower dir: a 0/0 character device named NAME,
//! and the xattr `trusted.overlay.opaque=y` (`user.overlay.opaque` when not root, which
//! is what overlayfs's `userxattr` mode reads). The copy backend applies the same marks.

/// Prefix of a whiteout entry's name.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// The opaque-directory marker's name.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The opaque xattr overlayfs reads as root.
pub const OPAQUE_XATTR_TRUSTED: &str = "trusted.overlay.opaque";
/// The opaque xattr overlayfs reads with `userxattr` (unprivileged).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";
/// xattr namespaces an archive may not set: they would let a layer forge whiteouts or
/// redirects and hide lower files.
const FORBIDDEN_XATTR_PREFIXES: &[&str] = &["trusted.overlay.", "user.overlay."];

/// What an entry's final path component means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker<'a> {
    /// An ordinary name.
    None,
    /// `.wh..wh..opq`: the parent directory is opaque.
    Opaque,
    /// `.wh.NAME`: NAME is deleted.
    Whiteout(&'a str),
    /// `.wh..wh.*` other than the opaque marker: aufs bookkeeping (`.wh..wh.plnk`),
    /// meaningless outside aufs and skipped, as Docker does.
    AufsMeta,
}

/// Prefix of aufs' own metadata names.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// Classifies a final path component. Whiteout names that are not a plain file name
/// (`.wh.`, `.wh..`, `.wh...`) are refused: appliers that took them have deleted the
/// parent or the work root (stereoscope#647).
pub(crate) fn classify(name: &str) -> Result<Marker<'_>, String> {
    if name == OPAQUE_MARKER {
        return Ok(Marker::Opaque);
    }
    if name.starts_with(AUFS_META_PREFIX) {
        return Ok(Marker::AufsMeta);
    }
    let Some(target) = name.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(Marker::None);
    };
    if target.is_empty() || target == "." || target == ".." || target.contains('/') {
        return Err(format!("whiteout '{name}' does not name a file"));
    }
    Ok(Marker::Whiteout(target))
}

/// May an archive set this xattr?
pub(crate) fn is_allowed_xattr(name: &str) -> bool {
    !FORBIDDEN_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The opaque xattr this process can set and overlayfs will read.
pub(crate) fn opaque_xattr() -> &'static str {
    if crate::sys::is_root() {
        OPAQUE_XATTR_TRUSTED
    } else {
        OPAQUE_XATTR_USER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        let cases: &[(&str, Result<Marker<'_>, ()>)] = &[
            ("file", Ok(Marker::None)),
            (".wh..wh..opq", Ok(Marker::Opaque)),
            (".wh.file", Ok(Marker::Whiteout("file"))),
            (".wh..hidden", Ok(Marker::Whiteout(".hidden"))),
            (".wh.", Err(())),
            (".wh..", Err(())),
            (".wh...", Err(())),
            (".wh..wh.plnk", Ok(Marker::AufsMeta)),
        ];
        for (name, want) in cases {
            assert_eq!(classify(name).map_err(|_| ()), *want, "{name}");
        }
    }

    #[test]
    fn overlay_xattrs_are_forbidden() {
        assert!(!is_allowed_xattr("trusted.overlay.opaque"));
        assert!(!is_allowed_xattr("user.overlay.redirect"));
        assert!(is_allowed_xattr("security.capability"));
        assert!(is_allowed_xattr("user.mime_type"));
    }
}
