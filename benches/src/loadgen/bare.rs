//! The bare-forwarder target (`--target bare`): a fresh `openchat-bare-forwarder` process
//! pinned to the server CPU, and peers that speak its pre-shared-key SRTP (no ICE, DTLS or
//! RTCP): each says hello until acknowledged, then a publisher sends stamped packets on the
//! profile's schedule and a receiver checks what arrives exactly as a str0m receiver does
//! (full receivers decrypt every packet, light ones read headers; see [`super::peer`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncBufReadExt;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::Task;
use super::peer::{Publishing, Receiver, Receiving};
use super::probe::{Profile, Stamp, payload, since_epoch};
use crate::bare::{HELLO_BYTES, PUBLISHER_SSRC_BASE, PeerRole, Psk, RTP_HEADER_BYTES, hello};
use crate::loadgen::peer::{extend_seq, rtp_header, rtp_header_len};

/// How long the forwarder may take to say where it listens.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Hellos a peer sends (one per [`HELLO_INTERVAL`]) before giving up.
const HELLO_TRIES: u32 = 50;
const HELLO_INTERVAL: Duration = Duration::from_millis(200);
/// Largest datagram read.
const DATAGRAM_BYTES_MAX: usize = 2048;
/// Datagrams read per wake-up before other work gets a turn.
const READS_PER_WAKE_MAX: usize = 64;
/// Streams a full receiver keeps rollover state for.
const STREAMS_MAX: usize = 64;

/// A running bare forwarder.
pub struct Bare {
    child: tokio::process::Child,
    pub pid: u32,
    addr: SocketAddr,
    master: u64,
}

