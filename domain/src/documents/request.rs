//! The document request aggregate: submitted → in progress → fulfilled | rejected.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::directory::BoundedText;
use crate::identity::OmsPolicyNumber;
use crate::journal::reservations::{conflict, ReservationOp, ReservationTaken, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Reservation scope: a rejected request is resubmitted at most once (the new
/// request may itself be rejected and resubmitted, without limit).
pub const RESUBMISSION_SCOPE: &str = "document-resubmission";

/// What kind of document is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// Выписка из истории болезни.
    HistoryExtract,
    /// Справка о состоянии здоровья.
    HealthCertificate,
    /// Результаты обследований.
    ExaminationResults,
}

impl DocumentKind {
    /// Every kind, in display order.
    pub const ALL: [DocumentKind; 3] = [
        DocumentKind::HistoryExtract,
        DocumentKind::HealthCertificate,
        DocumentKind::ExaminationResults,
    ];

    /// The stable lowercase name stored in events and read models.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentKind::HistoryExtract => "history_extract",
            DocumentKind::HealthCertificate => "health_certificate",
            DocumentKind::ExaminationResults => "examination_results",
        }
    }

    /// The kind of a stored name.
    pub fn parse(raw: &str) -> Option<DocumentKind> {
        DocumentKind::ALL.into_iter().find(|k| k.as_str() == raw)
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentRequestStatus {
    Submitted,
    InProgress,
    Fulfilled,
    Rejected,
}

impl DocumentRequestStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentRequestStatus::Submitted => "submitted",
            DocumentRequestStatus::InProgress => "in_progress",
            DocumentRequestStatus::Fulfilled => "fulfilled",
            DocumentRequestStatus::Rejected => "rejected",
        }
    }

    /// The status of a stored name.
    pub fn parse(raw: &str) -> Option<DocumentRequestStatus> {
        [
            DocumentRequestStatus::Submitted,
            DocumentRequestStatus::InProgress,
            DocumentRequestStatus::Fulfilled,
            DocumentRequestStatus::Rejected,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

/// Why staff rejected a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RejectionReason {
    /// The supporting data is missing or wrong (policy number, visit date).
    InvalidSupportingData,
    /// The organisation holds no records of the patient for the period.
    NoRecordsInPeriod,
    /// The document is not issued by this organisation.
    NotIssuedHere,
    /// A personal visit is needed (e.g. an examination for a certificate).
    VisitRequired,
    Other,
}

impl RejectionReason {
    /// The stable code.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionReason::InvalidSupportingData => "INVALID_SUPPORTING_DATA",
            RejectionReason::NoRecordsInPeriod => "NO_RECORDS_IN_PERIOD",
            RejectionReason::NotIssuedHere => "NOT_ISSUED_HERE",
            RejectionReason::VisitRequired => "VISIT_REQUIRED",
            RejectionReason::Other => "OTHER",
        }
    }

    /// The reason of a stored code.
    pub fn parse(raw: &str) -> Option<RejectionReason> {
        [
            RejectionReason::InvalidSupportingData,
            RejectionReason::NoRecordsInPeriod,
            RejectionReason::NotIssuedHere,
            RejectionReason::VisitRequired,
            RejectionReason::Other,
        ]
        .into_iter()
        .find(|r| r.as_str() == raw)
    }
}

/// What a patient asks for, as given (validated by the aggregate).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submission {
    pub patient_id: Uuid,
    /// The organisation asked (its existence is checked by the caller against the directory).
    pub organisation_id: Uuid,
    pub kind: DocumentKind,
    pub period_from: NaiveDate,
    pub period_to: NaiveDate,
    pub policy_number: Option<String>,
    pub visit_date: Option<NaiveDate>,
    /// What the patient needs the document for, in their words.
    pub purpose: Option<String>,
    /// The rejected request this one resubmits.
    pub resubmission_of: Option<Uuid>,
    /// By when the organisation is to answer.
    pub due_at: DateTime<Utc>,
    /// The patient's today (in their time zone), for the "not in the future" rules.
    pub today: NaiveDate,
}

