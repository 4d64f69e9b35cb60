//! The patient: the name, birth date and sex the appointment rules need, and the
//! documents and contacts of the profile (A2): SNILS, OMS policy, passport, phone,
//! e-mail and addresses.
//!
//! `PatientProfileRecorded` (version 1) keeps its layout; the documents and contacts
//! travel in their own event, `PatientDetailsRecorded`, so old journals stay readable
//! without an upcaster.

use chrono::{Datelike, NaiveDate};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::directory::BoundedText;
use crate::identity::values::{
    field_error, Email, OmsPolicyNumber, PassportNumber, PassportSeries, PhoneNumber, Snils,
};
use crate::journal::reservations::Reserving;
use crate::user_error::{AsUserError, UserError};

/// Longest address accepted, in characters.
pub const MAX_ADDRESS_CHARS: usize = 300;

/// Sex as recorded in the patient's documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sex {
    Female,
    Male,
}

/// A patient's basic profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientProfile {
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
    pub sex: Sex,
}

impl PatientProfile {
    /// Full years of age on `day`.
    pub fn age_on(&self, day: NaiveDate) -> u32 {
        let mut years = day.year() - self.birth_date.year();
        if (day.month(), day.day()) < (self.birth_date.month(), self.birth_date.day()) {
            years -= 1;
        }
        years.max(0) as u32
    }
}

/// The documents and contacts of a profile; every part is optional until given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatientDetails {
    #[serde(default)]
    pub snils: Option<Snils>,
    #[serde(default)]
    pub oms_policy: Option<OmsPolicyNumber>,
    #[serde(default)]
    pub passport_series: Option<PassportSeries>,
    #[serde(default)]
    pub passport_number: Option<PassportNumber>,
    #[serde(default)]
    pub phone: Option<PhoneNumber>,
    #[serde(default)]
    pub email: Option<Email>,
    #[serde(default)]
    pub registration_address: Option<String>,
    #[serde(default)]
    pub actual_address: Option<String>,
}

/// A change of one optional part: keep it, set it, or clear it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Change<T> {
    #[default]
    Keep,
    Set(T),
    Clear,
}

impl<T: Clone> Change<T> {
    fn apply_to(&self, current: &Option<T>) -> Option<T> {
        match self {
            Change::Keep => current.clone(),
            Change::Set(value) => Some(value.clone()),
            Change::Clear => None,
        }
    }
}

/// What a patient's profile update carries, as typed in (API field names in comments).
///
/// `None` keeps a part as it is; for the optional documents and contacts an empty
/// string clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RawProfileUpdate {
    pub surname: Option<String>,
    pub first_name: Option<String>,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub snils: Option<String>,
    pub oms_policy: Option<String>,
    pub passport_series: Option<String>,
    pub passport_number: Option<String>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub registration_address: Option<String>,
    pub actual_address: Option<String>,
}

/// A parsed profile update: every value already checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileUpdate {
    pub surname: Option<String>,
    pub first_name: Option<String>,
    pub patronymic: Change<String>,
    pub birth_date: Option<NaiveDate>,
    pub sex: Option<Sex>,
    pub snils: Change<Snils>,
    pub oms_policy: Change<OmsPolicyNumber>,
    pub passport_series: Change<PassportSeries>,
    pub passport_number: Change<PassportNumber>,
    pub phone: Change<PhoneNumber>,
    pub email: Change<Email>,
    pub registration_address: Change<String>,
    pub actual_address: Change<String>,
}

fn optional<T, E: crate::identity::values::ValueError>(
    raw: &Option<String>,
    field: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    errors: &mut Vec<UserError>,
) -> Change<T> {
    match raw.as_deref().map(str::trim) {
        None => Change::Keep,
        Some("") => Change::Clear,
        Some(text) => match parse(text) {
            Ok(value) => Change::Set(value),
            Err(e) => {
                errors.push(field_error(field, &e));
                Change::Keep
            }
        },
    }
}

fn bounded(raw: &str, field: &str, max: usize, errors: &mut Vec<UserError>) -> Option<String> {
    match BoundedText::parse(raw, max) {
        Ok(text) => Some(text.as_str().to_string()),
        Err(e) => {
            errors.push(UserError::field(field, "INVALID_INPUT", e.to_string()));
            None
        }
    }
}

