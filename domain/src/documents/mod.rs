//! Medical document requests (E1): a patient asks an organisation for an extract from
//! the history, a health certificate or examination results; clinic staff take the
//! request and fulfil it with a PDF or reject it with a reason.

mod request;

pub use request::{
    DocumentError, DocumentKind, DocumentRequest, DocumentRequestCommand, DocumentRequestEvent,
    DocumentRequestStatus, RejectionReason, Submission, RESUBMISSION_SCOPE,
};
