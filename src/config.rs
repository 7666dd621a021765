//! Configuration: every `OPENCHAT_*` variable of ARCHITECTURE-BRIEF.md §7 as an environment
//! variable and a matching `--flag`, validated once at start-up into a typed [`Config`].
//!
//! clap only collects strings (so `--help` can show every default); [`Config::from_args`]
//! does all validation and names the variable in its one-line error, e.g.
//! `OPENCHAT_HTTP_ADDR: invalid socket address "nonsense"`. The binary exits with code 2.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use openchat_signaling::Limits;
use openchat_signaling::guard::HttpBounds;

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

/// A configuration value that cannot be used. Displays as `VARIABLE: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn bad(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum StoreSelection {
    Sqlite,
    /// Postgres; `display` is the URL without its password, safe to log.
    Postgres {
        config: Box<tokio_postgres::Config>,
        display: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedMode {
    Default,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// A value that must never be printed, not even by `{:?}`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct TlsPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct TurnConfig {
    pub urls: Vec<String>,
    pub secret: Secret,
    pub ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct MediaConfig {
    pub port_base: u16,
    pub public_ip: Option<IpAddr>,
    pub shards: usize,
    /// CPUs the shards are pinned to, one per shard in order.
    pub cpus: Vec<usize>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub http_addr: SocketAddr,
    pub public_base_url: String,
    /// False when `public_base_url` is the default built from the listen port; with port 0
    /// start-up rebuilds it from the port actually bound.
    pub public_base_url_explicit: bool,
    pub signaling_path: String,
    pub join_ticket_ttl: Duration,
    pub join_ticket_secret: Secret,
    pub production: bool,
    /// `OPENCHAT_AUTH=session`: bearer sessions on every authed route (E2EE.md §4).
    pub session_auth: bool,
    pub data_dir: PathBuf,
    pub store: StoreSelection,
    pub media: MediaConfig,
    pub tls: Option<TlsPaths>,
    pub seed: SeedMode,
    pub log_filter: String,
    pub log_format: LogFormat,
    pub stun_urls: Vec<String>,
    pub turn: Option<TurnConfig>,
    pub limits: Limits,
    /// `OPENCHAT_E2EE_SELF_JOIN`: a user may add itself to an e2ee channel.
    pub e2ee_self_join: bool,
    /// Time, rate and count bounds of HTTP connections.
    pub http: HttpBounds,
    /// Things worth a warning once logging is up (valid, but probably not intended).
    pub warnings: Vec<String>,
}

fn parse_u64(var: &'static str, raw: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    let value: u64 = raw
        .trim()
        .parse()
        .map_err(|_| bad(var, format!("{raw:?} is not a whole number")))?;
    if !(min..=max).contains(&value) {
        return Err(bad(var, format!("{value} is outside {min}..={max}")));
    }
    Ok(value)
}

/// `":8080"` (every IPv4 interface, as Go's net/http reads it), `"host:port"` with an IP
/// literal or `localhost`.
pub fn parse_http_addr(raw: &str) -> Result<SocketAddr, ConfigError> {
    const VAR: &str = "OPENCHAT_HTTP_ADDR";
    let invalid = || bad(VAR, format!("invalid socket address {raw:?}"));
    let trimmed = raw.trim();
    if let Some(port) = trimmed.strip_prefix(':') {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = trimmed.strip_prefix("localhost:") {
        let port: u16 = port.parse().map_err(|_| invalid())?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    trimmed.parse().map_err(|_| invalid())
}

fn parse_public_base_url(raw: &str) -> Result<String, ConfigError> {
    const VAR: &str = "OPENCHAT_PUBLIC_BASE_URL";
    let trimmed = raw.trim().trim_end_matches('/');
    let uri: http::Uri = trimmed
        .parse()
        .map_err(|_| bad(VAR, format!("invalid URL {raw:?}")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(bad(VAR, format!("{raw:?} must start with http:// or https://"))),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(bad(VAR, format!("{raw:?} has no host")));
    }
    if uri.query().is_some() || trimmed.contains('#') {
        return Err(bad(VAR, format!("{raw:?} must not have a query or fragment")));
    }
    Ok(trimmed.to_owned())
}

/// A Linux CPU list: `"0-3,8,10-11"`.
pub fn parse_cpu_list(raw: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|part| !part.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (first.trim(), last.trim()),
            None => (part, part),
        };
        let first: usize = first
            .parse()
            .map_err(|_| format!("{part:?} is not a CPU number or range"))?;
        let last: usize = last
            .parse()
            .map_err(|_| format!("{part:?} is not a CPU number or range"))?;
        if first > last || last >= 4096 {
            return Err(format!("{part:?} is not a valid CPU range"));
        }
        for cpu in first..=last {
            if !cpus.contains(&cpu) {
                cpus.push(cpu);
            }
        }
    }
    if cpus.is_empty() {
        return Err(format!("{raw:?} names no CPU"));
    }
    Ok(cpus)
}

/// The CPUs this process may run on (its affinity, as Kubernetes' static CPU manager sets
/// it), read from `/proc/self/status`; all CPUs std can see when that is unreadable.
pub fn allowed_cpus() -> Vec<usize> {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
                .and_then(|list| parse_cpu_list(list.trim()).ok())
        })
        .unwrap_or_else(|| {
            let count = std::thread::available_parallelism().map_or(1, usize::from);
            (0..count).collect()
        })
}

fn url_list(var: &'static str, raw: &str, schemes: &[&str]) -> Result<Vec<String>, ConfigError> {
    let mut urls = Vec::new();
    for url in raw.split(',').map(str::trim).filter(|url| !url.is_empty()) {
        let ok = schemes.iter().any(|scheme| {
            url.strip_prefix(scheme)
                .and_then(|rest| rest.strip_prefix(':'))
                .is_some_and(|rest| !rest.is_empty())
        });
        if !ok {
            return Err(bad(
                var,
                format!("{url:?} must start with one of {}", schemes.join(":, ") + ":"),
            ));
        }
        urls.push(url.to_owned());
    }
    Ok(urls)
}

fn redact_database_url(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => format!("{}:{port}", path.display()),
        })
        .collect();
    format!(
        "postgres://{user}@{}/{}",
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

impl Config {
    /// Validates everything; the first problem found is the error.
    pub fn from_args(args: &Args) -> Result<Self, ConfigError> {
        let mut warnings = Vec::new();
        let http_addr = parse_http_addr(&args.http_addr)?;

        let tls = match (&args.tls_cert, &args.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(TlsPaths {
                cert: cert.into(),
                key: key.into(),
            }),
            (Some(_), None) => {
                return Err(bad(
                    "OPENCHAT_TLS_KEY",
                    "must be set together with OPENCHAT_TLS_CERT",
                ));
            }
            (None, Some(_)) => {
                return Err(bad(
                    "OPENCHAT_TLS_CERT",
                    "must be set together with OPENCHAT_TLS_KEY",
                ));
            }
        };
        let public_base_url_explicit = args
            .public_base_url
            .as_deref()
            .is_some_and(|raw| !raw.trim().is_empty());
        let public_base_url = match &args.public_base_url {
            Some(raw) if !raw.trim().is_empty() => parse_public_base_url(raw)?,
            _ => {
                let scheme = if tls.is_some() { "https" } else { "http" };
                format!("{scheme}://localhost:{}", http_addr.port())
            }
        };

        let signaling_path = args.signaling_path.trim().to_owned();
        if !signaling_path.starts_with('/') || signaling_path.contains(['?', '#', ' ']) {
            return Err(bad(
                "OPENCHAT_SIGNALING_PATH",
                format!("{signaling_path:?} must be an absolute path like /v1/rtc/signaling"),
            ));
        }

        let production = args.env.trim().eq_ignore_ascii_case("production");
        let join_ticket_ttl = Duration::from_secs(parse_u64(
            "OPENCHAT_JOIN_TICKET_TTL_SECONDS",
            &args.join_ticket_ttl_seconds,
            1,
            3600,
        )?);
        let secret = args.join_ticket_secret.clone();
        if secret.len() < 16 {
            return Err(bad("OPENCHAT_JOIN_TICKET_SECRET", "must be at least 16 bytes"));
        }
        if production && secret == DEV_TICKET_SECRET {
            return Err(bad(
                "OPENCHAT_JOIN_TICKET_SECRET",
                "the development default must not be used when OPENCHAT_ENV=production",
            ));
        }

        let data_dir = PathBuf::from(args.data_dir.trim());
        if data_dir.as_os_str().is_empty() {
            return Err(bad("OPENCHAT_DATA_DIR", "must not be empty"));
        }
        let store = match args
            .database_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
        {
            None => StoreSelection::Sqlite,
            Some(url) => {
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(bad(
                        "OPENCHAT_DATABASE_URL",
                        "must start with postgres:// or postgresql://",
                    ));
                }
                let config: tokio_postgres::Config = url
                    .parse()
                    .map_err(|e| bad("OPENCHAT_DATABASE_URL", format!("invalid Postgres URL: {e}")))?;
                let display = redact_database_url(&config);
                StoreSelection::Postgres {
                    config: Box::new(config),
                    display,
                }
            }
        };

        let port_base = parse_u64(
            "OPENCHAT_MEDIA_PORT_BASE",
            &args.media_port_base,
            0,
            u16::MAX.into(),
        )? as u16;
        let public_ip = match args
            .media_public_ip
            .as_deref()
            .map(str::trim)
            .filter(|ip| !ip.is_empty())
        {
            None => None,
            Some(raw) => {
                let ip: IpAddr = raw
                    .parse()
                    .map_err(|_| bad("OPENCHAT_MEDIA_PUBLIC_IP", format!("invalid IP address {raw:?}")))?;
                let routable = match ip {
                    IpAddr::V4(v4) => {
                        !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified())
                    }
                    IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unspecified()),
                };
                if !routable && production {
                    warnings.push(format!(
                        "OPENCHAT_MEDIA_PUBLIC_IP {ip} is not routable from the internet"
                    ));
                }
                Some(ip)
            }
        };
        let allowed = allowed_cpus();
        let cpus = match args
            .media_cpus
            .as_deref()
            .map(str::trim)
            .filter(|cpus| !cpus.is_empty())
        {
            None => allowed.clone(),
            Some(raw) => {
                let cpus = parse_cpu_list(raw).map_err(|e| bad("OPENCHAT_MEDIA_CPUS", e))?;
                if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                    return Err(bad(
                        "OPENCHAT_MEDIA_CPUS",
                        format!("CPU {cpu} is not in this process's affinity {allowed:?}"),
                    ));
                }
                cpus
            }
        };
        let shards = match args
            .shards
            .as_deref()
            .map(str::trim)
            .filter(|shards| !shards.is_empty())
        {
            None => cpus.len(),
            Some(raw) => parse_u64("OPENCHAT_SHARDS", raw, 1, cpus.len() as u64)
                .map_err(|e| bad(e.var, format!("{} (one shard per CPU of {cpus:?})", e.message)))?
                as usize,
        };
        let media = MediaConfig {
            port_base,
            public_ip,
            shards,
            cpus: cpus[..shards].to_vec(),
        };

        let seed = match args.seed.trim() {
            "default" => SeedMode::Default,
            "none" => SeedMode::None,
            other => {
                return Err(bad(
                    "OPENCHAT_SEED",
                    format!("{other:?} is not one of default, none"),
                ));
            }
        };
        let session_auth = match args.auth.trim() {
            "headers" => false,
            "session" => true,
            other => {
                return Err(bad(
                    "OPENCHAT_AUTH",
                    format!("{other:?} is not one of headers, session"),
                ));
            }
        };
        tracing_subscriber::EnvFilter::try_new(args.log.trim())
            .map_err(|e| bad("OPENCHAT_LOG", format!("invalid filter {:?}: {e}", args.log)))?;
        let log_format = match args.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(bad(
                    "OPENCHAT_LOG_FORMAT",
                    format!("{other:?} is not one of text, json"),
                ));
            }
        };

        let stun_urls = url_list("OPENCHAT_STUN_URLS", &args.stun_urls, &["stun", "stuns"])?;
        let turn_urls = url_list("OPENCHAT_TURN_URLS", &args.turn_urls, &["turn", "turns"])?;
        let turn_ttl = Duration::from_secs(parse_u64(
            "OPENCHAT_TURN_TTL_SECONDS",
            &args.turn_ttl_seconds,
            60,
            7 * 86400,
        )?);
        let turn = if turn_urls.is_empty() {
            None
        } else {
            match args.turn_secret.as_deref().filter(|secret| !secret.is_empty()) {
                Some(secret) => Some(TurnConfig {
                    urls: turn_urls,
                    secret: Secret(secret.to_owned()),
                    ttl: turn_ttl,
                }),
                None => {
                    return Err(bad(
                        "OPENCHAT_TURN_SECRET",
                        "is required when OPENCHAT_TURN_URLS is set",
                    ));
                }
            }
        };

        let limits = Limits {
            max_message_bytes: parse_u64("OPENCHAT_MAX_MESSAGE_BYTES", &args.max_message_bytes, 1, 16 << 20)?,
            max_upload_bytes: parse_u64("OPENCHAT_MAX_UPLOAD_BYTES", &args.max_upload_bytes, 1, 1 << 30)?,
            rate_limit_per_minute: parse_u64(
                "OPENCHAT_RATE_LIMIT_PER_MINUTE",
                &args.rate_limit_per_minute,
                1,
                1_000_000,
            )? as u32,
            max_call_participants: parse_u64(
                "OPENCHAT_MAX_CALL_PARTICIPANTS",
                &args.max_call_participants,
                1,
                10_000,
            )? as u32,
        };

        let e2ee_self_join = match args.e2ee_self_join.trim() {
            "true" => true,
            "false" => false,
            other => {
                return Err(bad(
                    "OPENCHAT_E2EE_SELF_JOIN",
                    format!("{other:?} is not one of true, false"),
                ));
            }
        };
        let seconds = |var, raw: &str, max| parse_u64(var, raw, 1, max).map(Duration::from_secs);
        let http = HttpBounds {
            header_read: seconds(
                "OPENCHAT_HTTP_HEADER_TIMEOUT_SECONDS",
                &args.http_header_timeout_seconds,
                300,
            )?,
            body_idle: seconds(
                "OPENCHAT_HTTP_BODY_IDLE_SECONDS",
                &args.http_body_idle_seconds,
                300,
            )?,
            body_min_bytes_per_second: parse_u64(
                "OPENCHAT_HTTP_BODY_MIN_BYTES_PER_SECOND",
                &args.http_body_min_bytes_per_second,
                1,
                1 << 30,
            )?,
            body_total: seconds(
                "OPENCHAT_HTTP_BODY_TIMEOUT_SECONDS",
                &args.http_body_timeout_seconds,
                24 * 3600,
            )?,
            write_stall: seconds(
                "OPENCHAT_HTTP_WRITE_STALL_SECONDS",
                &args.http_write_stall_seconds,
                3600,
            )?,
            connections_per_ip_max: parse_u64(
                "OPENCHAT_HTTP_CONNECTIONS_PER_IP_MAX",
                &args.http_connections_per_ip_max,
                1,
                openchat_core::limits::HTTP_CONNECTIONS_MAX as u64,
            )? as usize,
        };

        Ok(Self {
            http_addr,
            public_base_url,
            public_base_url_explicit,
            signaling_path,
            join_ticket_ttl,
            join_ticket_secret: Secret(secret),
            production,
            session_auth,
            data_dir,
            store,
            media,
            tls,
            seed,
            log_filter: args.log.trim().to_owned(),
            log_format,
            stun_urls,
            turn,
            limits,
            e2ee_self_join,
            http,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["openchatd"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults_validate_to_the_documented_values() {
        let config = Config::from_args(&args(&[])).unwrap();
        assert_eq!(config.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.public_base_url, "http://localhost:8080");
        assert_eq!(config.signaling_path, "/v1/rtc/signaling");
        assert_eq!(config.join_ticket_ttl, Duration::from_secs(60));
        assert!(!config.production);
        assert!(matches!(config.store, StoreSelection::Sqlite));
        assert_eq!(config.media.port_base, 50000);
        assert_eq!(config.seed, SeedMode::Default);
        assert_eq!(config.limits.max_message_bytes, 65536);
        assert_eq!(config.limits.max_upload_bytes, 52_428_800);
        assert_eq!(config.limits.rate_limit_per_minute, 180);
        assert_eq!(config.limits.max_call_participants, 200);
        assert!(config.media.shards >= 1);
        assert!(!config.e2ee_self_join);
        assert_eq!(config.http, HttpBounds::default());
    }

    #[test]
    fn bad_address_names_the_variable_and_the_value() {
        let err = Config::from_args(&args(&["--http-addr", "nonsense"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"OPENCHAT_HTTP_ADDR: invalid socket address "nonsense""#
        );
        assert!(parse_http_addr(":99999").is_err());
        assert_eq!(parse_http_addr("127.0.0.1:0").unwrap().port(), 0);
        assert_eq!(parse_http_addr("[::1]:80").unwrap().port(), 80);
    }

    #[test]
    fn each_invalid_value_names_its_variable() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--join-ticket-ttl-seconds", "0"],
                "OPENCHAT_JOIN_TICKET_TTL_SECONDS",
            ),
            (
                &["--join-ticket-ttl-seconds", "abc"],
                "OPENCHAT_JOIN_TICKET_TTL_SECONDS",
            ),
            (&["--env", "production"], "OPENCHAT_JOIN_TICKET_SECRET"),
            (&["--database-url", "mysql://x"], "OPENCHAT_DATABASE_URL"),
            (&["--media-port-base", "70000"], "OPENCHAT_MEDIA_PORT_BASE"),
            (&["--media-public-ip", "1.2.3"], "OPENCHAT_MEDIA_PUBLIC_IP"),
            (&["--shards", "0"], "OPENCHAT_SHARDS"),
            (&["--shards", "100000"], "OPENCHAT_SHARDS"),
            (&["--media-cpus", "4000-4001"], "OPENCHAT_MEDIA_CPUS"),
            (&["--media-cpus", "x"], "OPENCHAT_MEDIA_CPUS"),
            (&["--tls-cert", "a.pem"], "OPENCHAT_TLS_KEY"),
            (&["--seed", "demo"], "OPENCHAT_SEED"),
            (&["--auth", "magic"], "OPENCHAT_AUTH"),
            (&["--log", "info,[unclosed"], "OPENCHAT_LOG"),
            (&["--log-format", "xml"], "OPENCHAT_LOG_FORMAT"),
            (&["--stun-urls", "http://x"], "OPENCHAT_STUN_URLS"),
            (
                &["--turn-urls", "turn:t.example.org:3478"],
                "OPENCHAT_TURN_SECRET",
            ),
            (&["--max-message-bytes=-1"], "OPENCHAT_MAX_MESSAGE_BYTES"),
            (&["--max-upload-bytes", "0"], "OPENCHAT_MAX_UPLOAD_BYTES"),
            (
                &["--rate-limit-per-minute", "many"],
                "OPENCHAT_RATE_LIMIT_PER_MINUTE",
            ),
            (
                &["--max-call-participants", "0"],
                "OPENCHAT_MAX_CALL_PARTICIPANTS",
            ),
            (&["--public-base-url", "ftp://x"], "OPENCHAT_PUBLIC_BASE_URL"),
            (
                &["--public-base-url", "http://x/?q=1"],
                "OPENCHAT_PUBLIC_BASE_URL",
            ),
            (&["--signaling-path", "v1/rtc"], "OPENCHAT_SIGNALING_PATH"),
            (&["--e2ee-self-join", "yes"], "OPENCHAT_E2EE_SELF_JOIN"),
            (
                &["--http-header-timeout-seconds", "0"],
                "OPENCHAT_HTTP_HEADER_TIMEOUT_SECONDS",
            ),
            (
                &["--http-body-idle-seconds", "x"],
                "OPENCHAT_HTTP_BODY_IDLE_SECONDS",
            ),
            (
                &["--http-body-min-bytes-per-second", "0"],
                "OPENCHAT_HTTP_BODY_MIN_BYTES_PER_SECOND",
            ),
            (
                &["--http-body-timeout-seconds", "0"],
                "OPENCHAT_HTTP_BODY_TIMEOUT_SECONDS",
            ),
            (
                &["--http-write-stall-seconds", "0"],
                "OPENCHAT_HTTP_WRITE_STALL_SECONDS",
            ),
            (
                &["--http-connections-per-ip-max", "0"],
                "OPENCHAT_HTTP_CONNECTIONS_PER_IP_MAX",
            ),
        ];
        for (flags, var) in cases {
            let err = Config::from_args(&args(flags)).unwrap_err();
            assert_eq!(err.var, *var, "{flags:?}: {err}");
            assert!(err.to_string().starts_with(&format!("{var}: ")), "{err}");
        }
    }

    #[test]
    fn tls_switches_the_default_public_url_to_https() {
        let config = Config::from_args(&args(&[
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--http-addr",
            ":8443",
        ]))
        .unwrap();
        assert_eq!(config.public_base_url, "https://localhost:8443");
    }

    #[test]
    fn database_url_is_redacted_for_logs() {
        let config =
            Config::from_args(&args(&["--database-url", "postgres://app:hunter2@db:6543/chat"])).unwrap();
        match config.store {
            StoreSelection::Postgres { display, .. } => {
                assert_eq!(display, "postgres://app@db:6543/chat");
            }
            StoreSelection::Sqlite => panic!("postgres expected"),
        }
        assert!(!format!("{:?}", Secret("hunter2".into())).contains("hunter2"));
    }

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-2,5, 7").unwrap(), vec![0, 1, 2, 5, 7]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("").is_err());
        assert!(!allowed_cpus().is_empty());
    }

    #[test]
    fn urls_lists_accept_their_schemes_only() {
        let urls = url_list("V", " stun:a:3478 ,stuns:b:5349,", &["stun", "stuns"]).unwrap();
        assert_eq!(urls, vec!["stun:a:3478", "stuns:b:5349"]);
        assert!(url_list("V", "stun:", &["stun"]).is_err());
    }
}