/// `text` when it reads as a postal address: no characters that hide or
/// reorder text, and nothing that reads as markup; else an error naming `field`.
fn postal(text: String, field: &str, errors: &mut Vec<UserError>) -> Option<String> {
    let refused = text
        .chars()
        .find(|&c| crate::identity::values::invisible(c) || matches!(c, '<' | '>'));
    match refused {
        None => Some(text),
        Some(c) => {
            errors.push(UserError::field(
                field,
                "INVALID_ADDRESS",
                format!(
                    "an address must not contain invisible, text-direction or markup characters, found U+{:04X}",
                    c as u32
                ),
            ));
            None
        }
    }
}

/// `name` when it passes [`crate::identity::values::check_person_name`]; else an error naming `field`.
fn person_name(name: String, field: &str, errors: &mut Vec<UserError>) -> Option<String> {
    match crate::identity::values::check_person_name(&name) {
        Ok(()) => Some(name),
        Err(e) => {
            errors.push(crate::identity::field_error(field, &e));
            None
        }
    }
}

/// Checks a birth date against `today`: not in the future, within 130 years.
fn check_birth_date(birth_date: NaiveDate, today: NaiveDate) -> Result<(), &'static str> {
    if birth_date > today {
        return Err("must not be in the future");
    }
    if today.year() - birth_date.year() > 130 {
        return Err("must be within the last 130 years");
    }
    Ok(())
}

impl ProfileUpdate {
    /// Parses every field of `raw`, returning all the wrong ones at once.
    pub fn parse(
        raw: &RawProfileUpdate,
        today: NaiveDate,
    ) -> Result<ProfileUpdate, Vec<UserError>> {
        let mut errors = Vec::new();
        let name = |raw: &Option<String>, field: &str, errors: &mut Vec<UserError>| {
            raw.as_deref()
                .and_then(|r| bounded(r, field, 100, errors))
                .and_then(|n| person_name(n, field, errors))
        };
        let surname = name(&raw.surname, "surname", &mut errors);
        let first_name = name(&raw.first_name, "firstName", &mut errors);
        let patronymic = match raw.patronymic.as_deref().map(str::trim) {
            None => Change::Keep,
            Some("") => Change::Clear,
            Some(p) => bounded(p, "patronymic", 100, &mut errors)
                .and_then(|n| person_name(n, "patronymic", &mut errors))
                .map_or(Change::Keep, Change::Set),
        };
        let birth_date = match raw.birth_date.as_deref().map(str::trim) {
            None => None,
            Some(text) => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(date) => match check_birth_date(date, today) {
                    Ok(()) => Some(date),
                    Err(message) => {
                        errors.push(UserError::field("birthDate", "INVALID_BIRTH_DATE", message));
                        None
                    }
                },
                Err(_) => {
                    errors.push(UserError::field(
                        "birthDate",
                        "INVALID_BIRTH_DATE",
                        "not a date in the form YYYY-MM-DD",
                    ));
                    None
                }
            },
        };
        let address = |raw: &Option<String>, field: &str, errors: &mut Vec<UserError>| match raw
            .as_deref()
            .map(str::trim)
        {
            None => Change::Keep,
            Some("") => Change::Clear,
            Some(text) => bounded(text, field, MAX_ADDRESS_CHARS, errors)
                .and_then(|text| postal(text, field, errors))
                .map_or(Change::Keep, Change::Set),
        };
        let update = ProfileUpdate {
            surname,
            first_name,
            patronymic,
            birth_date,
            sex: raw.sex,
            snils: optional(&raw.snils, "snils", Snils::parse, &mut errors),
            oms_policy: optional(
                &raw.oms_policy,
                "omsPolicy",
                OmsPolicyNumber::parse,
                &mut errors,
            ),
            passport_series: optional(
                &raw.passport_series,
                "passportSeries",
                PassportSeries::parse,
                &mut errors,
            ),
            passport_number: optional(
                &raw.passport_number,
                "passportNumber",
                PassportNumber::parse,
                &mut errors,
            ),
            phone: optional(&raw.phone, "phone", PhoneNumber::parse, &mut errors),
            email: optional(&raw.email, "email", Email::parse, &mut errors),
            registration_address: address(
                &raw.registration_address,
                "registrationAddress",
                &mut errors,
            ),
            actual_address: address(&raw.actual_address, "actualAddress", &mut errors),
        };
        if errors.is_empty() {
            Ok(update)
        } else {
            Err(errors)
        }
    }
}

