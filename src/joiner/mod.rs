//! `openchat-rtc-joiner`: the voice test tool of WIRE.md §6. `flags` parses and validates
//! the Go tool's flags, `stream` cuts files into messages and rebuilds received streams
//! (sans-IO), `signal` gets the join ticket and opens the signaling socket, `run` is the
//! I/O shell of the data-channel transport (pacing, signals) and hands the WebRTC transport
//! to `webrtc`.

pub mod flags;
pub mod run;
pub mod signal;
pub mod stream;
pub mod webrtc;
