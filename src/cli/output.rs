//! Presentation: tables for people, one JSON document for programs.

#![allow(clippy::print_stdout)] // this module is where the binary prints

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use strata::image::RuntimeConfig;
use strata::store::appc::AppcImage;
use strata::store::{Image, ImageSummary};

/// `strata inspect` of an appc image.
#[derive(Debug, Serialize)]
pub(crate) struct AppcDetails {
    reference: String,
    id: String,
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    /// Dependencies first, the image last.
    chain: Vec<String>,
    dependencies: Vec<String>,
    path_whitelist: Vec<String>,
    signed: bool,
    entrypoint: Vec<String>,
    env: Vec<String>,
    workdir: String,
    user: String,
}

impl AppcDetails {
    pub(crate) fn new(image: &AppcImage) -> Self {
        let m = &image.image.manifest;
        let RuntimeConfig { entrypoint, env, working_dir, user, .. } = m.runtime_config().config;
        Self {
            reference: image.reference.clone(),
            id: image.image.id.to_string(),
            name: m.name.clone(),
            labels: m.labels.clone(),
            chain: image.chain.iter().map(ToString::to_string).collect(),
            dependencies: m.dependencies.iter().map(|d| d.image_name.clone()).collect(),
            path_whitelist: m.path_whitelist.clone(),
            signed: image.image.dir.join(strata::store::appc::SIGNATURE_FILE).is_file(),
            entrypoint,
            env,
            workdir: working_dir,
            user,
        }
    }
}

pub(crate) fn print_appc_details(d: &AppcDetails) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Reference:   {}", d.reference)?;
    writeln!(out, "Id:          {}", d.id)?;
    writeln!(out, "Name:        {}", d.name)?;
    for (k, v) in &d.labels {
        writeln!(out, "Label:       {k}={v}")?;
    }
    writeln!(out, "Signed:      {}", if d.signed { "signature recorded (not verified)" } else { "no" })?;
    writeln!(out, "Entrypoint:  {}", json_list(&d.entrypoint))?;
    writeln!(out, "Workdir:     {}", d.workdir)?;
    writeln!(out, "User:        {}", d.user)?;
    writeln!(out, "Env:")?;
    for e in &d.env {
        writeln!(out, "  {e}")?;
    }
    writeln!(out, "PathWhitelist: {}", json_list(&d.path_whitelist))?;
    writeln!(out, "Chain (base first):")?;
    for id in &d.chain {
        writeln!(out, "  {id}")?;
    }
    Ok(())
}

/// `strata inspect`.
#[derive(Debug, Serialize)]
pub(crate) struct ImageDetails {
    reference: String,
    digest: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    index_digest: Option<String>,
    config_digest: String,
    platform: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<String>,
    layers: Vec<LayerDetails>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    env: Vec<String>,
    workdir: String,
    user: String,
}

#[derive(Debug, Serialize)]
struct LayerDetails {
    digest: String,
    diff_id: String,
    size: u64,
    uncompressed_size: u64,
    compression: String,
}

impl ImageDetails {
    pub(crate) fn new(image: &Image) -> Self {
        let RuntimeConfig { entrypoint, cmd, env, working_dir, user, .. } = image.config.config.clone();
        Self {
            reference: image.record.reference.clone(),
            digest: image.record.manifest_digest.to_string(),
            index_digest: image.record.index_digest.as_ref().map(ToString::to_string),
            config_digest: image.config_digest.to_string(),
            platform: image.platform().to_string(),
            created: image.config.created.clone(),
            layers: image
                .layers
                .iter()
                .map(|l| LayerDetails {
                    digest: l.record.digest.to_string(),
                    diff_id: l.record.diff_id.to_string(),
                    size: l.record.size,
                    uncompressed_size: l.record.uncompressed_size,
                    compression: format!("{:?}", l.record.compression).to_lowercase(),
                })
                .collect(),
            entrypoint,
            cmd,
            env,
            workdir: working_dir,
            user,
        }
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

pub(crate) fn print_line(line: &str) -> Result<()> {
    writeln!(std::io::stdout().lock(), "{line}")?;
    Ok(())
}

pub(crate) fn print_images_table(images: &[ImageSummary]) -> Result<()> {
    let width = images.iter().map(|i| i.reference.len()).max().unwrap_or(0).max("REFERENCE".len());
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<width$}  {:<19}  {:<12}  {:>6}  {:>10}", "REFERENCE", "DIGEST", "PLATFORM", "LAYERS", "SIZE")?;
    for i in images {
        let short = i.digest.get(..19).unwrap_or(&i.digest);
        writeln!(
            out,
            "{:<width$}  {short:<19}  {:<12}  {:>6}  {:>10}",
            i.reference,
            i.platform,
            i.layers,
            human_bytes(i.size)
        )?;
    }
    Ok(())
}

pub(crate) fn print_details(d: &ImageDetails) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "Reference:   {}", d.reference)?;
    writeln!(out, "Digest:      {}", d.digest)?;
    if let Some(index) = &d.index_digest {
        writeln!(out, "Index:       {index}")?;
    }
    writeln!(out, "Config:      {}", d.config_digest)?;
    writeln!(out, "Platform:    {}", d.platform)?;
    if let Some(created) = &d.created {
        writeln!(out, "Created:     {created}")?;
    }
    writeln!(out, "Entrypoint:  {}", json_list(&d.entrypoint))?;
    writeln!(out, "Cmd:         {}", json_list(&d.cmd))?;
    writeln!(out, "Workdir:     {}", d.workdir)?;
    writeln!(out, "User:        {}", d.user)?;
    writeln!(out, "Env:")?;
    for e in &d.env {
        writeln!(out, "  {e}")?;
    }
    writeln!(out, "Layers:")?;
    for l in &d.layers {
        writeln!(
            out,
            "  {}  {:>10}  {:>10} unpacked  {}",
            l.digest,
            human_bytes(l.size),
            human_bytes(l.uncompressed_size),
            l.compression
        )?;
    }
    Ok(())
}

fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_default()
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn print_containers(list: &[strata::provisioner::ContainerInfo]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<24}  {:<8}  {:<36}  {:<10}  IMAGE", "CONTAINER", "BACKEND", "ROOTFS", "STATE")?;
    for c in list {
        if c.rootfses.is_empty() {
            writeln!(
                out,
                "{:<24}  {:<8}  {:<36}  {:<10}  -",
                c.container.to_string(),
                "-",
                "-",
                if c.destroying { "destroying" } else { "empty" }
            )?;
        }
        for r in &c.rootfses {
            let (state, image) = match &r.record {
                Some(rec) => (format!("{:?}", rec.state).to_lowercase(), rec.image.clone()),
                None => ("incomplete".to_owned(), "-".to_owned()),
            };
            let state = if c.destroying { "destroying".to_owned() } else { state };
            writeln!(
                out,
                "{:<24}  {:<8}  {:<36}  {:<10}  {image}",
                c.container.to_string(),
                r.backend.as_str(),
                r.rootfs_id.as_str(),
                state
            )?;
        }
    }
    Ok(())
}
