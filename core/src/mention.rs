//! Mentions in a message body (WIRE.md §2.4, §0 item 10): what the client's composer inserts
//! after picking a candidate from `mentions:resolve`, found again in the text it sent.
//!
//! Recognised, each only at the start of the body or after a character that is not a
//! letter, digit or `_` (so `name@example.org` is no mention), and only when followed by
//! the end of the body or such a character:
//! - `@here`, `@channel`, `@everyone` (any case): a channel-wide mention, `type: "channel"`,
//!   `target_id` the channel;
//! - `@uid_…`: a user by uid;
//! - `@Display Name` or `@Display_Name` (the resolve token joins words with `_`), matched
//!   case-insensitively against the people given, the longest name winning;
//! - `#channel-name`: a reference to a text channel of the server given.
//!
//! Ranges are UTF-16 code-unit offsets into the body, as the client's JavaScript counts
//! them. The parser is pure: the caller supplies the people and channels that may be named.

use crate::limits::MENTIONS_PER_MESSAGE_MAX;

/// Someone who may be mentioned by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'a> {
    pub uid: &'a str,
    pub name: &'a str,
}

/// A text channel that may be referenced with `#name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelName<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MentionKind {
    User,
    Channel,
}

impl MentionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MentionKind::User => "user",
            MentionKind::Channel => "channel",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "user" => Some(MentionKind::User),
            "channel" => Some(MentionKind::Channel),
            _ => None,
        }
    }
}

/// Who a mention notifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notifies {
    /// One user (a user mention).
    User(String),
    /// Everyone who reads the channel (`@here`, `@channel`, `@everyone`).
    Everyone,
    /// Nobody (a `#channel` reference).
    Nobody,
}

/// One mention, as stored and sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mention {
    pub kind: MentionKind,
    /// The text as it appears in the body (`@Lyra`, `@here`, `#design`).
    pub token: String,
    pub target_id: String,
    pub display_text: String,
    /// UTF-16 offsets: `[start, end)`.
    pub start: u32,
    pub end: u32,
}

impl Mention {
    pub fn notifies(&self) -> Notifies {
        match self.kind {
            MentionKind::User => Notifies::User(self.target_id.clone()),
            MentionKind::Channel if self.token.starts_with('@') => Notifies::Everyone,
            MentionKind::Channel => Notifies::Nobody,
        }
    }
}

/// Channel-wide mention words.
pub const CHANNEL_WIDE: [&str; 3] = ["here", "channel", "everyone"];

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Bytes of `text` that spell `word` case-insensitively at its start, if followed by a
/// boundary (end or a non-word character).
fn starts_with_word(text: &str, word: &str) -> Option<usize> {
    let mut rest = text.char_indices();
    for wanted in word.chars() {
        let (_, got) = rest.next()?;
        if !got.to_lowercase().eq(wanted.to_lowercase()) {
            return None;
        }
    }
    let end = rest
        .next()
        .map_or(text.len(), |(at, c)| if is_word(c) { usize::MAX } else { at });
    (end != usize::MAX).then_some(end)
}

fn utf16_len(text: &str) -> u32 {
    text.encode_utf16().count() as u32
}

