//! End-to-end test support: the real `openchatd` binary on a free port, throwaway Postgres
//! databases, and a hang guard on everything.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod peer;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// No single wait in these tests lasts longer than this.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

pub const DATABASE_URL_VAR: &str = "OPENCHAT_TEST_DATABASE_URL";

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The test Postgres server, or `None` (announced) outside CI; under `CI=true` its absence
/// fails the test.
pub fn postgres_url() -> Option<String> {
    match std::env::var(DATABASE_URL_VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if in_ci() => panic!("{DATABASE_URL_VAR} is not set, but CI=true requires Postgres tests to run"),
        _ => {
            eprintln!("SKIP: {DATABASE_URL_VAR} is not set; Postgres variant not run");
            None
        }
    }
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Runs SQL on the given database URL.
pub fn pg_batch(url: &str, sql: &str) {
    let config: tokio_postgres::Config = url.parse().unwrap();
    block_on(async move {
        let (client, connection) = config
            .connect(tokio_postgres::NoTls)
            .await
            .expect("connect to test postgres");
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    });
}

/// A fresh database on the test server, dropped with the value.
pub struct PgDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PgDatabase {
    pub fn create(admin_url: &str) -> Self {
        let name = format!("oc_e2e_{}", uuid::Uuid::new_v4().simple());
        pg_batch(admin_url, &format!("CREATE DATABASE {name}"));
        let mut config: tokio_postgres::Config = admin_url.parse().unwrap();
        config.dbname(&name);
        let url = database_url(&config);
        Self {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        pg_batch(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Rebuilds a URL from a parsed config (TCP hosts only; enough for tests).
pub fn database_url(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        _ => "127.0.0.1".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let db = config.get_dbname().unwrap_or("postgres");
    format!("postgres://{user}@{host}:{port}/{db}")
}

/// The store a test server uses.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite,
    Postgres(String),
}

/// A running `openchatd`.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    lines: mpsc::Receiver<String>,
    pub log: Vec<String>,
}

/// The binary under test: this build's, or another one named by `OPENCHAT_TEST_OPENCHATD`
/// (to show that a regression test fails against an older build).
pub fn binary() -> String {
    std::env::var("OPENCHAT_TEST_OPENCHATD").unwrap_or_else(|_| env!("CARGO_BIN_EXE_openchatd").to_owned())
}

/// An `openchatd` command with a clean environment: JSON logs, an ephemeral port, the
/// given data dir and store.
pub fn command(data_dir: &Path, store: &Store) -> Command {
    let mut command = Command::new(binary());
    for (key, _) in std::env::vars() {
        if key.starts_with("OPENCHAT_") {
            command.env_remove(key);
        }
    }
    command
        .env("OPENCHAT_HTTP_ADDR", "127.0.0.1:0")
        // An ephemeral UDP port per shard: tests run many servers at once.
        .env("OPENCHAT_MEDIA_PORT_BASE", "0")
        .env("OPENCHAT_DATA_DIR", data_dir)
        .env("OPENCHAT_LOG_FORMAT", "json")
        .env("OPENCHAT_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Store::Postgres(url) = store {
        command.env("OPENCHAT_DATABASE_URL", url);
    }
    command
}

/// Runs a command that is expected to exit by itself; returns its status and stderr.
pub fn run_to_exit(mut command: Command) -> (ExitStatus, String) {
    let mut child = command.spawn().expect("spawn openchatd");
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("openchatd did not exit within {HANG_GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Server {
    pub fn start(data_dir: &Path, store: &Store, extra_env: &[(&str, &str)]) -> Self {
        let mut command = command(data_dir, store);
        for (key, value) in extra_env {
            command.env(key, value);
        }
        Self::spawn(command, data_dir)
    }

    pub fn spawn(mut command: Command, data_dir: &Path) -> Self {
        let mut child = command.spawn().expect("spawn openchatd");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Self {
            child: Some(child),
            addr: "0.0.0.0:0".parse().unwrap(),
            data_dir: data_dir.into(),
            lines,
            log: Vec::new(),
        };
        let line = server.wait_for_log(|line| line.contains("\"listening\""));
        let value: serde_json::Value = serde_json::from_str(&line).expect("JSON log line");
        server.addr = value["addr"].as_str().expect("listening addr").parse().unwrap();
        server
    }

    /// Waits (at most [`HANG_GUARD`]) for a log line matching `accept`.
    pub fn wait_for_log(&mut self, accept: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if accept(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching log line within {HANG_GUARD:?}; log so far:\n{}",
                    self.log.join("\n")
                ),
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill_hard(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Sends SIGTERM without waiting (see [`Server::wait_exit`]).
    pub fn signal_term(&self) {
        let pid = self.child.as_ref().unwrap().id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (at most [`HANG_GUARD`]) for the process to exit by itself.
    pub fn wait_exit(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_child(&mut child)
    }

    /// SIGTERM, then wait for the exit; returns the status and the log after the signal.
    pub fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        self.signal_term();
        let mut child = self.child.take().unwrap();
        let status = wait_child(&mut child);
        let rest: Vec<String> = self.lines.try_iter().collect();
        (status, rest)
    }
}

/// Waits (at most [`HANG_GUARD`]) for `child` to exit.
fn wait_child(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "openchatd did not exit within {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A blocking HTTP client with a timeout well under the hang guard.
pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// Both stores, or only SQLite when Postgres is not available outside CI.
pub fn stores() -> Vec<(Store, Option<PgDatabase>)> {
    let mut stores = vec![(Store::Sqlite, None)];
    if let Some(admin) = postgres_url() {
        let db = PgDatabase::create(&admin);
        stores.push((Store::Postgres(db.url.clone()), Some(db)));
    }
    stores
}

/// Runs an async scenario once per store (Postgres only when available), each on its own
/// two-worker runtime; the Postgres database is made and dropped outside the runtime.
pub fn on_both_stores<F, Fut>(scenario: F)
where
    F: Fn(Store) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    for (store, db) in stores() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario(store));
        drop(runtime);
        drop(db);
    }
}

/// An `openchatd` with a known join-ticket secret (for tests that mint or forge tickets).
pub fn start_with_ticket_secret(secret: &str) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &Store::Sqlite,
        &[("OPENCHAT_JOIN_TICKET_SECRET", secret)],
    );
    (dir, server)
}

/// A PNG header of the given size (enough for any image header reader), plus padding.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut bytes = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R',
    ];
    bytes.extend_from_slice(&width.to_be_bytes());
    bytes.extend_from_slice(&height.to_be_bytes());
    bytes.extend_from_slice(&[8, 6, 0, 0, 0]);
    bytes.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    bytes
}

