//! The node daemon: a JSON HTTP API on a unix socket, `/metrics`, automatic GC.
//!
//! Requests run concurrently; the store and provisioner calls are blocking work and
//! run on tokio's blocking pool, one call per request. Pulls of the same image are
//! single-flighted (per image key), so 100 concurrent provisions of an uncached image
//! fetch it once. On SIGTERM the listener stops accepting, in-flight requests finish,
//! and the socket is removed; every operation below is crash-safe anyway.
//! See `docs/openapi.yaml` for the API.

mod metrics;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

pub use self::metrics::Metrics;
use crate::backend::BackendKind;
use crate::gc::{GcError, GcPolicy};
use crate::image::Platform;
use crate::provisioner::{ContainerId, ContainerPath, Destroyed, ProvisionError, Provisioner};
use crate::reference::ImageRef;
use crate::registry::{Credentials, RegistryError};
use crate::store::appc::{AppcStoreError, DiscoveryError, ImportError};
use crate::store::{AppcDetails, CallOptions, ImageDetails, ImageSummary, PullPolicy, StoreError};

/// Automatic GC: when the store's layers pass `max_store_bytes`, collect down to
/// `keep_bytes`, checking every `interval`.
#[derive(Debug, Clone)]
pub struct AutoGc {
    /// Trigger.
    pub max_store_bytes: u64,
    /// Target.
    pub keep_bytes: u64,
    /// Check period.
    pub interval: Duration,
}

struct AppState {
    provisioner: Arc<Provisioner>,
    metrics: Arc<Metrics>,
    pulls: tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

type Shared = Arc<AppState>;

/// An error answered as `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn bad_request(msg: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.to_string())
}

fn store_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NotFound(_) => StatusCode::NOT_FOUND,
        StoreError::Registry { source, .. } => match source {
            RegistryError::NotFound { .. } => StatusCode::NOT_FOUND,
            RegistryError::Unauthorized { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_GATEWAY,
        },
        StoreError::Source { .. } | StoreError::PlatformMismatch { .. } => StatusCode::BAD_REQUEST,
        StoreError::Unpack { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        StoreError::Appc(e) => appc_status(e),
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn appc_status(e: &AppcStoreError) -> StatusCode {
    match e {
        AppcStoreError::NotFound(_) | AppcStoreError::Discovery(DiscoveryError::NotFound { .. }) => {
            StatusCode::NOT_FOUND
        }
        AppcStoreError::Discovery(DiscoveryError::BadPrefix { .. }) => StatusCode::BAD_REQUEST,
        AppcStoreError::Discovery(_) => StatusCode::BAD_GATEWAY,
        AppcStoreError::Import(ImportError::Sys(_)) | AppcStoreError::Sys(_) => StatusCode::INTERNAL_SERVER_ERROR,
        AppcStoreError::Import(_) | AppcStoreError::Graph { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        AppcStoreError::Dependency { source, .. } => appc_status(source),
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self(store_status(&e), crate::error::report(&e))
    }
}

impl From<ProvisionError> for ApiError {
    fn from(e: ProvisionError) -> Self {
        let status = match &e {
            ProvisionError::InvalidId(_) | ProvisionError::Backend(_) => StatusCode::BAD_REQUEST,
            ProvisionError::NoParent(_) => StatusCode::NOT_FOUND,
            ProvisionError::Busy { .. } => StatusCode::CONFLICT,
            ProvisionError::Store(s) => store_status(s),
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, crate::error::report(&e))
    }
}

impl From<GcError> for ApiError {
    fn from(e: GcError) -> Self {
        Self(StatusCode::INTERNAL_SERVER_ERROR, crate::error::report(&e))
    }
}

/// Runs blocking work on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("worker failed: {e}")))?
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| bad_request(format!("malformed request body: {e}")))
}

fn parse_ref(s: &str) -> Result<ImageRef, ApiError> {
    ImageRef::parse(s).map_err(bad_request)
}

fn parse_policy(p: Option<&str>) -> Result<PullPolicy, ApiError> {
    p.map_or(Ok(PullPolicy::Missing), |p| p.parse().map_err(bad_request))
}

struct Inflight(Arc<Metrics>);

impl Inflight {
    fn start(m: &Arc<Metrics>) -> Self {
        m.inflight.inc();
        Self(Arc::clone(m))
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.inflight.dec();
    }
}

/// Pulls an image once however many requests ask at the same time (per platform: a
/// request for another platform is another pull). A caller that waited behind the
/// first finds the image stored and is served it, whatever credentials it brought,
/// as containerd and the kubelet do with a present image.
async fn pull_once(
    state: &Shared,
    image: &ImageRef,
    policy: PullPolicy,
    call: &CallOptions,
) -> Result<Value, ApiError> {
    let store = state.provisioner.store().for_call(call);
    let gate = {
        let mut pulls = state.pulls.lock().await;
        Arc::clone(pulls.entry(format!("{}\n{}", image.cache_key(), store.platform())).or_default())
    };
    let _turn = gate.lock().await;
    let metrics = Arc::clone(&state.metrics);
    let image = image.clone();
    let started = Instant::now();
    let result = blocking(move || {
        if image.is_appc() {
            // The appc store looks in the store first itself; a fetch is not told apart.
            let prepared = store.prepare(&image, policy)?;
            let summary = json!({
                "reference": prepared.reference,
                "digest": prepared.digest,
                "chain": prepared.appc_images,
                "layers": prepared.layers.len(),
            });
            return Ok((summary, false));
        }
        if policy != PullPolicy::Always {
            if let Some(img) = store.usable(&image)? {
                return Ok((image_summary(&img), false));
            }
        }
        store.pull(&image, policy).map(|i| (image_summary(&i), true)).map_err(ApiError::from)
    })
    .await;
    match &result {
        Ok((_, true)) => {
            metrics.pulls.inc();
            metrics.pull_duration.observe(started.elapsed().as_secs_f64());
        }
        Ok((_, false)) => {}
        Err(e) => {
            metrics.pulls.inc();
            let reason = match e.0 {
                StatusCode::NOT_FOUND => "not_found",
                StatusCode::FORBIDDEN => "unauthorized",
                StatusCode::BAD_GATEWAY => "registry",
                StatusCode::UNPROCESSABLE_ENTITY => "unpack",
                StatusCode::BAD_REQUEST => "bad_request",
                _ => "internal",
            };
            metrics.pull_failures.get_or_create(&metrics::ReasonLabel { reason: reason.into() }).inc();
        }
    }
    drop(_turn);
    state.pulls.lock().await.retain(|_, g| Arc::strong_count(g) > 1);
    result.map(|(i, _)| i)
}

fn image_summary(image: &crate::store::Image) -> Value {
    serde_json::to_value(ImageSummary::of_image(image)).unwrap_or(Value::Null)
}

/// A caller's registry credentials: a user and password, or an identity token.
/// Their `Debug` is redacted; they are never logged or echoed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CredentialsBody {
    username: Option<String>,
    password: Option<String>,
    identity_token: Option<String>,
}

