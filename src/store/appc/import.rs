//! ACI import into `<store>/appc/images/<image_id>/{manifest,rootfs/}` (the Mesos
//! layout). The image id is `sha512-` + the sha512 of the uncompressed ACI tar,
//! computed in the same pass that unpacks it through the foundation's unpacker (same
//! containment rules); the manifest is validated before anything is committed.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha512};

use super::spec::{AppcError, ImageId, ImageManifest, MAX_MANIFEST_BYTES};
use crate::durable::{self, Commit};
use crate::layer::{self, UnpackError, UnpackOptions};
use crate::sys::{Context, SysError};

/// Under the store dir.
pub const APPC_IMAGES_DIR: &str = "appc/images";
/// Under an image dir.
pub const MANIFEST_FILE: &str = "manifest";
/// Under an image dir.
pub const ROOTFS_DIR: &str = "rootfs";

/// Why an ACI could not be imported; nothing was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading or storing failed.
    #[error(transparent)]
    Sys(#[from] SysError),
    /// The archive was refused by the unpacker.
    #[error("cannot unpack {path}")]
    Unpack {
        /// The ACI.
        path: PathBuf,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// The ACI's layout or manifest is invalid.
    #[error("{path} is not a valid ACI")]
    Invalid {
        /// The ACI.
        path: PathBuf,
        /// Why.
        #[source]
        source: AppcError,
    },
    /// A compression this build does not read.
    #[error("{path}: {what}-compressed ACIs are not supported yet (decompress it first)")]
    Compression {
        /// The ACI.
        path: PathBuf,
        /// bzip2 or xz.
        what: &'static str,
    },
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

/// Imports the ACI at `path` (a tar, plain or gzip) into the store at `store_dir`, using
/// `staging` (same file system) for the work. Returns its id and manifest; importing
/// the same ACI twice is a no-op the second time.
pub fn import(
    store_dir: &Path,
    staging: &Path,
    path: &Path,
    options: &UnpackOptions,
) -> Result<(ImageId, ImageManifest), ImportError> {
    let file = File::open(path).context("open", path)?;
    let mut buffered = BufReader::new(file);
    let head = buffered.fill_buf().context("read", path)?.to_vec();
    let uncompressed: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(b"BZh") {
        return Err(ImportError::Compression { path: path.to_owned(), what: "bzip2" });
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(ImportError::Compression { path: path.to_owned(), what: "xz" });
    } else {
        Box::new(buffered)
    };
    let hasher = Arc::new(Mutex::new(Sha512::new()));
    let reader = Sha512Reader { inner: uncompressed, hasher: Arc::clone(&hasher) };

    let work = staging.join(format!("aci-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir(&work).context("create", &work)?;
    let result = (|| {
        layer::unpack(reader, &layer::Expected::default(), &work, options)
            .map_err(|source| ImportError::Unpack { path: path.to_owned(), source })?;
        let invalid = |why: &str| ImportError::Invalid {
            path: path.to_owned(),
            source: AppcError::Field { field: "(layout)".into(), why: why.into() },
        };
        if !work.join(ROOTFS_DIR).is_dir() || work.join(ROOTFS_DIR).is_symlink() {
            return Err(invalid("the archive has no rootfs/ directory"));
        }
        let manifest_path = work.join(MANIFEST_FILE);
        if !manifest_path.is_file() || manifest_path.is_symlink() {
            return Err(invalid("the archive has no manifest file"));
        }
        let bytes = crate::digest::read_bounded(
            File::open(&manifest_path).context("open", &manifest_path)?,
            MAX_MANIFEST_BYTES,
        )
        .map_err(|_| invalid("the manifest is over 1 MiB"))?;
        let manifest =
            ImageManifest::parse(&bytes).map_err(|source| ImportError::Invalid { path: path.to_owned(), source })?;
        let digest = hasher.lock().map(|h| h.clone().finalize()).map_err(|_| invalid("hash state poisoned"))?;
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        let id: ImageId =
            format!("sha512-{hex}").parse().map_err(|source| ImportError::Invalid { path: path.to_owned(), source })?;
        let images = store_dir.join(APPC_IMAGES_DIR);
        std::fs::create_dir_all(&images).context("create", &images)?;
        match durable::commit_dir(&work, &images, &id.to_string())? {
            Commit::Done => tracing::info!(image = %id, name = %manifest.name, "ACI imported"),
            Commit::AlreadyPresent => tracing::debug!(image = %id, "ACI already imported"),
        }
        Ok((id, manifest))
    })();
    if work.exists() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
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
        let (id, manifest) = import(&store, &staging, &path, &UnpackOptions::default()).unwrap();
        let expected: String = Sha512::digest(&aci).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(id.to_string(), format!("sha512-{expected}"), "id is the sha512 of the uncompressed tar");
        assert_eq!(manifest.name, "example.com/app");
        let dir = store.join(APPC_IMAGES_DIR).join(id.to_string());
        assert_eq!(std::fs::read(dir.join("rootfs/etc/hello")).unwrap(), b"hi");
        assert!(dir.join("manifest").is_file());
        assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
        // again: a no-op
        assert_eq!(import(&store, &staging, &path, &UnpackOptions::default()).unwrap().0, id);
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
            (b"BZh91AY&SY".to_vec(), "bzip2"),
        ];
        for (bytes, needle) in cases {
            let path = tmp.path().join("bad.aci");
            std::fs::write(&path, &bytes).unwrap();
            let err = import(&store, &staging, &path, &UnpackOptions::default()).unwrap_err();
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
