//! Who is calling: the client IP (the TCP peer, or `X-Forwarded-For` from a
//! trusted proxy) and per-IP throttling of the public endpoints.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::Rate;

/// The client's address. `X-Forwarded-For` is believed only when the peer
/// is a trusted proxy; then the right-most address that is not itself a
/// trusted proxy is the client.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    let peer_ip = peer.ip();
    if !trusted.contains(&peer_ip) {
        return peer_ip;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer_ip)
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

    /// `Err(seconds)` to wait when `ip` is over its limit.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        self.limiter.check_key(&ip).map_err(|not_until| {
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

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.2.3.4, 203.0.113.5, 10.0.0.1"),
        );
        let from_proxy = SocketAddr::new(proxy, 1);
        assert_eq!(
            client_ip(from_proxy, &h, &[proxy]),
            "203.0.113.5".parse::<IpAddr>().unwrap()
        );
        let direct = SocketAddr::new("198.51.100.7".parse().unwrap(), 1);
        assert_eq!(
            client_ip(direct, &h, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "spoofed header ignored"
        );
        assert_eq!(client_ip(from_proxy, &HeaderMap::new(), &[proxy]), proxy);
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
