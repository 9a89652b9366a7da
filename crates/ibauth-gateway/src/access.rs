//! Who may use the gateway: `ips.allow` / `ips.deny` as the Client Portal Gateway reads them
//! (`127.0.0.1`, `192.*`, `131.216.*`), plus CIDR blocks (`10.0.0.0/8`, `fd00::/8`) and IPv6.
//! A deny entry wins over an allow entry; an address matching no allow entry is refused.

use std::net::IpAddr;
use std::str::FromStr;

/// One entry of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every address.
    Any,
    /// `192.*`, `131.216.*`, `10.1.2.*`: the leading IPv4 octets given.
    Octets(Vec<u8>),
    /// `10.0.0.0/8`, `fd00::/8`, or one address (a full-length prefix).
    Prefix(IpAddr, u8),
}

impl Pattern {
    fn matches(&self, ip: IpAddr) -> bool {
        // An IPv4 client reaching an IPv6 socket shows as ::ffff:a.b.c.d.
        let ip = ip.to_canonical();
        match self {
            Pattern::Any => true,
            Pattern::Octets(octets) => match ip {
                IpAddr::V4(v4) => v4.octets().starts_with(octets),
                IpAddr::V6(_) => false,
            },
            Pattern::Prefix(net, bits) => match (net, ip) {
                (IpAddr::V4(net), IpAddr::V4(ip)) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*bits)).unwrap_or(0);
                    u32::from(*net) & mask == u32::from(ip) & mask
                }
                (IpAddr::V6(net), IpAddr::V6(ip)) => {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*bits)).unwrap_or(0);
                    u128::from(*net) & mask == u128::from(ip) & mask
                }
                _ => false,
            },
        }
    }
}

/// Why an entry cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{entry}` is not an address pattern: use an address (127.0.0.1, ::1), a wildcard (192.*, 131.216.*), a CIDR block (10.0.0.0/8, fd00::/8) or *"
)]
pub struct BadPattern {
    /// The entry as written.
    pub entry: String,
}

impl FromStr for Pattern {
    type Err = BadPattern;

    fn from_str(text: &str) -> Result<Self, BadPattern> {
        let entry = text.trim();
        let bad = || BadPattern {
            entry: entry.to_owned(),
        };
        if entry == "*" {
            return Ok(Pattern::Any);
        }
        if let Some((net, bits)) = entry.split_once('/') {
            let net: IpAddr = net.trim().parse().map_err(|_| bad())?;
            let bits: u8 = bits.trim().parse().map_err(|_| bad())?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            if bits > max {
                return Err(bad());
            }
            return Ok(Pattern::Prefix(net, bits));
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            return Ok(Pattern::Prefix(ip, bits));
        }
        // `192.*`, `192.168.*`, `10.1.2.*`: octets, then one trailing `*`.
        let mut parts: Vec<&str> = entry.split('.').collect();
        if parts.last() != Some(&"*") || parts.len() < 2 || parts.len() > 4 {
            return Err(bad());
        }
        parts.pop();
        let octets = parts
            .iter()
            .map(|p| p.parse::<u8>().map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(Pattern::Octets(octets))
    }
}

/// The allow and deny lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessList {
    allow: Vec<Pattern>,
    deny: Vec<Pattern>,
    allow_text: Vec<String>,
}

impl Default for AccessList {
    /// This machine and private networks (containers, the LAN): loopback, 10.0.0.0/8,
    /// 172.16.0.0/12, 192.168.0.0/16, and IPv6 unique-local fc00::/7.
    fn default() -> Self {
        Self::new(
            &[
                "127.0.0.1",
                "::1",
                "10.0.0.0/8",
                "172.16.0.0/12",
                "192.168.0.0/16",
                "fc00::/7",
            ],
            &[] as &[&str],
        )
        .unwrap_or_else(|_| Self {
            allow: Vec::new(),
            deny: Vec::new(),
            allow_text: Vec::new(),
        })
    }
}

