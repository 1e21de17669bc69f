//! Real registries for the tests: Debian's `docker-registry` (CNCF distribution)
//! started on 127.0.0.1 — plain, with htpasswd basic auth, or with token auth served
//! by a token server here that signs real ES256 JWTs the registry verifies — plus a
//! fault-injecting proxy. Everything is stopped (by pid) when dropped.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "wonderland";
/// The OAuth2 refresh token (Docker's `identitytoken`) the token server accepts.
pub const REFRESH_TOKEN: &str = "refresh-me-please";
const SERVICE: &str = "strata-test";
const ISSUER: &str = "strata-test-issuer";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// How a registry authenticates.
pub enum Auth {
    None,
    Htpasswd,
    Token(Arc<TokenServer>),
    /// No auth, but HTTPS with a certificate for 127.0.0.1 from a private CA (its PEM).
    Tls(PathBuf),
}

/// Makes a CA and a server certificate for 127.0.0.1 in `dir`; returns (ca.pem, cert.pem, key.pem).
pub fn make_tls_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=strata test CA", "-keyout"])
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
        ])
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-in"])
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .args(["-CAcreateserial", "-extfile"])
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")));
    (p("ca.pem"), p("server.pem"), p("server.key"))
}

/// A running `docker-registry`.
pub struct Registry {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Registry {
    pub fn start(auth: Auth) -> Self {
        Self::start_with(auth, "")
    }

