//! The bare forwarder: the physical reference openchatd's packets per second are divided by.
//! It does what any SFU must do per packet and nothing else: take a batch of datagrams off
//! the socket, authenticate and decrypt each publisher packet once, and for every
//! subscriber copy it, encrypt it (SRTP, AEAD_AES_256_GCM, RFC 7714: the profile str0m peers negotiate with openchatd) and queue it; then hand
//! the copies to the kernel in batches. No ICE, no DTLS, no RTCP, no rewriting: keys are
//! pre-shared ([`Psk`]), derived from a master number both sides know, and peers announce
//! themselves with a [`hello`] datagram. It uses openchatd's own batched socket code
//! (`openchat_media::shard::udp`: recvmmsg, sendmmsg, GSO) and the same AES-GCM (aws-lc), so
//! the gap between the two is the SFU's own work (str0m, the room, the shard).
//!
//! [`Forwarder`] is the sans-IO core (a datagram in, transmits out); [`serve`] is the
//! socket loop around it, bounded in time. The load generator's `--target bare` drives it
//! (`loadgen::bare`).

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use openchat_media::sfu::Transmit;
use openchat_media::shard::udp;

/// Most subscribers one forwarder serves.
pub const SUBSCRIBERS_MAX: usize = 20_000;
/// Most publishers one forwarder serves.
pub const PUBLISHERS_MAX: usize = 16;
/// AES-GCM tag bytes appended to each SRTP packet.
pub const TAG_BYTES: usize = 16;
/// Marks a hello datagram and its acknowledgement.
pub const HELLO_MAGIC: [u8; 4] = *b"OCBF";
/// A hello: magic, role, peer index (big-endian).
pub const HELLO_BYTES: usize = 9;
/// The first SSRC of publishers (publisher `i` sends as `PUBLISHER_SSRC_BASE + i`).
pub const PUBLISHER_SSRC_BASE: u32 = 0x0cb0_0000;
/// Size of the RTP header the generator writes (no CSRCs, no extension).
pub const RTP_HEADER_BYTES: usize = 12;
/// Socket buffer asked for in each direction (as openchatd's media sockets).
pub const SOCKET_BUFFER_BYTES: usize = openchat_media::MEDIA_SOCKET_BUFFER_BYTES;

/// Which side of the forwarder a peer is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerRole {
    Publisher,
    Subscriber,
}

impl PeerRole {
    fn byte(self) -> u8 {
        match self {
            Self::Publisher => b'P',
            Self::Subscriber => b'S',
        }
    }
}

/// A hello datagram (the forwarder echoes it back as the acknowledgement).
pub fn hello(role: PeerRole, index: u32) -> [u8; HELLO_BYTES] {
    let mut out = [0u8; HELLO_BYTES];
    out[..4].copy_from_slice(&HELLO_MAGIC);
    out[4] = role.byte();
    out[5..].copy_from_slice(&index.to_be_bytes());
    out
}

fn parse_hello(bytes: &[u8]) -> Option<(PeerRole, u32)> {
    if bytes.len() != HELLO_BYTES || bytes[..4] != HELLO_MAGIC {
        return None;
    }
    let role = match bytes[4] {
        b'P' => PeerRole::Publisher,
        b'S' => PeerRole::Subscriber,
        _ => return None,
    };
    Some((role, u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]])))
}

/// Why an SRTP packet was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SrtpError {
    #[error("not an RTP packet of the expected header size")]
    Header,
    #[error("authentication failed")]
    Auth,
}

/// A peer's pre-shared SRTP key and salt (benchmarks only: derived, not secret).
pub struct Psk {
    key: LessSafeKey,
    salt: [u8; 12],
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Psk").finish_non_exhaustive()
    }
}

