//! Arbitrary message bodies into the mention parser: never a panic, every range inside the
//! body's UTF-16 length and covering exactly its token, mentions in order and bounded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openchat_core::limits::MENTIONS_PER_MESSAGE_MAX;
use openchat_core::mention::{ChannelName, Person, parse};

const PEOPLE: &[Person<'static>] = &[
    Person { uid: "uid_seed_1", name: "Lyra" },
    Person { uid: "uid_0000aaaa", name: "Mira Vale" },
    Person { uid: "uid_0000bbbb", name: "Zoë Ångström" },
    Person { uid: "uid_0000cccc", name: "" },
];
const CHANNELS: &[ChannelName<'static>] = &[ChannelName { id: "ch_design", name: "design" }];

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else { return };
    let found = parse(body, "ch_general", PEOPLE, CHANNELS);
    assert!(found.len() <= MENTIONS_PER_MESSAGE_MAX);
    let utf16: Vec<u16> = body.encode_utf16().collect();
    let mut last_end = 0;
    for mention in &found {
        assert!(mention.start >= last_end && mention.start < mention.end);
        assert!(mention.end as usize <= utf16.len());
        let text = String::from_utf16(&utf16[mention.start as usize..mention.end as usize]).unwrap();
        assert_eq!(text, mention.token);
        last_end = mention.end;
    }
});
