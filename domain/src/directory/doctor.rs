//! A doctor (B2): name, specialty, qualification, place of work, services.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::values::BoundedText;
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// A doctor's details, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoctorDetails {
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// Specialty code in English, e.g. `therapist`, `cardiologist`.
    pub specialty: String,
    pub qualification: String,
    pub organisation_id: Uuid,
    pub department: String,
    /// Codes of the services the doctor provides.
    pub service_codes: Vec<String>,
}

impl DoctorDetails {
    /// The full name as shown to patients.
    pub fn full_name(&self) -> String {
        match &self.patronymic {
            Some(p) => format!("{} {} {}", self.surname, self.first_name, p),
            None => format!("{} {}", self.surname, self.first_name),
        }
    }

    fn validated(&self) -> Result<DoctorDetails, DoctorError> {
        let text = |field: &'static str, raw: &str, max: usize| {
            BoundedText::parse(raw, max)
                .map(|t| t.as_str().to_string())
                .map_err(|e| DoctorError::Invalid {
                    field,
                    message: e.to_string(),
                })
        };
        let specialty = text("specialty", &self.specialty, 60)?.to_lowercase();
        if !specialty
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-' || c == '_')
        {
            return Err(DoctorError::Invalid {
                field: "specialty",
                message: "use a specialty code of Latin letters, e.g. therapist or cardiologist"
                    .into(),
            });
        }
        if self.service_codes.len() > 100 {
            return Err(DoctorError::Invalid {
                field: "serviceCodes",
                message: "at most 100 services".into(),
            });
        }
        let mut service_codes = self
            .service_codes
            .iter()
            .map(|c| {
                super::offering::parse_code(c).map_err(|e| DoctorError::Invalid {
                    field: "serviceCodes",
                    message: e.to_string(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        service_codes.sort();
        service_codes.dedup();
        Ok(DoctorDetails {
            surname: text("surname", &self.surname, 100)?,
            first_name: text("firstName", &self.first_name, 100)?,
            patronymic: match self.patronymic.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(p) => Some(text("patronymic", p, 100)?),
            },
            specialty,
            qualification: text("qualification", &self.qualification, 200)?,
            organisation_id: self.organisation_id,
            department: text("department", &self.department, 100)?,
            service_codes,
        })
    }
}

/// Commands on a doctor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoctorCommand {
    Register(DoctorDetails),
    Update(DoctorDetails),
}

/// Events of a doctor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DoctorEvent {
    DoctorRegistered(DoctorDetails),
    DoctorDetailsChanged(DoctorDetails),
}

impl DomainEvent for DoctorEvent {
    fn event_type(&self) -> String {
        match self {
            DoctorEvent::DoctorRegistered(_) => "DoctorRegistered",
            DoctorEvent::DoctorDetailsChanged(_) => "DoctorDetailsChanged",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a doctor command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DoctorError {
    #[error("the doctor is already registered")]
    AlreadyRegistered,
    #[error("no such doctor")]
    NotFound,
    #[error("a doctor cannot move to another organisation; register them there")]
    OrganisationChanged,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for DoctorError {
    fn to_user_error(&self) -> UserError {
        match self {
            DoctorError::AlreadyRegistered => UserError::new("ALREADY_EXISTS", self.to_string()),
            DoctorError::NotFound => UserError::new("NOT_FOUND", self.to_string()),
            DoctorError::OrganisationChanged => {
                UserError::field("organisationId", "INVALID_INPUT", self.to_string())
            }
            DoctorError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// A doctor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doctor {
    pub details: Option<DoctorDetails>,
}

impl Aggregate for Doctor {
    const TYPE: &'static str = "doctor";
    type Command = DoctorCommand;
    type Event = DoctorEvent;
    type Error = DoctorError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match (command, &self.details) {
            (DoctorCommand::Register(_), Some(_)) => return Err(DoctorError::AlreadyRegistered),
            (DoctorCommand::Register(d), None) => DoctorEvent::DoctorRegistered(d.validated()?),
            (DoctorCommand::Update(_), None) => return Err(DoctorError::NotFound),
            (DoctorCommand::Update(d), Some(current)) => {
                let d = d.validated()?;
                if d.organisation_id != current.organisation_id {
                    return Err(DoctorError::OrganisationChanged);
                }
                if &d == current {
                    return Ok(());
                }
                DoctorEvent::DoctorDetailsChanged(d)
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DoctorEvent::DoctorRegistered(d) | DoctorEvent::DoctorDetailsChanged(d) => {
                self.details = Some(d)
            }
        }
    }
}

impl Reserving for Doctor {}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn details() -> DoctorDetails {
        DoctorDetails {
            surname: "Иванова".into(),
            first_name: "Мария".into(),
            patronymic: Some("Петровна".into()),
            specialty: "Therapist".into(),
            qualification: "высшая категория".into(),
            organisation_id: Uuid::nil(),
            department: "Терапия".into(),
            service_codes: vec!["B01.047.001".into()],
        }
    }

    #[test]
    fn registering_normalises_the_specialty() {
        let mut expected = details();
        expected.specialty = "therapist".into();
        TestFramework::<Doctor>::with(())
            .given_no_previous_events()
            .when(DoctorCommand::Register(details()))
            .then_expect_events(vec![DoctorEvent::DoctorRegistered(expected)]);
    }

    #[test]
    fn cannot_move_a_doctor_to_another_organisation() {
        let mut registered = details();
        registered.specialty = "therapist".into();
        let mut moved = details();
        moved.organisation_id = Uuid::now_v7();
        TestFramework::<Doctor>::with(())
            .given(vec![DoctorEvent::DoctorRegistered(registered)])
            .when(DoctorCommand::Update(moved))
            .then_expect_error(DoctorError::OrganisationChanged);
    }
}
