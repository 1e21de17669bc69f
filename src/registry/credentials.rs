//! Registry credentials: `--creds`, the config file, and Docker's `config.json`
//! (`auths` with `auth` or `identitytoken`, `credHelpers`, `credsStore` through
//! `docker-credential-NAME get`). Secrets are redacted from every `Debug` and
//! never put in a message, a log or a child's arguments (helpers get the server
//! name on stdin).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use serde::Deserialize;

/// Docker Hub's key in `config.json`, as `docker login` writes it.
const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";
/// What a helper answers as the user name for an identity token.
const TOKEN_USER: &str = "<token>";

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// User and password (Basic, or exchanged for a bearer token).
    Basic {
        /// The user.
        username: String,
        /// The password.
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken`), exchanged at the token realm.
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

impl Credentials {
    /// Parses `USER[:PASSWORD]`; a missing password is an error (strata never prompts).
    pub fn parse_user_password(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some((user, password)) if !user.is_empty() => {
                Ok(Self::Basic { username: user.to_owned(), password: password.to_owned() })
            }
            _ => Err("credentials must be USER:PASSWORD".into()),
        }
    }

    /// The user name, if known (sent as `account` to token servers).
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Basic { username, .. } => Some(username),
            Self::IdentityToken(_) => None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(default)]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default)]
    creds_store: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    auth: Option<String>,
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HelperAnswer {
    username: String,
    secret: String,
}

/// Looks up credentials in a Docker `config.json`.
#[derive(Debug, Clone)]
pub struct DockerConfigFile {
    path: PathBuf,
}

impl DockerConfigFile {
    /// Uses the `config.json` at `path` (it may not exist).
    pub fn new(path: &Path) -> Self {
        Self { path: path.to_owned() }
    }

    /// Credentials for `host` (`docker.io` is looked up under Docker Hub's keys).
    pub fn lookup(&self, host: &str) -> Result<Option<Credentials>, String> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let config: DockerConfig =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let keys = keys_for(host);
        if let Some(helper) = keys.iter().find_map(|k| config.cred_helpers.get(k)) {
            return run_helper(helper, server_url(host));
        }
        for (key, entry) in &config.auths {
            if keys.iter().any(|k| normalize_key(key) == normalize_key(k)) {
                if let Some(token) = entry.identitytoken.as_ref().filter(|t| !t.is_empty()) {
                    return Ok(Some(Credentials::IdentityToken(token.clone())));
                }
                if let Some(auth) = entry.auth.as_ref().filter(|a| !a.is_empty()) {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|_| format!("{}: the 'auth' entry for {key} is not base64", self.path.display()))?;
                    let text = String::from_utf8(decoded)
                        .map_err(|_| format!("{}: the 'auth' entry for {key} is not UTF-8", self.path.display()))?;
                    return Credentials::parse_user_password(&text).map(Some).map_err(|_| {
                        format!("{}: the 'auth' entry for {key} is not user:password", self.path.display())
                    });
                }
            }
        }
        match &config.creds_store {
            Some(store) if !store.is_empty() => run_helper(store, server_url(host)),
            _ => Ok(None),
        }
    }
}

/// The keys a host may be stored under.
fn keys_for(host: &str) -> Vec<String> {
    if matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        vec![DOCKER_HUB_KEY.into(), "index.docker.io".into(), "docker.io".into(), "registry-1.docker.io".into()]
    } else {
        vec![host.to_owned(), format!("https://{host}"), format!("http://{host}")]
    }
}

fn server_url(host: &str) -> &str {
    if matches!(host, "docker.io" | "index.docker.io" | "registry-1.docker.io") {
        DOCKER_HUB_KEY
    } else {
        host
    }
}

/// `https://host/v1/` → `host`.
fn normalize_key(key: &str) -> String {
    let key = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    key.split('/').next().unwrap_or(key).to_owned()
}

/// `docker-credential-NAME get`, the server on stdin, JSON on stdout.
fn run_helper(name: &str, server: &str) -> Result<Option<Credentials>, String> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
        return Err(format!("invalid credential helper name '{name}'"));
    }
    let program = format!("docker-credential-{name}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper {program}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| format!("credential helper {program}: {e}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout.contains("credentials not found") {
            return Ok(None);
        }
        return Err(format!("credential helper {program} failed ({})", out.status));
    }
    let answer: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {program} gave a malformed answer"))?;
    if answer.username == TOKEN_USER {
        Ok(Some(Credentials::IdentityToken(answer.secret)))
    } else {
        Ok(Some(Credentials::Basic { username: answer.username, password: answer.secret }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_and_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        std::fs::write(
            &path,
            format!(
                r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{auth}"}},"reg.example:5000":{{"identitytoken":"tok"}}}}}}"#
            ),
        )
        .unwrap();
        let file = DockerConfigFile::new(&path);
        assert_eq!(
            file.lookup("docker.io").unwrap(),
            Some(Credentials::Basic { username: "alice".into(), password: "s3cret".into() })
        );
        assert_eq!(file.lookup("reg.example:5000").unwrap(), Some(Credentials::IdentityToken("tok".into())));
        assert_eq!(file.lookup("other").unwrap(), None);
        assert_eq!(DockerConfigFile::new(&dir.path().join("none")).lookup("x").unwrap(), None);
        let shown = format!("{:?}", file.lookup("docker.io").unwrap());
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn helpers_are_run_with_the_server_on_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let helper = dir.path().join("docker-credential-test");
        std::fs::write(
            &helper,
            "#!/bin/sh\nread server\necho \"{\\\"Username\\\":\\\"bob\\\",\\\"Secret\\\":\\\"pw-$server\\\"}\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let path = dir.path().join("config.json");
        std::fs::write(&path, r#"{"credHelpers":{"reg.example":"test"}}"#).unwrap();
        let old = std::env::var_os("PATH").unwrap_or_default();
        let new_path = format!("{}:{}", dir.path().display(), old.to_string_lossy());
        // Run the lookup in a child environment: PATH is process-wide.
        let found = with_path(&new_path, || DockerConfigFile::new(&path).lookup("reg.example"));
        assert_eq!(
            found.unwrap(),
            Some(Credentials::Basic { username: "bob".into(), password: "pw-reg.example".into() })
        );
        assert!(Credentials::parse_user_password("nouser").is_err());
    }

    fn with_path<T>(path: &str, f: impl FnOnce() -> T) -> T {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap();
        let old = std::env::var_os("PATH");
        // Tests that touch PATH serialize on LOCK.
        std::env::set_var("PATH", path);
        let out = f();
        if let Some(old) = old {
            std::env::set_var("PATH", old);
        }
        out
    }
}