impl Psk {
    /// The key of peer `index` on `role`'s side for a run's `master` number.
    pub fn derive(master: u64, role: PeerRole, index: u32) -> Self {
        // SplitMix64 over (master, role, index): distinct keys per peer, same on both sides.
        let mut state = master ^ (u64::from(role.byte()) << 56) ^ u64::from(index);
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let mut material = [0u8; 48];
        for chunk in material.chunks_exact_mut(8) {
            chunk.copy_from_slice(&next().to_le_bytes());
        }
        let key = UnboundKey::new(&AES_256_GCM, &material[..32]).expect("a 32-byte AES-256 key");
        let mut salt = [0u8; 12];
        salt.copy_from_slice(&material[32..44]);
        Self {
            key: LessSafeKey::new(key),
            salt,
        }
    }

    /// RFC 7714 §8.1: (0, SSRC, ROC, SEQ) XOR salt.
    fn nonce(&self, ssrc: u32, roc: u32, seq: u16) -> Nonce {
        let mut iv = [0u8; 12];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..10].copy_from_slice(&roc.to_be_bytes());
        iv[10..12].copy_from_slice(&seq.to_be_bytes());
        for (byte, salt) in iv.iter_mut().zip(self.salt) {
            *byte ^= salt;
        }
        Nonce::assume_unique_for_key(iv)
    }

    /// Writes into `out` (cleared) the SRTP packet of a 12-byte RTP `header` and `payload`,
    /// for rollover counter `roc`.
    pub fn seal(&self, header: &[u8; RTP_HEADER_BYTES], payload: &[u8], roc: u32, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(RTP_HEADER_BYTES + payload.len() + TAG_BYTES);
        out.extend_from_slice(header);
        out.extend_from_slice(payload);
        let ssrc = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let nonce = self.nonce(ssrc, roc, u16::from_be_bytes([header[2], header[3]]));
        let (header, body) = out.split_at_mut(RTP_HEADER_BYTES);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&*header), body)
            .expect("AES-GCM seals any length below 2^36 bytes");
        out.extend_from_slice(tag.as_ref());
    }

    /// Authenticates and decrypts an SRTP packet in place for rollover counter `roc`;
    /// returns its payload.
    pub fn open<'a>(&self, packet: &'a mut [u8], roc: u32) -> Result<&'a [u8], SrtpError> {
        let (ssrc, seq) = crate::loadgen::peer::rtp_header(packet).ok_or(SrtpError::Header)?;
        if packet[0] != 0x80 || packet.len() < RTP_HEADER_BYTES + TAG_BYTES {
            return Err(SrtpError::Header);
        }
        let nonce = self.nonce(ssrc, roc, seq);
        let (header, body) = packet.split_at_mut(RTP_HEADER_BYTES);
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(&*header), body)
            .map_err(|_| SrtpError::Auth)?;
        Ok(plain)
    }
}

/// A publisher the forwarder knows.
struct Publisher {
    from: SocketAddr,
    ssrc: u32,
    psk: Psk,
    /// Highest extended sequence number seen (its rollover counter is the high bits).
    highest: Option<u64>,
}

/// What the forwarder counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ForwarderStats {
    pub received: u64,
    /// Copies queued for subscribers.
    pub copies: u64,
    /// Datagrams dropped: unknown sender, not a hello, failed authentication, limits.
    pub dropped: u64,
}

