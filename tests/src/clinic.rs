//! Builders of what tests over HTTP start from — organisations, medical
//! services, doctors, published schedules and patients — written through the
//! GraphQL API the way a frontend writes them. Each builder takes the input a
//! test varies (see [`with`]) and fails the test when the API refuses it.

use chrono::{Duration, Utc};
use kabinet_graphql::schema::ids;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::server::Client;
use kabinet_domain::Role;

/// The medical service every test doctor offers and every test schedule books.
pub const SERVICE_CODE: &str = "B01.047.001";

/// The time zone of test organisations unless a test picks another.
pub const ZONE: &str = "Europe/Moscow";

/// An object the API registered: its global id and the UUID inside it.
#[derive(Debug, Clone)]
pub struct Registered {
    pub id: String,
    pub uuid: Uuid,
}

/// `base` with the fields of `changes` set over it; a `null` change removes
/// the field, so a test can leave out what the default input carries.
pub fn with(mut base: Value, changes: Value) -> Value {
    if let (Some(fields), Some(changes)) = (base.as_object_mut(), changes.as_object()) {
        for (name, value) in changes {
            if value.is_null() {
                fields.remove(name);
            } else {
                fields.insert(name.clone(), value.clone());
            }
        }
    }
    base
}

/// The global id in `payload` at `path` (e.g. `["organisation", "id"]`), with its UUID.
fn registered(payload: &Value, path: [&str; 2], type_name: &str) -> Registered {
    let id = payload[path[0]][path[1]]
        .as_str()
        .unwrap_or_else(|| panic!("no {type_name} registered: {payload}"))
        .to_string();
    let uuid = ids::decode_as(&id, type_name).expect("a global id of the right type");
    Registered { id, uuid }
}

/// The day after today in `zone`, as `YYYY-MM-DD`.
pub fn tomorrow_in(zone: &str) -> String {
    let tz: chrono_tz::Tz = zone.parse().expect("zone");
    (Utc::now().with_timezone(&tz) + Duration::days(1))
        .date_naive()
        .to_string()
}

/// Details of a Moscow clinic named `name` with a therapy department.
pub fn organisation_details(name: &str) -> Value {
    json!({
        "name": name, "region": "Москва", "address": "ул. Тверская, 5",
        "timeZone": ZONE, "workingHours": "08:00–20:00",
        "departments": ["Терапия"], "specialisations": ["therapist"],
    })
}

/// Registers an organisation with `details` as `admin`.
pub async fn register_organisation(client: &Client, admin: &str, details: Value) -> Registered {
    let payload = client
        .data(
            Some(admin),
            "mutation($input: RegisterOrganisationInput!) { registerOrganisation(input: $input) {
                organisation { id } userErrors { field code message } } }",
            json!({ "input": { "details": details } }),
        )
        .await["registerOrganisation"]
        .clone();
    registered(&payload, ["organisation", "id"], "Organisation")
}

/// Registers the consultation [`SERVICE_CODE`] as `admin`, with the documents
/// a patient must bring.
pub async fn register_service(client: &Client, admin: &str, required_documents: Value) {
    let payload = client
        .data(
            Some(admin),
            "mutation($input: RegisterMedicalServiceInput!) { registerMedicalService(input: $input) {
                service { code } userErrors { field code message } } }",
            json!({ "input": { "code": SERVICE_CODE, "name": "Приём врача-терапевта",
                "serviceType": "CONSULTATION", "form": "IN_PERSON", "cost": "0",
                "requiredDocuments": required_documents } }),
        )
        .await["registerMedicalService"]
        .clone();
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    assert_eq!(payload["service"]["code"], SERVICE_CODE, "{payload}");
}

/// A therapist Анна Сергеевна `surname` of `organisation_id` offering [`SERVICE_CODE`].
pub fn doctor_input(surname: &str, organisation_id: &str) -> Value {
    json!({
        "surname": surname, "firstName": "Анна", "patronymic": "Сергеевна",
        "specialty": "therapist", "qualification": "высшая категория",
        "organisationId": organisation_id, "department": "Терапия",
        "serviceCodes": [SERVICE_CODE],
    })
}

/// Registers the doctor `doctor` as `registrar` of the doctor's organisation.
pub async fn register_doctor(client: &Client, registrar: &str, doctor: Value) -> Registered {
    let payload = client
        .data(
            Some(registrar),
            "mutation($input: RegisterDoctorInput!) { registerDoctor(input: $input) {
                doctor { id } userErrors { field code message } } }",
            json!({ "input": { "doctor": doctor } }),
        )
        .await["registerDoctor"]
        .clone();
    registered(&payload, ["doctor", "id"], "Doctor")
}

/// A period of `doctor_id` on `date`, 09:00–12:00 in 20-minute slots in room 214.
pub fn schedule_input(doctor_id: &str, date: &str) -> Value {
    json!({
        "doctorId": doctor_id, "date": date, "start": "09:00", "end": "12:00",
        "slotMinutes": 20, "room": "214", "serviceCodes": [SERVICE_CODE],
        "bookingHorizonDays": 14, "changeCutoffHours": 2,
    })
}

/// Publishes the period `input` as `registrar`; returns the payload (period,
/// slots and user errors), which tests of publishing inspect themselves.
pub async fn publish_schedule(client: &Client, registrar: &str, input: Value) -> Value {
    client
        .data(
            Some(registrar),
            "mutation($input: PublishScheduleInput!) { publishSchedule(input: $input) {
                periodId slots { id start date time room status } userErrors { field message code } } }",
            json!({ "input": input }),
        )
        .await["publishSchedule"]
        .clone()
}

/// The slot ids of a `publishSchedule` payload, in time order.
pub fn slot_ids(published: &Value) -> Vec<String> {
    published["slots"]
        .as_array()
        .unwrap_or_else(|| panic!("no slots published: {published}"))
        .iter()
        .map(|s| s["id"].as_str().expect("slot id").to_string())
        .collect()
}

/// The profile of Смирнов Олег Игоревич, born 1990-04-12.
pub fn patient_profile() -> Value {
    json!({
        "surname": "Смирнов", "firstName": "Олег", "patronymic": "Игоревич",
        "birthDate": "1990-04-12", "sex": "MALE",
    })
}

/// A fresh patient account that recorded `profile`: its id and token.
pub async fn patient(client: &Client, profile: Value) -> (Uuid, String) {
    let id = Uuid::now_v7();
    let token = client.token_for(id, Role::Patient, None);
    let recorded = client
        .data(
            Some(&token),
            "mutation($input: RecordPatientProfileInput!) { recordPatientProfile(input: $input) {
                recorded userErrors { field code message } } }",
            json!({ "input": profile }),
        )
        .await;
    assert_eq!(
        recorded["recordPatientProfile"]["recorded"], true,
        "{recorded}"
    );
    (id, token)
}

/// A patient signed in through a session (so the identity gate applies to them).
pub fn session_patient(client: &Client) -> (Uuid, String) {
    let id = Uuid::now_v7();
    (id, client.session_token_for(id, Role::Patient, None))
}
