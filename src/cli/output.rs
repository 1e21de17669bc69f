//! Presentation: tables for people, one JSON document for programs.

#![allow(clippy::print_stdout)] // this module is where the binary prints

use std::io::Write;

use anyhow::Result;
use serde::Serialize;
use strata::store::{AppcDetails, ImageDetails, ImageSummary};

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
