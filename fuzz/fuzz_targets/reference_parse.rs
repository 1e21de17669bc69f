//! Any string: parsing returns (no panic), and an accepted reference's store key
//! parses back to the same key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::reference::ImageRef;

fuzz_target!(|input: &str| {
    if let Ok(parsed) = ImageRef::parse(input) {
        let key = parsed.cache_key();
        let again = ImageRef::parse(&key).unwrap_or_else(|e| panic!("store key {key:?} does not parse: {e}"));
        assert_eq!(again.cache_key(), key);
    }
});
