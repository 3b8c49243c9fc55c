//! Partner API keys: their text format, checked without the store, and the
//! hash that is all the store ever keeps.
//!
//! A key reads `erpk_live_<secret><check>`:
//! - `erpk_live_` tells a key from a JWT (which starts `eyJ`) and lets secret
//!   scanners find a leaked key;
//! - `<secret>` is 32 characters of lowercase RFC 4648 base32 (no padding):
//!   160 random bits from the operating system;
//! - `<check>` is 7 base32 characters of the CRC-32 of everything before it,
//!   so a mistyped or truncated key is refused before any lookup.
//!
//! The store keeps [`hash`] of the whole key. SHA-256 suffices because the
//! secret is random (a slow KDF only helps guessable passwords and would cost
//! every request); hashes are compared in constant time ([`hashes_equal`]).

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const PREFIX: &str = "erpk_live_";
/// Random bytes in a key's secret: 160 bits, above the 128 the issue asks.
const SECRET_BYTES: usize = 20;
/// Base32 characters of the secret (8 per 5 bytes).
const SECRET_CHARS: usize = SECRET_BYTES * 8 / 5;
/// Base32 characters of the CRC-32 (32 bits, padded to 35).
const CHECK_CHARS: usize = 7;
/// Length of a well-formed key.
pub const KEY_LEN: usize = PREFIX.len() + SECRET_CHARS + CHECK_CHARS;

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Why a presented key is refused without looking it up. The variants stay
/// inside the gateway: a client only ever learns "invalid API key".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormatError {
    /// Not `erpk_live_` at the start.
    #[error("not an API key (wrong prefix)")]
    Prefix,
    /// Too short or too long.
    #[error("API key has the wrong length")]
    Length,
    /// A character outside lowercase base32.
    #[error("API key holds a character outside its alphabet")]
    Alphabet,
    /// The checksum does not match: a typo or a truncated copy.
    #[error("API key checksum does not match")]
    Checksum,
}

impl FormatError {
    /// Never: the same text will fail the same way again.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// A key that passed the format check. Its text is a credential: it has no
/// `Display`, and its `Debug` shows the prefix only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({PREFIX}…)")
    }
}

impl ApiKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; SECRET_BYTES];
        getrandom::fill(&mut secret)?;
        let mut text = String::with_capacity(KEY_LEN);
        text.push_str(PREFIX);
        text.push_str(&base32(&secret));
        let check = crc32(text.as_bytes()).to_be_bytes();
        // 32 bits as 7 base32 characters: the top 35 bits of check||0.
        let encoded = base32(&[check[0], check[1], check[2], check[3], 0]);
        text.push_str(&encoded[..CHECK_CHARS]);
        Ok(Self(text))
    }

    /// Checks prefix, length, alphabet and checksum; touches no store.
    pub fn parse(text: &str) -> Result<Self, FormatError> {
        let rest = text.strip_prefix(PREFIX).ok_or(FormatError::Prefix)?;
        if text.len() != KEY_LEN {
            return Err(FormatError::Length);
        }
        // ALPHABET's two ranges; a scan of it per byte was most of a parse.
        if !rest.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)) {
            return Err(FormatError::Alphabet);
        }
        let (body, check) = text.split_at(KEY_LEN - CHECK_CHARS);
        let want = crc32(body.as_bytes()).to_be_bytes();
        let want = base32(&[want[0], want[1], want[2], want[3], 0]);
        if check != &want[..CHECK_CHARS] {
            return Err(FormatError::Checksum);
        }
        Ok(Self(text.to_owned()))
    }

    /// Whether a presented credential claims to be a key rather than a JWT.
    pub fn looks_like_key(text: &str) -> bool {
        text.starts_with(PREFIX)
    }

    /// The key's text, to show once on creation and never again.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store keeps: SHA-256 of the whole key.
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_bytes()).into()
    }
}

/// Constant-time equality of two key hashes.
pub fn hashes_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Lowercase RFC 4648 base32 without padding; `bytes.len()` is a multiple of 5.
fn base32(bytes: &[u8]) -> String {
    debug_assert_eq!(bytes.len() % 5, 0);
    let mut out = String::with_capacity(bytes.len() * 8 / 5);
    for chunk in bytes.chunks(5) {
        let mut buf = 0u64;
        for &b in chunk {
            buf = (buf << 8) | u64::from(b);
        }
        for i in (0..8).rev() {
            out.push(ALPHABET[((buf >> (i * 5)) & 31) as usize] as char);
        }
    }
    out
}

/// CRC-32 (IEEE 802.3, as in zip and PNG), bit by bit: keys are short and a
/// table or a crate would buy nothing.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ApiKey {
        ApiKey::generate().expect("random source")
    }

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn a_generated_key_parses_and_has_the_documented_shape() {
        let k = key();
        assert_eq!(k.expose().len(), KEY_LEN);
        assert!(k.expose().starts_with(PREFIX));
        assert!(ApiKey::looks_like_key(k.expose()));
        assert_eq!(ApiKey::parse(k.expose()), Ok(k));
    }

    #[test]
    fn two_keys_differ() {
        assert_ne!(key().expose(), key().expose());
    }

    #[test]
    fn every_one_character_typo_in_the_secret_or_check_is_caught() {
        let k = key();
        let text = k.expose().as_bytes().to_vec();
        for pos in PREFIX.len()..text.len() {
            for &c in ALPHABET.iter().filter(|&&c| c != text[pos]) {
                let mut typo = text.clone();
                typo[pos] = c;
                let typo = String::from_utf8(typo).expect("ascii");
                assert_eq!(ApiKey::parse(&typo), Err(FormatError::Checksum), "{pos}");
            }
        }
    }

    #[test]
    fn swapped_neighbours_are_caught() {
        let k = key();
        let mut text = k.expose().as_bytes().to_vec();
        let pos = (PREFIX.len()..text.len() - 1)
            .find(|&i| text[i] != text[i + 1])
            .expect("a key has two different neighbours");
        text.swap(pos, pos + 1);
        let text = String::from_utf8(text).expect("ascii");
        assert_eq!(ApiKey::parse(&text), Err(FormatError::Checksum));
    }

    #[test]
    fn malformed_keys_are_refused_by_kind() {
        let k = key();
        let text = k.expose();
        assert_eq!(ApiKey::parse("eyJhbGciOi.x.y"), Err(FormatError::Prefix));
        assert_eq!(ApiKey::parse(&text[..KEY_LEN - 1]), Err(FormatError::Length));
        assert_eq!(ApiKey::parse(&format!("{text}a")), Err(FormatError::Length));
        assert_eq!(ApiKey::parse(&text.to_uppercase()), Err(FormatError::Prefix));
        let mut bad = text.to_owned();
        bad.replace_range(PREFIX.len()..PREFIX.len() + 1, "1");
        assert_eq!(ApiKey::parse(&bad), Err(FormatError::Alphabet));
        let mut non_ascii = text[..KEY_LEN - 2].to_owned();
        non_ascii.push('é');
        assert_eq!(ApiKey::parse(&non_ascii), Err(FormatError::Alphabet));
    }

    #[test]
    fn hashes_compare_equal_only_for_the_same_key() {
        let (a, b) = (key(), key());
        assert!(hashes_equal(&a.hash(), &a.clone().hash()));
        assert!(!hashes_equal(&a.hash(), &b.hash()));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let k = key();
        assert_eq!(format!("{k:?}"), format!("ApiKey({PREFIX}…)"));
    }
}
