//! Credential-stuffing defence: failed authentications counted per client
//! address. Past `gateway.auth_failures_per_minute` within a minute the
//! address gets `429` with `Retry-After` for `gateway.auth_lockout`,
//! whatever it presents (a valid credential too: a stuffing run that hits
//! one must not learn it), logged once per episode and counted in
//! `erp_connect_auth_lockouts_total`.
//!
//! The client address is the TCP peer's, or, when the peer is one of
//! `gateway.trusted_proxies` (a load balancer), the address that proxy
//! put last in `X-Forwarded-For`: only a proxy we trust may name the
//! client, else anyone could rotate the header to dodge the count.
//! Per replica: an attacker spread over N replicas gets N times the
//! threshold before each locks, which still ends the run.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use platform::metrics::facade::counter;

/// Addresses tracked at most; beyond, entries with nothing to remember go.
const TRACKED_MAX: usize = 100_000;
/// The counting window.
const WINDOW: Duration = Duration::from_secs(60);

/// The lockout settings and each address's failures.
#[derive(Debug)]
pub struct Lockout {
    /// Failures in a minute before the address is locked; 0: never.
    threshold: u32,
    cooldown: Duration,
    trusted_proxies: Vec<IpAddr>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
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
        Self { threshold, cooldown, trusted_proxies, addresses: Mutex::default() }
    }

    /// The client address of a request from `peer` with `headers`.
    pub fn client(&self, peer: Option<SocketAddr>, headers: &http::HeaderMap) -> Option<IpAddr> {
        let peer = peer?.ip();
        if !self.trusted_proxies.contains(&peer) {
            return Some(peer);
        }
        // The proxy appends the address it saw: the last entry is its word.
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back();
        Some(forwarded.unwrap_or(peer))
    }

    /// How long `client` stays locked, if it is.
    pub fn locked(&self, client: IpAddr, now: Instant) -> Option<Duration> {
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
    }
}
