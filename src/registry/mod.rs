//! The distribution API v2 client: manifests and blobs from registries, with the
//! auth registries actually use, mirrors, retries and resumable blob streams.
//!
//! Blocking by design: a blob body is a `Read` handed straight to the one-pass
//! unpacker on a worker thread (reqwest's blocking client drives its own tokio
//! runtime underneath), so no async/sync bridge of our own is needed.
//!
//! Mirrors follow containers' `registries.conf` semantics: for every request the
//! registry's mirrors are tried in order, then the registry itself; a mirror that
//! fails (unreachable, 404, 5xx after retries) is skipped for the rest of the pull.
//! `127.0.0.0/8` and `localhost` are insecure by default, as in Docker.

mod auth;
mod challenge;
mod credentials;
pub mod schema1;
mod token;

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_RANGE, RANGE, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::StatusCode;

pub use self::auth::{TokenKey, TokenManager};
pub use self::challenge::{parse as parse_challenges, Challenge};
pub use self::credentials::{Credentials, DockerConfigFile};
pub use self::token::Token;
use crate::digest::Digest;
use crate::image::{media_type, MAX_DOCUMENT_BYTES};
use crate::reference::{DockerRef, DEFAULT_REGISTRY};

/// Docker Hub's API endpoint for `docker.io` names.
const DOCKER_HUB_ENDPOINT: &str = "registry-1.docker.io";
/// What we accept for a manifest request, most preferred first.
const MANIFEST_ACCEPT: &[&str] = &[
    media_type::OCI_INDEX,
    media_type::OCI_MANIFEST,
    media_type::DOCKER_MANIFEST_LIST,
    media_type::DOCKER_MANIFEST,
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
    "application/vnd.docker.distribution.manifest.v1+json",
];
/// Largest error body read from a registry.
const MAX_ERROR_BODY: u64 = 1024 * 1024;
/// Cap on a `Retry-After` we honour.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);
/// Resumes of one blob after a broken or truncated body.
const MAX_RESUMES: u32 = 5;

/// Errors talking to a registry. Messages never hold credentials or tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The connection failed or timed out.
    #[error("cannot reach {url}: {why}")]
    Http {
        /// The URL (without query).
        url: String,
        /// What the HTTP client said.
        why: String,
    },
    /// The registry answered with an error status.
    #[error("{url} answered {status}{}", if message.is_empty() { String::new() } else { format!(": {message}") })]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's error message, if any.
        message: String,
    },
    /// Authentication failed (wrong or missing credentials).
    #[error("authentication to {registry} failed: {why}")]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// Why.
        why: String,
    },
    /// The repository, tag or blob does not exist.
    #[error("{what} not found on {registry}")]
    NotFound {
        /// What was asked.
        what: String,
        /// The registry host.
        registry: String,
    },
    /// The registry sent something that breaks the protocol or does not verify.
    #[error("{0}")]
    Protocol(String),
    /// A configuration problem (bad CA file, …).
    #[error("{0}")]
    Config(String),
}

impl RegistryError {
    pub(crate) fn http(url: &str, e: reqwest::Error) -> Self {
        let url = url.split('?').next().unwrap_or(url).to_owned();
        Self::Http { url, why: describe_http_error(e) }
    }

    /// Worth trying again (or another mirror)?
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { .. } => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

/// Why an HTTP request failed, in words for a message the URL precedes: `timed out`,
/// `connection failed: Connection refused (os error 111)`, `connection failed: failed to
/// lookup address information: …`; reqwest's own text repeats the URL and names layers
/// of its stack instead of the cause.
pub(crate) fn describe_http_error(e: reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let e = e.without_url();
    let mut root: &dyn std::error::Error = &e;
    while let Some(next) = root.source() {
        root = next;
    }
    if e.is_connect() {
        format!("connection failed: {root}")
    } else if std::ptr::addr_eq(root, &e) {
        e.to_string()
    } else {
        format!("{e}: {root}")
    }
}

/// Per-registry settings (`[registries."HOST"]` in the config file).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct HostConfig {
    /// Allow plain HTTP and unverified TLS. Default: false (true for loopback hosts).
    pub insecure: Option<bool>,
    /// Extra CA certificates (PEM) to trust for this registry.
    pub ca_file: Option<PathBuf>,
    /// Mirrors (`HOST[:PORT]`), tried in order before the registry.
    pub mirrors: Vec<String>,
    /// Credentials for this registry.
    pub credentials: Option<Credentials>,
}

