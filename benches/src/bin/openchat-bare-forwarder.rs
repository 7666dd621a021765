//! `openchat-bare-forwarder`: the physical reference of the load-generator comparison (see
//! `openchat_benches::bare`). Prints `LISTENING <address>` once its socket is bound, then
//! forwards until `--seconds` have passed (or it is killed); prints its counters at the end.
//!
//! ```text
//! openchat-bare-forwarder --listen 127.0.0.1:0 --master 42 --seconds 60
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use openchat_benches::bare::{Forwarder, bind, serve};

/// The longest a forwarder runs.
const SECONDS_MAX: u64 = 3600;

#[derive(Debug, Parser)]
#[command(about = "Bare SRTP forwarder with pre-shared keys (loopback benchmarks only)")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The number peers' keys are derived from (the generator passes its own).
    #[arg(long)]
    master: u64,
    /// How long to run.
    #[arg(long, default_value_t = 600)]
    seconds: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    if args.seconds == 0 || args.seconds > SECONDS_MAX {
        eprintln!("--seconds must be within 1..={SECONDS_MAX}");
        return std::process::ExitCode::from(2);
    }
    let socket = match bind(args.listen) {
        Ok(socket) => socket,
        Err(e) => {
            eprintln!("cannot bind {}: {e}", args.listen);
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = socket.local_addr().map_or(args.listen, |a| a);
    println!("LISTENING {local}");
    let _ = std::io::stdout().flush();
    let mut forwarder = Forwarder::new(args.master);
    let until = Instant::now() + Duration::from_secs(args.seconds);
    let outcome = serve(&socket, &mut forwarder, until);
    eprintln!("{forwarder:?}");
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("forwarder stopped: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
