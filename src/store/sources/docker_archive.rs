//! `docker-archive:PATH[:REPO:TAG]`: a `docker save` tar, in the current form
//! (`manifest.json` + config + layer tars) or the legacy one Mesos' local puller reads
//! (`repositories` + `<id>/json` + `<id>/layer.tar`, chained by `parent`).
//!
//! The archive is indexed once (names → offset and length), then each layer is read
//! in place: nothing is extracted to a temporary copy.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Documents, Plan, PlannedLayer, Source};
use crate::digest::{read_bounded, Digest};
use crate::image::{ImageConfig, MAX_DOCUMENT_BYTES};
use crate::layer::budget::{Budget, Metered, MAX_ENTRY_METADATA};
use crate::layer::Expected;
use crate::reference::DockerRef;
use crate::store::StoreError;

const MANIFEST_FILE: &str = "manifest.json";
const REPOSITORIES_FILE: &str = "repositories";
/// A legacy parent chain longer than this is a loop or an attack.
const MAX_LEGACY_LAYERS: usize = 1000;

/// A `docker save` archive.
pub(crate) struct DockerArchive {
    path: PathBuf,
    name: Option<DockerRef>,
}

#[derive(Debug, Clone, Copy)]
struct Member {
    offset: u64,
    size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl DockerArchive {
    pub(crate) fn new(path: &Path, name: Option<DockerRef>) -> Self {
        Self { path: path.to_owned(), name }
    }

    fn invalid(&self, why: impl std::fmt::Display) -> StoreError {
        StoreError::Source { source_name: self.describe(), why: why.to_string() }
    }

    fn index(&self) -> Result<HashMap<String, Member>, StoreError> {
        let mut file = File::open(&self.path).map_err(|e| self.invalid(format!("cannot open: {e}")))?;
        let mut head = [0u8; crate::layer::TAR_BLOCK];
        let read = file.read(&mut head).map_err(|e| self.invalid(format!("cannot read: {e}")))?;
        if head[..read].starts_with(&[0x1f, 0x8b]) {
            return Err(self.invalid("the archive is gzip-compressed; decompress it first (gunzip)"));
        }
        if !crate::layer::is_tar_header(&head[..read]) {
            return Err(self.invalid("not a tar archive (its first block is no tar header)"));
        }
        file.seek(SeekFrom::Start(0)).map_err(|e| self.invalid(e))?;
        // The parser holds long names and PAX records in memory: bounded per entry,
        // as in the unpacker (it seeks over the data, so only metadata is read).
        let budget = Budget::default();
        let mut archive = tar::Archive::new(Metered::new(file, budget.clone()));
        let mut members = HashMap::new();
        let mut entries = archive.entries_with_seek().map_err(|e| self.invalid(format!("not a tar archive: {e}")))?;
        while let Some(entry) = budget.bounded(MAX_ENTRY_METADATA, || entries.next()) {
            let entry = entry.map_err(|e| self.invalid(format!("malformed tar: {e}")))?;
            if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
                continue;
            }
            let name = String::from_utf8_lossy(&entry.path_bytes()).trim_start_matches("./").to_owned();
            members.insert(name, Member { offset: entry.raw_file_position(), size: entry.size() });
        }
        Ok(members)
    }

    fn read_member(&self, members: &HashMap<String, Member>, name: &str) -> Result<Vec<u8>, StoreError> {
        let member = members.get(name).ok_or_else(|| self.invalid(format!("'{name}' is missing")))?;
        if member.size > MAX_DOCUMENT_BYTES {
            return Err(self.invalid(format!("'{name}' is over the 4 MiB document limit")));
        }
        let reader = self.open_member(*member)?;
        read_bounded(reader, MAX_DOCUMENT_BYTES).map_err(|e| self.invalid(format!("'{name}': {e}")))
    }

    fn open_member(&self, member: Member) -> Result<impl Read + Send, StoreError> {
        let mut file = File::open(&self.path).map_err(|e| self.invalid(format!("cannot open: {e}")))?;
        file.seek(SeekFrom::Start(member.offset)).map_err(|e| self.invalid(e))?;
        Ok(file.take(member.size))
    }

    fn wants(&self, candidate: &str) -> bool {
        match (&self.name, DockerRef::parse(candidate)) {
            (Some(want), Ok(have)) => *want == have,
            _ => false,
        }
    }

