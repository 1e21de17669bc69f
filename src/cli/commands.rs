//! One function per command: call the library, hand the result to `output`.

use anyhow::{Context as _, Result};
use strata::reference::ImageRef;
use strata::store::PullPolicy;

use super::output::{self, print_json, print_line};
use super::{Context, PullArgs};

fn parse(reference: &str) -> Result<ImageRef> {
    Ok(ImageRef::parse(reference)?)
}

pub(crate) fn pull(ctx: &Context, reference: &str, args: &PullArgs) -> Result<()> {
    let image_ref = parse(reference)?;
    let store = ctx.store(Some(args))?;
    let image = store
        .pull(&image_ref, args.pull)
        .with_context(|| format!("failed to pull {image_ref}"))?;
    if ctx.json {
        print_json(&output::ImageSummary::new(&image))
    } else {
        print_line(&image.record.manifest_digest.to_string())
    }
}

pub(crate) fn images(ctx: &Context) -> Result<()> {
    let store = ctx.store(None)?;
    let mut summaries = Vec::new();
    for record in store.images()? {
        let Ok(image_ref) = ImageRef::parse(&record.reference) else {
            continue;
        };
        match store.get(&image_ref) {
            Ok(Some(image)) => summaries.push(output::ImageSummary::new(&image)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(image = %record.reference, error = %e, "skipping unreadable image")
            }
        }
    }
    if ctx.json {
        print_json(&summaries)
    } else {
        output::print_images_table(&summaries)
    }
}

pub(crate) fn inspect(ctx: &Context, reference: &str) -> Result<()> {
    let image_ref = parse(reference)?;
    let store = ctx.store(None)?;
    let image = store
        .pull(&image_ref, PullPolicy::Never)
        .with_context(|| format!("cannot inspect {image_ref}"))?;
    let details = output::ImageDetails::new(&image);
    if ctx.json {
        print_json(&details)
    } else {
        output::print_details(&details)
    }
}

pub(crate) fn rmi(ctx: &Context, reference: &str) -> Result<()> {
    let image_ref = parse(reference)?;
    let store = ctx.store(None)?;
    if !store.remove(&image_ref)? {
        anyhow::bail!("image '{image_ref}' is not in the store");
    }
    if ctx.json {
        print_json(&serde_json::json!({ "removed": image_ref.cache_key() }))
    } else {
        print_line(&format!("removed {image_ref}"))
    }
}

pub(crate) fn recover(ctx: &Context) -> Result<()> {
    let store = ctx.store(None)?;
    let cleared = store.clear_staging()?;
    if ctx.json {
        print_json(&serde_json::json!({ "staging_cleared": cleared }))
    } else {
        print_line(&format!("recovered: {cleared} staging entries cleared"))
    }
}

pub(crate) fn version(ctx: &Context) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    if ctx.json {
        print_json(
            &serde_json::json!({ "version": version, "target": std::env::consts::ARCH, "os": std::env::consts::OS }),
        )
    } else {
        print_line(&format!(
            "strata {version} ({}-{})",
            std::env::consts::ARCH,
            std::env::consts::OS
        ))
    }
}
