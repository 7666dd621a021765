//! Replays the committed fuzz corpus (`fuzz/corpus`) through the parsers, so the stable
//! test run covers every input the fuzzers were seeded with (and any crash they found and
//! we committed as a regression input).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use openchat_core::protocol::{parse_chat, parse_signaling};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn signaling_corpus_parses_without_panics_and_real_messages_are_accepted() {
    let inputs = corpus("signaling_parse");
    assert!(inputs.len() >= 10, "the seed corpus is committed");
    let mut accepted = 0;
    for (path, bytes) in &inputs {
        let result = std::panic::catch_unwind(|| parse_signaling(bytes));
        assert!(result.is_ok(), "parser panicked on {}", path.display());
        if result.unwrap().is_ok() {
            accepted += 1;
        }
    }
    assert!(
        accepted >= 10,
        "the client's real messages parse ({accepted} of {})",
        inputs.len()
    );
}

#[test]
fn chat_corpus_parses_without_panics() {
    let inputs = corpus("chat_parse");
    assert!(inputs.len() >= 4);
    let accepted = inputs
        .iter()
        .filter(|(_, bytes)| parse_chat(bytes).is_ok())
        .count();
    assert!(accepted >= 4, "{accepted}");
}

#[test]
fn mention_corpus_parses_with_ranges_that_cover_their_tokens() {
    use openchat_core::mention::{ChannelName, Person, parse};
    let people = [
        Person {
            uid: "uid_seed_1",
            name: "Lyra",
        },
        Person {
            uid: "uid_0000aaaa",
            name: "Mira Vale",
        },
        Person {
            uid: "uid_0000bbbb",
            name: "Zoë Ångström",
        },
    ];
    let channels = [ChannelName {
        id: "ch_design",
        name: "design",
    }];
    let inputs = corpus("mention_parse");
    assert!(inputs.len() >= 2);
    let mut found = 0;
    for (_, bytes) in &inputs {
        let Ok(body) = std::str::from_utf8(bytes) else {
            continue;
        };
        let utf16: Vec<u16> = body.encode_utf16().collect();
        for mention in parse(body, "ch_general", &people, &channels) {
            let text = String::from_utf16(&utf16[mention.start as usize..mention.end as usize]).unwrap();
            assert_eq!(text, mention.token);
            found += 1;
        }
    }
    assert!(found >= 6, "the seed bodies hold mentions ({found})");
}