impl HostConfig {
    /// Settings with the given fields.
    pub fn new(
        insecure: Option<bool>,
        ca_file: Option<PathBuf>,
        mirrors: Vec<String>,
        credentials: Option<Credentials>,
    ) -> Self {
        Self { insecure, ca_file, mirrors, credentials }
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RegistryOptions {
    /// Per-host settings.
    pub hosts: BTreeMap<String, HostConfig>,
    /// Docker's `config.json`, for credentials. Default: none.
    pub docker_config: Option<PathBuf>,
    /// Credentials for this call's registry (`--creds`), over everything else.
    pub call_credentials: Option<Credentials>,
    /// `--tls-verify=false`: treat this call's registry as insecure.
    pub call_insecure: bool,
    /// Connect timeout. Default 10 s.
    pub connect_timeout: Duration,
    /// Timeout of each read or write. Default 60 s.
    pub io_timeout: Duration,
    /// Retries of a failed request (5xx, 429, broken connection). Default 4.
    pub retries: u32,
    /// First backoff, doubled each retry. Default 200 ms.
    pub backoff: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            hosts: BTreeMap::new(),
            docker_config: None,
            call_credentials: None,
            call_insecure: false,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(60),
            retries: 4,
            backoff: Duration::from_millis(200),
        }
    }
}

/// Installs rustls' process-wide crypto provider (ring) before any HTTP client is
/// built; every HTTP client of strata calls this (a second install is a harmless error).
pub(crate) fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A registry client shared by the pulls of a process: holds the token cache.
#[derive(Debug)]
pub struct Registry {
    options: RegistryOptions,
    tokens: Arc<TokenManager>,
}

impl Registry {
    /// A client with these options.
    pub fn new(options: RegistryOptions) -> Self {
        install_tls_provider();
        Self { options, tokens: Arc::new(TokenManager::default()) }
    }

    /// The same client and token cache, with `credentials` as this call's (`--creds`),
    /// for a daemon that pulls for callers with credentials of their own.
    pub(crate) fn for_caller(&self, credentials: Credentials) -> Self {
        let mut options = self.options.clone();
        options.call_credentials = Some(credentials);
        Self { options, tokens: Arc::clone(&self.tokens) }
    }

    /// The token cache (for metrics and tests).
    pub fn tokens(&self) -> &TokenManager {
        &self.tokens
    }

    /// A session for one image: the endpoints to try and the credentials to use.
    pub fn session(&self, image: &DockerRef) -> Result<Session, RegistryError> {
        let host = image.registry();
        let config = self.options.hosts.get(host).cloned().unwrap_or_default();
        let credentials = match &self.options.call_credentials {
            Some(c) => Some(c.clone()),
            None => match &config.credentials {
                Some(c) => Some(c.clone()),
                None => match &self.options.docker_config {
                    Some(path) => DockerConfigFile::new(path).lookup(host).map_err(RegistryError::Config)?,
                    None => None,
                },
            },
        };
        let mut endpoints = Vec::new();
        for mirror in &config.mirrors {
            let mirror_config = self.options.hosts.get(mirror).cloned().unwrap_or_default();
            endpoints.push(self.endpoint(mirror, &mirror_config, false, mirror_config.credentials.clone())?);
        }
        endpoints.push(self.endpoint(host, &config, self.options.call_insecure, credentials)?);
        Ok(Session {
            repository: image.repository().to_owned(),
            endpoints,
            tokens: Arc::clone(&self.tokens),
            retries: self.options.retries,
            backoff: self.options.backoff,
        })
    }

