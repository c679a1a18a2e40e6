//! Small value types used in the configuration: durations ("10s", "72h"),
//! rates ("100/10s"), byte sizes ("64KiB") and "enabled" switches.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Reads a string value; anything else is reported as `expecting` (the
/// form and an example), not as serde's bare type name.
fn string_value<'de, D: Deserializer<'de>>(
    d: D,
    expecting: &'static str,
) -> Result<String, D::Error> {
    struct Visitor(&'static str);
    impl serde::de::Visitor<'_> for Visitor {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
            Ok(s.to_string())
        }
    }
    d.deserialize_str(Visitor(expecting))
}

/// A duration written the human way: `"500ms"`, `"10s"`, `"15m"`, `"72h"`, `"30d"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string_value(d, "a duration in quotes, e.g. \"10s\", \"15m\" or \"72h\"")?;
        humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| {
                serde::de::Error::custom(format!(
                    "invalid duration {s:?} ({e}); write e.g. \"10s\", \"15m\", \"72h\""
                ))
            })
    }
}

/// A duration, or `"off"` (None).
pub fn duration_or_off<'de, D: Deserializer<'de>>(d: D) -> Result<Option<HumanDuration>, D::Error> {
    let s = string_value(
        d,
        "a duration in quotes, e.g. \"30d\" or \"3y\", or \"off\"",
    )?;
    if s.trim().eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    humantime::parse_duration(s.trim())
        .map(|d| Some(HumanDuration(d)))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid duration {s:?} ({e}); write e.g. \"30d\", \"3y\" or \"off\""
            ))
        })
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A request rate: `count` per `period`, written `"100/10s"` or `"60/1m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub period: Duration,
}

impl Rate {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (count, period) = s
            .trim()
            .split_once('/')
            .ok_or_else(|| format!("invalid rate {s:?}: write COUNT/PERIOD, e.g. \"100/10s\""))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("invalid rate {s:?}: {count:?} is not a whole number"))?;
        if count == 0 {
            return Err(format!("invalid rate {s:?}: the count must be at least 1"));
        }
        let period_str = period.trim();
        // Allow "100/s" and "60/m" as shorthand for one unit.
        let period_str = match period_str {
            "s" | "m" | "h" => format!("1{period_str}"),
            other => other.to_string(),
        };
        let period = humantime::parse_duration(&period_str)
            .map_err(|e| format!("invalid rate {s:?}: bad period {period:?} ({e})"))?;
        if period.is_zero() {
            return Err(format!(
                "invalid rate {s:?}: the period must be longer than zero"
            ));
        }
        Ok(Self { count, period })
    }

    /// The time between two requests at an even pace.
    pub fn interval(&self) -> Duration {
        self.period / self.count
    }

    /// The pace a destination is held to: 1% slower than [`Rate::interval`].
    /// Vendors count requests in rolling windows at arrival; at exactly
    /// `count` per `period`, a window can hold `count + 1` requests (its two
    /// ends, or one request arriving a little late and the next on time),
    /// and the vendor answers 429. With the margin, `count` intervals span
    /// more than `period`, so no rolling window ever holds more than
    /// `count` — while a window starting at a request still gets `count`.
    pub fn paced_interval(&self) -> Duration {
        self.interval() * 101 / 100
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.count,
            humantime::format_duration(self.period)
        )
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string_value(d, "a rate in quotes, COUNT/PERIOD, e.g. \"100/10s\"")?;
        Rate::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A rate limit that may be switched off with `"off"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Off,
    Limit(Rate),
}

impl RateLimit {
    pub fn rate(&self) -> Option<Rate> {
        match self {
            RateLimit::Off => None,
            RateLimit::Limit(r) => Some(*r),
        }
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = string_value(
            d,
            "a rate in quotes, COUNT/PERIOD, e.g. \"60/1m\", or \"off\"",
        )?;
        if s.trim().eq_ignore_ascii_case("off") {
            return Ok(RateLimit::Off);
        }
        Rate::parse(&s)
            .map(RateLimit::Limit)
            .map_err(serde::de::Error::custom)
    }
}

