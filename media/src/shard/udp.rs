//! Batched datagram I/O on a shard's media socket, with plain system calls: `recvmmsg`
//! takes up to [`RECV_BATCH`] datagrams per call into buffers that are reused, `sendmmsg`
//! sends up to [`SEND_BATCH`] transmits per call, and a run of equal-sized transmits to one
//! destination (a video frame's packets to one subscriber) goes out as one UDP GSO send.
//!
//! Every call passes `MSG_DONTWAIT`, so the socket stays in blocking mode for glommio's own
//! io_uring operations on it; "would block" comes back to the caller, which waits through
//! glommio. Nothing here reads a clock or awaits.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg, sendmsg,
};
use nix::sys::time::TimeSpec;

use super::DATAGRAM_BYTES_MAX;
use crate::sfu::Transmit;

/// Datagrams taken from the socket by one `recvmmsg`.
pub const RECV_BATCH: usize = 32;
/// Transmits handed to the kernel by one `sendmmsg`.
pub const SEND_BATCH: usize = 64;
/// Segments in one GSO send (the kernel's own limit is 64 on older kernels).
pub const GSO_SEGMENTS_MAX: usize = 64;
/// Payload of one GSO send (a UDP datagram's limit, less its headers).
pub const GSO_BYTES_MAX: usize = 65_000;

/// Reusable receive buffers and headers.
pub struct Receiver {
    buffers: Vec<u8>,
    headers: MultiHeaders<SockaddrStorage>,
    /// Whether the socket stamps datagrams (`SO_TIMESTAMPNS`) and the headers carry room
    /// for the stamp.
    stamps: bool,
    received: Vec<(usize, Option<SocketAddr>, Option<Duration>)>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("buffers", &RECV_BATCH)
            .field("stamps", &self.stamps)
            .finish_non_exhaustive()
    }
}

impl Receiver {
    /// Buffers for a socket; with `stamps`, room for the kernel's receive timestamp of each
    /// datagram (the socket must have `SO_TIMESTAMPNS` set).
    pub fn new(stamps: bool) -> Self {
        Self {
            buffers: vec![0; RECV_BATCH * DATAGRAM_BYTES_MAX],
            headers: Self::headers(stamps),
            stamps,
            received: Vec::with_capacity(RECV_BATCH),
        }
    }

    fn headers(stamps: bool) -> MultiHeaders<SockaddrStorage> {
        MultiHeaders::preallocate(RECV_BATCH, stamps.then(|| nix::cmsg_space!(TimeSpec)))
    }

    /// Takes what is waiting on `fd` (at most [`RECV_BATCH`] datagrams) without waiting,
    /// and hands each to `each` with its source and, on a stamping socket, the kernel's
    /// receive time (since the Unix epoch). Datagrams longer than [`DATAGRAM_BYTES_MAX`]
    /// (cut short by the kernel) are not handed on; they are counted in
    /// [`Received::truncated`]. `Ok` with nothing received means the socket is empty.
    pub fn receive(
        &mut self,
        fd: RawFd,
        mut each: impl FnMut(SocketAddr, &[u8], Option<Duration>),
    ) -> io::Result<Received> {
        self.received.clear();
        let mut outcome = Received::default();
        {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
                .buffers
                .chunks_exact_mut(DATAGRAM_BYTES_MAX)
                .map(|chunk| [IoSliceMut::new(chunk)])
                .collect();
            let results = match recvmmsg(
                fd,
                &mut self.headers,
                slices.iter_mut().map(|s| &*s),
                MsgFlags::MSG_DONTWAIT,
                None,
            ) {
                Ok(results) => results,
                Err(Errno::EAGAIN) => return Ok(outcome),
                Err(errno) => return Err(errno.into()),
            };
            for message in results {
                if message.flags.contains(MsgFlags::MSG_TRUNC) {
                    outcome.truncated += 1;
                    self.received.push((0, None, None));
                    continue;
                }
                let from = message.address.as_ref().and_then(socket_addr);
                let stamp = message.cmsgs().find_map(|control| match control {
                    ControlMessageOwned::ScmTimestampns(at) => Some(Duration::new(
                        u64::try_from(at.tv_sec()).unwrap_or(0),
                        u32::try_from(at.tv_nsec()).unwrap_or(0),
                    )),
                    _ => None,
                });
                self.received.push((message.bytes, from, stamp));
            }
        }
        if self.stamps && self.received.iter().any(|r| r.2.is_none()) {
            // The kernel shrinks a header's control length to what it wrote, and nix does
            // not reset it: a datagram without a stamp would leave later ones without room.
            self.headers = Self::headers(true);
        }
        for (index, &(len, from, stamp)) in self.received.iter().enumerate() {
            let Some(from) = from else { continue };
            let start = index * DATAGRAM_BYTES_MAX;
            each(from, &self.buffers[start..start + len], stamp);
            outcome.datagrams += 1;
            outcome.bytes += len;
        }
        Ok(outcome)
    }
}

