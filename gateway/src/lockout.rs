//! Credential-stuffing defence: failed authentications counted per client
//! address. Past `gateway.auth_failures_per_minute` within a minute the
//! address gets `429` with `Retry-After` for `gateway.auth_lockout`,
//! whatever it presents (a valid credential too: a stuffing run that hits
//! one must not learn it), logged once per episode and counted in
//! `erp_connect_auth_lockouts_total`.
//!
//! The client address is the TCP peer's, or, when the peer is one of
//! `gateway.trusted_proxies` (a load balancer), the address that proxy
//! put last in `X-Forwarded-For` (or, with `gateway.client_address_header
//! = "forwarded"`, the `for=` of the last `Forwarded` element, RFC 7239):
//! only a proxy we trust may name the client, else anyone could rotate the
//! header to dodge the count. Only the entry the proxy added counts: the
//! ones before it are the client's word. Per replica: an attacker spread
//! over N replicas gets N times the threshold before each locks, which
//! still ends the run.
//!
//! Failures are not counted per API key prefix: every key starts with the
//! same `erpk_live_`, so such a count would lock out every partner at once.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use platform::metrics::facade::counter;

/// Addresses tracked at most; beyond, entries with nothing to remember go.
const TRACKED_MAX: usize = 100_000;
/// The counting window.
const WINDOW: Duration = Duration::from_secs(60);

/// Which header a trusted proxy names the client in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClientAddressHeader {
    /// `X-Forwarded-For: client, proxy1`: what most load balancers send.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client;proto=https` (RFC 7239).
    Forwarded,
}

/// The lockout settings and each address's failures.
#[derive(Debug)]
pub struct Lockout {
    /// Failures in a minute before the address is locked; 0: never.
    threshold: u32,
    cooldown: Duration,
    trusted_proxies: Vec<IpAddr>,
    header: ClientAddressHeader,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
    /// When the last lockout ends, in milliseconds since `epoch`: before
    /// then [`Lockout::locked`] looks an address up, after it answers
    /// without taking the lock (the usual case: nobody locked out).
    locks_end: AtomicU64,
    epoch: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    since: Instant,
    count: u32,
    locked_until: Option<Instant>,
}

impl Default for Lockout {
    fn default() -> Self {
        Self::new(50, Duration::from_secs(60), Vec::new())
    }
}

