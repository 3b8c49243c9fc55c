//! Where a webhook may be sent. A subscription names a URL; a careless or
//! hostile one would make erp-connect call into its own network (a
//! database, a cloud metadata service: server-side request forgery). So in
//! `production` mode an endpoint must be `https` and every address its
//! host resolves to must be public: not loopback, private, carrier-grade
//! NAT, link-local (which holds the cloud metadata service at
//! 169.254.169.254), unique-local, multicast, unspecified or reserved,
//! IPv4-mapped and NAT64 forms included. The check runs after DNS
//! resolution and before any connection, at subscription and again at
//! every delivery (a name may resolve elsewhere later), and the delivery
//! connects to the addresses checked, not to a second resolution.
//! `dev` mode also allows `http` and loopback, for a receiver on the
//! developer's own machine.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::Uri;

/// Longest endpoint URL accepted.
pub const MAX_URL_LEN: usize = 2000;

/// Which targets are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Only `https` to public addresses.
    Production,
    /// Also `http`, and loopback addresses.
    Dev,
}

/// Why a target is refused; written for the endpoint's owner.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Not an absolute `http(s)://host[:port]/...` URL.
    #[error("the url must be an absolute https URL")]
    Malformed,
    /// `http` (or another scheme) where `https` is required.
    #[error("the url must use https")]
    NotHttps,
    /// The URL carries a user name or password.
    #[error("the url must not carry credentials")]
    Credentials,
    /// The host did not resolve.
    #[error("the url's host {0} does not resolve")]
    Unresolved(String),
    /// The host resolves to an address webhooks may not reach.
    #[error("the url's host resolves to {0}, which is not a public address")]
    Forbidden(IpAddr),
}

/// A target that passed [`check`]: the URL and the addresses to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The URL as given.
    pub uri: Uri,
    /// The resolved addresses, all allowed.
    pub addrs: Vec<SocketAddr>,
}

/// Checks `url` under `policy`: its form, then every address its host
/// resolves to. No connection is opened.
pub async fn check(url: &str, policy: Policy) -> Result<Checked, Refusal> {
    if url.len() > MAX_URL_LEN {
        return Err(Refusal::Malformed);
    }
    let uri: Uri = url.parse().map_err(|_| Refusal::Malformed)?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(Refusal::Malformed),
    };
    if !https && policy == Policy::Production {
        return Err(Refusal::NotHttps);
    }
    let authority = uri.authority().ok_or(Refusal::Malformed)?;
    if authority.as_str().contains('@') {
        return Err(Refusal::Credentials);
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(Refusal::Malformed);
    }
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => {
            tokio::net::lookup_host((host, port)).await.map_err(|_| Refusal::Unresolved(host.to_owned()))?.collect()
        }
    };
    if addrs.is_empty() {
        return Err(Refusal::Unresolved(host.to_owned()));
    }
    if let Some(bad) = addrs.iter().map(SocketAddr::ip).find(|ip| !allowed(*ip, policy)) {
        return Err(Refusal::Forbidden(bad));
    }
    Ok(Checked { uri, addrs })
}

/// Whether a webhook may be sent to `ip` under `policy`.
pub fn allowed(ip: IpAddr, policy: Policy) -> bool {
    if policy == Policy::Dev && ip.to_canonical().is_loopback() {
        return true;
    }
    is_public(ip)
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let segments = v6.segments();
            // NAT64 (64:ff9b::/96) reaches the IPv4 address in its last 32 bits.
            if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                return is_public_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            }
            !(v6.is_unspecified()
                || v6.is_loopback()
                || v6.is_multicast()
                || (segments[0] & 0xfe00) == 0xfc00 // unique local, fc00::/7 (AWS metadata: fd00:ec2::254)
                || (segments[0] & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                || segments[0] == 0x2001 && segments[1] == 0x0db8 // documentation
                || segments[0] == 0x0100 && segments[1..4] == [0, 0, 0]) // discard-only, 100::/64
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || a == 0 // "this network", 0.0.0.0/8
        || ip.is_loopback()
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local() // 169.254/16: the cloud metadata service
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT, 100.64/10 (Alibaba's metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18/15
        || a >= 240) // reserved, 240/4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_link_local_metadata_and_reserved_addresses_are_not_public() {
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "169.254.169.254",
            "169.254.0.1",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.0.170",
            "198.18.0.1",
            "192.0.2.1",
            "::",
            "::1",
            "fe80::1",
            "fc00::1",
            "fd00:ec2::254",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = refused.parse().expect(refused);
            assert!(!is_public(ip), "{refused} must not be public");
            assert!(!allowed(ip, Policy::Production), "{refused}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "172.32.0.1", "100.128.0.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(is_public(public.parse().expect(public)), "{public} is public");
        }
    }

    #[test]
    fn dev_mode_allows_loopback_and_nothing_else_private() {
        assert!(allowed("127.0.0.1".parse().expect("ip"), Policy::Dev));
        assert!(allowed("::1".parse().expect("ip"), Policy::Dev));
        assert!(!allowed("10.0.0.1".parse().expect("ip"), Policy::Dev));
        assert!(!allowed("169.254.169.254".parse().expect("ip"), Policy::Dev));
    }

    /// Literal addresses and `localhost` resolve without the network, and
    /// nothing here opens a connection.
    #[tokio::test]
    async fn production_refuses_before_any_connection() {
        let refused = |url: &'static str| async move { check(url, Policy::Production).await.expect_err(url) };
        assert_eq!(refused("http://127.0.0.1/hook").await, Refusal::NotHttps);
        assert_eq!(refused("https://10.0.0.1/hook").await, Refusal::Forbidden("10.0.0.1".parse().expect("ip")));
        assert_eq!(
            refused("https://169.254.169.254/latest/meta-data").await,
            Refusal::Forbidden("169.254.169.254".parse().expect("ip"))
        );
        assert!(matches!(refused("https://localhost/hook").await, Refusal::Forbidden(ip) if ip.is_loopback()));
        assert_eq!(refused("https://[::1]:8443/hook").await, Refusal::Forbidden("::1".parse().expect("ip")));
        assert_eq!(refused("https://user:pw@93.184.216.34/").await, Refusal::Credentials);
        assert_eq!(refused("ftp://93.184.216.34/").await, Refusal::Malformed);
        assert_eq!(refused("/relative").await, Refusal::Malformed);
        let ok = check("https://93.184.216.34:8443/hooks", Policy::Production).await.expect("public");
        assert_eq!(ok.addrs, ["93.184.216.34:8443".parse().expect("addr")]);
        let dev = check("http://127.0.0.1:9000/hooks", Policy::Dev).await.expect("loopback in dev");
        assert_eq!(dev.addrs, ["127.0.0.1:9000".parse().expect("addr")]);
    }
}
