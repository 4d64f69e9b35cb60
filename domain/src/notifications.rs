//! Notification preferences (F1): which channels a person wants messages on,
//! and the addresses to use. The messages themselves are derived from the
//! journal by the notifications projection and delivered by the dispatcher.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::identity::{field_error, Email, PhoneNumber};
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// A channel a person can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationChannel {
    Email,
    Sms,
}

impl NotificationChannel {
    /// The stable lowercase name stored in read models.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationChannel::Email => "email",
            NotificationChannel::Sms => "sms",
        }
    }

    /// The channel of a stored name.
    pub fn parse(raw: &str) -> Option<NotificationChannel> {
        match raw {
            "email" => Some(NotificationChannel::Email),
            "sms" => Some(NotificationChannel::Sms),
            _ => None,
        }
    }
}

/// What a person chose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preferences {
    /// Channels to deliver on, without repeats, in a stable order.
    pub channels: Vec<NotificationChannel>,
    pub email: Option<Email>,
    pub phone: Option<PhoneNumber>,
}

/// Commands on a person's notification preferences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotificationCommand {
    /// Replaces the preferences. Addresses arrive as typed text so every wrong
    /// field can be reported at once.
    SetPreferences {
        channels: Vec<NotificationChannel>,
        email: Option<String>,
        phone: Option<String>,
    },
}

/// Events of a person's notification preferences.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NotificationEvent {
    NotificationPreferencesChanged(Preferences),
}

impl DomainEvent for NotificationEvent {
    fn event_type(&self) -> String {
        "NotificationPreferencesChanged".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why preferences were refused: every wrong field at once.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the notification preferences are not valid")]
pub struct PreferencesError(pub Vec<UserError>);

impl AsUserError for PreferencesError {
    fn to_user_error(&self) -> UserError {
        self.0.first().cloned().unwrap_or_else(|| {
            UserError::new(
                "INVALID_INPUT",
                "the notification preferences are not valid",
            )
        })
    }
}

impl PreferencesError {
    /// Every refusal, one per wrong field.
    pub fn user_errors(&self) -> Vec<UserError> {
        self.0.clone()
    }
}

/// Checks the command's input: channels need their address, addresses must parse.
pub fn parse_preferences(
    channels: &[NotificationChannel],
    email: Option<&str>,
    phone: Option<&str>,
) -> Result<Preferences, PreferencesError> {
    let mut chosen = channels.to_vec();
    chosen.sort();
    chosen.dedup();
    let mut errors = Vec::new();
    let email = address(
        email,
        chosen.contains(&NotificationChannel::Email),
        "email",
        "the EMAIL channel needs an e-mail address",
        Email::parse,
        &mut errors,
    );
    let phone = address(
        phone,
        chosen.contains(&NotificationChannel::Sms),
        "phone",
        "the SMS channel needs a phone number",
        PhoneNumber::parse,
        &mut errors,
    );
    if errors.is_empty() {
        Ok(Preferences {
            channels: chosen,
            email,
            phone,
        })
    } else {
        Err(PreferencesError(errors))
    }
}

/// Parses one optional address, recording at most one error for its field:
/// malformed, or missing while its channel is chosen.
fn address<T, E: crate::identity::ValueError>(
    raw: Option<&str>,
    needed: bool,
    field: &str,
    missing: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    errors: &mut Vec<UserError>,
) -> Option<T> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        Some(raw) => match parse(raw) {
            Ok(value) => Some(value),
            Err(e) => {
                errors.push(field_error(field, &e));
                None
            }
        },
        None => {
            if needed {
                errors.push(UserError::field(field, "ADDRESS_REQUIRED", missing));
            }
            None
        }
    }
}

/// A person's notification preferences; the stream id is the account id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationSettings {
    pub preferences: Option<Preferences>,
}

impl Aggregate for NotificationSettings {
    const TYPE: &'static str = "notification_settings";
    type Command = NotificationCommand;
    type Event = NotificationEvent;
    type Error = PreferencesError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let NotificationCommand::SetPreferences {
            channels,
            email,
            phone,
        } = command;
        let preferences = parse_preferences(&channels, email.as_deref(), phone.as_deref())?;
        if self.preferences.as_ref() == Some(&preferences) {
            return Ok(());
        }
        sink.write(
            NotificationEvent::NotificationPreferencesChanged(preferences),
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let NotificationEvent::NotificationPreferencesChanged(preferences) = event;
        self.preferences = Some(preferences);
    }
}

impl Reserving for NotificationSettings {}

#[cfg(test)]
mod tests {
    use cqrs_es::test::TestFramework;

    use super::*;

    type Given = TestFramework<NotificationSettings>;

    fn set(channels: &[NotificationChannel], email: &str, phone: &str) -> NotificationCommand {
        NotificationCommand::SetPreferences {
            channels: channels.to_vec(),
            email: Some(email.to_string()),
            phone: Some(phone.to_string()),
        }
    }

    #[test]
    fn preferences_are_recorded_normalised() {
        let expected = Preferences {
            channels: vec![NotificationChannel::Email, NotificationChannel::Sms],
            email: Some(Email::parse("anna@example.ru").expect("email")),
            phone: Some(PhoneNumber::parse("+79161234567").expect("phone")),
        };
        Given::with(())
            .given_no_previous_events()
            .when(set(
                &[
                    NotificationChannel::Sms,
                    NotificationChannel::Email,
                    NotificationChannel::Sms,
                ],
                " anna@example.ru ",
                "8 (916) 123-45-67",
            ))
            .then_expect_events(vec![NotificationEvent::NotificationPreferencesChanged(
                expected,
            )]);
    }

    #[test]
    fn a_channel_without_its_address_is_refused_and_every_field_is_named() {
        let error = parse_preferences(
            &[NotificationChannel::Email, NotificationChannel::Sms],
            None,
            Some("12345"),
        )
        .expect_err("refused");
        let fields: Vec<_> = error
            .user_errors()
            .into_iter()
            .map(|e| (e.field.unwrap_or_default().join("."), e.code))
            .collect();
        assert_eq!(fields.len(), 2, "{fields:?}");
        assert_eq!(fields[0], ("input.email".to_string(), "ADDRESS_REQUIRED"));
        assert_eq!(fields[1].0, "input.phone");
        assert_ne!(fields[1].1, "ADDRESS_REQUIRED");
    }

    #[test]
    fn setting_the_same_preferences_again_records_nothing() {
        let preferences =
            parse_preferences(&[NotificationChannel::Email], Some("a@b.ru"), None).expect("valid");
        Given::with(())
            .given(vec![NotificationEvent::NotificationPreferencesChanged(
                preferences,
            )])
            .when(NotificationCommand::SetPreferences {
                channels: vec![NotificationChannel::Email],
                email: Some("a@b.ru".into()),
                phone: None,
            })
            .then_expect_events(vec![]);
    }
}
