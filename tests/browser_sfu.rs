//! Real-browser interop: headless Chromium pages speak WIRE.md's signaling exactly like the
//! client (two PeerConnections, the client offers on both) against the real binary, inside
//! a network namespace that has only `lo` up, so every ICE check and media packet stays on
//! loopback. `tests/browser/driver.mjs` (playwright-core) does the browser work:
//! page 1 publishes microphone, camera and a screen share, page 2 microphone and camera;
//! each receives the other's audio (energy above zero) and video (frames decoded); the
//! screen is announced as `video_screen`; a third page joining later receives both; page 1
//! leaving produces `rtc.track.unpublished` and `rtc.participant.left` at the others.

#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use support::in_ci;

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Why the browser test cannot run here, if it cannot.
fn missing_prerequisite() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !PathBuf::from(&chromium).exists() {
        return Some(format!(
            "{chromium} is missing (apt-get install chromium; `bash .ci/test` does)"
        ));
    }
    if !browser_dir().join("node_modules/playwright-core").exists() {
        return Some(
            "tests/browser/node_modules is missing (npm ci in tests/browser; `bash .ci/test` does)".into(),
        );
    }
    let netns = Command::new("unshare").args(["-n", "true"]).status();
    if !netns.is_ok_and(|s| s.success()) {
        return Some("cannot create a network namespace (unshare -n)".into());
    }
    None
}

#[test]
fn chromium_pages_exchange_audio_video_and_screen_through_the_sfu() {
    if let Some(reason) = missing_prerequisite() {
        if in_ci() {
            panic!("the browser test cannot run under CI=true: {reason}");
        }
        eprintln!("SKIP: browser interop test not run: {reason}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"set -u
ip link set lo up
OPENCHAT_HTTP_ADDR=127.0.0.1:8080 OPENCHAT_DATA_DIR='{data}' OPENCHAT_MEDIA_PORT_BASE=0 \
OPENCHAT_MEDIA_PUBLIC_IP=127.0.0.1 OPENCHAT_LOG=warn '{bin}' 2> '{log}' &
server=$!
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break; sleep 0.1; done
timeout 150 node '{driver}' http://127.0.0.1:8080
status=$?
kill $server
wait $server
exit $status"#,
        data = dir.path().join("data").display(),
        bin = support::binary(),
        log = dir.path().join("server.log").display(),
        driver = browser_dir().join("driver.mjs").display(),
    );
    let started = Instant::now();
    let output = Command::new("unshare")
        .args(["-n", "bash", "-c", &script])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let server_log = std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default();
    assert!(
        stdout.lines().any(|l| l == "RESULT ok"),
        "browser interop failed after {:?}:\n{stdout}\n{}\nserver log:\n{server_log}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success());
}
