//! Secrets never leak: every log line the product writes in a test binary
//! (at `info`, the production default) and every answer the harness
//! receives (`super::send`) are scanned for partner API keys, JWTs,
//! webhook signing secrets and the passwords of the configuration the
//! harness started (the Tryton test servers', database URLs', the internal
//! principal secret: [`forbid_passwords_of`]). The answers that issue a
//! key or secret (a key created or rotated, a webhook endpoint created or
//! its secret rotated) are the only ones allowed to carry it. A find fails
//! the test that sees it.
//!
//! Suites that start the binary as a child feed its output to [`scan`]
//! (`super::ChildTier`, `tests/traces.rs`); `tests/cli.rs` searches a
//! child's whole output for the marked passwords of its configuration.

use std::sync::{Mutex, Once};

use tracing_subscriber::{Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Log lines that carried a secret, with what it looked like.
static FOUND: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// The passwords of the configurations started so far.
static PASSWORDS: Mutex<Vec<String>> = Mutex::new(Vec::new());
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

/// Adds the passwords in `config` to what is looked for: the Tryton
/// password file's, those in database and Redis URLs, the principal
/// secret. Only ones of 8 characters or more: a shorter one (`admin`)
/// would be found in innocent words.
pub fn forbid_passwords_of(config: &erp_connect::config::Config) {
    let mut found = Vec::new();
    if let Some(tryton) = &config.erp.tryton
        && let Ok(text) = std::fs::read_to_string(&tryton.password_file)
    {
        found.push(text.trim().to_owned());
    }
    let urls = [
        &config.erp.database_url,
        &config.process.database_url,
        &config.gateway.database_url,
        &config.gateway.redis_url,
    ];
    for url in urls.into_iter().flatten() {
        // scheme://user:password@host/...
        if let Some((_, rest)) = url.split_once("://")
            && let Some((userinfo, _)) = rest.split_once('@')
            && let Some((_, password)) = userinfo.split_once(':')
        {
            found.push(password.to_owned());
        }
    }
    found.extend(config.internal.principal_secret.clone());
    let mut passwords = PASSWORDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for password in found {
        if password.len() >= 8 && !passwords.contains(&password) {
            passwords.push(password);
        }
    }
}

/// Scans one line a child process wrote, as this process's own log lines are.
pub fn scan(line: &str) {
    if let Some(kind) = secret_in(line) {
        FOUND.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(format!("{kind}: {line}"));
    }
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
    let passwords = PASSWORDS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if passwords.iter().any(|p| text.contains(p.as_str())) {
        return Some("a configured password");
    }
    None
}

/// A log sink that keeps nothing but what carries a secret.
struct Scanner;

impl std::io::Write for Scanner {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        scan(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