    /// With extra top-level YAML (e.g. `compatibility:` for schema 1).
    pub fn start_with(auth: Auth, extra_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Htpasswd => {
                let hash = Command::new("python3")
                    .args(["-W", "ignore", "-c", &format!("import crypt; print(crypt.crypt('{PASSWORD}', crypt.mksalt(crypt.METHOD_BLOWFISH)))")])
                    .output()
                    .unwrap();
                let hash = String::from_utf8(hash.stdout).unwrap();
                std::fs::write(dir.path().join("htpasswd"), format!("{USER}:{}\n", hash.trim())).unwrap();
                format!("auth:\n  htpasswd:\n    realm: strata-test\n    path: {}\n", dir.path().join("htpasswd").display())
            }
            Auth::Tls(dir) => {
                let (_, cert, key) = make_tls_certs(dir);
                format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display())
            }
            Auth::Token(server) => format!(
                "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                server.port,
                server.cert_pem.display()
            ),
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}{}",
            dir.path().join("data").display(),
            if matches!(auth, Auth::Tls(_)) { auth_yaml.as_str() } else { "" },
            if matches!(auth, Auth::Tls(_)) { "" } else { auth_yaml.as_str() },
        ) + extra_yaml;
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry is not installed: run the README's test command, which installs it");
        let registry = Self { port, child, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Pushes an OCI layout's tag with skopeo.
    pub fn push(&self, layout: &Path, tag: &str, repo: &str, creds: Option<&str>) {
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display())).arg(format!("docker://{}/{repo}", self.host()));
        run(&mut cmd);
    }

    /// Pushes a tag as a signed Docker schema 1 manifest.
    pub fn push_schema1(&self, layout: &Path, tag: &str, repo: &str) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false", "--format", "v2s1"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host())));
    }

    /// Pushes every platform of an index.
    pub fn push_all(&self, layout: &Path, tag: &str, repo: &str) {
        run(Command::new("skopeo")
            .args(["copy", "--quiet", "--all", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo}", self.host())));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token server: checks Basic credentials, grants scopes, signs ES256 JWTs with a
/// certificate the registry trusts (`x5c` header). Counts the tokens it issues.
pub struct TokenServer {
    pub port: u16,
    pub cert_pem: PathBuf,
    key: ring::signature::EcdsaKeyPair,
    cert_der: Vec<u8>,
    pub issued: AtomicUsize,
    /// Lifetime of the tokens, seconds.
    pub lifetime: Mutex<u64>,
    /// Whether anonymous users may pull.
    pub anonymous_pull: AtomicBool,
    /// Issue the next N tokens for a wrong audience (the registry refuses them).
    pub bad_tokens: AtomicUsize,
    /// Refresh-token exchanges served.
    pub refreshes: AtomicUsize,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
}

impl TokenServer {
    pub fn start() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        run(Command::new("openssl")
            .args(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out"])
            .arg(p("key.pem")));
        run(Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-outform", "DER", "-in"])
            .arg(p("key.pem"))
            .arg("-out")
            .arg(p("key.p8")));
        run(Command::new("openssl")
            .args(["req", "-new", "-x509", "-days", "2", "-subj", "/CN=strata-test-token", "-key"])
            .arg(p("key.pem"))
            .arg("-out")
            .arg(p("cert.pem")));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(p("cert.pem"))
            .arg("-out")
            .arg(p("cert.der")));
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &std::fs::read(p("key.p8")).unwrap(),
            &rng,
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = Arc::new(Self {
            port,
            cert_pem: p("cert.pem"),
            key,
            cert_der: std::fs::read(p("cert.der")).unwrap(),
            issued: AtomicUsize::new(0),
            lifetime: Mutex::new(300),
            anonymous_pull: AtomicBool::new(false),
            bad_tokens: AtomicUsize::new(0),
            refreshes: AtomicUsize::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            _dir: dir,
        });
        let me = Arc::clone(&server);
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || loop {
            if me.stop.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let me = Arc::clone(&me);
                    std::thread::spawn(move || me.serve(stream));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        });
        server
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_nonblocking(false);
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if request_line.starts_with("POST") {
            // OAuth2: grant_type=refresh_token&refresh_token=…&scope=…
            let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let mut body = vec![0u8; len];
            let _ = reader.read_exact(&mut body);
            let form = String::from_utf8_lossy(&body).to_string();
            let field = |name: &str| {
                form.split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
                    .map(percent_decode)
                    .unwrap_or_default()
            };
            let (status, answer) = if field("grant_type") == "refresh_token" && field("refresh_token") == REFRESH_TOKEN
            {
                self.refreshes.fetch_add(1, Ordering::SeqCst);
                let scopes: Vec<String> = field("scope").split(' ').map(str::to_owned).collect();
                let token: serde_json::Value = serde_json::from_str(&self.token(&scopes, true)).unwrap();
                (200, serde_json::json!({"access_token": token["token"], "expires_in": 300}).to_string())
            } else {
                (401, r#"{"error":"invalid_grant"}"#.to_owned())
            };
            let mut stream = stream;
            let _ = write!(stream, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
            return;
        }
        let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
        let mut scopes = Vec::new();
        for pair in query.split('&') {
            if let Some(v) = pair.strip_prefix("scope=") {
                scopes.push(percent_decode(v));
            }
        }
        let user = headers.get("authorization").and_then(|h| h.strip_prefix("Basic ")).and_then(|b| {
            let d = base64::engine::general_purpose::STANDARD.decode(b).ok()?;
            String::from_utf8(d).ok()
        });
        let (status, body) = match user.as_deref() {
            Some(creds) if creds != format!("{USER}:{PASSWORD}") => {
                (401, r#"{"details":"bad credentials"}"#.to_owned())
            }
            None if !self.anonymous_pull.load(Ordering::Relaxed) => {
                (401, r#"{"details":"credentials required"}"#.to_owned())
            }
            authenticated => {
                let push = authenticated.is_some();
                (200, self.token(&scopes, push))
            }
        };
        let mut stream = stream;
        let reason = if status == 200 { "OK" } else { "Unauthorized" };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }

    fn token(&self, scopes: &[String], push: bool) -> String {
        self.issued.fetch_add(1, Ordering::SeqCst);
        let lifetime = *self.lifetime.lock().unwrap();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .flat_map(|s| s.split(' '))
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                let granted: Vec<&str> =
                    actions.split(',').filter(|a| *a == "pull" || (push && *a == "push")).collect();
                Some(serde_json::json!({"type": kind, "name": name, "actions": granted}))
            })
            .collect();
        let audience = if self.bad_tokens.load(Ordering::SeqCst) > 0 {
            self.bad_tokens.fetch_sub(1, Ordering::SeqCst);
            "someone-else"
        } else {
            SERVICE
        };
        let enc = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let header = serde_json::json!({"alg": "ES256", "typ": "JWT",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({"iss": ISSUER, "sub": USER, "aud": audience, "exp": now + lifetime,
            "nbf": now - 5, "iat": now, "jti": format!("{}", self.issued.load(Ordering::SeqCst)), "access": access});
        let signing_input = format!("{}.{}", enc(header.to_string().as_bytes()), enc(claims.to_string().as_bytes()));
        let sig = self.key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).unwrap();
        let token = format!("{signing_input}.{}", enc(sig.as_ref()));
        serde_json::json!({"token": token, "expires_in": lifetime, "issued_at": null}).to_string()
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Faults the proxy injects; counters go down as faults are served.
#[derive(Default)]
pub struct Faults {
    /// Answer the next N requests with 503.
    pub unavailable: usize,
    /// Answer the next N requests with 429 and `Retry-After: 1`.
    pub too_many: usize,
    /// Cut the next N blob bodies in half (Content-Length still says the whole).
    pub truncate_blobs: usize,
    /// Flip a byte in every blob body.
    pub corrupt_blobs: bool,
    /// Sleep this long before every answer.
    pub delay: Duration,
    /// Requests seen.
    pub requests: usize,
    /// Paths requested, in order.
    pub paths: Vec<String>,
    /// Requests that carried an `Authorization` header.
    pub with_authorization: usize,
    /// Answer blob GETs with a 307 to this base URL (another host: blob storage).
    pub redirect_blobs_to: Option<String>,
    /// Add this `Authorization` header upstream (a presigned URL carries its own).
    pub upstream_authorization: Option<String>,
}

/// A reverse proxy in front of a registry that injects faults.
pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    pub fn start(upstream_port: u16) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let faults = Arc::new(Mutex::new(Faults::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s) = (Arc::clone(&faults), Arc::clone(&stop));
        std::thread::spawn(move || loop {
            if s.load(Ordering::Relaxed) {
                return;
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    let f = Arc::clone(&f);
                    std::thread::spawn(move || proxy_one(stream, upstream_port, &f));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        });
        Self { port, faults, stop }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn proxy_one(stream: TcpStream, upstream_port: u16, faults: &Mutex<Faults>) {
    let _ = stream.set_nonblocking(false);
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let is_blob = path.contains("/blobs/");
    let (delay, inject, truncate, corrupt, redirect, upstream_auth) = {
        let mut f = faults.lock().unwrap();
        f.requests += 1;
        f.paths.push(path.clone());
        if headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("authorization")) {
            f.with_authorization += 1;
        }
        let inject = if f.unavailable > 0 {
            f.unavailable -= 1;
            Some("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        } else if f.too_many > 0 {
            f.too_many -= 1;
            Some("HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        } else {
            None
        };
        let truncate = is_blob
            && inject.is_none()
            && f.truncate_blobs > 0
            && !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("range"));
        if truncate {
            f.truncate_blobs -= 1;
        }
        let redirect = if is_blob { f.redirect_blobs_to.clone() } else { None };
        (f.delay, inject, truncate, is_blob && f.corrupt_blobs, redirect, f.upstream_authorization.clone())
    };
    std::thread::sleep(delay);
    let mut out = stream;
    if let Some(answer) = inject {
        let _ = out.write_all(answer.as_bytes());
        return;
    }
    if let Some(base) = redirect {
        let _ = write!(out, "HTTP/1.1 307 Temporary Redirect\r\nLocation: {base}{path}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
    }
    let client = reqwest::blocking::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut req = client.get(format!("http://127.0.0.1:{upstream_port}{path}"));
    for (k, v) in &headers {
        if !k.eq_ignore_ascii_case("host") && !k.eq_ignore_ascii_case("connection") {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    if let Some(auth) = upstream_auth {
        req = req.header("authorization", auth);
    }
    let Ok(mut resp) = req.send() else { return };
    let mut body = Vec::new();
    let _ = resp.read_to_end(&mut body);
    let mut head = format!("HTTP/1.1 {}\r\n", resp.status());
    for (k, v) in resp.headers() {
        let k = k.as_str();
        if !matches!(k, "content-length" | "transfer-encoding" | "connection") {
            head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap_or("")));
        }
    }
    head.push_str(&format!("Content-Length: {}\r\nConnection: close\r\n\r\n", body.len()));
    // Only layer-sized bodies, so that the layer path (not the config) meets the bad bytes.
    if corrupt && body.len() > 4096 {
        let mid = body.len() / 2;
        body[mid] ^= 0x55;
    }
    let _ = out.write_all(head.as_bytes());
    if truncate {
        let _ = out.write_all(&body[..body.len() / 2]);
        let _ = out.flush();
        let _ = out.shutdown(std::net::Shutdown::Both);
        return;
    }
    let _ = out.write_all(&body);
}
