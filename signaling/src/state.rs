//! The front-end's shared state ([`AppState`]), its configuration ([`FrontConfig`]) and a
//! request as a handler sees it ([`Ctx`]).

use std::future::Future;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::Request;
use openchat_core::limits::{AVATAR_BYTES_MAX, JSON_BODY_BYTES_MAX};
use openchat_core::{UnixSeconds, UserUid};
use openchat_storage::queries::{OutboxEvent, Outboxed};
use openchat_storage::{Query, queries};
use openchat_storage::{StorageError, StorageHandle};
use tracing::Instrument;

use crate::blobs::BlobStore;
use crate::body::RequestBody;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::realtime::hub::{Audience, Hub};
use crate::routes::{BodyLimit, Params};

/// Longest a request waits for the storage thread before answering 503.
pub const STORAGE_DEADLINE: Duration = Duration::from_secs(10);
/// Multipart framing allowed on top of the configured message and upload limits.
pub const MULTIPART_OVERHEAD_BYTES: u64 = 64 * 1024;

/// Limits reported in the capabilities document and enforced by the routes that need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_message_bytes: u64,
    pub max_upload_bytes: u64,
    pub rate_limit_per_minute: u32,
    pub max_call_participants: u32,
}

/// Facts about this build, reported by capabilities and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInfo {
    pub version: String,
    pub commit: String,
    pub time: String,
}

/// What the front-end needs from the configuration.
#[derive(Debug, Clone)]
pub struct FrontConfig {
    /// The external origin, without a trailing slash (`https://chat.example.org`).
    pub public_base_url: String,
    /// `OPENCHAT_ENV=production`: identity required, `https_required` advertised.
    pub production: bool,
    /// `OPENCHAT_AUTH=session`: authed routes need a bearer session (E2EE.md §4).
    pub session_auth: bool,
    pub limits: Limits,
    pub build: BuildInfo,
    /// Time and rate bounds of every connection (`OPENCHAT_HTTP_*`).
    pub http: crate::guard::HttpBounds,
    /// `OPENCHAT_E2EE_SELF_JOIN`: a user may add itself to an e2ee channel (any mode).
    pub e2ee_self_join: bool,
}

impl FrontConfig {
    /// The body limit of a route, in bytes.
    pub fn body_limit(&self, limit: BodyLimit) -> u64 {
        match limit {
            BodyLimit::Json => JSON_BODY_BYTES_MAX as u64,
            BodyLimit::Message => {
                self.limits.max_upload_bytes + self.limits.max_message_bytes + MULTIPART_OVERHEAD_BYTES
            }
            BodyLimit::Avatar => AVATAR_BYTES_MAX as u64 + MULTIPART_OVERHEAD_BYTES,
            BodyLimit::Keys => openchat_core::limits::KEY_BODY_BYTES_MAX as u64,
        }
    }
}

/// Shared state of the front-end.
#[derive(Debug)]
pub struct AppState {
    pub config: FrontConfig,
    pub storage: StorageHandle,
    pub metrics: Metrics,
    pub hub: Hub,
    pub blobs: BlobStore,
    pub limiters: Limiters,
    /// Voice; `None` when no shards run (then the RTC routes answer 503).
    pub rtc: Option<crate::rtc::tickets::RtcState>,
    /// Open WebSockets and the shutdown signal they watch.
    pub lifecycle: crate::lifecycle::Lifecycle,
    /// Cluster mode (`OPENCHAT_NATS_URL`); `None` on a single node.
    pub cluster: Option<crate::cluster::Cluster>,
    /// Wakes the outbox relay after a write stored events (cluster mode).
    pub outbox_wake: tokio::sync::Notify,
    /// Cluster mode, after SIGTERM: this node takes no new rooms and keeps its calls a
    /// while (see `rtc::records::drain`).
    pub draining: std::sync::atomic::AtomicBool,
}

/// A committed change's realtime event, built from the change's answer.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub audience: Audience,
    pub payload: serde_json::Value,
}

impl Event {
    /// A typed payload; `None` (logged) if it does not serialise.
    pub fn new(kind: &'static str, audience: Audience, payload: &impl serde::Serialize) -> Option<Self> {
        match serde_json::to_value(payload) {
            Ok(payload) => Some(Self {
                kind,
                audience,
                payload,
            }),
            Err(err) => {
                tracing::error!(kind, error = %err, "event payload did not serialise");
                None
            }
        }
    }

    /// One event as the whole list a change produces (nothing if it does not serialise).
    pub fn only(kind: &'static str, audience: Audience, payload: &impl serde::Serialize) -> Vec<Self> {
        Self::new(kind, audience, payload).into_iter().collect()
    }

    fn into_outbox(self) -> Option<OutboxEvent> {
        let audience = serde_json::to_string(&self.audience);
        let payload = serde_json::to_string(&self.payload);
        match (audience, payload) {
            (Ok(audience), Ok(payload)) => Some(OutboxEvent {
                kind: self.kind.to_owned(),
                audience,
                payload,
            }),
            _ => {
                tracing::error!(kind = self.kind, "event did not serialise for the outbox");
                None
            }
        }
    }
}

