//! Cluster mode: this node's connection to the NATS server that joins several openchatd
//! nodes (one Postgres) into one community.
//!
//! The connection is made in the background and kept up by the client (reconnecting with
//! backoff forever): a node starts, serves and writes to Postgres while NATS is away, and
//! `/readyz` says whether the connection is up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::collections::HashMap;

use async_nats::jetstream::kv;

/// How long one connection attempt may take.
pub const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request to NATS (a JetStream publish acknowledgement) may take.
pub const NATS_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Commands (publishes, subscriptions) the client queues for its connection; beyond this a
/// publish waits for room instead of growing the queue.
pub const NATS_CLIENT_COMMANDS_MAX: usize = 8192;
/// Subjects are versioned so that nodes of two releases can run side by side during an
/// upgrade: a change of shape gets a new version.
pub const SUBJECT_VERSION: &str = "v1";

/// What connecting needs.
#[derive(Clone)]
pub struct ClusterOptions {
    /// One or more comma-separated server URLs (credentials may be in the URL).
    pub url: String,
    pub creds_file: Option<PathBuf>,
    pub node_id: String,
}

impl std::fmt::Debug for ClusterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterOptions")
            .field("creds_file", &self.creds_file)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

/// Why cluster mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("OPENCHAT_NATS_CREDS_FILE: {0}")]
    Credentials(String),
    #[error("OPENCHAT_NATS_URL: {0}")]
    Connect(String),
}

/// Whether the NATS connection is up right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatsState {
    Connected,
    Disconnected,
}

impl NatsState {
    pub fn as_str(self) -> &'static str {
        match self {
            NatsState::Connected => "connected",
            NatsState::Disconnected => "disconnected",
        }
    }
}

/// This node in the cluster: its name, its NATS connection, and its key-value buckets.
#[derive(Debug, Clone)]
pub struct Cluster {
    node_id: String,
    client: async_nats::Client,
    /// Buckets opened so far, by name (a handful, fixed by the code).
    buckets: Arc<tokio::sync::Mutex<HashMap<String, kv::Store>>>,
}

impl Cluster {
    /// Starts connecting (in the background; a NATS that is down now is retried forever)
    /// and returns at once. Must run inside a tokio runtime.
    pub async fn connect(options: ClusterOptions) -> Result<Self, ClusterError> {
        let connect = match &options.creds_file {
            Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| ClusterError::Credentials(format!("{}: {e}", path.display())))?,
            None => async_nats::ConnectOptions::new(),
        };
        let node = options.node_id.clone();
        let client = connect
            .name(format!("openchatd {}", options.node_id))
            .connection_timeout(NATS_CONNECT_TIMEOUT)
            .request_timeout(Some(NATS_REQUEST_TIMEOUT))
            .client_capacity(NATS_CLIENT_COMMANDS_MAX)
            .retry_on_initial_connect()
            .event_callback(move |event| {
                let node = node.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => tracing::info!(node, "NATS connected"),
                        async_nats::Event::Disconnected => tracing::warn!(node, "NATS disconnected"),
                        other => tracing::info!(node, event = %other, "NATS"),
                    }
                }
            })
            .connect(options.url.as_str())
            .await
            .map_err(|e| ClusterError::Connect(e.to_string()))?;
        Ok(Self {
            node_id: options.node_id,
            client,
            buckets: Arc::default(),
        })
    }

    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    /// A key-value bucket, created (or brought to this release's settings) on first use;
    /// a failure is retried on the next call. Bucket names carry [`SUBJECT_VERSION`].
    pub async fn bucket(&self, config: kv::Config) -> Result<kv::Store, String> {
        let mut buckets = self.buckets.lock().await;
        if let Some(store) = buckets.get(&config.bucket) {
            return Ok(store.clone());
        }
        let name = config.bucket.clone();
        let js = async_nats::jetstream::new(self.client.clone());
        // The bucket's stream, made here rather than by the client's helper so that its
        // duplicate window fits a max age under two minutes (the server refuses a window
        // longer than the max age, and the helper leaves the window at its default).
        let window = if config.max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            config.max_age.min(Duration::from_secs(120))
        };
        let stream = async_nats::jetstream::stream::Config {
            name: format!("KV_{name}"),
            description: Some(config.description),
            subjects: vec![format!("$KV.{name}.>")],
            max_messages_per_subject: config.history.max(1),
            max_bytes: if config.max_bytes == 0 {
                -1
            } else {
                config.max_bytes
            },
            max_age: config.max_age,
            max_message_size: config.max_value_size,
            storage: config.storage,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: async_nats::jetstream::stream::DiscardPolicy::New,
            duplicate_window: window,
            ..Default::default()
        };
        js.create_or_update_stream(stream)
            .await
            .map_err(|e| e.to_string())?;
        let store = js.get_key_value(&name).await.map_err(|e| e.to_string())?;
        buckets.insert(name, store.clone());
        Ok(store)
    }

    pub fn state(&self) -> NatsState {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => NatsState::Connected,
            _ => NatsState::Disconnected,
        }
    }
}
