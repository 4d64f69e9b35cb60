//! The login of an account: a phone number or an e-mail address, normalised.

use serde::{Deserialize, Serialize};

use crate::identity::{field_error, Email, PhoneNumber};
use crate::notify::Channel;
use crate::user_error::UserError;

/// Which kind of contact an account signs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginKind {
    Phone,
    Email,
}

impl LoginKind {
    /// The channel codes for this kind of login travel by.
    pub fn channel(self) -> Channel {
        match self {
            LoginKind::Phone => Channel::Sms,
            LoginKind::Email => Channel::Email,
        }
    }
}

/// A parsed login: `+7XXXXXXXXXX`, or an e-mail address in lower case.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Login {
    kind: LoginKind,
    text: String,
}

impl std::fmt::Debug for Login {
    // A login is personal data: logs see it masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({:?}, {})", self.kind, self.masked())
    }
}

impl Login {
    /// Parses a phone number or (when it holds `@`) an e-mail address; the
    /// error names `field`.
    pub fn parse(raw: &str, field: &str) -> Result<Login, UserError> {
        if raw.contains('@') {
            let email = Email::parse(raw).map_err(|e| field_error(field, &e))?;
            // Addresses are unique regardless of case: mail systems treat
            // "Ivan@" and "ivan@" as one mailbox in practice.
            Ok(Login {
                kind: LoginKind::Email,
                text: email.as_str().to_lowercase(),
            })
        } else {
            let phone = PhoneNumber::parse(raw).map_err(|e| field_error(field, &e))?;
            Ok(Login {
                kind: LoginKind::Phone,
                text: phone.as_str().to_string(),
            })
        }
    }

    /// The kind of contact.
    pub fn kind(&self) -> LoginKind {
        self.kind
    }

    /// The normalised text, which is also the uniqueness key.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The contact with most of it hidden, for showing where a code went.
    pub fn masked(&self) -> String {
        match self.kind {
            LoginKind::Phone => {
                let tail: String = self
                    .text
                    .chars()
                    .skip(self.text.len().saturating_sub(2))
                    .collect();
                format!("+7 *** ***-**-{tail}")
            }
            LoginKind::Email => match self.text.split_once('@') {
                Some((local, domain)) => {
                    let first: String = local.chars().take(1).collect();
                    format!("{first}***@{domain}")
                }
                None => "***".to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_are_normalised() {
        let phone = Login::parse("8 (912) 345-67-89", "login").expect("phone");
        assert_eq!(phone.kind(), LoginKind::Phone);
        assert_eq!(phone.as_str(), "+79123456789");
        assert_eq!(phone.masked(), "+7 *** ***-**-89");
        let email = Login::parse(" Ivan.Petrov@Mail.RU ", "login").expect("email");
        assert_eq!(email.kind(), LoginKind::Email);
        assert_eq!(email.as_str(), "ivan.petrov@mail.ru");
        assert_eq!(email.masked(), "i***@mail.ru");
    }

    #[test]
    fn bad_logins_name_the_field() {
        let e = Login::parse("12345", "contact").expect_err("short");
        assert_eq!(e.code, "INVALID_PHONE");
        assert_eq!(e.field, Some(vec!["input".into(), "contact".into()]));
        let e = Login::parse("a@b", "contact").expect_err("no dot");
        assert_eq!(e.code, "INVALID_EMAIL");
    }
}
