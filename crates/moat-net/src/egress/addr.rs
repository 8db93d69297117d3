//! Which IP addresses an outbound request may reach.
//!
//! The tables are the IANA IPv4 and IPv6 Special-Purpose Address Registries: every range
//! whose "Globally Reachable" is not `True` is blocked, plus multicast, and for IPv6
//! everything outside global unicast (`2000::/3`). Addresses that carry an IPv4 address
//! inside (IPv4-mapped, IPv4-compatible, NAT64, 6to4, Teredo) are judged by that address
//! too, so `::ffff:127.0.0.1` is loopback however it is written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A blocked range: what it is and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// A short name: `loopback`, `private`, `link-local`, ...
    pub name: &'static str,
    /// The range in CIDR notation, as the registry lists it.
    pub cidr: &'static str,
}

/// The verdict on one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Globally reachable.
    Global,
    /// In a blocked range.
    Blocked {
        /// The range.
        range: Range,
        /// The IPv4 address an IPv6 address carries, and the form that carries it
        /// (`ipv4-mapped`, `nat64`, `6to4`, ...), when it was judged by that.
        carried: Option<(Ipv4Addr, &'static str)>,
    },
}

impl Class {
    /// Whether the address may be reached.
    pub fn is_global(self) -> bool {
        self == Class::Global
    }
}

const fn r(name: &'static str, cidr: &'static str) -> Range {
    Range { name, cidr }
}

/// IPv4 ranges that are blocked, most specific first (the first match names the range).
const V4_BLOCKED: &[(u32, u8, Range)] = &[
    (0x0000_0000, 32, r("unspecified", "0.0.0.0/32")),
    (0x0000_0000, 8, r("this-network", "0.0.0.0/8")),
    (0x0A00_0000, 8, r("private", "10.0.0.0/8")),
    (0x6440_0000, 10, r("shared-address-space", "100.64.0.0/10")),
    (0x7F00_0000, 8, r("loopback", "127.0.0.0/8")),
    (0xA9FE_0000, 16, r("link-local", "169.254.0.0/16")),
    (0xAC10_0000, 12, r("private", "172.16.0.0/12")),
    (
        0xC000_0000,
        24,
        r("ietf-protocol-assignments", "192.0.0.0/24"),
    ),
    (0xC000_0200, 24, r("documentation", "192.0.2.0/24")),
    (0xC058_6300, 24, r("6to4-relay-anycast", "192.88.99.0/24")),
    (0xC0A8_0000, 16, r("private", "192.168.0.0/16")),
    (0xC612_0000, 15, r("benchmarking", "198.18.0.0/15")),
    (0xC633_6400, 24, r("documentation", "198.51.100.0/24")),
    (0xCB00_7100, 24, r("documentation", "203.0.113.0/24")),
    (0xE000_0000, 4, r("multicast", "224.0.0.0/4")),
    (0xFFFF_FFFF, 32, r("broadcast", "255.255.255.255/32")),
    (0xF000_0000, 4, r("reserved", "240.0.0.0/4")),
];

/// IPv4 addresses inside blocked ranges that the registry marks globally reachable.
const V4_GLOBAL_EXCEPTIONS: &[(u32, u8)] = &[
    (0xC000_0009, 32), // 192.0.0.9/32 Port Control Protocol anycast
    (0xC000_000A, 32), // 192.0.0.10/32 TURN anycast
];

/// IPv6 ranges that are blocked, most specific first. Ranges that embed an IPv4 address
/// are handled before this table.
const V6_BLOCKED: &[(u128, u8, Range)] = &[
    (0, 128, r("unspecified", "::/128")),
    (1, 128, r("loopback", "::1/128")),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        r("nat64-local-use", "64:ff9b:1::/48"),
    ),
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        r("discard-only", "100::/64"),
    ),
    (
        0x2001_0002_0000_0000_0000_0000_0000_0000,
        48,
        r("benchmarking", "2001:2::/48"),
    ),
    (
        0x2001_0010_0000_0000_0000_0000_0000_0000,
        28,
        r("orchid", "2001:10::/28"),
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        r("ietf-protocol-assignments", "2001::/23"),
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        r("documentation", "2001:db8::/32"),
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        r("documentation", "3fff::/20"),
    ),
    (
        0x5f00_0000_0000_0000_0000_0000_0000_0000,
        16,
        r("segment-routing", "5f00::/16"),
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        r("unique-local", "fc00::/7"),
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        r("link-local", "fe80::/10"),
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        r("site-local", "fec0::/10"),
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        r("multicast", "ff00::/8"),
    ),
];

