//! Who is speaking, from the RTP audio-level header extension (RFC 6464): a sans-IO
//! detector per published audio track, fed each packet's level and the time, answering
//! with a change (`Some(true)` started, `Some(false)` stopped) at most once per transition.
//!
//! A track starts speaking when [`LOUD_PACKETS_TO_START`] packets at or above
//! [`LOUD_LEVEL_DBOV`] arrive within [`START_WINDOW`]; it stops after [`HANGOVER`] without a
//! loud packet (checked on packets and on timeouts, so a muted track that stops sending
//! also stops speaking). The hysteresis keeps one cough or a short pause from flapping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A packet at least this loud (audio level in dBov, 0 loudest, -127 silence) counts.
pub const LOUD_LEVEL_DBOV: i8 = -50;
/// Loud packets needed within [`START_WINDOW`] to start speaking.
pub const LOUD_PACKETS_TO_START: usize = 4;
pub const START_WINDOW: Duration = Duration::from_millis(300);
/// Quiet time after the last loud packet before speaking stops.
pub const HANGOVER: Duration = Duration::from_millis(800);

#[derive(Debug, Default)]
pub struct SpeakingDetector {
    /// Arrival times of the latest loud packets (at most [`LOUD_PACKETS_TO_START`]).
    loud: VecDeque<Instant>,
    speaking: bool,
    /// The loudest level since speaking started (reported with the start).
    peak: i8,
}

impl SpeakingDetector {
    pub fn is_speaking(&self) -> bool {
        self.speaking
    }

    /// One packet's audio level (`None`: the packet carried no level; it changes nothing).
    pub fn on_level(&mut self, now: Instant, level: Option<i8>) -> Option<bool> {
        if let Some(level) = level
            && level >= LOUD_LEVEL_DBOV
        {
            if self.loud.len() == LOUD_PACKETS_TO_START {
                self.loud.pop_front();
            }
            self.loud.push_back(now);
            self.peak = if self.speaking {
                self.peak.max(level)
            } else {
                level
            };
            let first = self.loud.front().copied().unwrap_or(now);
            if !self.speaking
                && self.loud.len() == LOUD_PACKETS_TO_START
                && now.saturating_duration_since(first) <= START_WINDOW
            {
                self.speaking = true;
                return Some(true);
            }
            return None;
        }
        self.on_timeout(now)
    }

    /// Time passing without packets: speaking stops after the hangover.
    pub fn on_timeout(&mut self, now: Instant) -> Option<bool> {
        let last = self.loud.back().copied()?;
        if self.speaking && now.saturating_duration_since(last) >= HANGOVER {
            self.speaking = false;
            self.loud.clear();
            return Some(false);
        }
        None
    }

    /// When [`SpeakingDetector::on_timeout`] next needs to run, if speaking.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.speaking {
            return None;
        }
        self.loud.back().map(|last| *last + HANGOVER)
    }

    /// The loudest level of the current talk spurt.
    pub fn peak(&self) -> i8 {
        self.peak
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACKET: Duration = Duration::from_millis(20);

    #[test]
    fn loud_packets_start_speaking_once_and_silence_stops_it_after_the_hangover() {
        let start = Instant::now();
        let mut d = SpeakingDetector::default();
        let mut changes = Vec::new();
        let mut now = start;
        for i in 0..100u32 {
            now = start + PACKET * i;
            // 1 s of speech, then 1 s of silence.
            let level = if i < 50 { -20 } else { -127 };
            if let Some(change) = d.on_level(now, Some(level)) {
                changes.push((i, change));
            }
        }
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0], (3, true), "starts on the fourth loud packet");
        let (stop_at, stopped) = changes[1];
        assert!(!stopped);
        // The last loud packet is #49; the hangover is 800 ms = 40 packets.
        assert_eq!(stop_at, 49 + 40);
        assert!(!d.is_speaking());
        let _ = now;
    }

    #[test]
    fn an_isolated_loud_packet_does_not_start_speaking() {
        let start = Instant::now();
        let mut d = SpeakingDetector::default();
        for i in 0..200u32 {
            // One loud packet a second: never four within 300 ms.
            let level = if i % 50 == 0 { -10 } else { -90 };
            assert_eq!(d.on_level(start + PACKET * i, Some(level)), None, "packet {i}");
        }
    }

    #[test]
    fn a_track_that_stops_sending_stops_speaking_on_timeout() {
        let start = Instant::now();
        let mut d = SpeakingDetector::default();
        for i in 0..10u32 {
            d.on_level(start + PACKET * i, Some(-30));
        }
        assert!(d.is_speaking());
        let deadline = d.deadline().unwrap();
        assert_eq!(d.on_timeout(deadline - Duration::from_millis(1)), None);
        assert_eq!(d.on_timeout(deadline), Some(false));
        assert_eq!(d.deadline(), None);
        assert_eq!(d.on_timeout(deadline + HANGOVER), None);
    }

    #[test]
    fn packets_without_a_level_change_nothing() {
        let start = Instant::now();
        let mut d = SpeakingDetector::default();
        for i in 0..100u32 {
            assert_eq!(d.on_level(start + PACKET * i, None), None);
        }
    }
}
