//! Arbitrary sequences of room operations, with the room's invariants checked after each.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    openchat_media::ops::run(data);
});
