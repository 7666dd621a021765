//! The joiner's I/O shell: join ticket over HTTP, the signaling WebSocket, the transmitter
//! (paced by `--interval-ms`), received streams written to `--write-received-dir`, leave on
//! SIGINT/SIGTERM or after `--exit-after-send`, and exit after 60 s without a data message.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::flags::{Flags, MediaMode};
use super::signal::{IDLE_TIMEOUT, JoinerError};
use super::signal::{connect, random_hex, ticket};
use super::stream::{Kind, Reassembler, Received, Transmission};

/// Outgoing messages queued for the socket writer.
pub const OUTGOING_MAX: usize = 64;
/// With `--exit-after-send`: how long to wait for the room's echo of the last message (the
/// room relays every media state to its sender too) before leaving anyway. Leaving at once
/// could close the socket while the server still has unread messages: the kernel then
/// answers the server's next write with a reset and the unread messages are lost.
pub const LAST_ECHO_WAIT: Duration = Duration::from_secs(10);
/// ffmpeg output read at most (raw PCM of a long file).
pub const PCM_BYTES_MAX: usize = 1024 * 1024 * 1024;

fn rfc3339_nanos(at: SystemTime) -> String {
    humantime::format_rfc3339_nanos(at).to_string()
}

/// Reads the file, or decodes it with ffmpeg, into what will be sent.
async fn load(flags: &Flags, path: &str) -> Result<Transmission, JoinerError> {
    let kind = match flags.media_mode {
        MediaMode::Chunks => Kind::Chunks,
        MediaMode::PcmFrames => Kind::Pcm {
            interval_ms: flags.interval_ms,
        },
        MediaMode::Webrtc => {
            return Err(JoinerError::Unsupported(
                "webrtc media is loaded by the webrtc module".into(),
            ));
        }
    };
    let bytes = match kind {
        Kind::Chunks => tokio::fs::read(path).await.map_err(|e| JoinerError::File {
            path: path.to_owned(),
            reason: e.to_string(),
        })?,
        Kind::Pcm { .. } => {
            if let Err(e) = tokio::fs::metadata(path).await {
                return Err(JoinerError::File {
                    path: path.to_owned(),
                    reason: e.to_string(),
                });
            }
            decode_pcm(&flags.ffmpeg_bin, path).await?
        }
    };
    let file_name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_owned();
    Ok(Transmission {
        pieces: Transmission::cut(kind.clone(), &bytes, flags.chunk_bytes),
        kind,
        stream_id: format!("stream_{}", random_hex(4)),
        file_name,
        file_type: flags.file_type.clone(),
        transmitter_uid: flags.user_uid.clone(),
    })
}

/// `ffmpeg -v error -i <file> -vn -f s16le -acodec pcm_s16le -ac 1 -ar 48000 pipe:1`.
pub async fn decode_pcm(bin: &str, path: &str) -> Result<Vec<u8>, JoinerError> {
    let failed = |reason: String| JoinerError::Ffmpeg {
        bin: bin.to_owned(),
        reason,
    };
    let mut child = tokio::process::Command::new(bin)
        .args([
            "-v",
            "error",
            "-i",
            path,
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
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    let mut stdout = child.stdout.take().ok_or_else(|| failed("no stdout".into()))?;
    let mut pcm = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut stdout, &mut buffer)
            .await
            .map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        if pcm.len() + n > PCM_BYTES_MAX {
            return Err(failed(format!("decoded audio exceeds {PCM_BYTES_MAX} bytes")));
        }
        pcm.extend_from_slice(&buffer[..n]);
    }
    let output = child
        .wait_with_output()
        .await
        .map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(failed(format!("{}: {}", output.status, stderr.trim())));
    }
    Ok(pcm)
}

