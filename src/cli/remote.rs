//! Commands sent to a running `strata serve` instead of working on the root directly.

use std::path::Path;

use anyhow::{bail, Result};
use serde_json::{json, Value};

use super::client::{call, encode};
use super::output::{self, print_json, print_line};
use super::{Command, Context};
use strata::registry::Credentials;

/// Runs `command` through the daemon at `socket`.
pub(crate) fn run(ctx: &Context, socket: &Path, command: Command) -> Result<()> {
    if let Command::Pull { args, .. } | Command::Provision { args, .. } | Command::Bundle { args, .. } = &command {
        refuse_local_only(args, socket)?;
    }
    match command {
        Command::Pull { reference, args } => {
            let mut body = json!({"image": reference, "pull": policy(&args)});
            add_call_options(&mut body, &args)?;
            let answer = call(socket, "POST", "/v1/images", Some(body))?;
            show(ctx, &answer, |a| a["digest"].as_str().unwrap_or_default().to_owned())
        }
        Command::Images => {
            let answer = call(socket, "GET", "/v1/images", None)?;
            if ctx.json {
                return print_json(&answer);
            }
            let list: Vec<strata::store::ImageSummary> = serde_json::from_value(answer)?;
            output::print_images_table(&list)
        }
        Command::Inspect { reference } => {
            let answer = call(socket, "GET", &format!("/v1/images/inspect?image={}", encode(&reference)), None)?;
            if ctx.json {
                return print_json(&answer);
            }
            if strata::reference::ImageRef::parse(&reference).is_ok_and(|r| r.is_appc()) {
                output::print_appc_details(&serde_json::from_value(answer)?)
            } else {
                output::print_details(&serde_json::from_value(answer)?)
            }
        }
        Command::Rmi { reference } => {
            let answer = call(socket, "DELETE", &format!("/v1/images?image={}", encode(&reference)), None)?;
            show(ctx, &answer, |a| format!("removed {}", a["removed"].as_str().unwrap_or_default()))
        }
        Command::Provision { container, reference, backend, parent, args } => {
            let answer = provision(socket, &container, &reference, backend, parent, &args)?;
            show(ctx, &answer, |a| a["rootfs"].as_str().unwrap_or_default().to_owned())
        }
        Command::Bundle { container, reference, dir, backend, parent, args } => {
            let answer = provision(socket, &container, &reference, backend, parent, &args)?;
            let rootfs = answer["rootfs"].as_str().unwrap_or_default();
            let config: strata::image::ImageConfig = serde_json::from_value(answer["config"].clone())?;
            let runtime = strata::bundle::runtime_config(Path::new(rootfs), &container, &config)?;
            strata::bundle::write(&dir, &runtime)?;
            print_line(&std::path::absolute(&dir).unwrap_or(dir).display().to_string())
        }
        Command::Destroy { container, parent } => {
            let query = parent.map(|p| format!("?parent={}", encode(&p))).unwrap_or_default();
            let answer = call(socket, "DELETE", &format!("/v1/containers/{}{query}", encode(&container)), None)?;
            show(ctx, &answer, |a| a["result"].as_str().unwrap_or_default().to_owned())
        }
        Command::Containers => {
            let answer = call(socket, "GET", "/v1/containers", None)?;
            if ctx.json {
                return print_json(&answer);
            }
            let list: Vec<strata::provisioner::ContainerInfo> = serde_json::from_value(answer)?;
            output::print_containers(&list)
        }
        Command::Recover { alive } => {
            let body = alive.map_or_else(|| json!({}), |a| json!({ "alive": a }));
            let answer = call(socket, "POST", "/v1/recover", Some(body))?;
            show(ctx, &answer, |a| {
                format!(
                    "recovered: {} kept, {} destroyed",
                    a["kept"].as_array().map_or(0, Vec::len),
                    a["destroyed"].as_array().map_or(0, Vec::len)
                )
            })
        }
        Command::Gc { keep_bytes, keep } => {
            let answer = call(socket, "POST", "/v1/gc", Some(json!({"keep_bytes": keep_bytes, "keep": keep})))?;
            show(ctx, &answer, |a| {
                format!(
                    "freed {} images, {} bytes",
                    a["images_removed"].as_array().map_or(0, Vec::len),
                    a["bytes_freed"]
                )
            })
        }
        Command::Serve | Command::Version => Ok(()),
    }
}

fn provision(
    socket: &Path,
    container: &str,
    reference: &str,
    backend: Option<String>,
    parent: Option<String>,
    args: &super::PullArgs,
) -> Result<Value> {
    let mut body =
        json!({"id": container, "image": reference, "backend": backend, "parent": parent, "pull": policy(args)});
    add_call_options(&mut body, args)?;
    call(socket, "POST", "/v1/containers", Some(body))
}

/// `--platform` and `--creds` travel in the request body (the socket is the root's
/// alone, mode 0600), never in a URL or a log line.
fn add_call_options(body: &mut Value, args: &super::PullArgs) -> Result<()> {
    if let Some(platform) = &args.platform {
        body["platform"] = json!(platform.to_string());
    }
    match args.call_credentials()? {
        Some(Credentials::Basic { username, password }) => {
            body["credentials"] = json!({"username": username, "password": password});
        }
        Some(Credentials::IdentityToken(token)) => body["credentials"] = json!({"identity_token": token}),
        None => {}
    }
    Ok(())
}

/// The daemon pulls with its own transport, limits and discovery; a flag that would
/// change them is refused rather than silently dropped.
fn refuse_local_only(args: &super::PullArgs, socket: &Path) -> Result<()> {
    let mut flags = Vec::new();
    if !args.tls_verify {
        flags.push("--tls-verify=false");
    }
    if args.max_layer_bytes.is_some() {
        flags.push("--max-layer-bytes (or STRATA_MAX_LAYER_BYTES)");
    }
    if args.appc_discovery_prefix.is_some() {
        flags.push("--appc-discovery-prefix");
    }
    if flags.is_empty() {
        return Ok(());
    }
    bail!(
        "{} cannot be passed through the daemon at {} (it pulls with its own configuration); \
         set it in the daemon's config file, or work on the root directly (--root, with no daemon serving it)",
        flags.join(", "),
        socket.display()
    )
}

fn policy(args: &super::PullArgs) -> &'static str {
    match args.pull {
        strata::store::PullPolicy::Missing => "missing",
        strata::store::PullPolicy::Always => "always",
        strata::store::PullPolicy::Never => "never",
    }
}

fn show(ctx: &Context, answer: &Value, line: impl Fn(&Value) -> String) -> Result<()> {
    ctx.emit(answer, || print_line(&line(answer)))
}
