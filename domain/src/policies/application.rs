//! Parsing an OMS policy application: every wrong or missing field is named at once.

use chrono::{Datelike, Months, NaiveDate};
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

/// An application as the caller typed it.
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

/// Checks every field of `raw` against `today`, naming each one at fault.
pub fn parse_application(
    raw: &RawApplication,
    today: NaiveDate,
) -> Result<PolicyApplication, Vec<UserError>> {
    let mut errors = Vec::new();
    let mut text = |field: &str, value: &Option<String>, max: usize, required: bool| match value
        .as_deref()
        .map(str::trim)
    {
        None | Some("") if required => {
            errors.push(missing(field));
            None
        }
        None | Some("") => None,
        Some(t) => match BoundedText::parse(t, max) {
            Ok(t) => Some(t.as_str().to_string()),
            Err(e) => {
                errors.push(UserError::field(field, "INVALID_INPUT", e.to_string()));
                None
            }
        },
    };
    let surname = text("surname", &raw.surname, 100, true);
    let first_name = text("firstName", &raw.first_name, 100, true);
    let patronymic = text("patronymic", &raw.patronymic, 100, false);
    let region = text(
        "region",
        &raw.region,
        100,
        raw.kind == Some(PolicyKind::Regional),
    );
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
    let birth_date = date("birthDate", &raw.birth_date);
    let valid_from = date("validFrom", &raw.valid_from);
    let valid_until = date("validUntil", &raw.valid_until);
    if let Some(born) = birth_date {
        if born > today || born.year() < 1900 {
            errors.push(UserError::field(
                "birthDate",
                "INVALID_DATE",
                "the birth date must lie between 1900 and today",
            ));
        }
    }
    let mut value = |field: &str, raw: &Option<String>| match raw.as_deref().map(str::trim) {
        None | Some("") => {
            errors.push(missing(field));
            None
        }
        Some(t) => Some(t.to_string()),
    };
    let snils = value("snils", &raw.snils);
    let series = value("passportSeries", &raw.passport_series);
    let number = value("passportNumber", &raw.passport_number);
    let snils = snils.and_then(|s| {
        Snils::parse(&s)
            .map_err(|e| errors.push(field_error("snils", &e)))
            .ok()
    });
    let series = series.and_then(|s| {
        PassportSeries::parse(&s)
            .map_err(|e| errors.push(field_error("passportSeries", &e)))
            .ok()
    });
    let number = number.and_then(|s| {
        PassportNumber::parse(&s)
            .map_err(|e| errors.push(field_error("passportNumber", &e)))
            .ok()
    });
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
    match (
        surname,
        first_name,
        birth_date,
        snils,
        series,
        number,
        raw.kind,
        valid_from,
        valid_until,
    ) {
        (
            Some(surname),
            Some(first_name),
            Some(birth_date),
            Some(snils),
            Some(passport_series),
            Some(passport_number),
            Some(kind),
            Some(valid_from),
            Some(valid_until),
        ) if errors.is_empty() => Ok(PolicyApplication {
            holder: PolicyHolder {
                surname,
                first_name,
                patronymic,
                birth_date,
                snils,
                passport_series,
                passport_number,
            },
            kind,
            region: if kind == PolicyKind::Regional {
                region
            } else {
                None
            },
            valid_from,
            valid_until,
        }),
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

    fn fields(errors: &[UserError]) -> Vec<String> {
        errors
            .iter()
            .filter_map(|e| e.field.as_ref().and_then(|f| f.last().cloned()))
            .collect()
    }

    #[test]
    fn a_complete_application_parses() {
        let parsed = parse_application(&good(), today()).expect("valid");
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
        let errors = parse_application(&raw, today()).expect_err("invalid");
        assert_eq!(
            fields(&errors),
            ["surname", "birthDate", "snils", "passportNumber", "consent"]
        );
        let snils = errors.iter().find(|e| e.code == "INVALID_SNILS_CHECKSUM");
        assert!(snils.is_some(), "{errors:?}");
    }

    #[test]
    fn an_empty_application_names_every_required_field() {
        let errors = parse_application(&RawApplication::default(), today()).expect_err("empty");
        assert_eq!(
            fields(&errors),
            [
                "surname",
                "firstName",
                "birthDate",
                "validFrom",
                "validUntil",
                "snils",
                "passportSeries",
                "passportNumber",
                "kind",
                "consent"
            ]
        );
    }

    #[test]
    fn a_regional_policy_needs_a_region_and_periods_are_bounded() {
        let raw = RawApplication {
            region: None,
            valid_from: Some("2026-11-30".into()),
            valid_until: Some("2026-11-29".into()),
            ..good()
        };
        let errors = parse_application(&raw, today()).expect_err("invalid");
        assert_eq!(fields(&errors), ["region", "validUntil", "validFrom"]);
        assert!(errors.iter().all(|e| e.code != "INTERNAL"));
        let long = RawApplication {
            valid_until: Some("2037-12-02".into()),
            ..good()
        };
        assert_eq!(
            fields(&parse_application(&long, today()).expect_err("too long")),
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
            parse_application(&raw, today()).expect("valid").region,
            None
        );
    }
}
