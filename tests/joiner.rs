//! `openchat-rtc-joiner` against a real `openchatd`: flags validated like the Go tool (exit
//! 2), a generated tone sent by joiner A in chunks mode arrives byte-identical at joiner B,
//! in pcm-frames mode B's file equals ffmpeg's own s16le decode, and the clear errors
//! (missing ffmpeg names `--ffmpeg-bin`, unreadable file, refused ticket with its code).

#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{HANG_GUARD, Server, Store, in_ci};

fn joiner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openchat-rtc-joiner"))
}

/// ffmpeg, or `None` (announced) outside CI; under CI=true a missing ffmpeg fails the test.
fn ffmpeg() -> Option<&'static str> {
    let found = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some("ffmpeg");
    }
    assert!(
        !in_ci(),
        "ffmpeg is missing, but CI=true requires the joiner's media tests to run"
    );
    eprintln!("SKIP: ffmpeg not installed; joiner media tests not run");
    None
}

/// A 2 s 440 Hz tone, 48 kHz mono WAV.
fn tone(dir: &Path) -> PathBuf {
    let path = dir.join("tone.wav");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=2",
            "-ac",
            "1",
            "-ar",
            "48000",
        ])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    path
}

/// A running joiner whose stderr goes to a file.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn start(args: &[&str], log: PathBuf) -> Self {
        let child = joiner()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_for(&self, what: &str) {
        let deadline = Instant::now() + HANG_GUARD;
        while !self.log().contains(what) {
            assert!(Instant::now() < deadline, "no {what:?} in: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait(mut self) -> (i32, String) {
        let deadline = Instant::now() + HANG_GUARD;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the joiner did not exit: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(self) -> (i32, String) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.wait()
    }
}

fn run_to_exit(args: &[&str]) -> (i32, String) {
    let output = joiner().args(args).stdin(Stdio::null()).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned() + &String::from_utf8_lossy(&output.stdout),
    )
}

