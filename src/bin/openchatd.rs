//! `openchatd`: the OpenChat server. See `openchatd --help` and README.md.

use std::process::ExitCode;

use clap::Parser;
use openchat::config::{Args, Command, Config};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Args::parse();
    match Config::from_args(&args) {
        Ok(config) => match args.command {
            Some(Command::Admin(command)) => openchat::admin::run(&config, &command),
            None => openchat::startup::run(config),
        },
        Err(err) => {
            eprintln!("{err}");
            ExitCode::from(openchat::startup::EXIT_CONFIG)
        }
    }
}