/// A size in bytes: a number, or a string such as `"64KiB"`, `"1MiB"`, `"100MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?}: write e.g. 65536, \"64KiB\" or \"1MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1_000,
            "kib" | "k" => 1_024,
            "mb" => 1_000_000,
            "mib" | "m" => 1_048_576,
            "gb" => 1_000_000_000,
            "gib" | "g" => 1_073_741_824,
            other => return Err(format!("invalid size {s:?}: unknown unit {other:?}")),
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("invalid size {s:?}: too large"))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes or a string, e.g. 65536 or \"64KiB\"")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n).map(ByteSize).map_err(|_| {
                    E::custom(format!(
                        "invalid size {n}: a size cannot be negative; write e.g. 65536 or \"64KiB\""
                    ))
                })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Whether a destination is on: `true`, `false`, or `"auto"` — on exactly
/// when every environment variable its settings name (`*_env`) is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enabled {
    #[default]
    On,
    Off,
    Auto,
}

impl<'de> Deserialize<'de> for Enabled {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Enabled;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or \"auto\" (e.g. enabled = \"auto\")")
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Enabled, E> {
                Ok(if b { Enabled::On } else { Enabled::Off })
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Enabled, E> {
                if s == "auto" {
                    Ok(Enabled::Auto)
                } else {
                    Err(E::custom(format!(
                        "invalid value {s:?}: write true, false or \"auto\" (on when its *_env variables are set)"
                    )))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = Rate::parse("100/10s").unwrap();
        assert_eq!((r.count, r.period), (100, Duration::from_secs(10)));
        assert_eq!(r.interval(), Duration::from_millis(100));
        assert_eq!(r.paced_interval(), Duration::from_millis(101));
        // count intervals at the paced rate outlast the period: no rolling
        // window holds count + 1 requests; count of them fit in one.
        assert!(r.paced_interval() * r.count > r.period);
        assert!(r.paced_interval() * (r.count - 1) < r.period);
        assert_eq!(Rate::parse("60/m").unwrap().period, Duration::from_secs(60));
        for bad in ["", "100", "x/10s", "0/1s", "10/0s", "10/fortnight"] {
            assert!(Rate::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64KiB").unwrap().bytes(), 65_536);
        assert_eq!(ByteSize::parse("1MB").unwrap().bytes(), 1_000_000);
        assert_eq!(ByteSize::parse("512").unwrap().bytes(), 512);
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("99999999999999999999").is_err());
    }
}

/// A `server.trusted_proxies` entry: one address (`"10.0.0.1"`, `"::1"`) or
/// a CIDR range (`"10.0.0.0/8"`, `"2001:db8::/32"`). An IPv4 address written
/// as IPv4-mapped IPv6 (`"::ffff:10.0.0.1"`) is stored as the IPv4 one, so
/// it matches however the listener reports the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRange(pub ipnet::IpNet);

impl IpRange {
    pub fn parse(s: &str) -> Result<IpRange, String> {
        let s = s.trim();
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => match s.parse::<std::net::IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "invalid proxy address {s:?}: write an address (\"10.0.0.1\", \"::1\") or a CIDR range (\"10.0.0.0/8\", \"2001:db8::/32\")"
                    ));
                }
            },
        };
        Ok(IpRange(canonical_net(net)))
    }

    /// Whether `ip` (IPv4-mapped IPv6 counts as IPv4) is in the range.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        self.0.contains(&ip.to_canonical())
    }
}

/// A range of IPv4-mapped IPv6 addresses (`::ffff:0:0/96` and narrower) as
/// the IPv4 range it stands for; anything else unchanged.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return ipnet::IpNet::V4(n.trunc());
    }
    net.trunc()
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        IpRange::parse(&s).map_err(serde::de::Error::custom)
    }
}
