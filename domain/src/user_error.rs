//! Business errors as callers see them: a stable code, a message, the field at fault.

/// A refusal the caller can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserError {
    /// Path of the input field at fault, e.g. `["input", "timeZone"]`.
    pub field: Option<Vec<String>>,
    pub message: String,
    /// Stable machine-readable code, e.g. `SLOT_TAKEN`.
    pub code: &'static str,
}

impl UserError {
    /// An error about the request as a whole.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        UserError {
            field: None,
            message: message.into(),
            code,
        }
    }

    /// An error about one input field (given in API spelling, e.g. `timeZone`).
    pub fn field(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        UserError {
            field: Some(vec!["input".to_string(), field.to_string()]),
            message: message.into(),
            code,
        }
    }
}

/// Errors that know how to present themselves to a caller.
pub trait AsUserError {
    /// The caller-facing form of this error.
    fn to_user_error(&self) -> UserError;

    /// Every caller-facing error this refusal carries (one, unless it names several fields).
    fn to_user_errors(&self) -> Vec<UserError> {
        vec![self.to_user_error()]
    }
}