impl ProfileUpdate {
    /// API names of the identity fields (name, birth date, SNILS, passport) this update
    /// would change on `patient`: those are fixed once the identity is verified.
    pub fn identity_changes(&self, patient: &Patient) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let basic = patient.profile.as_ref();
        let d = &patient.details;
        if self
            .surname
            .as_ref()
            .is_some_and(|v| Some(v) != basic.map(|b| &b.surname))
        {
            changed.push("surname");
        }
        if self
            .first_name
            .as_ref()
            .is_some_and(|v| Some(v) != basic.map(|b| &b.first_name))
        {
            changed.push("firstName");
        }
        if self.patronymic != Change::Keep
            && self
                .patronymic
                .apply_to(&basic.and_then(|b| b.patronymic.clone()))
                != basic.and_then(|b| b.patronymic.clone())
        {
            changed.push("patronymic");
        }
        if self
            .birth_date
            .is_some_and(|v| Some(v) != basic.map(|b| b.birth_date))
        {
            changed.push("birthDate");
        }
        if self.snils.apply_to(&d.snils) != d.snils {
            changed.push("snils");
        }
        if self.passport_series.apply_to(&d.passport_series) != d.passport_series {
            changed.push("passportSeries");
        }
        if self.passport_number.apply_to(&d.passport_number) != d.passport_number {
            changed.push("passportNumber");
        }
        changed
    }
}

/// Commands on a patient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatientCommand {
    /// Records name, birth date and sex (the clinic's and the appointments' view).
    RecordProfile {
        profile: PatientProfile,
        today: NaiveDate,
    },
    /// The patient's own update of any part of the profile.
    UpdateProfile {
        update: ProfileUpdate,
        today: NaiveDate,
    },
}

/// Events of a patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PatientEvent {
    PatientProfileRecorded(PatientProfile),
    /// The documents and contacts as they now stand (the whole set, not a difference).
    PatientDetailsRecorded(PatientDetails),
}

impl DomainEvent for PatientEvent {
    fn event_type(&self) -> String {
        match self {
            PatientEvent::PatientProfileRecorded(_) => "PatientProfileRecorded",
            PatientEvent::PatientDetailsRecorded(_) => "PatientDetailsRecorded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a patient command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatientError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// Several fields are wrong or missing; each is named.
    #[error("{} fields are wrong", .0.len())]
    Fields(Vec<UserError>),
}

impl AsUserError for PatientError {
    fn to_user_error(&self) -> UserError {
        match self {
            PatientError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
            PatientError::Fields(errors) => errors
                .first()
                .cloned()
                .unwrap_or_else(|| UserError::new("INVALID_INPUT", "the profile is not valid")),
        }
    }

    fn to_user_errors(&self) -> Vec<UserError> {
        match self {
            PatientError::Fields(errors) => errors.clone(),
            other => vec![other.to_user_error()],
        }
    }
}

/// A patient; the stream id is the patient's account id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    pub profile: Option<PatientProfile>,
    #[serde(default)]
    pub details: PatientDetails,
}

impl Patient {
    /// Applies `update` to the current profile; all missing required parts are named.
    fn updated(
        &self,
        update: &ProfileUpdate,
    ) -> Result<(PatientProfile, PatientDetails), PatientError> {
        let current = self.profile.as_ref();
        let mut errors = Vec::new();
        let mut required = |value: Option<String>, field: &'static str| {
            value.unwrap_or_else(|| {
                errors.push(UserError::field(
                    field,
                    "REQUIRED",
                    "needed for the first profile",
                ));
                String::new()
            })
        };
        let surname = required(
            update
                .surname
                .clone()
                .or(current.map(|c| c.surname.clone())),
            "surname",
        );
        let first_name = required(
            update
                .first_name
                .clone()
                .or(current.map(|c| c.first_name.clone())),
            "firstName",
        );
        let birth_date = update.birth_date.or(current.map(|c| c.birth_date));
        if birth_date.is_none() {
            errors.push(UserError::field(
                "birthDate",
                "REQUIRED",
                "needed for the first profile",
            ));
        }
        let sex = update.sex.or(current.map(|c| c.sex));
        if sex.is_none() {
            errors.push(UserError::field(
                "sex",
                "REQUIRED",
                "needed for the first profile",
            ));
        }
        let (Some(birth_date), Some(sex), true) = (birth_date, sex, errors.is_empty()) else {
            return Err(PatientError::Fields(errors));
        };
        let profile = PatientProfile {
            surname,
            first_name,
            patronymic: update
                .patronymic
                .apply_to(&current.and_then(|c| c.patronymic.clone())),
            birth_date,
            sex,
        };
        let d = &self.details;
        let details = PatientDetails {
            snils: update.snils.apply_to(&d.snils),
            oms_policy: update.oms_policy.apply_to(&d.oms_policy),
            passport_series: update.passport_series.apply_to(&d.passport_series),
            passport_number: update.passport_number.apply_to(&d.passport_number),
            phone: update.phone.apply_to(&d.phone),
            email: update.email.apply_to(&d.email),
            registration_address: update
                .registration_address
                .apply_to(&d.registration_address),
            actual_address: update.actual_address.apply_to(&d.actual_address),
        };
        Ok((profile, details))
    }
}

