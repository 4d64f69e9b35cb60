//! Value types of the directory.

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Why a piece of text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max} characters, got {got}")]
    TooLong { max: usize, got: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Trimmed, non-empty text of bounded length without control characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BoundedText(String);

impl BoundedText {
    /// Parses `raw`, allowing at most `max` characters after trimming.
    pub fn parse(raw: &str, max: usize) -> Result<Self, TextError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(TextError::Empty);
        }
        let got = text.chars().count();
        if got > max {
            return Err(TextError::TooLong { max, got });
        }
        if text.chars().any(char::is_control) {
            return Err(TextError::ControlCharacter);
        }
        Ok(BoundedText(text.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A name that is not an IANA time zone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IANA time zone name (for example Europe/Moscow or Asia/Yekaterinburg)")]
pub struct TimeZoneError(pub String);

/// Parses an IANA time zone name such as `Europe/Moscow`.
pub fn parse_time_zone(raw: &str) -> Result<Tz, TimeZoneError> {
    raw.trim()
        .parse::<Tz>()
        .map_err(|_| TimeZoneError(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(
            BoundedText::parse("  Поликлиника №1 ", 20).map(|t| t.as_str().to_string()),
            Ok("Поликлиника №1".to_string())
        );
        assert_eq!(BoundedText::parse("   ", 20), Err(TextError::Empty));
        assert_eq!(
            BoundedText::parse("абв", 2),
            Err(TextError::TooLong { max: 2, got: 3 })
        );
        assert_eq!(
            BoundedText::parse("a\u{0}b", 20),
            Err(TextError::ControlCharacter)
        );
    }

    #[test]
    fn time_zones_must_be_iana_names() {
        assert!(parse_time_zone("Europe/Moscow").is_ok());
        assert!(parse_time_zone("MSK+3").is_err());
    }
}
