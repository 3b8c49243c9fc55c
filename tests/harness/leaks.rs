//! Secrets never leak: every log line the product writes in a test binary
//! (at `info`, the production default) and every answer the harness
//! receives (`super::send`) are scanned for partner API keys, JWTs and
//! webhook signing secrets. The answers that issue one (a key created or
//! rotated, a webhook endpoint created or its secret rotated) are the only
//! ones allowed to carry it. A find fails the test that sees it.
//!
//! The tiers run in the test's process here; suites that start the binary
//! as a child (`tests/cli.rs`, `tests/traces.rs`, `tests/crash.rs`) are not
//! covered.

use std::sync::{Mutex, Once};

use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Log lines that carried a secret, with what it looked like.
static FOUND: Mutex<Vec<String>> = Mutex::new(Vec::new());
static WATCH: Once = Once::new();

/// Installs this binary's log subscriber: every line at `info` and above
/// is scanned, and `warn` and above are also printed with the test's
/// output (what the suites printed before).
pub fn watch_logs() {
    WATCH.call_once(|| {
        let scanned = tracing_subscriber::fmt::layer()
            .json()
            .with_writer(|| Scanner)
            .with_filter(tracing_subscriber::EnvFilter::new("info"));
        let shown =
            tracing_subscriber::fmt::layer().with_test_writer().with_filter(tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::registry().with(scanned).with(shown).try_init();
    });
}

/// Fails if a log line so far carried a secret.
pub fn assert_none_logged() {
    let found = FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    assert!(found.is_empty(), "secrets in log lines: {found:?}");
}

/// Whether `method path` answers with a newly issued secret by design.
pub fn issues_secret(method: &str, path: &str) -> bool {
    let path = path.split('?').next().unwrap_or(path);
    method == "POST"
        && (path == "/ops/v1/keys"
            || (path.starts_with("/ops/v1/keys/") && path.ends_with("/rotate"))
            || path == "/partner/v1/webhooks"
            || path.ends_with("/rotate-secret"))
}

/// The kind of secret in `text`, if there is one.
pub fn secret_in(text: &str) -> Option<&'static str> {
    let bytes = text.as_bytes();
    let run = |from: usize, allowed: fn(u8) -> bool| bytes[from..].iter().take_while(|b| allowed(**b)).count();
    let base64url = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    for (at, _) in text.match_indices("erpk_live_") {
        if run(at + 10, |b| b.is_ascii_alphanumeric()) >= 20 {
            return Some("a partner API key");
        }
    }
    for (at, _) in text.match_indices("whsec_") {
        if run(at + 6, |b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/') >= 16 {
            return Some("a webhook signing secret");
        }
    }
    // A JWT: base64url of `{"` twice, dot-separated.
    for (at, _) in text.match_indices("eyJ") {
        let header = run(at, base64url);
        if header >= 10 && bytes.get(at + header) == Some(&b'.') && text[at + header + 1..].starts_with("eyJ") {
            return Some("a JWT");
        }
    }
    None
}

/// A log sink that keeps nothing but what carries a secret.
struct Scanner;

impl std::io::Write for Scanner {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = String::from_utf8_lossy(buf);
        if let Some(kind) = secret_in(&line) {
            FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("{kind}: {line}"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
