//! Turning a validated [`Config`] into a running openchatd, and stopping it.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use openchat_signaling::metrics::{BuildLabels, Metrics};
use openchat_signaling::{AppState, FrontConfig};
use openchat_storage::queries;
use openchat_storage::{StorageError, StoreConfig, StoreKind};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, SeedMode, StoreSelection};
use crate::{build_info, tls};

/// In-flight HTTP requests get this long to finish after SIGTERM/SIGINT.
pub const HTTP_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The storage thread gets this long to finish its queue and close the database.
pub const STORAGE_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Front-end worker threads; the media shards get the cores.
pub const HTTP_WORKER_THREADS_MAX: usize = 4;

/// Exit code for configuration problems (bad value, unusable data dir, unreachable
/// database, address in use): the operator must change something.
pub const EXIT_CONFIG: u8 = 2;

fn config_failure(err: &ConfigError) -> ExitCode {
    eprintln!("{err}");
    ExitCode::from(EXIT_CONFIG)
}

/// The storage configuration a [`Config`] selects.
pub fn store_config(config: &Config) -> StoreConfig {
    match &config.store {
        StoreSelection::Sqlite => StoreConfig::Sqlite {
            data_dir: config.data_dir.clone(),
        },
        StoreSelection::Postgres { config, .. } => StoreConfig::Postgres {
            config: config.clone(),
        },
    }
}

/// A store that cannot be opened, as a configuration error naming the variable at fault.
pub fn store_error(config: &Config, err: StorageError) -> ConfigError {
    let var = match config.store {
        StoreSelection::Sqlite => "OPENCHAT_DATA_DIR",
        StoreSelection::Postgres { .. } => "OPENCHAT_DATABASE_URL",
    };
    ConfigError {
        var,
        message: err.to_string(),
    }
}

