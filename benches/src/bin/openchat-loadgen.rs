//! `openchat-loadgen`: drives openchatd, Janus VideoRoom or the bare forwarder with K publishers and M
//! subscribers over loopback and prints one `RESULT` line per run (see
//! `openchat_benches::loadgen`). Pins itself to `--generator-cpu` and the server to
//! `--server-cpu`. Every run is bounded in time and ends by itself.
//!
//! ```text
//! cargo build --release --bin openchatd -p openchat && \
//! cargo run --release -p openchat-benches --bin openchat-loadgen -- \
//!     --target openchatd --subscribers 100,500,1000 --seconds 10
//! ```

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use openchat_benches::loadgen::{self, Plan, Target, TargetKind, probe::Profile};

#[derive(Debug, Parser)]
#[command(about = "Load generator for openchatd, Janus VideoRoom and the bare forwarder (loopback only)")]
struct Args {
    /// The SFU to drive.
    #[arg(long, value_enum, default_value = "openchatd")]
    target: TargetKind,
    /// Its binary (default: $CARGO_TARGET_DIR/release/openchatd, or /usr/bin/janus).
    #[arg(long)]
    bin: Option<PathBuf>,
    /// Media each publisher sends.
    #[arg(long, value_enum, default_value = "audio")]
    profile: Profile,
    #[arg(long, default_value_t = 1)]
    publishers: u32,
    /// Subscriber counts, one run each (a fresh server per run).
    #[arg(long, value_delimiter = ',', default_value = "100")]
    subscribers: Vec<usize>,
    /// Length of the measured window.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup_seconds: u64,
    #[arg(long, default_value_t = 0)]
    generator_cpu: usize,
    #[arg(long, default_value_t = 1)]
    server_cpu: usize,
    #[arg(long, default_value_t = loadgen::JOIN_CONCURRENCY_DEFAULT)]
    join_concurrency: usize,
    /// Share of subscribers, chosen at random once all are connected, that decrypt and
    /// check every packet and measure delay (at least one); the rest are light receivers
    /// that check the bulk of the media from RTP headers. 1 makes every receiver full.
    #[arg(long, default_value_t = loadgen::FULL_SHARE_DEFAULT)]
    full_share: f64,
    /// Address Janus and its peers use for media (Janus skips loopback interfaces; see
    /// benches/loadgen.sh). openchatd's and the bare forwarder's peers use 127.0.0.1.
    #[arg(long, default_value = "127.0.0.1")]
    media_ip: std::net::IpAddr,
}

/// Sockets per peer (UDP + signaling) plus headroom.
const FILES_PER_SUBSCRIBER: u64 = 4;
const SUBSCRIBERS_MAX: usize = 20_000;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if let Some(bad) = args
        .subscribers
        .iter()
        .find(|n| **n == 0 || **n > SUBSCRIBERS_MAX)
    {
        eprintln!("--subscribers: {bad} is not within 1..={SUBSCRIBERS_MAX}");
        return std::process::ExitCode::from(2);
    }
    if !(1..=16).contains(&args.publishers) {
        eprintln!("--publishers must be within 1..=16");
        return std::process::ExitCode::from(2);
    }
    if !(0.0..=1.0).contains(&args.full_share) {
        eprintln!("--full-share must be within 0..=1");
        return std::process::ExitCode::from(2);
    }
    if args.seconds == 0 || args.seconds > 600 {
        eprintln!("--seconds must be within 1..=600");
        return std::process::ExitCode::from(2);
    }
    let most = args.subscribers.iter().max().copied().unwrap_or(0) as u64;
    let want = most * FILES_PER_SUBSCRIBER + 1024;
    match rlimit::increase_nofile_limit(want) {
        Ok(got) if got >= want => {}
        Ok(got) => {
            eprintln!(
                "the open-file limit is {got}, {want} are needed for {most} subscribers (raise the hard limit: ulimit -Hn)"
            );
            return std::process::ExitCode::from(2);
        }
        Err(e) => eprintln!("warning: cannot raise the open-file limit: {e}"),
    }
    if !core_affinity::set_for_current(core_affinity::CoreId {
        id: args.generator_cpu,
    }) {
        eprintln!("cannot pin the generator to CPU {}", args.generator_cpu);
        return std::process::ExitCode::from(2);
    }
    let bin = args
        .bin
        .clone()
        .unwrap_or_else(|| loadgen::default_bin(args.target));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let _ = loadgen::probe::epoch();
    let mut failed = false;
    for &subscribers in &args.subscribers {
        let plan = Plan {
            profile: args.profile,
            publishers: args.publishers,
            subscribers,
            warmup: Duration::from_secs(args.warmup_seconds),
            measure: Duration::from_secs(args.seconds),
            tail: Duration::from_secs(1),
            join_concurrency: args.join_concurrency,
            full_share: args.full_share,
        };
        eprintln!(
            "run: {} {} x{} publishers, {subscribers} subscribers, {} s",
            args.target.name(),
            args.profile.name(),
            args.publishers,
            args.seconds
        );
        let outcome = runtime.block_on(async {
            let target = Target::start(args.target, &bin, args.server_cpu, &plan, args.media_ip).await?;
            // A run never outlasts its plan by much: joins, window, tail, slack.
            let bound = plan.bound();
            let result = tokio::time::timeout(bound, loadgen::run(&target, args.target, &plan))
                .await
                .unwrap_or_else(|_| Err(format!("the run did not finish within {bound:?}")));
            target.stop().await;
            result
        });
        match outcome {
            Ok(measured) => {
                println!("{}", measured.result_line());
                if measured.generator_bound() {
                    eprintln!(
                        "  discarded: the generator used {:.0} % of its core (limit {:.0} %), so it, not the server, was the bottleneck",
                        measured.generator_cpu * 100.0,
                        loadgen::GENERATOR_CPU_MAX * 100.0
                    );
                }
            }
            Err(e) => {
                eprintln!("run failed: {e}");
                failed = true;
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
