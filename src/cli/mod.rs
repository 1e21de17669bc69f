//! Argument parsing (clap) and dispatch. The contract is `CLI.md`: names there are
//! never renamed.

mod client;
mod commands;
mod output;
mod progress;
mod remote;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand};
use strata::backend::BackendKind;
use strata::config::Config;
use strata::image::Platform;
use strata::provisioner::{CrashPoints, Provisioner};
use strata::registry::{Credentials, HostConfig, RegistryOptions};
use strata::store::{PullPolicy, Store, StoreOptions};

/// Turns image references into container root filesystems.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options every command takes, before or after the command name.
#[derive(Debug, Args)]
pub(crate) struct Global {
    /// State directory [default: /var/lib/strata as root, else $XDG_DATA_HOME/strata]
    #[arg(long, global = true, env = "STRATA_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,
    /// TOML config file; flags override it
    #[arg(long, global = true, env = "STRATA_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Talk to a running `strata serve` at PATH
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Machine-readable output: one JSON document on stdout
    #[arg(long, global = true)]
    json: bool,
    /// More logging on stderr (repeat for more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Less logging on stderr
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Log format on stderr: text or json
    #[arg(long, global = true, default_value = "text", value_name = "FORMAT")]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Options of commands that fetch images.
#[derive(Debug, Args, Clone)]
pub(crate) struct PullArgs {
    /// Platform to pick from an index: OS/ARCH[/VARIANT] [default: the host's]
    #[arg(long, value_name = "OS/ARCH[/VARIANT]")]
    platform: Option<Platform>,
    /// Pull policy: missing, always or never
    #[arg(long, default_value = "missing", value_name = "POLICY")]
    pull: PullPolicy,
    /// Cap on the uncompressed bytes of one layer [default: 64 GiB]
    #[arg(long, env = "STRATA_MAX_LAYER_BYTES", value_name = "N")]
    max_layer_bytes: Option<u64>,
    /// Registry credentials for this call; without `:PASSWORD` the password is read from
    /// $STRATA_REGISTRY_PASSWORD (keeps it out of the process list)
    #[arg(long, value_name = "USER[:PASSWORD]")]
    creds: Option<String>,
    /// Verify TLS (false: also allow plain HTTP) for this call's registry
    #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    tls_verify: bool,
    /// appc simple discovery prefix: PREFIX{name}-{version}-{os}-{arch}.aci, or a template
    /// with {name} {version} {os} {arch} {ext} [default: https://]
    #[arg(long, value_name = "URL")]
    appc_discovery_prefix: Option<String>,
}

impl PullArgs {
    /// `--creds USER[:PASSWORD]`, the password from $STRATA_REGISTRY_PASSWORD when
    /// not given (so it stays out of the process list).
    fn call_credentials(&self) -> Result<Option<Credentials>> {
        let Some(creds) = &self.creds else { return Ok(None) };
        let creds = if creds.contains(':') {
            creds.clone()
        } else {
            let password = std::env::var("STRATA_REGISTRY_PASSWORD")
                .context("--creds USER without a password needs $STRATA_REGISTRY_PASSWORD")?;
            format!("{creds}:{password}")
        };
        Credentials::parse_user_password(&creds).map(Some).map_err(|e| anyhow::anyhow!("--creds: {e}"))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Fetch an image into the store; prints its manifest digest
    Pull {
        /// Image reference (docker://, oci:, docker-archive:, aci:, appc:, or a bare name)
        reference: String,
        #[command(flatten)]
        args: PullArgs,
    },
    /// List stored images
    Images,
    /// Show an image's digest, platform, layers and run config
    Inspect {
        /// Image reference
        reference: String,
    },
    /// Forget an image (its layers go at the next gc)
    Rmi {
        /// Image reference
        reference: String,
    },
    /// Make a rootfs for a container from an image; prints the rootfs path (last line)
    Provision {
        /// Container id (one path component)
        container: String,
        /// Image reference
        reference: String,
        /// Backend: copy, bind or overlay [default: overlay when usable, else copy]
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// Nest the container under this one (`a` or `a/b`)
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        #[command(flatten)]
        args: PullArgs,
    },
    /// Provision a rootfs and write an OCI runtime bundle (DIR/config.json) for crun or runc
    Bundle {
        /// Container id
        container: String,
        /// Image reference
        reference: String,
        /// Bundle directory (created if missing)
        dir: PathBuf,
        /// Backend: copy, bind or overlay
        #[arg(long, value_name = "BACKEND")]
        backend: Option<String>,
        /// Nest the container under this one
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
        #[command(flatten)]
        args: PullArgs,
    },
    /// Remove all of a container's rootfses (prints `destroyed` or `not found`)
    Destroy {
        /// Container id
        container: String,
        /// The container's parent, for nested containers
        #[arg(long, value_name = "ID")]
        parent: Option<String>,
    },
    /// List containers and their rootfses
    Containers,
    /// Rebuild state from disk: destroy orphans and half-made work, clear staging
    Recover {
        /// Containers to keep (comma-separated, nested as parent/child) [default: every complete one]
        #[arg(long, value_name = "ID,...", value_delimiter = ',')]
        alive: Option<Vec<String>>,
    },
    /// Remove images no rootfs uses and no one pinned (least recently used first), then
    /// the layers nothing needs
    Gc {
        /// Stop once the store's layers take at most this many bytes [default: remove all unused]
        #[arg(long, value_name = "N")]
        keep_bytes: Option<u64>,
        /// Never remove this image (repeatable)
        #[arg(long, value_name = "REF")]
        keep: Vec<String>,
    },
    /// Run the node daemon: JSON HTTP API on the unix socket (--socket, default
    /// /run/strata/strata.sock), /metrics, automatic GC
    Serve,
    /// Print version and build information
    Version,
}

/// Everything a command needs, built once from flags, environment and config file.
pub(crate) struct Context {
    pub(crate) json: bool,
    root: PathBuf,
    config: Config,
}

impl Context {
    /// Prints `value` as JSON with `--json`, else runs `human`: the one switch between
    /// the two outputs.
    pub(crate) fn emit<T: serde::Serialize>(&self, value: &T, human: impl FnOnce() -> Result<()>) -> Result<()> {
        if self.json {
            output::print_json(value)
        } else {
            human()
        }
    }