/// What one [`Receiver::receive`] took.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Datagrams handed on.
    pub datagrams: usize,
    pub bytes: usize,
    /// Datagrams too long for the buffers, dropped.
    pub truncated: usize,
}

impl Received {
    /// How many datagrams the call took off the socket (a full batch suggests more wait).
    pub fn took(&self) -> usize {
        self.datagrams + self.truncated
    }
}

/// Reusable send headers, and whether the socket takes GSO sends.
#[derive(Debug)]
pub struct Sender {
    headers: MultiHeaders<SockaddrStorage>,
    addresses: Vec<Option<SockaddrStorage>>,
    gso: bool,
}

impl Default for Sender {
    fn default() -> Self {
        Self::new()
    }
}

/// What one [`Sender::send`] did with the front of the transmits it was given.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Transmits dealt with from the front: sent, or refused by the kernel for good.
    pub consumed: usize,
    /// Datagrams the kernel took, and their bytes.
    pub packets: usize,
    pub bytes: usize,
    /// Transmits the kernel refused (an unreachable or invalid destination); not retried.
    pub refused: usize,
    /// The socket's send buffer is full: `consumed` stops at the first transmit that did not
    /// go, and the caller waits for the socket before sending the rest.
    pub blocked: bool,
}

impl Sender {
    pub fn new() -> Self {
        Self {
            headers: MultiHeaders::preallocate(SEND_BATCH, None),
            addresses: Vec::with_capacity(SEND_BATCH),
            gso: true,
        }
    }

    /// Whether runs of equal-sized transmits to one destination still go out as one GSO
    /// send (it is switched off for good the first time the kernel refuses one).
    pub fn gso(&self) -> bool {
        self.gso
    }

    /// Sends `transmits` in order, batching without waiting, until all are dealt with or the
    /// socket would block.
    pub fn send(&mut self, fd: RawFd, transmits: &[Transmit]) -> Sent {
        let mut sent = Sent::default();
        while sent.consumed < transmits.len() && !sent.blocked {
            let rest = &transmits[sent.consumed..];
            let run = if self.gso { gso_run(rest) } else { 1 };
            if run > 1 {
                self.send_gso(fd, &rest[..run], &mut sent);
            } else {
                // Up to the next GSO run, in one sendmmsg.
                let mut len = 1;
                while len < rest.len().min(SEND_BATCH) && !(self.gso && gso_run(&rest[len..]) > 1) {
                    len += 1;
                }
                self.send_many(fd, &rest[..len], &mut sent);
            }
        }
        sent
    }

