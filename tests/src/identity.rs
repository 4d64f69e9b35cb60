//! Patients with a verified identity, for tests of what only they may do.
//!
//! The events are written through the same commands the API sends, without the SMS
//! and review round trips (tests of those steps go over HTTP themselves).

use chrono::Utc;
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::identity::verification::{
    IdentityVerification, ProfileBases, RegistryAnswer, ScanDecision, ScanFormat,
    VerificationCommand,
};
use kabinet_domain::identity::{PhoneNumber, Snils};
use kabinet_domain::patients::{Patient, PatientCommand, ProfileUpdate, RawProfileUpdate, Sex};
use serde_json::json;
use uuid::Uuid;

/// A SNILS with a valid check number, distinct for each `n` below 10⁸.
pub fn snils_number(n: u32) -> String {
    let first_nine = format!("{:09}", 100_000_000 + n % 100_000_000);
    let sum: u32 = first_nine
        .chars()
        .filter_map(|c| c.to_digit(10))
        .zip((1..=9).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match sum {
        0..=99 => sum,
        100 | 101 => 0,
        _ => match sum % 101 {
            100 => 0,
            rest => rest,
        },
    };
    format!("{first_nine}{check:02}")
}

/// The identity a test patient is verified with.
#[derive(Debug, Clone)]
pub struct TestIdentity {
    pub surname: String,
    pub first_name: String,
    pub patronymic: String,
    pub birth_date: String,
    pub snils: String,
    pub passport_series: String,
    pub passport_number: String,
    pub phone: String,
}

impl TestIdentity {
    /// A distinct person for each `n`.
    pub fn numbered(n: u32) -> TestIdentity {
        TestIdentity {
            surname: "Иванова".into(),
            first_name: "Мария".into(),
            patronymic: "Петровна".into(),
            birth_date: "1990-04-12".into(),
            snils: snils_number(n),
            passport_series: "4508".into(),
            passport_number: format!("{:06}", n % 1_000_000),
            phone: format!("+7912{:07}", n % 10_000_000),
        }
    }
}

/// Records `identity` as `account`'s profile and runs every verification step, so
/// `account` is a patient with a verified identity.
pub async fn verify_patient(commands: &CommandRunner, account: Uuid, identity: &TestIdentity) {
    let meta = crate::metadata_of(account);
    let today = Utc::now().date_naive();
    let raw = RawProfileUpdate {
        surname: Some(identity.surname.clone()),
        first_name: Some(identity.first_name.clone()),
        patronymic: Some(identity.patronymic.clone()),
        birth_date: Some(identity.birth_date.clone()),
        sex: Some(Sex::Female),
        snils: Some(identity.snils.clone()),
        passport_series: Some(identity.passport_series.clone()),
        passport_number: Some(identity.passport_number.clone()),
        phone: Some(identity.phone.clone()),
        ..RawProfileUpdate::default()
    };
    let update = ProfileUpdate::parse(&raw, today).expect("a valid test profile");
    commands
        .execute::<Patient>(
            &account.to_string(),
            PatientCommand::UpdateProfile { update, today },
            &(),
            &meta,
            &json!({ "fixture": "profile" }),
            Retry::OnConflict,
        )
        .await
        .expect("profile recorded");
    let phone = PhoneNumber::parse(&identity.phone).expect("phone");
    let bases = ProfileBases {
        phone: Some(phone.clone()),
        ..ProfileBases::default()
    };
    let now = Utc::now();
    let sha256 = format!("{:064x}", account.as_u128());
    let steps = [
        VerificationCommand::MatchSnils {
            snils: Snils::parse(&identity.snils).expect("snils"),
            answer: RegistryAnswer::Matches,
            bases: bases.clone(),
            now,
        },
        VerificationCommand::RecordPassportScan {
            sha256: sha256.clone(),
            size: 1000,
            format: ScanFormat::Pdf,
            bases: bases.clone(),
            now,
        },
        VerificationCommand::ReviewPassportScan {
            sha256,
            decision: ScanDecision::Approve,
            reviewer: Uuid::now_v7(),
            bases: bases.clone(),
            now,
        },
        VerificationCommand::RecordPhoneCodeSent {
            phone: phone.clone(),
            expires_at: now,
        },
        VerificationCommand::ConfirmPhone {
            phone,
            bases: bases.clone(),
            now,
        },
    ];
    for (i, step) in steps.into_iter().enumerate() {
        commands
            .execute::<IdentityVerification>(
                &account.to_string(),
                step,
                &(),
                &meta,
                &json!({ "fixture": i }),
                Retry::OnConflict,
            )
            .await
            .expect("verification step");
    }
    let status = commands
        .load::<IdentityVerification>(&account.to_string())
        .await
        .expect("status");
    assert!(status.is_verified(), "the test patient is verified");
}

/// Uploads a passport scan of `content_type` as `token`; returns the status and the body.
pub async fn upload(
    client: &crate::server::Client,
    token: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    client
        .post_bytes("/identity/passport-scan", Some(token), content_type, body)
        .await
}
