//! The SNILS registry: its entries as administrators load them, the port the
//! verification asks, and how names are compared with it.

use async_trait::async_trait;
use chrono::NaiveDate;

use super::values::Snils;
use crate::directory::BoundedText;
use crate::user_error::UserError;

/// One person in the SNILS registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub snils: Snils,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
}

/// A registry entry as an administrator types it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RawRegistryEntry {
    pub snils: String,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

fn entry_error(index: usize, field: &str, code: &'static str, message: String) -> UserError {
    UserError {
        field: Some(vec![
            "input".into(),
            "entries".into(),
            index.to_string(),
            field.into(),
        ]),
        message,
        code,
    }
}

impl RegistryEntry {
    /// Parses the entries of a registry load, naming every wrong field of every entry.
    pub fn parse_all(raw: &[RawRegistryEntry]) -> Result<Vec<RegistryEntry>, Vec<UserError>> {
        let mut errors = Vec::new();
        let mut entries = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let snils = Snils::parse(&r.snils)
                .map_err(|e| {
                    use super::values::ValueError;
                    errors.push(entry_error(i, "snils", e.code(), e.to_string()))
                })
                .ok();
            let mut name = |raw: &str, field: &str| {
                BoundedText::parse(raw, 100)
                    .map(|t| t.as_str().to_string())
                    .map_err(|e| errors.push(entry_error(i, field, "INVALID_INPUT", e.to_string())))
                    .ok()
            };
            let surname = name(&r.surname, "surname");
            let first_name = name(&r.first_name, "firstName");
            let patronymic = match r.patronymic.as_deref().map(str::trim) {
                None | Some("") => Some(None),
                Some(p) => name(p, "patronymic").map(Some),
            };
            let birth_date = NaiveDate::parse_from_str(r.birth_date.trim(), "%Y-%m-%d")
                .map_err(|_| {
                    errors.push(entry_error(
                        i,
                        "birthDate",
                        "INVALID_BIRTH_DATE",
                        "not a date in the form YYYY-MM-DD".into(),
                    ))
                })
                .ok();
            if let (
                Some(snils),
                Some(surname),
                Some(first_name),
                Some(patronymic),
                Some(birth_date),
            ) = (snils, surname, first_name, patronymic, birth_date)
            {
                entries.push(RegistryEntry {
                    snils,
                    surname,
                    first_name,
                    patronymic,
                    birth_date,
                });
            }
        }
        if errors.is_empty() {
            Ok(entries)
        } else {
            Err(errors)
        }
    }
}

/// The SNILS registry port.
#[async_trait]
pub trait SnilsRegistry: Send + Sync + 'static {
    /// The registry's entry for `snils`, if any.
    async fn lookup(&self, snils: &Snils) -> Result<Option<RegistryEntry>, RegistryError>;
}

/// The registry could not answer.
#[derive(Debug, thiserror::Error)]
#[error("the SNILS registry failed: {0}")]
pub struct RegistryError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

/// A name without case, surrounding spaces, or the ё/е distinction.
pub fn normal_name(s: &str) -> String {
    s.trim().to_lowercase().replace('ё', "е")
}

/// Names compare without case, surrounding spaces, or the ё/е distinction.
pub fn same_name(a: &str, b: &str) -> bool {
    normal_name(a) == normal_name(b)
}
