//! Postgres going away while openchatd runs: `/readyz` turns 503, API calls answer 503
//! `storage_unavailable` (retryable) instead of hanging, and once Postgres is back they
//! succeed again without restarting openchatd.
//!
//! This runs against a throwaway cluster the test creates itself (`initdb` + `pg_ctl` on a
//! free port, as the `postgres` user when run as root), never against the shared server.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{HANG_GUARD, Server, Store, client, in_ci};

fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists() && bin.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// A private Postgres cluster: data dir, socket dir and port of its own.
struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    _root: tempfile::TempDir,
}

/// A PostgreSQL tool as the `postgres` user (initdb and pg_ctl refuse to run as root).
fn pg_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command
    } else {
        Command::new(program)
    }
}

impl Cluster {
    fn run(&self, tool: &str, args: &[&str]) {
        let output = pg_command(&self.bin.join(tool))
            .args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn create(bin: PathBuf) -> Self {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().to_path_buf();
        if running_as_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster dir to postgres");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            bin,
            dir,
            port,
            _root: root,
        };
        let data = cluster.data().to_str().unwrap().to_owned();
        cluster.run(
            "initdb",
            &["-D", &data, "-A", "trust", "-U", "postgres", "--no-sync"],
        );
        cluster.start();
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.join("pgdata")
    }

    fn start(&self) {
        let data = self.data().to_str().unwrap().to_owned();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").to_str().unwrap().to_owned();
        self.run(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "30", "start"],
        );
    }

    fn stop(&self) {
        let data = self.data().to_str().unwrap().to_owned();
        self.run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "-t", "30", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Best effort: the cluster may already be stopped.
        let _ = pg_command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

/// Polls `path` until it answers `want` (each answer bounded by the client's timeout).
fn wait_for_status(server: &Server, path: &str, want: StatusCode) -> Value {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        let response = client()
            .get(server.url(path))
            .send()
            .expect("openchatd answers instead of hanging");
        if response.status() == want {
            return response.json().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {want} within {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn assert_unavailable(body: &Value) {
    assert_eq!(body["code"], "storage_unavailable", "{body}");
    assert_eq!(body["retryable"], true, "{body}");
}

#[test]
fn postgres_outage_answers_503_and_recovers_without_restart() {
    let Some(bin) = postgres_bin_dir() else {
        if in_ci() {
            panic!("initdb/pg_ctl not found under /usr/lib/postgresql, but CI=true requires this test");
        }
        eprintln!("SKIP: no PostgreSQL server binaries; Postgres fault test not run");
        return;
    };
    let cluster = Cluster::create(bin);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Postgres(cluster.url()), &[]);
    let pid = server.pid();

    wait_for_status(&server, "/readyz", StatusCode::OK);
    wait_for_status(&server, "/v1/servers/srv_harbor/channels", StatusCode::OK);

    cluster.stop();
    assert_unavailable(&wait_for_status(
        &server,
        "/readyz",
        StatusCode::SERVICE_UNAVAILABLE,
    ));
    let started = Instant::now();
    let response = client()
        .get(server.url("/v1/servers/srv_harbor/channels"))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    assert_unavailable(&response.json().unwrap());
    let response = client()
        .put(server.url("/v1/servers/srv_harbor/settings"))
        .json(&json!({"display_name": "During outage"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_unavailable(&response.json().unwrap());
    assert!(started.elapsed() < HANG_GUARD);

    cluster.start();
    wait_for_status(&server, "/readyz", StatusCode::OK);
    let response = client()
        .put(server.url("/v1/servers/srv_harbor/settings"))
        .json(&json!({"display_name": "After outage"}))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let settings = wait_for_status(&server, "/v1/servers/srv_harbor/settings", StatusCode::OK);
    assert_eq!(settings["display_name"], "After outage");
    assert_eq!(server.pid(), pid, "the same openchatd process recovered");
}
