//! Replays the committed `room_ops` fuzz corpus through the room with its invariants.

#![allow(clippy::unwrap_used)]

#[test]
fn room_ops_corpus_keeps_the_room_invariants() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/room_ops");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        openchat_media::ops::run(&bytes);
        count += 1;
    }
    assert!(count >= 2, "the seed corpus is committed");
}
