//! `channel_id -> shard`: a pure function with a fixed seed, so every thread and every
//! restart agrees on which shard owns a channel's room.
//!
//! The channel id is hashed with FNV-1a (64 bit, fixed offset) and placed with Lamping and
//! Veach's jump consistent hash: balanced, and when the shard count changes from n to n+1
//! only about 1/(n+1) of the channels move.

use crate::ids::ChannelId;

/// Fixed seed mixed into the hash; changing it moves every room.
const SEED: u64 = 0x6f70_656e_6368_6174; // "openchat"

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ SEED;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// Jump consistent hash of `key` into `buckets` buckets (`buckets >= 1`).
pub fn jump_hash(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets.max(1) as i64;
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1u64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// The shard (0-based) that owns `channel`'s room among `shards` shards.
pub fn shard_for(channel: &ChannelId, shards: usize) -> usize {
    jump_hash(fnv1a(channel.as_str().as_bytes()), shards)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn channel(i: usize) -> ChannelId {
        ChannelId::parse(&format!("vc_{i:08x}")).unwrap()
    }

    #[test]
    fn placement_is_stable_and_in_range() {
        let id = ChannelId::parse("vc_general").unwrap();
        assert_eq!(shard_for(&id, 1), 0);
        assert_eq!(shard_for(&id, 7), shard_for(&id, 7));
        for shards in 1..20 {
            assert!(shard_for(&id, shards) < shards);
        }
    }

    #[test]
    fn a_thousand_channels_spread_within_a_quarter_of_even() {
        for shards in [2, 3, 4, 8, 16] {
            let mut counts = vec![0usize; shards];
            for i in 0..1000 {
                counts[shard_for(&channel(i), shards)] += 1;
            }
            let even = 1000.0 / shards as f64;
            for count in &counts {
                assert!(
                    (*count as f64 - even).abs() <= even * 0.25,
                    "{shards} shards: {counts:?}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn growing_by_one_shard_only_moves_channels_to_the_new_shard(shards in 1usize..64, seed in 0usize..1_000_000) {
            let mut moved = 0;
            for i in seed..seed + 500 {
                let id = channel(i);
                let (before, after) = (shard_for(&id, shards), shard_for(&id, shards + 1));
                if before != after {
                    prop_assert_eq!(after, shards, "a channel moved between old shards");
                    moved += 1;
                }
            }
            // Expected 500/(n+1); allow generous slack for small samples.
            let expected = 500.0 / (shards + 1) as f64;
            prop_assert!((moved as f64) <= expected * 2.0 + 20.0, "moved {} of 500, expected about {}", moved, expected);
        }
    }
}
