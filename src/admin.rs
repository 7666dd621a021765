//! `openchatd admin ...`: operator commands against the configured store.

use std::process::ExitCode;
use std::time::Duration;

use openchat_core::{ServerId, UserUid};
use openchat_storage::queries;

use crate::config::{AdminCommand, Config};
use crate::startup::{EXIT_CONFIG, store_config, store_error};

/// Runs one admin command; prints one line saying what happened.
pub fn run(config: &Config, command: &AdminCommand) -> ExitCode {
    let AdminCommand::GrantOwner { server, user } = command;
    let (Ok(server), Ok(user)) = (ServerId::parse(server.trim()), UserUid::parse(user.trim())) else {
        eprintln!("invalid --server or --user: ids are letters, digits, '_', '-' and '.'");
        return ExitCode::from(EXIT_CONFIG);
    };
    let (storage, thread) = match openchat_storage::start(store_config(config)) {
        Ok(started) => started,
        Err(err) => {
            eprintln!("{}", store_error(config, err));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let result = block_on(storage.run(queries::GrantOwner {
        server: server.clone(),
        owner: user.clone(),
    }));
    drop(storage);
    let _ = thread.shutdown(Duration::from_secs(10));
    match result {
        Ok(record) => {
            println!("{} is now owned by {}", record.id, user);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("grant-owner failed: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the one request on a throwaway current-thread runtime.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    #[allow(clippy::expect_used)]
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("invariant: a current-thread runtime starts whenever the process can create threads");
    runtime.block_on(future)
}
