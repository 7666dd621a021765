//! Profile and message-text rules of WIRE.md §2.4-§2.5.

use crate::limits::REPLY_PREVIEW_CHARS_MAX;

/// The avatar presets, shared with the client's `utils/avatarPresets.ts`.
pub const AVATAR_PRESETS: [&str; 6] = ["horizon", "reef", "mint", "ember", "violet", "slate"];

/// Display names, in characters.
pub const DISPLAY_NAME_CHARS_MIN: usize = 2;
pub const DISPLAY_NAME_CHARS_MAX: usize = 32;

/// The display name of a profile created on first sight: "User " + the first 10 characters
/// after `uid_`, or the first 14 characters of a uid without that prefix.
pub fn default_display_name(uid: &str) -> String {
    let tail: String = match uid.strip_prefix("uid_") {
        Some(rest) => rest.chars().take(10).collect(),
        None => uid.chars().take(14).collect(),
    };
    format!("User {tail}")
}

/// The generated avatar of a new profile: presets[(sum of the uid's code points) mod 6].
pub fn default_avatar_preset(uid: &str) -> &'static str {
    let sum: u64 = uid.chars().map(|c| u64::from(u32::from(c))).sum();
    AVATAR_PRESETS[(sum % AVATAR_PRESETS.len() as u64) as usize]
}

/// Why a display name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "display_name must be {DISPLAY_NAME_CHARS_MIN}-{DISPLAY_NAME_CHARS_MAX} letters, digits, spaces, '.', '_' or '-'"
)]
pub struct DisplayNameError;

/// Trims and checks a display name: 2-32 characters of letters, digits, space, `.`, `_`, `-`.
pub fn display_name(raw: &str) -> Result<String, DisplayNameError> {
    let name = raw.trim();
    let count = name.chars().count();
    let allowed = |c: char| c.is_alphabetic() || c.is_numeric() || matches!(c, ' ' | '.' | '_' | '-');
    if !(DISPLAY_NAME_CHARS_MIN..=DISPLAY_NAME_CHARS_MAX).contains(&count) || !name.chars().all(allowed) {
        return Err(DisplayNameError);
    }
    Ok(name.to_owned())
}

/// The reply preview of a message body: its trimmed, non-empty lines joined by spaces, cut
/// to 220 characters ending in "…".
pub fn reply_preview(body: &str) -> String {
    let joined = body
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.chars().count() <= REPLY_PREVIEW_CHARS_MAX {
        return joined;
    }
    let mut cut: String = joined.chars().take(REPLY_PREVIEW_CHARS_MAX - 1).collect();
    cut.push('…');
    cut
}

/// `If-Match` as the client sends it: `12`, `"12"` or `W/"12"`, a positive integer.
pub fn parse_if_match(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let raw = raw.strip_prefix("W/").unwrap_or(raw);
    let raw = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .unwrap_or(raw);
    raw.parse::<i64>().ok().filter(|version| *version > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_profiles_get_the_documented_defaults() {
        assert_eq!(default_display_name("uid_0123456789abcdef"), "User 0123456789");
        assert_eq!(
            default_display_name("desktop_local_longer"),
            "User desktop_local_"
        );
        assert_eq!(default_display_name("uid_ab"), "User ab");
        let sum: u32 = "uid_1".chars().map(u32::from).sum();
        assert_eq!(default_avatar_preset("uid_1"), AVATAR_PRESETS[(sum % 6) as usize]);
    }

    #[test]
    fn display_names_follow_the_pattern_and_length() {
        assert_eq!(display_name("  Lyra Q.  ").unwrap(), "Lyra Q.");
        assert!(display_name("Zoë_2-b").is_ok());
        assert!(display_name("x").is_err());
        assert!(display_name(&"a".repeat(33)).is_err());
        assert!(display_name("bad<name>").is_err());
        assert!(display_name("emoji 😀").is_err());
    }

    #[test]
    fn reply_previews_join_lines_and_cut_at_220() {
        assert_eq!(reply_preview("  a \n\n b  \n"), "a b");
        let long = "x".repeat(300);
        let preview = reply_preview(&long);
        assert_eq!(preview.chars().count(), 220);
        assert!(preview.ends_with('…'));
        assert_eq!(reply_preview(&"y".repeat(220)), "y".repeat(220));
    }

    #[test]
    fn if_match_accepts_plain_quoted_and_weak_versions() {
        assert_eq!(parse_if_match("12"), Some(12));
        assert_eq!(parse_if_match("\"12\""), Some(12));
        assert_eq!(parse_if_match("W/\"3\""), Some(3));
        assert_eq!(parse_if_match("0"), None);
        assert_eq!(parse_if_match("abc"), None);
        assert_eq!(parse_if_match("-1"), None);
    }
}