    fn endpoint(
        &self,
        host: &str,
        config: &HostConfig,
        call_insecure: bool,
        credentials: Option<Credentials>,
    ) -> Result<Endpoint, RegistryError> {
        let insecure = call_insecure || config.insecure.unwrap_or_else(|| is_loopback(host));
        let mut builder = Client::builder()
            .connect_timeout(self.options.connect_timeout)
            .timeout(self.options.io_timeout)
            .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
            .tls_danger_accept_invalid_certs(insecure);
        if let Some(ca) = &config.ca_file {
            let pem = std::fs::read(ca).map_err(|e| RegistryError::Config(format!("CA file {}: {e}", ca.display())))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| RegistryError::Config(format!("CA file {}: {e}", ca.display())))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| RegistryError::Config(format!("HTTP client: {e}")))?;
        let api_host = if host == DEFAULT_REGISTRY { DOCKER_HUB_ENDPOINT } else { host };
        Ok(Endpoint {
            host: host.to_owned(),
            schemes: if insecure { vec!["https", "http"] } else { vec!["https"] },
            api_host: api_host.to_owned(),
            client,
            credentials,
            state: Mutex::new(EndpointState::default()),
        })
    }
}

fn is_loopback(host: &str) -> bool {
    let name =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

#[derive(Debug, Default)]
struct EndpointState {
    /// Index into `schemes` that works.
    scheme: usize,
    /// How to authenticate, once the registry said.
    auth: Option<AuthMethod>,
    /// Unreachable or useless for this pull: skipped.
    dead: bool,
}

#[derive(Debug, Clone)]
enum AuthMethod {
    Basic,
    Bearer(TokenKey),
}

#[derive(Debug)]
struct Endpoint {
    host: String,
    api_host: String,
    schemes: Vec<&'static str>,
    client: Client,
    credentials: Option<Credentials>,
    state: Mutex<EndpointState>,
}

/// A request to make; built afresh for each attempt.
struct Request<'a> {
    path: String,
    accept: Option<&'a str>,
    range_from: Option<u64>,
    what: String,
}

/// One image's conversation with its registry (and mirrors).
#[derive(Debug)]
pub struct Session {
    repository: String,
    endpoints: Vec<Endpoint>,
    tokens: Arc<TokenManager>,
    retries: u32,
    backoff: Duration,
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The exact bytes.
    pub bytes: Vec<u8>,
    /// The media type the registry declared (`Content-Type`, parameters dropped).
    pub media_type: Option<String>,
    /// `Docker-Content-Digest`, if sent.
    pub content_digest: Option<String>,
}

