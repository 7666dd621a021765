//! Arbitrary bytes into the signaling parser: never a panic; accepted messages re-parse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchat_core::protocol::{REQUEST_ID_BYTES_MAX, parse_signaling};

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = parse_signaling(data) {
        assert!(envelope.request_id.as_ref().is_none_or(|id| id.len() <= REQUEST_ID_BYTES_MAX));
    }
});
