//! One function per command: call the library, hand the result to `output`.

use anyhow::{Context as _, Result};
use strata::backend::BackendKind;
use strata::provisioner::{ContainerId, ContainerPath, Destroyed, Provisioned, Provisioner};
use strata::reference::ImageRef;
use strata::store::PullPolicy;

use super::output::{self, print_line};
use super::{Context, PullArgs};

fn parse(reference: &str) -> Result<ImageRef> {
    Ok(ImageRef::parse(reference)?)
}

pub(crate) fn pull(ctx: &Context, reference: &str, args: &PullArgs) -> Result<()> {
    let image_ref = parse(reference)?;
    let store = ctx.store(Some(args))?;
    if image_ref.is_appc() {
        let image = store.prepare(&image_ref, args.pull).with_context(|| format!("failed to pull {image_ref}"))?;
        let summary = serde_json::json!({
            "reference": image.reference,
            "digest": image.digest,
            "chain": image.appc_images,
        });
        return ctx.emit(&summary, || print_line(&image.digest));
    }
    let image = store.pull(&image_ref, args.pull).with_context(|| format!("failed to pull {image_ref}"))?;
    ctx.emit(&strata::store::ImageSummary::of_image(&image), || print_line(&image.record.manifest_digest.to_string()))
}

pub(crate) fn images(ctx: &Context) -> Result<()> {
    let summaries = ctx.store(None)?.summaries()?;
    ctx.emit(&summaries, || output::print_images_table(&summaries))
}

pub(crate) fn inspect(ctx: &Context, reference: &str) -> Result<()> {
    let image_ref = parse(reference)?;
    let store = ctx.store(None)?;
    if image_ref.is_appc() {
        let image = store
            .appc()
            .resolve(&image_ref, PullPolicy::Never)
            .with_context(|| format!("cannot inspect {image_ref}"))?;
        let details = strata::store::AppcDetails::of_appc(&image);
        return ctx.emit(&details, || output::print_appc_details(&details));
    }
    // What is stored, whatever platform it is for.
    let image = store
        .get(&image_ref)
        .and_then(|found| found.ok_or_else(|| strata::store::StoreError::NotFound(image_ref.cache_key())))
        .with_context(|| format!("cannot inspect {image_ref}"))?;
    let details = strata::store::ImageDetails::of_image(&image);
    ctx.emit(&details, || output::print_details(&details))
}

pub(crate) fn rmi(ctx: &Context, reference: &str) -> Result<()> {
    let image_ref = parse(reference)?;
    if image_ref.is_appc() {
        return rmi_appc(ctx, &image_ref);
    }
    let store = ctx.store(None)?;
    if !store.remove(&image_ref)? {
        anyhow::bail!("image '{image_ref}' is not in the store");
    }
    ctx.emit(&serde_json::json!({ "removed": image_ref.cache_key() }), || print_line(&format!("removed {image_ref}")))
}

/// Removes an appc image now (it has no separate layers to collect later), unless a
/// rootfs uses it: an overlay rootfs reads it in place.
fn rmi_appc(ctx: &Context, image_ref: &ImageRef) -> Result<()> {
    let provisioner = ctx.provisioner(None, None)?;
    let _still = provisioner.lock_exclusive()?;
    let appc = provisioner.store().appc();
    let image = appc.resolve(image_ref, PullPolicy::Never).with_context(|| format!("cannot remove {image_ref}"))?;
    let id = image.image.id;
    if provisioner.images_in_use()?.appc.contains(&id) {
        anyhow::bail!("cannot remove {image_ref}: image {id} is used by a provisioned rootfs");
    }
    appc.remove(&id)?;
    ctx.emit(&serde_json::json!({ "removed": image_ref.cache_key(), "id": id }), || {
        print_line(&format!("removed {image_ref} ({id})"))
    })
}

fn container_path(container: &str, parent: Option<&str>) -> Result<ContainerPath> {
    let id: ContainerId = container.parse()?;
    Ok(match parent {
        Some(parent) => parent.parse::<ContainerPath>()?.child(id),
        None => ContainerPath::top(id),
    })
}

/// Parses the arguments of `provision` and `bundle` and provisions.
fn provision_from_args(
    ctx: &Context,
    container: &str,
    reference: &str,
    backend: Option<&str>,
    parent: Option<&str>,
    args: &PullArgs,
) -> Result<(Provisioner, ContainerPath, Provisioned)> {
    let container = container_path(container, parent)?;
    let image_ref = parse(reference)?;
    let kind = backend.map(str::parse::<BackendKind>).transpose()?;
    let provisioner = ctx.provisioner(Some(args), None)?;
    let done = provisioner
        .provision(&container, &image_ref, kind, args.pull)
        .with_context(|| format!("failed to provision container '{container}' from {image_ref}"))?;
    Ok((provisioner, container, done))
}

pub(crate) fn provision(
    ctx: &Context,
    container: &str,
    reference: &str,
    backend: Option<&str>,
    parent: Option<&str>,
    args: &PullArgs,
) -> Result<()> {
    let (_, _, done) = provision_from_args(ctx, container, reference, backend, parent, args)?;
    ctx.emit(&done, || print_line(&done.rootfs.display().to_string()))
}