/// Commands on a document request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentRequestCommand {
    Submit(Submission),
    /// Staff of the organisation take the request.
    Start {
        staff_id: Uuid,
    },
    /// Staff attach the rendered document, stored under `file_sha256`.
    Fulfil {
        file_sha256: String,
    },
    Reject {
        reason: RejectionReason,
        text: String,
    },
    /// The patient sends the fulfilled document to another organisation.
    SendToClinic {
        organisation_id: Uuid,
    },
}

/// Events of a document request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DocumentRequestEvent {
    DocumentRequested {
        patient_id: Uuid,
        organisation_id: Uuid,
        kind: DocumentKind,
        period_from: NaiveDate,
        period_to: NaiveDate,
        policy_number: Option<String>,
        visit_date: Option<NaiveDate>,
        purpose: Option<String>,
        resubmission_of: Option<Uuid>,
        due_at: DateTime<Utc>,
        status: DocumentRequestStatus,
    },
    DocumentRequestStarted {
        patient_id: Uuid,
        organisation_id: Uuid,
        staff_id: Uuid,
        status: DocumentRequestStatus,
    },
    DocumentRequestFulfilled {
        patient_id: Uuid,
        organisation_id: Uuid,
        kind: DocumentKind,
        /// SHA-256 of the PDF in the file store: the event pins the exact document.
        file_sha256: String,
        status: DocumentRequestStatus,
    },
    DocumentRequestRejected {
        patient_id: Uuid,
        organisation_id: Uuid,
        reason: RejectionReason,
        text: String,
        status: DocumentRequestStatus,
    },
    DocumentSentToClinic {
        patient_id: Uuid,
        /// The organisation that received the document.
        organisation_id: Uuid,
        file_sha256: String,
    },
}

impl DomainEvent for DocumentRequestEvent {
    fn event_type(&self) -> String {
        match self {
            DocumentRequestEvent::DocumentRequested { .. } => "DocumentRequested",
            DocumentRequestEvent::DocumentRequestStarted { .. } => "DocumentRequestStarted",
            DocumentRequestEvent::DocumentRequestFulfilled { .. } => "DocumentRequestFulfilled",
            DocumentRequestEvent::DocumentRequestRejected { .. } => "DocumentRequestRejected",
            DocumentRequestEvent::DocumentSentToClinic { .. } => "DocumentSentToClinic",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a document request command was refused; nothing is written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DocumentError {
    #[error("no such document request")]
    NotFound,
    #[error("the document request already exists")]
    AlreadyExists,
    #[error("the period must not end before it starts")]
    PeriodEndsBeforeStart,
    #[error("the period must not lie in the future")]
    PeriodInFuture,
    #[error("the visit date must not be in the future")]
    VisitDateInFuture,
    #[error("{0}")]
    PolicyNumber(String),
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Several fields are wrong at once.
    #[error("{} fields are invalid", .0.len())]
    Fields(Vec<DocumentError>),
    #[error("the file reference must be a SHA-256 in lower-case hex")]
    BadFileReference,
    #[error("cannot {action} a request that is {}", status.as_str().replace('_', " "))]
    IllegalTransition {
        action: &'static str,
        status: DocumentRequestStatus,
    },
}

impl AsUserError for DocumentError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            DocumentError::NotFound => UserError::field("requestId", "NOT_FOUND", message),
            DocumentError::AlreadyExists => UserError::new("ALREADY_EXISTS", message),
            DocumentError::PeriodEndsBeforeStart => {
                UserError::field("periodTo", "PERIOD_ENDS_BEFORE_START", message)
            }
            DocumentError::PeriodInFuture => {
                UserError::field("periodTo", "PERIOD_IN_FUTURE", message)
            }
            DocumentError::VisitDateInFuture => {
                UserError::field("visitDate", "VISIT_DATE_IN_FUTURE", message)
            }
            DocumentError::PolicyNumber(_) => {
                UserError::field("policyNumber", "INVALID_POLICY_NUMBER", message)
            }
            DocumentError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
            DocumentError::BadFileReference => UserError::new("INVALID_INPUT", message),
            DocumentError::IllegalTransition { status, .. } => UserError::new(
                match status {
                    DocumentRequestStatus::Submitted => "REQUEST_NOT_STARTED",
                    DocumentRequestStatus::InProgress => "REQUEST_IN_PROGRESS",
                    DocumentRequestStatus::Fulfilled => "REQUEST_FULFILLED",
                    DocumentRequestStatus::Rejected => "REQUEST_REJECTED",
                },
                message,
            ),
            DocumentError::Fields(errors) => match errors.first() {
                Some(first) => first.to_user_error(),
                None => UserError::new("INVALID_INPUT", message),
            },
        }
    }

