//! Fuzzes `gateway::keys::ApiKey::parse`, the format check every presented
//! `X-API-Key` passes before the key store is asked: prefix, length,
//! alphabet and CRC-32 check characters, on arbitrary text.
//!
//! Beyond "never panics": a key that parses is exactly the text given (it
//! re-serialises to itself and parses again to an equal key), has the
//! documented length and prefix, and text without the prefix is always
//! refused as not being a key.
#![no_main]

use gateway::keys::{ApiKey, FormatError, KEY_LEN, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Header values reach the parser as text; lossy decoding keeps every
    // input useful instead of skipping the non-UTF-8 ones.
    let text = String::from_utf8_lossy(data);
    let parsed = ApiKey::parse(&text);
    if !ApiKey::looks_like_key(&text) {
        assert_eq!(parsed, Err(FormatError::Prefix), "text without the prefix must be refused as such");
    }
    if let Ok(key) = parsed {
        assert_eq!(key.expose(), text, "a key is the text it was parsed from");
        assert_eq!(key.expose().len(), KEY_LEN);
        assert!(key.expose().starts_with(PREFIX));
        assert_eq!(ApiKey::parse(key.expose()).as_ref(), Ok(&key), "a parsed key parses again");
        assert_eq!(key.hash(), key.clone().hash(), "the stored hash depends on the text alone");
        assert!(!format!("{key:?}").contains(&key.expose()[PREFIX.len()..]), "Debug never shows the secret");
    }
});