impl Bare {
    /// Starts `bin` pinned (with `taskset`) to `cpu`, listening on `ip`.
    pub async fn start(bin: &Path, cpu: usize, ip: std::net::IpAddr, seconds: u64) -> Result<Self, String> {
        let master = {
            use std::hash::BuildHasher;
            std::collections::hash_map::RandomState::new().hash_one(Instant::now())
        };
        let mut child = tokio::process::Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            .arg(bin)
            .args(["--listen", &SocketAddr::new(ip, 0).to_string()])
            .args(["--master", &master.to_string()])
            .args(["--seconds", &seconds.to_string()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {} under taskset: {e}", bin.display()))?;
        let pid = child.id().ok_or("the forwarder exited at once")?;
        let stdout = child.stdout.take().ok_or("no stdout from the forwarder")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(START_TIMEOUT, lines.next_line())
            .await
            .map_err(|_| format!("the forwarder did not start within {START_TIMEOUT:?}"))?
            .map_err(|e| e.to_string())?
            .ok_or("the forwarder exited before listening")?;
        let addr = line
            .strip_prefix("LISTENING ")
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("unexpected first line from the forwarder: {line:?}"))?;
        Ok(Self {
            child,
            pid,
            addr,
            master,
        })
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// A publisher's socket, acknowledged by the forwarder, and its task.
    pub async fn publisher(
        &self,
        ip: std::net::IpAddr,
        plan: Publishing,
        stop: watch::Receiver<bool>,
    ) -> Result<Task, String> {
        let socket = self.greet(ip, PeerRole::Publisher, plan.index).await?;
        let psk = Psk::derive(self.master, PeerRole::Publisher, plan.index);
        plan.ready.fetch_add(1, Ordering::Relaxed);
        Ok(Box::pin(publish(socket, psk, plan, stop)))
    }

    /// A subscriber's socket, acknowledged by the forwarder, and its task.
    pub async fn subscriber(
        &self,
        ip: std::net::IpAddr,
        index: usize,
        plan: Receiving,
        stop: watch::Receiver<bool>,
    ) -> Result<Task, String> {
        let index = u32::try_from(index).map_err(|_| "subscriber index out of range")?;
        let socket = self.greet(ip, PeerRole::Subscriber, index).await?;
        let psk = Psk::derive(self.master, PeerRole::Subscriber, index);
        plan.ready.fetch_add(1, Ordering::Relaxed);
        Ok(Box::pin(receive(socket, psk, plan, stop)))
    }

    /// Says hello until the forwarder echoes it.
    async fn greet(&self, ip: std::net::IpAddr, role: PeerRole, index: u32) -> Result<UdpSocket, String> {
        let socket = UdpSocket::bind((ip, 0)).await.map_err(|e| e.to_string())?;
        socket.connect(self.addr).await.map_err(|e| e.to_string())?;
        let greeting = hello(role, index);
        let mut buf = [0u8; HELLO_BYTES + 1];
        for _ in 0..HELLO_TRIES {
            socket.send(&greeting).await.map_err(|e| e.to_string())?;
            if let Ok(Ok(n)) = tokio::time::timeout(HELLO_INTERVAL, socket.recv(&mut buf)).await
                && buf[..n] == greeting
            {
                return Ok(socket);
            }
        }
        Err(format!("the forwarder did not acknowledge {role:?} {index}"))
    }
}

fn rtp_header_for(profile: Profile, ssrc: u32, seq: u64, time: u32, marker: bool) -> [u8; RTP_HEADER_BYTES] {
    let mut header = [0u8; RTP_HEADER_BYTES];
    header[0] = 0x80;
    let pt = if profile == Profile::Audio { 111 } else { 96 };
    header[1] = pt | if marker { 0x80 } else { 0 };
    header[2..4].copy_from_slice(&(seq as u16).to_be_bytes());
    header[4..8].copy_from_slice(&time.to_be_bytes());
    header[8..12].copy_from_slice(&ssrc.to_be_bytes());
    header
}

async fn publish(
    socket: UdpSocket,
    psk: Psk,
    plan: Publishing,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut start_rx = plan.start;
    let start = loop {
        if let Some(start) = *start_rx.borrow() {
            break start;
        }
        tokio::select! {
            changed = start_rx.changed() => if changed.is_err() { return Ok(()) },
            _ = stop.changed() => return Ok(()),
        }
    };
    let profile = plan.profile;
    let ssrc = PUBLISHER_SSRC_BASE.wrapping_add(plan.index);
    let mut datagram = Vec::with_capacity(DATAGRAM_BYTES_MAX);
    for sent in 0..plan.packets {
        let frame = sent / profile.packets_per_frame();
        let due = start + profile.frame_interval() * frame as u32;
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.changed() => return Ok(()),
        }
        let first = sent % profile.packets_per_frame() == 0;
        let last = (sent + 1) % profile.packets_per_frame() == 0;
        let stamp = Stamp {
            publisher: plan.index,
            seq: sent,
            sent_ns: since_epoch(Instant::now()),
        };
        let time = (frame as u32).wrapping_mul(profile.ticks_per_frame());
        let header = rtp_header_for(profile, ssrc, sent, time, last);
        psk.seal(
            &header,
            &payload(profile, stamp, first),
            (sent >> 16) as u32,
            &mut datagram,
        );
        // A full socket buffer drops the packet, as a network would.
        let _ = socket.try_send(&datagram);
    }
    let _ = stop.wait_for(|stop| *stop).await;
    Ok(())
}

async fn receive(
    socket: UdpSocket,
    psk: Psk,
    plan: Receiving,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut receiver = Receiver::new(&plan);
    let mut highest: Vec<(u32, u64)> = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_BYTES_MAX];
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            received = socket.recv(&mut buf) => {
                let Ok(mut n) = received else { continue };
                let mut reads = 0;
                loop {
                    let datagram = &mut buf[..n];
                    if !receiver.count_light(datagram) {
                        decrypt(&mut receiver, &psk, &mut highest, datagram);
                    }
                    reads += 1;
                    if reads == READS_PER_WAKE_MAX {
                        break;
                    }
                    match socket.try_recv(&mut buf) {
                        Ok(next) => n = next,
                        Err(_) => break,
                    }
                }
            }
        }
    }
    receiver.finish();
    Ok(())
}

/// The full path: rollover from the stream's highest sequence number, decrypt, check.
fn decrypt(receiver: &mut Receiver, psk: &Psk, highest: &mut Vec<(u32, u64)>, datagram: &mut [u8]) {
    let Some((ssrc, seq)) = rtp_header(datagram) else {
        return;
    };
    let (len, header) = (datagram.len(), rtp_header_len(datagram));
    let slot = match highest.iter().position(|(s, _)| *s == ssrc) {
        Some(slot) => slot,
        None if highest.len() < STREAMS_MAX => {
            highest.push((ssrc, u64::from(seq)));
            highest.len() - 1
        }
        None => {
            receiver.damaged();
            return;
        }
    };
    let extended = extend_seq(highest[slot].1, seq);
    match psk.open(datagram, (extended >> 16) as u32) {
        Ok(payload) => {
            highest[slot].1 = highest[slot].1.max(extended);
            let trailer = header.and_then(|h| len.checked_sub(h + payload.len()));
            receiver.decrypted(ssrc, extended, payload, trailer);
        }
        Err(_) => receiver.damaged(),
    }
}