/// A GIF header of the given size, plus padding.
pub fn gif(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = b"GIF89a".to_vec();
    bytes.extend_from_slice(&width.to_le_bytes());
    bytes.extend_from_slice(&height.to_le_bytes());
    bytes.extend_from_slice(&[0; 16]);
    bytes
}

/// A lossless WebP header of the given size.
pub fn webp(width: u32, height: u32) -> Vec<u8> {
    let bits = (width - 1) | ((height - 1) << 14);
    let mut bytes = b"RIFF\x1a\0\0\0WEBPVP8L\x0d\0\0\0\x2f".to_vec();
    bytes.extend_from_slice(&bits.to_le_bytes());
    bytes.extend_from_slice(&[0; 8]);
    bytes
}

/// An authed JSON request helper: method, URL, user uid, optional JSON body.
pub fn call(
    method: reqwest::Method,
    url: &str,
    uid: &str,
    body: Option<serde_json::Value>,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = client()
        .request(method, url)
        .header("X-OpenChat-User-UID", uid)
        .header("X-OpenChat-Device-ID", "desktop_test");
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().unwrap();
    let status = response.status();
    let text = response.text().unwrap();
    let value = if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text))
    };
    (status, value)
}

/// A private `nats-server` (JetStream on, its own store dir) on a free loopback port;
/// killed with the value. Outside CI a missing `nats-server` is announced and the test
/// skipped; under `CI=true` it fails the test.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    pub fn start() -> Option<Self> {
        let found = Command::new("nats-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            assert!(
                !in_ci(),
                "nats-server is not installed, but CI=true requires the cluster tests to run"
            );
            eprintln!("SKIP: nats-server is not installed; cluster test not run");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = Self {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
        };
        server.resume();
        Some(server)
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same store; returns once it accepts.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-sd"])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn nats-server");
        self.child = Some(child);
        let deadline = Instant::now() + HANG_GUARD;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen within {HANG_GUARD:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits (at most [`HANG_GUARD`]) until `done` holds, polling.
pub fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {HANG_GUARD:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