    fn to_user_errors(&self) -> Vec<UserError> {
        match self {
            DocumentError::Fields(errors) => {
                errors.iter().flat_map(|e| e.to_user_errors()).collect()
            }
            other => vec![other.to_user_error()],
        }
    }
}

/// A document request; the stream id is the request id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRequest {
    pub patient_id: Option<Uuid>,
    pub organisation_id: Option<Uuid>,
    pub kind: Option<DocumentKind>,
    pub status: Option<DocumentRequestStatus>,
    pub file_sha256: Option<String>,
}

fn text(field: &'static str, raw: &str, max: usize) -> Result<String, DocumentError> {
    BoundedText::parse(raw, max)
        .map(|t| t.as_str().to_string())
        .map_err(|e| DocumentError::Invalid {
            field,
            message: e.to_string(),
        })
}

fn optional_text(
    field: &'static str,
    raw: Option<&str>,
    max: usize,
) -> Result<Option<String>, DocumentError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(t) => text(field, t, max).map(Some),
    }
}

fn submit(s: Submission) -> Result<DocumentRequestEvent, DocumentError> {
    // Every wrong field is reported at once.
    let mut errors = Vec::new();
    if s.period_to < s.period_from {
        errors.push(DocumentError::PeriodEndsBeforeStart);
    }
    if s.period_to > s.today {
        errors.push(DocumentError::PeriodInFuture);
    }
    if s.visit_date.is_some_and(|d| d > s.today) {
        errors.push(DocumentError::VisitDateInFuture);
    }
    let policy_number = match s.policy_number.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(raw) => OmsPolicyNumber::parse(raw)
            .map(|n| n.as_str().to_string())
            .map_err(|e| errors.push(DocumentError::PolicyNumber(e.to_string())))
            .ok(),
    };
    let purpose = optional_text("purpose", s.purpose.as_deref(), 500)
        .map_err(|e| errors.push(e))
        .ok()
        .flatten();
    match errors.len() {
        0 => {}
        1 => return Err(errors.remove(0)),
        _ => return Err(DocumentError::Fields(errors)),
    }
    Ok(DocumentRequestEvent::DocumentRequested {
        patient_id: s.patient_id,
        organisation_id: s.organisation_id,
        kind: s.kind,
        period_from: s.period_from,
        period_to: s.period_to,
        policy_number,
        visit_date: s.visit_date,
        purpose,
        resubmission_of: s.resubmission_of,
        due_at: s.due_at,
        status: DocumentRequestStatus::Submitted,
    })
}

