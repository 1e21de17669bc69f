//! Decompression of a layer stream: gzip (all members), zstd (window capped), or none,
//! chosen by the declared media type and checked against the stream's magic bytes.

use std::io::{self, BufRead, BufReader, Read};

use crate::image::media_type::Compression;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Identifies the compression of a stream from its first bytes.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A decoder over a buffered source; gives the source back so that trailing bytes can be
/// read (and hashed) after the tar ends.
#[allow(clippy::large_enum_variant)] // one per layer, on the stack of one thread: boxing buys nothing
pub(crate) enum Decoder<R: Read> {
    Plain(BufReader<R>),
    Gzip(flate2::bufread::MultiGzDecoder<BufReader<R>>),
    Zstd(zstd::stream::read::Decoder<'static, BufReader<R>>, u32),
}

impl<R: Read> Decoder<R> {
    /// Peeks at the stream and builds the decoder. `declared` is what the media type
    /// says (`None`: trust the magic bytes, as for `docker save` archives). Returns the
    /// compression actually found.
    /// `max_zstd_window_log` caps the window a zstd frame may ask for.
    pub(crate) fn new(
        inner: R,
        declared: Option<Compression>,
        max_zstd_window_log: u32,
    ) -> Result<(Self, Compression), (Compression, Compression)> {
        let mut buf = BufReader::with_capacity(256 * 1024, inner);
        let found = match buf.fill_buf() {
            Ok(head) => sniff(head),
            Err(_) => Compression::None, // the read error resurfaces on the next read
        };
        let compression = match declared {
            // Docker's tar.gzip media type is also used for plain tars in the wild
            // (docker save, some builders); accept an uncompressed body under it.
            Some(Compression::Gzip) if found == Compression::None => Compression::None,
            Some(d) if d != found => return Err((d, found)),
            _ => found,
        };
        let decoder = match compression {
            Compression::None => Self::Plain(buf),
            Compression::Gzip => Self::Gzip(flate2::bufread::MultiGzDecoder::new(buf)),
            Compression::Zstd => {
                let mut d = zstd::stream::read::Decoder::with_buffer(buf).map_err(|_| (compression, found))?;
                d.window_log_max(max_zstd_window_log).map_err(|_| (compression, found))?;
                Self::Zstd(d, max_zstd_window_log)
            }
        };
        Ok((decoder, compression))
    }

    /// The buffered source, positioned after what the decoder consumed.
    pub(crate) fn into_source(self) -> BufReader<R> {
        match self {
            Self::Plain(b) => b,
            Self::Gzip(d) => d.into_inner(),
            Self::Zstd(d, _) => d.finish(),
        }
    }
}

impl<R: Read> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(r) => r.read(buf),
            Self::Gzip(r) => r.read(buf),
            Self::Zstd(r, max_log) => r.read(buf).map_err(|e| {
                // libzstd's words for a frame over the window cap.
                if e.to_string().contains("too much memory") {
                    io::Error::other(format!(
                        "the zstd frame needs a window over the {} MiB cap (a layer compressed with \
                         zstd --long?); raise [unpack] max_zstd_window_log (up to 31) to accept it",
                        (1u64 << *max_log) >> 20
                    ))
                } else {
                    e
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let mut two = gzip(b"first\n");
        two.extend(gzip(b"second\n"));
        let (mut d, c) = Decoder::new(&two[..], Some(Compression::Gzip), 27).unwrap();
        assert_eq!(c, Compression::Gzip);
        let mut out = String::new();
        d.read_to_string(&mut out).unwrap();
        assert_eq!(out, "first\nsecond\n");
    }

    #[test]
    fn zstd_long_windows_need_the_cap_raised() {
        let data = vec![7u8; 1 << 20];
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.long_distance_matching(true).unwrap();
        enc.window_log(31).unwrap();
        enc.write_all(&data).unwrap();
        let z = enc.finish().unwrap();
        let (mut d, _) =
            Decoder::new(&z[..], Some(Compression::Zstd), crate::layer::DEFAULT_MAX_ZSTD_WINDOW_LOG).unwrap();
        let err = d.read_to_end(&mut Vec::new()).unwrap_err().to_string();
        assert!(err.contains("128 MiB cap") && err.contains("max_zstd_window_log"), "{err}");
        let (mut d, _) = Decoder::new(&z[..], Some(Compression::Zstd), 31).unwrap();
        let mut out = Vec::new();
        d.read_to_end(&mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn declared_type_must_match_magic() {
        let z = zstd::encode_all(&b"x"[..], 1).unwrap();
        assert!(Decoder::new(&z[..], Some(Compression::Gzip), 27).is_err());
        assert!(Decoder::new(&gzip(b"x")[..], Some(Compression::Zstd), 27).is_err());
        assert!(Decoder::new(&gzip(b"x")[..], Some(Compression::None), 27).is_err());
        assert!(Decoder::new(&b"plain tar"[..], Some(Compression::Gzip), 27).is_ok());
    }
}
