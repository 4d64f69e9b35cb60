//! Parsing an OMS policy application: every wrong or missing field is named at once.
//!
//! The holder is always the applicant, as their verified profile says: identity
//! fields in the application are optional and, when given, must agree with it.

use chrono::{Months, NaiveDate};
use serde::{Deserialize, Serialize};

use crate::directory::BoundedText;
use crate::identity::{field_error, PassportNumber, PassportSeries, Snils};
use crate::user_error::UserError;

/// Longest policy period, in years.
pub const MAX_POLICY_YEARS: u32 = 10;
/// How far ahead of today a policy period may start, in days.
pub const MAX_START_AHEAD_DAYS: i64 = 90;

/// Regional (valid in the region of issue) or federal (valid everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Regional,
    Federal,
}

impl PolicyKind {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyKind::Regional => "regional",
            PolicyKind::Federal => "federal",
        }
    }
}

/// The person a policy is for, as checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyHolder {
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
    pub snils: Snils,
    pub passport_series: PassportSeries,
    pub passport_number: PassportNumber,
}

/// An application as the caller typed it. The identity fields (name, birth date,
/// SNILS, passport) only confirm the verified profile's; they never replace it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawApplication {
    pub surname: Option<String>,
    pub first_name: Option<String>,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub snils: Option<String>,
    pub passport_series: Option<String>,
    pub passport_number: Option<String>,
    pub kind: Option<PolicyKind>,
    /// Required for a regional policy.
    pub region: Option<String>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub consent: bool,
}

/// A checked application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyApplication {
    pub holder: PolicyHolder,
    pub kind: PolicyKind,
    pub region: Option<String>,
    pub valid_from: NaiveDate,
    pub valid_until: NaiveDate,
}

fn missing(field: &str) -> UserError {
    UserError::field(field, "REQUIRED", "this field is required")
}

fn mismatch(field: &str) -> UserError {
    UserError::field(
        field,
        "IDENTITY_MISMATCH",
        "differs from your verified profile: a policy is issued only to its applicant, as identified",
    )
}

fn same_name(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.trim().to_lowercase().replace('ё', "е");
    norm(a) == norm(b)
}

/// Names every identity field of `raw` that is given and differs from `holder`.
fn check_identity(raw: &RawApplication, holder: &PolicyHolder, errors: &mut Vec<UserError>) {
    let given = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    if given(&raw.surname).is_some_and(|v| !same_name(&v, &holder.surname)) {
        errors.push(mismatch("surname"));
    }
    if given(&raw.first_name).is_some_and(|v| !same_name(&v, &holder.first_name)) {
        errors.push(mismatch("firstName"));
    }
    if given(&raw.patronymic)
        .is_some_and(|v| !same_name(&v, holder.patronymic.as_deref().unwrap_or("")))
    {
        errors.push(mismatch("patronymic"));
    }
    if let Some(v) = given(&raw.birth_date) {
        match NaiveDate::parse_from_str(&v, "%Y-%m-%d") {
            Ok(d) if d == holder.birth_date => {}
            Ok(_) => errors.push(mismatch("birthDate")),
            Err(_) => errors.push(UserError::field(
                "birthDate",
                "INVALID_DATE",
                "must be a date YYYY-MM-DD",
            )),
        }
    }
    if let Some(v) = given(&raw.snils) {
        match Snils::parse(&v) {
            Ok(s) if s == holder.snils => {}
            Ok(_) => errors.push(mismatch("snils")),
            Err(e) => errors.push(field_error("snils", &e)),
        }
    }
    if let Some(v) = given(&raw.passport_series) {
        match PassportSeries::parse(&v) {
            Ok(s) if s == holder.passport_series => {}
            Ok(_) => errors.push(mismatch("passportSeries")),
            Err(e) => errors.push(field_error("passportSeries", &e)),
        }
    }
    if let Some(v) = given(&raw.passport_number) {
        match PassportNumber::parse(&v) {
            Ok(n) if n == holder.passport_number => {}
            Ok(_) => errors.push(mismatch("passportNumber")),
            Err(e) => errors.push(field_error("passportNumber", &e)),
        }
    }
}

