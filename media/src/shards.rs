//! Starting the shards and routing channels to them.

use std::sync::Arc;

use openchat_core::ChannelId;

use crate::shard::{SHARD_IO_MEMORY_BYTES, SHARD_QUEUE_MAX, ShardCommand, ShardCore, ShardStats, driver};

/// glommio refuses to build an executor below this soft `RLIMIT_MEMLOCK` (its reactor checks
/// it before creating the io_uring rings).
pub const MEMLOCK_MIN_BYTES: u64 = 512 * 1024;

/// Why the shards could not start. Each variant names the cause and the fix an operator can
/// apply; [`ShardError::variable`] names the configuration variable closest to it.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {soft_kib} KiB (hard limit {hard_kib} KiB) and the \
         media shards need at least {need_kib} KiB (glommio's io_uring reactor): raise it with `ulimit -l` \
         (systemd: LimitMEMLOCK=, docker run --ulimit memlock=-1, Kubernetes: the container runtime's \
         default ulimits on the node)",
        soft_kib = soft / 1024,
        hard_kib = hard / 1024,
        need_kib = need / 1024
    )]
    LockedMemory { soft: u64, hard: u64, need: u64 },
    #[error(
        "cannot start the media shards: io_uring is not permitted ({reason}); a seccomp \
         profile that blocks io_uring_setup (container runtimes' default profiles do) or the sysctl \
         kernel.io_uring_disabled denies it: run with a seccomp profile that allows io_uring (Kubernetes: \
         seccompProfile Unconfined, or the chart's Localhost profile)"
    )]
    IoUringDenied { reason: String },
    #[error("cannot start media shard {shard} on CPU {cpu}: {reason}")]
    Start {
        shard: usize,
        cpu: usize,
        reason: String,
    },
    #[error("media shard {shard}: {reason}")]
    MediaPort { shard: usize, reason: String },
    #[error("no CPUs were given for the media shards")]
    NoCpus,
}

impl ShardError {
    /// The configuration variable an operator looks at first for this failure.
    pub fn variable(&self) -> &'static str {
        match self {
            Self::MediaPort { .. } => "OPENCHAT_MEDIA_PORT_BASE",
            Self::LockedMemory { .. } | Self::IoUringDenied { .. } => "OPENCHAT_SHARDS",
            Self::Start { .. } | Self::NoCpus => "OPENCHAT_MEDIA_CPUS",
        }
    }
}

/// Raises the soft `RLIMIT_MEMLOCK` to the hard limit when it is below what the shards need
/// (no privilege is needed for that), and refuses with [`ShardError::LockedMemory`] when even
/// the hard limit is too low. Returns the soft limit now in force.
pub fn ensure_locked_memory(shards: usize) -> Result<u64, ShardError> {
    use rlimit::Resource;
    let need = MEMLOCK_MIN_BYTES.max(shards as u64 * SHARD_IO_MEMORY_BYTES as u64);
    let (soft, hard) = Resource::MEMLOCK.get().map_err(|e| ShardError::Start {
        shard: 0,
        cpu: 0,
        reason: format!("cannot read RLIMIT_MEMLOCK: {e}"),
    })?;
    if soft >= need {
        return Ok(soft);
    }
    if hard >= MEMLOCK_MIN_BYTES && Resource::MEMLOCK.set(hard, hard).is_ok() {
        return Ok(hard);
    }
    Err(ShardError::LockedMemory { soft, hard, need })
}

/// Whether this process holds `CAP_IPC_LOCK` (io_uring then charges no registered buffer
/// against `RLIMIT_MEMLOCK`), read from `/proc/self/status`; `None` when unreadable.
pub fn holds_ipc_lock() -> Option<bool> {
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|line| line.strip_prefix("CapEff:"))?;
    let effective = u64::from_str_radix(hex.trim(), 16).ok()?;
    Some(effective & (1 << CAP_IPC_LOCK) != 0)
}

/// Sets up (and drops) a small io_uring instance, so that a seccomp profile or sysctl that
/// denies io_uring is reported as such: glommio itself panics in its shard thread on it.
pub fn probe_io_uring() -> Result<(), ShardError> {
    io_uring::IoUring::new(2)
        .map(drop)
        .map_err(|e| ShardError::IoUringDenied {
            reason: e.to_string(),
        })
}

