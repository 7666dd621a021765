//! The glommio driver of a [`ShardCore`]: the only part of the shard that reads the clock or
//! touches a socket. One loop: ask the core for its deadline, send what it wants sent, wait
//! for a command, a datagram or the deadline, read the clock once, hand the input to the
//! core. A receive task feeds datagrams in through a bounded queue.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::{DATAGRAM_BYTES_MAX, DATAGRAM_QUEUE_MAX, Now, ShardCommand, ShardCore, current_cpu};

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

/// Runs `core` until every sender of `commands` is gone. With a media socket, a receive
/// task feeds datagrams in, and the rooms' transmits go out after each step.
pub async fn run(
    mut core: ShardCore,
    commands: flume::Receiver<ShardCommand>,
    socket: Option<glommio::net::UdpSocket>,
) {
    let socket = socket.map(std::rc::Rc::new);
    let (datagram_tx, datagrams) = flume::bounded::<(SocketAddr, Vec<u8>)>(DATAGRAM_QUEUE_MAX);
    if let Some(socket) = socket.clone() {
        let stats = core.stats();
        glommio::spawn_local(async move {
            let mut buffer = vec![0u8; DATAGRAM_BYTES_MAX];
            loop {
                match socket.recv_from(&mut buffer).await {
                    Ok((len, from)) => {
                        if datagram_tx.try_send((from, buffer[..len].to_vec())).is_err() {
                            stats.packets_dropped.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "media socket receive failed");
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        })
        .detach();
    } else {
        drop(datagram_tx);
    }
    let stats = core.stats();
    let mut transmits = Vec::new();
    loop {
        let now = Instant::now();
        let deadline = core.poll_timeout(now);
        core.take_transmits(now, &mut transmits);
        if let Some(socket) = &socket {
            for transmit in transmits.drain(..) {
                match socket.send_to(&transmit.contents, transmit.destination).await {
                    Ok(sent) => {
                        stats.packets_out.fetch_add(1, Ordering::Relaxed);
                        stats.bytes_out.fetch_add(sent as i64, Ordering::Relaxed);
                    }
                    Err(err) => tracing::trace!(error = %err, "media send failed"),
                }
            }
        }
        transmits.clear();
        let wait = deadline.map_or(IDLE_WAIT, |at| at.saturating_duration_since(Instant::now()));
        match next_wake(&commands, &datagrams, socket.is_some(), wait).await {
            Wake::Command(Some(command)) => {
                let now = clock();
                handle(&mut core, now, command);
                while let Ok(command) = commands.try_recv() {
                    handle(&mut core, now, command);
                }
            }
            Wake::Command(None) => break,
            Wake::Datagram((from, contents)) => {
                let now = clock();
                core.handle_datagram(now, from, &contents);
                while let Ok((from, contents)) = datagrams.try_recv() {
                    core.handle_datagram(now, from, &contents);
                }
            }
            Wake::Timer => core.handle_timeout(clock()),
        }
    }
    tracing::info!(shard = core.index(), "shard stopped");
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
    Datagram((SocketAddr, Vec<u8>)),
    Timer,
}

/// Waits for the first of: a command, a datagram, the deadline.
async fn next_wake(
    commands: &flume::Receiver<ShardCommand>,
    datagrams: &flume::Receiver<(SocketAddr, Vec<u8>)>,
    media: bool,
    wait: Duration,
) -> Wake {
    use futures_util::future::{Either, select};
    let command = std::pin::pin!(async { Wake::Command(commands.recv_async().await.ok()) });
    let datagram = std::pin::pin!(async {
        match datagrams.recv_async().await {
            Ok(datagram) if media => Wake::Datagram(datagram),
            _ => std::future::pending().await,
        }
    });
    let timer = std::pin::pin!(async {
        glommio::timer::sleep(wait).await;
        Wake::Timer
    });
    match select(command, select(datagram, timer)).await {
        Either::Left((wake, _)) => wake,
        Either::Right((Either::Left((wake, _)), _)) | Either::Right((Either::Right((wake, _)), _)) => wake,
    }
}