/// IPv6 addresses inside blocked ranges that the registry marks globally reachable.
const V6_GLOBAL_EXCEPTIONS: &[(u128, u8)] = &[
    (0x2001_0001_0000_0000_0000_0000_0000_0001, 128), // PCP anycast
    (0x2001_0001_0000_0000_0000_0000_0000_0002, 128), // TURN anycast
    (0x2001_0001_0000_0000_0000_0000_0000_0003, 128), // DNS-SD SRP anycast
    (0x2001_0003_0000_0000_0000_0000_0000_0000, 32),  // AMT
    (0x2001_0004_0112_0000_0000_0000_0000_0000, 48),  // AS112-v6
    (0x2001_0020_0000_0000_0000_0000_0000_0000, 28),  // ORCHIDv2
    (0x2001_0030_0000_0000_0000_0000_0000_0000, 28),  // Drone Remote ID
];

const GLOBAL_UNICAST: (u128, u8) = (0x2000_0000_0000_0000_0000_0000_0000_0000, 3);
const RESERVED_V6: Range = r("reserved", "outside 2000::/3");
const TEREDO: Range = r("teredo", "2001::/32");
const IPV4_COMPATIBLE: Range = r("ipv4-compatible", "::/96");

fn in_v4(addr: u32, net: u32, len: u8) -> bool {
    len == 0 || (addr ^ net) >> (32 - u32::from(len)) == 0
}

fn in_v6(addr: u128, net: u128, len: u8) -> bool {
    len == 0 || (addr ^ net) >> (128 - u32::from(len)) == 0
}

/// Classifies any address.
pub fn classify(ip: IpAddr) -> Class {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// Classifies an IPv4 address.
pub fn classify_v4(ip: Ipv4Addr) -> Class {
    let a = u32::from(ip);
    if V4_GLOBAL_EXCEPTIONS
        .iter()
        .any(|&(net, len)| in_v4(a, net, len))
    {
        return Class::Global;
    }
    V4_BLOCKED
        .iter()
        .find(|&&(net, len, _)| in_v4(a, net, len))
        .map_or(Class::Global, |&(_, _, range)| Class::Blocked {
            range,
            carried: None,
        })
}

/// Classifies an IPv6 address, looking inside the forms that embed an IPv4 address.
pub fn classify_v6(ip: Ipv6Addr) -> Class {
    let embedded = |v4: Ipv4Addr, via: &'static str, otherwise: Option<Range>| match (
        classify_v4(v4),
        otherwise,
    ) {
        (Class::Blocked { range, .. }, _) => Class::Blocked {
            range,
            carried: Some((v4, via)),
        },
        (Class::Global, Some(range)) => Class::Blocked {
            range,
            carried: Some((v4, via)),
        },
        (Class::Global, None) => Class::Global,
    };
    if let Some((v4, via, otherwise)) = embedded_v4(ip) {
        return embedded(v4, via, otherwise);
    }
    let a = u128::from(ip);
    if V6_GLOBAL_EXCEPTIONS
        .iter()
        .any(|&(net, len)| in_v6(a, net, len))
    {
        return Class::Global;
    }
    if let Some(&(_, _, range)) = V6_BLOCKED.iter().find(|&&(net, len, _)| in_v6(a, net, len)) {
        return Class::Blocked {
            range,
            carried: None,
        };
    }
    if !in_v6(a, GLOBAL_UNICAST.0, GLOBAL_UNICAST.1) {
        return Class::Blocked {
            range: RESERVED_V6,
            carried: None,
        };
    }
    Class::Global
}

