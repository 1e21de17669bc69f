//! Any bytes as what a registry answers outside the blobs: a `WWW-Authenticate`
//! header and a token server's JSON. Parsing returns, never panics, and a parsed
//! token's freshness can be asked at any time.
#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use strata::registry::{parse_challenges, Token};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(header) = std::str::from_utf8(bytes) {
        for challenge in parse_challenges(header) {
            let _ = (challenge.param("realm"), challenge.param("service"), challenge.param("scope"));
        }
    }
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    if let Ok((token, _refresh)) = Token::parse(bytes, now) {
        assert!(!token.value().is_empty());
        let _ = token.is_fresh(now);
        let _ = token.is_fresh(SystemTime::UNIX_EPOCH);
        let _ = token.is_fresh(now + Duration::from_secs(u64::from(u32::MAX)));
    }
});