/// Checks every field of `raw` against `today` for `holder` (the applicant, from
/// their verified profile), naming each one at fault.
pub fn parse_application(
    raw: &RawApplication,
    holder: &PolicyHolder,
    today: NaiveDate,
) -> Result<PolicyApplication, Vec<UserError>> {
    let mut errors = Vec::new();
    check_identity(raw, holder, &mut errors);
    let region = match raw.region.as_deref().map(str::trim) {
        None | Some("") if raw.kind == Some(PolicyKind::Regional) => {
            errors.push(missing("region"));
            None
        }
        None | Some("") => None,
        Some(t) => match BoundedText::parse(t, 100) {
            Ok(t) => Some(t.as_str().to_string()),
            Err(e) => {
                errors.push(UserError::field("region", "INVALID_INPUT", e.to_string()));
                None
            }
        },
    };
    let mut date = |field: &str, value: &Option<String>| match value.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(missing(field));
            None
        }
        Some(t) => match NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            Ok(d) => Some(d),
            Err(_) => {
                errors.push(UserError::field(
                    field,
                    "INVALID_DATE",
                    "must be a date YYYY-MM-DD",
                ));
                None
            }
        },
    };
    let valid_from = date("validFrom", &raw.valid_from);
    let valid_until = date("validUntil", &raw.valid_until);
    if raw.kind.is_none() {
        errors.push(missing("kind"));
    }
    if let (Some(from), Some(until)) = (valid_from, valid_until) {
        let period = |field, message: &str| UserError::field(field, "INVALID_PERIOD", message);
        if until <= from {
            errors.push(period("validUntil", "the period must end after it starts"));
        } else if from
            .checked_add_months(Months::new(12 * MAX_POLICY_YEARS))
            .is_some_and(|longest| until > longest)
        {
            errors.push(period(
                "validUntil",
                &format!("a policy period is at most {MAX_POLICY_YEARS} years"),
            ));
        }
        if from < today {
            errors.push(period("validFrom", "the period cannot start in the past"));
        } else if (from - today).num_days() > MAX_START_AHEAD_DAYS {
            errors.push(period(
                "validFrom",
                &format!("the period may start at most {MAX_START_AHEAD_DAYS} days ahead"),
            ));
        }
    }
    if !raw.consent {
        errors.push(UserError::field(
            "consent",
            "CONSENT_REQUIRED",
            "consent to the processing of personal data is required",
        ));
    }
    match (raw.kind, valid_from, valid_until) {
        (Some(kind), Some(valid_from), Some(valid_until)) if errors.is_empty() => {
            Ok(PolicyApplication {
                holder: holder.clone(),
                kind,
                region: if kind == PolicyKind::Regional {
                    region
                } else {
                    None
                },
                valid_from,
                valid_until,
            })
        }
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 12, 1).expect("date")
    }

    /// A complete, valid application.
    pub(crate) fn good() -> RawApplication {
        RawApplication {
            surname: Some("Иванова".into()),
            first_name: Some("Мария".into()),
            patronymic: Some("Петровна".into()),
            birth_date: Some("1990-04-12".into()),
            snils: Some("112-233-445 95".into()),
            passport_series: Some("45 08".into()),
            passport_number: Some("123456".into()),
            kind: Some(PolicyKind::Regional),
            region: Some("Москва".into()),
            valid_from: Some("2026-12-01".into()),
            valid_until: Some("2031-12-01".into()),
            consent: true,
        }
    }

    /// The applicant as their verified profile says.
    pub(crate) fn holder() -> PolicyHolder {
        PolicyHolder {
            surname: "Иванова".into(),
            first_name: "Мария".into(),
            patronymic: Some("Петровна".into()),
            birth_date: NaiveDate::from_ymd_opt(1990, 4, 12).expect("date"),
            snils: Snils::parse("112-233-445 95").expect("snils"),
            passport_series: PassportSeries::parse("45 08").expect("series"),
            passport_number: PassportNumber::parse("123456").expect("number"),
        }
    }

    fn fields(errors: &[UserError]) -> Vec<String> {
        errors
            .iter()
            .filter_map(|e| e.field.as_ref().and_then(|f| f.last().cloned()))
            .collect()
    }

    #[test]
    fn a_complete_application_parses() {
        let parsed = parse_application(&good(), &holder(), today()).expect("valid");
        assert_eq!(parsed.holder.snils.digits(), "11223344595");
        assert_eq!(parsed.holder.passport_series.as_str(), "4508");
        assert_eq!(parsed.region.as_deref(), Some("Москва"));
    }

    #[test]
    fn every_missing_or_wrong_field_is_named_at_once() {
        let raw = RawApplication {
            surname: None,
            birth_date: Some("12.04.1990".into()),
            snils: Some("112-233-445 96".into()),
            passport_number: Some("12345".into()),
            consent: false,
            ..good()
        };
        let errors = parse_application(&raw, &holder(), today()).expect_err("invalid");
        assert_eq!(
            fields(&errors),
            ["birthDate", "snils", "passportNumber", "consent"]
        );
        let snils = errors.iter().find(|e| e.code == "INVALID_SNILS_CHECKSUM");
        assert!(snils.is_some(), "{errors:?}");
    }

    #[test]
    fn an_empty_application_names_every_required_field() {
        let errors =
            parse_application(&RawApplication::default(), &holder(), today()).expect_err("empty");
        assert_eq!(
            fields(&errors),
            ["validFrom", "validUntil", "kind", "consent"]
        );
    }

    #[test]
    fn the_holder_is_the_applicant_whatever_the_application_says() {
        let bare = RawApplication {
            surname: None,
            first_name: None,
            patronymic: None,
            birth_date: None,
            snils: None,
            passport_series: None,
            passport_number: None,
            ..good()
        };
        let parsed = parse_application(&bare, &holder(), today()).expect("valid");
        assert_eq!(parsed.holder, holder());
        let someone_else = RawApplication {
            surname: Some("Петрова".into()),
            snils: Some("112-233-445 95".into()),
            passport_number: Some("654321".into()),
            ..good()
        };
        let errors =
            parse_application(&someone_else, &holder(), today()).expect_err("another person");
        assert_eq!(fields(&errors), ["surname", "passportNumber"]);
        assert!(errors.iter().all(|e| e.code == "IDENTITY_MISMATCH"));
    }

    #[test]
    fn a_regional_policy_needs_a_region_and_periods_are_bounded() {
        let raw = RawApplication {
            region: None,
            valid_from: Some("2026-11-30".into()),
            valid_until: Some("2026-11-29".into()),
            ..good()
        };
        let errors = parse_application(&raw, &holder(), today()).expect_err("invalid");
        assert_eq!(fields(&errors), ["region", "validUntil", "validFrom"]);
        assert!(errors.iter().all(|e| e.code != "INTERNAL"));
        let long = RawApplication {
            valid_until: Some("2037-12-02".into()),
            ..good()
        };
        assert_eq!(
            fields(&parse_application(&long, &holder(), today()).expect_err("too long")),
            ["validUntil"]
        );
    }

    #[test]
    fn a_federal_policy_drops_the_region() {
        let raw = RawApplication {
            kind: Some(PolicyKind::Federal),
            ..good()
        };
        assert_eq!(
            parse_application(&raw, &holder(), today())
                .expect("valid")
                .region,
            None
        );
    }
}
