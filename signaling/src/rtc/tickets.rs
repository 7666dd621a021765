//! Voice state of the front-end: the voice configuration, ticket signing and the replay
//! memory of used tickets, ICE server lists, and the shards (WIRE.md §2.6, §5.1).

use std::sync::{Arc, Mutex};

use openchat_core::UnixSeconds;
use openchat_core::ticket::{ReplayGuard, TicketSigner, turn_credentials};
use openchat_media::ShardSet;
use serde_json::{Value, json};

use super::placement::{OwnedRooms, Registry};
use crate::clock::rfc3339;

/// Used ticket ids remembered at once; beyond this, joins are refused until some expire.
pub const TICKET_IDS_REMEMBERED_MAX: usize = 100_000;
/// Tickets one user may mint per minute.
pub const TICKETS_PER_MINUTE_PER_USER: u32 = 30;

/// TURN REST settings.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub ttl_seconds: i64,
}

/// Voice configuration.
#[derive(Debug, Clone)]
pub struct RtcConfig {
    pub signaling_path: String,
    pub ticket_secret: Vec<u8>,
    pub ticket_ttl_seconds: i64,
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnSettings>,
}

/// Voice state of the front-end: ticket signing and replay memory, and the shards.
#[derive(Debug)]
pub struct RtcState {
    pub config: RtcConfig,
    pub signer: TicketSigner,
    pub replay: Mutex<ReplayGuard>,
    pub shards: Arc<ShardSet>,
    pub ticket_limiter: crate::ratelimit::Limiters,
    /// Cluster mode: the live nodes.
    registry: Mutex<Registry>,
    /// Cluster mode: the rooms this node runs.
    owned: Mutex<OwnedRooms>,
}

impl RtcState {
    pub fn new(config: RtcConfig, shards: Arc<ShardSet>) -> Self {
        Self {
            signer: TicketSigner::new(&config.ticket_secret),
            replay: Mutex::new(ReplayGuard::new(TICKET_IDS_REMEMBERED_MAX)),
            shards,
            ticket_limiter: crate::ratelimit::Limiters::new(
                TICKETS_PER_MINUTE_PER_USER,
                TICKETS_PER_MINUTE_PER_USER,
            ),
            config,
            registry: Mutex::default(),
            owned: Mutex::default(),
        }
    }

    pub fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn owned(&self) -> std::sync::MutexGuard<'_, OwnedRooms> {
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The rooms this node runs with participants, and those that emptied since.
    pub fn owned_rooms(&self) -> (Vec<openchat_core::ChannelId>, Vec<openchat_core::ChannelId>) {
        self.owned().take_state()
    }

    /// The absolute signaling URL for clients: the public origin with `ws`/`wss`.
    pub fn signaling_url(&self, public_base_url: &str) -> String {
        let (scheme, rest) = match public_base_url.split_once("://") {
            Some(("https", rest)) => ("wss", rest),
            Some((_, rest)) => ("ws", rest),
            None => ("ws", public_base_url),
        };
        let host = rest.split('/').next().unwrap_or(rest);
        format!("{scheme}://{host}{}", self.config.signaling_path)
    }

    /// ICE servers for a user: the STUN URLs, and TURN with fresh REST credentials.
    pub fn ice_servers(&self, user: &str, now: UnixSeconds) -> Vec<Value> {
        let mut servers = Vec::new();
        if !self.config.stun_urls.is_empty() {
            servers.push(json!({"urls": self.config.stun_urls, "credential_type": "none"}));
        }
        if let Some(turn) = &self.config.turn {
            let expires_at = now + turn.ttl_seconds;
            let (username, credential) = turn_credentials(&turn.secret, user, expires_at);
            servers.push(json!({
                "urls": turn.urls,
                "username": username,
                "credential": credential,
                "credential_type": "ephemeral",
                "expires_at": rfc3339(expires_at),
            }));
        }
        servers
    }
}