/// Runs openchatd with a validated configuration until a termination signal.
pub fn run(mut config: Config) -> ExitCode {
    crate::logging::init(&config.log_filter, config.log_format);
    let build = build_info();
    let store_display = match &config.store {
        StoreSelection::Sqlite => format!("sqlite in {}", config.data_dir.display()),
        StoreSelection::Postgres { display, .. } => display.clone(),
    };
    tracing::info!(
        version = %build.version,
        commit = %build.commit,
        built = %build.time,
        store = %store_display,
        listen = %config.http_addr,
        public_base_url = %config.public_base_url,
        tls = config.tls.is_some(),
        production = config.production,
        "starting openchatd"
    );
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }

    let tls = match config.tls.as_ref().map(tls::server_config).transpose() {
        Ok(tls) => tls.map(tokio_rustls::TlsAcceptor::from),
        Err(err) => return config_failure(&err),
    };

    let (storage, storage_thread) = match openchat_storage::start(store_config(&config)) {
        Ok(started) => started,
        Err(err) => return config_failure(&store_error(&config, err)),
    };
    let kind = storage.kind();
    // Uploads live in the data dir with either store, so it must be usable with Postgres too.
    let blobs = match openchat_signaling::blobs::BlobStore::open(&config.data_dir) {
        Ok(blobs) => blobs,
        Err(err) => {
            let message = format!("cannot use {} for uploads: {err}", config.data_dir.display());
            return config_failure(&ConfigError {
                var: "OPENCHAT_DATA_DIR",
                message,
            });
        }
    };

    // The media shards: one glommio executor per configured CPU.
    let media_net = openchat_media::MediaNet {
        port_base: config.media.port_base,
        public_ip: config.media.public_ip,
    };
    if config.media.public_ip.is_none() && config.production {
        tracing::warn!(
            "OPENCHAT_MEDIA_PUBLIC_IP is not set: media candidates advertise the address each client's signaling arrived on"
        );
    }
    let shards = match openchat_media::ShardSet::start(
        &config.media.cpus,
        config.limits.max_call_participants as usize,
        Some(media_net),
    ) {
        Ok(shards) => Arc::new(shards),
        Err(err) => {
            return config_failure(&ConfigError {
                var: err.variable(),
                message: err.to_string(),
            });
        }
    };
    tracing::info!(
        shards = shards.len(),
        cpus = ?shards.cpus(),
        media = ?shards.media_addrs(),
        memlock_bytes = rlimit::Resource::MEMLOCK.get().map_or(0, |(soft, _)| soft),
        ipc_lock = match openchat_media::holds_ipc_lock() {
            Some(true) => "held",
            Some(false) => "not held",
            None => "unknown",
        },
        "media shards running"
    );
    let rtc_config = openchat_signaling::rtc::RtcConfig {
        signaling_path: config.signaling_path.clone(),
        ticket_secret: config.join_ticket_secret.0.as_bytes().to_vec(),
        ticket_ttl_seconds: config.join_ticket_ttl.as_secs() as i64,
        stun_urls: config.stun_urls.clone(),
        turn: config
            .turn
            .as_ref()
            .map(|turn| openchat_signaling::rtc::TurnSettings {
                urls: turn.urls.clone(),
                secret: turn.secret.0.as_bytes().to_vec(),
                ttl_seconds: turn.ttl.as_secs() as i64,
            }),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(HTTP_WORKER_THREADS_MAX),
        )
        .thread_name("openchat-http")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("openchatd: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };

    let code = runtime.block_on(async {
        if config.seed == SeedMode::Default {
            match storage
                .run(queries::SeedFirstRun {
                    seed: openchat_core::seed::default_community(),
                    now: openchat_signaling::clock::unix_now(),
                })
                .await
            {
                Ok(true) => tracing::info!("seeded the default community"),
                Ok(false) => tracing::debug!("store already initialised; not seeding"),
                Err(err) => {
                    eprintln!("openchatd: seeding the default community failed: {err}");
                    return ExitCode::FAILURE;
                }
            }
        }
        let listener = match TcpListener::bind(config.http_addr).await {
            Ok(listener) => listener,
            Err(err) => {
                let var = "OPENCHAT_HTTP_ADDR";
                return config_failure(&ConfigError {
                    var,
                    message: format!("cannot listen on {}: {err}", config.http_addr),
                });
            }
        };
        let local = listener.local_addr().unwrap_or(config.http_addr);
        if !config.public_base_url_explicit && config.http_addr.port() == 0 {
            let scheme = if tls.is_some() { "https" } else { "http" };
            config.public_base_url = format!("{scheme}://localhost:{}", local.port());
        }
        let metrics = Metrics::new(BuildLabels {
            version: build.version.clone(),
            commit: build.commit.clone(),
            store: match kind {
                StoreKind::Sqlite => "sqlite",
                StoreKind::Postgres => "postgres",
            },
        });
        let front = FrontConfig {
            public_base_url: config.public_base_url.clone(),
            production: config.production,
            session_auth: config.session_auth,
            limits: config.limits,
            build: build.clone(),
            http: config.http,
            e2ee_self_join: config.e2ee_self_join,
        };
        let mut state = AppState::new(front, storage.clone(), metrics, blobs);
        state.rtc = Some(openchat_signaling::rtc::RtcState::new(rtc_config, shards.clone()));
        if let Some(cluster) = &config.cluster {
            let options = openchat_signaling::cluster::ClusterOptions {
                url: cluster.nats_url.0.clone(),
                creds_file: cluster.creds_file.clone(),
                node_id: cluster.node_id.clone(),
            };
            match openchat_signaling::cluster::Cluster::connect(options).await {
                Ok(joined) => {
                    tracing::info!(node = %cluster.node_id, nats = %cluster.nats_display, "cluster mode");
                    state.cluster = Some(joined);
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot start cluster mode");
                    return ExitCode::from(EXIT_CONFIG);
                }
            }
        }
        let state = Arc::new(state);
        openchat_signaling::realtime::relay::start(state.clone());
        openchat_signaling::realtime::presence::start(state.clone());
        openchat_signaling::rtc::records::start(state.clone());
        openchat_signaling::rtc::bridge::start(state.clone());
        let drain = config.cluster.as_ref().map(|cluster| cluster.drain);
        let signal = termination();
        let terminated = {
            let state = state.clone();
            async move {
                signal.await;
                if let Some(grace) = drain {
                    openchat_signaling::rtc::records::drain(&state, grace).await;
                }
            }
        };
        tracing::info!(
            addr = %local,
            scheme = if tls.is_some() { "https" } else { "http" },
            public_base_url = %config.public_base_url,
            "listening"
        );
        let served = openchat_signaling::serve(listener, tls, state, terminated, HTTP_SHUTDOWN_GRACE).await;
        if let Err(err) = served {
            tracing::warn!(error = %err, "shutdown grace expired; closing remaining connections");
        }
        ExitCode::SUCCESS
    });
    drop(storage);
    // The runtime's tasks (open connections past their grace) are dropped here.
    runtime.shutdown_timeout(Duration::from_secs(1));
    // With the front-end gone, the shards' queues have no senders left: they stop.
    match Arc::try_unwrap(shards) {
        Ok(shards) => shards.shutdown(),
        Err(_) => tracing::warn!("media shards still referenced at shutdown"),
    }
    match storage_thread.shutdown(STORAGE_SHUTDOWN_GRACE) {
        Ok(()) => tracing::info!("storage closed; bye"),
        Err(err) => tracing::error!(error = %err, "storage did not close cleanly"),
    }
    code
}

/// Installs the SIGTERM and SIGINT handlers now and resolves on the first signal. Called
/// before "listening" is logged, so a signal sent as soon as the address is announced
/// always means a clean shutdown, never the default (fatal) action.
fn termination() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()));
    async move {
        let (mut term, mut int) = match handlers {
            (Ok(term), Ok(int)) => (term, int),
            _ => {
                tracing::error!("cannot install signal handlers; stop openchatd with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; shutting down"),
            _ = int.recv() => tracing::info!("SIGINT received; shutting down"),
        }
    }
}
