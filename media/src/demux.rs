//! One demultiplexing step for media datagrams: remote address → (room, connection), and on
//! a miss the local ICE ufrag of a STUN binding request → (room, connection).
//!
//! Sans-IO and generic over the room key `K` (the shard's room slot; `()` for a harness
//! driving one SFU). It learns connections from the [`LinkChange`]s the SFU reports and
//! addresses from the caller, once the connection took a binding request from them; both
//! are forgotten when the connection closes. Every lookup is a hash probe: nothing scans
//! rooms or peers, so a flood from unknown addresses costs one header check per datagram.
//!
//! Bounds: at most [`ADDRESSES_PER_LINK_MAX`] remote addresses per connection (ICE may try
//! several; the oldest is forgotten first), so the maps grow with connections, which the
//! rooms bound, never with what strangers send.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::SocketAddr;
use std::time::Instant;

use crate::sfu::{LinkChange, SfuError};

/// Remote addresses remembered per connection.
pub const ADDRESSES_PER_LINK_MAX: usize = 4;

/// Where a datagram goes: a room and one of its SFU's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route<K> {
    pub room: K,
    pub connection: usize,
}

/// The result of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<K> {
    /// The address is known: hand the datagram to this connection.
    Known(Route<K>),
    /// A STUN binding request from a new address naming this connection's ufrag: hand it
    /// over, and [`Demux::learn`] the address if the connection takes it.
    Candidate(Route<K>),
    /// Nobody's: drop it.
    Unknown,
}

#[derive(Debug)]
struct Link {
    ufrag: String,
    addresses: VecDeque<SocketAddr>,
}

/// The demultiplexer's maps.
#[derive(Debug)]
pub struct Demux<K> {
    by_address: HashMap<SocketAddr, Route<K>>,
    by_ufrag: HashMap<String, Route<K>>,
    links: HashMap<Route<K>, Link>,
}

