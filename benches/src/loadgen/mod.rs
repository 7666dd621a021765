//! `openchat-loadgen`: K publishers and M subscribers as real WebRTC peers (str0m) over
//! loopback, against a fresh `openchatd` (through its real join ticket and signaling) or a
//! fresh Janus VideoRoom (through its JSON API), pinned to a different CPU than the
//! generator; or, as the physical reference, against the bare forwarder
//! ([`crate::bare`]) with pre-shared SRTP keys instead of ICE and DTLS. Most receivers are
//! light (they count from RTP headers); a random sample decrypts everything (see [`peer`]). Publishers send stamped packets on a fixed schedule; every receiver checks and
//! counts each packet and records its delay. A run's [`Measured`] gives loss, latency
//! percentiles, the server's CPU (its shard thread for openchatd, the whole process for
//! Janus) and the generator's own CPU, printed as one `RESULT` line.
//!
//! Timeline of a run: start the server; connect the publishers; connect the subscribers
//! (at most `join_concurrency` at once) and wait until every one is connected; then the
//! publishers send `warmup` + `measure` + `tail` worth of packets; only packets of the
//! `measure` part are counted, and the CPU is sampled at its two ends.

pub mod bare;
pub mod janus;
pub mod openchatd;
pub mod peer;
pub mod probe;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use str0m::media::MediaKind;
use tokio::sync::watch;

use peer::{Publishing, Receiving, Role, Tally, Window};
use probe::Profile;

/// A peer's signaling side, polled while the peer runs; it ends only when the session is
/// gone, with the reason.
pub type Keep = Pin<Box<dyn Future<Output = String> + Send>>;

/// A peer's whole run, ready to spawn.
pub type Task = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A generator run whose own CPU use is above this share of its core was limited by the
/// generator, not the server: its latency figures say nothing about the server. The media
/// arrives in bursts (every subscriber's copy of a packet at once, every 20 ms), so the
/// generator needs headroom or its own queueing shows up as delay. (Loss is exact either
/// way: every packet is counted, so a busy generator can only lose packets, never invent
/// them.)
pub const GENERATOR_CPU_MAX: f64 = 0.75;
/// Share of subscribers that are full receivers unless told otherwise: enough for a
/// delay distribution from a few dozen receivers at the sizes measured, few enough that
/// the generator's cost is the light path's.
pub const FULL_SHARE_DEFAULT: f64 = 0.05;
/// Subscribers joining at once (signaling and DTLS handshakes in flight).
pub const JOIN_CONCURRENCY_DEFAULT: usize = 32;
/// How long peers may take to connect (ICE + DTLS) once negotiated.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn media_kind(profile: Profile) -> MediaKind {
    match profile {
        Profile::Audio => MediaKind::Audio,
        Profile::Video => MediaKind::Video,
    }
}

/// Which SFU a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    Openchatd,
    Janus,
    /// The bare forwarder (`openchat-bare-forwarder`), the physical reference: pre-shared
    /// SRTP keys, no ICE, DTLS or RTCP.
    Bare,
}

impl TargetKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Openchatd => "openchatd",
            Self::Janus => "janus",
            Self::Bare => "bare",
        }
    }
}

/// A started server.
pub enum Target {
    Openchatd(openchatd::Openchatd),
    Janus(janus::Janus),
    Bare(bare::Bare, std::net::IpAddr),
}

impl Target {
    pub async fn start(
        kind: TargetKind,
        bin: &std::path::Path,
        cpu: usize,
        plan: &Plan,
        media_ip: std::net::IpAddr,
    ) -> Result<Self, String> {
        Ok(match kind {
            TargetKind::Openchatd => Self::Openchatd(
                openchatd::Openchatd::start(bin, cpu, plan.subscribers + plan.publishers as usize + 8)
                    .await?,
            ),
            TargetKind::Janus => Self::Janus(janus::Janus::start(bin, cpu, plan.publishers, media_ip).await?),
            // On loopback, as openchatd's peers (only Janus needs the namespace's address).
            TargetKind::Bare => {
                let ip = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
                Self::Bare(
                    bare::Bare::start(bin, cpu, ip, plan.bound().as_secs() + 60).await?,
                    ip,
                )
            }
        })
    }

    /// The server CPU time counted: the shard thread(s) of openchatd, all of Janus.
    fn cpu(&self) -> Duration {
        match self {
            Self::Openchatd(s) => probe::threads_cpu(s.pid, "openchat-shard"),
            Self::Janus(s) => probe::threads_cpu(s.pid, ""),
            Self::Bare(s, _) => probe::threads_cpu(s.pid, ""),
        }
    }

