//! What the operator typed: every flag and its environment variable, as strings (so
//! `--help` shows every default); nothing is validated here.

use clap::Parser;

/// The development default of `OPENCHAT_JOIN_TICKET_SECRET` (WIRE.md §7); refused in
/// production.
pub const DEV_TICKET_SECRET: &str = "dev-insecure-secret-change-me";

/// Command-line flags and environment variables, as strings.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "openchatd",
    version = concat!(env!("OPENCHAT_BUILD_VERSION"), " (", env!("OPENCHAT_BUILD_COMMIT"), ", built ", env!("OPENCHAT_BUILD_TIME"), ")"),
    about = "OpenChat server: chat, end-to-end-encrypted channels and voice, in one binary",
    long_about = None,
)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Listen address for HTTP(S) and WebSocket: "host:port", or ":port" for every IPv4 interface
    #[arg(long, env = "OPENCHAT_HTTP_ADDR", default_value = ":8080")]
    pub http_addr: String,

    /// External origin for absolute URLs [default: http://localhost:<port>, https with TLS]
    #[arg(long, env = "OPENCHAT_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,

    /// Path of the RTC signaling WebSocket
    #[arg(long, env = "OPENCHAT_SIGNALING_PATH", default_value = "/v1/rtc/signaling")]
    pub signaling_path: String,

    /// Lifetime of an RTC join ticket, in seconds (1..=3600)
    #[arg(long, env = "OPENCHAT_JOIN_TICKET_TTL_SECONDS", default_value = "60")]
    pub join_ticket_ttl_seconds: String,

    /// HMAC secret for join tickets (the default is refused in production)
    #[arg(long, env = "OPENCHAT_JOIN_TICKET_SECRET", default_value = DEV_TICKET_SECRET, hide_env_values = true)]
    pub join_ticket_secret: String,

    /// "production" requires identity headers and advertises https_required; anything else is development
    #[arg(long, env = "OPENCHAT_ENV", default_value = "development")]
    pub env: String,

    /// Directory of the embedded store (and of uploads)
    #[arg(long, env = "OPENCHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: String,

    /// Postgres URL (postgres://user@host:port/db); when set, Postgres is the store [default: embedded SQLite]
    #[arg(long, env = "OPENCHAT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// NATS server for cluster mode: several nodes on one Postgres act as one community
    /// (nats://host:4222 or tls://host:4222; user:password in the URL) [default: one node]
    #[arg(long, env = "OPENCHAT_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// NATS credentials file (.creds: JWT and NKey seed) for cluster mode
    #[arg(long, env = "OPENCHAT_NATS_CREDS_FILE")]
    pub nats_creds_file: Option<String>,

    /// This node's name in the cluster (the pod name in Kubernetes) [default: the host name]
    #[arg(long, env = "OPENCHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Cluster mode: on SIGTERM, seconds a node keeps its calls (taking no new rooms) before
    /// closing them; ends early once it has none
    #[arg(long, env = "OPENCHAT_DRAIN_SECONDS", default_value = "20")]
    pub drain_seconds: String,

    /// First UDP port of the media shards (shard k uses base + k); 0 = an ephemeral port per shard
    #[arg(long, env = "OPENCHAT_MEDIA_PORT_BASE", default_value = "50000")]
    pub media_port_base: String,

    /// IP address advertised in media ICE candidates [default: the address a signaling request arrived on]
    #[arg(long, env = "OPENCHAT_MEDIA_PUBLIC_IP")]
    pub media_public_ip: Option<String>,

    /// Number of media shards [default: one per CPU this process may run on]
    #[arg(long, env = "OPENCHAT_SHARDS")]
    pub shards: Option<String>,

    /// CPUs to pin media shards to, e.g. "2-5,8" [default: the process's CPU affinity]
    #[arg(long, env = "OPENCHAT_MEDIA_CPUS")]
    pub media_cpus: Option<String>,

    /// PEM certificate chain; with --tls-key, serve HTTPS and WSS
    #[arg(long, env = "OPENCHAT_TLS_CERT")]
    pub tls_cert: Option<String>,

    /// PEM private key for --tls-cert
    #[arg(long, env = "OPENCHAT_TLS_KEY")]
    pub tls_key: Option<String>,

    /// First-run community: "default" (WIRE.md §1.6, written once on an empty store) or "none"
    #[arg(long, env = "OPENCHAT_SEED", default_value = "default")]
    pub seed: String,

    /// Identity mode: "headers" (trust X-OpenChat-* headers)
    #[arg(long, env = "OPENCHAT_AUTH", default_value = "headers")]
    pub auth: String,

    /// Log filter (tracing EnvFilter syntax, e.g. "info,openchat_storage=debug")
    #[arg(long, env = "OPENCHAT_LOG", default_value = "info")]
    pub log: String,

    /// Log format: "text" or "json"
    #[arg(long, env = "OPENCHAT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    /// STUN URLs handed to clients, comma-separated (stun:host:port)
    #[arg(long, env = "OPENCHAT_STUN_URLS", default_value = "")]
    pub stun_urls: String,

    /// TURN URLs handed to clients with ephemeral credentials, comma-separated (turn:/turns:)
    #[arg(long, env = "OPENCHAT_TURN_URLS", default_value = "")]
    pub turn_urls: String,

    /// Shared secret of the TURN server (TURN REST credentials); required with --turn-urls
    #[arg(long, env = "OPENCHAT_TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Lifetime of TURN credentials, in seconds
    #[arg(long, env = "OPENCHAT_TURN_TTL_SECONDS", default_value = "86400")]
    pub turn_ttl_seconds: String,

    /// Largest message body, in bytes
    #[arg(long, env = "OPENCHAT_MAX_MESSAGE_BYTES", default_value = "65536")]
    pub max_message_bytes: String,

    /// Largest upload, in bytes
    #[arg(long, env = "OPENCHAT_MAX_UPLOAD_BYTES", default_value = "52428800")]
    pub max_upload_bytes: String,

    /// Requests per minute per user
    #[arg(long, env = "OPENCHAT_RATE_LIMIT_PER_MINUTE", default_value = "180")]
    pub rate_limit_per_minute: String,

    /// Participants per voice channel
    #[arg(long, env = "OPENCHAT_MAX_CALL_PARTICIPANTS", default_value = "200")]
    pub max_call_participants: String,

    /// "true" lets a user add itself to an end-to-end-encrypted channel (E2EE.md); any mode
    #[arg(long, env = "OPENCHAT_E2EE_SELF_JOIN", default_value = "false")]
    pub e2ee_self_join: String,

    /// A request's head must arrive within this many seconds (also the idle keep-alive bound)
    #[arg(long, env = "OPENCHAT_HTTP_HEADER_TIMEOUT_SECONDS", default_value = "15")]
    pub http_header_timeout_seconds: String,

    /// Longest gap between two chunks of a request body, and the grace before the minimum rate applies, in seconds
    #[arg(long, env = "OPENCHAT_HTTP_BODY_IDLE_SECONDS", default_value = "10")]
    pub http_body_idle_seconds: String,

    /// Average rate a request body must keep after the grace, in bytes per second
    #[arg(long, env = "OPENCHAT_HTTP_BODY_MIN_BYTES_PER_SECOND", default_value = "1024")]
    pub http_body_min_bytes_per_second: String,

    /// The whole request body must arrive within this many seconds
    #[arg(long, env = "OPENCHAT_HTTP_BODY_TIMEOUT_SECONDS", default_value = "600")]
    pub http_body_timeout_seconds: String,

    /// A response the client reads nothing of for this many seconds closes the connection
    #[arg(long, env = "OPENCHAT_HTTP_WRITE_STALL_SECONDS", default_value = "30")]
    pub http_write_stall_seconds: String,

    /// Open connections one client address may hold (raise it behind a reverse proxy)
    #[arg(long, env = "OPENCHAT_HTTP_CONNECTIONS_PER_IP_MAX", default_value = "256")]
    pub http_connections_per_ip_max: String,
}

/// Operator commands; without one, openchatd serves.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Administer the store this configuration points at (the server may be running).
    #[command(subcommand)]
    Admin(AdminCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AdminCommand {
    /// Make a user the owner of a server (restricting its management to them).
    GrantOwner {
        /// The server id, e.g. srv_harbor
        #[arg(long)]
        server: String,
        /// The user uid, e.g. uid_1a2b3c4d
        #[arg(long)]
        user: String,
    },
}
