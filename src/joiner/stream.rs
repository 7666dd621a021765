//! What the joiner sends and rebuilds, without I/O: a file cut into `rtc.media.state`
//! messages (chunks, or 48 kHz mono s16le PCM frames), and the reassembly of streams other
//! participants send (WIRE.md §6), with bounds on how much is held.

use std::collections::{BTreeMap, HashMap};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

/// Streams being rebuilt at once, and bytes held per stream; beyond them a stream is
/// dropped with a warning.
pub const RECEIVED_STREAMS_MAX: usize = 64;
pub const RECEIVED_STREAM_BYTES_MAX: usize = 512 * 1024 * 1024;
/// PCM: 48 kHz, mono, 16-bit.
pub const PCM_SAMPLE_RATE_HZ: u64 = 48_000;

/// How the pieces are labelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Chunks,
    Pcm { interval_ms: u64 },
}

/// A file ready to send, cut into pieces.
#[derive(Debug, Clone)]
pub struct Transmission {
    pub kind: Kind,
    pub pieces: Vec<Vec<u8>>,
    pub stream_id: String,
    pub file_name: String,
    /// `--file-type`.
    pub file_type: String,
    pub transmitter_uid: String,
}

/// Bytes of one PCM frame of `interval_ms` (960 samples = 1920 bytes at 20 ms).
pub fn pcm_frame_bytes(interval_ms: u64) -> usize {
    (PCM_SAMPLE_RATE_HZ * interval_ms / 1000 * 2) as usize
}

impl Transmission {
    pub fn cut(kind: Kind, bytes: &[u8], chunk_bytes: usize) -> Vec<Vec<u8>> {
        let size = match kind {
            Kind::Chunks => chunk_bytes,
            Kind::Pcm { interval_ms } => pcm_frame_bytes(interval_ms),
        }
        .max(1);
        bytes.chunks(size).map(<[u8]>::to_vec).collect()
    }

    pub fn total(&self) -> usize {
        self.pieces.len()
    }

    pub fn bytes(&self) -> usize {
        self.pieces.iter().map(Vec::len).sum()
    }

    /// The `rtc.media.state` envelope of piece `seq` in loop `loop_iteration` (from 1).
    pub fn message(&self, channel_id: &str, loop_iteration: u64, seq: usize, transmitted_at: &str) -> Value {
        let piece = &self.pieces[seq];
        let mut payload = json!({
            "stream_id": self.stream_id,
            "file_name": self.file_name,
            "loop_iteration": loop_iteration,
            "seq": seq,
            "total_seq": self.total(),
            "chunk_b64": STANDARD.encode(piece),
            "eof": seq + 1 == self.total(),
            "transmitted_at": transmitted_at,
            "transmitter_uid": self.transmitter_uid,
        });
        let request_id = match self.kind {
            Kind::Chunks => {
                payload["stream_kind"] = json!("audio_file_chunks");
                payload["file_type"] = json!(self.file_type);
                format!("media_{loop_iteration}_{seq}")
            }
            Kind::Pcm { interval_ms } => {
                payload["stream_kind"] = json!("audio_pcm_s16le_48k_mono");
                payload["file_type"] = json!("pcm_s16le");
                payload["source_file_type"] = json!(self.file_type);
                payload["sample_rate_hz"] = json!(PCM_SAMPLE_RATE_HZ);
                payload["channels"] = json!(1);
                payload["frame_duration_ms"] = json!(interval_ms);
                format!("pcm_{loop_iteration}_{seq}")
            }
        };
        json!({"type": "rtc.media.state", "request_id": request_id, "channel_id": channel_id, "payload": payload})
    }
}

/// The file name a completed stream is written under (WIRE.md §6): the sender's base name
/// (never a path), else `incoming_<participant>_<stream>.bin`; without an extension,
/// `.<file_type with only [a-z0-9] kept, or "bin">` is appended.
pub fn output_name(file_name: &str, file_type: &str, participant: &str, stream: &str) -> String {
    let base = std::path::Path::new(file_name)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .map(str::to_owned);
    let safe = |s: &str| {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
            .collect::<String>()
    };
    let name = base.unwrap_or_else(|| format!("incoming_{}_{}.bin", safe(participant), safe(stream)));
    if std::path::Path::new(&name).extension().is_some() {
        return name;
    }
    let ext: String = file_type
        .chars()
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect();
    format!("{name}.{}", if ext.is_empty() { "bin" } else { &ext })
}

