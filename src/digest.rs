//! Content digests (`sha256:<64 hex>`) and readers that hash what flows through them.
//!
//! A digest string from a manifest or a registry is hostile until parsed here: the
//! algorithm is allow-listed and the hex checked before it can become a path or a URL
//! (CVE-2024-3727 came from skipping that).

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// The only algorithm the store accepts (OCI image spec, "Digests": sha256 is required).
pub const SHA256: &str = "sha256";
const SHA256_HEX_LEN: usize = 64;

/// A validated content digest: algorithm `sha256` and 64 lower-case hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    hex: String,
}

/// Why a digest string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DigestError {
    /// There is no `algorithm:` prefix.
    #[error("digest '{0}' has no algorithm prefix (expected sha256:<hex>)")]
    MissingAlgorithm(String),
    /// The algorithm is not sha256.
    #[error("digest '{0}' uses an unsupported algorithm (only sha256 is accepted)")]
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length or characters.
    #[error("digest '{0}' is not 64 lower-case hex characters after 'sha256:'")]
    BadHex(String),
}

impl Digest {
    /// Builds a digest from the raw 32-byte sha256 output.
    pub fn from_sha256_bytes(bytes: &[u8]) -> Self {
        Self { hex: hex_encode(bytes) }
    }

    /// Hashes a byte slice.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self::from_sha256_bytes(&Sha256::digest(bytes))
    }

    /// Parses a bare hex string (the form used in blob paths and `docker save` ids).
    pub fn from_hex(hex: &str) -> Result<Self, DigestError> {
        if hex.len() == SHA256_HEX_LEN && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self { hex: hex.to_owned() })
        } else {
            Err(DigestError::BadHex(format!("{SHA256}:{hex}")))
        }
    }

    /// The algorithm name, always `sha256`.
    pub fn algorithm(&self) -> &'static str {
        SHA256
    }

    /// The lower-case hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The first 12 hex characters, for humans.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::MissingAlgorithm(s.to_owned()));
        };
        if alg != SHA256 {
            return Err(DigestError::UnsupportedAlgorithm(s.to_owned()));
        }
        Self::from_hex(hex).map_err(|_| DigestError::BadHex(s.to_owned()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SHA256}:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn hex_encode(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0x0f)]));
    }
    out
}

/// A reader that hashes and counts every byte read through it, and refuses to
/// yield more than `limit` bytes (the defence against decompression bombs and
/// blobs longer than their descriptor says).
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`; reading past `limit` bytes fails with [`io::ErrorKind::FileTooLarge`].
    pub fn new(inner: R, limit: u64) -> Self {
        Self { inner, hasher: Sha256::new(), count: 0, limit }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of everything read so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256_bytes(&self.hasher.clone().finalize())
    }

    /// Reads the rest of the stream, hashing it; returns the bytes read.
    pub fn drain(&mut self) -> io::Result<u64> {
        io::copy(self, &mut io::sink())
    }

    /// The wrapped reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, LimitExceeded { limit: self.limit }));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// The error inside the `io::Error` a [`HashingReader`] returns past its limit, so that
/// callers can tell a cap from an ordinary I/O failure after it crossed a decoder.
#[derive(Debug, thiserror::Error)]
#[error("stream exceeds the limit of {limit} bytes")]
pub struct LimitExceeded {
    /// The limit that was crossed.
    pub limit: u64,
}

impl LimitExceeded {
    /// Finds a `LimitExceeded` inside an `io::Error`, through any wrapping (the tar
    /// parser and the decoders wrap the errors of the reader they read from).
    pub fn find(err: &io::Error) -> Option<&Self> {
        let mut current: Option<&(dyn std::error::Error + 'static)> = err.get_ref().map(|e| e as _);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<Self>() {
                return Some(found);
            }
            current = match e.downcast_ref::<io::Error>() {
                Some(inner) => inner.get_ref().map(|e| e as _),
                None => e.source(),
            };
        }
        None
    }
}

/// Reads at most `limit` bytes of `reader` into memory; more is an error.
/// For manifests, indexes and configs (4 MiB cap, CVE-2017-11468).
pub fn read_bounded(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    reader.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(io::Error::new(io::ErrorKind::FileTooLarge, format!("document exceeds {limit} bytes")));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(Digest::of_bytes(b""), d);
    }

    #[test]
    fn rejects_bad_digests() {
        let cases: &[(&str, bool)] = &[
            ("sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", true),
            ("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855", false),
            ("sha256:../../etc/passwd", false),
            ("sha512:e3b0", false),
            ("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", false),
            ("sha256:e3b0", false),
            ("", false),
        ];
        for (input, ok) in cases {
            assert_eq!(input.parse::<Digest>().is_ok(), *ok, "{input}");
        }
    }

    #[test]
    fn hashing_reader_counts_and_limits() {
        let mut r = HashingReader::new(&b"hello"[..], 10);
        r.drain().unwrap();
        assert_eq!(r.count(), 5);
        assert_eq!(r.digest(), Digest::of_bytes(b"hello"));
        let mut r = HashingReader::new(&b"hello"[..], 4);
        assert_eq!(r.drain().unwrap_err().kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn bounded_read_refuses_overlong() {
        assert!(read_bounded(&b"abcd"[..], 4).is_ok());
        assert!(read_bounded(&b"abcde"[..], 4).is_err());
    }

    proptest::proptest! {
        /// A digest shown and parsed again is the same digest, and its hex is the
        /// bytes it was made of.
        #[test]
        fn digests_round_trip(bytes in proptest::prelude::any::<[u8; 32]>()) {
            let digest = Digest::from_sha256_bytes(&bytes);
            proptest::prop_assert_eq!(digest.to_string().parse::<Digest>(), Ok(digest.clone()));
            proptest::prop_assert_eq!(Digest::from_hex(digest.hex()), Ok(digest.clone()));
            let decoded: Vec<u8> = (0..32).map(|i| u8::from_str_radix(&digest.hex()[2 * i..2 * i + 2], 16).unwrap()).collect();
            proptest::prop_assert_eq!(decoded, bytes.to_vec());
        }

        /// Only the exact canonical form is accepted: what parses prints as its input,
        /// so no other spelling (upper case, padding, other algorithms) reaches a path.
        #[test]
        fn only_the_canonical_form_parses(input in "sha256:[0-9a-fA-F]{62,66}|[a-z0-9]{0,8}:[0-9a-f]{64}|.{0,80}") {
            if let Ok(digest) = input.parse::<Digest>() {
                proptest::prop_assert_eq!(digest.to_string(), input);
            }
        }
    }
}