impl std::fmt::Debug for CredentialsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialsBody(<redacted>)")
    }
}

/// What a pull or provision request may set for itself.
fn call_options(platform: Option<&str>, credentials: Option<CredentialsBody>) -> Result<CallOptions, ApiError> {
    let platform = platform.map(|p| p.parse::<Platform>().map_err(bad_request)).transpose()?;
    let credentials = match credentials {
        None => None,
        Some(CredentialsBody { identity_token: Some(token), username: None, password: None }) => {
            Some(Credentials::IdentityToken(token))
        }
        Some(CredentialsBody { username: Some(username), password: Some(password), identity_token: None }) => {
            Some(Credentials::Basic { username, password })
        }
        Some(_) => {
            return Err(bad_request("credentials are {\"username\", \"password\"} or {\"identity_token\"}"));
        }
    };
    Ok(CallOptions::default().with_platform(platform).with_credentials(credentials))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PullRequest {
    image: String,
    pull: Option<String>,
    platform: Option<String>,
    credentials: Option<CredentialsBody>,
}

async fn pull(State(state): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let _inflight = Inflight::start(&state.metrics);
    let req: PullRequest = parse_json(&body)?;
    let image = parse_ref(&req.image)?;
    let call = call_options(req.platform.as_deref(), req.credentials)?;
    let summary = pull_once(&state, &image, parse_policy(req.pull.as_deref())?, &call).await?;
    Ok(Json(summary))
}

async fn images(State(state): State<Shared>) -> Result<Json<Vec<ImageSummary>>, ApiError> {
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || Ok(Json(provisioner.store().summaries()?))).await
}

#[derive(Deserialize)]
struct ImageQuery {
    image: String,
}

