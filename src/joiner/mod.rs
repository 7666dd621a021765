//! `openchat-rtc-joiner`: the voice test tool of WIRE.md §6. `flags` parses and validates
//! the Go tool's flags, `stream` cuts files into messages and rebuilds received streams
//! (sans-IO), `run` is the I/O shell (ticket, signaling socket, pacing, signals).

pub mod flags;
pub mod run;
pub mod stream;
pub mod webrtc;
