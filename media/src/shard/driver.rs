//! The glommio driver of a [`ShardCore`]: the only part of the shard that reads the clock or
//! touches a socket. One loop: ask the core for its deadline, send what it wants sent in
//! batches, take what waits on the socket in batches straight into the core (reused
//! buffers, no copies, no queue), and when nothing waits, wait for a command, a datagram or
//! the deadline. The clock is read once per step.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::udp::{RECV_BATCH, Receiver, Sender, group_by_destination};
use super::{Now, ShardCommand, ShardCore, ShardStats, current_cpu};
use crate::sfu::Transmit;

/// Both clocks, read once.
pub fn clock() -> Now {
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    Now::new(Instant::now(), unix)
}

/// How long the loop sleeps when the core has no deadline (a command or a datagram wakes
/// it earlier).
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Receive batches taken in one turn before the loop looks at commands and timers again.
pub const RECV_BATCHES_PER_TURN: usize = 8;

/// The media socket with its reusable batch buffers.
struct Media {
    socket: glommio::net::UdpSocket,
    receiver: Receiver,
    sender: Sender,
    /// The kernel's receive time (since the Unix epoch) of the oldest RTP datagram taken
    /// since RTP copies last went out: what the next copies are measured from.
    waiting_since: Option<Duration>,
    /// Datagrams taken since transmits last went out: with two or more, one subscriber may
    /// have several packets in the step (a video frame), worth grouping for GSO.
    taken_since_send: usize,
}

/// Runs `core` until every sender of `commands` is gone. With a media socket, datagrams
/// are taken in batches straight into the core, and the rooms' transmits go out in batches
/// after each step.
pub async fn run(
    mut core: ShardCore,
    commands: flume::Receiver<ShardCommand>,
    socket: Option<glommio::net::UdpSocket>,
) {
    let mut media = socket.map(|socket| Media {
        socket,
        receiver: Receiver::new(true),
        sender: Sender::new(),
        waiting_since: None,
        taken_since_send: 0,
    });
    let stats = core.stats();
    let mut transmits = Vec::new();
    loop {
        let now = Instant::now();
        let deadline = core.poll_timeout(now);
        core.take_transmits(now, &mut transmits);
        if let Some(media) = &mut media {
            if std::mem::take(&mut media.taken_since_send) >= 2 {
                group_by_destination(&mut transmits);
            }
            let copies = send_all(media, &transmits, &stats).await;
            // Copies went out, or the datagrams forwarded nothing and no room wants time
            // at once (str0m may release queued packets on an immediate timeout).
            if copies > 0 || deadline.is_none_or(|at| at > now) {
                media.waiting_since = None;
            }
        }
        transmits.clear();
        if let Some(media) = &mut media
            && receive(media, &mut core, &stats) > 0
        {
            // Busy: commands and timers get their turn between receive rounds, without
            // waiting.
            let now = clock();
            while let Ok(command) = commands.try_recv() {
                handle(&mut core, now, command);
            }
            if deadline.is_some_and(|at| at <= now.instant) {
                core.handle_timeout(now);
            }
            glommio::yield_if_needed().await;
            continue;
        }
        let wait = deadline.map_or(IDLE_WAIT, |at| at.saturating_duration_since(Instant::now()));
        match next_wake(&commands, media.as_ref().map(|m| &m.socket), wait).await {
            Wake::Command(Some(command)) => {
                let now = clock();
                handle(&mut core, now, command);
                while let Ok(command) = commands.try_recv() {
                    handle(&mut core, now, command);
                }
            }
            Wake::Command(None) => break,
            // The next turn takes what arrived.
            Wake::Readable => {}
            Wake::Timer => core.handle_timeout(clock()),
        }
    }
    tracing::info!(shard = core.index(), "shard stopped");
}

/// Takes up to [`RECV_BATCHES_PER_TURN`] batches off the socket into the core; returns how
/// many datagrams it took.
fn receive(media: &mut Media, core: &mut ShardCore, stats: &ShardStats) -> usize {
    let fd = media.socket.as_raw_fd();
    let mut took = 0;
    let waiting_since = &mut media.waiting_since;
    let taken = &mut media.taken_since_send;
    for _ in 0..RECV_BATCHES_PER_TURN {
        let now = clock();
        match media.receiver.receive(fd, |from, bytes, stamp| {
            if let Some(stamp) = stamp
                && is_rtp(bytes)
            {
                *waiting_since = Some(waiting_since.map_or(stamp, |w| w.min(stamp)));
            }
            *taken += 1;
            core.handle_datagram(now, from, bytes);
        }) {
            Ok(received) => {
                stats
                    .packets_dropped
                    .fetch_add(received.truncated as i64, Ordering::Relaxed);
                took += received.took();
                if received.took() < RECV_BATCH {
                    break;
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "media socket receive failed");
                break;
            }
        }
    }
    took
}