    fn resolve_current(&self, members: &HashMap<String, Member>) -> Result<Plan, StoreError> {
        let bytes = self.read_member(members, MANIFEST_FILE)?;
        let entries: Vec<ManifestEntry> =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(format!("{MANIFEST_FILE}: {e}")))?;
        let chosen = match &self.name {
            Some(name) => entries
                .iter()
                .find(|e| e.repo_tags.iter().flatten().any(|t| self.wants(t)))
                .or_else(|| if entries.len() == 1 { entries.first() } else { None })
                .ok_or_else(|| self.invalid(format!("no image named '{name}' in the archive")))?,
            None => match entries.as_slice() {
                [one] => one,
                [] => return Err(self.invalid("the archive holds no image")),
                _ => {
                    let tags: Vec<&str> =
                        entries.iter().flat_map(|e| e.repo_tags.iter().flatten()).map(String::as_str).collect();
                    return Err(self.invalid(format!(
                        "the archive holds several images; name one as docker-archive:PATH:REPO:TAG (tags: {})",
                        tags.join(", ")
                    )));
                }
            },
        };
        let config_bytes = self.read_member(members, &chosen.config)?;
        let config = ImageConfig::parse(&config_bytes).map_err(|e| self.invalid(e))?;
        if config.rootfs.diff_ids.len() != chosen.layers.len() {
            return Err(self.invalid(format!(
                "{MANIFEST_FILE} lists {} layers but the config has {} diff_ids",
                chosen.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in chosen.layers.iter().zip(&config.rootfs.diff_ids) {
            let member =
                members.get(name.as_str()).ok_or_else(|| self.invalid(format!("layer '{name}' is missing")))?;
            // Newer docker names layers blobs/sha256/<digest>: that digest is checked too.
            let digest = name.strip_prefix("blobs/sha256/").and_then(|hex| Digest::from_hex(hex).ok());
            layers.push(PlannedLayer {
                expected: Expected {
                    digest,
                    size: Some(member.size),
                    diff_id: Some(diff_id.clone()),
                    compression: None,
                },
                archive_member: Some((member.offset, member.size)),
            });
        }
        Ok(Plan { documents: Documents::Synthesized { config_bytes: Some(config_bytes), legacy_config: None }, layers })
    }

    fn resolve_legacy(&self, members: &HashMap<String, Member>) -> Result<Plan, StoreError> {
        let bytes = self.read_member(members, REPOSITORIES_FILE)?;
        let repos: HashMap<String, HashMap<String, String>> =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid(format!("{REPOSITORIES_FILE}: {e}")))?;
        let mut all: Vec<(String, &String)> = repos
            .iter()
            .flat_map(|(repo, tags)| tags.iter().map(move |(tag, id)| (format!("{repo}:{tag}"), id)))
            .collect();
        all.sort();
        let top = match &self.name {
            Some(name) => all
                .iter()
                .find(|(tagged, _)| self.wants(tagged))
                .or_else(|| if all.len() == 1 { all.first() } else { None })
                .map(|(_, id)| (*id).clone())
                .ok_or_else(|| self.invalid(format!("no image named '{name}' in {REPOSITORIES_FILE}")))?,
            None => match all.as_slice() {
                [(_, id)] => (*id).clone(),
                [] => return Err(self.invalid("the archive holds no image")),
                _ => {
                    let tags: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
                    return Err(self.invalid(format!(
                        "the archive holds several images; name one as docker-archive:PATH:REPO:TAG (tags: {})",
                        tags.join(", ")
                    )));
                }
            },
        };
        // Walk parent links from the top layer to the base.
        let mut chain = Vec::new();
        let mut next = Some(top);
        let mut top_json = None;
        while let Some(id) = next {
            if chain.len() >= MAX_LEGACY_LAYERS || chain.contains(&id) {
                return Err(self.invalid("the layer parent chain loops or is too long"));
            }
            Digest::from_hex(&id).map_err(|_| self.invalid(format!("layer id '{id}' is not 64 hex characters")))?;
            let json_bytes = self.read_member(members, &format!("{id}/json"))?;
            let json: serde_json::Value =
                serde_json::from_slice(&json_bytes).map_err(|e| self.invalid(format!("{id}/json: {e}")))?;
            next = json.get("parent").and_then(|p| p.as_str()).filter(|p| !p.is_empty()).map(str::to_owned);
            if top_json.is_none() {
                top_json = Some(json);
            }
            chain.push(id);
        }
        chain.reverse();
        let mut layers = Vec::new();
        for id in &chain {
            let name = format!("{id}/layer.tar");
            let member = members.get(&name).ok_or_else(|| self.invalid(format!("layer '{name}' is missing")))?;
            layers.push(PlannedLayer {
                expected: Expected { size: Some(member.size), ..Expected::default() },
                archive_member: Some((member.offset, member.size)),
            });
        }
        Ok(Plan { documents: Documents::Synthesized { config_bytes: None, legacy_config: top_json }, layers })
    }
}

impl Source for DockerArchive {
    fn describe(&self) -> String {
        format!("docker-archive:{}", self.path.display())
    }

    fn resolve(&self) -> Result<Plan, StoreError> {
        let members = self.index()?;
        if members.contains_key(MANIFEST_FILE) {
            self.resolve_current(&members)
        } else if members.contains_key(REPOSITORIES_FILE) {
            self.resolve_legacy(&members)
        } else {
            Err(self
                .invalid(format!("neither {MANIFEST_FILE} nor {REPOSITORIES_FILE} found: not a docker save archive")))
        }
    }

    fn open_layer(&self, _index: usize, layer: &PlannedLayer) -> Result<Box<dyn Read + Send + '_>, StoreError> {
        let (offset, size) = layer.archive_member.ok_or_else(|| self.invalid("layer has no archive location"))?;
        Ok(Box::new(self.open_member(Member { offset, size })?))
    }
}
