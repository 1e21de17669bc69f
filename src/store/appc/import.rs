//! ACI import into `<store>/appc/images/<image_id>/{manifest,rootfs/}` (the Mesos
//! layout). The image id is `sha512-` + the sha512 of the uncompressed ACI tar,
//! computed in the same pass that unpacks it through the foundation's unpacker (same
//! containment rules); the manifest is validated, and the caller's expectations
//! checked, before anything is committed.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha512};

use super::spec::{AppcError, ImageManifest, MAX_MANIFEST_BYTES};
use crate::durable::{self, Commit};
use crate::layer::{self, UnpackError, UnpackOptions};
use crate::reference::ImageId;
use crate::store::Staging;
use crate::sys::fs as sysfs;
use crate::sys::{Context, SysError};

/// Under the store dir.
pub const APPC_IMAGES_DIR: &str = "appc/images";
/// Under an image dir.
pub const MANIFEST_FILE: &str = "manifest";
/// Under an image dir.
pub const ROOTFS_DIR: &str = "rootfs";
/// Under an image dir: the detached signature found beside the ACI at discovery
/// (recorded, not verified).
pub const SIGNATURE_FILE: &str = "signature.asc";
/// Beside the manifest: the bytes of the uncompressed ACI, in decimal (what
/// `strata images` shows; Mesos' layout ignores extra files).
pub const SIZE_FILE: &str = "size";

/// Why an ACI could not be imported; nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading or storing failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The archive was refused by the unpacker.
    #[error("cannot unpack {name}")]
    Unpack {
        /// The ACI (path or URL).
        name: String,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// The bytes are neither a tar archive nor gzip, bzip2 or xz.
    #[error("{name} is not an ACI: neither a tar archive nor gzip, bzip2 or xz compressed")]
    NotAnArchive {
        /// The ACI (path or URL).
        name: String,
    },
    /// The ACI's layout or manifest is invalid.
    #[error("{name} is not a valid ACI")]
    Invalid {
        /// The ACI (path or URL).
        name: String,
        /// Why.
        #[source]
        source: AppcError,
    },
    /// The ACI is valid but not what was asked for (discovery or a pinned id).
    #[error("{name} is not the image asked for: {why}")]
    Unexpected {
        /// The ACI (path or URL).
        name: String,
        /// What differs.
        why: String,
    },
}

/// An ACI to import: a stream of bytes and what to call it in messages.
pub struct AciSource<'a> {
    /// A path or URL, for messages.
    pub name: String,
    /// The ACI bytes (tar, plain or gzip/bzip2/xz).
    pub reader: Box<dyn Read + Send + 'a>,
    /// A detached signature to keep beside the image.
    pub signature: Option<Vec<u8>>,
}

impl AciSource<'_> {
    /// An ACI file.
    pub fn file(path: &Path) -> Result<Self, SysError> {
        let file = File::open(path).context("open", path)?;
        Ok(Self { name: path.display().to_string(), reader: Box::new(file), signature: None })
    }
}

/// Hashes (sha512) what flows through it; the digest is read after the stream ends.
struct Sha512Reader<R> {
    inner: R,
    hasher: Arc<Mutex<Sha512>>,
}

impl<R: Read> Read for Sha512Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut h) = self.hasher.lock() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// The uncompressed tar, whatever the compression (told by its magic number).
fn decompress<'a>(mut reader: Box<dyn Read + Send + 'a>, name: &str) -> Result<Box<dyn Read + Send + 'a>, ImportError> {
    // A whole tar block, however the stream chunks it (an HTTP body may start short).
    let mut head = Vec::with_capacity(layer::TAR_BLOCK);
    (&mut reader).take(layer::TAR_BLOCK as u64).read_to_end(&mut head).context("read", name)?;
    let buffered = BufReader::with_capacity(256 * 1024, std::io::Cursor::new(head.clone()).chain(reader));
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::bufread::MultiBzDecoder::new(buffered))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(buffered))
    } else if layer::is_tar_header(&head) {
        Box::new(buffered)
    } else {
        return Err(ImportError::NotAnArchive { name: name.to_owned() });
    })
}

