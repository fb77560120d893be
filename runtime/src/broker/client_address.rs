//! Who is at the other end: the visitor's address, taken from the TCP peer,
//! or from `Forwarded` / `X-Forwarded-For` when the peer is one of the
//! configured trusted proxies. Those headers are read right to left: every
//! proxy appends the address it saw, so the entries a trusted proxy added
//! are believed and the first entry that is not a trusted proxy is the
//! visitor. IPv4-mapped IPv6 addresses count as the IPv4 address they
//! carry. Anything further left was written by the client and proves
//! nothing.
//!
//! The per-address limits count visitors by [`AddressPolicy::limit_key`]:
//! an IPv4 address, or the IPv6 network it belongs to (a /64 by default,
//! since one subscriber usually gets a whole /64).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::{HeaderMap, StatusCode, header};

use super::error::ApiError;

/// The TCP peer of a request, set by the listener on every request.
#[derive(Clone, Copy, Debug)]
pub struct Peer(pub SocketAddr);

/// An IP network such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask_v4(ip, self.prefix) == mask_v4(net, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask_v6(ip, self.prefix) == mask_v6(net, self.prefix)
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    /// `a.b.c.d/n`, `v6::/n`, or a bare address (a network of one).
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not an IP network such as 10.0.0.0/8 or fd00::/8");
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network = address
            .trim()
            .parse::<IpAddr>()
            .map_err(|_| bad())?
            .to_canonical();
        let longest = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= longest)
                .ok_or_else(bad)?,
            None => longest,
        };
        Ok(Cidr { network, prefix })
    }
}

fn mask_v4(ip: Ipv4Addr, prefix: u8) -> u32 {
    let bits = u32::from(ip);
    if prefix == 0 {
        0
    } else {
        bits & (u32::MAX << (32 - u32::from(prefix)))
    }
}

fn mask_v6(ip: Ipv6Addr, prefix: u8) -> u128 {
    let bits = u128::from(ip);
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

/// The proxies whose forwarding headers are believed (comma-separated
/// CIDRs; empty = none, the peer is the visitor).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn parse(text: &str) -> Result<Self, String> {
        text.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(Cidr::from_str)
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|cidr| cidr.contains(ip))
    }
}

/// How a broker finds and counts the visitor's address.
#[derive(Clone, Debug)]
pub struct AddressPolicy {
    pub trusted_proxies: TrustedProxies,
    /// IPv6 visitors are counted per network of this prefix length.
    pub ipv6_prefix: u8,
}

impl Default for AddressPolicy {
    fn default() -> Self {
        AddressPolicy {
            trusted_proxies: TrustedProxies::default(),
            ipv6_prefix: 64,
        }
    }
}

/// One hop named by a forwarding header.
#[derive(Debug, PartialEq, Eq)]
enum Hop {
    Address(IpAddr),
    /// `unknown` or an obfuscated name (RFC 7239): a valid entry that names
    /// no address.
    Unnamed,
}

fn invalid(header: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_forwarded_header",
        format!("the {header} header is malformed: {why}"),
    )
}

/// One `X-Forwarded-For` entry: an address, with a port or in brackets as
/// some proxies write it.
fn parse_node(text: &str) -> Option<Hop> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("unknown") || text.starts_with('_') {
        return Some(Hop::Unnamed);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(Hop::Address(ip));
    }
    text.parse::<SocketAddr>()
        .ok()
        .map(|socket| Hop::Address(socket.ip()))
        .or_else(|| {
            let inner = text.strip_prefix('[')?.strip_suffix(']')?;
            inner
                .parse::<Ipv6Addr>()
                .ok()
                .map(|ip| Hop::Address(ip.into()))
        })
}

/// The hops of every `X-Forwarded-For` field, in order (left to right).
fn x_forwarded_for(headers: &HeaderMap) -> Result<Vec<Hop>, ApiError> {
    const NAME: &str = "X-Forwarded-For";
    let mut hops = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let text = value.to_str().map_err(|_| invalid(NAME, "not text"))?;
        for entry in text.split(',') {
            hops.push(parse_node(entry).ok_or_else(|| invalid(NAME, format!("{entry:?}")))?);
        }
    }
    Ok(hops)
}

/// The `for=` hops of every `Forwarded` field (RFC 7239), in order.
fn forwarded(headers: &HeaderMap) -> Result<Vec<Hop>, ApiError> {
    const NAME: &str = "Forwarded";
    let mut hops = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let text = value.to_str().map_err(|_| invalid(NAME, "not text"))?;
        for element in text.split(',') {
            let mut node = None;
            for pair in element.split(';').filter(|pair| !pair.trim().is_empty()) {
                let (key, value) = pair
                    .split_once('=')
                    .ok_or_else(|| invalid(NAME, format!("{pair:?} is not key=value")))?;
                if key.trim().eq_ignore_ascii_case("for") {
                    let value = value.trim();
                    let value = value
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(value);
                    node = Some(
                        parse_node(value).ok_or_else(|| invalid(NAME, format!("for={value:?}")))?,
                    );
                }
            }
            // An element without `for=` names no address.
            hops.push(node.unwrap_or(Hop::Unnamed));
        }
    }
    Ok(hops)
}

