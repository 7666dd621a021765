#![allow(clippy::unwrap_used, missing_docs)]
//! The signaling and realtime parsers on the messages the client sends most.

use criterion::{Criterion, criterion_group, criterion_main};
use openchat_core::protocol::{parse_chat, parse_signaling};

fn benches(c: &mut Criterion) {
    let media_state = br#"{"type":"rtc.media.state","request_id":"pcm_1_7","channel_id":"vc_general","payload":{"stream_id":"stream_ab12cd34","stream_kind":"audio_pcm_s16le_48k_mono","seq":7,"total_seq":100,"chunk_b64":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","eof":false}}"#;
    let offer = br#"{"type":"rtc.offer.subscribe","request_id":"offer_1_subscribe","payload":{"type":"offer","sdp":"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n","direction":"subscribe"}}"#;
    let typing =
        br#"{"type":"chat.typing","request_id":"t1","payload":{"channel_id":"ch_general","is_typing":true}}"#;
    c.bench_function("parse_signaling/media_state", |b| {
        b.iter(|| parse_signaling(std::hint::black_box(media_state)))
    });
    c.bench_function("parse_signaling/offer", |b| {
        b.iter(|| parse_signaling(std::hint::black_box(offer)))
    });
    c.bench_function("parse_chat/typing", |b| {
        b.iter(|| parse_chat(std::hint::black_box(typing)))
    });
}

criterion_group!(wire_parse, benches);
criterion_main!(wire_parse);
