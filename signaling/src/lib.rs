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

pub mod blobs;
pub mod capabilities;
pub mod dto;
pub mod error;
pub mod guard;
pub mod lifecycle;
pub mod metrics;
pub mod openapi;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod rtc;
pub mod server;
pub mod service;
pub mod upload;
pub mod websocket;
pub mod wire;

mod handlers;

pub use error::ApiError;
pub use server::{ServeError, serve};
pub use service::{AppState, BuildInfo, FrontConfig, Limits};