impl Lockout {
    /// `threshold` failures a minute (0: off), locked for `cooldown`; the
    /// client of a `trusted_proxies` peer is read from `X-Forwarded-For`.
    pub fn new(threshold: u32, cooldown: Duration, trusted_proxies: Vec<IpAddr>) -> Self {
        Self {
            threshold,
            cooldown,
            trusted_proxies,
            header: ClientAddressHeader::default(),
            addresses: Mutex::default(),
            locks_end: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Reads the client of a trusted proxy from `header`.
    pub fn with_client_address_header(mut self, header: ClientAddressHeader) -> Self {
        self.header = header;
        self
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        // The proxy appends the address it saw: the last entry is its word,
        // and if that is no address the peer counts, never an earlier entry.
        let last = |name: &str| {
            headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).next_back()
        };
        let named = match self.header {
            ClientAddressHeader::XForwardedFor => last("x-forwarded-for").and_then(|a| a.trim().parse().ok()),
            ClientAddressHeader::Forwarded => last("forwarded").and_then(forwarded_for),
        };
        Some(named.unwrap_or(peer))
    }

    /// How long `client` stays locked, if it is.
    pub fn locked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
        if self.millis(now) >= self.locks_end.load(Ordering::Relaxed) {
            return None;
        }
        let addresses = self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = addresses.get(&client)?.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts a failed authentication of `client`; `true` when it locked
    /// the address just now.
    pub fn failed(&self, client: IpAddr, now: Instant) -> bool {
        if self.threshold == 0 {
            return false;
        }
        let mut addresses = self.addresses.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if addresses.len() >= TRACKED_MAX && !addresses.contains_key(&client) {
            addresses
                .retain(|_, f| now.duration_since(f.since) < WINDOW || f.locked_until.is_some_and(|until| until > now));
            if addresses.len() >= TRACKED_MAX {
                addresses.clear();
            }
        }
        let failures = addresses.entry(client).or_insert(Failures { since: now, count: 0, locked_until: None });
        if failures.locked_until.is_some_and(|until| until > now) {
            return false;
        }
        if now.duration_since(failures.since) >= WINDOW {
            *failures = Failures { since: now, count: 0, locked_until: None };
        }
        failures.count += 1;
        if failures.count < self.threshold {
            return false;
        }
        *failures = Failures { since: now, count: 0, locked_until: Some(now + self.cooldown) };
        self.locks_end.fetch_max(self.millis(now + self.cooldown) + 1, Ordering::Relaxed);
        counter!("erp_connect_auth_lockouts_total").increment(1);
        tracing::warn!(
            client = %client,
            failures = self.threshold,
            cooldown_s = self.cooldown.as_secs(),
            "too many failed authentications from one address: locked out"
        );
        true
    }
}

/// The client address in one `Forwarded` element: `for=192.0.2.60`,
/// `for="192.0.2.60:4711"`, `for="[2001:db8::17]:4711"`; none for an
/// obfuscated one (`for=unknown`, `for=_hidden`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
    })?;
    if let Some(bracketed) = value.strip_prefix('[') {
        return bracketed.split(']').next()?.parse().ok();
    }
    value.parse().ok().or_else(|| value.rsplit_once(':')?.0.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_locked_after_the_threshold_for_the_cooldown_and_others_are_not() {
        let lockout = Lockout::new(3, Duration::from_secs(60), Vec::new());
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().expect("ip"), "10.0.0.2".parse().expect("ip"));
        let t0 = Instant::now();
        assert!(!lockout.failed(a, t0) && !lockout.failed(a, t0));
        assert!(lockout.failed(a, t0), "the third failure locks");
        assert_eq!(lockout.locked(a, t0), Some(Duration::from_secs(60)));
        assert_eq!(lockout.locked(b, t0), None);
        assert!(!lockout.failed(a, t0), "one episode, logged once");
        assert_eq!(lockout.locked(a, t0 + Duration::from_secs(61)), None, "the cooldown ends");
        // Failures a minute apart do not add up.
        assert!(!lockout.failed(b, t0) && !lockout.failed(b, t0 + WINDOW) && !lockout.failed(b, t0 + WINDOW * 2));
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client() {
        let proxy: SocketAddr = "192.0.2.10:4000".parse().expect("addr");
        let lockout = Lockout::new(3, Duration::from_secs(60), vec![proxy.ip()]);
        let mut headers = http::HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.7, 198.51.100.4".parse().expect("header"));
        assert_eq!(lockout.client(Some(proxy), &headers), "198.51.100.4".parse().ok(), "the proxy's own entry");
        let stranger: SocketAddr = "203.0.113.99:5000".parse().expect("addr");
        assert_eq!(lockout.client(Some(stranger), &headers), Some(stranger.ip()), "a forged header is ignored");
        assert_eq!(lockout.client(None, &headers), None);
        // The proxy's entry is no address: the proxy counts, not the client's entries.
        headers.insert("x-forwarded-for", "203.0.113.7, garbage".parse().expect("header"));
        assert_eq!(lockout.client(Some(proxy), &headers), Some(proxy.ip()));
    }

    #[test]
    fn a_trusted_proxy_may_name_the_client_in_forwarded_instead() {
        let proxy: SocketAddr = "192.0.2.10:4000".parse().expect("addr");
        let lockout = Lockout::new(3, Duration::from_secs(60), vec![proxy.ip()])
            .with_client_address_header(ClientAddressHeader::Forwarded);
        let client = |value: &str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("forwarded", value.parse().expect("header"));
            // Ignored in this mode: the client could have written it.
            headers.insert("x-forwarded-for", "203.0.113.99".parse().expect("header"));
            lockout.client(Some(proxy), &headers)
        };
        assert_eq!(client("for=203.0.113.7, for=198.51.100.4;proto=https"), "198.51.100.4".parse().ok());
        assert_eq!(client("for=\"198.51.100.4:4711\""), "198.51.100.4".parse().ok());
        assert_eq!(client("proto=https;For=\"[2001:db8::17]:4711\""), "2001:db8::17".parse().ok());
        assert_eq!(client("for=203.0.113.7, for=unknown"), Some(proxy.ip()), "obfuscated: the proxy counts");
    }
}
