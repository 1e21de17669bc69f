//! Bearer tokens as token servers hand them out (Docker token spec): `token` or
//! `access_token`, `expires_in` (default 60 s), `issued_at`; a JWT's `exp` is used
//! when the token is one, opaque tokens are fine too.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde::Deserialize;

/// The spec's default lifetime when `expires_in` is absent.
const DEFAULT_EXPIRES_IN: u64 = 60;
/// Refresh this long before expiry (at most a tenth of the lifetime), so a token does
/// not lapse mid-request.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A bearer token and when it stops being usable.
#[derive(Clone)]
pub struct Token {
    value: String,
    expires_at: SystemTime,
    margin: Duration,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token").field("value", &"<redacted>").field("expires_at", &self.expires_at).finish()
    }
}

#[derive(Deserialize)]
struct Response {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
    issued_at: Option<String>,
    refresh_token: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    exp: Option<i64>,
}

impl Token {
    /// Parses a token server's JSON answer, as of `now`. Also returns a refresh token
    /// if the server sent one (OAuth2 flow).
    pub fn parse(body: &[u8], now: SystemTime) -> Result<(Self, Option<String>), String> {
        let r: Response = serde_json::from_slice(body).map_err(|e| format!("malformed token response: {e}"))?;
        let value = r
            .token
            .filter(|t| !t.is_empty())
            .or(r.access_token.filter(|t| !t.is_empty()))
            .ok_or("token response has neither 'token' nor 'access_token'")?;
        let issued = r.issued_at.as_deref().and_then(parse_rfc3339).unwrap_or(now);
        let mut expires_at = issued + Duration::from_secs(r.expires_in.unwrap_or(DEFAULT_EXPIRES_IN).max(1));
        if let Some(exp) = jwt_exp(&value) {
            expires_at = expires_at.min(exp);
        }
        let lifetime = expires_at.duration_since(now).unwrap_or_default();
        let margin = EXPIRY_MARGIN.min(lifetime / 10);
        Ok((Self { value, expires_at, margin }, r.refresh_token))
    }

    /// The token, for `Authorization: Bearer`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// Is it still good at `now` (with a safety margin)?
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        now + self.margin < self.expires_at
    }
}

/// A JWT's `exp` claim, if the token is a JWT (three base64url parts).
fn jwt_exp(token: &str) -> Option<SystemTime> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else { return None };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: Claims = serde_json::from_slice(&bytes).ok()?;
    let exp = u64::try_from(claims.exp?).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

/// Minimal RFC 3339 (`2024-01-02T03:04:05[.frac](Z|±hh:mm)`) to a time.
fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.find(|c: char| !c.is_ascii_digit()).unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        tz if tz.len() == 6 => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (tz.get(1..3)?.parse::<i64>().ok()? * 3600 + tz.get(4..6)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let enc = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
        format!("{}.{}.sig", enc(r#"{"alg":"ES256"}"#), enc(&format!(r#"{{"exp":{exp}}}"#)))
    }

    #[test]
    fn opaque_token_defaults_to_60_seconds() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (t, _) = Token::parse(br#"{"token":"opaque"}"#, now).unwrap();
        assert_eq!(t.value(), "opaque");
        assert!(t.is_fresh(now + Duration::from_secs(53)));
        assert!(!t.is_fresh(now + Duration::from_secs(55)));
        let (short, _) = Token::parse(br#"{"token":"t","expires_in":2}"#, now).unwrap();
        assert!(short.is_fresh(now + Duration::from_millis(1500)), "short tokens keep a proportional margin");
    }

    #[test]
    fn access_token_issued_at_and_jwt_exp() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let body = br#"{"access_token":"a","expires_in":300,"issued_at":"2023-11-14T22:13:20Z"}"#;
        let (t, _) = Token::parse(body, now).unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(1_700_000_300));
        let body = format!(r#"{{"token":"{}","expires_in":3600}}"#, jwt(1_700_000_100));
        let (t, _) = Token::parse(body.as_bytes(), now).unwrap();
        assert_eq!(t.expires_at, UNIX_EPOCH + Duration::from_secs(1_700_000_100), "the JWT's exp wins when earlier");
        assert!(Token::parse(br#"{"expires_in":3}"#, now).is_err());
        assert!(Token::parse(b"nope", now).is_err());
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(UNIX_EPOCH));
        assert_eq!(
            parse_rfc3339("2023-11-14T22:13:20.123456789Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(parse_rfc3339("2023-11-14T23:13:20+01:00"), Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)));
        assert_eq!(parse_rfc3339("garbage"), None);
    }
}
