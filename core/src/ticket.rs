//! RTC join tickets (WIRE.md §5.1) and TURN REST credentials.
//!
//! A ticket is `base64url_nopad(JSON claims) + "." + base64url_nopad(HMAC-SHA256(secret,
//! <that base64 string>))`; claims are, in this order, `server_id`, `channel_id`, `user_uid`,
//! `device_id`, `permissions`, `exp`, `iat`, `jti`. Tickets are single use: [`ReplayGuard`]
//! remembers each `jti` until it expires, in bounded memory, and fails closed when full.

use std::collections::{BTreeSet, HashMap};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::hmac;
use serde::{Deserialize, Serialize};

use crate::model::UnixSeconds;

/// Longest ticket accepted, in bytes.
pub const TICKET_BYTES_MAX: usize = 4096;

/// What a participant may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permissions {
    pub speak: bool,
    pub video: bool,
    pub screenshare: bool,
}

impl Permissions {
    pub const ALL: Permissions = Permissions {
        speak: true,
        video: true,
        screenshare: true,
    };
}

/// The claims of a join ticket, in wire order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketClaims {
    pub server_id: String,
    pub channel_id: String,
    pub user_uid: String,
    pub device_id: String,
    pub permissions: Permissions,
    pub exp: UnixSeconds,
    pub iat: UnixSeconds,
    pub jti: String,
}

/// Why a ticket is refused; the messages are the ones clients see in `rtc_join_denied`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    #[error("invalid join ticket")]
    Invalid,
    #[error("join ticket expired")]
    Expired,
    #[error("join ticket replayed")]
    Replayed,
    #[error("join ticket is for another channel")]
    WrongChannel,
    #[error("too many recent joins; try again shortly")]
    ReplayMemoryFull,
}

/// Signs and verifies tickets with one secret.
#[derive(Clone)]
pub struct TicketSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for TicketSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketSigner(<secret>)")
    }
}

impl TicketSigner {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    pub fn sign(&self, claims: &TicketClaims) -> String {
        // Serialising a struct of strings, bools and integers cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let tag = hmac::sign(&self.key, payload.as_bytes());
        format!("{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks format, signature and expiry (not replay: see [`ReplayGuard`]).
    pub fn verify(&self, ticket: &str, now: UnixSeconds) -> Result<TicketClaims, TicketError> {
        if ticket.len() > TICKET_BYTES_MAX {
            return Err(TicketError::Invalid);
        }
        let (payload, signature) = ticket.split_once('.').ok_or(TicketError::Invalid)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TicketError::Invalid)?;
        hmac::verify(&self.key, payload.as_bytes(), &signature).map_err(|_| TicketError::Invalid)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TicketError::Invalid)?;
        let claims: TicketClaims = serde_json::from_slice(&json).map_err(|_| TicketError::Invalid)?;
        if claims.exp <= now {
            return Err(TicketError::Expired);
        }
        Ok(claims)
    }
}

/// Single-use memory of ticket ids: each `jti` is kept until its ticket expires. When the
/// memory is full of unexpired ids it refuses new ones (fails closed) instead of forgetting.
#[derive(Debug)]
pub struct ReplayGuard {
    seen: HashMap<String, UnixSeconds>,
    by_expiry: BTreeSet<(UnixSeconds, String)>,
    capacity: usize,
}

impl ReplayGuard {
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: HashMap::new(),
            by_expiry: BTreeSet::new(),
            capacity: capacity.max(1),
        }
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    fn prune(&mut self, now: UnixSeconds) {
        while let Some((exp, _)) = self.by_expiry.first() {
            if *exp > now {
                break;
            }
            if let Some((_, jti)) = self.by_expiry.pop_first() {
                self.seen.remove(&jti);
            }
        }
    }

    /// Records a ticket's use; `Err(Replayed)` if it was used before.
    pub fn use_once(&mut self, claims: &TicketClaims, now: UnixSeconds) -> Result<(), TicketError> {
        self.prune(now);
        if self.seen.contains_key(&claims.jti) {
            return Err(TicketError::Replayed);
        }
        if self.seen.len() >= self.capacity {
            return Err(TicketError::ReplayMemoryFull);
        }
        self.seen.insert(claims.jti.clone(), claims.exp);
        self.by_expiry.insert((claims.exp, claims.jti.clone()));
        Ok(())
    }
}

