//! Server settings (WIRE.md §2.2): the validated form of a `PUT .../settings` body.

use crate::limits::{CHANNEL_NAME_CHARS_MAX, SERVER_DESCRIPTION_CHARS_MAX, SERVER_NAME_CHARS_MAX};

/// The banner presets the client offers (`ServerSettingsModal.vue`); `ocean` is its default.
pub const BANNER_PRESETS: &[&str] = &[
    "ocean", "sunset", "ember", "forest", "midnight", "orchid", "teal", "gold", "slate",
];

/// Why a settings update is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("display_name must not be empty")]
    NameEmpty,
    #[error("display_name is longer than {SERVER_NAME_CHARS_MAX} characters")]
    NameTooLong,
    #[error("description is longer than {SERVER_DESCRIPTION_CHARS_MAX} characters")]
    DescriptionTooLong,
    #[error("banner_preset {0:?} is not a known preset")]
    UnknownBanner(String),
}

/// Settings that passed validation: a trimmed, non-empty name, a bounded description and a
/// known banner preset (an empty preset means the default, `ocean`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    pub display_name: String,
    pub description: String,
    pub banner_preset: String,
}

impl ServerSettings {
    pub fn parse(display_name: &str, description: &str, banner_preset: &str) -> Result<Self, SettingsError> {
        let display_name = display_name.trim();
        if display_name.is_empty() {
            return Err(SettingsError::NameEmpty);
        }
        if display_name.chars().count() > SERVER_NAME_CHARS_MAX {
            return Err(SettingsError::NameTooLong);
        }
        let description = description.trim();
        if description.chars().count() > SERVER_DESCRIPTION_CHARS_MAX {
            return Err(SettingsError::DescriptionTooLong);
        }
        let banner_preset = match banner_preset.trim() {
            "" => BANNER_PRESETS[0],
            preset => BANNER_PRESETS
                .iter()
                .copied()
                .find(|known| *known == preset)
                .ok_or_else(|| SettingsError::UnknownBanner(preset.to_owned()))?,
        };
        Ok(Self {
            display_name: display_name.to_owned(),
            description: description.to_owned(),
            banner_preset: banner_preset.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_trimmed_and_default_to_the_ocean_banner() {
        let settings = ServerSettings::parse("  Harbor  ", " hi ", "").unwrap();
        assert_eq!(settings.display_name, "Harbor");
        assert_eq!(settings.description, "hi");
        assert_eq!(settings.banner_preset, "ocean");
    }

    #[test]
    fn settings_limits_count_characters_not_bytes() {
        assert!(ServerSettings::parse(&"é".repeat(SERVER_NAME_CHARS_MAX), "", "gold").is_ok());
        assert_eq!(
            ServerSettings::parse(&"é".repeat(SERVER_NAME_CHARS_MAX + 1), "", "gold"),
            Err(SettingsError::NameTooLong)
        );
        assert_eq!(
            ServerSettings::parse("x", &"d".repeat(SERVER_DESCRIPTION_CHARS_MAX + 1), "gold"),
            Err(SettingsError::DescriptionTooLong)
        );
    }

    #[test]
    fn settings_refuse_blank_names_and_unknown_banners() {
        assert_eq!(
            ServerSettings::parse("   ", "", "ocean"),
            Err(SettingsError::NameEmpty)
        );
        assert_eq!(
            ServerSettings::parse("x", "", "neon"),
            Err(SettingsError::UnknownBanner("neon".into()))
        );
    }
}

/// Why a channel or category name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("name must be 1-{CHANNEL_NAME_CHARS_MAX} characters and not blank")]
pub struct NameError;

/// Trims and checks a channel or category name.
pub fn channel_name(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > CHANNEL_NAME_CHARS_MAX || name.chars().any(char::is_control)
    {
        return Err(NameError);
    }
    Ok(name.to_owned())
}

/// The two-character icon of a new server: the initials of its first two words, or its
/// first two characters, upper-cased.
pub fn icon_text(display_name: &str) -> String {
    let words: Vec<&str> = display_name.split_whitespace().collect();
    let icon: String = match words.as_slice() {
        [first, second, ..] => first.chars().take(1).chain(second.chars().take(1)).collect(),
        [only] => only.chars().take(2).collect(),
        [] => "OC".into(),
    };
    icon.to_uppercase().chars().take(2).collect()
}

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn channel_names_are_trimmed_bounded_and_printable() {
        assert_eq!(channel_name("  lobby ").unwrap(), "lobby");
        assert!(channel_name("   ").is_err());
        assert!(channel_name("a\u{7}b").is_err());
        assert!(channel_name(&"n".repeat(CHANNEL_NAME_CHARS_MAX + 1)).is_err());
    }

    #[test]
    fn icons_are_initials() {
        assert_eq!(icon_text("Harbor Guild"), "HG");
        assert_eq!(icon_text("testlab"), "TE");
        assert_eq!(icon_text("  "), "OC");
    }
}
