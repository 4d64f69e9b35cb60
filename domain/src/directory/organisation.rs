//! A medical organisation: its identity, location, time zone and specialisations.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::values::{parse_time_zone, BoundedText, TextError};
use crate::user_error::{AsUserError, UserError};

/// The descriptive details of an organisation, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrganisationDetails {
    pub name: String,
    pub region: String,
    pub address: String,
    /// IANA time zone used for display and day boundaries.
    pub time_zone: String,
    pub working_hours: String,
    pub departments: Vec<String>,
    pub specialisations: Vec<String>,
}

impl OrganisationDetails {
    /// Checks every field, reporting the first one at fault by its API name.
    fn validated(&self) -> Result<OrganisationDetails, OrganisationError> {
        let text = |field: &'static str, raw: &str, max: usize| {
            BoundedText::parse(raw, max)
                .map(|t| t.as_str().to_string())
                .map_err(|e| OrganisationError::invalid(field, e))
        };
        let list =
            |field: &'static str, raw: &[String]| -> Result<Vec<String>, OrganisationError> {
                if raw.len() > 50 {
                    return Err(OrganisationError::Invalid {
                        field,
                        message: format!("at most 50 entries, got {}", raw.len()),
                    });
                }
                let mut items: Vec<String> = raw
                    .iter()
                    .map(|item| text(field, item, 100))
                    .collect::<Result<_, _>>()?;
                items.sort();
                items.dedup();
                Ok(items)
            };
        let time_zone =
            parse_time_zone(&self.time_zone).map_err(|e| OrganisationError::Invalid {
                field: "timeZone",
                message: e.to_string(),
            })?;
        Ok(OrganisationDetails {
            name: text("name", &self.name, 200)?,
            region: text("region", &self.region, 100)?,
            address: text("address", &self.address, 300)?,
            time_zone: time_zone.name().to_string(),
            working_hours: text("workingHours", &self.working_hours, 200)?,
            departments: list("departments", &self.departments)?,
            specialisations: list("specialisations", &self.specialisations)?,
        })
    }
}

/// Commands on an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrganisationCommand {
    Register(OrganisationDetails),
    UpdateDetails(OrganisationDetails),
    /// Marks the organisation as a pharmacy that receives e-prescriptions.
    DesignatePharmacy,
}

/// Events of an organisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrganisationEvent {
    OrganisationRegistered(OrganisationDetails),
    OrganisationDetailsChanged(OrganisationDetails),
    /// The organisation is a pharmacy from now on (a separate event, so older
    /// organisations need no upcasting: they are simply not pharmacies).
    PharmacyDesignated,
}

