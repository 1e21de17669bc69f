//! The token manager: bearer tokens cached per (realm, service, scopes, who asked),
//! fetched with the user's credentials or anonymously, refreshed when expired, pruned
//! (Mesos left both as TODOs). One token serves the manifest and every blob of a pull.
//! Who asked is part of the key because a daemon serves callers with different
//! credentials: a token granted to one must never serve another, nor an anonymous one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use super::token::Token;
use super::{Credentials, RegistryError};

/// Largest token response read (containers/image uses the same bound).
const MAX_TOKEN_RESPONSE: u64 = 1024 * 1024;
/// `client_id` sent with OAuth2 refresh-token exchanges.
const CLIENT_ID: &str = "strata";

/// Where and for what a token is asked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// The token server URL.
    pub realm: String,
    /// The `service` parameter.
    pub service: Option<String>,
    /// The scopes, sorted.
    pub scopes: Vec<String>,
}

/// Who a token was granted to: a sha256 over the credentials (never the secret
/// itself, so a heap dump of the cache holds no password); `None` when anonymous.
type Holder = Option<[u8; 32]>;

fn holder(credentials: Option<&Credentials>) -> Holder {
    use sha2::Digest as _;
    credentials.map(|c| {
        let mut hash = sha2::Sha256::new();
        match c {
            Credentials::Basic { username, password } => {
                hash.update(b"basic\0");
                hash.update(username.as_bytes());
                hash.update(b"\0");
                hash.update(password.as_bytes());
            }
            Credentials::IdentityToken(token) => {
                hash.update(b"identity\0");
                hash.update(token.as_bytes());
            }
        }
        hash.finalize().into()
    })
}

/// Caches tokens; shared by every pull of a process.
#[derive(Debug, Default)]
pub struct TokenManager {
    tokens: Mutex<HashMap<(TokenKey, Holder), Token>>,
    hits: AtomicU64,
    misses: AtomicU64,
    fetches: AtomicU64,
}

impl TokenManager {
    /// A fresh token for `key`, from the cache or the token server.
    pub(crate) fn token(
        &self,
        client: &reqwest::blocking::Client,
        key: &TokenKey,
        credentials: Option<&Credentials>,
    ) -> Result<Token, RegistryError> {
        let now = SystemTime::now();
        let entry = (key.clone(), holder(credentials));
        if let Ok(tokens) = self.tokens.lock() {
            if let Some(t) = tokens.get(&entry).filter(|t| t.is_fresh(now)) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(t.clone());
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let token = self.fetch(client, key, credentials)?;
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|_, t| t.is_fresh(now));
            tokens.insert(entry, token.clone());
        }
        Ok(token)
    }

    /// Forgets the token for `key` granted to `credentials` (the registry refused it).
    pub(crate) fn invalidate(&self, key: &TokenKey, credentials: Option<&Credentials>) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&(key.clone(), holder(credentials)));
        }
    }

    /// (cache hits, cache misses, requests to token servers).
    pub fn stats(&self) -> (u64, u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed), self.fetches.load(Ordering::Relaxed))
    }

    fn fetch(
        &self,
        client: &reqwest::blocking::Client,
        key: &TokenKey,
        credentials: Option<&Credentials>,
    ) -> Result<Token, RegistryError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let realm = reqwest::Url::parse(&key.realm)
            .map_err(|e| RegistryError::Protocol(format!("token realm '{}' is not a URL: {e}", key.realm)))?;
        let request = match credentials {
            Some(Credentials::IdentityToken(refresh)) => {
                let mut form: Vec<(&str, &str)> =
                    vec![("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", CLIENT_ID)];
                if let Some(service) = &key.service {
                    form.push(("service", service));
                }
                let scope = key.scopes.join(" ");
                form.push(("scope", &scope));
                let body: String =
                    form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&");
                client
                    .post(realm.clone())
                    .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                    .body(body)
            }
            other => {
                let mut url = realm.clone();
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = &key.service {
                        query.append_pair("service", service);
                    }
                    for scope in &key.scopes {
                        query.append_pair("scope", scope);
                    }
                    if let Some(user) = other.and_then(Credentials::username) {
                        query.append_pair("account", user);
                    }
                }
                let request = client.get(url);
                match other {
                    Some(Credentials::Basic { username, password }) => request.basic_auth(username, Some(password)),
                    _ => request,
                }
            }
        };
        let response = request.send().map_err(|e| RegistryError::http(&key.realm, e))?;
        let status = response.status();
        let body = read_limited(response, MAX_TOKEN_RESPONSE)?;
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized {
                registry: realm.host_str().unwrap_or_default().to_owned(),
                why: format!("the token server refused the credentials ({status})"),
            });
        }
        if !status.is_success() {
            return Err(RegistryError::Status {
                url: strip_query(&realm),
                status: status.as_u16(),
                message: super::error_message(&body),
            });
        }
        let (token, _) = Token::parse(&body, SystemTime::now()).map_err(RegistryError::Protocol)?;
        Ok(token)
    }
}

fn strip_query(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}

/// Percent-encodes a form value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads at most `limit` bytes of a response body.
pub(crate) fn read_limited(response: reqwest::blocking::Response, limit: u64) -> Result<Vec<u8>, RegistryError> {
    let url = response.url().to_string();
    crate::digest::read_bounded(response, limit).map_err(|e| RegistryError::Protocol(format!("reading {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_kept_apart_per_holder() {
        let alice = Credentials::Basic { username: "alice".into(), password: "a".into() };
        let alice_other_password = Credentials::Basic { username: "alice".into(), password: "b".into() };
        let ids = [holder(None), holder(Some(&alice)), holder(Some(&alice_other_password))];
        assert!(ids[0].is_none());
        assert_ne!(ids[1], ids[2], "a wrong password must not reuse the right one's token");
        assert_eq!(ids[1], holder(Some(&alice.clone())));
        let manager = TokenManager::default();
        let key = TokenKey { realm: "http://127.0.0.1:1/token".into(), service: None, scopes: vec![] };
        let token = Token::parse(br#"{"token":"t","expires_in":300}"#, SystemTime::now()).unwrap().0;
        manager.tokens.lock().unwrap().insert((key.clone(), holder(Some(&alice))), token);
        super::super::install_tls_provider();
        let client = reqwest::blocking::Client::new();
        assert_eq!(manager.token(&client, &key, Some(&alice)).unwrap().value(), "t");
        // Anonymous asks the (unreachable) token server instead of taking alice's token.
        assert!(manager.token(&client, &key, None).is_err());
        manager.invalidate(&key, Some(&alice));
        assert!(manager.tokens.lock().unwrap().is_empty());
    }

    #[test]
    fn form_encoding() {
        assert_eq!(encode("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
        assert_eq!(encode("a b~"), "a%20b~");
    }
}
