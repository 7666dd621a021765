//! `openchat-rtc-joiner`: joins a voice channel, streams a file into it, records what
//! others send (WIRE.md §6). Exit codes: 0 after leaving, 1 on a failure, 2 on bad flags.

use openchat::joiner::flags::{Parsed, parse};

fn main() {
    let random = *uuid::Uuid::new_v4().as_bytes();
    let flags = match parse(
        std::env::args(),
        [
            random[0], random[1], random[2], random[3], random[4], random[5], random[6], random[7],
        ],
    ) {
        Parsed::Run(flags) => flags,
        Parsed::Help(text) => {
            println!("{text}");
            return;
        }
        Parsed::Invalid(reason) => {
            eprintln!("invalid flags: {reason}");
            std::process::exit(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("openchat-rtc-joiner: cannot start: {err}");
            std::process::exit(1);
        }
    };
    if let Err(err) = runtime.block_on(openchat::joiner::run::run(*flags)) {
        eprintln!("openchat-rtc-joiner: {err}");
        std::process::exit(1);
    }
}
