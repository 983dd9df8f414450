//! Who is on the other end: the peer address of the connection, or, only when
//! that peer is one of the configured trusted proxies, the address it says it
//! forwards for (`X-Forwarded-For`). A client cannot pick its own address by
//! sending the header straight to Parley.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;

use crate::problem::ApiError;

/// What a service's state must offer for [`ClientAddr`].
pub trait TrustsProxies {
    /// Proxies whose `X-Forwarded-For` names the client (nobody else's does).
    fn trusted_proxies(&self) -> &[Cidr];
}

/// An address block (`10.0.0.0/8`, `fd00::/8`, or one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        let (addr, prefix) = match raw.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (raw.trim(), None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{raw:?} is not an address or address/prefix"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{raw:?}: the prefix must be 0 to {max}"))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }
}

/// The client's address, when known (tests calling the router directly have
/// no connection, and so no address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub Option<IpAddr>);

impl ClientAddr {
    /// A stable text for budget keys (`unknown` without an address). An IPv6
    /// client is keyed by its /64, the block one subscriber holds (and can
    /// rotate through at will); an IPv4-mapped address is its IPv4 one.
    pub fn key(&self) -> String {
        match self.0 {
            None => "unknown".into(),
            Some(IpAddr::V4(v4)) => v4.to_string(),
            Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let s = v6.segments();
                    format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
                }
            },
        }
    }
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy, in
/// which case the right-most `X-Forwarded-For` entry that is not a trusted
/// proxy (entries further left were written by whoever the client is).
pub fn client_addr(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[Cidr],
) -> Option<IpAddr> {
    let trusted_ip = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let peer = peer?;
    if !trusted_ip(peer) {
        return Some(peer);
    }
    let Some(chain) = forwarded_for else {
        return Some(peer);
    };
    for hop in chain.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted_ip(ip) => continue,
            Ok(ip) => return Some(ip),
            // A malformed hop: stop at the last address we can vouch for.
            Err(_) => return Some(peer),
        }
    }
    Some(peer)
}

impl<S: TrustsProxies + Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        // Every X-Forwarded-For line, in order: a proxy may add a line of its
        // own rather than append to the client's.
        let forwarded: Vec<String> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        Ok(ClientAddr(client_addr(
            peer,
            forwarded.as_deref(),
            state.trusted_proxies(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn an_ipv6_client_is_one_key_per_64() {
        let key = |s: &str| ClientAddr(Some(ip(s))).key();
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
        assert_eq!(ClientAddr(None).key(), "unknown");
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let block: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(block.contains(ip("10.1.200.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(!block.contains(ip("::1")));
        let one: Cidr = "fd00::1".parse().unwrap();
        assert!(one.contains(ip("fd00::1")) && !one.contains(ip("fd00::2")));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        for bad in ["", "10.0.0.0/33", "nope", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    /// Fails before: there was no notion of a client address at all; a header
    /// from the client itself must never choose it.
    #[test]
    fn forwarded_for_counts_only_behind_a_trusted_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        // A client straight on the internet: its header is ignored.
        assert_eq!(
            client_addr(Some(ip("203.0.113.9")), Some("198.51.100.1"), &trusted),
            Some(ip("203.0.113.9"))
        );
        // Through the proxy: the right-most untrusted hop, whatever the client
        // wrote further left.
        assert_eq!(
            client_addr(
                Some(ip("10.0.0.5")),
                Some("1.2.3.4, 203.0.113.9, 10.0.0.7"),
                &trusted
            ),
            Some(ip("203.0.113.9"))
        );
        assert_eq!(
            client_addr(Some(ip("10.0.0.5")), None, &trusted),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(
            client_addr(Some(ip("10.0.0.5")), Some("garbage"), &trusted),
            Some(ip("10.0.0.5"))
        );
        assert_eq!(client_addr(None, Some("1.2.3.4"), &trusted), None);
    }
}