impl AppState {
    pub fn new(config: FrontConfig, storage: StorageHandle, metrics: Metrics, blobs: BlobStore) -> Self {
        let per_user = config.limits.rate_limit_per_minute;
        let per_ip = per_user.saturating_mul(crate::ratelimit::PUBLIC_REQUESTS_PER_IP_FACTOR);
        let limiters = Limiters::new(per_user, per_ip);
        Self {
            config,
            storage,
            metrics,
            hub: Hub::new(),
            blobs,
            limiters,
            rtc: None,
            lifecycle: crate::lifecycle::Lifecycle::default(),
            cluster: None,
            outbox_wake: tokio::sync::Notify::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs one storage operation under [`STORAGE_DEADLINE`], timed for `/metrics` and
    /// traced under its name.
    pub async fn run<Q: Query>(&self, query: Q) -> Result<Q::Output, ApiError> {
        self.store(Q::NAME, self.storage.run(query)).await
    }

    /// Runs a write and publishes the events `events` builds from its answer. On one node
    /// they go to the hub once the write committed. In cluster mode they are stored in the
    /// write's own transaction (the outbox) and reach every node's hub through NATS, so an
    /// event can arrive late but is never lost and never doubled.
    pub async fn run_publishing<Q, F>(&self, query: Q, events: F) -> Result<Q::Output, ApiError>
    where
        Q: Query,
        F: FnOnce(&Q::Output) -> Vec<Event> + Send + 'static,
    {
        match &self.cluster {
            None => {
                let output = self.run(query).await?;
                for event in events(&output) {
                    self.hub.deliver_committed(
                        event.kind,
                        event.audience,
                        &event.payload,
                        crate::clock::unix_now(),
                    );
                }
                Ok(output)
            }
            Some(cluster) => {
                let outboxed = Outboxed {
                    query,
                    node_id: cluster.node_id().to_owned(),
                    now: crate::clock::unix_now(),
                    events: Box::new(move |output: &Q::Output| {
                        events(output)
                            .into_iter()
                            .filter_map(Event::into_outbox)
                            .collect()
                    }),
                };
                let output = self.run(outboxed).await?;
                self.outbox_wake.notify_one();
                Ok(output)
            }
        }
    }

    /// Waits for one storage answer under [`STORAGE_DEADLINE`], timing it for `/metrics`.
    async fn store<T>(
        &self,
        op: &'static str,
        request: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, ApiError> {
        let span = tracing::debug_span!("storage", op, micros = tracing::field::Empty);
        async {
            let started = Instant::now();
            let result = match tokio::time::timeout(STORAGE_DEADLINE, request).await {
                Ok(result) => result,
                Err(_) => Err(StorageError::Unavailable(format!(
                    "no answer within {STORAGE_DEADLINE:?}"
                ))),
            };
            let elapsed = started.elapsed();
            self.metrics.observe_storage(op, result.is_ok(), elapsed);
            tracing::Span::current().record("micros", elapsed.as_micros() as u64);
            tracing::debug!(ok = result.is_ok(), "storage job");
            result.map_err(ApiError::from)
        }
        .instrument(span)
        .await
    }

    /// Starts closing every WebSocket: realtime sockets close with 1001; voice rooms tell
    /// their participants that the others left, then close them with 1001.
    pub fn begin_shutdown(&self) {
        self.lifecycle.begin_shutdown();
        if let Some(rtc) = &self.rtc {
            rtc.shards.begin_shutdown();
        }
    }

    pub fn base_url(&self) -> &str {
        &self.config.public_base_url
    }
}

/// One request as a handler sees it: routed, identified, with the clock read once.
#[derive(Debug)]
pub struct Ctx {
    pub now: UnixSeconds,
    pub request: Request<RequestBody>,
    pub params: Params,
    /// Set on authed routes.
    pub identity: Option<Identity>,
    pub peer: IpAddr,
    /// The server address the connection arrived on.
    pub local: Option<IpAddr>,
}

impl Ctx {
    /// The caller's identity (authed routes only).
    pub fn who(&self) -> Result<&Identity, ApiError> {
        self.identity.as_ref().ok_or_else(ApiError::internal)
    }

    pub fn user(&self) -> Result<UserUid, ApiError> {
        self.who().map(|who| who.user_uid.clone())
    }

    /// A path parameter parsed into an id; an impossible id is answered as unknown.
    pub fn id<T>(
        &self,
        name: &str,
        parse: fn(&str) -> Result<T, openchat_core::IdError>,
        not_found: &'static str,
    ) -> Result<T, ApiError> {
        parse(self.params.get(name)).map_err(|_| {
            ApiError::not_found(not_found, format!("{} not found", name.trim_end_matches("_id")))
        })
    }

    /// The query string's pairs.
    pub fn query(&self) -> Vec<(String, String)> {
        crate::routes::form_pairs(self.request.uri().query().unwrap_or(""))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.request.headers().get(name).and_then(|v| v.to_str().ok())
    }
}

/// The live session of a bearer token (stored as its SHA-256 digest).
pub async fn lookup_session(
    state: &AppState,
    token: &str,
    now: UnixSeconds,
) -> Result<Option<openchat_storage::e2ee::SessionRecord>, ApiError> {
    let digest = crate::identity::sha256_hex(token.as_bytes());
    let op = queries::e2ee::Session {
        token_sha256: digest,
        now,
    };
    state.run(op).await
}
