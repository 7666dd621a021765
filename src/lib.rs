//! `openchat`: the root package. It is the only place that knows every crate: it turns the
//! configuration into a running process (storage thread, HTTP front-end, later the media
//! shards) and stops it again.
//!
//! Start-up order: validate configuration (exit 2 on a bad value) -> logging -> storage
//! thread (open, migrate; exit 2 if the store cannot be opened) -> first-run seed -> bind
//! the listener (exit 2 if the address is taken) -> serve until SIGTERM/SIGINT.
//! Shutdown order: stop accepting -> finish in-flight requests (bounded) -> stop the storage
//! thread, which closes the database cleanly.
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `config`, `joiner::flags`, `joiner::stream`: configuration and the sans-IO parts
//! 2. `logging`, `tls`, `joiner::signal`: logging, TLS set-up, the joiner's ticket and socket
//! 3. `joiner::webrtc`, `startup`
//! 4. `joiner`, `joiner::run`, `admin`: the joiner's shell, the admin commands

pub mod admin;
pub mod config;
pub mod joiner;
pub mod logging;
pub mod startup;
pub mod tls;

/// Version, commit and build time of this binary.
pub fn build_info() -> openchat_signaling::BuildInfo {
    openchat_signaling::BuildInfo {
        version: env!("OPENCHAT_BUILD_VERSION").to_owned(),
        commit: env!("OPENCHAT_BUILD_COMMIT").to_owned(),
        time: env!("OPENCHAT_BUILD_TIME").to_owned(),
    }
}