/// Sorts a glommio executor's failure to start into the causes an operator can fix.
fn start_error(shard: usize, cpu: usize, err: glommio::GlommioError<()>) -> ShardError {
    use glommio::{GlommioError, ReactorErrorKind};
    const EPERM: i32 = 1;
    const EACCES: i32 = 13;
    const ENOSYS: i32 = 38;
    match err {
        GlommioError::ReactorError(ReactorErrorKind::MemLockLimit(soft, need)) => {
            let hard = rlimit::Resource::MEMLOCK.get().map_or(soft, |(_, hard)| hard);
            ShardError::LockedMemory { soft, hard, need }
        }
        GlommioError::IoError(ref io) if matches!(io.raw_os_error(), Some(EPERM | EACCES | ENOSYS)) => {
            ShardError::IoUringDenied {
                reason: io.to_string(),
            }
        }
        other => ShardError::Start {
            shard,
            cpu,
            reason: other.to_string(),
        },
    }
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

/// Socket buffer asked for in each direction of a media socket: the kernel is the only
/// queue in front of a shard (it takes datagrams in batches straight into its rooms), so it
/// should absorb a burst from many publishers (the kernel caps the size at
/// `net.core.rmem_max` / `wmem_max`).
pub const MEDIA_SOCKET_BUFFER_BYTES: usize = 4 * 1024 * 1024;

/// Binds shard `index`'s UDP socket, on every interface. Made here rather than by
/// `glommio::net::UdpSocket::bind`, which sets SO_REUSEPORT and would silently share a port
/// another process holds.
fn bind_media(
    media: MediaNet,
    index: usize,
) -> Result<(glommio::net::UdpSocket, std::net::SocketAddr), String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let port = if media.port_base == 0 {
        0
    } else {
        let port = u32::from(media.port_base) + index as u32;
        u16::try_from(port).map_err(|_| format!("media port {port} is out of range"))?
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| format!("cannot open a UDP socket: {e}"))?;
    for (what, result) in [
        ("receive", socket.set_recv_buffer_size(MEDIA_SOCKET_BUFFER_BYTES)),
        ("send", socket.set_send_buffer_size(MEDIA_SOCKET_BUFFER_BYTES)),
    ] {
        if let Err(err) = result {
            tracing::warn!(error = %err, "cannot size the media socket's {what} buffer");
        }
    }
    // The kernel stamps each datagram with its receive time (the forwarding-delay metric).
    let socket = std::net::UdpSocket::from(socket);
    if let Err(err) =
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::ReceiveTimestampns, &true)
    {
        tracing::warn!(error = %err, "no receive timestamps on the media socket");
    }
    let socket = Socket::from(socket);
    let any = std::net::SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, port));
    socket
        .bind(&any.into())
        .map_err(|e| format!("UDP port {port} is not available: {e}"))?;
    let socket = glommio::net::UdpSocket::from(socket);
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
        ensure_locked_memory(cpus.len())?;
        probe_io_uring()?;
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
            let shard = ShardCore::new(index, participants_max, stats.clone());
            let (ready_tx, ready_rx) =
                std::sync::mpsc::sync_channel::<Result<Option<std::net::SocketAddr>, ShardError>>(1);
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
                                return driver::run(shard, rx, None).await;
                            };
                            match bind_media(media, index) {
                                Ok((socket, advertised)) => {
                                    let _ = ready_tx.send(Ok(Some(advertised)));
                                    let shard = shard.with_media_addr(advertised, media.public_ip.is_some());
                                    driver::run(shard, rx, Some(socket)).await;
                                }
                                Err(reason) => {
                                    let _ =
                                        ready_tx.send(Err(ShardError::MediaPort { shard: index, reason }));
                                }
                            }
                        }),
                        Err(err) => {
                            let _ = ready_tx.send(Err(start_error(index, cpu, err)));
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
                Ok(Err(err)) => return Err(err),
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
    /// Asks every shard to empty its rooms for a shutdown ([`ShardCommand::Shutdown`]); a
    /// shard whose queue is full is skipped (its sockets still close when the process goes).
    pub fn begin_shutdown(&self) {
        for sender in &self.senders {
            if sender.try_send(ShardCommand::Shutdown).is_err() {
                tracing::warn!("a media shard's queue is full; its rooms are not told of the shutdown");
            }
        }
    }

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
