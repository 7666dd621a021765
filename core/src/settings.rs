//! Server settings (WIRE.md §2.2): the validated form of a `PUT .../settings` body.

use crate::limits::{SERVER_DESCRIPTION_CHARS_MAX, SERVER_NAME_CHARS_MAX};

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