    fn send_many(&mut self, fd: RawFd, batch: &[Transmit], sent: &mut Sent) {
        self.addresses.clear();
        self.addresses
            .extend(batch.iter().map(|t| Some(SockaddrStorage::from(t.destination))));
        let slices: Vec<[IoSlice<'_>; 1]> = batch.iter().map(|t| [IoSlice::new(&t.contents)]).collect();
        let no_control: [ControlMessage<'_>; 0] = [];
        match sendmmsg(
            fd,
            &mut self.headers,
            &slices,
            &self.addresses,
            no_control,
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(results) => {
                let mut count = 0;
                for result in results {
                    count += 1;
                    sent.bytes += result.bytes;
                }
                sent.packets += count;
                sent.consumed += count;
                // The first one not taken failed; the next call reports why.
            }
            Err(Errno::EAGAIN) => sent.blocked = true,
            Err(errno) => {
                // The first transmit of the batch cannot go (bad destination, too long):
                // it is dropped, the rest go on.
                tracing::trace!(error = %errno, to = %batch[0].destination, "media send refused");
                sent.refused += 1;
                sent.consumed += 1;
            }
        }
    }

    fn send_gso(&mut self, fd: RawFd, run: &[Transmit], sent: &mut Sent) {
        let segment = run[0].contents.len() as u16;
        let slices: Vec<IoSlice<'_>> = run.iter().map(|t| IoSlice::new(&t.contents)).collect();
        let control = [ControlMessage::UdpGsoSegments(&segment)];
        let to = SockaddrStorage::from(run[0].destination);
        match sendmsg(fd, &slices, &control, MsgFlags::MSG_DONTWAIT, Some(&to)) {
            Ok(bytes) => {
                sent.packets += run.len();
                sent.bytes += bytes;
                sent.consumed += run.len();
            }
            Err(Errno::EAGAIN) => sent.blocked = true,
            Err(errno) => {
                // No GSO here (an old kernel, a device without it): every later run goes
                // out packet by packet, this one included.
                tracing::debug!(error = %errno, "UDP GSO refused; sending datagrams one by one");
                self.gso = false;
            }
        }
    }
}

/// Puts each destination's transmits next to each other, keeping their order per
/// destination (what a peer sees), so that a subscriber's packets of one step can go as one
/// GSO send. Order between destinations carries no meaning.
pub fn group_by_destination(transmits: &mut [Transmit]) {
    transmits.sort_by_key(|t| t.destination);
}

/// How many transmits at the front of `transmits` can go as one GSO send: the same
/// destination, every segment as long as the first, the last possibly shorter.
fn gso_run(transmits: &[Transmit]) -> usize {
    let Some(first) = transmits.first() else {
        return 0;
    };
    let segment = first.contents.len();
    if segment == 0 || segment > DATAGRAM_BYTES_MAX {
        return 1;
    }
    let mut len = 1;
    let mut bytes = segment;
    for next in &transmits[1..] {
        if len == GSO_SEGMENTS_MAX
            || next.destination != first.destination
            || next.contents.is_empty()
            || next.contents.len() > segment
            || bytes + next.contents.len() > GSO_BYTES_MAX
        {
            break;
        }
        len += 1;
        bytes += next.contents.len();
        if next.contents.len() < segment {
            break;
        }
    }
    len
}

fn socket_addr(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    address
        .as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use super::*;

    fn bound() -> UdpSocket {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        socket
    }

    fn transmit(to: &UdpSocket, contents: Vec<u8>) -> Transmit {
        Transmit {
            destination: to.local_addr().unwrap(),
            contents,
        }
    }

    fn read_all(socket: &UdpSocket, count: usize) -> Vec<Vec<u8>> {
        let mut buffer = [0u8; 4096];
        (0..count)
            .map(|_| {
                let (len, _) = socket.recv_from(&mut buffer).unwrap();
                buffer[..len].to_vec()
            })
            .collect()
    }

    #[test]
    fn interleaved_transmits_to_several_peers_all_arrive_in_order() {
        let sender = bound();
        let peers = [bound(), bound(), bound()];
        let transmits: Vec<Transmit> = (0..150u32)
            .map(|i| transmit(&peers[i as usize % 3], i.to_be_bytes().repeat(5 + i as usize % 7)))
            .collect();
        let sent = Sender::new().send(sender.as_raw_fd(), &transmits);
        assert_eq!(sent.consumed, 150);
        assert_eq!(sent.packets, 150);
        assert_eq!(sent.refused, 0);
        assert!(!sent.blocked);
        for (p, peer) in peers.iter().enumerate() {
            let expected: Vec<Vec<u8>> = transmits
                .iter()
                .skip(p)
                .step_by(3)
                .map(|t| t.contents.clone())
                .collect();
            assert_eq!(read_all(peer, expected.len()), expected);
        }
    }

    #[test]
    fn a_frame_to_one_subscriber_goes_as_one_gso_send_and_arrives_as_separate_datagrams() {
        let sender = bound();
        let subscriber = bound();
        let other = bound();
        let mut transmits: Vec<Transmit> = (0..4u8).map(|i| transmit(&subscriber, vec![i; 1100])).collect();
        transmits.push(transmit(&subscriber, vec![9; 300]));
        transmits.push(transmit(&other, vec![7; 1100]));
        assert_eq!(gso_run(&transmits), 5);
        let mut batch = Sender::new();
        let sent = batch.send(sender.as_raw_fd(), &transmits);
        assert_eq!((sent.consumed, sent.packets), (6, 6));
        let got = read_all(&subscriber, 5);
        let expected: Vec<Vec<u8>> = transmits[..5].iter().map(|t| t.contents.clone()).collect();
        assert_eq!(got, expected);
        assert!(batch.gso(), "the kernel refused UDP GSO on loopback");
        assert_eq!(read_all(&other, 1), vec![vec![7; 1100]]);
    }

    #[test]
    fn gso_runs_stop_at_another_destination_a_longer_packet_or_a_short_last_one() {
        let a = bound();
        let b = bound();
        let run = |sizes: &[(usize, &UdpSocket)]| {
            let transmits: Vec<Transmit> = sizes
                .iter()
                .map(|(len, to)| transmit(to, vec![0; *len]))
                .collect();
            gso_run(&transmits)
        };
        assert_eq!(run(&[(100, &a), (100, &a), (100, &b)]), 2);
        assert_eq!(run(&[(100, &a), (120, &a)]), 1);
        assert_eq!(run(&[(100, &a), (50, &a), (50, &a)]), 2);
        assert_eq!(run(&[(100, &a)]), 1);
        assert_eq!(run(&[]), 0);
        let small: Vec<(usize, &UdpSocket)> = (0..100).map(|_| (100, &a)).collect();
        assert_eq!(run(&small), GSO_SEGMENTS_MAX);
        let large: Vec<(usize, &UdpSocket)> = (0..100).map(|_| (1400, &a)).collect();
        assert_eq!(run(&large), GSO_BYTES_MAX / 1400);
    }

    #[test]
    fn a_transmit_the_kernel_refuses_is_dropped_and_the_rest_still_go() {
        let sender = bound();
        let peer = bound();
        let transmits = vec![
            transmit(&peer, vec![1; 10]),
            Transmit {
                destination: "127.0.0.1:0".parse().unwrap(),
                contents: vec![2; 10],
            },
            transmit(&peer, vec![3; 10]),
        ];
        let sent = Sender::new().send(sender.as_raw_fd(), &transmits);
        assert_eq!(sent.consumed, 3);
        assert_eq!(sent.packets, 2);
        assert_eq!(sent.refused, 1);
        assert_eq!(read_all(&peer, 2), vec![vec![1; 10], vec![3; 10]]);
    }

    #[test]
    fn receive_takes_a_batch_with_sources_and_drops_oversized_datagrams() {
        let receiver = bound();
        let peers = [bound(), bound()];
        let to = receiver.local_addr().unwrap();
        for i in 0..40u8 {
            peers[usize::from(i % 2)].send_to(&[i; 20], to).unwrap();
        }
        peers[0].send_to(&vec![0xff; DATAGRAM_BYTES_MAX + 1], to).unwrap();
        let mut batch = Receiver::new(false);
        let mut got = Vec::new();
        let mut truncated = 0;
        for _ in 0..500 {
            if got.len() == 40 && truncated == 1 {
                break;
            }
            let received = batch
                .receive(receiver.as_raw_fd(), |from, bytes, stamp| {
                    assert_eq!(stamp, None);
                    got.push((from, bytes.to_vec()))
                })
                .unwrap();
            assert!(received.took() <= RECV_BATCH);
            truncated += received.truncated;
            if received.took() == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert_eq!(truncated, 1);
        let expected: Vec<(SocketAddr, Vec<u8>)> = (0..40u8)
            .map(|i| (peers[usize::from(i % 2)].local_addr().unwrap(), vec![i; 20]))
            .collect();
        assert_eq!(got, expected);
        let empty = batch
            .receive(receiver.as_raw_fd(), |_, _, _| panic!("nothing waits"))
            .unwrap();
        assert_eq!(empty, Received::default());
    }

    #[test]
    fn a_stamping_socket_hands_on_the_kernels_receive_time_of_every_datagram() {
        let receiver = bound();
        nix::sys::socket::setsockopt(&receiver, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
            .unwrap();
        let peer = bound();
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        for i in 0..(RECV_BATCH as u8 + 8) {
            peer.send_to(&[i; 30], receiver.local_addr().unwrap()).unwrap();
        }
        let mut batch = Receiver::new(true);
        let mut stamps = Vec::new();
        for _ in 0..500 {
            if stamps.len() == RECV_BATCH + 8 {
                break;
            }
            let received = batch
                .receive(receiver.as_raw_fd(), |_, bytes, stamp| {
                    assert_eq!(bytes.len(), 30);
                    stamps.push(stamp.expect("a stamp on every datagram"));
                })
                .unwrap();
            if received.took() == 0 {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert_eq!(stamps.len(), RECV_BATCH + 8, "the second batch is stamped too");
        let after = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert!(
            stamps
                .iter()
                .all(|s| *s >= before - Duration::from_millis(1) && *s <= after)
        );
    }

    #[test]
    fn grouping_keeps_each_destinations_order_and_makes_gso_runs() {
        let peers = [bound(), bound(), bound()];
        // Four packets of a frame, each forwarded to three subscribers in turn.
        let mut transmits: Vec<Transmit> = (0..4u8)
            .flat_map(|packet| peers.iter().map(move |p| (packet, p)))
            .map(|(packet, peer)| transmit(peer, vec![packet; 1100]))
            .collect();
        assert_eq!(gso_run(&transmits), 1);
        group_by_destination(&mut transmits);
        for run in transmits.chunks(4) {
            assert_eq!(gso_run(run), 4);
            let order: Vec<u8> = run.iter().map(|t| t.contents[0]).collect();
            assert_eq!(order, vec![0, 1, 2, 3]);
        }
    }
}