/// Imports an ACI into the store at `store_dir`, working in a staging directory
/// under `staging_root` (same file system). `expect` sees the id and manifest before
/// the commit and may refuse them. Returns the id and manifest; importing an image
/// already stored is a no-op.
pub fn import(
    store_dir: &Path,
    staging_root: &Path,
    source: AciSource<'_>,
    options: &UnpackOptions,
    expect: &dyn Fn(&ImageId, &ImageManifest) -> Result<(), String>,
) -> Result<(ImageId, ImageManifest), ImportError> {
    let AciSource { name, reader, signature } = source;
    let hasher = Arc::new(Mutex::new(Sha512::new()));
    let reader = Sha512Reader { inner: decompress(reader, &name)?, hasher: Arc::clone(&hasher) };
    let staging = Staging::create(staging_root).map_err(|e| match e {
        crate::store::StoreError::Sys(e) => e,
        other => SysError::new("stage", staging_root, std::io::Error::other(other.to_string())),
    })?;
    let work = &staging.path;
    let unpacked = layer::unpack(reader, &layer::Expected::default(), work, options)
        .map_err(|source| ImportError::Unpack { name: name.clone(), source })?;
    let invalid = |why: &str| ImportError::Invalid {
        name: name.clone(),
        source: AppcError::Field { field: "(layout)".into(), why: why.into() },
    };
    let rootfs = work.join(ROOTFS_DIR);
    if rootfs.is_symlink() || !rootfs.is_dir() {
        return Err(invalid("the archive has no rootfs/ directory"));
    }
    let manifest_path = work.join(MANIFEST_FILE);
    if manifest_path.is_symlink() || !manifest_path.is_file() {
        return Err(invalid("the archive has no manifest file"));
    }
    let bytes =
        crate::digest::read_bounded(File::open(&manifest_path).context("open", &manifest_path)?, MAX_MANIFEST_BYTES)
            .map_err(|_| invalid("the manifest is over 1 MiB"))?;
    let manifest =
        ImageManifest::parse(&bytes).map_err(|source| ImportError::Invalid { name: name.clone(), source })?;
    let digest = hasher.lock().map(|h| h.clone().finalize()).map_err(|_| invalid("hash state poisoned"))?;
    let id = ImageId::from_sha512(&digest);
    expect(&id, &manifest).map_err(|why| ImportError::Unexpected { name: name.clone(), why })?;
    if let Some(signature) = signature {
        write_beside_archive(work, SIGNATURE_FILE, &signature)?;
    }
    write_beside_archive(work, SIZE_FILE, unpacked.uncompressed_size.to_string().as_bytes())?;
    let images = store_dir.join(APPC_IMAGES_DIR);
    std::fs::create_dir_all(&images).context("create", &images)?;
    match durable::commit_dir(work, &images, id.as_str())? {
        Commit::Done => tracing::info!(image = %id, name = %manifest.name, source = %name, "ACI imported"),
        Commit::AlreadyPresent => tracing::debug!(image = %id, "ACI already imported"),
    }
    Ok((id, manifest))
}

