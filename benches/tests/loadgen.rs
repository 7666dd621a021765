//! The load generator's smoke runs (CI): a few subscribers for two seconds against the debug
//! `openchatd` and the debug bare forwarder, and the same scenario against Janus VideoRoom in a network namespace this
//! test creates (Janus skips loopback interfaces). Each run must deliver the stamped packets
//! intact, once each; the numbers themselves belong in BENCHMARKS.md, not here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The debug `openchatd` next to this test's own binary (built by `cargo test --workspace`).
fn openchatd() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("openchatd");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --bin openchatd`",
        bin.display()
    );
    bin
}

fn result_fields(stdout: &str) -> HashMap<String, String> {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line in {stdout:?}"));
    line.split_whitespace()
        .skip(1)
        .filter_map(|f| f.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn run(command: &mut Command) -> HashMap<String, String> {
    let output = command.output().expect("run openchat-loadgen");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadgen failed: {stderr}\n{stdout}");
    println!("{}", stdout.trim());
    result_fields(&stdout)
}

fn assert_delivered(fields: &HashMap<String, String>, subscribers: &str) {
    assert_eq!(fields["subscribers"], subscribers);
    assert_eq!(fields["duplicates"], "0", "{fields:?}");
    assert_eq!(fields["damaged"], "0", "{fields:?}");
    let loss: f64 = fields["loss_pct"].parse().unwrap();
    // 2 s of 50 (audio) or 120 (video) packets/s to each subscriber on an idle loopback:
    // nothing should be lost; a little slack for a busy CI machine.
    assert!(loss <= 2.0, "loss {loss} % in {fields:?}");
    let p50: f64 = fields["p50_ms"].parse().unwrap();
    assert!(p50 > 0.0, "no latency recorded: {fields:?}");
}

fn loadgen() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_openchat-loadgen"));
    command.args(["--seconds", "2", "--warmup-seconds", "1", "--subscribers", "5"]);
    command
}

#[test]
fn openchatd_delivers_every_stamped_packet_to_every_subscriber() {
    // Every receiver decrypts and checks every packet here.
    let fields = run(loadgen()
        .args(["--target", "openchatd", "--full-share", "1", "--bin"])
        .arg(openchatd()));
    assert_eq!(fields["target"], "openchatd");
    assert_delivered(&fields, "5");
    assert_eq!(fields["full_receivers"], "5", "{fields:?}");
}

#[test]
fn openchatd_delivers_every_packet_of_video_frames() {
    // Four packets per frame arrive together: each must be counted (a receiver that read
    // them all before polling str0m kept only some).
    let fields = run(loadgen()
        .args([
            "--target",
            "openchatd",
            "--profile",
            "video",
            "--full-share",
            "1",
            "--bin",
        ])
        .arg(openchatd()));
    assert_eq!(fields["scenario"], "video_1pub");
    assert_delivered(&fields, "5");
    assert_eq!(fields["full_receivers"], "5", "{fields:?}");
}

#[test]
fn the_bare_forwarder_delivers_every_stamped_packet_with_pre_shared_keys() {
    // The physical reference: no ICE/DTLS, the generator's pre-shared-key SRTP mode; light
    // receivers count from headers, one decrypts everything.
    let fields = run(loadgen()
        .args(["--target", "bare", "--profile", "video", "--bin"])
        .arg(env!("CARGO_BIN_EXE_openchat-bare-forwarder")));
    assert_eq!(fields["target"], "bare");
    assert_delivered(&fields, "5");
    assert_eq!(fields["full_receivers"], "1", "{fields:?}");
}

/// A network namespace with `lo` and a veth pair; removed on drop.
struct Namespace(String);

impl Namespace {
    fn create(address: &str) -> Result<Self, String> {
        let name = format!("oclg{}", std::process::id());
        let ip = |args: &[&str]| {
            let status = Command::new("ip")
                .args(args)
                .status()
                .map_err(|e| e.to_string())?;
            if status.success() {
                Ok(())
            } else {
                Err(format!("ip {args:?}: {status}"))
            }
        };
        ip(&["netns", "add", &name])?;
        let ns = Self(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n", &name, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
        ])?;
        ip(&["-n", &name, "addr", "add", &format!("{address}/24"), "dev", "v0"])?;
        ip(&["-n", &name, "link", "set", "v0", "up"])?;
        ip(&["-n", &name, "link", "set", "v1", "up"])?;
        Ok(ns)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

#[test]
fn janus_videoroom_runs_the_same_scenario() {
    let janus = PathBuf::from("/usr/bin/janus");
    if !janus.exists() {
        assert!(!in_ci(), "janus is not installed (CI installs Debian's janus)");
        println!("SKIP: janus_videoroom_runs_the_same_scenario (no /usr/bin/janus)");
        return;
    }
    let media_ip = "10.98.0.1";
    let ns = match Namespace::create(media_ip) {
        Ok(ns) => ns,
        Err(e) => {
            assert!(!in_ci(), "cannot create a network namespace: {e}");
            println!("SKIP: janus_videoroom_runs_the_same_scenario ({e})");
            return;
        }
    };
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &ns.0, env!("CARGO_BIN_EXE_openchat-loadgen")])
        .args(["--seconds", "2", "--warmup-seconds", "1", "--subscribers", "5"])
        .args(["--target", "janus", "--media-ip", media_ip]);
    let fields = run(&mut command);
    assert_eq!(fields["target"], "janus");
    assert_delivered(&fields, "5");
}