    /// The provisioner with a progress hook of the caller's (the daemon's byte counter).
    pub(crate) fn provisioner_with_progress(
        &self,
        progress: std::sync::Arc<dyn strata::store::Progress>,
    ) -> Result<Provisioner> {
        let mut options = self.store_options(None)?;
        options.progress = Some(progress);
        let store = Store::open(&self.root, options)
            .with_context(|| format!("cannot open the store under {}", self.root.display()))?;
        let default = self.config.backend.as_deref().map(str::parse::<BackendKind>).transpose()?;
        let crash = CrashPoints::at(std::env::var("STRATA_CRASH_AT").ok().filter(|v| !v.is_empty()));
        Ok(Provisioner::new(&self.root, store, default, crash)?)
    }

    /// Opens the provisioner (and its store). `STRATA_CRASH_AT` names a crash point
    /// for the fault-injection tests.
    pub(crate) fn provisioner(&self, args: Option<&PullArgs>, backend: Option<&str>) -> Result<Provisioner> {
        let store = self.store(args)?;
        let default = match backend.or(self.config.backend.as_deref()) {
            Some(name) => Some(name.parse::<BackendKind>()?),
            None => None,
        };
        let crash = CrashPoints::at(std::env::var("STRATA_CRASH_AT").ok().filter(|v| !v.is_empty()));
        Ok(Provisioner::new(&self.root, store, default, crash)?)
    }

    fn registry_options(&self, args: Option<&PullArgs>) -> Result<RegistryOptions> {
        let mut options = RegistryOptions::default();
        for (host, c) in &self.config.registries {
            let credentials = match (&c.username, &c.password) {
                (Some(u), Some(p)) => Some(Credentials::Basic { username: u.clone(), password: p.clone() }),
                (None, None) => None,
                _ => anyhow::bail!("config file: registry {host} needs both username and password"),
            };
            options
                .hosts
                .insert(host.clone(), HostConfig::new(c.insecure, c.ca_file.clone(), c.mirrors.clone(), credentials));
        }
        options.docker_config = docker_config_path();
        if let Some(args) = args {
            options.call_credentials = args.call_credentials()?;
            options.call_insecure = !args.tls_verify;
        }
        Ok(options)
    }

    /// Opens the store, with per-call overrides from `args`.
    pub(crate) fn store(&self, args: Option<&PullArgs>) -> Result<Store> {
        let options = self.store_options(args)?;
        Store::open(&self.root, options).with_context(|| format!("cannot open the store under {}", self.root.display()))
    }

