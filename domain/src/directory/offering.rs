//! The medical services a clinic offers (B3): code, name, type, form, cost, required
//! documents. "Medical service" is the only thing the code calls a service.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use super::values::BoundedText;
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// What a service is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    Consultation,
    Diagnostics,
    Treatment,
    Prevention,
}

impl ServiceKind {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceKind::Consultation => "consultation",
            ServiceKind::Diagnostics => "diagnostics",
            ServiceKind::Treatment => "treatment",
            ServiceKind::Prevention => "prevention",
        }
    }
}

/// How a service is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceForm {
    InPerson,
    Remote,
}

/// A service's details, as validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDetails {
    pub code: String,
    pub name: String,
    pub kind: ServiceKind,
    pub form: ServiceForm,
    /// Cost in roubles as a decimal string (`"0.00"` for services covered by OMS).
    pub cost: String,
    pub required_documents: Vec<String>,
}

/// A text that is not a service code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not a service code (letters, digits, '.' and '-', up to 32)")]
pub struct ServiceCodeError(pub String);

/// A text that is not a cost in roubles.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CostError {
    /// Not a non-negative decimal with at most two fraction digits.
    #[error("'{0}' is not a cost in roubles such as 1500 or 1500.50")]
    Malformed(String),
    /// More roubles than a cost may hold.
    #[error("'{0}' is too large")]
    TooLarge(String),
}

/// Checks a service code: 1 to 32 characters of letters, digits, `.` and `-`.
pub fn parse_code(raw: &str) -> Result<String, ServiceCodeError> {
    let code = raw.trim();
    if code.is_empty()
        || code.len() > 32
        || !code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        return Err(ServiceCodeError(raw.to_string()));
    }
    Ok(code.to_ascii_uppercase())
}

/// Checks a cost: a non-negative decimal with at most two fraction digits.
pub fn parse_cost(raw: &str) -> Result<String, CostError> {
    let cost = raw.trim();
    let (whole, fraction) = cost.split_once('.').unwrap_or((cost, ""));
    let ok = !whole.is_empty()
        && whole.len() <= 9
        && whole.chars().all(|c| c.is_ascii_digit())
        && fraction.len() <= 2
        && fraction.chars().all(|c| c.is_ascii_digit());
    if !ok {
        return Err(CostError::Malformed(raw.to_string()));
    }
    let whole: u64 = whole
        .parse()
        .map_err(|_| CostError::TooLarge(raw.to_string()))?;
    Ok(format!("{whole}.{fraction:0<2}"))
}

impl ServiceDetails {
    fn validated(&self) -> Result<ServiceDetails, ServiceError> {
        let invalid = |field: &'static str, e: &dyn std::fmt::Display| ServiceError::Invalid {
            field,
            message: e.to_string(),
        };
        let documents = if self.required_documents.len() > 20 {
            return Err(ServiceError::Invalid {
                field: "requiredDocuments",
                message: "at most 20 documents".into(),
            });
        } else {
            self.required_documents
                .iter()
                .map(|d| BoundedText::parse(d, 200).map(|t| t.as_str().to_string()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid("requiredDocuments", &e))?
        };
        Ok(ServiceDetails {
            code: parse_code(&self.code).map_err(|e| invalid("code", &e))?,
            name: BoundedText::parse(&self.name, 300)
                .map(|t| t.as_str().to_string())
                .map_err(|e| ServiceError::Invalid {
                    field: "name",
                    message: e.to_string(),
                })?,
            kind: self.kind,
            form: self.form,
            cost: parse_cost(&self.cost).map_err(|e| invalid("cost", &e))?,
            required_documents: documents,
        })
    }
}

/// Commands on a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceCommand {
    Register(ServiceDetails),
}

/// Events of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceEvent {
    ServiceRegistered(ServiceDetails),
}

impl DomainEvent for ServiceEvent {
    fn event_type(&self) -> String {
        "ServiceRegistered".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a service command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("a service with this code is already registered")]
    AlreadyRegistered,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for ServiceError {
    fn to_user_error(&self) -> UserError {
        match self {
            ServiceError::AlreadyRegistered => {
                UserError::field("code", "ALREADY_EXISTS", self.to_string())
            }
            ServiceError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// A medical service; its stream id is its code, so a code is registered once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MedicalService {
    pub details: Option<ServiceDetails>,
}

impl Aggregate for MedicalService {
    const TYPE: &'static str = "service";
    type Command = ServiceCommand;
    type Event = ServiceEvent;
    type Error = ServiceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let ServiceCommand::Register(details) = command;
        if self.details.is_some() {
            return Err(ServiceError::AlreadyRegistered);
        }
        sink.write(ServiceEvent::ServiceRegistered(details.validated()?), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let ServiceEvent::ServiceRegistered(details) = event;
        self.details = Some(details);
    }
}

impl Reserving for MedicalService {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_are_exact_decimals() {
        assert_eq!(parse_cost("1500"), Ok("1500.00".into()));
        assert_eq!(parse_cost("1500.5"), Ok("1500.50".into()));
        assert!(parse_cost("-1").is_err());
        assert!(parse_cost("1.005").is_err());
        assert!(parse_cost("1e3").is_err());
    }

    #[test]
    fn codes_are_normalised() {
        assert_eq!(parse_code(" b01.047.001 "), Ok("B01.047.001".into()));
        assert!(parse_code("B01 047").is_err());
    }
}
