//! Starting the shards and routing channels to them.

use std::sync::Arc;

use openchat_core::ChannelId;

use crate::shard::{SHARD_IO_MEMORY_BYTES, SHARD_QUEUE_MAX, Shard, ShardCommand, ShardStats};

/// Why the shards could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "cannot start media shard {shard} on CPU {cpu}: {reason}; glommio needs io_uring (allow it in the \
         container's seccomp profile) and locked memory (raise `ulimit -l`, e.g. to unlimited)"
    )]
    Start {
        shard: usize,
        cpu: usize,
        reason: String,
    },
    #[error("no CPUs were given for the media shards")]
    NoCpus,
}

/// The running shards.
#[derive(Debug)]
pub struct ShardSet {
    senders: Vec<flume::Sender<ShardCommand>>,
    stats: Vec<Arc<ShardStats>>,
    cpus: Vec<usize>,
    threads: Vec<std::thread::JoinHandle<()>>,
    media_addrs: Vec<std::net::SocketAddr>,
}

/// Where the shards' media sockets listen and what address they advertise.
#[derive(Debug, Clone, Copy)]
pub struct MediaNet {
    /// Shard k binds `port_base + k`; 0 means an ephemeral port per shard.
    pub port_base: u16,
    /// The IP in the ICE candidates (the bound address is every interface); `None`: the
    /// address each participant's signaling connection arrived on (127.0.0.1 without one).
    pub public_ip: Option<std::net::IpAddr>,
}

/// Binds shard `index`'s UDP socket. glommio sets SO_REUSEPORT, which would silently share
/// a port another process holds, so a fixed port is first probed without it.
fn bind_media(
    media: MediaNet,
    index: usize,
) -> Result<(glommio::net::UdpSocket, std::net::SocketAddr), String> {
    let port = if media.port_base == 0 {
        0
    } else {
        let port = u32::from(media.port_base) + index as u32;
        let port = u16::try_from(port).map_err(|_| format!("media port {port} is out of range"))?;
        std::net::UdpSocket::bind(("0.0.0.0", port))
            .map_err(|e| format!("UDP port {port} is not available: {e}"))?;
        port
    };
    let socket = glommio::net::UdpSocket::bind(("0.0.0.0", port))
        .map_err(|e| format!("cannot bind UDP port {port}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let ip = media
        .public_ip
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    Ok((socket, std::net::SocketAddr::new(ip, local.port())))
}

impl ShardSet {
    /// Starts one shard per CPU in `cpus` (shard k pinned to `cpus[k]`); each room holds at
    /// most `participants_max` participants. Returns once every shard runs, or the first
    /// shard's failure to start.
    pub fn start(
        cpus: &[usize],
        participants_max: usize,
        media: Option<MediaNet>,
    ) -> Result<Self, ShardError> {
        if cpus.is_empty() {
            return Err(ShardError::NoCpus);
        }
        let mut set = Self {
            senders: Vec::new(),
            stats: Vec::new(),
            cpus: cpus.to_vec(),
            threads: Vec::new(),
            media_addrs: Vec::new(),
        };
        for (index, cpu) in cpus.iter().copied().enumerate() {
            let (tx, rx) = flume::bounded(SHARD_QUEUE_MAX);
            let stats = Arc::new(ShardStats::default());
            let shard = Shard::new(index, participants_max, stats.clone());
            let (ready_tx, ready_rx) =
                std::sync::mpsc::sync_channel::<Result<Option<std::net::SocketAddr>, String>>(1);
            let thread = std::thread::Builder::new()
                .name(format!("openchat-shard-{index}"))
                .spawn(move || {
                    let executor = glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(cpu))
                        .name(&format!("openchat-shard-{index}"))
                        .io_memory(SHARD_IO_MEMORY_BYTES)
                        .make();
                    match executor {
                        Ok(executor) => executor.run(async move {
                            let Some(media) = media else {
                                let _ = ready_tx.send(Ok(None));
                                return shard.run(rx, None).await;
                            };
                            match bind_media(media, index) {
                                Ok((socket, advertised)) => {
                                    let _ = ready_tx.send(Ok(Some(advertised)));
                                    shard
                                        .with_media_addr(advertised, media.public_ip.is_some())
                                        .run(rx, Some(socket))
                                        .await;
                                }
                                Err(reason) => {
                                    let _ = ready_tx.send(Err(reason));
                                }
                            }
                        }),
                        Err(err) => {
                            let _ = ready_tx.send(Err(err.to_string()));
                        }
                    }
                })
                .map_err(|e| ShardError::Start {
                    shard: index,
                    cpu,
                    reason: e.to_string(),
                })?;
            match ready_rx.recv() {
                Ok(Ok(addr)) => set.media_addrs.extend(addr),
                Ok(Err(reason)) => {
                    return Err(ShardError::Start {
                        shard: index,
                        cpu,
                        reason,
                    });
                }
                Err(_) => {
                    return Err(ShardError::Start {
                        shard: index,
                        cpu,
                        reason: "the shard thread died".into(),
                    });
                }
            }
            set.senders.push(tx);
            set.stats.push(stats);
            set.threads.push(thread);
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.senders.len()
    }

    pub fn is_empty(&self) -> bool {
        self.senders.is_empty()
    }

    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The shard that owns `channel`.
    pub fn shard_of(&self, channel: &ChannelId) -> usize {
        openchat_core::shard::shard_for(channel, self.senders.len())
    }

    /// The command queue of the shard that owns `channel`.
    pub fn sender(&self, channel: &ChannelId) -> &flume::Sender<ShardCommand> {
        &self.senders[self.shard_of(channel)]
    }

    /// The advertised media address of each shard (empty without media).
    pub fn media_addrs(&self) -> &[std::net::SocketAddr] {
        &self.media_addrs
    }

    /// Per-shard counters, indexed by shard.
    pub fn stats(&self) -> &[Arc<ShardStats>] {
        &self.stats
    }

    /// Stops accepting commands and waits for the shards to finish.
    pub fn shutdown(mut self) {
        self.senders.clear();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
