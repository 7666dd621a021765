//! Arbitrary bytes into the realtime chat parser: never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchat_core::protocol::parse_chat;

fuzz_target!(|data: &[u8]| {
    let _ = parse_chat(data);
});