impl Aggregate for DocumentRequest {
    const TYPE: &'static str = "document_request";
    type Command = DocumentRequestCommand;
    type Event = DocumentRequestEvent;
    type Error = DocumentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        use DocumentRequestStatus as S;
        let (patient_id, organisation_id, status) =
            match (&command, self.patient_id, self.organisation_id, self.status) {
                (DocumentRequestCommand::Submit(_), Some(_), _, _) => {
                    return Err(DocumentError::AlreadyExists)
                }
                (DocumentRequestCommand::Submit(s), None, _, _) => {
                    let event = submit(s.clone())?;
                    sink.write(event, self).await;
                    return Ok(());
                }
                (_, Some(p), Some(o), Some(s)) => (p, o, s),
                _ => return Err(DocumentError::NotFound),
            };
        let illegal = |action: &'static str| DocumentError::IllegalTransition { action, status };
        let event = match command {
            DocumentRequestCommand::Submit(_) => return Err(DocumentError::AlreadyExists),
            DocumentRequestCommand::Start { staff_id } => {
                if status != S::Submitted {
                    return Err(illegal("start"));
                }
                DocumentRequestEvent::DocumentRequestStarted {
                    patient_id,
                    organisation_id,
                    staff_id,
                    status: S::InProgress,
                }
            }
            DocumentRequestCommand::Fulfil { file_sha256 } => {
                if status != S::InProgress {
                    return Err(illegal("fulfil"));
                }
                let valid = file_sha256.len() == 64
                    && file_sha256
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
                if !valid {
                    return Err(DocumentError::BadFileReference);
                }
                DocumentRequestEvent::DocumentRequestFulfilled {
                    patient_id,
                    organisation_id,
                    kind: self.kind.unwrap_or(DocumentKind::HistoryExtract),
                    file_sha256,
                    status: S::Fulfilled,
                }
            }
            DocumentRequestCommand::Reject { reason, text: t } => {
                if !matches!(status, S::Submitted | S::InProgress) {
                    return Err(illegal("reject"));
                }
                DocumentRequestEvent::DocumentRequestRejected {
                    patient_id,
                    organisation_id,
                    reason,
                    text: text("text", &t, 1000)?,
                    status: S::Rejected,
                }
            }
            DocumentRequestCommand::SendToClinic {
                organisation_id: to,
            } => {
                let (S::Fulfilled, Some(file)) = (status, self.file_sha256.clone()) else {
                    return Err(illegal("send to a clinic"));
                };
                DocumentRequestEvent::DocumentSentToClinic {
                    patient_id,
                    organisation_id: to,
                    file_sha256: file,
                }
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            DocumentRequestEvent::DocumentRequested {
                patient_id,
                organisation_id,
                kind,
                status,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.organisation_id = Some(organisation_id);
                self.kind = Some(kind);
                self.status = Some(status);
            }
            DocumentRequestEvent::DocumentRequestStarted { status, .. }
            | DocumentRequestEvent::DocumentRequestRejected { status, .. } => {
                self.status = Some(status)
            }
            DocumentRequestEvent::DocumentRequestFulfilled {
                status,
                file_sha256,
                ..
            } => {
                self.status = Some(status);
                self.file_sha256 = Some(file_sha256);
            }
            DocumentRequestEvent::DocumentSentToClinic { .. } => {}
        }
    }
}

impl Reserving for DocumentRequest {
    fn reservations(aggregate_id: &str, events: &[DocumentRequestEvent]) -> Vec<ReservationOp> {
        events
            .iter()
            .filter_map(|event| match event {
                DocumentRequestEvent::DocumentRequested {
                    resubmission_of: Some(previous),
                    ..
                } => Some(ReservationOp::Take {
                    scope: RESUBMISSION_SCOPE,
                    key: previous.to_string(),
                    owner: aggregate_id.to_string(),
                }),
                _ => None,
            })
            .collect()
    }