/// Hands every transmit to the kernel in batches; when the socket's send buffer is full,
/// waits for it through glommio with the transmit that did not go, then batches on.
/// Each RTP copy's forwarding delay is recorded, from [`Media::waiting_since`] to the end of
/// the system call that took it (an upper bound when one step forwarded several datagrams).
/// Returns how many RTP copies went out.
async fn send_all(media: &mut Media, transmits: &[Transmit], stats: &ShardStats) -> u64 {
    let fd = media.socket.as_raw_fd();
    let mut done = 0;
    let mut copies = 0;
    let mut last_delay = None;
    let mut record = |sent: &[Transmit], copies: &mut u64| {
        let Some(since) = media.waiting_since else {
            return;
        };
        let rtp = sent.iter().filter(|t| is_rtp(&t.contents)).count() as u64;
        if rtp > 0 {
            let delay = unix_now().saturating_sub(since);
            stats.forward_delay.observe(delay, rtp);
            last_delay = Some(delay);
            *copies += rtp;
        }
    };
    while done < transmits.len() {
        let sent = media.sender.send(fd, &transmits[done..]);
        record(&transmits[done..done + sent.consumed], &mut copies);
        done += sent.consumed;
        stats
            .packets_out
            .fetch_add(sent.packets as i64, Ordering::Relaxed);
        stats.bytes_out.fetch_add(sent.bytes as i64, Ordering::Relaxed);
        stats
            .packets_dropped
            .fetch_add(sent.refused as i64, Ordering::Relaxed);
        if sent.blocked {
            let transmit = &transmits[done];
            match media
                .socket
                .send_to(&transmit.contents, transmit.destination)
                .await
            {
                Ok(bytes) => {
                    record(std::slice::from_ref(transmit), &mut copies);
                    stats.packets_out.fetch_add(1, Ordering::Relaxed);
                    stats.bytes_out.fetch_add(bytes as i64, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::trace!(error = %err, "media send failed");
                    stats.packets_dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            done += 1;
        }
    }
    if let Some(delay) = last_delay {
        stats.forward_delay_last.observe(delay, 1);
    }
    copies
}

/// The wall clock, as the kernel's receive stamps count it.
fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

/// An RTP packet (SRTP keeps the header in the clear): version 2 and not an RTCP packet type
/// (STUN starts with 0-3, DTLS with 20-63).
fn is_rtp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && bytes[0] >> 6 == 2 && !(72..=79).contains(&(bytes[1] & 0x7f))
}

/// Hands a command to the core; a probe is answered here, with the CPU the driver runs on.
fn handle(core: &mut ShardCore, now: Now, command: ShardCommand) {
    match command {
        ShardCommand::Probe { channel, reply } => {
            let _ = reply.try_send(core.probe(&channel, current_cpu()));
        }
        command => core.handle_command(now, command),
    }
}

enum Wake {
    Command(Option<ShardCommand>),
    Readable,
    Timer,
}

/// Waits for the first of: a command, a datagram waiting on the socket, the deadline.
/// Readiness is a one-byte peek, which takes nothing off the socket, so dropping it when
/// another branch wins loses nothing.
async fn next_wake(
    commands: &flume::Receiver<ShardCommand>,
    socket: Option<&glommio::net::UdpSocket>,
    wait: Duration,
) -> Wake {
    use futures_util::future::{Either, select};
    let command = std::pin::pin!(async { Wake::Command(commands.recv_async().await.ok()) });
    let readable = std::pin::pin!(async {
        let Some(socket) = socket else {
            return std::future::pending().await;
        };
        let mut byte = [0u8; 1];
        if let Err(err) = socket.peek_from(&mut byte).await {
            // Let the receive report it, but not in a tight loop.
            tracing::trace!(error = %err, "media socket peek failed");
            glommio::timer::sleep(Duration::from_millis(10)).await;
        }
        Wake::Readable
    });
    let timer = std::pin::pin!(async {
        glommio::timer::sleep(wait).await;
        Wake::Timer
    });
    match select(command, select(readable, timer)).await {
        Either::Left((wake, _)) => wake,
        Either::Right((Either::Left((wake, _)), _)) | Either::Right((Either::Right((wake, _)), _)) => wake,
    }
}