/// The IPv4 address inside `ip`, the name of the form, and the range to block it under
/// even when the IPv4 address itself is global (`None`: the form is as reachable as the
/// address it carries).
pub fn embedded_v4(ip: Ipv6Addr) -> Option<(Ipv4Addr, &'static str, Option<Range>)> {
    let a = u128::from(ip);
    let low32 = Ipv4Addr::from((a & 0xffff_ffff) as u32);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some((v4, "ipv4-mapped", None));
    }
    // ::/96 but not :: or ::1 (which are their own entries).
    if a >> 32 == 0 && a > 1 {
        return Some((low32, "ipv4-compatible", Some(IPV4_COMPATIBLE)));
    }
    if in_v6(a, 0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96) {
        return Some((low32, "nat64", None));
    }
    if in_v6(a, 0x2002_0000_0000_0000_0000_0000_0000_0000, 16) {
        return Some((Ipv4Addr::from((a >> 80) as u32), "6to4", None));
    }
    if in_v6(a, 0x2001_0000_0000_0000_0000_0000_0000_0000, 32) {
        // The client's address is stored inverted; the server's is in bits 32..64.
        let client = Ipv4Addr::from(!((a & 0xffff_ffff) as u32));
        let server = Ipv4Addr::from((a >> 64) as u32);
        let pick = if classify_v4(client).is_global() {
            server
        } else {
            client
        };
        return Some((pick, "teredo", Some(TEREDO)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Option<&'static str> {
        match classify(s.parse().unwrap()) {
            Class::Global => None,
            Class::Blocked { range, .. } => Some(range.name),
        }
    }

    #[test]
    fn ipv4_registry() {
        for (ip, want) in [
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("this-network")),
            ("10.255.0.1", Some("private")),
            ("100.64.0.1", Some("shared-address-space")),
            ("100.127.255.255", Some("shared-address-space")),
            ("100.128.0.0", None),
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("172.15.255.255", None),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.0", None),
            ("192.0.0.1", Some("ietf-protocol-assignments")),
            ("192.0.0.9", None),
            ("192.0.0.10", None),
            ("192.0.0.192", Some("ietf-protocol-assignments")),
            ("192.0.2.5", Some("documentation")),
            ("192.88.99.1", Some("6to4-relay-anycast")),
            ("192.168.1.1", Some("private")),
            ("198.18.0.1", Some("benchmarking")),
            ("198.19.255.255", Some("benchmarking")),
            ("198.20.0.0", None),
            ("198.51.100.7", Some("documentation")),
            ("203.0.113.9", Some("documentation")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("240.0.0.1", Some("reserved")),
            ("255.255.255.255", Some("broadcast")),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.216.34", None),
        ] {
            assert_eq!(name(ip), want, "{ip}");
        }
    }

    #[test]
    fn ipv6_registry_and_embedded_ipv4() {
        for (ip, want) in [
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:7f00:1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("::8.8.8.8", Some("ipv4-compatible")),
            ("64:ff9b::127.0.0.1", Some("loopback")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("64:ff9b::8.8.8.8", None),
            ("64:ff9b:1::1", Some("nat64-local-use")),
            ("2002:7f00:1::", Some("loopback")),
            ("2002:a9fe:a9fe::1", Some("link-local")),
            ("2002:808:808::1", None),
            ("2001:0:4136:e378:8000:63bf:80ff:fffe", Some("loopback")),
            ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", Some("teredo")),
            ("2001:2::1", Some("benchmarking")),
            ("2001:3::1", None),
            ("2001:20::1", None),
            ("2001:db8::1", Some("documentation")),
            ("3fff::1", Some("documentation")),
            ("fc00::1", Some("unique-local")),
            ("fd00:ec2::254", Some("unique-local")),
            ("fe80::1", Some("link-local")),
            ("fec0::1", Some("site-local")),
            ("ff02::1", Some("multicast")),
            ("100::1", Some("discard-only")),
            ("4000::1", Some("reserved")),
            ("::2:3:4:5", Some("reserved")),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001::200e", None),
        ] {
            assert_eq!(name(ip), want, "{ip}");
        }
    }

    #[test]
    fn std_oracle_never_contradicted() {
        // Every address the standard library calls special must be blocked here.
        let mut x: u32 = 0x9e37_79b9;
        for _ in 0..200_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let v4 = Ipv4Addr::from(x);
            let special = v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast();
            if special {
                assert!(!classify_v4(v4).is_global(), "{v4}");
            }
            let v6 = v4.to_ipv6_mapped();
            assert_eq!(classify_v6(v6).is_global(), classify_v4(v4).is_global());
        }
    }
}