/// The sans-IO forwarder: peers by hello, publisher packets out to every subscriber.
pub struct Forwarder {
    master: u64,
    publishers: Vec<Publisher>,
    subscribers: Vec<(SocketAddr, Psk)>,
    scratch: Vec<u8>,
    pub stats: ForwarderStats,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("publishers", &self.publishers.len())
            .field("subscribers", &self.subscribers.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Forwarder {
    pub fn new(master: u64) -> Self {
        Self {
            master,
            publishers: Vec::new(),
            subscribers: Vec::new(),
            scratch: Vec::with_capacity(openchat_media::shard::DATAGRAM_BYTES_MAX),
            stats: ForwarderStats::default(),
        }
    }

    pub fn subscribers(&self) -> usize {
        self.subscribers.len()
    }

    /// Handles one datagram from `from`. Copies for subscribers are written into
    /// `out[*used..]` (reusing the buffers already there, pushing new ones when short) and
    /// `*used` advances; a hello's acknowledgement goes the same way.
    pub fn handle(&mut self, from: SocketAddr, bytes: &[u8], out: &mut Vec<Transmit>, used: &mut usize) {
        self.stats.received += 1;
        if let Some((role, index)) = parse_hello(bytes) {
            if self.register(from, role, index) {
                let slot = next_slot(out, used, from);
                slot.contents.extend_from_slice(bytes);
            } else {
                self.stats.dropped += 1;
            }
            return;
        }
        let Some(publisher) = self.publishers.iter_mut().find(|p| p.from == from) else {
            self.stats.dropped += 1;
            return;
        };
        let Some((ssrc, seq)) = crate::loadgen::peer::rtp_header(bytes) else {
            self.stats.dropped += 1;
            return;
        };
        if ssrc != publisher.ssrc || bytes.len() < RTP_HEADER_BYTES + TAG_BYTES {
            self.stats.dropped += 1;
            return;
        }
        let extended = crate::loadgen::peer::extend_seq(publisher.highest.unwrap_or(u64::from(seq)), seq);
        let roc = (extended >> 16) as u32;
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        let Ok(plain) = publisher.psk.open(&mut self.scratch, roc) else {
            self.stats.dropped += 1;
            return;
        };
        publisher.highest = Some(publisher.highest.map_or(extended, |h| h.max(extended)));
        let mut header = [0u8; RTP_HEADER_BYTES];
        header.copy_from_slice(&bytes[..RTP_HEADER_BYTES]);
        for (to, psk) in &self.subscribers {
            let slot = next_slot(out, used, *to);
            psk.seal(&header, plain, roc, &mut slot.contents);
        }
        self.stats.copies += self.subscribers.len() as u64;
    }

    /// Adds (or moves) a peer; false past a limit.
    fn register(&mut self, from: SocketAddr, role: PeerRole, index: u32) -> bool {
        match role {
            PeerRole::Publisher => {
                let ssrc = PUBLISHER_SSRC_BASE.wrapping_add(index);
                if let Some(known) = self.publishers.iter_mut().find(|p| p.ssrc == ssrc) {
                    known.from = from;
                    return true;
                }
                if self.publishers.len() >= PUBLISHERS_MAX {
                    return false;
                }
                self.publishers.push(Publisher {
                    from,
                    ssrc,
                    psk: Psk::derive(self.master, role, index),
                    highest: None,
                });
            }
            PeerRole::Subscriber => {
                if self.subscribers.iter().any(|(to, _)| *to == from) {
                    return true;
                }
                if self.subscribers.len() >= SUBSCRIBERS_MAX {
                    return false;
                }
                self.subscribers
                    .push((from, Psk::derive(self.master, role, index)));
            }
        }
        true
    }
}

/// The transmit at `out[*used]`, emptied and addressed to `to` (its buffer kept).
fn next_slot<'a>(out: &'a mut Vec<Transmit>, used: &mut usize, to: SocketAddr) -> &'a mut Transmit {
    if *used == out.len() {
        out.push(Transmit {
            destination: to,
            contents: Vec::with_capacity(256),
        });
    }
    let slot = &mut out[*used];
    *used += 1;
    slot.destination = to;
    slot.contents.clear();
    slot
}