impl Aggregate for Patient {
    const TYPE: &'static str = "patient";
    type Command = PatientCommand;
    type Event = PatientEvent;
    type Error = PatientError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let (profile, today) = match command {
            PatientCommand::RecordProfile { profile, today } => (profile, today),
            PatientCommand::UpdateProfile { update, today } => {
                let (profile, details) = self.updated(&update)?;
                if let Err(message) = check_birth_date(profile.birth_date, today) {
                    return Err(PatientError::Fields(vec![UserError::field(
                        "birthDate",
                        "INVALID_BIRTH_DATE",
                        message,
                    )]));
                }
                if self.profile.as_ref() != Some(&profile) {
                    sink.write(PatientEvent::PatientProfileRecorded(profile), self)
                        .await;
                }
                if self.details != details {
                    sink.write(PatientEvent::PatientDetailsRecorded(details), self)
                        .await;
                }
                return Ok(());
            }
        };
        let text = |field: &'static str, raw: &str| {
            let invalid = |message: String| PatientError::Invalid { field, message };
            let name = BoundedText::parse(raw, 100)
                .map(|t| t.as_str().to_string())
                .map_err(|e| invalid(e.to_string()))?;
            crate::identity::values::check_person_name(&name)
                .map_err(|e| invalid(e.to_string()))?;
            Ok(name)
        };
        if profile.birth_date > today {
            return Err(PatientError::Invalid {
                field: "birthDate",
                message: "must not be in the future".into(),
            });
        }
        if today.year() - profile.birth_date.year() > 130 {
            return Err(PatientError::Invalid {
                field: "birthDate",
                message: "must be within the last 130 years".into(),
            });
        }
        let profile = PatientProfile {
            surname: text("surname", &profile.surname)?,
            first_name: text("firstName", &profile.first_name)?,
            patronymic: match profile.patronymic.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(p) => Some(text("patronymic", p)?),
            },
            birth_date: profile.birth_date,
            sex: profile.sex,
        };
        if self.profile.as_ref() == Some(&profile) {
            return Ok(());
        }
        sink.write(PatientEvent::PatientProfileRecorded(profile), self)
            .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PatientEvent::PatientProfileRecorded(profile) => self.profile = Some(profile),
            PatientEvent::PatientDetailsRecorded(details) => self.details = details,
        }
    }
}

