//! The patient as the appointment rules need them: name, birth date and sex.
//! (Identity, documents and verification are built on this in the accounts module.)

use chrono::{Datelike, NaiveDate};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::BoundedText;
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// Sex as recorded in the patient's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

/// A patient's basic profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientProfile {
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: Sex,
}

impl PatientProfile {
    /// Full years of age on `day`.
    pub fn age_on(&self, day: NaiveDate) -> u32 {
        let mut years = day.year() - self.birth_date.year();
        if (day.month(), day.day()) < (self.birth_date.month(), self.birth_date.day()) {
            years -= 1;
        }
        years.max(0) as u32
    }
}

/// Commands on a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientCommand {
    RecordProfile {
        profile: PatientProfile,
        today: NaiveDate,
    },
}

/// Events of a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientEvent {
    PatientProfileRecorded(PatientProfile),
}

impl DomainEvent for PatientEvent {
    fn event_type(&self) -> String {
        "PatientProfileRecorded".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a patient command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for PatientError {
    fn to_user_error(&self) -> UserError {
        let PatientError::Invalid { field, message } = self;
        UserError::field(field, "INVALID_INPUT", message.clone())
    }
}

/// A patient; the stream id is the patient's account id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    pub profile: Option<PatientProfile>,
}

impl Aggregate for Patient {
    const TYPE: &'static str = "patient";
    type Command = PatientCommand;
    type Event = PatientEvent;
    type Error = PatientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let PatientCommand::RecordProfile { profile, today } = command;
        let text = |field: &'static str, raw: &str| {
            BoundedText::parse(raw, 100)
                .map(|t| t.as_str().to_string())
                .map_err(|e| PatientError::Invalid {
                    field,
                    message: e.to_string(),
                })
        };
        if profile.birth_date > today {
            return Err(PatientError::Invalid {
                field: "birthDate",
                message: "must not be in the future".into(),
            });
        }
        if today.year() - profile.birth_date.year() > 130 {
            return Err(PatientError::Invalid {
                field: "birthDate",
                message: "must be within the last 130 years".into(),
            });
        }
        let profile = PatientProfile {
            surname: text("surname", &profile.surname)?,
            first_name: text("firstName", &profile.first_name)?,
            patronymic: match profile.patronymic.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(p) => Some(text("patronymic", p)?),
            },
            birth_date: profile.birth_date,
            sex: profile.sex,
        };
        if self.profile.as_ref() == Some(&profile) {
            return Ok(());
        }
        sink.write(PatientEvent::PatientProfileRecorded(profile), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let PatientEvent::PatientProfileRecorded(profile) = event;
        self.profile = Some(profile);
    }
}

impl Reserving for Patient {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_full_years() {
        let profile = PatientProfile {
            surname: "Петров".into(),
            first_name: "Пётр".into(),
            patronymic: None,
            birth_date: NaiveDate::from_ymd_opt(2000, 6, 15).expect("date"),
            sex: Sex::Male,
        };
        assert_eq!(
            profile.age_on(NaiveDate::from_ymd_opt(2026, 6, 14).expect("date")),
            25
        );
        assert_eq!(
            profile.age_on(NaiveDate::from_ymd_opt(2026, 6, 15).expect("date")),
            26
        );
    }
}
