//! What the load generator measures with: the stamp every generated RTP payload carries
//! (who sent it, its number, when), the payload profiles, and CPU time read from `/proc`.
//! Pure functions, tested here; no I/O except the `/proc` readers at the bottom.

use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Marks a generated payload.
pub const STAMP_MAGIC: [u8; 4] = *b"OCLG";
/// magic (4) + publisher (4) + sequence (8) + send time in ns since [`epoch`] (8).
pub const STAMP_BYTES: usize = 24;

/// The process-wide clock origin of send stamps (sender and receivers share the process).
pub fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds from [`epoch`] to `at`.
pub fn since_epoch(at: Instant) -> u64 {
    at.saturating_duration_since(epoch()).as_nanos() as u64
}

/// One generated packet's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub publisher: u32,
    pub seq: u64,
    pub sent_ns: u64,
}

/// The media a publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Opus-like: 50 packets/s of 160 bytes.
    Audio,
    /// Camera-like: 30 frames/s of 4 packets of 1100 bytes (120 packets/s, ~1 Mbit/s).
    Video,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Self::Audio => "audio",
            Self::Video => "video",
        }
    }
    /// RTP payload bytes per packet.
    pub fn payload_bytes(self) -> usize {
        match self {
            Self::Audio => 160,
            Self::Video => 1100,
        }
    }
    /// Packets sent together (one frame).
    pub fn packets_per_frame(self) -> u64 {
        match self {
            Self::Audio => 1,
            Self::Video => 4,
        }
    }
    /// Time between frames.
    pub fn frame_interval(self) -> Duration {
        match self {
            Self::Audio => Duration::from_millis(20),
            Self::Video => Duration::from_micros(33_333),
        }
    }
    /// RTP clock ticks per frame (48 kHz audio, 90 kHz video).
    pub fn ticks_per_frame(self) -> u32 {
        match self {
            Self::Audio => 960,
            Self::Video => 3000,
        }
    }
    pub fn packets_per_second(self) -> f64 {
        self.packets_per_frame() as f64 / self.frame_interval().as_secs_f64()
    }
    /// Bytes before the stamp: a one-byte VP8 payload descriptor for video (RFC 7741 §4.2:
    /// S set on a frame's first packet, partition 0), nothing for audio.
    pub fn prefix_bytes(self) -> usize {
        match self {
            Self::Audio => 0,
            Self::Video => 1,
        }
    }
}

/// A payload of the profile's size: prefix, stamp, then padding whose every byte is the
/// sequence number's low byte (so a receiver can check the whole payload cheaply).
pub fn payload(profile: Profile, stamp: Stamp, first_of_frame: bool) -> Vec<u8> {
    let mut out = vec![stamp.seq as u8; profile.payload_bytes()];
    let prefix = profile.prefix_bytes();
    if prefix == 1 {
        out[0] = if first_of_frame { 0x10 } else { 0x00 };
    }
    let s = &mut out[prefix..prefix + STAMP_BYTES];
    s[..4].copy_from_slice(&STAMP_MAGIC);
    s[4..8].copy_from_slice(&stamp.publisher.to_be_bytes());
    s[8..16].copy_from_slice(&stamp.seq.to_be_bytes());
    s[16..24].copy_from_slice(&stamp.sent_ns.to_be_bytes());
    out
}

/// Why a received payload is not one the generator sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("payload of {0} bytes, expected {1}")]
    Length(usize, usize),
    #[error("no stamp")]
    NoStamp,
    #[error("padding damaged")]
    Padding,
}

/// The stamp of a payload made by [`payload`], after checking its length and padding.
pub fn check(profile: Profile, bytes: &[u8]) -> Result<Stamp, PayloadError> {
    if bytes.len() != profile.payload_bytes() {
        return Err(PayloadError::Length(bytes.len(), profile.payload_bytes()));
    }
    let prefix = profile.prefix_bytes();
    let s = &bytes[prefix..prefix + STAMP_BYTES];
    if s[..4] != STAMP_MAGIC {
        return Err(PayloadError::NoStamp);
    }
    let word = |r: std::ops::Range<usize>| s[r].iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
    let stamp = Stamp {
        publisher: word(4..8) as u32,
        seq: word(8..16),
        sent_ns: word(16..24),
    };
    if bytes[prefix + STAMP_BYTES..]
        .iter()
        .any(|b| *b != stamp.seq as u8)
    {
        return Err(PayloadError::Padding);
    }
    Ok(stamp)
}

/// On-CPU nanoseconds of one thread, from its `schedstat` ("<on cpu ns> <wait ns> <slices>").
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// On-CPU time of a process's threads whose name starts with `prefix` (every thread for
/// ""), summed over `/proc/<pid>/task/*`. Threads that ended meanwhile are not counted.
pub fn threads_cpu(pid: u32, prefix: &str) -> Duration {
    threads_cpu_in(&Path::new("/proc").join(pid.to_string()), prefix)
}

/// [`threads_cpu`] for this process.
pub fn own_cpu() -> Duration {
    threads_cpu_in(Path::new("/proc/self"), "")
}

fn threads_cpu_in(process: &Path, prefix: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir(process.join("task")) else {
        return Duration::ZERO;
    };
    let mut total = 0u64;
    for task in tasks.flatten() {
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        if let Some(ns) = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .as_deref()
            .and_then(parse_schedstat)
        {
            total += ns;
        }
    }
    Duration::from_nanos(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_carry_their_stamp_for_both_profiles() {
        for profile in [Profile::Audio, Profile::Video] {
            let stamp = Stamp {
                publisher: 7,
                seq: 1_234_567,
                sent_ns: 9_876_543_210,
            };
            let bytes = payload(profile, stamp, true);
            assert_eq!(bytes.len(), profile.payload_bytes());
            assert_eq!(check(profile, &bytes), Ok(stamp));
        }
        assert_eq!(
            payload(
                Profile::Video,
                Stamp {
                    publisher: 0,
                    seq: 0,
                    sent_ns: 0
                },
                true
            )[0],
            0x10
        );
        assert_eq!(
            payload(
                Profile::Video,
                Stamp {
                    publisher: 0,
                    seq: 0,
                    sent_ns: 0
                },
                false
            )[0],
            0x00
        );
    }

    #[test]
    fn damaged_or_foreign_payloads_are_refused() {
        let stamp = Stamp {
            publisher: 1,
            seq: 2,
            sent_ns: 3,
        };
        let mut bytes = payload(Profile::Audio, stamp, true);
        assert_eq!(
            check(Profile::Audio, &bytes[..100]),
            Err(PayloadError::Length(100, 160))
        );
        bytes[150] ^= 1;
        assert_eq!(check(Profile::Audio, &bytes), Err(PayloadError::Padding));
        assert_eq!(check(Profile::Audio, &[0u8; 160]), Err(PayloadError::NoStamp));
    }

    #[test]
    fn schedstat_gives_the_on_cpu_time() {
        assert_eq!(parse_schedstat("123456789 555 12\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        // This thread has run, so the process has used some CPU.
        assert!(own_cpu() > Duration::ZERO);
    }

    #[test]
    fn profiles_have_the_documented_rates() {
        assert_eq!(Profile::Audio.packets_per_second().round(), 50.0);
        assert_eq!(Profile::Video.packets_per_second().round(), 120.0);
    }
}
