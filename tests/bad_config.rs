//! Bad configuration stops start-up with exit code 2 and one clear line naming the
//! variable; nothing hangs (every run has the support module's 30 s guard).

#![allow(clippy::unwrap_used)]

mod support;

use support::{Store, command, run_to_exit};

fn assert_refused(stderr: &str, var: &str, detail: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|line| !line.trim().is_empty()).collect();
    let errors: Vec<&&str> = lines
        .iter()
        .filter(|line| line.starts_with(&format!("{var}: ")))
        .collect();
    assert_eq!(errors.len(), 1, "exactly one line naming {var}, got:\n{stderr}");
    assert!(
        errors[0].contains(detail),
        "{var} line should mention {detail:?}: {}",
        errors[0]
    );
}

#[test]
fn invalid_listen_address_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.env("OPENCHAT_HTTP_ADDR", "nonsense");
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2));
    assert_eq!(
        stderr.trim(),
        r#"OPENCHAT_HTTP_ADDR: invalid socket address "nonsense""#
    );
}

#[test]
fn invalid_flag_value_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.args(["--max-upload-bytes", "lots"]);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2));
    assert_refused(&stderr, "OPENCHAT_MAX_UPLOAD_BYTES", "\"lots\"");
}

#[test]
fn unreachable_database_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let store = Store::Postgres("postgres://postgres@127.0.0.1:1/none".into());
    let (status, stderr) = run_to_exit(command(dir.path(), &store));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_DATABASE_URL", "cannot connect to postgres");
}

#[test]
fn unwritable_data_dir_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    // A data dir beneath a regular file cannot be created or written, even by root.
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    let (status, stderr) = run_to_exit(command(&file.join("data"), &Store::Sqlite));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_DATA_DIR", "cannot create data directory");
}

#[test]
fn data_dir_that_is_a_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let (status, stderr) = run_to_exit(command(&file, &Store::Sqlite));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_DATA_DIR", "data directory");
}

#[test]
fn address_in_use_exits_2_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.env("OPENCHAT_HTTP_ADDR", &addr);
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_HTTP_ADDR", "cannot listen");
}

#[test]
fn tls_with_unreadable_certificate_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.env("OPENCHAT_TLS_CERT", dir.path().join("missing.pem"))
        .env("OPENCHAT_TLS_KEY", dir.path().join("k.pem"));
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_TLS_CERT", "cannot read");
}

#[test]
fn help_documents_every_option_with_its_default() {
    let output = std::process::Command::new(support::binary())
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    for var in [
        "OPENCHAT_HTTP_ADDR",
        "OPENCHAT_PUBLIC_BASE_URL",
        "OPENCHAT_SIGNALING_PATH",
        "OPENCHAT_JOIN_TICKET_TTL_SECONDS",
        "OPENCHAT_JOIN_TICKET_SECRET",
        "OPENCHAT_ENV",
        "OPENCHAT_DATA_DIR",
        "OPENCHAT_DATABASE_URL",
        "OPENCHAT_MEDIA_PORT_BASE",
        "OPENCHAT_MEDIA_PUBLIC_IP",
        "OPENCHAT_SHARDS",
        "OPENCHAT_MEDIA_CPUS",
        "OPENCHAT_TLS_CERT",
        "OPENCHAT_TLS_KEY",
        "OPENCHAT_SEED",
        "OPENCHAT_AUTH",
        "OPENCHAT_LOG",
        "OPENCHAT_LOG_FORMAT",
        "OPENCHAT_STUN_URLS",
        "OPENCHAT_TURN_URLS",
        "OPENCHAT_TURN_SECRET",
        "OPENCHAT_TURN_TTL_SECONDS",
        "OPENCHAT_MAX_MESSAGE_BYTES",
        "OPENCHAT_MAX_UPLOAD_BYTES",
        "OPENCHAT_RATE_LIMIT_PER_MINUTE",
        "OPENCHAT_MAX_CALL_PARTICIPANTS",
    ] {
        assert!(help.contains(&format!("env: {var}")), "--help lacks {var}");
    }
    for default in [
        "[default: :8080]",
        "[default: ./data]",
        "[default: 65536]",
        "[default: 52428800]",
        "[default: 50000]",
    ] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}

/// `openchatd` (env and output as [`command`]) run by bash after `limits` (e.g. `ulimit -l 0`).
fn under_shell_limits(dir: &std::path::Path, limits: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c")
        .arg(format!("{limits} && exec '{}'", support::binary()));
    let inner = command(dir, &Store::Sqlite);
    for (key, value) in inner.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    cmd
}

#[test]
fn no_locked_memory_for_the_media_shards_exits_2_naming_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(under_shell_limits(dir.path(), "ulimit -l 0"));
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(
        &stderr,
        "OPENCHAT_SHARDS",
        "locked-memory limit (RLIMIT_MEMLOCK) is 0 KiB",
    );
    assert_refused(&stderr, "OPENCHAT_SHARDS", "ulimit -l");
}

#[test]
fn a_low_soft_locked_memory_limit_is_raised_to_the_hard_limit_at_start_up() {
    // 64 KiB soft (an old kernel's default, below glommio's 512 KiB) under this process's hard
    // limit: openchatd may raise its own soft limit up to the hard one, so the shards start.
    let (_, hard) = rlimit::Resource::MEMLOCK.get().unwrap();
    assert!(
        hard >= openchat_media::MEMLOCK_MIN_BYTES,
        "the test needs a hard RLIMIT_MEMLOCK of at least 512 KiB, have {hard} bytes"
    );
    let dir = tempfile::tempdir().unwrap();
    let cmd = under_shell_limits(dir.path(), "ulimit -S -l 64");
    let mut server = support::Server::spawn(cmd, dir.path());
    let line = match server
        .log
        .iter()
        .find(|line| line.contains("media shards running"))
    {
        Some(line) => line.clone(),
        None => server.wait_for_log(|line| line.contains("media shards running")),
    };
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["memlock_bytes"], hard, "{line}");
    let (status, _) = server.terminate();
    assert!(status.success());
}

#[test]
fn a_taken_media_port_fails_loudly_instead_of_sharing_it() {
    let taken = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.env("OPENCHAT_MEDIA_PORT_BASE", port.to_string())
        .env("OPENCHAT_SHARDS", "1");
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(
        &stderr,
        "OPENCHAT_MEDIA_PORT_BASE",
        &format!("UDP port {port} is not available"),
    );
}

#[test]
fn nats_with_the_embedded_store_exits_2_naming_both_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = command(dir.path(), &Store::Sqlite);
    cmd.env("OPENCHAT_NATS_URL", "nats://127.0.0.1:4222");
    let (status, stderr) = run_to_exit(cmd);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert_refused(&stderr, "OPENCHAT_NATS_URL", "OPENCHAT_DATABASE_URL");
}
