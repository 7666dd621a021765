//! The joiner's flags, exactly as WIRE.md §6 lists them (Go `flag` syntax: `-x`, `--x`,
//! `-x=v` and `--x v` all work). A bad flag is one line `invalid flags: ...` and exit code 2.

use clap::Parser;

/// The media modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaMode {
    /// The file in `--chunk-bytes` pieces inside `rtc.media.state`.
    Chunks,
    /// The file decoded by ffmpeg to 48 kHz mono s16le, one frame per `--interval-ms`.
    PcmFrames,
    /// A real WebRTC participant (Opus RTP through the SFU).
    Webrtc,
}

pub const CHUNK_BYTES_MAX: usize = 262_144;
pub const INTERVAL_MS_MAX: u64 = 5000;

#[derive(Debug, Parser)]
#[command(
    name = "openchat-rtc-joiner",
    about = "Joins an OpenChat voice channel and streams a file into it, or records what others send",
    disable_version_flag = true
)]
struct Raw {
    /// Base URL of the OpenChat backend
    #[arg(long, default_value = "http://localhost:8080")]
    backend_url: String,
    /// Server id sent with the join-ticket request (empty means srv_harbor)
    #[arg(long, default_value = "srv_harbor")]
    server_id: String,
    /// Voice channel to join (required)
    #[arg(long, default_value = "")]
    channel_id: String,
    /// File to transmit
    #[arg(long, default_value = "")]
    file: String,
    /// Label of the file's type; required with --file
    #[arg(long, default_value = "")]
    file_type: String,
    /// pcm-frames, chunks or webrtc
    #[arg(long, default_value = "pcm-frames")]
    media_mode: String,
    /// ffmpeg to decode or encode the file with
    #[arg(long, default_value = "ffmpeg")]
    ffmpeg_bin: String,
    /// X-OpenChat-User-UID [default: uid_joiner_<8 random>]
    #[arg(long)]
    user_uid: Option<String>,
    /// X-OpenChat-Device-ID [default: device_joiner_<8 random>]
    #[arg(long)]
    device_id: Option<String>,
    /// Bytes per chunk in chunks mode (1..262144)
    #[arg(long, default_value = "8192")]
    chunk_bytes: String,
    /// Pause after each message, and the PCM frame length, in ms (1..5000)
    #[arg(long, default_value = "20")]
    interval_ms: String,
    /// Repeat the transmission forever
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    r#loop: String,
    /// Leave after one full pass
    #[arg(long, num_args = 0..=1, default_value = "false", default_missing_value = "true")]
    exit_after_send: String,
    /// Rebuild incoming streams into files in this directory
    #[arg(long, default_value = "")]
    write_received_dir: String,
}

/// Validated flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flags {
    pub backend_url: String,
    pub server_id: String,
    pub channel_id: String,
    pub file: Option<String>,
    pub file_type: String,
    pub media_mode: MediaMode,
    pub ffmpeg_bin: String,
    pub user_uid: String,
    pub device_id: String,
    pub chunk_bytes: usize,
    pub interval_ms: u64,
    pub repeat: bool,
    pub exit_after_send: bool,
    pub write_received_dir: Option<String>,
}

/// What parsing decided.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Flags>),
    /// `--help`: print this and exit 0.
    Help(String),
    /// Print `invalid flags: <reason>` and exit 2.
    Invalid(String),
}

/// Go's flag package takes `-name` as well as `--name`; clap wants `--name`.
fn normalise(args: impl IntoIterator<Item = String>) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, arg)| {
            let single = arg.starts_with('-') && !arg.starts_with("--") && arg.len() > 2;
            if i > 0 && single { format!("-{arg}") } else { arg }
        })
        .collect()
}

fn go_bool(name: &str, raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" => Ok(true),
        "0" | "f" | "false" => Ok(false),
        other => Err(format!("invalid boolean value {other:?} for -{name}")),
    }
}

fn bounded(name: &str, raw: &str, min: u64, max: u64) -> Result<u64, String> {
    let value: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("invalid value {raw:?} for -{name}"))?;
    if !(min..=max).contains(&value) {
        return Err(format!("-{name} must be between {min} and {max}"));
    }
    Ok(value)
}