#[derive(Debug, Default)]
struct Incoming {
    total: usize,
    chunks: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

/// What one received media state meant.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// Not a file stream, our own, or a chunk stored.
    Nothing,
    /// Every chunk arrived: write `bytes` to `name`.
    Complete {
        participant: String,
        name: String,
        bytes: Vec<u8>,
    },
    /// `eof` arrived but chunks are missing: nothing is written.
    Incomplete {
        participant: String,
        stream: String,
        have: usize,
        total: usize,
    },
    /// The stream broke a bound or was malformed; it is dropped.
    Dropped {
        participant: String,
        stream: String,
        reason: String,
    },
}

/// Rebuilds streams keyed by `participant_id:stream_id`.
#[derive(Debug, Default)]
pub struct Reassembler {
    streams: HashMap<String, Incoming>,
    /// Our own participant id (our own stream is ignored).
    pub own: Option<String>,
}

impl Reassembler {
    /// One `rtc.media.state` payload (with the `participant_id` the server added).
    pub fn on_media_state(&mut self, payload: &Value) -> Received {
        let text = |k: &str| payload.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let participant = text("participant_id");
        let stream = text("stream_id");
        let Some(chunk) = payload.get("chunk_b64").and_then(Value::as_str) else {
            return Received::Nothing;
        };
        if stream.is_empty() || self.own.as_deref() == Some(participant.as_str()) {
            return Received::Nothing;
        }
        let key = format!("{participant}:{stream}");
        let drop = |streams: &mut HashMap<String, Incoming>, reason: String| {
            streams.remove(&key);
            Received::Dropped {
                participant: participant.clone(),
                stream: stream.clone(),
                reason,
            }
        };
        let (Some(seq), Some(total)) = (
            payload.get("seq").and_then(Value::as_u64),
            payload.get("total_seq").and_then(Value::as_u64),
        ) else {
            return drop(&mut self.streams, "seq or total_seq missing".into());
        };
        let Ok(bytes) = STANDARD.decode(chunk) else {
            return drop(&mut self.streams, "chunk_b64 is not base64".into());
        };
        if !self.streams.contains_key(&key) && self.streams.len() >= RECEIVED_STREAMS_MAX {
            return drop(
                &mut self.streams,
                format!("more than {RECEIVED_STREAMS_MAX} streams at once"),
            );
        }
        let incoming = self.streams.entry(key.clone()).or_insert_with(|| Incoming {
            total: total as usize,
            ..Incoming::default()
        });
        incoming.bytes += bytes.len();
        let (total_seen, held) = (incoming.total, incoming.bytes);
        if seq >= total_seen as u64 {
            return drop(
                &mut self.streams,
                format!("seq {seq} is beyond total_seq {total_seen}"),
            );
        }
        if held > RECEIVED_STREAM_BYTES_MAX {
            return drop(
                &mut self.streams,
                format!("stream exceeds {RECEIVED_STREAM_BYTES_MAX} bytes"),
            );
        }
        let Some(incoming) = self.streams.get_mut(&key) else {
            return Received::Nothing;
        };
        if let Some(old) = incoming.chunks.insert(seq, bytes) {
            incoming.bytes -= old.len();
        }
        if payload.get("eof").and_then(Value::as_bool) != Some(true) {
            return Received::Nothing;
        }
        let Some(incoming) = self.streams.remove(&key) else {
            return Received::Nothing;
        };
        let complete = incoming.chunks.len() == incoming.total
            && (0..incoming.total as u64).all(|s| incoming.chunks.contains_key(&s));
        if !complete {
            return Received::Incomplete {
                participant,
                stream,
                have: incoming.chunks.len(),
                total: incoming.total,
            };
        }
        let name = output_name(&text("file_name"), &text("file_type"), &participant, &stream);
        Received::Complete {
            participant,
            name,
            bytes: incoming.chunks.into_values().flatten().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmission(kind: Kind, bytes: &[u8], chunk: usize) -> Transmission {
        Transmission {
            pieces: Transmission::cut(kind.clone(), bytes, chunk),
            kind,
            stream_id: "stream_ab".into(),
            file_name: "song.mp3".into(),
            file_type: "mp3".into(),
            transmitter_uid: "uid_a".into(),
        }
    }

    #[test]
    fn chunk_messages_carry_the_contract_fields() {
        let t = transmission(Kind::Chunks, &[1, 2, 3, 4, 5], 2);
        assert_eq!(t.total(), 3);
        let m = t.message("vc_x", 1, 2, "2026-01-01T00:00:00.000000001Z");
        assert_eq!(m["type"], "rtc.media.state");
        assert_eq!(m["request_id"], "media_1_2");
        assert_eq!(m["channel_id"], "vc_x");
        let p = &m["payload"];
        assert_eq!(p["stream_kind"], "audio_file_chunks");
        assert_eq!(
            (p["seq"].as_u64(), p["total_seq"].as_u64(), p["eof"].as_bool()),
            (Some(2), Some(3), Some(true))
        );
        assert_eq!(p["chunk_b64"], "BQ==");
        assert_eq!(p["file_type"], "mp3");
    }

    #[test]
    fn pcm_frames_are_interval_long_and_labelled() {
        assert_eq!(pcm_frame_bytes(20), 1920);
        let t = transmission(Kind::Pcm { interval_ms: 20 }, &vec![0u8; 1920 * 2 + 10], 7);
        assert_eq!(
            t.pieces.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![1920, 1920, 10]
        );
        let p = &t.message("vc", 2, 0, "t")["payload"];
        assert_eq!(p["stream_kind"], "audio_pcm_s16le_48k_mono");
        assert_eq!(
            (p["file_type"].as_str(), p["source_file_type"].as_str()),
            (Some("pcm_s16le"), Some("mp3"))
        );
        assert_eq!(
            (
                p["sample_rate_hz"].as_u64(),
                p["channels"].as_u64(),
                p["frame_duration_ms"].as_u64()
            ),
            (Some(48000), Some(1), Some(20))
        );
        assert_eq!(t.message("vc", 2, 0, "t")["request_id"], "pcm_2_0");
    }

    #[test]
    fn names_are_base_names_with_an_extension() {
        assert_eq!(output_name("song.mp3", "pcm_s16le", "p", "s"), "song.mp3");
        assert_eq!(output_name("../../etc/passwd", "txt", "p", "s"), "passwd.txt");
        assert_eq!(output_name("", "", "p1", "s1"), "incoming_p1_s1.bin");
        assert_eq!(output_name("notes", "Text/Plain!", "p", "s"), "notes.extlain");
        assert_eq!(output_name("notes", "", "p", "s"), "notes.bin");
    }

    fn state(participant: &str, t: &Transmission, seq: usize) -> Value {
        let mut payload = t.message("vc", 1, seq, "t")["payload"].clone();
        payload["participant_id"] = json!(participant);
        payload
    }

    #[test]
    fn a_stream_is_rebuilt_in_seq_order_and_only_when_complete() {
        let data: Vec<u8> = (0..=255).collect();
        let t = transmission(Kind::Chunks, &data, 100);
        let mut r = Reassembler::default();
        assert_eq!(r.on_media_state(&state("p_b", &t, 1)), Received::Nothing);
        assert_eq!(r.on_media_state(&state("p_b", &t, 0)), Received::Nothing);
        match r.on_media_state(&state("p_b", &t, 2)) {
            Received::Complete { name, bytes, .. } => {
                assert_eq!(name, "song.mp3");
                assert_eq!(bytes, data);
            }
            other => panic!("{other:?}"),
        }
        // A missing chunk: nothing is written.
        assert_eq!(r.on_media_state(&state("p_b", &t, 0)), Received::Nothing);
        assert!(matches!(
            r.on_media_state(&state("p_b", &t, 2)),
            Received::Incomplete {
                have: 2,
                total: 3,
                ..
            }
        ));
        // Our own stream is ignored.
        r.own = Some("p_me".into());
        assert_eq!(r.on_media_state(&state("p_me", &t, 2)), Received::Nothing);
        // Garbage is dropped, never a panic.
        let mut bad = state("p_b", &t, 0);
        bad["chunk_b64"] = json!("%%%");
        assert!(matches!(r.on_media_state(&bad), Received::Dropped { .. }));
    }
}