pub(crate) fn bundle(
    ctx: &Context,
    container: &str,
    reference: &str,
    dir: &std::path::Path,
    backend: Option<&str>,
    parent: Option<&str>,
    args: &PullArgs,
) -> Result<()> {
    let (provisioner, container, done) = provision_from_args(ctx, container, reference, backend, parent, args)?;
    let hostname = container.ids().last().map(|id| id.as_str().to_owned()).unwrap_or_default();
    let written = strata::bundle::runtime_config(&done.rootfs, &hostname, &done.config)
        .and_then(|config| strata::bundle::write(dir, &config));
    if let Err(e) = written {
        // No bundle, no rootfs: take back the rootfs just made (and only it).
        let _ = provisioner.remove_rootfs(&container, done.backend, &done.rootfs_id);
        return Err(e).context("cannot write the bundle");
    }
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    ctx.emit(&serde_json::json!({ "bundle": dir, "rootfs": done.rootfs, "container": container.to_string() }), || {
        print_line(&dir.display().to_string())
    })
}

pub(crate) fn destroy(ctx: &Context, container: &str, parent: Option<&str>) -> Result<()> {
    let container = container_path(container, parent)?;
    let provisioner = ctx.provisioner(None, None)?;
    let outcome =
        provisioner.destroy(&container).with_context(|| format!("failed to destroy container '{container}'"))?;
    let word = match outcome {
        Destroyed::Destroyed => "destroyed",
        Destroyed::NotFound => "not found",
    };
    ctx.emit(&serde_json::json!({ "container": container.to_string(), "result": word }), || print_line(word))
}

pub(crate) fn containers(ctx: &Context) -> Result<()> {
    let provisioner = ctx.provisioner(None, None)?;
    let list = provisioner.containers()?;
    ctx.emit(&list, || output::print_containers(&list))
}

pub(crate) fn recover(ctx: &Context, alive: Option<&[String]>) -> Result<()> {
    let alive =
        alive.map(|ids| ids.iter().map(|id| id.parse::<ContainerPath>()).collect::<Result<Vec<_>, _>>()).transpose()?;
    let provisioner = ctx.provisioner(None, None)?;
    let report = provisioner.recover(alive.as_deref()).context("recover failed")?;
    ctx.emit(&report, || {
        for bad in &report.appc_skipped {
            print_line(&format!("skipped invalid appc image {}: {}", bad.entry, bad.why))?;
        }
        print_line(&format!(
            "recovered: {} kept, {} destroyed, {} incomplete rootfses removed, {} remounted, {} stray mounts undone, {} staging entries cleared",
            report.kept.len(),
            report.destroyed.len(),
            report.incomplete_rootfses_removed,
            report.remounted,
            report.stray_mounts_unmounted,
            report.staging_cleared
        ))
    })
}

pub(crate) fn gc(ctx: &Context, keep_bytes: Option<u64>, keep: &[String]) -> Result<()> {
    let keep = keep.iter().map(|r| parse(r)).collect::<Result<Vec<_>>>()?;
    let provisioner = ctx.provisioner(None, None)?;
    let report =
        strata::gc::collect(&provisioner, &strata::gc::GcPolicy::new(keep_bytes, keep)).context("gc failed")?;
    ctx.emit(&report, || {
        for image in &report.images_removed {
            print_line(&format!("removed image {image}"))?;
        }
        print_line(&format!(
            "freed {} images, {} layers, {} documents, {} bytes; {} bytes left",
            report.images_removed.len(),
            report.layers_removed,
            report.blobs_removed,
            report.bytes_freed,
            report.bytes_left
        ))
    })
}

pub(crate) fn serve(ctx: &Context, socket: Option<std::path::PathBuf>) -> Result<()> {
    let _writer = super::lock_root_for_daemon(&ctx.root)?;
    let metrics = strata::server::Metrics::new();
    let provisioner = std::sync::Arc::new(ctx.provisioner_with_progress(strata::server::byte_counter(&metrics))?);
    let socket = socket.or_else(|| ctx.config.serve.socket.clone()).unwrap_or_else(strata::server::default_socket);
    let auto_gc = ctx.config.serve.gc_max_store_bytes.map(|max| strata::server::AutoGc {
        max_store_bytes: max,
        keep_bytes: ctx.config.serve.gc_keep_bytes.unwrap_or(max / 5 * 4),
        interval: std::time::Duration::from_secs(ctx.config.serve.gc_interval_secs.unwrap_or(300).max(1)),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime
        .block_on(strata::server::serve(provisioner, metrics, &socket, auto_gc))
        .with_context(|| format!("strata serve on {}", socket.display()))
}

pub(crate) fn version(ctx: &Context) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    let (arch, os) = (std::env::consts::ARCH, std::env::consts::OS);
    ctx.emit(&serde_json::json!({ "version": version, "target": arch, "os": os }), || {
        print_line(&format!("strata {version} ({arch}-{os})"))
    })
}