impl<K> Default for Demux<K> {
    fn default() -> Self {
        Self {
            by_address: HashMap::new(),
            by_ufrag: HashMap::new(),
            links: HashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Demux<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Where a datagram from `from` goes.
    pub fn lookup(&self, from: SocketAddr, contents: &[u8]) -> Lookup<K> {
        if let Some(route) = self.by_address.get(&from) {
            return Lookup::Known(*route);
        }
        match stun_local_ufrag(contents).and_then(|ufrag| self.by_ufrag.get(ufrag)) {
            Some(route) => Lookup::Candidate(*route),
            None => Lookup::Unknown,
        }
    }

    /// `from` belongs to `route` from now on (its connection took a binding request from it).
    pub fn learn(&mut self, from: SocketAddr, route: Route<K>) {
        if !self.links.contains_key(&route) {
            return;
        }
        if let Some(previous) = self.by_address.insert(from, route)
            && previous != route
            && let Some(other) = self.links.get_mut(&previous)
        {
            other.addresses.retain(|a| *a != from);
        }
        let Some(link) = self.links.get_mut(&route) else {
            return;
        };
        if link.addresses.contains(&from) {
            return;
        }
        if link.addresses.len() >= ADDRESSES_PER_LINK_MAX
            && let Some(oldest) = link.addresses.pop_front()
        {
            self.by_address.remove(&oldest);
        }
        link.addresses.push_back(from);
    }

    /// Applies a connection change that `room`'s SFU reported.
    pub fn apply(&mut self, room: K, change: LinkChange) {
        match change {
            LinkChange::Opened { connection, ufrag } => {
                let route = Route { room, connection };
                self.close(route);
                self.by_ufrag.insert(ufrag.clone(), route);
                self.links.insert(
                    route,
                    Link {
                        ufrag,
                        addresses: VecDeque::new(),
                    },
                );
            }
            LinkChange::Closed { connection } => self.close(Route { room, connection }),
        }
    }

    /// Forgets every connection of `room` (it is gone).
    pub fn forget_room(&mut self, room: K) {
        let routes: Vec<Route<K>> = self.links.keys().filter(|r| r.room == room).copied().collect();
        for route in routes {
            self.close(route);
        }
    }

    fn close(&mut self, route: Route<K>) {
        if let Some(link) = self.links.remove(&route) {
            if self.by_ufrag.get(&link.ufrag) == Some(&route) {
                self.by_ufrag.remove(&link.ufrag);
            }
            for address in link.addresses {
                if self.by_address.get(&address) == Some(&route) {
                    self.by_address.remove(&address);
                }
            }
        }
    }

    /// Connections known.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    /// Remote addresses known.
    pub fn addresses(&self) -> usize {
        self.by_address.len()
    }
}

/// What datagrams are demultiplexed to: an SFU, or a room holding one.
pub trait Connections {
    /// The next connection opened or closed.
    fn poll_link(&mut self) -> Option<LinkChange>;
    /// Whether connection `connection` takes a datagram from `from`.
    fn accepts(&self, now: Instant, connection: usize, from: SocketAddr, contents: &[u8]) -> bool;
    /// One datagram for connection `connection`.
    fn handle_datagram(
        &mut self,
        now: Instant,
        connection: usize,
        from: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError>;
}

impl Demux<()> {
    /// For a caller that drives one SFU or room by itself (simulations, benches): learns
    /// its connection changes, routes one datagram and hands it over, learning the address
    /// of a binding request the connection took. `Err(UnknownPeer)` when it is nobody's.
    pub fn deliver(
        &mut self,
        target: &mut impl Connections,
        now: Instant,
        from: SocketAddr,
        contents: &[u8],
    ) -> Result<(), SfuError> {
        while let Some(change) = target.poll_link() {
            self.apply((), change);
        }
        let (route, new) = match self.lookup(from, contents) {
            Lookup::Known(route) => (route, false),
            Lookup::Candidate(route) => (route, true),
            Lookup::Unknown => return Err(SfuError::UnknownPeer),
        };
        if new && !target.accepts(now, route.connection, from, contents) {
            return Err(SfuError::UnknownPeer);
        }
        target.handle_datagram(now, route.connection, from, contents)?;
        if new {
            self.learn(from, route);
        }
        Ok(())
    }
}

/// Whether `contents` has the fixed header of a STUN message (RFC 8489 §5: the two top bits
/// zero, a length that is a multiple of 4 and fits, the magic cookie).
pub fn looks_like_stun(contents: &[u8]) -> bool {
    const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    if contents.len() < 20 || contents[0] & 0xC0 != 0 || contents[4..8] != MAGIC_COOKIE {
        return false;
    }
    let length = usize::from(u16::from_be_bytes([contents[2], contents[3]]));
    length % 4 == 0 && 20 + length == contents.len()
}

/// The recipient's ufrag of a STUN binding request: the part of its USERNAME attribute
/// before the colon (RFC 8445 §7.2.2: `<receiver ufrag>:<sender ufrag>`). `None` for
/// anything else, or a malformed message.
pub fn stun_local_ufrag(contents: &[u8]) -> Option<&str> {
    const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];
    const USERNAME: u16 = 0x0006;
    if !looks_like_stun(contents) || contents[0..2] != BINDING_REQUEST {
        return None;
    }
    let mut at = 20;
    while at + 4 <= contents.len() {
        let kind = u16::from_be_bytes([contents[at], contents[at + 1]]);
        let length = usize::from(u16::from_be_bytes([contents[at + 2], contents[at + 3]]));
        let value = contents.get(at + 4..at + 4 + length)?;
        if kind == USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split_once(':').map(|(local, _)| local);
        }
        at += 4 + length.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binding request whose USERNAME is `username`.
    fn binding(username: &str) -> Vec<u8> {
        let mut attributes = Vec::new();
        // A PRIORITY attribute before USERNAME, as browsers order them differently.
        attributes.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attributes.extend_from_slice(&0x0006u16.to_be_bytes());
        attributes.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attributes.extend_from_slice(username.as_bytes());
        while attributes.len() % 4 != 0 {
            attributes.push(0);
        }
        let mut message = vec![0x00, 0x01];
        message.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
        message.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
        message.extend_from_slice(&[7; 12]);
        message.extend_from_slice(&attributes);
        message
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn stun_headers_are_recognised_and_everything_else_is_not() {
        let mut binding = vec![0x00, 0x01, 0x00, 0x08, 0x21, 0x12, 0xA4, 0x42];
        binding.extend_from_slice(&[7; 12]);
        binding.extend_from_slice(&[0; 8]);
        assert!(looks_like_stun(&binding));
        let mut rtp = binding.clone();
        rtp[0] = 0x80;
        assert!(!looks_like_stun(&rtp), "RTP/RTCP start with version 2");
        let mut dtls = binding.clone();
        dtls[0] = 22;
        dtls[4] = 0xFE;
        assert!(!looks_like_stun(&dtls));
        assert!(!looks_like_stun(&binding[..19]));
        assert!(!looks_like_stun(&binding[..24]), "the length must match");
    }

    #[test]
    fn the_receivers_ufrag_is_read_from_a_binding_requests_username() {
        assert_eq!(stun_local_ufrag(&binding("srvU:cliU")), Some("srvU"));
        assert_eq!(
            stun_local_ufrag(&binding("abcde:f")),
            Some("abcde"),
            "padded value"
        );
        assert_eq!(stun_local_ufrag(&binding("nocolon")), None);
        let mut response = binding("srvU:cliU");
        response[0..2].copy_from_slice(&[0x01, 0x01]);
        assert_eq!(
            stun_local_ufrag(&response),
            None,
            "only requests name the receiver"
        );
        // An attribute whose length runs past the message is malformed, not a panic.
        let mut bad = binding("srvU:cliU");
        bad[22..24].copy_from_slice(&[0x40, 0x00]);
        assert_eq!(stun_local_ufrag(&bad), None);
        assert_eq!(stun_local_ufrag(&[0x80; 64]), None);
    }

    #[test]
    fn a_binding_request_finds_its_connection_by_ufrag_and_its_address_is_learnt() {
        let mut demux: Demux<u32> = Demux::new();
        demux.apply(
            7,
            LinkChange::Opened {
                connection: 2,
                ufrag: "srvU".into(),
            },
        );
        let route = Route {
            room: 7,
            connection: 2,
        };
        assert_eq!(demux.lookup(addr(1000), &[0x80; 40]), Lookup::Unknown);
        assert_eq!(
            demux.lookup(addr(1000), &binding("srvU:cliU")),
            Lookup::Candidate(route)
        );
        assert_eq!(demux.lookup(addr(1000), &binding("other:cliU")), Lookup::Unknown);
        demux.learn(addr(1000), route);
        assert_eq!(demux.lookup(addr(1000), &[0x80; 40]), Lookup::Known(route));
    }

    #[test]
    fn a_closed_connection_takes_its_ufrag_and_addresses_with_it() {
        let mut demux: Demux<u32> = Demux::new();
        let route = Route {
            room: 1,
            connection: 0,
        };
        demux.apply(
            1,
            LinkChange::Opened {
                connection: 0,
                ufrag: "u1".into(),
            },
        );
        demux.learn(addr(1), route);
        demux.apply(1, LinkChange::Closed { connection: 0 });
        assert_eq!(demux.lookup(addr(1), &binding("u1:x")), Lookup::Unknown);
        assert_eq!((demux.links(), demux.addresses()), (0, 0));
        // The index is reused by a new connection: the old addresses do not route to it.
        demux.apply(
            1,
            LinkChange::Opened {
                connection: 0,
                ufrag: "u2".into(),
            },
        );
        assert_eq!(demux.lookup(addr(1), &[0x80; 40]), Lookup::Unknown);
        demux.learn(addr(2), route);
        demux.forget_room(1);
        assert_eq!((demux.links(), demux.addresses()), (0, 0));
    }

    #[test]
    fn a_connection_keeps_only_its_latest_addresses() {
        let mut demux: Demux<()> = Demux::new();
        let route = Route {
            room: (),
            connection: 0,
        };
        demux.apply(
            (),
            LinkChange::Opened {
                connection: 0,
                ufrag: "u".into(),
            },
        );
        for port in 0..(ADDRESSES_PER_LINK_MAX as u16 + 3) {
            demux.learn(addr(port), route);
        }
        assert_eq!(demux.addresses(), ADDRESSES_PER_LINK_MAX);
        assert_eq!(
            demux.lookup(addr(0), &[0x80; 40]),
            Lookup::Unknown,
            "oldest forgotten"
        );
        let newest = addr(ADDRESSES_PER_LINK_MAX as u16 + 2);
        assert_eq!(demux.lookup(newest, &[0x80; 40]), Lookup::Known(route));
        // Learning an address for a connection that is not known does nothing.
        demux.learn(
            addr(9999),
            Route {
                room: (),
                connection: 5,
            },
        );
        assert_eq!(demux.lookup(addr(9999), &[0x80; 40]), Lookup::Unknown);
    }

    #[test]
    fn an_address_that_moves_to_another_connection_leaves_the_first() {
        let mut demux: Demux<u8> = Demux::new();
        for (connection, ufrag) in [(0, "a"), (1, "b")] {
            demux.apply(
                0,
                LinkChange::Opened {
                    connection,
                    ufrag: ufrag.into(),
                },
            );
        }
        let (first, second) = (
            Route {
                room: 0,
                connection: 0,
            },
            Route {
                room: 0,
                connection: 1,
            },
        );
        demux.learn(addr(5), first);
        demux.learn(addr(5), second);
        demux.apply(0, LinkChange::Closed { connection: 0 });
        assert_eq!(demux.lookup(addr(5), &[0x80; 40]), Lookup::Known(second));
    }
}