/// `uid_joiner_<8>` style defaults.
fn random_suffix(random: [u8; 4]) -> String {
    random.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses and validates the command line (`args[0]` is the program name).
pub fn parse(args: impl IntoIterator<Item = String>, random: [u8; 8]) -> Parsed {
    let raw = match Raw::try_parse_from(normalise(args)) {
        Ok(raw) => raw,
        Err(err) => {
            return match err.kind() {
                clap::error::ErrorKind::DisplayHelp => Parsed::Help(err.to_string()),
                _ => Parsed::Invalid(
                    err.to_string()
                        .lines()
                        .next()
                        .unwrap_or("")
                        .trim_start_matches("error: ")
                        .to_owned(),
                ),
            };
        }
    };
    match validate(raw, random) {
        Ok(flags) => Parsed::Run(Box::new(flags)),
        Err(reason) => Parsed::Invalid(reason),
    }
}

fn validate(raw: Raw, random: [u8; 8]) -> Result<Flags, String> {
    let backend_url = raw.backend_url.trim().trim_end_matches('/').to_owned();
    let parsed: http::Uri = backend_url
        .parse()
        .map_err(|_| format!("-backend-url {:?} is not a URL", raw.backend_url))?;
    if !matches!(parsed.scheme_str(), Some("http" | "https")) || parsed.host().is_none() {
        return Err(format!(
            "-backend-url {:?} is not an http(s) URL",
            raw.backend_url
        ));
    }
    let channel_id = raw.channel_id.trim().to_owned();
    if channel_id.is_empty() {
        return Err("-channel-id is required".into());
    }
    let file = Some(raw.file.trim().to_owned()).filter(|f| !f.is_empty());
    let file_type = raw.file_type.trim().to_owned();
    if file.is_some() && file_type.is_empty() {
        return Err("-file-type is required when -file is given".into());
    }
    let media_mode = match raw.media_mode.trim().to_ascii_lowercase().as_str() {
        "pcm-frames" => MediaMode::PcmFrames,
        "chunks" => MediaMode::Chunks,
        "webrtc" => MediaMode::Webrtc,
        other => {
            return Err(format!(
                "-media-mode {other:?} is not one of pcm-frames, chunks, webrtc"
            ));
        }
    };
    let chunk_bytes = bounded("chunk-bytes", &raw.chunk_bytes, 1, CHUNK_BYTES_MAX as u64)? as usize;
    let interval_ms = bounded("interval-ms", &raw.interval_ms, 1, INTERVAL_MS_MAX)?;
    let server_id = Some(raw.server_id.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "srv_harbor".into());
    let user_uid = raw
        .user_uid
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            format!(
                "uid_joiner_{}",
                random_suffix([random[0], random[1], random[2], random[3]])
            )
        });
    let device_id = raw
        .device_id
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| {
            format!(
                "device_joiner_{}",
                random_suffix([random[4], random[5], random[6], random[7]])
            )
        });
    Ok(Flags {
        backend_url,
        server_id,
        channel_id,
        file,
        file_type,
        media_mode,
        ffmpeg_bin: raw.ffmpeg_bin,
        user_uid,
        device_id,
        chunk_bytes,
        interval_ms,
        repeat: go_bool("loop", &raw.r#loop)?,
        exit_after_send: go_bool("exit-after-send", &raw.exit_after_send)?,
        write_received_dir: Some(raw.write_received_dir.trim().to_owned()).filter(|d| !d.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Parsed {
        let mut all = vec!["openchat-rtc-joiner".to_owned()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        parse(all, [1, 2, 3, 4, 5, 6, 7, 8])
    }

    fn flags(args: &[&str]) -> Flags {
        match run(args) {
            Parsed::Run(flags) => *flags,
            other => panic!("{other:?}"),
        }
    }

    fn invalid(args: &[&str]) -> String {
        match run(args) {
            Parsed::Invalid(reason) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_follow_the_go_tool() {
        let f = flags(&["-channel-id", "vc_general"]);
        assert_eq!(f.backend_url, "http://localhost:8080");
        assert_eq!(f.server_id, "srv_harbor");
        assert_eq!(f.media_mode, MediaMode::PcmFrames);
        assert_eq!(f.ffmpeg_bin, "ffmpeg");
        assert_eq!((f.chunk_bytes, f.interval_ms), (8192, 20));
        assert_eq!(f.user_uid, "uid_joiner_01020304");
        assert_eq!(f.device_id, "device_joiner_05060708");
        assert!(!f.repeat && !f.exit_after_send);
        assert_eq!((f.file, f.write_received_dir), (None, None));
    }

    #[test]
    fn single_and_double_dashes_and_equals_all_work() {
        let f = flags(&[
            "--channel-id=vc_a",
            "-media-mode",
            "CHUNKS",
            "-backend-url=http://127.0.0.1:9/",
            "-loop",
            "--exit-after-send=true",
            "-server-id",
            "",
        ]);
        assert_eq!(f.channel_id, "vc_a");
        assert_eq!(f.media_mode, MediaMode::Chunks);
        assert_eq!(f.backend_url, "http://127.0.0.1:9");
        assert!(f.repeat && f.exit_after_send);
        assert_eq!(f.server_id, "srv_harbor", "empty means srv_harbor");
    }

    #[test]
    fn bad_flags_are_refused_with_a_reason() {
        assert!(invalid(&[]).contains("-channel-id is required"));
        assert!(invalid(&["-channel-id", "v", "-file", "a.wav"]).contains("-file-type is required"));
        assert!(invalid(&["-channel-id", "v", "-chunk-bytes", "0"]).contains("between 1 and 262144"));
        assert!(invalid(&["-channel-id", "v", "-chunk-bytes", "262145"]).contains("between 1 and 262144"));
        assert!(invalid(&["-channel-id", "v", "-interval-ms", "5001"]).contains("between 1 and 5000"));
        assert!(invalid(&["-channel-id", "v", "-media-mode", "carrier-pigeon"]).contains("-media-mode"));
        assert!(invalid(&["-channel-id", "v", "-backend-url", "ftp://x"]).contains("-backend-url"));
        assert!(invalid(&["-channel-id", "v", "-loop=maybe"]).contains("-loop"));
        assert!(!invalid(&["-channel-id", "v", "-no-such-flag"]).is_empty());
    }

    #[test]
    fn help_lists_every_flag() {
        let Parsed::Help(text) = run(&["--help"]) else {
            panic!()
        };
        for flag in [
            "--backend-url",
            "--server-id",
            "--channel-id",
            "--file",
            "--file-type",
            "--media-mode",
            "--ffmpeg-bin",
            "--user-uid",
            "--device-id",
            "--chunk-bytes",
            "--interval-ms",
            "--loop",
            "--exit-after-send",
            "--write-received-dir",
        ] {
            assert!(text.contains(flag), "{flag} missing from --help");
        }
    }
}