    /// The server's own forwarding-delay histogram, cumulative `(le, count)` per copy kind
    /// (`each`, `last`), summed over shards; Janus has none.
    async fn forward_delay(&self) -> Option<ForwardDelay> {
        match self {
            Self::Openchatd(s) => s.forward_delay().await,
            Self::Janus(_) | Self::Bare(..) => None,
        }
    }

    /// Connects publisher `plan.index` and returns its run.
    async fn publisher(&self, plan: Publishing, stop: watch::Receiver<bool>) -> Result<Task, String> {
        let (peer, mid, keep) = match self {
            Self::Openchatd(s) => s.publisher(plan.index, plan.profile).await?,
            Self::Janus(s) => s.publisher(plan.index, plan.profile).await?,
            Self::Bare(s, ip) => return s.publisher(*ip, plan, stop).await,
        };
        Ok(Box::pin(peer::run(peer, Role::Publish(plan, mid), keep, stop)))
    }

    /// Connects subscriber `index` and returns its run.
    async fn subscriber(
        &self,
        index: usize,
        plan: Receiving,
        stop: watch::Receiver<bool>,
    ) -> Result<Task, String> {
        let (peer, keep) = match self {
            Self::Openchatd(s) => s.subscriber(index, plan.profile, plan.publishers).await?,
            Self::Janus(s) => s.subscriber(index, plan.profile, plan.publishers).await?,
            Self::Bare(s, ip) => return s.subscriber(*ip, index, plan, stop).await,
        };
        Ok(Box::pin(peer::run(peer, Role::Receive(plan), keep, stop)))
    }

    pub async fn stop(self) {
        match self {
            Self::Openchatd(s) => s.stop().await,
            Self::Janus(s) => s.stop().await,
            Self::Bare(s, _) => s.stop().await,
        }
    }
}

/// Cumulative `(upper bound, count)` buckets of the server's forwarding delay.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ForwardDelay {
    pub each: Vec<(f64, u64)>,
    pub last: Vec<(f64, u64)>,
}

impl ForwardDelay {
    /// Reads `openchat_rtc_forward_delay_seconds_bucket` samples from a `/metrics` text.
    pub fn parse(text: &str) -> Self {
        let mut delay = Self::default();
        let name = "openchat_rtc_forward_delay_seconds_bucket{";
        for line in text.lines().filter(|l| l.starts_with(name)) {
            let Some((labels, value)) = line[name.len()..].split_once("} ") else {
                continue;
            };
            let label = |key: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix("=\"")?.strip_suffix('"'))
            };
            let (Some(copy), Some(le), Ok(count)) = (label("copy"), label("le"), value.trim().parse::<u64>())
            else {
                continue;
            };
            let Ok(le) = le.replace("+Inf", "inf").parse::<f64>() else {
                continue;
            };
            let buckets = match copy {
                "each" => &mut delay.each,
                "last" => &mut delay.last,
                _ => continue,
            };
            // Summed over shards: same bounds, added counts.
            match buckets.iter_mut().find(|(bound, _)| *bound == le) {
                Some(bucket) => bucket.1 += count,
                None => buckets.push((le, count)),
            }
        }
        delay.each.sort_by(|a, b| a.0.total_cmp(&b.0));
        delay.last.sort_by(|a, b| a.0.total_cmp(&b.0));
        delay
    }

    /// What was observed between `earlier` and `self`.
    pub fn since(&self, earlier: &Self) -> Self {
        let minus = |now: &[(f64, u64)], then: &[(f64, u64)]| {
            now.iter()
                .map(|&(le, count)| {
                    let before = then.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
                    (le, count.saturating_sub(before))
                })
                .collect()
        };
        Self {
            each: minus(&self.each, &earlier.each),
            last: minus(&self.last, &earlier.last),
        }
    }
}

/// The `q` quantile of cumulative buckets in milliseconds, `NaN` without observations.
fn quantile_ms(buckets: &[(f64, u64)], q: f64) -> f64 {
    openchat_media::shard::delay::quantile(buckets, q).map_or(f64::NAN, |s| s * 1000.0)
}

/// One run's shape.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile: Profile,
    pub publishers: u32,
    pub subscribers: usize,
    pub warmup: Duration,
    pub measure: Duration,
    /// Sent after the window so late packets of the window still arrive.
    pub tail: Duration,
    pub join_concurrency: usize,
    /// Share of subscribers (at least one) that decrypt and check every packet and measure
    /// delay; the others are light receivers (see [`peer`]).
    pub full_share: f64,
}

