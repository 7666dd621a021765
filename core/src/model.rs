//! The closed enums that cross threads and crates. Each has one string form, used on the
//! wire and in the database alike, and a total parser for it.

use std::fmt;

/// Seconds since the Unix epoch. Time is passed in by callers; core never reads a clock.
pub type UnixSeconds = i64;

/// An unknown value for one of the closed enums below.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not one of {allowed}")]
pub struct EnumError {
    pub value: String,
    pub allowed: &'static str,
}

macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Result<Self, EnumError> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(EnumError {
                        value: raw.to_owned(),
                        allowed: concat!($($text, " "),+),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// A channel (and a channel group) is for text or for voice.
    ChannelKind { Text => "text", Voice => "voice" }
);
wire_enum!(
    /// A member's presence as listed by `GET /servers/{id}/members`.
    MemberStatus { Online => "online", Idle => "idle", Dnd => "dnd" }
);
wire_enum!(
    /// Directory trust state; the client drops entries with any other value.
    TrustState { Verified => "verified", Unverified => "unverified" }
);
wire_enum!(
    /// Directory identity handshake strategy.
    HandshakeStrategy { ChallengeSignature => "challenge_signature", TokenProof => "token_proof" }
);
wire_enum!(
    /// How the client derives user ids for a server (WIRE.md §0.2).
    UidPolicy { ServerScoped => "server_scoped", Global => "global", Either => "either" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_enum_value_round_trips_through_its_string() {
        for kind in ChannelKind::ALL {
            assert_eq!(ChannelKind::parse(kind.as_str()), Ok(*kind));
        }
        for status in MemberStatus::ALL {
            assert_eq!(MemberStatus::parse(status.as_str()), Ok(*status));
        }
        for policy in UidPolicy::ALL {
            assert_eq!(UidPolicy::parse(policy.as_str()), Ok(*policy));
        }
    }

    #[test]
    fn unknown_enum_values_are_errors_naming_the_choices() {
        let err = ChannelKind::parse("stage").unwrap_err();
        assert_eq!(err.value, "stage");
        assert!(err.to_string().contains("text"), "{err}");
        assert!(UidPolicy::parse("SERVER_SCOPED").is_err());
    }
}
