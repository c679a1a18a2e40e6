//! Who is calling: the client IP (the TCP peer, or `X-Forwarded-For` from a
//! trusted proxy) and per-IP throttling of the public endpoints.
//!
//! Addresses are canonical: a dual-stack listener reports IPv4 peers as
//! IPv4-mapped IPv6 (`::ffff:203.0.113.5`), which is the same client as
//! `203.0.113.5` for trust, throttling and the stored IP hash.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::{IpRange, Rate};

fn is_trusted(ip: IpAddr, trusted: &[IpRange]) -> bool {
    trusted.iter().any(|r| r.contains(ip))
}

/// The client's address. `X-Forwarded-For` is believed only when the peer
/// is a trusted proxy; then the right-most address that is not itself a
/// trusted proxy is the client.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpRange]) -> IpAddr {
    let peer_ip = peer.ip().to_canonical();
    if !is_trusted(peer_ip, trusted) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer_ip)
}

/// The key a client is throttled by: its IPv4 address, or the /64 network
/// of its IPv6 address (one subscriber's LAN gets a /64 and picks any
/// address in it, so per-address keys would not limit anyone).
pub fn throttle_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Per-IP throttle for public endpoints.
#[derive(Clone)]
pub struct IpThrottle {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl IpThrottle {
    pub fn new(rate: Rate) -> Option<Self> {
        let burst = NonZeroU32::new(rate.count)?;
        let quota = Quota::with_period(rate.interval())?.allow_burst(burst);
        Some(Self {
            limiter: Arc::new(DefaultKeyedRateLimiter::keyed(quota)),
        })
    }

    /// `Err(seconds)` to wait when `ip` (its /64 for IPv6) is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter
            .check_key(&throttle_key(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
            })
    }

    /// Forgets idle IPs (called periodically so memory stays bounded).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ranges(list: &[&str]) -> Vec<IpRange> {
        list.iter().map(|s| IpRange::parse(s).unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = ranges(&["10.0.0.1"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 203.0.113.5, 10.0.0.1"),
        );
        let from_proxy = SocketAddr::new(proxy, 1);
        assert_eq!(client_ip(from_proxy, &h, &trusted), ip("203.0.113.5"));
        let direct = SocketAddr::new("198.51.100.7".parse().unwrap(), 1);
        assert_eq!(
            client_ip(direct, &h, &trusted),
            ip("198.51.100.7"),
            "spoofed header ignored"
        );
        assert_eq!(client_ip(from_proxy, &HeaderMap::new(), &trusted), proxy);
    }

    #[test]
    fn dual_stack_peers_match_ipv4_proxies() {
        // A listener on [::]:8080 sees IPv4 peers as ::ffff:a.b.c.d.
        let mapped = SocketAddr::new(ip("::ffff:10.0.0.1"), 1);
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.5"));
        assert_eq!(
            client_ip(mapped, &h, &ranges(&["10.0.0.1"])),
            ip("203.0.113.5")
        );
        // Written either way in the configuration.
        assert_eq!(
            client_ip(
                SocketAddr::new(ip("10.0.0.1"), 1),
                &h,
                &ranges(&["::ffff:10.0.0.1"])
            ),
            ip("203.0.113.5")
        );
        // An untrusted mapped peer is its IPv4 address.
        assert_eq!(
            client_ip(
                SocketAddr::new(ip("::ffff:198.51.100.7"), 1),
                &h,
                &ranges(&["10.0.0.1"])
            ),
            ip("198.51.100.7")
        );
        // A mapped address in the header is the IPv4 client too.
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("::ffff:203.0.113.9"),
        );
        assert_eq!(
            client_ip(mapped, &h, &ranges(&["10.0.0.1"])),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn cidr_ranges_are_trusted() {
        let trusted = ranges(&["10.0.0.0/8", "2001:db8::/32"]);
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("203.0.113.5, 10.20.30.40"),
        );
        for peer in ["10.1.2.3", "::ffff:10.9.9.9", "2001:db8:1::7"] {
            assert_eq!(
                client_ip(SocketAddr::new(ip(peer), 1), &h, &trusted),
                ip("203.0.113.5"),
                "{peer}: the hop from 10.20.30.40 is a proxy too"
            );
        }
        assert_eq!(
            client_ip(SocketAddr::new(ip("11.0.0.1"), 1), &h, &trusted),
            ip("11.0.0.1")
        );
    }

    #[test]
    fn ipv6_clients_are_throttled_per_64() {
        let t = IpThrottle::new(Rate::parse("2/1m").unwrap()).unwrap();
        assert!(t.check(ip("2001:db8:1:2::1")).is_ok());
        assert!(t.check(ip("2001:db8:1:2:ffff::9")).is_ok());
        assert!(
            t.check(ip("2001:db8:1:2:abcd::42")).is_err(),
            "same /64, same budget"
        );
        assert!(t.check(ip("2001:db8:1:3::1")).is_ok(), "another /64");
        assert_eq!(throttle_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(
            throttle_key(ip("2001:db8:1:2:3:4:5:6")),
            ip("2001:db8:1:2::")
        );
    }

    #[test]
    fn throttle_limits_per_ip() {
        let t = IpThrottle::new(Rate::parse("3/1m").unwrap()).unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.check(a).is_ok());
        }
        let wait = t.check(a).unwrap_err();
        assert!((1..=20).contains(&wait), "{wait}");
        assert!(t.check(b).is_ok(), "other IPs are not affected");
    }
}