/// Why the forwarder's loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Binds the forwarder's socket on `addr` with openchatd's media-socket buffer sizes.
pub fn bind(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_recv_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.set_send_buffer_size(SOCKET_BUFFER_BYTES)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Runs `forwarder` on `socket` until `until`: wait for datagrams, take a batch, forward
/// each, send the copies in batches (waiting while the send buffer is full).
pub fn serve(
    socket: &std::net::UdpSocket,
    forwarder: &mut Forwarder,
    until: Instant,
) -> Result<(), ServeError> {
    use nix::poll::{PollFd, PollFlags, poll};
    let fd = socket.as_raw_fd();
    let mut receiver = udp::Receiver::new(false);
    let mut sender = udp::Sender::new();
    let mut out: Vec<Transmit> = Vec::new();
    let mut used = 0usize;
    let wait = |flags: PollFlags, timeout: Duration| -> std::io::Result<()> {
        let mut fds = [PollFd::new(socket, flags)];
        match poll(&mut fds, timeout.as_millis().min(i32::MAX as u128) as i32) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
            Err(errno) => Err(errno.into()),
        }
    };
    while Instant::now() < until {
        wait(PollFlags::POLLIN, Duration::from_millis(200))?;
        receiver.receive(fd, |from, bytes, _| {
            forwarder.handle(from, bytes, &mut out, &mut used);
        })?;
        let mut done = 0;
        while done < used {
            let sent = sender.send(fd, &out[done..used]);
            done += sent.consumed;
            if sent.blocked {
                wait(PollFlags::POLLOUT, Duration::from_millis(200))?;
            }
            if Instant::now() >= until {
                break;
            }
        }
        used = 0;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(ssrc: u32, seq: u16) -> [u8; RTP_HEADER_BYTES] {
        let mut h = [0u8; RTP_HEADER_BYTES];
        h[0] = 0x80;
        h[1] = 111;
        h[2..4].copy_from_slice(&seq.to_be_bytes());
        h[8..12].copy_from_slice(&ssrc.to_be_bytes());
        h
    }

    #[test]
    fn srtp_packets_open_with_the_same_key_and_rollover_only() {
        let psk = Psk::derive(7, PeerRole::Publisher, 0);
        let mut packet = Vec::new();
        psk.seal(&header(1, 5), b"hello", 2, &mut packet);
        assert_eq!(packet.len(), RTP_HEADER_BYTES + 5 + TAG_BYTES);
        assert_ne!(&packet[RTP_HEADER_BYTES..RTP_HEADER_BYTES + 5], b"hello");
        assert_eq!(psk.open(&mut packet.clone(), 2), Ok(&b"hello"[..]));
        assert_eq!(psk.open(&mut packet.clone(), 1), Err(SrtpError::Auth));
        let other = Psk::derive(7, PeerRole::Subscriber, 0);
        assert_eq!(other.open(&mut packet.clone(), 2), Err(SrtpError::Auth));
        let mut tampered = packet.clone();
        tampered[3] ^= 1; // the header is authenticated too
        assert_eq!(psk.open(&mut tampered, 2), Err(SrtpError::Auth));
        assert_eq!(psk.open(&mut packet[..20].to_vec(), 2), Err(SrtpError::Header));
    }

    #[test]
    fn a_publisher_packet_reaches_every_subscriber_under_its_own_key() {
        let master = 99;
        let mut forwarder = Forwarder::new(master);
        let (mut out, mut used) = (Vec::new(), 0);
        let publisher: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        let subs: Vec<SocketAddr> = (0..3)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 2000 + i)))
            .collect();
        forwarder.handle(publisher, &hello(PeerRole::Publisher, 0), &mut out, &mut used);
        for (i, sub) in subs.iter().enumerate() {
            forwarder.handle(*sub, &hello(PeerRole::Subscriber, i as u32), &mut out, &mut used);
        }
        assert_eq!(used, 4, "every hello is acknowledged");
        assert_eq!(out[1].destination, subs[0]);
        assert_eq!(out[1].contents, hello(PeerRole::Subscriber, 0));
        used = 0;
        let mut packet = Vec::new();
        Psk::derive(master, PeerRole::Publisher, 0).seal(
            &header(PUBLISHER_SSRC_BASE, 9),
            b"media",
            0,
            &mut packet,
        );
        forwarder.handle(publisher, &packet, &mut out, &mut used);
        assert_eq!(used, 3);
        for (i, sub) in subs.iter().enumerate() {
            assert_eq!(out[i].destination, *sub);
            let psk = Psk::derive(master, PeerRole::Subscriber, i as u32);
            assert_eq!(psk.open(&mut out[i].contents.clone(), 0), Ok(&b"media"[..]));
        }
        assert_eq!(forwarder.stats.copies, 3);
    }

    #[test]
    fn unknown_senders_forged_packets_and_peers_past_the_limit_are_dropped() {
        let mut forwarder = Forwarder::new(1);
        let (mut out, mut used) = (Vec::new(), 0);
        let publisher: SocketAddr = "127.0.0.1:1000".parse().unwrap();
        forwarder.handle(publisher, &hello(PeerRole::Publisher, 0), &mut out, &mut used);
        forwarder.handle(
            "127.0.0.1:2000".parse().unwrap(),
            &hello(PeerRole::Subscriber, 0),
            &mut out,
            &mut used,
        );
        used = 0;
        let mut packet = Vec::new();
        Psk::derive(2, PeerRole::Publisher, 0).seal(&header(PUBLISHER_SSRC_BASE, 1), b"x", 0, &mut packet);
        forwarder.handle(publisher, &packet, &mut out, &mut used);
        assert_eq!(used, 0, "a packet under the wrong key is not forwarded");
        Psk::derive(1, PeerRole::Publisher, 0).seal(&header(PUBLISHER_SSRC_BASE, 1), b"x", 0, &mut packet);
        forwarder.handle("127.0.0.1:3000".parse().unwrap(), &packet, &mut out, &mut used);
        assert_eq!(used, 0, "nor one from an address that did not say hello");
        forwarder.handle(publisher, b"OCBFX\0\0\0\0", &mut out, &mut used);
        for index in 0..PUBLISHERS_MAX as u32 {
            forwarder.handle(
                SocketAddr::from(([127, 0, 0, 2], 4000 + index as u16)),
                &hello(PeerRole::Publisher, 100 + index),
                &mut out,
                &mut used,
            );
        }
        assert_eq!(forwarder.publishers.len(), PUBLISHERS_MAX);
        assert_eq!(forwarder.stats.dropped, 4, "{:?}", forwarder.stats);
    }

    #[test]
    fn serve_forwards_between_real_sockets_until_its_deadline() {
        let socket = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        let master = 5;
        let thread = std::thread::spawn(move || {
            let mut forwarder = Forwarder::new(master);
            serve(&socket, &mut forwarder, Instant::now() + Duration::from_secs(3)).unwrap();
            forwarder.stats
        });
        let publisher = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let subscriber = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        subscriber.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        publisher.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 2048];
        publisher.send_to(&hello(PeerRole::Publisher, 0), addr).unwrap();
        assert_eq!(publisher.recv(&mut buf).unwrap(), HELLO_BYTES);
        subscriber.send_to(&hello(PeerRole::Subscriber, 4), addr).unwrap();
        assert_eq!(subscriber.recv(&mut buf).unwrap(), HELLO_BYTES);
        let mut packet = Vec::new();
        Psk::derive(master, PeerRole::Publisher, 0).seal(
            &header(PUBLISHER_SSRC_BASE, 1),
            &[7; 160],
            0,
            &mut packet,
        );
        publisher.send_to(&packet, addr).unwrap();
        let n = subscriber.recv(&mut buf).unwrap();
        let psk = Psk::derive(master, PeerRole::Subscriber, 4);
        assert_eq!(psk.open(&mut buf[..n], 0), Ok(&[7u8; 160][..]));
        let stats = thread.join().unwrap();
        assert_eq!((stats.received, stats.copies, stats.dropped), (3, 1, 0));
    }
}