impl Plan {
    /// The longest a run of this plan may take: joins, window, tail, slack.
    pub fn bound(&self) -> Duration {
        Duration::from_secs(120)
            + self.warmup
            + self.measure
            + Duration::from_millis(50) * self.subscribers as u32
    }

    fn packets_in(&self, span: Duration) -> u64 {
        let frames = (span.as_secs_f64() / self.profile.frame_interval().as_secs_f64()).round() as u64;
        frames * self.profile.packets_per_frame()
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Measured {
    pub target: TargetKind,
    pub scenario: String,
    pub subscribers: usize,
    pub shard_cores: usize,
    /// Packets the receivers should have got in the window (all of them, summed).
    pub expected: u64,
    pub tally: Tally,
    /// Server CPU seconds per second of the window.
    pub server_cpu: f64,
    /// Generator CPU seconds per second of the window.
    pub generator_cpu: f64,
    /// Time to connect every subscriber.
    pub join_time: Duration,
    /// The server's forwarding delay over the window (openchatd only).
    pub forward_delay: Option<ForwardDelay>,
}

impl Measured {
    pub fn loss_pct(&self) -> f64 {
        if self.expected == 0 {
            return 100.0;
        }
        100.0 * (self.expected.saturating_sub(self.tally.received)) as f64 / self.expected as f64
    }

    /// Whether the generator, not the server, was the limit (the run says nothing then).
    pub fn generator_bound(&self) -> bool {
        self.generator_cpu > GENERATOR_CPU_MAX
    }

    fn percentile_ms(&self, q: f64) -> f64 {
        self.tally.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The line the chart script and BENCHMARKS.md read.
    pub fn result_line(&self) -> String {
        format!(
            "RESULT target={} scenario={} subscribers={} shard_cores={} loss_pct={:.3} p50_ms={:.3} p99_ms={:.3} subscribers_per_core={} server_cpu={:.3} generator_cpu={:.3} duplicates={} damaged={} join_s={:.1} fwd_p50_ms={:.3} fwd_p99_ms={:.3} fwd_last_p99_ms={:.3} full_receivers={} valid={}",
            self.target.name(),
            self.scenario,
            self.subscribers,
            self.shard_cores,
            self.loss_pct(),
            self.percentile_ms(0.50),
            self.percentile_ms(0.99),
            self.subscribers / self.shard_cores.max(1),
            self.server_cpu,
            self.generator_cpu,
            self.tally.duplicates,
            self.tally.damaged,
            self.join_time.as_secs_f64(),
            self.forward_delay
                .as_ref()
                .map_or(f64::NAN, |d| quantile_ms(&d.each, 0.50)),
            self.forward_delay
                .as_ref()
                .map_or(f64::NAN, |d| quantile_ms(&d.each, 0.99)),
            self.forward_delay
                .as_ref()
                .map_or(f64::NAN, |d| quantile_ms(&d.last, 0.99)),
            self.tally.full_receivers,
            !self.generator_bound(),
        )
    }
}

/// Runs one plan against a started target.
pub async fn run(target: &Target, kind: TargetKind, plan: &Plan) -> Result<Measured, String> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let warmup_packets = plan.packets_in(plan.warmup);
    let window = Window {
        first: warmup_packets,
        count: plan.packets_in(plan.measure),
    };
    let total = warmup_packets + window.count + plan.packets_in(plan.tail);
    let mut tasks = Vec::new();
    let publishers_ready = Arc::new(AtomicUsize::new(0));
    for index in 0..plan.publishers {
        let publishing = Publishing {
            index,
            profile: plan.profile,
            packets: total,
            start: start_rx.clone(),
            ready: publishers_ready.clone(),
        };
        tasks.push(tokio::spawn(target.publisher(publishing, stop_rx.clone()).await?));
    }
    // Subscribers join published feeds (Janus refuses a feed whose connection is not up).
    wait_connected(
        &publishers_ready,
        plan.publishers as usize,
        &mut tasks,
        "publishers",
    )
    .await?;
    let ready = Arc::new(AtomicUsize::new(0));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let joining = Instant::now();
    let mut modes = Vec::with_capacity(plan.subscribers);
    let mut joins = futures_util::stream::iter(0..plan.subscribers)
        .map(|index| {
            let full = Arc::new(AtomicBool::new(false));
            modes.push(full.clone());
            let receiving = Receiving {
                profile: plan.profile,
                publishers: plan.publishers,
                window,
                ready: ready.clone(),
                tally: tally.clone(),
                full,
            };
            target.subscriber(index, receiving, stop_rx.clone())
        })
        .buffer_unordered(plan.join_concurrency.max(1));
    let mut joined = 0usize;
    while let Some(result) = joins.next().await {
        let task = result.map_err(|e| format!("subscriber {joined} of {}: {e}", plan.subscribers))?;
        tasks.push(tokio::spawn(task));
        joined += 1;
        if joined % 500 == 0 {
            eprintln!("  {joined} subscribers negotiated");
        }
    }
    drop(joins);
    // Every subscriber connected (ICE + DTLS), within a bound.
    wait_connected(&ready, plan.subscribers, &mut tasks, "subscribers").await?;
    let join_time = joining.elapsed();
    // Which receivers check everything is decided only now, at random.
    for index in sample(
        modes.len(),
        full_count(plan.subscribers, plan.full_share),
        random_seed(),
    ) {
        modes[index].store(true, Ordering::Relaxed);
    }
    let start = Instant::now() + Duration::from_millis(200);
    let _ = start_tx.send(Some(start));
    let frame = plan.profile.frame_interval();
    let at = |packets: u64| start + frame * (packets / plan.profile.packets_per_frame()) as u32;
    tokio::time::sleep_until(at(window.first).into()).await;
    let delay_0 = target.forward_delay().await;
    let (server_0, own_0, t0) = (target.cpu(), probe::own_cpu(), Instant::now());
    tokio::time::sleep_until(at(window.first + window.count).into()).await;
    let (server_1, own_1, t1) = (target.cpu(), probe::own_cpu(), Instant::now());
    let delay_1 = target.forward_delay().await;
    tokio::time::sleep_until(at(total).into()).await;
    // Let the last packets arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    let mut failures = Vec::new();
    for task in tasks {
        match tokio::time::timeout(Duration::from_secs(10), task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => failures.push(e),
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(_) => failures.push("a peer did not stop".into()),
        }
    }
    if let Some(first) = failures.first() {
        eprintln!(
            "  {} peer(s) failed during the run; first: {first}",
            failures.len()
        );
    }
    let seconds = (t1 - t0).as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(Measured {
        target: kind,
        scenario: format!("{}_{}pub", plan.profile.name(), plan.publishers),
        subscribers: plan.subscribers,
        shard_cores: 1,
        expected: window.count * u64::from(plan.publishers) * plan.subscribers as u64,
        tally,
        server_cpu: (server_1.saturating_sub(server_0)).as_secs_f64() / seconds,
        generator_cpu: (own_1.saturating_sub(own_0)).as_secs_f64() / seconds,
        join_time,
        forward_delay: delay_1.zip(delay_0).map(|(end, start)| end.since(&start)),
    })
}

/// How many of `subscribers` are full receivers for a share: at least one, at most all.
pub fn full_count(subscribers: usize, share: f64) -> usize {
    let share = if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ((subscribers as f64 * share).ceil() as usize).clamp(1.min(subscribers), subscribers)
}

/// `count` distinct indices below `len`, chosen uniformly from `seed` (a partial
/// Fisher-Yates shuffle driven by xorshift64*).
pub fn sample(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut indices: Vec<usize> = (0..len).collect();
    let mut state = seed | 1;
    let count = count.min(len);
    for i in 0..count {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let j = i + (r % (len - i) as u64) as usize;
        indices.swap(i, j);
    }
    indices.truncate(count);
    indices
}

/// A seed that differs per run (the standard library's per-process random hash keys).
fn random_seed() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now())
}

