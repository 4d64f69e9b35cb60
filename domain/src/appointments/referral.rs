//! Referral requests (C6): a patient asks for a referral to another specialist;
//! the clinic approves or rejects it.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::directory::BoundedText;
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// Where a referral request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferralStatus {
    Processing,
    Approved,
    Rejected,
}

impl ReferralStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReferralStatus::Processing => "processing",
            ReferralStatus::Approved => "approved",
            ReferralStatus::Rejected => "rejected",
        }
    }
}

/// Commands on a referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReferralCommand {
    Request {
        patient_id: Uuid,
        organisation_id: Uuid,
        specialty: String,
        reason: String,
    },
    Approve {
        note: Option<String>,
    },
    Reject {
        reason: String,
    },
}

/// Events of a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReferralEvent {
    ReferralRequested {
        patient_id: Uuid,
        organisation_id: Uuid,
        specialty: String,
        reason: String,
        status: ReferralStatus,
    },
    ReferralApproved {
        patient_id: Uuid,
        note: Option<String>,
        status: ReferralStatus,
    },
    ReferralRejected {
        patient_id: Uuid,
        reason: String,
        status: ReferralStatus,
    },
}

impl DomainEvent for ReferralEvent {
    fn event_type(&self) -> String {
        match self {
            ReferralEvent::ReferralRequested { .. } => "ReferralRequested",
            ReferralEvent::ReferralApproved { .. } => "ReferralApproved",
            ReferralEvent::ReferralRejected { .. } => "ReferralRejected",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a referral command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferralError {
    #[error("no such referral request")]
    NotFound,
    #[error("the referral request was already decided")]
    AlreadyDecided,
    #[error("the referral request already exists")]
    AlreadyExists,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for ReferralError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            ReferralError::NotFound => UserError::field("referralId", "NOT_FOUND", message),
            ReferralError::AlreadyDecided => UserError::new("INVALID_STATE", message),
            ReferralError::AlreadyExists => UserError::new("ALREADY_EXISTS", message),
            ReferralError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// A referral request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub patient_id: Option<Uuid>,
    pub organisation_id: Option<Uuid>,
    pub status: Option<ReferralStatus>,
}

fn text(field: &'static str, raw: &str, max: usize) -> Result<String, ReferralError> {
    BoundedText::parse(raw, max)
        .map(|t| t.as_str().to_string())
        .map_err(|e| ReferralError::Invalid {
            field,
            message: e.to_string(),
        })
}

impl Aggregate for Referral {
    const TYPE: &'static str = "referral";
    type Command = ReferralCommand;
    type Event = ReferralEvent;
    type Error = ReferralError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match (command, self.patient_id, self.status) {
            (ReferralCommand::Request { .. }, Some(_), _) => {
                return Err(ReferralError::AlreadyExists)
            }
            (
                ReferralCommand::Request {
                    patient_id,
                    organisation_id,
                    specialty,
                    reason,
                },
                None,
                _,
            ) => ReferralEvent::ReferralRequested {
                patient_id,
                organisation_id,
                specialty: text("specialty", &specialty, 60)?.to_lowercase(),
                reason: text("reason", &reason, 1000)?,
                status: ReferralStatus::Processing,
            },
            (_, None, _) | (_, _, None) => return Err(ReferralError::NotFound),
            (_, Some(_), Some(status)) if status != ReferralStatus::Processing => {
                return Err(ReferralError::AlreadyDecided)
            }
            (ReferralCommand::Approve { note }, Some(patient_id), _) => {
                ReferralEvent::ReferralApproved {
                    patient_id,
                    note: match note.as_deref().map(str::trim) {
                        None | Some("") => None,
                        Some(n) => Some(text("note", n, 1000)?),
                    },
                    status: ReferralStatus::Approved,
                }
            }
            (ReferralCommand::Reject { reason }, Some(patient_id), _) => {
                ReferralEvent::ReferralRejected {
                    patient_id,
                    reason: text("reason", &reason, 1000)?,
                    status: ReferralStatus::Rejected,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            ReferralEvent::ReferralRequested {
                patient_id,
                organisation_id,
                status,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.organisation_id = Some(organisation_id);
                self.status = Some(status);
            }
            ReferralEvent::ReferralApproved { status, .. }
            | ReferralEvent::ReferralRejected { status, .. } => self.status = Some(status),
        }
    }
}

impl Reserving for Referral {}
