//! Which address a request counts under, and limits per client address.
//!
//! - [`TrustedProxies`] (`TRUSTED_PROXIES`): when the connection's peer is a trusted
//!   proxy, the client is the right-most address of `X-Forwarded-For` that is not itself a
//!   trusted proxy; otherwise the peer. Anything a client writes into the header left of
//!   that address is ignored, so it cannot choose the address it is counted under.
//! - [`limit_key`]: the key per-address limits count under: an IPv4 address, or the /64
//!   network of an IPv6 address (one subscriber usually holds a whole /64).
//! - [`ClientSlots`]: at most N things (availability streams) held at once per key.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};

use hyper::HeaderMap;

/// The header proxies append the address they received a request from to.
pub const FORWARDED_FOR_HEADER: &str = "x-forwarded-for";

/// One `address/prefix` network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    fn parse(text: &str) -> Result<Self, String> {
        let (address, prefix) = text.split_once('/').map_or((text, None), |(address, prefix)| (address, Some(prefix)));
        let address: IpAddr =
            address.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR network"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        Ok(Self { address, prefix })
    }

    fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The proxies whose `X-Forwarded-For` is believed: a comma-separated list of CIDR
/// networks or single addresses (`10.0.0.0/8,192.168.1.7`); empty (the default) trusts none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let networks = text.split(',').map(str::trim).filter(|part| !part.is_empty()).map(Network::parse);
        networks.collect::<Result<Vec<_>, _>>().map(Self)
    }
}

impl TrustedProxies {
    fn trusts(&self, address: IpAddr) -> bool {
        self.0.iter().any(|network| network.contains(address))
    }

    /// The client's address of a request that came from `peer` with `headers`: the peer
    /// unless it is trusted, else the right-most `X-Forwarded-For` entry that is not a
    /// trusted proxy (an entry that is no address stops the walk at the proxy that wrote it).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        // Several headers are one list, in order (RFC 9110, 5.3). Entries are split as
        // bytes: a client's non-ASCII entry must not hide the ones the proxy appended.
        let entries: Vec<&[u8]> = headers
            .get_all(FORWARDED_FOR_HEADER)
            .iter()
            .flat_map(|value| value.as_bytes().split(|byte| *byte == b','))
            .collect();
        for entry in entries.into_iter().rev() {
            let parsed = std::str::from_utf8(entry).ok().and_then(|entry| entry.trim().parse::<IpAddr>().ok());
            let Some(address) = parsed else { break };
            client = address.to_canonical();
            if !self.trusts(client) {
                break;
            }
        }
        client
    }
}

/// The key per-address limits count a client under: its IPv4 address, or the /64 network
/// of its IPv6 address.
pub fn limit_key(address: IpAddr) -> IpAddr {
    match address.to_canonical() {
        IpAddr::V4(address) => IpAddr::V4(address),
        IpAddr::V6(address) => IpAddr::V6(Ipv6Addr::from(u128::from(address) & (u128::MAX << 64))),
    }
}

/// At most `per_client_max` slots held at once per [`limit_key`]. The table holds only
/// keys with a slot taken, so it is bounded by whatever bounds the slots in all.
#[derive(Debug)]
pub struct ClientSlots {
    per_client_max: usize,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One slot of a client; dropping it gives it back.
#[derive(Debug)]
pub struct ClientSlot {
    key: IpAddr,
    held: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl ClientSlots {
    /// At most `per_client_max` slots per client.
    pub fn new(per_client_max: usize) -> Self {
        Self { per_client_max, held: Arc::default() }
    }

    /// Takes a slot for `client`, or `None` when it holds `per_client_max` already.
    pub fn try_acquire(&self, client: IpAddr) -> Option<ClientSlot> {
        let key = limit_key(client);
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let count = held.entry(key).or_insert(0);
        if *count >= self.per_client_max {
            return None;
        }
        *count += 1;
        Some(ClientSlot { key, held: Arc::clone(&self.held) })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = held.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(FORWARDED_FOR_HEADER, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn trusted_proxies_parse_networks_and_single_addresses() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.168.1.7,fd00::/8".parse().unwrap();
        assert!(proxies.trusts(ip("10.200.3.4")) && proxies.trusts(ip("192.168.1.7")) && proxies.trusts(ip("fd12::1")));
        assert!(!proxies.trusts(ip("192.168.1.8")) && !proxies.trusts(ip("11.0.0.1")));
        assert!(proxies.trusts(ip("::ffff:10.1.2.3")), "an IPv4-mapped peer is its IPv4 address");
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
        assert!("0.0.0.0/0".parse::<TrustedProxies>().unwrap().trusts(ip("8.8.8.8")));
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_forwarded_address() {
        let proxies: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        let peer = ip("10.0.0.2");
        let spoofed = headers(&["6.6.6.6, 203.0.113.9"]);
        assert_eq!(proxies.client_address(peer, &spoofed), ip("203.0.113.9"), "the proxy's entry, not the client's");
        let chained = headers(&["6.6.6.6", "203.0.113.9, 10.0.0.7"]);
        assert_eq!(proxies.client_address(peer, &chained), ip("203.0.113.9"), "trusted hops are skipped");
        assert_eq!(proxies.client_address(peer, &headers(&[])), peer, "no header: the proxy itself");
        assert_eq!(proxies.client_address(peer, &headers(&["6.6.6.6, junk"])), peer, "garbage stops the walk");
        let mut non_ascii = HeaderMap::new();
        non_ascii.append(FORWARDED_FOR_HEADER, HeaderValue::from_bytes(b"\xff\xfe, 203.0.113.9").unwrap());
        assert_eq!(proxies.client_address(peer, &non_ascii), ip("203.0.113.9"), "a client's bytes hide nothing");
        let untrusted = ip("198.51.100.1");
        assert_eq!(proxies.client_address(untrusted, &spoofed), untrusted, "an untrusted peer's header is ignored");
        let nobody = TrustedProxies::default();
        assert_eq!(nobody.client_address(peer, &spoofed), peer, "no trusted proxies: always the peer");
    }

    #[test]
    fn ipv6_clients_count_per_64_network() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:ffff::9")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("203.0.113.9")), ip("203.0.113.9"));
    }

    #[test]
    fn client_slots_are_bounded_per_client_and_given_back() {
        let slots = ClientSlots::new(2);
        let first = slots.try_acquire(ip("203.0.113.9")).unwrap();
        let second = slots.try_acquire(ip("203.0.113.9")).unwrap();
        assert!(slots.try_acquire(ip("203.0.113.9")).is_none());
        assert!(slots.try_acquire(ip("203.0.113.10")).is_some(), "another client has its own slots");
        drop(first);
        assert!(slots.try_acquire(ip("203.0.113.9")).is_some());
        drop(second);
        assert!(slots.held.lock().unwrap().len() <= 1, "keys without slots leave the table");
    }
}