impl Session {
    /// GETs a manifest by tag or digest, bounded to 4 MiB. A body that breaks off
    /// is fetched again.
    pub fn manifest(&self, reference: &str) -> Result<FetchedManifest, RegistryError> {
        let accept = MANIFEST_ACCEPT.join(", ");
        let request = Request {
            path: format!("/v2/{}/manifests/{reference}", self.repository),
            accept: Some(&accept),
            range_from: None,
            what: format!("manifest {}:{reference}", self.repository),
        };
        let mut attempt = 0;
        loop {
            let response = self.send(&request)?;
            let media_type = header_str(&response, reqwest::header::CONTENT_TYPE.as_str())
                .map(|v| v.split(';').next().unwrap_or_default().trim().to_owned());
            let content_digest = header_str(&response, "docker-content-digest");
            match auth::read_limited(response, MAX_DOCUMENT_BYTES) {
                Ok(bytes) => return Ok(FetchedManifest { bytes, media_type, content_digest }),
                Err(e) if attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, "manifest body broke off; fetching again");
                    self.sleep_backoff(attempt, None);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// GETs a small blob (config) in memory, verified against its digest and size.
    pub fn small_blob(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, RegistryError> {
        if size > MAX_DOCUMENT_BYTES {
            return Err(RegistryError::Protocol(format!("{digest} is {size} bytes, over the 4 MiB document limit")));
        }
        let reader = self.blob(digest, Some(size))?;
        let bytes = crate::digest::read_bounded(reader, size)
            .map_err(|e| RegistryError::Protocol(format!("reading blob {digest}: {e}")))?;
        if bytes.len() as u64 != size || Digest::of_bytes(&bytes) != *digest {
            return Err(RegistryError::Protocol(format!(
                "blob {digest} does not match its digest or size: corrupt or tampered"
            )));
        }
        Ok(bytes)
    }

    /// Opens a blob as a stream that resumes (Range) after a broken connection.
    pub fn blob(&self, digest: &Digest, size: Option<u64>) -> Result<BlobReader<'_>, RegistryError> {
        let mut reader = BlobReader {
            session: self,
            digest: digest.clone(),
            size,
            delivered: 0,
            response: None,
            resumes: MAX_RESUMES,
        };
        reader.open()?;
        Ok(reader)
    }

    /// Tries each live endpoint in order; the first answer wins.
    fn send(&self, request: &Request<'_>) -> Result<Response, RegistryError> {
        let mut last = None;
        for endpoint in &self.endpoints {
            if endpoint.state.lock().map(|s| s.dead).unwrap_or(false) {
                continue;
            }
            match self.send_to(endpoint, request) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let is_last = std::ptr::eq(endpoint, self.endpoints.last().unwrap_or(endpoint));
                    if !is_last {
                        tracing::warn!(mirror = %endpoint.host, error = %e, "mirror failed; trying the next");
                        if let Ok(mut s) = endpoint.state.lock() {
                            s.dead = true;
                        }
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Protocol("no registry endpoint to try".into())))
    }

    /// One endpoint: retries with backoff, one re-authentication on 401, scheme fallback.
    fn send_to(&self, endpoint: &Endpoint, request: &Request<'_>) -> Result<Response, RegistryError> {
        let mut attempt = 0;
        // The first 401 is the registry's challenge; a second one means the token we
        // then sent was refused (expired, revoked): it is replaced once.
        let mut challenges_left = 2;
        loop {
            let (scheme, auth) = {
                let s = endpoint.state.lock().map_err(|_| RegistryError::Protocol("endpoint state poisoned".into()))?;
                (endpoint.schemes.get(s.scheme).copied().unwrap_or("https"), s.auth.clone())
            };
            let url = format!("{scheme}://{}{}", endpoint.api_host, request.path);
            let mut builder = endpoint.client.get(&url);
            if let Some(accept) = request.accept {
                builder = builder.header(ACCEPT, accept);
            }
            if let Some(from) = request.range_from {
                builder = builder.header(RANGE, format!("bytes={from}-"));
            }
            builder = match (&auth, &endpoint.credentials) {
                (Some(AuthMethod::Basic), Some(Credentials::Basic { username, password })) => {
                    builder.basic_auth(username, Some(password))
                }
                (Some(AuthMethod::Bearer(key)), credentials) => {
                    let token = self.tokens.token(&endpoint.client, key, credentials.as_ref())?;
                    let value = HeaderValue::from_str(&format!("Bearer {}", token.value())).map_err(|_| {
                        RegistryError::Protocol("the token server sent a token that is not a header value".into())
                    })?;
                    builder.header(AUTHORIZATION, value)
                }
                _ => builder,
            };
            let result = builder.send();
            let response = match result {
                Ok(r) => r,
                Err(e) => {
                    // An insecure registry may speak plain HTTP: fall back once.
                    let switched = endpoint.state.lock().map(|mut s| {
                        if s.scheme + 1 < endpoint.schemes.len() && (e.is_connect() || e.is_request()) {
                            s.scheme += 1;
                            true
                        } else {
                            false
                        }
                    });
                    if switched.unwrap_or(false) {
                        continue;
                    }
                    let err = RegistryError::http(&url, e);
                    if attempt < self.retries {
                        attempt += 1;
                        self.sleep_backoff(attempt, None);
                        continue;
                    }
                    return Err(err);
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && challenges_left > 0 {
                challenges_left -= 1;
                let method = self.authenticate(endpoint, &response, auth.as_ref())?;
                if let Ok(mut s) = endpoint.state.lock() {
                    s.auth = Some(method);
                }
                continue;
            }
            if status.is_success() {
                return Ok(response);
            }
            let retry_after = retry_after(&response);
            let body = auth::read_limited(response, MAX_ERROR_BODY).unwrap_or_default();
            let message = error_message(&body);
            match status {
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(RegistryError::Unauthorized {
                        registry: endpoint.host.clone(),
                        why: if endpoint.credentials.is_some() {
                            format!("the registry refused the credentials ({status}{})", with_colon(&message))
                        } else {
                            format!(
                                "the registry wants credentials ({status}{}); pass --creds or add them to the config",
                                with_colon(&message)
                            )
                        },
                    })
                }
                StatusCode::NOT_FOUND => {
                    return Err(RegistryError::NotFound { what: request.what.clone(), registry: endpoint.host.clone() })
                }
                s if (s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()) && attempt < self.retries => {
                    attempt += 1;
                    tracing::debug!(%url, status = s.as_u16(), attempt, "retrying");
                    self.sleep_backoff(attempt, retry_after);
                }
                s => {
                    return Err(RegistryError::Status {
                        url: url.split('?').next().unwrap_or(&url).to_owned(),
                        status: s.as_u16(),
                        message,
                    })
                }
            }
        }
    }

    /// Reads a 401's challenge and decides how to authenticate from now on.
    fn authenticate(
        &self,
        endpoint: &Endpoint,
        response: &Response,
        previous: Option<&AuthMethod>,
    ) -> Result<AuthMethod, RegistryError> {
        if let Some(AuthMethod::Bearer(key)) = previous {
            // A token we sent was refused (expired, revoked): get a fresh one once.
            self.tokens.invalidate(key, endpoint.credentials.as_ref());
        }
        let challenges: Vec<Challenge> = response
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .collect();
        if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
            let mut realm = bearer.param("realm").map(str::to_owned);
            let mut service = bearer.param("service").map(str::to_owned);
            if realm.is_none() {
                // MESOS-10092: take what is missing from /v2/'s challenge.
                if let Some(base) = self.base_challenge(endpoint) {
                    realm = base.param("realm").map(str::to_owned);
                    service = service.or_else(|| base.param("service").map(str::to_owned));
                }
            }
            let realm = realm.ok_or_else(|| RegistryError::Unauthorized {
                registry: endpoint.host.clone(),
                why: "the registry's bearer challenge names no token realm".into(),
            })?;
            let mut scopes: Vec<String> = bearer
                .param("scope")
                .map(|s| s.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default();
            if scopes.is_empty() {
                scopes.push(format!("repository:{}:pull", self.repository));
            }
            scopes.sort();
            return Ok(AuthMethod::Bearer(TokenKey { realm, service, scopes }));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return match &endpoint.credentials {
                Some(Credentials::Basic { .. }) if !matches!(previous, Some(AuthMethod::Basic)) => {
                    Ok(AuthMethod::Basic)
                }
                Some(_) => Err(RegistryError::Unauthorized {
                    registry: endpoint.host.clone(),
                    why: "the registry refused the credentials".into(),
                }),
                None => Err(RegistryError::Unauthorized {
                    registry: endpoint.host.clone(),
                    why: "the registry wants a user and password; pass --creds or add them to the config".into(),
                }),
            };
        }
        Err(RegistryError::Unauthorized {
            registry: endpoint.host.clone(),
            why: "the registry answered 401 without a usable challenge".into(),
        })
    }

    fn base_challenge(&self, endpoint: &Endpoint) -> Option<Challenge> {
        let scheme =
            endpoint.state.lock().ok().and_then(|s| endpoint.schemes.get(s.scheme).copied()).unwrap_or("https");
        let response = endpoint.client.get(format!("{scheme}://{}/v2/", endpoint.api_host)).send().ok()?;
        let header = response.headers().get(WWW_AUTHENTICATE)?.to_str().ok()?.to_owned();
        parse_challenges(&header).into_iter().find(|c| c.scheme == "bearer")
    }

    fn sleep_backoff(&self, attempt: u32, retry_after: Option<Duration>) {
        let exponential = self.backoff.saturating_mul(1 << attempt.min(6).saturating_sub(1));
        std::thread::sleep(retry_after.unwrap_or(exponential).min(MAX_RETRY_AFTER));
    }
}

fn with_colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

fn header_str(response: &Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// `Retry-After` in seconds (HTTP-dates are treated as "soon").
fn retry_after(response: &Response) -> Option<Duration> {
    let value = response.headers().get(RETRY_AFTER)?.to_str().ok()?;
    Some(value.trim().parse::<u64>().map_or(Duration::from_secs(1), Duration::from_secs))
}

/// The `message`s of a registry error body (`{"errors":[{"code","message"}]}`), or a
/// short excerpt of whatever it is.
pub(crate) fn error_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<Entry>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(body) {
        return e
            .errors
            .iter()
            .map(|e| {
                format!("{} {}", e.code.as_deref().unwrap_or(""), e.message.as_deref().unwrap_or("")).trim().to_owned()
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    let text = String::from_utf8_lossy(body);
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// A blob body that resumes with `Range` (or restarts and skips) when the
/// connection breaks or the body ends early.
pub struct BlobReader<'a> {
    session: &'a Session,
    digest: Digest,
    size: Option<u64>,
    delivered: u64,
    response: Option<Response>,
    resumes: u32,
}

impl std::fmt::Debug for BlobReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader").field("digest", &self.digest).field("delivered", &self.delivered).finish()
    }
}

impl BlobReader<'_> {
    fn open(&mut self) -> Result<(), RegistryError> {
        let request = Request {
            path: format!("/v2/{}/blobs/{}", self.session.repository, self.digest),
            accept: None,
            range_from: (self.delivered > 0).then_some(self.delivered),
            what: format!("blob {}", self.digest),
        };
        let mut response = self.session.send(&request)?;
        if self.delivered > 0 {
            let resumed_at = (response.status() == StatusCode::PARTIAL_CONTENT)
                .then(|| header_str(&response, CONTENT_RANGE.as_str()))
                .flatten()
                .and_then(|r| {
                    r.strip_prefix("bytes ").and_then(|r| r.split('-').next()).and_then(|n| n.parse::<u64>().ok())
                });
            if resumed_at != Some(self.delivered) {
                // No usable range support: restart and skip what was already delivered.
                let skip = self.delivered;
                let skipped = io::copy(&mut (&mut response).take(skip), &mut io::sink())
                    .map_err(|e| RegistryError::Protocol(format!("restarting blob {}: {e}", self.digest)))?;
                if skipped != skip {
                    return Err(RegistryError::Protocol(format!("blob {} is shorter on a second read", self.digest)));
                }
            }
            tracing::info!(blob = %self.digest, offset = self.delivered, "resumed download");
        }
        self.response = Some(response);
        Ok(())
    }

    fn resume(&mut self, why: &str) -> io::Result<()> {
        if self.resumes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("blob {}: {why}, out of retries", self.digest),
            ));
        }
        self.resumes -= 1;
        tracing::warn!(blob = %self.digest, delivered = self.delivered, why, "blob download broke; resuming");
        self.response = None;
        self.open().map_err(io::Error::other)
    }
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(response) = self.response.as_mut() else {
                self.resume("no connection")?;
                continue;
            };
            match response.read(buf) {
                Ok(0) if self.size.is_some_and(|s| self.delivered < s) => self.resume("body ended early")?,
                Ok(n) => {
                    self.delivered += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.resume(&e.to_string())?,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_insecure_by_default() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("127.0.0.1"));
        assert!(!is_loopback("registry.example:5000"));
    }

    #[test]
    fn registry_error_messages() {
        assert_eq!(
            error_message(br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(error_message(b"plain\ntext"), "plaintext");
    }
}
