//! Newtype ids. Every id that crosses a thread or a crate boundary is one of these, never a
//! bare `String`, so a channel id cannot be passed where a server id is expected.
//!
//! Ids arrive from clients in URL paths and JSON bodies, so parsing is strict and total:
//! an id is 1..=[`ID_BYTES_MAX`](crate::limits::ID_BYTES_MAX) bytes of ASCII letters,
//! digits, `_`, `-` and `.`; anything else is an [`IdError`], never a panic.

use std::fmt;

use crate::limits::ID_BYTES_MAX;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {ID_BYTES_MAX} bytes")]
    TooLong,
    #[error("id contains a character outside [A-Za-z0-9_.-]")]
    BadCharacter,
}

/// Whether `raw` has the syntax of an id (for ids with no newtype, such as device ids).
pub fn is_id(raw: &str) -> bool {
    check_id(raw).is_ok()
}

fn check_id(raw: &str) -> Result<(), IdError> {
    if raw.is_empty() {
        return Err(IdError::Empty);
    }
    if raw.len() > ID_BYTES_MAX {
        return Err(IdError::TooLong);
    }
    if !raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(IdError::BadCharacter);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses client input; see the module docs for the accepted alphabet.
            pub fn parse(raw: &str) -> Result<Self, IdError> {
                check_id(raw)?;
                Ok(Self(raw.to_owned()))
            }

            /// Like [`Self::parse`], keeping the caller's allocation.
            pub fn parse_owned(raw: String) -> Result<Self, IdError> {
                check_id(&raw)?;
                Ok(Self(raw))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        /// Reads the same alphabet as [`Self::parse`] (cluster events between nodes).
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(deserializer)?;
                Self::parse_owned(raw).map_err(serde::de::Error::custom)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

id_type!(
    /// A community ("server" in the client's words), e.g. `srv_harbor`.
    ServerId
);
id_type!(
    /// A channel; channel ids are global across servers (WIRE.md §1.5).
    ChannelId
);
id_type!(
    /// A channel group ("category"), e.g. `grp_general`.
    GroupId
);
id_type!(
    /// A row of a server's member list, e.g. `mem_1`.
    MemberId
);
id_type!(
    /// A user as the client names them (`uid_` + 8 hex, or placeholders).
    UserUid
);

id_type!(
    /// A message (`msg_<8 hex>`, seeded `msg_seed_01`).
    MessageId
);
id_type!(
    /// A message attachment (`att_<8 hex>`).
    AttachmentId
);
id_type!(
    /// An uploaded avatar image (`asset_<8 hex>`).
    AssetId
);

/// A new id: `prefix` + `_` + 8 lowercase hex digits taken from the caller's random bytes
/// (WIRE.md §1.5). Core has no randomness of its own.
pub fn short_id(prefix: &str, random: [u8; 4]) -> String {
    format!(
        "{prefix}_{:02x}{:02x}{:02x}{:02x}",
        random[0], random[1], random[2], random[3]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_accept_the_seeded_and_generated_shapes() {
        for raw in [
            "srv_harbor",
            "tl_vc_huddle",
            "msg_1a2b3c4d",
            "uid_dev_local",
            "a.b-c",
        ] {
            assert_eq!(
                ServerId::parse(raw).map(|id| id.into_string()),
                Ok(raw.to_owned())
            );
        }
    }

    #[test]
    fn short_ids_are_prefix_and_eight_hex() {
        assert_eq!(short_id("msg", [0, 0xab, 0x0c, 0xff]), "msg_00ab0cff");
        assert!(MessageId::parse(&short_id("msg", [1, 2, 3, 4])).is_ok());
    }

    #[test]
    fn ids_reject_empty_long_and_foreign_characters() {
        assert_eq!(ChannelId::parse(""), Err(IdError::Empty));
        assert_eq!(
            ChannelId::parse(&"a".repeat(ID_BYTES_MAX + 1)),
            Err(IdError::TooLong)
        );
        for raw in ["a/b", "a b", "é", "a:b", "a%2F"] {
            assert_eq!(ChannelId::parse(raw), Err(IdError::BadCharacter), "{raw}");
        }
        assert!(ChannelId::parse(&"a".repeat(ID_BYTES_MAX)).is_ok());
    }
}
