//! Secure streaming unpack of one layer blob, in one pass:
//!
//! ```text
//! blob ─▶ sha256 + size check ─▶ gunzip/zstd/none ─▶ sha256 (diff_id) + byte cap ─▶ tar ─▶ Applier
//! ```
//!
//! Nothing is buffered whole; the blob digest, its size and the diff_id are checked
//! when the stream ends, and a mismatch fails the unpack. The caller unpacks into a
//! private staging directory and commits it only on success (see `store`), so a
//! failed or hostile layer leaves nothing behind. Unpacking is blocking work.

pub(crate) mod budget;
mod decompress;
mod entry;
mod error;
mod readahead;
pub mod whiteout;

use std::io::{self, Read};
use std::path::Path;

pub use self::entry::EntryStats;
pub use self::error::{UnpackError, UnpackErrorKind};
use crate::digest::{Digest, HashingReader};
use crate::image::media_type::Compression;

/// Default cap on the uncompressed bytes of one layer.
pub const DEFAULT_MAX_LAYER_BYTES: u64 = 64 * 1024 * 1024 * 1024;

/// Default cap on a zstd frame's window, as a power of two: 27 (128 MiB), zstd's own
/// default. The decoder holds a window-sized buffer, so a frame that declares a 2 GiB
/// window (`--long=31`) costs up to 2 GiB of memory per layer, from a few bytes of
/// hostile input; such layers need the cap raised on purpose.
pub const DEFAULT_MAX_ZSTD_WINDOW_LOG: u32 = 27;

/// How to unpack.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnpackOptions {
    /// Cap on the uncompressed bytes of the layer; over it the unpack fails.
    /// Default [`DEFAULT_MAX_LAYER_BYTES`] (64 GiB).
    pub max_layer_bytes: u64,
    /// Create block and character device nodes (only as root). Off by default:
    /// container runtimes provide `/dev`, and a device node in an image is a way in.
    pub allow_devices: bool,
    /// Largest zstd window accepted, as a power of two (10 to 31). Default
    /// [`DEFAULT_MAX_ZSTD_WINDOW_LOG`] (128 MiB); 31 accepts `zstd --long=31` layers
    /// at up to 2 GiB of memory each.
    pub max_zstd_window_log: u32,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            max_layer_bytes: DEFAULT_MAX_LAYER_BYTES,
            allow_devices: false,
            max_zstd_window_log: DEFAULT_MAX_ZSTD_WINDOW_LOG,
        }
    }
}

impl UnpackOptions {
    /// Sets the cap on uncompressed bytes.
    #[must_use]
    pub fn with_max_layer_bytes(mut self, max: u64) -> Self {
        self.max_layer_bytes = max;
        self
    }

    /// Allows device nodes (effective only as root).
    #[must_use]
    pub fn with_devices(mut self, allow: bool) -> Self {
        self.allow_devices = allow;
        self
    }

    /// Sets the largest zstd window accepted (a power of two, clamped to 10..=31).
    #[must_use]
    pub fn with_max_zstd_window_log(mut self, log: u32) -> Self {
        self.max_zstd_window_log = log.clamp(10, 31);
        self
    }
}

/// Size of a tar header block.
pub const TAR_BLOCK: usize = 512;

/// Does `block` (the first [`TAR_BLOCK`] bytes of a file) hold a tar header whose
/// checksum verifies? Used to tell "this is not a tar archive" apart from a damaged
/// one before the tar parser quotes a random file's bytes back in its error. Any tar
/// format passes (v7, ustar, GNU, PAX): they share the checksum.
pub fn is_tar_header(block: &[u8]) -> bool {
    /// The `chksum` field: 8 bytes at offset 148, octal, summed as if spaces.
    const CHKSUM: std::ops::Range<usize> = 148..156;
    let Some(block) = block.get(..TAR_BLOCK) else { return false };
    let digits = block[CHKSUM].iter().skip_while(|b| **b == b' ').take_while(|b| (b'0'..=b'7').contains(b));
    let recorded = digits.fold(0u32, |acc, b| acc.saturating_mul(8).saturating_add(u32::from(b - b'0')));
    let sum: u32 =
        block.iter().enumerate().map(|(i, b)| if CHKSUM.contains(&i) { u32::from(b' ') } else { u32::from(*b) }).sum();
    recorded == sum
}

