//! What logs may say about a person or a credential: never the value, only a short keyed
//! hash of it ([`tag`]). The key is random per process, so tags tie log lines of one run
//! together (the same user, the same address) without being reversible or comparable across
//! runs. User ids, client addresses, tickets, tokens and key material go through here
//! before they reach a span or an event (STYLE.md §16).

use std::sync::OnceLock;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Hex characters of a tag (48 bits).
pub const TAG_HEX: usize = 12;

fn key() -> &'static hmac::Key {
    static KEY: OnceLock<hmac::Key> = OnceLock::new();
    KEY.get_or_init(|| {
        let mut bytes = [0u8; 32];
        if SystemRandom::new().fill(&mut bytes).is_err() {
            // No system randomness: fall back to the clock (the tags then say less, but
            // still never hold the value).
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            bytes[..16].copy_from_slice(&now.to_le_bytes());
        }
        hmac::Key::new(hmac::HMAC_SHA256, &bytes)
    })
}

/// The keyed hash of `value` for logs: [`TAG_HEX`] hex characters.
pub fn tag(value: &str) -> String {
    let digest = hmac::sign(key(), value.as_bytes());
    digest.as_ref()[..TAG_HEX / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_in_a_run_distinct_and_never_the_value() {
        assert_eq!(tag("uid_1234abcd"), tag("uid_1234abcd"));
        assert_ne!(tag("uid_1234abcd"), tag("uid_1234abce"));
        let t = tag("uid_1234abcd");
        assert_eq!(t.len(), TAG_HEX);
        assert!(!t.contains("1234abcd"));
    }
}