/// What one `@` or `#` at the start of `rest` mentions: the mention without its range, and
/// the token's length in bytes.
fn mention_at(
    rest: &str,
    channel_id: &str,
    people: &[Person<'_>],
    channels: &[ChannelName<'_>],
) -> Option<(MentionKind, String, String, usize)> {
    if let Some(after) = rest.strip_prefix('#') {
        let (channel, len) = channels
            .iter()
            .filter_map(|c| starts_with_word(after, c.name).map(|len| (c, len)))
            .max_by_key(|(_, len)| *len)?;
        return Some((
            MentionKind::Channel,
            channel.id.to_owned(),
            channel.name.to_owned(),
            len + 1,
        ));
    }
    let after = rest.strip_prefix('@')?;
    for word in CHANNEL_WIDE {
        if let Some(len) = starts_with_word(after, word) {
            return Some((
                MentionKind::Channel,
                channel_id.to_owned(),
                word.to_owned(),
                len + 1,
            ));
        }
    }
    if after.starts_with("uid_") {
        let len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .unwrap_or(after.len());
        let uid = &after[..len];
        if crate::UserUid::parse(uid).is_ok() && !after[len..].starts_with(is_word) {
            let name = people.iter().find(|p| p.uid == uid).map_or(uid, |p| p.name);
            return Some((MentionKind::User, uid.to_owned(), name.to_owned(), len + 1));
        }
    }
    let mut best: Option<(&Person<'_>, usize)> = None;
    for person in people {
        let joined = person.name.split_whitespace().collect::<Vec<_>>().join("_");
        for form in [person.name, joined.as_str()] {
            if form.trim().is_empty() {
                continue;
            }
            if let Some(len) = starts_with_word(after, form)
                && best.is_none_or(|(_, longest)| len > longest)
            {
                best = Some((person, len));
            }
        }
    }
    let (person, len) = best?;
    Some((
        MentionKind::User,
        person.uid.to_owned(),
        person.name.to_owned(),
        len + 1,
    ))
}

/// Every mention in `body`, in order, at most [`MENTIONS_PER_MESSAGE_MAX`].
pub fn parse(
    body: &str,
    channel_id: &str,
    people: &[Person<'_>],
    channels: &[ChannelName<'_>],
) -> Vec<Mention> {
    let mut found = Vec::new();
    let mut utf16 = 0u32;
    let mut previous: Option<char> = None;
    let mut skip_to = 0usize;
    for (at, c) in body.char_indices() {
        if at >= skip_to && (c == '@' || c == '#') && !previous.is_some_and(is_word) {
            if let Some((kind, target_id, display_text, len)) =
                mention_at(&body[at..], channel_id, people, channels)
            {
                let token = &body[at..at + len];
                let units = utf16_len(token);
                found.push(Mention {
                    kind,
                    token: token.to_owned(),
                    target_id,
                    display_text,
                    start: utf16,
                    end: utf16 + units,
                });
                skip_to = at + len;
                if found.len() == MENTIONS_PER_MESSAGE_MAX {
                    break;
                }
            }
        }
        utf16 += c.len_utf16() as u32;
        previous = Some(c);
    }
    found
}

/// Whether a body could hold a mention at all (cheap check before loading people).
pub fn may_mention(body: &str) -> bool {
    body.contains(['@', '#'])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEOPLE: &[Person<'static>] = &[
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
            name: "Mira",
        },
        Person {
            uid: "uid_0000cccc",
            name: "Zoë Ångström",
        },
    ];
    const CHANNELS: &[ChannelName<'static>] = &[
        ChannelName {
            id: "ch_design",
            name: "design",
        },
        ChannelName {
            id: "ch_release",
            name: "release-notes",
        },
    ];

    fn parse_one(body: &str) -> Vec<(String, &'static str, String, u32, u32)> {
        parse(body, "ch_general", PEOPLE, CHANNELS)
            .into_iter()
            .map(|m| (m.token, m.kind.as_str(), m.target_id, m.start, m.end))
            .collect()
    }

    #[test]
    fn resolve_tokens_names_with_spaces_and_uids_become_user_mentions() {
        assert_eq!(
            parse_one("hi @Lyra and @Mira_Vale, also @uid_0000bbbb."),
            [
                ("@Lyra".into(), "user", "uid_seed_1".into(), 3, 8),
                ("@Mira_Vale".into(), "user", "uid_0000aaaa".into(), 13, 23),
                ("@uid_0000bbbb".into(), "user", "uid_0000bbbb".into(), 30, 43),
            ]
        );
        // The longest name wins; a shorter one still matches on its own.
        assert_eq!(parse_one("@mira vale!")[0].2, "uid_0000aaaa");
        assert_eq!(parse_one("@Mira valetta")[0].2, "uid_0000bbbb");
    }

    #[test]
    fn ranges_count_utf16_units_like_the_client() {
        // "😀" is two UTF-16 units, "é" one: @here starts at 2 + 1 + 1 = 4 units.
        let found = parse("😀é @here @Zoë_Ångström", "ch_general", PEOPLE, CHANNELS);
        assert_eq!((found[0].start, found[0].end), (4, 9));
        assert_eq!(found[0].kind, MentionKind::Channel);
        assert_eq!(found[0].notifies(), Notifies::Everyone);
        assert_eq!((found[1].start, found[1].end), (10, 23));
        assert_eq!(found[1].display_text, "Zoë Ångström");
    }

    #[test]
    fn channel_wide_words_and_channel_references() {
        let found = parse(
            "@Channel @everyone #design #release-notes",
            "ch_general",
            PEOPLE,
            CHANNELS,
        );
        let kinds: Vec<(&str, &str, Notifies)> = found
            .iter()
            .map(|m| (m.token.as_str(), m.target_id.as_str(), m.notifies()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("@Channel", "ch_general", Notifies::Everyone),
                ("@everyone", "ch_general", Notifies::Everyone),
                ("#design", "ch_design", Notifies::Nobody),
                ("#release-notes", "ch_release", Notifies::Nobody),
            ]
        );
    }

    #[test]
    fn emails_unknown_names_and_partial_words_are_not_mentions() {
        for body in [
            "mail lyra@example.org",
            "@nobody here",
            "@Lyrae",
            "@heres",
            "#designer",
            "@",
            "#",
            "@@",
        ] {
            assert!(parse_one(body).is_empty(), "{body}: {:?}", parse_one(body));
        }
    }

    #[test]
    fn at_most_the_limit_is_kept() {
        let body = "@here ".repeat(MENTIONS_PER_MESSAGE_MAX + 5);
        assert_eq!(parse(&body, "c", &[], &[]).len(), MENTIONS_PER_MESSAGE_MAX);
    }
}
