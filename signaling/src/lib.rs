//! `openchat-signaling`: the HTTP front-end of openchatd (hyper on tokio).
//!
//! Contract:
//! - [`serve`] accepts connections on a bound listener (plain TCP, or TLS when given a
//!   rustls acceptor) until its shutdown future resolves, then stops accepting and lets
//!   in-flight requests finish, bounded by a grace period.
//! - Every request goes through one shell ([`service::handle`]): it reads the clock once,
//!   answers `OPTIONS` with 204, enforces the route's body limit, routes with the pure
//!   [`routes::route`], runs the handler, maps any [`ApiError`] to the flat JSON error
//!   envelope, adds the CORS headers of WIRE.md §1.3 to every response (errors included)
//!   and records metrics. Handlers never see hyper's connection machinery.
//! - All state lives elsewhere: the front-end reaches the database only through a
//!   [`StorageHandle`](openchat_storage::StorageHandle), with a deadline on every call.
//! - Errors are mapped to status codes in exactly one place: [`error`].
//!
//! Layers, bottom first: a module uses only modules of its own layer or below, and no
//! imports go in a circle (`tests/tidy.rs` checks both).
//! 1. `error`, `guard`, `lifecycle`, `metrics`, `ratelimit`, `redact`, `clock`, `identity`, `routes`, `cluster`:
//!    errors, connection bounds, socket lifecycle, metrics, rate limits, log
//!    redaction, the clock, identity headers and their derivation, route table and query
//!    pairs, this node's NATS connection in cluster mode
//! 2. `body`, `dto`, `blobs`, `upload`, `websocket`: bodies, response shapes, the blob
//!    store, multipart reading, the WebSocket upgrade
//! 3. `realtime::hub`, `realtime::roster`, `rtc::placement`, `rtc::tickets`: the realtime hub, the other nodes' sockets, room placement, voice tickets and shards
//! 4. `state`: the shared state and a request as handlers see it
//! 5. `capabilities`, `realtime`, `rtc`: the capabilities document, the realtime and
//!    signaling sockets
//! 6. `handlers`: the routes' handlers
//! 7. `openapi`: the document of the handlers
//! 8. `service`, `server`: the request shell and the accept loop

pub mod blobs;
pub mod body;
pub mod capabilities;
pub mod clock;
pub mod cluster;
pub mod dto;
pub mod error;
pub mod guard;
pub mod identity;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod realtime;
pub mod redact;
pub mod routes;
pub mod rtc;
pub mod server;
pub mod service;
pub mod state;
pub mod upload;
pub mod websocket;

mod handlers;

pub use error::ApiError;
pub use server::{ServeError, serve};
pub use state::{AppState, BuildInfo, FrontConfig, Limits};
