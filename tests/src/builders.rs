//! Organisations and patients written straight through the command path, as
//! the API would write them, for tests of the journal, the projections and the
//! replay tool (tests over HTTP build theirs with [`crate::clinic`]).

use chrono::NaiveDate;
use kabinet_domain::command::{CommandRunner, Retry};
use kabinet_domain::directory::{Organisation, OrganisationCommand, OrganisationDetails};
use kabinet_domain::patients::{Patient, PatientCommand, PatientProfile, Sex};
use kabinet_domain::{Actor, EventMetadata, Role};
use serde_json::json;
use uuid::Uuid;

/// Details of a Moscow outpatient clinic named `name`.
pub fn organisation_details(name: &str) -> OrganisationDetails {
    OrganisationDetails {
        name: name.into(),
        region: "Москва".into(),
        address: "ул. Ленина, 1".into(),
        time_zone: "Europe/Moscow".into(),
        working_hours: "Пн–Пт 08:00–20:00".into(),
        departments: vec!["Терапия".into()],
        specialisations: vec!["therapist".into()],
    }
}

/// An administrator with a fresh account id.
pub fn admin() -> Actor {
    Actor {
        account_id: Uuid::now_v7(),
        role: Role::Admin,
        organisation_id: None,
    }
}

fn metadata(actor: &Actor) -> EventMetadata {
    EventMetadata::new(actor.clone(), format!("req-{}", Uuid::new_v4().simple()))
}

/// Registers an organisation named `name` as `actor` and returns its id; one event.
pub async fn register_organisation(commands: &CommandRunner, actor: &Actor, name: &str) -> Uuid {
    let id = Uuid::now_v7();
    commands
        .execute::<Organisation>(
            &id.to_string(),
            OrganisationCommand::Register(organisation_details(name)),
            &(),
            &metadata(actor),
            &json!({ "name": name }),
            Retry::Never,
        )
        .await
        .expect("register an organisation");
    id
}

/// Renames organisation `id` to `name` as `actor`; one event.
pub async fn rename_organisation(commands: &CommandRunner, actor: &Actor, id: Uuid, name: &str) {
    commands
        .execute::<Organisation>(
            &id.to_string(),
            OrganisationCommand::UpdateDetails(organisation_details(name)),
            &(),
            &metadata(actor),
            &json!({ "name": name }),
            Retry::Never,
        )
        .await
        .expect("update an organisation");
}

/// Records the profile of patient `patient` (Анна Сергеевна `surname`, born
/// 1990-05-17), acting as the patient; one event.
pub async fn record_patient(commands: &CommandRunner, patient: Uuid, surname: &str) {
    let profile = PatientProfile {
        surname: surname.into(),
        first_name: "Анна".into(),
        patronymic: Some("Сергеевна".into()),
        birth_date: NaiveDate::from_ymd_opt(1990, 5, 17).expect("date"),
        sex: Sex::Female,
    };
    let actor = Actor {
        account_id: patient,
        role: Role::Patient,
        organisation_id: None,
    };
    let metadata = EventMetadata::new(actor, "req-patient");
    commands
        .execute::<Patient>(
            &patient.to_string(),
            PatientCommand::RecordProfile {
                profile,
                today: NaiveDate::from_ymd_opt(2026, 1, 1).expect("date"),
            },
            &(),
            &metadata,
            &json!({ "surname": surname }),
            Retry::Never,
        )
        .await
        .expect("record a patient");
}