/// What the blob is supposed to be; each `Some` is checked.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// The descriptor's digest of the (compressed) blob.
    pub digest: Option<Digest>,
    /// The descriptor's size of the blob.
    pub size: Option<u64>,
    /// The config's diff_id: digest of the uncompressed tar.
    pub diff_id: Option<Digest>,
    /// The compression the media type declares; `None`: detect from the magic bytes.
    pub compression: Option<Compression>,
}

/// The facts of an unpacked layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Digest of the blob as read.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    /// Size of the uncompressed tar.
    pub uncompressed_size: u64,
    /// The compression found.
    pub compression: Compression,
    /// Entry counters.
    pub stats: EntryStats,
}

/// Unpacks `blob` into `dest` (an empty directory this process made), checking
/// everything `expected` says. On error, `dest` holds a partial tree the caller
/// must discard; nothing outside `dest` has been touched either way.
pub fn unpack(
    blob: impl Read + Send,
    expected: &Expected,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    unpack_stream(blob, expected, dest, options).map_err(|e| e.blob_overrun(expected.size, options.max_layer_bytes))
}

fn unpack_stream(
    blob: impl Read + Send,
    expected: &Expected,
    dest: &Path,
    options: &UnpackOptions,
) -> Result<Unpacked, UnpackError> {
    let size_limit = expected.size.unwrap_or(u64::MAX);
    let map_io = |op: &'static str| move |e: io::Error| UnpackError::io(op, e);
    let compressed = HashingReader::new(blob, size_limit);
    let (decoder, compression) =
        decompress::Decoder::new(compressed, expected.compression, options.max_zstd_window_log)
            .map_err(|(declared, found)| UnpackError::new(UnpackErrorKind::CompressionMismatch { declared, found }))?;
    let privileges = entry::Privileges { root: crate::sys::is_root(), devices: options.allow_devices };
    let mut applier = entry::Applier::new(dest, privileges).map_err(|e| UnpackError::io("open destination", e))?;

    let (stats, uncompressed, decoder) = std::thread::scope(|scope| {
        // Reading, the blob hash and inflating on one core; the diff_id hash, tar
        // parsing and file creation on the other: the two halves cost about the same.
        let (chunks, producer) = readahead::spawn(scope, decoder);
        let budget = budget::Budget::default();
        let tar_stream = budget::Metered::new(HashingReader::new(chunks, options.max_layer_bytes), budget.clone());
        let mut archive = tar::Archive::new(tar_stream);
        let applied = (|| {
            let mut entries = archive.entries().map_err(map_io("read tar"))?;
            // Bounded while the parser finds an entry (it holds long names and PAX
            // records in memory); each entry's data is drained here, so that phase
            // reads metadata only.
            while let Some(item) = budget.bounded(budget::MAX_ENTRY_METADATA, || entries.next()) {
                let mut item = item.map_err(map_io("read tar"))?;
                applier.apply(&mut item)?;
                io::copy(&mut item, &mut io::sink()).map_err(map_io("read tar"))?;
            }
            applier.finish()?;
            // The diff_id covers the whole tar stream, past the end-of-archive blocks.
            let mut uncompressed = archive.into_inner().into_inner();
            uncompressed.drain().map_err(map_io("read layer"))?;
            Ok::<_, UnpackError>((applier.stats, uncompressed.digest(), uncompressed.count()))
        })();
        let decoder = producer.join().map_err(|_| UnpackError::refused("the decompression thread panicked"));
        let (stats, diff_id, size) = applied?;
        Ok::<_, UnpackError>((stats, (diff_id, size), decoder?))
    })?;
    let (diff_id, uncompressed_size) = uncompressed;
    let mut source = decoder.into_source();
    io::copy(&mut source, &mut io::sink()).map_err(map_io("read blob"))?;
    let compressed = source.into_inner();
    let (digest, size) = (compressed.digest(), compressed.count());

    if let Some(expected_size) = expected.size {
        if size != expected_size {
            return Err(UnpackError::new(UnpackErrorKind::SizeMismatch { expected: expected_size, actual: size }));
        }
    }
    if let Some(expected_digest) = &expected.digest {
        if *expected_digest != digest {
            return Err(UnpackError::new(UnpackErrorKind::DigestMismatch {
                expected: expected_digest.clone(),
                actual: digest,
            }));
        }
    }
    if let Some(expected_diff_id) = &expected.diff_id {
        if *expected_diff_id != diff_id {
            return Err(UnpackError::new(UnpackErrorKind::DiffIdMismatch {
                expected: expected_diff_id.clone(),
                actual: diff_id,
            }));
        }
    }
    Ok(Unpacked { digest, size, diff_id, uncompressed_size, compression, stats })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GNU long-name record claiming `size` bytes, then a file: streamed, never
    /// built in memory here either.
    fn long_name_record(size: u64) -> impl Read + Send {
        let mut long = tar::Header::new_gnu();
        long.set_path("././@LongLink").unwrap();
        long.set_entry_type(tar::EntryType::GNULongName);
        long.set_size(size);
        long.set_cksum();
        let padding = (TAR_BLOCK as u64 - size % TAR_BLOCK as u64) % TAR_BLOCK as u64;
        let mut file = tar::Header::new_gnu();
        file.set_path("f").unwrap();
        file.set_size(0);
        file.set_mode(0o644);
        file.set_mtime(0);
        file.set_uid(0);
        file.set_gid(0);
        file.set_cksum();
        io::Cursor::new(long.as_bytes().to_vec())
            .chain(io::repeat(b'a').take(size - 1))
            .chain(io::repeat(0).take(1 + padding))
            .chain(io::Cursor::new(file.as_bytes().to_vec()))
            .chain(io::repeat(0).take(2 * TAR_BLOCK as u64))
    }

    #[test]
    fn a_huge_long_name_is_refused_before_it_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("d");
        std::fs::create_dir(&dest).unwrap();
        let err =
            unpack(long_name_record(1 << 30), &Expected::default(), &dest, &UnpackOptions::default()).unwrap_err();
        assert!(err.to_string().contains("exceed 4 MiB"), "{err}");
        // A long name of real length passes.
        let dest = dir.path().join("ok");
        std::fs::create_dir(&dest).unwrap();
        unpack(long_name_record(201), &Expected::default(), &dest, &UnpackOptions::default()).unwrap();
        assert!(dest.join("a".repeat(200)).is_file(), "the long name names the file");
    }

    #[test]
    fn tar_headers_are_told_from_other_files() {
        for mut header in [tar::Header::new_gnu(), tar::Header::new_ustar(), tar::Header::new_old()] {
            header.set_path("etc/hostname").unwrap();
            header.set_size(3);
            header.set_cksum();
            assert!(is_tar_header(header.as_bytes()));
            let mut damaged = header.as_bytes().to_vec();
            damaged[0] ^= 1;
            assert!(!is_tar_header(&damaged));
            assert!(!is_tar_header(&header.as_bytes()[..TAR_BLOCK - 1]), "a short file");
        }
        let text = b"root:x:0:0:root:/root:/bin/bash\n".repeat(20);
        assert!(!is_tar_header(&text));
        assert!(!is_tar_header(&[0u8; TAR_BLOCK]), "an end-of-archive block is no header");
    }
}
