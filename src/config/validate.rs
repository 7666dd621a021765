//! From strings to a typed [`Config`]: every check, and the one-line error naming the
//! variable at fault.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use openchat_signaling::Limits;
use openchat_signaling::guard::HttpBounds;

use super::{
    Args, ClusterConfig, Config, ConfigError, DEV_TICKET_SECRET, LogFormat, MediaConfig, Secret, SeedMode,
    StoreSelection, TlsPaths, TurnConfig, bad,
};

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

pub(super) fn url_list(var: &'static str, raw: &str, schemes: &[&str]) -> Result<Vec<String>, ConfigError> {
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

/// `OPENCHAT_DATABASE_URL`: embedded SQLite without one, else Postgres.
fn store(args: &Args) -> Result<StoreSelection, ConfigError> {
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
    Ok(store)
}

/// `OPENCHAT_NATS_URL` (with `OPENCHAT_NATS_CREDS_FILE`, `OPENCHAT_NODE_ID`): cluster mode,
/// which needs Postgres as the store of record.
fn cluster(args: &Args, store: &StoreSelection) -> Result<Option<ClusterConfig>, ConfigError> {
    const VAR: &str = "OPENCHAT_NATS_URL";
    let Some(raw) = args
        .nats_url
        .as_deref()
        .map(str::trim)
        .filter(|url| !url.is_empty())
    else {
        if args
            .nats_creds_file
            .as_deref()
            .is_some_and(|f| !f.trim().is_empty())
        {
            return Err(bad(
                "OPENCHAT_NATS_CREDS_FILE",
                "is only used in cluster mode; set OPENCHAT_NATS_URL too",
            ));
        }
        return Ok(None);
    };
    if matches!(store, StoreSelection::Sqlite) {
        return Err(bad(
            VAR,
            "cluster mode needs Postgres as the store of every node; set OPENCHAT_DATABASE_URL \
             (the embedded SQLite store belongs to one node)",
        ));
    }
    let mut shown = Vec::new();
    for url in raw.split(',').map(str::trim) {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(bad(VAR, "each URL must look like nats://host:4222"));
        };
        if !matches!(scheme, "nats" | "tls" | "ws" | "wss") {
            return Err(bad(
                VAR,
                format!("{scheme}:// is not one of nats://, tls://, ws://, wss://"),
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        if host.is_empty() || host.starts_with(':') {
            return Err(bad(VAR, "a URL has no host"));
        }
        shown.push(format!("{scheme}://{host}"));
    }
    let creds_file = match args
        .nats_creds_file
        .as_deref()
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        None => None,
        Some(path) => {
            let path = PathBuf::from(path);
            if !path.is_file() {
                return Err(bad(
                    "OPENCHAT_NATS_CREDS_FILE",
                    format!("{} is not a readable file", path.display()),
                ));
            }
            Some(path)
        }
    };
    let node_id = match args.node_id.as_deref().map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => {
            if !valid_node_id(id) {
                return Err(bad(
                    "OPENCHAT_NODE_ID",
                    format!("{id:?} must be 1-64 of A-Z a-z 0-9 _ -"),
                ));
            }
            id.to_owned()
        }
        None => default_node_id(),
    };
    let drain = Duration::from_secs(parse_u64(
        "OPENCHAT_DRAIN_SECONDS",
        &args.drain_seconds,
        0,
        DRAIN_SECONDS_MAX,
    )?);
    Ok(Some(ClusterConfig {
        nats_url: Secret(raw.to_owned()),
        nats_display: shown.join(","),
        creds_file,
        node_id,
        drain,
    }))
}

/// The longest drain: a Kubernetes grace period of an hour is already unusual.
pub const DRAIN_SECONDS_MAX: u64 = 3600;

pub(super) fn valid_node_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The host name (a pod's name in Kubernetes), made a valid node id.
fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() { "node".to_owned() } else { id }
}

/// The media shards: port base, public address, CPUs and shard count.
fn media(args: &Args, production: bool, warnings: &mut Vec<String>) -> Result<MediaConfig, ConfigError> {
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
    Ok(media)
}

/// TURN: URLs, secret (required with URLs) and credential lifetime.
fn turn(args: &Args) -> Result<Option<TurnConfig>, ConfigError> {
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
    Ok(turn)
}

/// The limits the capabilities document reports.
fn limits(args: &Args) -> Result<Limits, ConfigError> {
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
    Ok(limits)
}

/// Time, rate and count bounds of HTTP connections.
fn http_bounds(args: &Args) -> Result<HttpBounds, ConfigError> {
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
    Ok(http)
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
        let store = store(args)?;
        let cluster = cluster(args, &store)?;

        let media = media(args, production, &mut warnings)?;
        if cluster.is_some() && media.public_ip.is_none() {
            return Err(bad(
                "OPENCHAT_MEDIA_PUBLIC_IP",
                "cluster mode (OPENCHAT_NATS_URL) needs each node's own media address: a call \
                 whose signaling reaches another node is sent to this node's IP",
            ));
        }

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
        let turn = turn(args)?;

        let limits = limits(args)?;

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
        let http = http_bounds(args)?;

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
            cluster,
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