/// Writes one completed stream (directory 0755, file 0644).
fn write_received(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// Why the main loop ends.
enum Stop {
    Signal(&'static str),
    Sent,
    Idle,
}

/// Joins, transmits, records; returns when it left (Ok) or failed.
pub async fn run(flags: Flags) -> Result<(), JoinerError> {
    if flags.media_mode == MediaMode::Webrtc {
        return super::webrtc::run(flags).await;
    }
    let transmission = match &flags.file {
        Some(path) => Some(load(&flags, path).await?),
        None => None,
    };
    let ticket = ticket(&flags).await?;
    let ws = connect(ticket["signaling_url"].as_str().unwrap_or("")).await?;
    let (mut sink, mut stream) = ws.split();
    let channel = ticket["channel_id"]
        .as_str()
        .unwrap_or(&flags.channel_id)
        .to_owned();
    // One writer owns the sink; the transmitter and the read loop queue messages for it.
    let (out_tx, mut out_rx) = mpsc::channel::<Value>(OUTGOING_MAX);
    let writer = tokio::spawn(async move {
        while let Some(message) = out_rx.recv().await {
            if sink.send(Message::text(message.to_string())).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let join = json!({"type": "rtc.join", "request_id": format!("join_{}", random_hex(4)), "channel_id": channel, "payload": {"ticket": ticket["ticket"]}});
    out_tx
        .send(join)
        .await
        .map_err(|_| JoinerError::Closed("before joining".into()))?;

    let mut reassembler = Reassembler::default();
    let mut started = false;
    let (sent_tx, mut sent_rx) = mpsc::channel::<String>(1);
    // After a pass with --exit-after-send: the last message's request id, and until when to
    // wait for its echo.
    let mut last_echo: Option<(String, tokio::time::Instant)> = None;
    let mut transmitter: Option<tokio::task::JoinHandle<()>> = None;
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| JoinerError::Signaling(e.to_string()))?;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| JoinerError::Signaling(e.to_string()))?;
    let mut deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    let stop = loop {
        tokio::select! {
            _ = sigint.recv() => break Stop::Signal("sigint"),
            _ = sigterm.recv() => break Stop::Signal("sigterm"),
            Some(last) = sent_rx.recv(), if last_echo.is_none() => {
                last_echo = Some((last, tokio::time::Instant::now() + LAST_ECHO_WAIT));
            }
            () = async {
                match &last_echo {
                    Some((_, until)) => tokio::time::sleep_until(*until).await,
                    None => std::future::pending().await,
                }
            } => {
                eprintln!("warning: the server did not relay the last message within {}s; leaving", LAST_ECHO_WAIT.as_secs());
                break Stop::Sent;
            }
            () = tokio::time::sleep_until(deadline) => break Stop::Idle,
            next = stream.next() => {
                let text = match next {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(Message::Close(frame))) => {
                        return Err(JoinerError::Closed(frame.map(|f| f.reason.to_string()).unwrap_or_default()));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => return Err(JoinerError::Closed(e.to_string())),
                    None => return Err(JoinerError::Closed("the server ended the connection".into())),
                };
                deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
                let Ok(envelope) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                let kind = envelope["type"].as_str().unwrap_or("");
                let payload = &envelope["payload"];
                let mut start = false;
                match kind {
                    "rtc.joined" => {
                        let me = payload["participant_id"].as_str().unwrap_or("").to_owned();
                        let others = payload["participants"].as_array().map_or(0, Vec::len);
                        eprintln!("joined {channel} as {me} ({others} other participant(s) present)");
                        reassembler.own = Some(me);
                        start = others > 0;
                    }
                    "rtc.participant.joined" => {
                        let who = payload["participant"]["participant_id"].as_str().unwrap_or("");
                        if Some(who) != reassembler.own.as_deref() {
                            eprintln!("participant {who} joined");
                            start = true;
                        }
                    }
                    "rtc.participant.left" => {
                        eprintln!("participant {} left", payload["participant"]["participant_id"].as_str().unwrap_or(""));
                    }
                    "rtc.error" => {
                        eprintln!("warning: rtc.error {}: {}", payload["code"].as_str().unwrap_or(""), payload["message"].as_str().unwrap_or(""));
                    }
                    "rtc.media.state" if last_echo.as_ref().is_some_and(|(last, _)| {
                        envelope["request_id"].as_str() == Some(last.as_str())
                            && payload["participant_id"].as_str() == reassembler.own.as_deref()
                    }) => break Stop::Sent,
                    "rtc.media.state" => match reassembler.on_media_state(payload) {
                        Received::Complete { participant, name, bytes } => match &flags.write_received_dir {
                            Some(dir) => match write_received(Path::new(dir), &name, &bytes) {
                                Ok(path) => eprintln!("wrote {} ({} bytes) from {participant}", path.display(), bytes.len()),
                                Err(e) => eprintln!("warning: cannot write {name}: {e}"),
                            },
                            None => eprintln!("stream complete: {name} ({} bytes) from {participant}", bytes.len()),
                        },
                        Received::Incomplete { participant, stream, have, total } => {
                            eprintln!("warning: stream {participant}:{stream} ended with {have} of {total} chunks; nothing written");
                        }
                        Received::Dropped { participant, stream, reason } => {
                            eprintln!("warning: stream {participant}:{stream} dropped: {reason}");
                        }
                        Received::Nothing => {}
                    },
                    _ => {}
                }
                if start && !started && let Some(t) = transmission.clone() {
                    started = true;
                    transmitter = Some(tokio::spawn(transmit(t, channel.clone(), flags.interval_ms, flags.repeat, flags.exit_after_send, out_tx.clone(), sent_tx.clone())));
                }
            }
        }
    };
    if let Some(task) = transmitter {
        task.abort();
    }
    let reason = match stop {
        Stop::Signal(name) => name,
        Stop::Sent => "exit_after_send",
        Stop::Idle => {
            eprintln!("no data message for {}s; leaving", IDLE_TIMEOUT.as_secs());
            "idle_timeout"
        }
    };
    let leave = json!({"type": "rtc.leave", "request_id": format!("leave_{}", random_hex(4)), "channel_id": channel, "payload": {"reason": reason}});
    let _ = out_tx.send(leave).await;
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    Ok(())
}

/// Sends the pieces in order, pausing `interval_ms` after each; once, or forever with
/// `repeat`; tells the main loop the last request id when a pass is done if it should then
/// leave (the main loop leaves once the room relayed that message back).
async fn transmit(
    t: Transmission,
    channel: String,
    interval_ms: u64,
    repeat: bool,
    exit_after_send: bool,
    out: mpsc::Sender<Value>,
    sent: mpsc::Sender<String>,
) {
    let mut loop_iteration = 1u64;
    // About ten progress lines per pass.
    let every = (t.total() / 10).max(1);
    loop {
        let mut sent_bytes = 0usize;
        let mut last_request_id = String::new();
        for seq in 0..t.total() {
            let message = t.message(&channel, loop_iteration, seq, &rfc3339_nanos(SystemTime::now()));
            last_request_id = message["request_id"].as_str().unwrap_or_default().to_owned();
            if out.send(message).await.is_err() {
                return;
            }
            sent_bytes += t.pieces[seq].len();
            if (seq + 1) % every == 0 && seq + 1 < t.total() {
                eprintln!("sending {}: {sent_bytes} of {} bytes", t.file_name, t.bytes());
            }
            tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        }
        eprintln!(
            "sent {} ({} bytes in {} messages, pass {loop_iteration})",
            t.file_name,
            t.bytes(),
            t.total()
        );
        if exit_after_send {
            let _ = sent.send(last_request_id).await;
            return;
        }
        if !repeat {
            return;
        }
        loop_iteration += 1;
    }
}