    fn store_options(&self, args: Option<&PullArgs>) -> Result<StoreOptions> {
        let mut options = StoreOptions::default();
        if let Some(p) = &self.config.platform {
            options.platform = p.parse().context("config file: platform")?;
            options.strict_platform = true;
        }
        options.local_images_dir.clone_from(&self.config.local_images_dir);
        options.appc_discovery_prefix.clone_from(&self.config.appc_discovery_prefix);
        if let Some(n) = self.config.parallel_layers {
            options.parallel_layers = n;
        }
        if let Some(n) = self.config.limits.max_layer_bytes {
            options.unpack.max_layer_bytes = n;
        }
        if let Some(d) = self.config.unpack.allow_devices {
            options.unpack.allow_devices = d;
        }
        if let Some(log) = self.config.unpack.max_zstd_window_log {
            if !(10..=31).contains(&log) {
                anyhow::bail!("config file: unpack.max_zstd_window_log must be 10 to 31, not {log}");
            }
            options.unpack = options.unpack.with_max_zstd_window_log(log);
        }
        options.registry = self.registry_options(args)?;
        options.progress = progress::for_terminal();
        if let Some(args) = args {
            if let Some(p) = &args.platform {
                options.platform = p.clone();
                options.strict_platform = true;
            }
            if let Some(n) = args.max_layer_bytes {
                options.unpack.max_layer_bytes = n;
            }
            if let Some(prefix) = &args.appc_discovery_prefix {
                options.appc_discovery_prefix = Some(prefix.clone());
            }
        }
        Ok(options)
    }
}

/// Runs the command line; returns the process exit code.
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli.global);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`strata images | head`): not a failure.
        Err(err)
            if err.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            #[allow(clippy::print_stderr)] // the binary reports its own failure
            {
                eprintln!("strata: error: {}", strata::error::report(err.as_ref()));
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let config = match &cli.global.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let root = cli.global.root.clone().or_else(|| config.root.clone()).unwrap_or_else(default_root);
    let ctx = Context { json: cli.global.json, root, config };
    if let Command::Serve = cli.command {
        return commands::serve(&ctx, cli.global.socket.clone());
    }
    if let Command::Version = cli.command {
        return commands::version(&ctx);
    }
    // The daemon, when asked for, or when one answers on the default socket and no
    // root was named (a named root may not be the one that daemon serves).
    let root_named = cli.global.root.is_some() || ctx.config.root.is_some();
    let socket = cli.global.socket.clone().or_else(|| {
        let default = strata::server::default_socket();
        (!root_named && client::answers(&default)).then_some(default)
    });
    if let Some(socket) = socket {
        return remote::run(&ctx, &socket, cli.command);
    }
    let _root_lock = lock_root(&ctx.root)?;
    match cli.command {
        Command::Pull { reference, args } => commands::pull(&ctx, &reference, &args),
        Command::Images => commands::images(&ctx),
        Command::Inspect { reference } => commands::inspect(&ctx, &reference),
        Command::Rmi { reference } => commands::rmi(&ctx, &reference),
        Command::Provision { container, reference, backend, parent, args } => {
            commands::provision(&ctx, &container, &reference, backend.as_deref(), parent.as_deref(), &args)
        }
        Command::Bundle { container, reference, dir, backend, parent, args } => {
            commands::bundle(&ctx, &container, &reference, &dir, backend.as_deref(), parent.as_deref(), &args)
        }
        Command::Destroy { container, parent } => commands::destroy(&ctx, &container, parent.as_deref()),
        Command::Containers => commands::containers(&ctx),
        Command::Recover { alive } => commands::recover(&ctx, alive.as_deref()),
        Command::Gc { keep_bytes, keep } => commands::gc(&ctx, keep_bytes, &keep),
        Command::Serve | Command::Version => Ok(()),
    }
}

/// The file whose flock says who writes the root: `strata serve` holds it
/// exclusively (with its pid inside), direct CLI commands hold it shared, so CLI
/// commands run side by side but never beside a daemon.
const ROOT_LOCK: &str = "writer.lock";

fn lock_root(root: &std::path::Path) -> Result<std::fs::File> {
    use std::os::fd::AsFd;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let path = root.join(ROOT_LOCK);
    let file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
    match rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(file),
        Err(_) => {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "{} is in use by strata serve (pid {}); talk to it with --socket, or stop it",
                root.display(),
                pid.trim()
            )
        }
    }
}

/// Takes the root for a daemon: exclusive, pid recorded; a clear error naming the
/// holder otherwise.
pub(crate) fn lock_root_for_daemon(root: &std::path::Path) -> Result<std::fs::File> {
    use std::io::Write;
    use std::os::fd::AsFd;
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let path = root.join(ROOT_LOCK);
    let mut file = std::fs::OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&path)?;
    if rustix::fs::flock(file.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        let holder = if pid.trim().is_empty() { "a strata command".to_owned() } else { format!("pid {}", pid.trim()) };
        anyhow::bail!("{} is in use by {holder}; only one writer at a time", root.display());
    }
    file.set_len(0)?;
    write!(file, "{}", std::process::id())?;
    Ok(file)
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// `/var/lib/strata` as root, else `$XDG_DATA_HOME/strata` (or `~/.local/share/strata`).
fn default_root() -> PathBuf {
    if strata::sys::is_root() {
        return PathBuf::from("/var/lib/strata");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("strata");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/share/strata")
}

fn init_logging(global: &Global) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("strata={level}")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    match global.log_format {
        LogFormat::Text => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(ansi)
            .with_target(false)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init(),
    }
}
