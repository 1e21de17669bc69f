//! The unpacker's error: what went wrong, and on which archive entry.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::image::media_type::Compression;

/// Unpacking a layer failed; nothing of it was committed.
#[derive(Debug)]
pub struct UnpackError {
    inner: Box<Inner>,
}

#[derive(Debug)]
struct Inner {
    entry: Option<PathBuf>,
    kind: UnpackErrorKind,
}

/// The reasons an unpack fails.
#[derive(Debug)]
#[non_exhaustive]
pub enum UnpackErrorKind {
    /// Reading the blob or writing the tree failed.
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        source: io::Error,
    },
    /// The blob's digest differs from the descriptor's: corrupt or tampered.
    DigestMismatch {
        /// The descriptor's digest.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The blob's length differs from the descriptor's.
    SizeMismatch {
        /// The descriptor's size.
        expected: u64,
        /// Bytes actually read.
        actual: u64,
    },
    /// The uncompressed tar's digest differs from the config's `diff_id`.
    DiffIdMismatch {
        /// The config's diff_id.
        expected: Digest,
        /// What the tar hashes to.
        actual: Digest,
    },
    /// More uncompressed bytes than the configured cap (a decompression bomb, or a cap too small).
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// The media type says one compression, the bytes another.
    CompressionMismatch {
        /// Declared by the media type.
        declared: Compression,
        /// Found in the magic bytes.
        found: Compression,
    },
    /// The archive is malformed or an entry is refused (escape attempt, bad whiteout, …).
    Refused(String),
}

impl UnpackError {
    pub(crate) fn new(kind: UnpackErrorKind) -> Self {
        Self { inner: Box::new(Inner { entry: None, kind }) }
    }

    pub(crate) fn refused(why: impl Into<String>) -> Self {
        Self::new(UnpackErrorKind::Refused(why.into()))
    }

    /// An I/O failure; a cap crossed in a [`crate::digest::HashingReader`] becomes
    /// [`UnpackErrorKind::TooLarge`] (the caller turns it into a size mismatch when the
    /// cap was the descriptor's size).
    pub(crate) fn io(op: &'static str, source: io::Error) -> Self {
        match crate::digest::LimitExceeded::find(&source) {
            Some(hit) => Self::new(UnpackErrorKind::TooLarge { limit: hit.limit }),
            None => Self::new(UnpackErrorKind::Io { op, source }),
        }
    }

    /// Reinterprets a cap hit at `blob_size` as the blob being longer than declared.
    pub(crate) fn blob_overrun(self, blob_size: Option<u64>, max_layer_bytes: u64) -> Self {
        match (&self.inner.kind, blob_size) {
            (UnpackErrorKind::TooLarge { limit }, Some(size)) if *limit == size && size != max_layer_bytes => Self {
                inner: Box::new(Inner {
                    entry: self.inner.entry,
                    kind: UnpackErrorKind::SizeMismatch { expected: size, actual: size + 1 },
                }),
            },
            _ => self,
        }
    }

    pub(crate) fn at(mut self, entry: &Path) -> Self {
        if self.inner.entry.is_none() {
            self.inner.entry = Some(entry.to_owned());
        }
        self
    }

    /// The archive entry being applied when it failed, if any.
    pub fn entry(&self) -> Option<&Path> {
        self.inner.entry.as_deref()
    }

    /// What failed.
    pub fn kind(&self) -> &UnpackErrorKind {
        &self.inner.kind
    }

    /// Is this a refused (hostile or malformed) archive, as opposed to an I/O or integrity failure?
    pub fn is_refused(&self) -> bool {
        matches!(self.inner.kind, UnpackErrorKind::Refused(_))
    }
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(entry) = &self.inner.entry {
            write!(f, "entry '{}': ", entry.display())?;
        }
        match &self.inner.kind {
            UnpackErrorKind::Io { op, source } => write!(f, "{op}: {source}"),
            UnpackErrorKind::DigestMismatch { expected, actual } => {
                write!(f, "blob digest mismatch: expected {expected}, got {actual}")
            }
            UnpackErrorKind::SizeMismatch { expected, actual } => {
                write!(f, "blob size mismatch: expected {expected} bytes, got {actual}")
            }
            UnpackErrorKind::DiffIdMismatch { expected, actual } => {
                write!(f, "diff_id mismatch: the config says {expected}, the uncompressed layer is {actual}")
            }
            UnpackErrorKind::TooLarge { limit } => {
                write!(f, "uncompressed layer exceeds the limit of {limit} bytes (max_layer_bytes)")
            }
            UnpackErrorKind::CompressionMismatch { declared, found } => {
                write!(f, "media type declares {declared:?} compression but the blob is {found:?}")
            }
            UnpackErrorKind::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.inner.kind {
            UnpackErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