/// Writes a file of the store's own into the unpacked archive's top directory. The
/// archive may hold an entry of that name (a symlink aimed outside, a directory): it
/// is removed first, and the file is created exclusively without following links.
fn write_beside_archive(work: &Path, name: &str, bytes: &[u8]) -> Result<(), SysError> {
    use std::io::Write as _;
    use std::os::fd::AsFd as _;
    let path = work.join(name);
    let dir = sysfs::open_dir(work).context("open", work)?;
    sysfs::remove_all_at(dir.as_fd(), name.as_ref()).context("remove", &path)?;
    let mut file = sysfs::create_file_at(dir.as_fd(), name.as_ref(), 0o644).context("create", &path)?;
    file.write_all(bytes).context("write", &path)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1_700_000_000);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    const MANIFEST: &[u8] = br#"{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/app","labels":[{"name":"version","value":"1.0"}]}"#;

    #[test]
    fn imports_into_the_mesos_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, staging) = (tmp.path().join("store"), tmp.path().join("staging"));
        std::fs::create_dir_all(&staging).unwrap();
        let aci = tar_of(&[("manifest", MANIFEST), ("rootfs/etc/hello", b"hi")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&aci).unwrap();
        let path = tmp.path().join("app.aci");
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let (id, manifest) =
            import(&store, &staging, AciSource::file(&path).unwrap(), &UnpackOptions::default(), &|_, _| Ok(()))
                .unwrap();
        let expected: String = Sha512::digest(&aci).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id.to_string(), format!("sha512-{expected}"), "id is the sha512 of the uncompressed tar");
        assert_eq!(manifest.name, "example.com/app");
        let dir = store.join(APPC_IMAGES_DIR).join(id.to_string());
        assert_eq!(std::fs::read(dir.join("rootfs/etc/hello")).unwrap(), b"hi");
        assert!(dir.join("manifest").is_file());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        // again: a no-op
        assert_eq!(
            import(&store, &staging, AciSource::file(&path).unwrap(), &UnpackOptions::default(), &|_, _| Ok(()))
                .unwrap()
                .0,
            id
        );
    }

    #[test]
    fn every_compression_gives_the_same_id() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, staging) = (tmp.path().join("store"), tmp.path().join("staging"));
        std::fs::create_dir_all(&staging).unwrap();
        let aci = tar_of(&[("manifest", MANIFEST), ("rootfs/etc/hello", b"hi")]);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&aci).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&aci).unwrap();
        let mut ids = Vec::new();
        for (name, bytes) in [("plain", aci.clone()), ("bz2", bz.finish().unwrap()), ("xz", xz.finish().unwrap())] {
            let path = tmp.path().join(format!("app.{name}"));
            std::fs::write(&path, bytes).unwrap();
            let src = AciSource::file(&path).unwrap();
            ids.push(import(&store, &staging, src, &UnpackOptions::default(), &|_, _| Ok(())).unwrap().0);
        }
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        // An expectation that fails stores nothing.
        let path = tmp.path().join("app.plain");
        let other = tmp.path().join("store2");
        let err = import(&other, &staging, AciSource::file(&path).unwrap(), &UnpackOptions::default(), &|_, _| {
            Err("wrong name".into())
        })
        .unwrap_err();
        assert!(err.to_string().contains("wrong name"), "{err}");
        assert!(!other.join(APPC_IMAGES_DIR).exists());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
    }

    #[test]
    fn invalid_acis_store_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let (store, staging) = (tmp.path().join("store"), tmp.path().join("staging"));
        std::fs::create_dir_all(&staging).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (tar_of(&[("rootfs/x", b"")]), "no manifest"),
            (tar_of(&[("manifest", MANIFEST)]), "no rootfs"),
            (
                tar_of(&[
                    ("manifest", br#"{"acKind":"ImageManifest","acVersion":"1.0.0","name":"Bad Name"}"#),
                    ("rootfs/x", b""),
                ]),
                "name",
            ),
            (b"BZh91AY&SY".to_vec(), "cannot unpack"),
        ];
        for (bytes, needle) in cases {
            let path = tmp.path().join("bad.aci");
            std::fs::write(&path, &bytes).unwrap();
            let err =
                import(&store, &staging, AciSource::file(&path).unwrap(), &UnpackOptions::default(), &|_, _| Ok(()))
                    .unwrap_err();
            let chain = {
                let mut s = err.to_string();
                let mut src = std::error::Error::source(&err);
                while let Some(e) = src {
                    s.push_str(&format!(": {e}"));
                    src = e.source();
                }
                s
            };
            assert!(chain.contains(needle), "{needle}: {chain}");
            assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
            assert!(
                !store.join(APPC_IMAGES_DIR).exists()
                    || std::fs::read_dir(store.join(APPC_IMAGES_DIR)).unwrap().count() == 0
            );
        }
    }
}