    fn reservation_error(taken: &ReservationTaken) -> UserError {
        match taken.scope.as_str() {
            RESUBMISSION_SCOPE => UserError::field(
                "requestId",
                "ALREADY_RESUBMITTED",
                "this rejected request was already resubmitted",
            ),
            _ => conflict(taken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Test = TestFramework<DocumentRequest>;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn ids() -> (Uuid, Uuid) {
        (
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002),
        )
    }

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("date")
    }

    fn due() -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000, 0).expect("instant")
    }

    fn submission() -> Submission {
        let (patient_id, organisation_id) = ids();
        Submission {
            patient_id,
            organisation_id,
            kind: DocumentKind::HistoryExtract,
            period_from: date(2026, 1, 1),
            period_to: date(2026, 3, 31),
            policy_number: Some("7723 4567 8901 2346".into()),
            visit_date: Some(date(2026, 2, 10)),
            purpose: Some("  для работы ".into()),
            resubmission_of: None,
            due_at: due(),
            today: date(2026, 4, 1),
        }
    }

    fn requested() -> DocumentRequestEvent {
        let (patient_id, organisation_id) = ids();
        DocumentRequestEvent::DocumentRequested {
            patient_id,
            organisation_id,
            kind: DocumentKind::HistoryExtract,
            period_from: date(2026, 1, 1),
            period_to: date(2026, 3, 31),
            policy_number: Some("7723456789012346".into()),
            visit_date: Some(date(2026, 2, 10)),
            purpose: Some("для работы".into()),
            resubmission_of: None,
            due_at: due(),
            status: DocumentRequestStatus::Submitted,
        }
    }

    fn started() -> DocumentRequestEvent {
        let (patient_id, organisation_id) = ids();
        DocumentRequestEvent::DocumentRequestStarted {
            patient_id,
            organisation_id,
            staff_id: Uuid::nil(),
            status: DocumentRequestStatus::InProgress,
        }
    }

    fn fulfilled() -> DocumentRequestEvent {
        let (patient_id, organisation_id) = ids();
        DocumentRequestEvent::DocumentRequestFulfilled {
            patient_id,
            organisation_id,
            kind: DocumentKind::HistoryExtract,
            file_sha256: SHA.into(),
            status: DocumentRequestStatus::Fulfilled,
        }
    }

    fn rejected() -> DocumentRequestEvent {
        let (patient_id, organisation_id) = ids();
        DocumentRequestEvent::DocumentRequestRejected {
            patient_id,
            organisation_id,
            reason: RejectionReason::NoRecordsInPeriod,
            text: "нет посещений".into(),
            status: DocumentRequestStatus::Rejected,
        }
    }

    fn reject() -> DocumentRequestCommand {
        DocumentRequestCommand::Reject {
            reason: RejectionReason::NoRecordsInPeriod,
            text: " нет посещений ".into(),
        }
    }

    fn illegal(action: &'static str, status: DocumentRequestStatus) -> DocumentError {
        DocumentError::IllegalTransition { action, status }
    }

    #[test]
    fn a_submission_records_the_normalised_request() {
        Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(submission()))
            .then_expect_events(vec![requested()]);
    }

    #[test]
    fn a_period_that_ends_before_it_starts_is_refused() {
        let mut s = submission();
        s.period_to = date(2025, 12, 31);
        Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(s))
            .then_expect_error(DocumentError::PeriodEndsBeforeStart);
    }

    #[test]
    fn a_period_in_the_future_is_refused() {
        let mut s = submission();
        s.period_to = date(2026, 4, 2);
        Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(s))
            .then_expect_error(DocumentError::PeriodInFuture);
    }

    #[test]
    fn every_wrong_field_of_a_submission_is_reported_at_once() {
        let mut s = submission();
        s.period_to = date(2025, 12, 31);
        s.visit_date = Some(date(2026, 4, 2));
        s.policy_number = Some("7723 4567 8901 2345".into());
        let error = Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(s))
            .inspect_result()
            .expect_err("refused");
        let codes: Vec<_> = error.to_user_errors().into_iter().map(|e| e.code).collect();
        assert_eq!(
            codes,
            [
                "PERIOD_ENDS_BEFORE_START",
                "VISIT_DATE_IN_FUTURE",
                "INVALID_POLICY_NUMBER"
            ]
        );
    }

    #[test]
    fn a_visit_date_in_the_future_is_refused() {
        let mut s = submission();
        s.visit_date = Some(date(2026, 4, 2));
        Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(s))
            .then_expect_error(DocumentError::VisitDateInFuture);
    }

    #[test]
    fn a_policy_number_with_a_wrong_check_digit_is_refused() {
        let mut s = submission();
        s.policy_number = Some("7723456789012345".into());
        let result = Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Submit(s))
            .inspect_result();
        match result {
            Err(e @ DocumentError::PolicyNumber(_)) => {
                assert_eq!(e.to_user_error().code, "INVALID_POLICY_NUMBER")
            }
            other => panic!("expected a policy number error, got {other:?}"),
        }
    }

    #[test]
    fn a_request_is_submitted_once() {
        Test::with(())
            .given(vec![requested()])
            .when(DocumentRequestCommand::Submit(submission()))
            .then_expect_error(DocumentError::AlreadyExists);
    }

    #[test]
    fn staff_take_a_submitted_request() {
        Test::with(())
            .given(vec![requested()])
            .when(DocumentRequestCommand::Start {
                staff_id: Uuid::nil(),
            })
            .then_expect_events(vec![started()]);
    }

    #[test]
    fn a_request_in_progress_is_fulfilled_with_its_file_hash() {
        Test::with(())
            .given(vec![requested(), started()])
            .when(DocumentRequestCommand::Fulfil {
                file_sha256: SHA.into(),
            })
            .then_expect_events(vec![fulfilled()]);
    }

    #[test]
    fn a_fulfilment_needs_a_sha256_reference() {
        Test::with(())
            .given(vec![requested(), started()])
            .when(DocumentRequestCommand::Fulfil {
                file_sha256: "not-a-hash".into(),
            })
            .then_expect_error(DocumentError::BadFileReference);
    }

    #[test]
    fn a_submitted_request_may_be_rejected() {
        Test::with(())
            .given(vec![requested()])
            .when(reject())
            .then_expect_events(vec![rejected()]);
    }

    #[test]
    fn a_request_in_progress_may_be_rejected() {
        Test::with(())
            .given(vec![requested(), started()])
            .when(reject())
            .then_expect_events(vec![rejected()]);
    }

    #[test]
    fn a_rejection_needs_a_text() {
        Test::with(())
            .given(vec![requested()])
            .when(DocumentRequestCommand::Reject {
                reason: RejectionReason::Other,
                text: "   ".into(),
            })
            .then_expect_error(DocumentError::Invalid {
                field: "text",
                message: "must not be empty".into(),
            });
    }

    #[test]
    fn a_fulfilled_document_is_sent_to_a_clinic() {
        let (patient_id, _) = ids();
        let to = Uuid::from_u128(7);
        Test::with(())
            .given(vec![requested(), started(), fulfilled()])
            .when(DocumentRequestCommand::SendToClinic {
                organisation_id: to,
            })
            .then_expect_events(vec![DocumentRequestEvent::DocumentSentToClinic {
                patient_id,
                organisation_id: to,
                file_sha256: SHA.into(),
            }]);
    }

    #[test]
    fn a_submitted_request_cannot_be_fulfilled_before_it_is_taken() {
        Test::with(())
            .given(vec![requested()])
            .when(DocumentRequestCommand::Fulfil {
                file_sha256: SHA.into(),
            })
            .then_expect_error(illegal("fulfil", DocumentRequestStatus::Submitted));
    }

    #[test]
    fn a_rejected_request_cannot_be_fulfilled() {
        Test::with(())
            .given(vec![requested(), rejected()])
            .when(DocumentRequestCommand::Fulfil {
                file_sha256: SHA.into(),
            })
            .then_expect_error(illegal("fulfil", DocumentRequestStatus::Rejected));
    }

    #[test]
    fn a_fulfilled_request_cannot_be_fulfilled_again() {
        Test::with(())
            .given(vec![requested(), started(), fulfilled()])
            .when(DocumentRequestCommand::Fulfil {
                file_sha256: SHA.into(),
            })
            .then_expect_error(illegal("fulfil", DocumentRequestStatus::Fulfilled));
    }

    #[test]
    fn a_request_in_progress_cannot_be_taken_again() {
        Test::with(())
            .given(vec![requested(), started()])
            .when(DocumentRequestCommand::Start {
                staff_id: Uuid::nil(),
            })
            .then_expect_error(illegal("start", DocumentRequestStatus::InProgress));
    }

    #[test]
    fn a_rejected_request_cannot_be_taken() {
        Test::with(())
            .given(vec![requested(), rejected()])
            .when(DocumentRequestCommand::Start {
                staff_id: Uuid::nil(),
            })
            .then_expect_error(illegal("start", DocumentRequestStatus::Rejected));
    }

    #[test]
    fn a_fulfilled_request_cannot_be_taken() {
        Test::with(())
            .given(vec![requested(), started(), fulfilled()])
            .when(DocumentRequestCommand::Start {
                staff_id: Uuid::nil(),
            })
            .then_expect_error(illegal("start", DocumentRequestStatus::Fulfilled));
    }

    #[test]
    fn a_fulfilled_request_cannot_be_rejected() {
        Test::with(())
            .given(vec![requested(), started(), fulfilled()])
            .when(reject())
            .then_expect_error(illegal("reject", DocumentRequestStatus::Fulfilled));
    }

    #[test]
    fn a_rejected_request_cannot_be_rejected_again() {
        Test::with(())
            .given(vec![requested(), rejected()])
            .when(reject())
            .then_expect_error(illegal("reject", DocumentRequestStatus::Rejected));
    }

    #[test]
    fn only_a_fulfilled_document_can_be_sent_to_a_clinic() {
        for (given, status) in [
            (vec![requested()], DocumentRequestStatus::Submitted),
            (
                vec![requested(), started()],
                DocumentRequestStatus::InProgress,
            ),
            (
                vec![requested(), rejected()],
                DocumentRequestStatus::Rejected,
            ),
        ] {
            Test::with(())
                .given(given)
                .when(DocumentRequestCommand::SendToClinic {
                    organisation_id: Uuid::from_u128(7),
                })
                .then_expect_error(illegal("send to a clinic", status));
        }
    }

    #[test]
    fn commands_on_a_missing_request_find_nothing() {
        Test::with(())
            .given_no_previous_events()
            .when(DocumentRequestCommand::Start {
                staff_id: Uuid::nil(),
            })
            .then_expect_error(DocumentError::NotFound);
    }

    #[test]
    fn a_resubmission_reserves_the_rejected_request_it_follows() {
        let previous = Uuid::from_u128(42);
        let mut s = submission();
        s.resubmission_of = Some(previous);
        let event = submit(s).expect("valid");
        assert_eq!(
            DocumentRequest::reservations("new", &[event]),
            vec![ReservationOp::Take {
                scope: RESUBMISSION_SCOPE,
                key: previous.to_string(),
                owner: "new".into(),
            }]
        );
    }

    #[test]
    fn illegal_transitions_have_stable_codes() {
        let code = |status| illegal("fulfil", status).to_user_error().code;
        assert_eq!(code(DocumentRequestStatus::Rejected), "REQUEST_REJECTED");
        assert_eq!(code(DocumentRequestStatus::Fulfilled), "REQUEST_FULFILLED");
        assert_eq!(
            code(DocumentRequestStatus::Submitted),
            "REQUEST_NOT_STARTED"
        );
        assert_eq!(
            code(DocumentRequestStatus::InProgress),
            "REQUEST_IN_PROGRESS"
        );
    }
}