impl AddressPolicy {
    /// The visitor's address. Forwarding headers are checked for syntax on
    /// every request (a malformed one is a 400 whoever sent it) but only
    /// believed from a trusted peer. `Forwarded` is preferred when both
    /// are present.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> Result<IpAddr, ApiError> {
        let standard = forwarded(headers)?;
        let legacy = x_forwarded_for(headers)?;
        let hops = if standard.is_empty() {
            legacy
        } else {
            standard
        };
        let mut client = peer.to_canonical();
        for hop in hops.iter().rev() {
            if !self.trusted_proxies.trusts(client) {
                break;
            }
            match hop {
                Hop::Address(ip) => client = ip.to_canonical(),
                // The trusted proxy could not name whom it served: count
                // the proxy itself.
                Hop::Unnamed => break,
            }
        }
        Ok(client)
    }

    /// The key the per-address limits count `ip` under.
    pub fn limit_key(&self, ip: IpAddr) -> String {
        match ip.to_canonical() {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => {
                let network = Ipv6Addr::from(mask_v6(v6, self.ipv6_prefix));
                format!("{network}/{}", self.ipv6_prefix)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn policy(trusted: &str) -> AddressPolicy {
        AddressPolicy {
            trusted_proxies: TrustedProxies::parse(trusted).unwrap(),
            ipv6_prefix: 64,
        }
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_untrusted_peer_is_the_visitor_whatever_it_claims() {
        let claims = headers(&[("x-forwarded-for", "1.2.3.4")]);
        let client = policy("").client(ip("203.0.113.9"), &claims).unwrap();
        assert_eq!(client, ip("203.0.113.9"));
        let client = policy("10.0.0.0/8")
            .client(ip("203.0.113.9"), &claims)
            .unwrap();
        assert_eq!(client, ip("203.0.113.9"));
    }

    #[test]
    fn forwarding_headers_are_read_right_to_left_through_trusted_proxies() {
        let policy = policy("10.0.0.0/8, 192.168.1.1");
        // The client forged the first entry; the trusted hops are skipped.
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.1.2.3")]);
        assert_eq!(
            policy.client(ip("192.168.1.1"), &chain).unwrap(),
            ip("198.51.100.7")
        );
        // Several fields are one list, in order.
        let split = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "198.51.100.7:5123"),
        ]);
        assert_eq!(
            policy.client(ip("10.0.0.1"), &split).unwrap(),
            ip("198.51.100.7")
        );
        // Every hop trusted: the leftmost is the visitor.
        let all = headers(&[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(policy.client(ip("10.0.0.1"), &all).unwrap(), ip("10.9.9.9"));
    }

    #[test]
    fn forwarded_wins_and_understands_quotes_ports_and_unknown() {
        let policy = policy("10.0.0.0/8");
        let both = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            (
                "forwarded",
                "for=6.6.6.6, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
        ]);
        assert_eq!(
            policy.client(ip("10.0.0.1"), &both).unwrap(),
            ip("2001:db8:cafe::17")
        );
        let hidden = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(
            policy.client(ip("10.0.0.1"), &hidden).unwrap(),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn malformed_headers_are_refused_even_from_an_untrusted_peer() {
        for bad in [
            ("x-forwarded-for", "not-an-address"),
            ("x-forwarded-for", "1.2.3.4, , 5.6.7.8"),
            ("x-forwarded-for", "1.2.3.400"),
            ("forwarded", "for"),
            ("forwarded", "for=banana"),
        ] {
            let error = policy("")
                .client(ip("203.0.113.9"), &headers(&[bad]))
                .unwrap_err();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{bad:?}");
            assert_eq!(error.code, "invalid_forwarded_header");
        }
    }

    #[test]
    fn ipv6_is_counted_per_network_and_mapped_ipv4_as_ipv4() {
        let policy = AddressPolicy::default();
        assert_eq!(
            policy.limit_key(ip("2001:db8:1:2:aaaa::1")),
            policy.limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_eq!(policy.limit_key(ip("2001:db8:1:2::1")), "2001:db8:1:2::/64");
        assert_ne!(
            policy.limit_key(ip("2001:db8:1:2::1")),
            policy.limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(policy.limit_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }

    #[test]
    fn networks_parse_and_match() {
        assert!(TrustedProxies::parse("10.0.0.0/33").is_err());
        assert!(TrustedProxies::parse("banana").is_err());
        assert_eq!(
            TrustedProxies::parse(" ").unwrap(),
            TrustedProxies::default()
        );
        let any = TrustedProxies::parse("0.0.0.0/0").unwrap();
        assert!(any.trusts(ip("203.0.113.9")));
        assert!(!any.trusts(ip("2001:db8::1")));
        let one = TrustedProxies::parse("fd00::1").unwrap();
        assert!(one.trusts(ip("fd00::1")) && !one.trusts(ip("fd00::2")));
    }
}