/// Waits (at most [`CONNECT_TIMEOUT`]) until `want` peers count as connected.
async fn wait_connected(
    ready: &AtomicUsize,
    want: usize,
    tasks: &mut [tokio::task::JoinHandle<Result<(), String>>],
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while ready.load(Ordering::Relaxed) < want {
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {want} {what} connected within {CONNECT_TIMEOUT:?}",
                ready.load(Ordering::Relaxed)
            ));
        }
        if let Some(failed) = tasks.iter_mut().find(|t| t.is_finished()) {
            let why = match failed.await {
                Ok(Err(e)) => e,
                Ok(Ok(())) => "it stopped".into(),
                Err(e) => e.to_string(),
            };
            return Err(format!("a peer ended before the run started: {why}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Where a target's binary is looked for by default.
pub fn default_bin(kind: TargetKind) -> PathBuf {
    match kind {
        TargetKind::Openchatd => {
            let dir =
                std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
            dir.join("release").join("openchatd")
        }
        TargetKind::Janus => PathBuf::from("/usr/bin/janus"),
        TargetKind::Bare => {
            let dir =
                std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| PathBuf::from("target"), PathBuf::from);
            dir.join("release").join("openchat-bare-forwarder")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_carry_every_field_the_chart_reads() {
        let mut tally = Tally {
            received: 990,
            ..Tally::default()
        };
        for us in [400u64, 500, 600, 700, 5000] {
            tally.latency_us.record(us).unwrap();
        }
        let measured = Measured {
            target: TargetKind::Openchatd,
            scenario: "audio_1pub".into(),
            subscribers: 20,
            shard_cores: 1,
            expected: 1000,
            tally,
            server_cpu: 0.25,
            generator_cpu: 0.9,
            join_time: Duration::from_secs(2),
            forward_delay: Some(ForwardDelay {
                each: vec![(0.0001, 50), (0.001, 100), (f64::INFINITY, 100)],
                last: vec![(0.0001, 0), (0.001, 1), (f64::INFINITY, 1)],
            }),
        };
        let line = measured.result_line();
        for field in [
            "RESULT target=openchatd ",
            "scenario=audio_1pub ",
            "subscribers=20 ",
            "shard_cores=1 ",
            "loss_pct=1.000 ",
            "p50_ms=0.600 ",
            "subscribers_per_core=20 ",
            "valid=false",
        ] {
            assert!(line.contains(field), "{field} missing in {line}");
        }
        assert!(line.contains("p99_ms=5.0"), "{line}");
        // Half the copies under 100 us, all under 1 ms.
        assert!(line.contains(" fwd_p50_ms=0.100 "), "{line}");
        assert!(line.contains(" fwd_p99_ms=0.982 "), "{line}");
    }

    #[test]
    fn full_receivers_are_a_share_of_at_least_one() {
        assert_eq!(full_count(100, 0.05), 5);
        assert_eq!(full_count(10, 0.05), 1, "rounded up");
        assert_eq!(full_count(10, 0.0), 1, "at least one");
        assert_eq!(full_count(10, 1.0), 10);
        assert_eq!(full_count(10, 7.0), 10);
        assert_eq!(full_count(0, 0.5), 0);
    }

    #[test]
    fn samples_are_distinct_in_range_and_differ_by_seed() {
        let a = sample(1000, 50, 1);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 50);
        assert!(sorted.iter().all(|i| *i < 1000));
        assert_ne!(a, sample(1000, 50, 2));
        assert_eq!(sample(3, 10, 5).len(), 3);
        // Every index is chosen sometimes: not always the first ones.
        let mut hit = [false; 20];
        for seed in 0..200 {
            for i in sample(20, 2, seed) {
                hit[i] = true;
            }
        }
        assert!(hit.iter().all(|h| *h), "{hit:?}");
    }

    #[test]
    fn the_window_is_a_whole_number_of_frames() {
        let plan = Plan {
            profile: Profile::Video,
            publishers: 1,
            subscribers: 1,
            warmup: Duration::from_secs(1),
            measure: Duration::from_secs(2),
            tail: Duration::from_millis(500),
            join_concurrency: 1,
            full_share: 1.0,
        };
        assert_eq!(plan.packets_in(Duration::from_secs(1)), 120);
        assert_eq!(plan.packets_in(Duration::from_secs(2)) % 4, 0);
    }

    #[test]
    fn forward_delay_buckets_are_read_from_metrics_summed_over_shards_and_differenced() {
        let text = |n: u64| {
            format!(
                "# TYPE openchat_rtc_forward_delay_seconds histogram\n\
                 openchat_rtc_forward_delay_seconds_bucket{{shard=\"0\",copy=\"each\",le=\"0.0001\"}} {n}\n\
                 openchat_rtc_forward_delay_seconds_bucket{{shard=\"0\",copy=\"each\",le=\"+Inf\"}} {}\n\
                 openchat_rtc_forward_delay_seconds_bucket{{shard=\"1\",copy=\"each\",le=\"0.0001\"}} 1\n\
                 openchat_rtc_forward_delay_seconds_bucket{{shard=\"1\",copy=\"each\",le=\"+Inf\"}} 1\n\
                 openchat_rtc_forward_delay_seconds_bucket{{shard=\"0\",copy=\"last\",le=\"+Inf\"}} 3\n\
                 openchat_rtc_forward_delay_seconds_count{{shard=\"0\",copy=\"each\"}} 99\n",
                n * 2
            )
        };
        let start = ForwardDelay::parse(&text(10));
        assert_eq!(start.each, vec![(0.0001, 11), (f64::INFINITY, 21)]);
        assert_eq!(start.last, vec![(f64::INFINITY, 3)]);
        let window = ForwardDelay::parse(&text(30)).since(&start);
        assert_eq!(window.each, vec![(0.0001, 20), (f64::INFINITY, 40)]);
        assert_eq!(window.last, vec![(f64::INFINITY, 0)]);
    }
}