impl AccessList {
    /// Lists from text entries (the gateway's `ips.allow` and `ips.deny`).
    pub fn new<A: AsRef<str>, D: AsRef<str>>(allow: &[A], deny: &[D]) -> Result<Self, BadPattern> {
        let parse = |list: &[&str]| -> Result<Vec<Pattern>, BadPattern> {
            list.iter().map(|e| e.parse()).collect()
        };
        let allow_text: Vec<String> = allow.iter().map(|a| a.as_ref().trim().to_owned()).collect();
        let allow_refs: Vec<&str> = allow_text.iter().map(String::as_str).collect();
        let deny_refs: Vec<&str> = deny.iter().map(AsRef::as_ref).collect();
        Ok(Self {
            allow: parse(&allow_refs)?,
            deny: parse(&deny_refs)?,
            allow_text,
        })
    }

    /// Every address (for a gateway behind its own firewall).
    pub fn anyone() -> Self {
        Self {
            allow: vec![Pattern::Any],
            deny: Vec::new(),
            allow_text: vec!["*".into()],
        }
    }

    /// Whether `ip` may use the gateway.
    pub fn allows(&self, ip: IpAddr) -> bool {
        !self.deny.iter().any(|p| p.matches(ip)) && self.allow.iter().any(|p| p.matches(ip))
    }

    /// Whether `ip` is refused by a deny entry (as opposed to missing from the allow list).
    pub fn denies(&self, ip: IpAddr) -> bool {
        self.deny.iter().any(|p| p.matches(ip))
    }

    /// The allow list as written (for messages).
    pub fn allowed(&self) -> &[String] {
        &self.allow_text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_gateways_wildcards_cidr_and_ipv6() {
        let list = AccessList::new(
            &[
                "192.*",
                "131.216.*",
                "127.0.0.1",
                "10.1.0.0/16",
                "fd00::/8",
                "2001:db8::7",
            ],
            &["192.168.9.9", "10.1.2.0/24"],
        )
        .unwrap();
        for yes in [
            "192.0.2.1",
            "131.216.1.1",
            "127.0.0.1",
            "10.1.200.3",
            "fd12::1",
            "2001:db8::7",
        ] {
            assert!(list.allows(ip(yes)), "{yes}");
        }
        for no in [
            "193.0.0.1",
            "131.217.0.1",
            "127.0.0.2",
            "10.2.0.1",
            "fe80::1",
            "2001:db8::8",
            "192.168.9.9",
            "10.1.2.3",
        ] {
            assert!(!list.allows(ip(no)), "{no}");
        }
        assert!(list.denies(ip("10.1.2.3")));
        // An IPv4 client on an IPv6 socket.
        assert!(list.allows(ip("::ffff:192.0.2.1")));
        assert!(!list.allows(ip("::ffff:8.8.8.8")));
    }

    #[test]
    fn defaults_are_this_machine_and_private_networks() {
        let list = AccessList::default();
        for yes in [
            "127.0.0.1",
            "::1",
            "172.17.0.2",
            "192.168.1.5",
            "10.9.9.9",
            "fd00::5",
        ] {
            assert!(list.allows(ip(yes)), "{yes}");
        }
        for no in ["8.8.8.8", "172.32.0.1", "2001:4860::8888", "169.254.1.1"] {
            assert!(!list.allows(ip(no)), "{no}");
        }
        assert!(AccessList::anyone().allows(ip("8.8.8.8")));
    }

    #[test]
    fn bad_entries_say_what_is_accepted() {
        for bad in [
            "",
            "192.*.1",
            "300.*",
            "10.0.0.0/33",
            "::/129",
            "*.*",
            "host.example",
        ] {
            let err = AccessList::new(&[bad], &[] as &[&str]).unwrap_err();
            assert!(err.to_string().contains("CIDR block"), "{bad}: {err}");
        }
    }
}