/// What `strata inspect --json` prints, for either image kind.
async fn inspect(State(state): State<Shared>, Query(q): Query<ImageQuery>) -> Result<Json<Value>, ApiError> {
    let image = parse_ref(&q.image)?;
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || {
        let store = provisioner.store();
        let details = if image.is_appc() {
            let found = store.appc().resolve(&image, PullPolicy::Never).map_err(StoreError::from)?;
            serde_json::to_value(AppcDetails::of_appc(&found))
        } else {
            let found = store.get(&image)?.ok_or_else(|| StoreError::NotFound(image.cache_key()))?;
            serde_json::to_value(ImageDetails::of_image(&found))
        };
        details.map(Json).map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    })
    .await
}

async fn remove_image(State(state): State<Shared>, Query(q): Query<ImageQuery>) -> Result<Json<Value>, ApiError> {
    let image = parse_ref(&q.image)?;
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || {
        if provisioner.store().remove(&image)? {
            Ok(Json(json!({ "removed": image.cache_key() })))
        } else {
            Err(ApiError(StatusCode::NOT_FOUND, format!("image '{image}' is not in the store")))
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionRequest {
    id: String,
    image: String,
    backend: Option<String>,
    parent: Option<String>,
    pull: Option<String>,
    platform: Option<String>,
    credentials: Option<CredentialsBody>,
}

fn container_path(id: &str, parent: Option<&str>) -> Result<ContainerPath, ApiError> {
    let id: ContainerId = id.parse().map_err(bad_request)?;
    Ok(match parent {
        Some(p) => p.parse::<ContainerPath>().map_err(bad_request)?.child(id),
        None => ContainerPath::top(id),
    })
}

async fn provision(State(state): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let _inflight = Inflight::start(&state.metrics);
    let req: ProvisionRequest = parse_json(&body)?;
    let container = container_path(&req.id, req.parent.as_deref())?;
    let image = parse_ref(&req.image)?;
    let backend = req.backend.as_deref().map(str::parse::<BackendKind>).transpose().map_err(bad_request)?;
    let call = call_options(req.platform.as_deref(), req.credentials)?;
    pull_once(&state, &image, parse_policy(req.pull.as_deref())?, &call).await?;
    let provisioner = Arc::clone(&state.provisioner);
    let metrics = Arc::clone(&state.metrics);
    blocking(move || {
        let started = Instant::now();
        let done = provisioner.provision_for_call(&container, &image, backend, PullPolicy::Missing, &call)?;
        let label = metrics::BackendLabel { backend: done.backend.to_string() };
        metrics.provisions.get_or_create(&label).inc();
        metrics.provision_duration.get_or_create(&label).observe(started.elapsed().as_secs_f64());
        Ok(Json(serde_json::to_value(&done).unwrap_or(Value::Null)))
    })
    .await
}

#[derive(Deserialize)]
struct DestroyQuery {
    parent: Option<String>,
}

async fn destroy(
    State(state): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<DestroyQuery>,
) -> Result<Json<Value>, ApiError> {
    let _inflight = Inflight::start(&state.metrics);
    let container = container_path(&id, q.parent.as_deref())?;
    let provisioner = Arc::clone(&state.provisioner);
    let metrics = Arc::clone(&state.metrics);
    blocking(move || {
        let started = Instant::now();
        let outcome = provisioner.destroy(&container)?;
        metrics.destroys.inc();
        metrics.destroy_duration.observe(started.elapsed().as_secs_f64());
        let word = if outcome == Destroyed::Destroyed { "destroyed" } else { "not found" };
        Ok(Json(json!({ "container": container.to_string(), "result": word })))
    })
    .await
}

async fn containers(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || Ok(Json(serde_json::to_value(provisioner.containers()?).unwrap_or(Value::Null)))).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RecoverRequest {
    alive: Option<Vec<String>>,
}

async fn recover(State(state): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: RecoverRequest = if body.is_empty() { RecoverRequest::default() } else { parse_json(&body)? };
    let alive = req
        .alive
        .map(|ids| ids.iter().map(|i| i.parse::<ContainerPath>().map_err(bad_request)).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || Ok(Json(serde_json::to_value(provisioner.recover(alive.as_deref())?).unwrap_or(Value::Null))))
        .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GcRequest {
    keep_bytes: Option<u64>,
    keep: Option<Vec<String>>,
}

async fn gc(State(state): State<Shared>, body: Bytes) -> Result<Json<Value>, ApiError> {
    let req: GcRequest = if body.is_empty() { GcRequest::default() } else { parse_json(&body)? };
    let keep = req.keep.unwrap_or_default().iter().map(|r| parse_ref(r)).collect::<Result<Vec<_>, _>>()?;
    let provisioner = Arc::clone(&state.provisioner);
    blocking(move || {
        let report = crate::gc::collect(&provisioner, &GcPolicy::new(req.keep_bytes, keep))?;
        Ok(Json(serde_json::to_value(report).unwrap_or(Value::Null)))
    })
    .await
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn metrics_text(State(state): State<Shared>) -> Response {
    let provisioner = Arc::clone(&state.provisioner);
    let metrics = Arc::clone(&state.metrics);
    let text = tokio::task::spawn_blocking(move || metrics.render(&provisioner)).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint (see docs/openapi.yaml)".into())
}

/// The API's routes.
fn router(state: Shared) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/metrics", get(metrics_text))
        .route("/v1/images", get(images).post(pull).delete(remove_image))
        .route("/v1/images/inspect", get(inspect))
        .route("/v1/containers", get(containers).post(provision))
        .route("/v1/containers/{id}", delete(destroy))
        .route("/v1/recover", post(recover))
        .route("/v1/gc", post(gc))
        .fallback(not_found)
        .with_state(state)
}

/// Serves on `socket` until SIGTERM or SIGINT. Recovers first (keeping every complete
/// container). The socket is created mode 0600 and removed on exit.
pub async fn serve(
    provisioner: Arc<Provisioner>,
    metrics: Arc<Metrics>,
    socket: &Path,
    auto_gc: Option<AutoGc>,
) -> std::io::Result<()> {
    let p = Arc::clone(&provisioner);
    let report = tokio::task::spawn_blocking(move || p.recover(None))
        .await
        .map_err(std::io::Error::other)?
        .map_err(|e| std::io::Error::other(crate::error::report(&e)))?;
    tracing::info!(kept = report.kept.len(), destroyed = report.destroyed.len(), "recovered");
    if let Some(parent) = socket.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if socket.exists() {
        if tokio::net::UnixStream::connect(socket).await.is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("a daemon already answers on {}", socket.display()),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    let state = Arc::new(AppState { provisioner, metrics, pulls: tokio::sync::Mutex::new(HashMap::new()) });
    if let Some(gc) = auto_gc {
        tokio::spawn(auto_gc_loop(Arc::clone(&state.provisioner), gc));
    }
    tokio::spawn(flush_loop(Arc::clone(&state.provisioner)));
    tracing::info!(socket = %socket.display(), "serving");
    let result = axum::serve(listener, router(state)).with_graceful_shutdown(shutdown_signal()).await;
    let _ = std::fs::remove_file(socket);
    tracing::info!("stopped");
    result
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: no new requests; finishing the ones in flight");
}

/// Flushes newly pulled layers in the background (see `store::flush`): pulls never
/// wait for the disk, and what they wrote is made durable within about 30 s.
async fn flush_loop(provisioner: Arc<Provisioner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tick.tick().await;
        let p = Arc::clone(&provisioner);
        let flushed = tokio::task::spawn_blocking(move || p.store().flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "background flush failed; will retry");
        }
    }
}

async fn auto_gc_loop(provisioner: Arc<Provisioner>, gc: AutoGc) {
    let mut tick = tokio::time::interval(gc.interval);
    loop {
        tick.tick().await;
        let p = Arc::clone(&provisioner);
        let gc = gc.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let size: u64 = p.store().layer_sizes().map(|s| s.values().sum()).unwrap_or(0);
            if size > gc.max_store_bytes {
                match crate::gc::collect(&p, &GcPolicy::new(Some(gc.keep_bytes), Vec::new())) {
                    Ok(r) => tracing::info!(images = r.images_removed.len(), bytes = r.bytes_freed, "automatic gc"),
                    Err(e) => tracing::warn!(error = %e, "automatic gc failed"),
                }
            }
        })
        .await;
    }
}

/// The default socket path.
pub fn default_socket() -> PathBuf {
    PathBuf::from("/run/strata/strata.sock")
}

/// The progress hook that feeds `pull_bytes`.
pub fn byte_counter(metrics: &Arc<Metrics>) -> Arc<dyn crate::store::Progress> {
    Arc::new(metrics::BytesCounter(Arc::clone(metrics)))
}
