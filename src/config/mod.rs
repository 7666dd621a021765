//! Configuration: every `OPENCHAT_*` variable of ARCHITECTURE-BRIEF.md §7 as an environment
//! variable and a matching `--flag`, validated once at start-up into a typed [`Config`].
//!
//! clap only collects strings (so `--help` can show every default); [`Config::from_args`]
//! does all validation and names the variable in its one-line error, e.g.
//! `OPENCHAT_HTTP_ADDR: invalid socket address "nonsense"`. The binary exits with code 2.
//!
//! [`args`] holds the flags as typed by the operator; [`validate`] turns them into a
//! [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use openchat_signaling::Limits;
use openchat_signaling::guard::HttpBounds;

pub mod args;
pub mod validate;

pub use args::{AdminCommand, Args, Command, DEV_TICKET_SECRET};
pub use validate::{allowed_cpus, parse_cpu_list, parse_http_addr};

/// A configuration value that cannot be used. Displays as `VARIABLE: what is wrong`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

pub(crate) fn bad(var: &'static str, message: impl Into<String>) -> ConfigError {
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

/// Cluster mode: several nodes on one Postgres and one NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The NATS URL as given (may hold a password: never log it; log `nats_display`).
    pub nats_url: Secret,
    /// The URL without credentials, for logs.
    pub nats_display: String,
    pub creds_file: Option<PathBuf>,
    /// This node's name: `[A-Za-z0-9_-]{1,64}`, so it can be a NATS subject token.
    pub node_id: String,
    /// How long SIGTERM keeps this node's calls before closing them.
    pub drain: Duration,
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
    /// Cluster mode (`OPENCHAT_NATS_URL`); `None` is one node.
    pub cluster: Option<ClusterConfig>,
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

#[cfg(test)]
mod tests {
    use super::validate::{url_list, valid_node_id};
    use super::*;
    use clap::Parser;

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
    fn cluster_mode_needs_postgres_and_names_both_settings() {
        let err = Config::from_args(&args(&["--nats-url", "nats://127.0.0.1:4222"])).unwrap_err();
        assert_eq!(err.var, "OPENCHAT_NATS_URL");
        assert!(err.to_string().contains("OPENCHAT_DATABASE_URL"), "{err}");
        // ... and each node's own media address, where relayed calls are sent.
        let flags = [
            "--nats-url",
            "nats://n:4222",
            "--database-url",
            "postgres://db/chat",
        ];
        let err = Config::from_args(&args(&flags)).unwrap_err();
        assert_eq!(err.var, "OPENCHAT_MEDIA_PUBLIC_IP");
        assert!(err.to_string().contains("OPENCHAT_NATS_URL"), "{err}");
        let one_node = Config::from_args(&args(&["--database-url", "postgres://db/chat"])).unwrap();
        assert_eq!(one_node.cluster, None);
    }

    #[test]
    fn cluster_mode_validates_its_url_and_node_id_and_hides_credentials() {
        let pg = [
            "--database-url",
            "postgres://db/chat",
            "--media-public-ip",
            "10.0.0.7",
        ];
        let with = |extra: &[&str]| {
            let mut all = pg.to_vec();
            all.extend_from_slice(extra);
            Config::from_args(&args(&all))
        };
        let config = with(&[
            "--nats-url",
            "nats://app:hunter2@nats-0:4222, tls://nats-1:4222",
            "--node-id",
            "openchat-0",
        ])
        .unwrap();
        let cluster = config.cluster.unwrap();
        assert_eq!(cluster.nats_display, "nats://nats-0:4222,tls://nats-1:4222");
        assert_eq!(cluster.node_id, "openchat-0");
        assert_eq!(cluster.drain, Duration::from_secs(20), "the default drain");
        assert!(!format!("{cluster:?}").contains("hunter2"));
        let defaulted = with(&["--nats-url", "nats://127.0.0.1:4222"]).unwrap();
        assert!(valid_node_id(&defaulted.cluster.unwrap().node_id));
        for (flags, var) in [
            (&["--nats-url", "http://nats:4222"][..], "OPENCHAT_NATS_URL"),
            (&["--nats-url", "nats://"], "OPENCHAT_NATS_URL"),
            (&["--nats-url", "nats:4222"], "OPENCHAT_NATS_URL"),
            (
                &["--nats-url", "nats://n:4222", "--node-id", "a.b"],
                "OPENCHAT_NODE_ID",
            ),
            (
                &[
                    "--nats-url",
                    "nats://n:4222",
                    "--nats-creds-file",
                    "/nonexistent/x.creds",
                ],
                "OPENCHAT_NATS_CREDS_FILE",
            ),
            (
                &["--nats-creds-file", "/etc/hostname"],
                "OPENCHAT_NATS_CREDS_FILE",
            ),
            (
                &["--nats-url", "nats://n:4222", "--drain-seconds", "3601"],
                "OPENCHAT_DRAIN_SECONDS",
            ),
        ] {
            let err = with(flags).unwrap_err();
            assert_eq!(err.var, var, "{flags:?}: {err}");
        }
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