#[test]
fn bad_flags_exit_2_with_the_reason() {
    let cases: &[(&[&str], &str)] = &[
        (&[], "-channel-id is required"),
        (
            &["-channel-id", "vc_general", "-file", "x.wav"],
            "-file-type is required",
        ),
        (
            &["-channel-id", "vc_general", "-chunk-bytes", "262145"],
            "-chunk-bytes must be between 1 and 262144",
        ),
        (
            &["-channel-id", "vc_general", "-chunk-bytes", "0"],
            "-chunk-bytes must be between 1 and 262144",
        ),
        (
            &["-channel-id", "vc_general", "-media-mode", "smoke-signals"],
            "-media-mode",
        ),
        (
            &["-channel-id", "vc_general", "-interval-ms", "0"],
            "-interval-ms must be between 1 and 5000",
        ),
    ];
    for (args, reason) in cases {
        let (code, stderr) = run_to_exit(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.starts_with("invalid flags: "), "{args:?}: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
    let (code, help) = run_to_exit(&["--help"]);
    assert_eq!(code, 0);
    assert!(
        help.contains("--write-received-dir") && help.contains("--ffmpeg-bin"),
        "{help}"
    );
}

#[test]
fn missing_ffmpeg_names_the_flag_and_a_bad_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a.wav");
    std::fs::write(&file, b"RIFF").unwrap();
    let file = file.to_str().unwrap();
    let (code, stderr) = run_to_exit(&[
        "-channel-id",
        "vc_general",
        "-file",
        file,
        "-file-type",
        "wav",
        "-ffmpeg-bin",
        "/nonexistent/ffmpeg",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("--ffmpeg-bin"), "{stderr}");
    let (code, stderr) = run_to_exit(&[
        "-channel-id",
        "vc_general",
        "-file",
        "/nonexistent/a.wav",
        "-file-type",
        "wav",
        "-media-mode",
        "chunks",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot read /nonexistent/a.wav"), "{stderr}");
}

#[test]
fn a_refused_ticket_shows_the_servers_code_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    let backend = server.url("");
    let (status, answer) = support::call(
        reqwest::Method::POST,
        &server.url("/v1/rtc/channels/ch_general/join-ticket"),
        "uid_x",
        Some(serde_json::json!({"server_id": "srv_harbor"})),
    );
    assert_ne!(status.as_u16(), 200, "a text channel has no voice");
    let code = answer["code"].as_str().unwrap();
    let (exit, stderr) = run_to_exit(&["-backend-url", &backend, "-channel-id", "ch_general"]);
    assert_eq!(exit, 1, "{stderr}");
    assert!(stderr.contains("join ticket refused"), "{stderr}");
    assert!(stderr.contains(code), "{stderr}");
    assert!(stderr.contains(answer["message"].as_str().unwrap()), "{stderr}");
}

/// A server, a 2 s test tone, and B: a joiner in `mode` that listens in vc_general and
/// writes what it receives to `received`.
struct Relay {
    dir: tempfile::TempDir,
    file: PathBuf,
    received: PathBuf,
    backend: String,
    mode: String,
    b: Running,
    _server: Server,
}

impl Relay {
    fn start(mode: &str) -> Option<Self> {
        ffmpeg()?;
        let dir = tempfile::tempdir().unwrap();
        let file = tone(dir.path());
        let server = Server::start(dir.path(), &Store::Sqlite, &[]);
        let backend = server.url("");
        let received = dir.path().join("received");
        let b = Running::start(
            &[
                "-backend-url",
                &backend,
                "-channel-id",
                "vc_general",
                "-media-mode",
                mode,
                "-user-uid",
                "uid_b",
                "-write-received-dir",
                received.to_str().unwrap(),
            ],
            dir.path().join("b.log"),
        );
        b.wait_for("joined vc_general");
        Some(Self {
            dir,
            file,
            received,
            backend,
            mode: mode.to_owned(),
            b,
            _server: server,
        })
    }

    /// A: a joiner in the same mode sending the tone, with `extra` flags.
    fn sender(&self, extra: &[&str]) -> Running {
        let mut args = vec![
            "-backend-url",
            &self.backend,
            "-channel-id",
            "vc_general",
            "-media-mode",
            &self.mode,
            "-user-uid",
            "uid_a",
            "-file",
            self.file.to_str().unwrap(),
            "-file-type",
            "wav",
        ];
        args.extend_from_slice(extra);
        Running::start(&args, self.dir.path().join("a.log"))
    }

    /// Stops B (exit 0, no warnings) and returns the file it wrote.
    fn finish(self) -> (Vec<u8>, PathBuf, tempfile::TempDir) {
        let (b_code, b_log) = self.b.terminate();
        assert_eq!(b_code, 0, "{b_log}");
        assert!(!b_log.contains("warning"), "{b_log}");
        let written = std::fs::read(self.received.join("tone.wav")).unwrap();
        (written, self.file, self.dir)
    }
}

/// B listens and writes; A sends the tone in `mode` and leaves; returns B's file.
/// Both relay tests run at once (on a loaded machine that is what exposed A leaving before
/// the server had read its last messages: the joiner now waits for the room's echo of its
/// last message before it leaves).
fn relay(mode: &str, interval: &str) -> Option<(Vec<u8>, PathBuf, tempfile::TempDir)> {
    let relay = Relay::start(mode)?;
    let a = relay.sender(&[
        "-chunk-bytes",
        "4096",
        "-interval-ms",
        interval,
        "-exit-after-send",
    ]);
    let (a_code, a_log) = a.wait();
    assert_eq!(a_code, 0, "{a_log}");
    assert!(a_log.contains("sent tone.wav"), "{a_log}");
    relay.b.wait_for("wrote ");
    Some(relay.finish())
}

#[test]
fn chunks_mode_delivers_the_file_byte_identical() {
    let Some((received, source, _dir)) = relay("chunks", "1") else {
        return;
    };
    assert_eq!(received, std::fs::read(source).unwrap());
}

#[test]
fn pcm_frames_mode_delivers_ffmpegs_own_decode() {
    let Some((received, source, _dir)) = relay("pcm-frames", "2") else {
        return;
    };
    let decoded = decode_s16le(&source);
    assert_eq!(received.len(), 2 * 48_000 * 2, "2 s of 48 kHz mono s16le");
    assert_eq!(received, decoded);
}

#[test]
fn loop_mode_repeats_the_file_until_sigterm_then_leaves_the_room() {
    let Some(relay) = Relay::start("chunks") else {
        return;
    };
    let a = relay.sender(&["-chunk-bytes", "8192", "-interval-ms", "1", "-loop"]);
    // Two whole passes reach B (each pass is a stream B rebuilds and writes).
    let deadline = Instant::now() + HANG_GUARD;
    while relay.b.log().matches("wrote ").count() < 2 {
        assert!(
            Instant::now() < deadline,
            "fewer than two passes received: {}",
            relay.b.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(a.log().contains("pass 2"), "{}", a.log());
    let (a_code, a_log) = a.terminate();
    assert_eq!(a_code, 0, "{a_log}");
    // A's leave reaches the room: B is told A left.
    relay.b.wait_for("left");
    let (received, source, _dir) = relay.finish();
    assert_eq!(received, std::fs::read(source).unwrap());
}

/// ffmpeg's own decode of `path` to 48 kHz mono s16le (the joiner's PCM format).
fn decode_s16le(path: &Path) -> Vec<u8> {
    let output = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vn",
            "-f",
            "s16le",
            "-acodec",
            "pcm_s16le",
            "-ac",
            "1",
            "-ar",
            "48000",
            "pipe:1",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// The strongest frequency (10 Hz steps, 100..2000 Hz) of 48 kHz mono s16le audio (Goertzel).
fn dominant_frequency(pcm: &[u8]) -> f64 {
    let samples: Vec<f64> = pcm
        .chunks_exact(2)
        .map(|b| f64::from(i16::from_le_bytes([b[0], b[1]])))
        .collect();
    let power = |freq: f64| {
        let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / 48_000.0).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for x in &samples {
            let s = x + coeff * s1 - s2;
            s2 = s1;
            s1 = s;
        }
        s1 * s1 + s2 * s2 - coeff * s1 * s2
    };
    (10..=200)
        .map(|step| f64::from(step) * 10.0)
        .max_by(|a, b| power(*a).total_cmp(&power(*b)))
        .unwrap()
}

#[test]
fn webrtc_mode_publishes_opus_through_the_sfu_and_records_a_playable_ogg() {
    let Some(relay) = Relay::start("webrtc") else {
        return;
    };
    let a = relay.sender(&["-exit-after-send"]);
    let (a_code, a_log) = a.wait();
    assert_eq!(a_code, 0, "{a_log}");
    assert!(a_log.contains("sent 2.0 s of audio"), "{a_log}");
    relay.b.wait_for("participant");
    let (b_code, b_log) = relay.b.terminate();
    assert_eq!(b_code, 0, "{b_log}");
    let received = relay.received;
    let ogg = received.join("uid_a.ogg");
    assert!(ogg.exists(), "{b_log}");
    // ffprobe: a playable Opus stream of about the source's length.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration:stream=codec_name",
            "-of",
            "json",
        ])
        .arg(&ogg)
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "{}",
        String::from_utf8_lossy(&probe.stderr)
    );
    let info: serde_json::Value = serde_json::from_slice(&probe.stdout).unwrap();
    assert_eq!(info["streams"][0]["codec_name"], "opus", "{info}");
    let duration: f64 = info["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (1.8..=2.2).contains(&duration),
        "received {duration} s of a 2 s tone\n{b_log}"
    );
    // The tone survived: its dominant frequency is the source's 440 Hz.
    let pcm = decode_s16le(&ogg);
    let freq = dominant_frequency(&pcm);
    assert!((430.0..=450.0).contains(&freq), "dominant frequency {freq} Hz");
}

#[test]
fn a_closed_signaling_socket_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &Store::Sqlite, &[]);
    let backend = server.url("");
    let b = Running::start(
        &[
            "-backend-url",
            &backend,
            "-channel-id",
            "vc_general",
            "-media-mode",
            "chunks",
        ],
        dir.path().join("b.log"),
    );
    b.wait_for("joined vc_general");
    server.kill_hard();
    let (code, log) = b.wait();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("signaling closed"), "{log}");
}