impl DomainEvent for OrganisationEvent {
    fn event_type(&self) -> String {
        match self {
            OrganisationEvent::OrganisationRegistered(_) => "OrganisationRegistered",
            OrganisationEvent::OrganisationDetailsChanged(_) => "OrganisationDetailsChanged",
            OrganisationEvent::PharmacyDesignated => "PharmacyDesignated",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why an organisation command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrganisationError {
    #[error("the organisation is already registered")]
    AlreadyRegistered,
    #[error("no such organisation")]
    NotFound,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl OrganisationError {
    fn invalid(field: &'static str, e: TextError) -> Self {
        OrganisationError::Invalid {
            field,
            message: e.to_string(),
        }
    }
}

impl AsUserError for OrganisationError {
    fn to_user_error(&self) -> UserError {
        match self {
            OrganisationError::AlreadyRegistered => {
                UserError::new("ALREADY_EXISTS", self.to_string())
            }
            OrganisationError::NotFound => UserError::new("NOT_FOUND", self.to_string()),
            OrganisationError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// A medical organisation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Organisation {
    pub details: Option<OrganisationDetails>,
    /// Whether the organisation is a pharmacy.
    #[serde(default)]
    pub pharmacy: bool,
}

impl Aggregate for Organisation {
    const TYPE: &'static str = "organisation";
    type Command = OrganisationCommand;
    type Event = OrganisationEvent;
    type Error = OrganisationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match (command, &self.details) {
            (OrganisationCommand::Register(_), Some(_)) => {
                return Err(OrganisationError::AlreadyRegistered)
            }
            (OrganisationCommand::Register(details), None) => {
                OrganisationEvent::OrganisationRegistered(details.validated()?)
            }
            (OrganisationCommand::UpdateDetails(_), None) => {
                return Err(OrganisationError::NotFound)
            }
            (OrganisationCommand::UpdateDetails(details), Some(current)) => {
                let details = details.validated()?;
                if &details == current {
                    return Ok(());
                }
                OrganisationEvent::OrganisationDetailsChanged(details)
            }
            (OrganisationCommand::DesignatePharmacy, None) => {
                return Err(OrganisationError::NotFound)
            }
            // Designating twice changes nothing.
            (OrganisationCommand::DesignatePharmacy, Some(_)) if self.pharmacy => return Ok(()),
            (OrganisationCommand::DesignatePharmacy, Some(_)) => {
                OrganisationEvent::PharmacyDesignated
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            OrganisationEvent::OrganisationRegistered(details)
            | OrganisationEvent::OrganisationDetailsChanged(details) => {
                self.details = Some(details)
            }
            OrganisationEvent::PharmacyDesignated => self.pharmacy = true,
        }
    }
}

impl crate::journal::reservations::Reserving for Organisation {}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn details() -> OrganisationDetails {
        OrganisationDetails {
            name: " Городская поликлиника №3 ".into(),
            region: "Москва".into(),
            address: "ул. Ленина, 1".into(),
            time_zone: "Europe/Moscow".into(),
            working_hours: "Пн–Пт 08:00–20:00".into(),
            departments: vec!["Терапия".into(), "Терапия".into()],
            specialisations: vec!["therapist".into()],
        }
    }

    fn registered() -> OrganisationDetails {
        OrganisationDetails {
            name: "Городская поликлиника №3".into(),
            departments: vec!["Терапия".into()],
            ..details()
        }
    }

    #[test]
    fn registering_validates_and_normalises_details() {
        TestFramework::<Organisation>::with(())
            .given_no_previous_events()
            .when(OrganisationCommand::Register(details()))
            .then_expect_events(vec![
                OrganisationEvent::OrganisationRegistered(registered()),
            ]);
    }

    #[test]
    fn cannot_register_twice() {
        TestFramework::<Organisation>::with(())
            .given(vec![
                OrganisationEvent::OrganisationRegistered(registered()),
            ])
            .when(OrganisationCommand::Register(details()))
            .then_expect_error(OrganisationError::AlreadyRegistered);
    }

    #[test]
    fn unknown_time_zone_names_the_field() {
        let bad = OrganisationDetails {
            time_zone: "Mars/Olympus".into(),
            ..details()
        };
        let result = TestFramework::<Organisation>::with(())
            .given_no_previous_events()
            .when(OrganisationCommand::Register(bad))
            .inspect_result();
        assert!(matches!(
            result,
            Err(OrganisationError::Invalid {
                field: "timeZone",
                ..
            })
        ));
    }

    #[test]
    fn unchanged_details_write_nothing() {
        TestFramework::<Organisation>::with(())
            .given(vec![
                OrganisationEvent::OrganisationRegistered(registered()),
            ])
            .when(OrganisationCommand::UpdateDetails(details()))
            .then_expect_events(vec![]);
    }

    #[test]
    fn designating_a_pharmacy_is_recorded_once() {
        TestFramework::<Organisation>::with(())
            .given(vec![
                OrganisationEvent::OrganisationRegistered(registered()),
            ])
            .when(OrganisationCommand::DesignatePharmacy)
            .then_expect_events(vec![OrganisationEvent::PharmacyDesignated]);
        TestFramework::<Organisation>::with(())
            .given(vec![
                OrganisationEvent::OrganisationRegistered(registered()),
                OrganisationEvent::PharmacyDesignated,
            ])
            .when(OrganisationCommand::DesignatePharmacy)
            .then_expect_events(vec![]);
    }

    #[test]
    fn cannot_designate_an_unknown_organisation_a_pharmacy() {
        TestFramework::<Organisation>::with(())
            .given_no_previous_events()
            .when(OrganisationCommand::DesignatePharmacy)
            .then_expect_error(OrganisationError::NotFound);
    }

    #[test]
    fn cannot_update_an_unknown_organisation() {
        TestFramework::<Organisation>::with(())
            .given_no_previous_events()
            .when(OrganisationCommand::UpdateDetails(details()))
            .then_expect_error(OrganisationError::NotFound);
    }
}