impl Reserving for Patient {}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 20).expect("date")
    }

    fn basic() -> PatientProfile {
        PatientProfile {
            surname: "Петров".into(),
            first_name: "Пётр".into(),
            patronymic: None,
            birth_date: NaiveDate::from_ymd_opt(1980, 1, 2).expect("date"),
            sex: Sex::Male,
        }
    }

    fn raw(pairs: &[(&str, &str)]) -> RawProfileUpdate {
        let mut raw = RawProfileUpdate::default();
        for (field, value) in pairs {
            let value = Some(value.to_string());
            match *field {
                "surname" => raw.surname = value,
                "snils" => raw.snils = value,
                "omsPolicy" => raw.oms_policy = value,
                "passportSeries" => raw.passport_series = value,
                "passportNumber" => raw.passport_number = value,
                "phone" => raw.phone = value,
                "email" => raw.email = value,
                "birthDate" => raw.birth_date = value,
                "actualAddress" => raw.actual_address = value,
                other => panic!("unknown field {other}"),
            }
        }
        raw
    }

    #[test]
    fn a_profile_update_names_every_wrong_field() {
        let errors = ProfileUpdate::parse(
            &raw(&[
                ("snils", "112-233-445 96"),
                ("omsPolicy", "123"),
                ("passportSeries", "45 0"),
                ("passportNumber", "12 3456"),
                ("phone", "+1 212 555 0100"),
                ("email", "nobody"),
                ("birthDate", "2030-01-01"),
                ("surname", "Иванов"),
            ]),
            today(),
        )
        .expect_err("wrong fields");
        let fields: Vec<(String, &str)> = errors
            .iter()
            .map(|e| (e.field.clone().unwrap_or_default()[1].clone(), e.code))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("birthDate".to_string(), "INVALID_BIRTH_DATE"),
                ("snils".to_string(), "INVALID_SNILS_CHECKSUM"),
                ("omsPolicy".to_string(), "INVALID_OMS_POLICY_FORMAT"),
                ("passportSeries".to_string(), "INVALID_PASSPORT_SERIES"),
                ("passportNumber".to_string(), "INVALID_PASSPORT_NUMBER"),
                ("phone".to_string(), "INVALID_PHONE"),
                ("email".to_string(), "INVALID_EMAIL"),
            ]
        );
    }

    #[test]
    fn addresses_refuse_hidden_reordering_and_markup_characters() {
        for bad in [
            "г. Москва, ул. Тверская\u{202E}, д. 5",
            "г. Москва,\u{200B} ул. Тверская, д. 5",
            "<script>alert(1)</script>",
        ] {
            let errors = ProfileUpdate::parse(&raw(&[("actualAddress", bad)]), today())
                .expect_err("refused");
            assert_eq!(errors[0].code, "INVALID_ADDRESS", "{bad}");
        }
        assert!(ProfileUpdate::parse(
            &raw(&[("actualAddress", "г. Москва, ул. Тверская, д. 5, кв. 12")]),
            today()
        )
        .is_ok());
    }

    #[test]
    fn unchecked_old_snils_numbers_are_accepted() {
        // Numbers up to 001-001-998 carry no check number.
        let update =
            ProfileUpdate::parse(&raw(&[("snils", "001-001-998 00")]), today()).expect("valid");
        assert!(matches!(update.snils, Change::Set(_)));
    }

    #[test]
    fn an_update_records_the_details_beside_the_unchanged_profile() {
        let update = ProfileUpdate::parse(
            &raw(&[("phone", "8 912 345 67 89"), ("actualAddress", "Тверь")]),
            today(),
        )
        .expect("valid");
        TestFramework::<Patient>::with(())
            .given(vec![PatientEvent::PatientProfileRecorded(basic())])
            .when(PatientCommand::UpdateProfile {
                update,
                today: today(),
            })
            .then_expect_events(vec![PatientEvent::PatientDetailsRecorded(PatientDetails {
                phone: Some(PhoneNumber::parse("+79123456789").expect("phone")),
                actual_address: Some("Тверь".into()),
                ..PatientDetails::default()
            })]);
    }

    #[test]
    fn a_first_update_needs_name_birth_date_and_sex() {
        let update = ProfileUpdate::parse(&raw(&[("surname", "Иванов")]), today()).expect("valid");
        TestFramework::<Patient>::with(())
            .given_no_previous_events()
            .when(PatientCommand::UpdateProfile {
                update,
                today: today(),
            })
            .then_expect_error(PatientError::Fields(vec![
                UserError::field("firstName", "REQUIRED", "needed for the first profile"),
                UserError::field("birthDate", "REQUIRED", "needed for the first profile"),
                UserError::field("sex", "REQUIRED", "needed for the first profile"),
            ]));
    }

    #[test]
    fn an_update_that_changes_nothing_records_nothing() {
        let update = ProfileUpdate::parse(&raw(&[("surname", "Петров")]), today()).expect("valid");
        TestFramework::<Patient>::with(())
            .given(vec![PatientEvent::PatientProfileRecorded(basic())])
            .when(PatientCommand::UpdateProfile {
                update,
                today: today(),
            })
            .then_expect_events(vec![]);
    }

    #[test]
    fn version_one_profile_events_still_read() {
        // As written before documents and contacts existed.
        let old = serde_json::json!({ "PatientProfileRecorded": {
            "surname": "Петров", "first_name": "Пётр", "patronymic": null,
            "birth_date": "1980-01-02", "sex": "male" } });
        let event: PatientEvent = serde_json::from_value(old).expect("old event decodes");
        let mut patient = Patient::default();
        patient.apply(event);
        assert_eq!(patient.profile, Some(basic()));
        assert_eq!(patient.details, PatientDetails::default());
        let state = serde_json::json!({ "profile": null });
        assert!(serde_json::from_value::<Patient>(state).is_ok());
    }

    #[test]
    fn age_counts_full_years() {
        let profile = PatientProfile {
            surname: "Петров".into(),
            first_name: "Пётр".into(),
            patronymic: None,
            birth_date: NaiveDate::from_ymd_opt(2000, 6, 15).expect("date"),
            sex: Sex::Male,
        };
        assert_eq!(
            profile.age_on(NaiveDate::from_ymd_opt(2026, 6, 14).expect("date")),
            25
        );
        assert_eq!(
            profile.age_on(NaiveDate::from_ymd_opt(2026, 6, 15).expect("date")),
            26
        );
    }
}