/// TURN REST ephemeral credentials (the scheme coturn's `use-auth-secret` accepts):
/// username `"<expiry unix>:<user>"`, credential `base64(HMAC-SHA1(secret, username))`.
pub fn turn_credentials(secret: &[u8], user: &str, expires_at: UnixSeconds) -> (String, String) {
    let username = format!("{expires_at}:{user}");
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let credential = STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref());
    (username, credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(jti: &str, exp: i64) -> TicketClaims {
        TicketClaims {
            server_id: "srv_harbor".into(),
            channel_id: "vc_general".into(),
            user_uid: "uid_1".into(),
            device_id: "desktop_1".into(),
            permissions: Permissions {
                speak: true,
                video: false,
                screenshare: true,
            },
            exp,
            iat: exp - 60,
            jti: jti.into(),
        }
    }

    #[test]
    fn a_signed_ticket_verifies_with_its_claims_in_wire_order() {
        let signer = TicketSigner::new(b"secret-secret-secret");
        let ticket = signer.sign(&claims("j1", 1000));
        let (payload, _) = ticket.split_once('.').unwrap();
        let json = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(
            json.starts_with(r#"{"server_id":"srv_harbor","channel_id":"vc_general","user_uid""#),
            "{json}"
        );
        assert!(json.ends_with(r#""exp":1000,"iat":940,"jti":"j1"}"#), "{json}");
        assert_eq!(signer.verify(&ticket, 999).unwrap(), claims("j1", 1000));
    }

    #[test]
    fn expired_tampered_and_foreign_tickets_are_refused() {
        let signer = TicketSigner::new(b"secret-secret-secret");
        let ticket = signer.sign(&claims("j1", 1000));
        assert_eq!(signer.verify(&ticket, 1000), Err(TicketError::Expired));
        assert_eq!(
            TicketSigner::new(b"other-secret-secret").verify(&ticket, 0),
            Err(TicketError::Invalid)
        );
        let (payload, signature) = ticket.split_once('.').unwrap();
        let mut forged = claims("j1", 1000);
        forged.permissions = Permissions::ALL;
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            signer.verify(&format!("{forged_payload}.{signature}"), 0),
            Err(TicketError::Invalid)
        );
        let mut bad_sig = signature.to_owned();
        bad_sig.replace_range(0..1, if bad_sig.starts_with('A') { "B" } else { "A" });
        assert_eq!(
            signer.verify(&format!("{payload}.{bad_sig}"), 0),
            Err(TicketError::Invalid)
        );
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(TICKET_BYTES_MAX + 1)] {
            assert_eq!(signer.verify(junk, 0), Err(TicketError::Invalid), "{junk:.20}");
        }
    }

    #[test]
    fn tickets_are_single_use_until_they_expire() {
        let mut guard = ReplayGuard::new(10);
        guard.use_once(&claims("a", 100), 50).unwrap();
        assert_eq!(guard.use_once(&claims("a", 100), 60), Err(TicketError::Replayed));
        // Once expired it is forgotten (an expired ticket fails verification anyway).
        guard.use_once(&claims("b", 200), 150).unwrap();
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn replay_memory_stays_bounded_and_fails_closed_under_a_flood() {
        let mut guard = ReplayGuard::new(1000);
        let mut refused = 0;
        for i in 0..10_000 {
            if guard.use_once(&claims(&format!("j{i}"), 10_000), 0).is_err() {
                refused += 1;
            }
            assert!(guard.len() <= 1000);
        }
        assert_eq!(refused, 9_000);
        assert_eq!(
            guard.use_once(&claims("late", 20_000), 1),
            Err(TicketError::ReplayMemoryFull)
        );
        assert_eq!(
            guard.use_once(&claims("j1", 20_000), 1),
            Err(TicketError::Replayed),
            "still remembered"
        );
        // After the flood expires, there is room again.
        guard.use_once(&claims("after", 20_000), 10_000).unwrap();
        assert_eq!(guard.len(), 1);
    }

    #[test]
    fn turn_credentials_follow_the_rest_scheme() {
        // Verified against the coturn documentation's construction (HMAC-SHA1, base64).
        let (username, credential) = turn_credentials(b"north", "uid_1", 1_700_000_000);
        assert_eq!(username, "1700000000:uid_1");
        let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"north");
        let expected = STANDARD.encode(hmac::sign(&key, b"1700000000:uid_1").as_ref());
        assert_eq!(credential, expected);
        assert_eq!(STANDARD.decode(&credential).unwrap().len(), 20);
    }
}
