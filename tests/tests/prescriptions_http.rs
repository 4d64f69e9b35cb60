//! E-prescriptions end to end over HTTP on both backends: the lifecycle, the
//! patient's requests and the doctor's decisions, illegal transitions, bad
//! input, authorisation by role, expiry by the scheduler with a moved clock,
//! and public verification of the QR token.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use kabinet_domain::clock::FixedClock;
use kabinet_domain::Role;
use kabinet_graphql::schema::ids;
use kabinet_tests::clinic::{
    self, doctor_input, organisation_details, patient_profile, register_service,
};
use kabinet_tests::conformance;
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};
use uuid::Uuid;

const ZONE: &str = "Europe/Moscow";

const FIELDS: &str = "id status statusLabelRu medication dosage quantity validFrom validUntil
    prescribingDoctor patientInitials pharmacy { id name } organisation { name }
    pendingRequest { kind pharmacyName reason }
    journal { date time action status statusLabelRu actorRole prescribingDoctor note }";

/// A clinic with a doctor, two pharmacies with a pharmacist each, and a patient.
struct World {
    admin: String,
    organisation: String,
    clinic_uuid: Uuid,
    doctor: String,
    other_doctor: String,
    pharmacy: String,
    pharmacist: String,
    other_pharmacy: String,
    other_pharmacist: String,
    plain_organisation: String,
    patient_id: Uuid,
    patient: String,
}

async fn register_organisation(client: &Client, admin: &str, name: &str) -> (String, Uuid) {
    let registered = clinic::register_organisation(client, admin, organisation_details(name)).await;
    (registered.id, registered.uuid)
}

async fn designate(client: &Client, admin: &str, organisation: &str) -> Value {
    client
        .data(
            Some(admin),
            "mutation($input: DesignatePharmacyInput!) { designatePharmacy(input: $input) {
                organisation { id isPharmacy } userErrors { field code message } } }",
            json!({ "input": { "organisationId": organisation } }),
        )
        .await["designatePharmacy"]
        .clone()
}

async fn register_doctor(
    client: &Client,
    registrar: &str,
    organisation: &str,
    surname: &str,
) -> Uuid {
    clinic::register_doctor(client, registrar, doctor_input(surname, organisation))
        .await
        .uuid
}

impl World {
    async fn open(client: &Client) -> World {
        let admin = client.token(Role::Admin, None);
        register_service(client, &admin, json!([])).await;
        let (organisation, clinic_uuid) =
            register_organisation(client, &admin, "Городская поликлиника №3").await;
        let registrar = client.token(Role::Registrar, Some(clinic_uuid));
        let doctor_uuid = register_doctor(client, &registrar, &organisation, "Иванова").await;
        let other_uuid = register_doctor(client, &registrar, &organisation, "Петрова").await;
        let (pharmacy, pharmacy_uuid) =
            register_organisation(client, &admin, "Аптека «Здоровье»").await;
        let (other_pharmacy, other_pharmacy_uuid) =
            register_organisation(client, &admin, "Аптека №2").await;
        let (plain_organisation, _) = register_organisation(client, &admin, "Стоматология").await;
        for p in [&pharmacy, &other_pharmacy] {
            let done = designate(client, &admin, p).await;
            assert_eq!(done["organisation"]["isPharmacy"], true, "{done}");
        }
        let (patient_id, patient) = clinic::patient(client, patient_profile()).await;
        // A referral to the clinic puts the patient in its care: its doctors may prescribe.
        let referral = client
            .data(
                Some(&patient),
                "mutation($input: RequestReferralInput!) { requestReferral(input: $input) { userErrors { code message } } }",
                json!({ "input": { "organisationId": organisation, "specialty": "therapist", "reason": "боли в горле" } }),
            )
            .await;
        assert_eq!(
            referral["requestReferral"]["userErrors"],
            json!([]),
            "{referral}"
        );
        World {
            doctor: client.token_for(doctor_uuid, Role::Doctor, Some(clinic_uuid)),
            other_doctor: client.token_for(other_uuid, Role::Doctor, Some(clinic_uuid)),
            pharmacist: client.token(Role::Pharmacist, Some(pharmacy_uuid)),
            other_pharmacist: client.token(Role::Pharmacist, Some(other_pharmacy_uuid)),
            admin,
            organisation,
            clinic_uuid,
            pharmacy,
            other_pharmacy,
            plain_organisation,
            patient_id,
            patient,
        }
    }
}

/// Today in the clinic's zone, shifted by `days`.
fn local_day(days: i64) -> String {
    let tz: chrono_tz::Tz = ZONE.parse().expect("zone");
    (Utc::now().with_timezone(&tz).date_naive() + Duration::days(days)).to_string()
}

async fn issue(client: &Client, w: &World, input: Value) -> Value {
    let mut full = json!({
        "patientId": ids::encode("Account", w.patient_id).0,
        "medication": "Амоксициллин 500 мг", "dosage": "по 1 капсуле 3 раза в день", "quantity": 2,
        "validFrom": local_day(0), "validUntil": local_day(10),
    });
    if let (Some(full), Some(extra)) = (full.as_object_mut(), input.as_object()) {
        for (k, v) in extra {
            full.insert(k.clone(), v.clone());
        }
    }
    let query = format!(
        "mutation($input: IssuePrescriptionInput!) {{ issuePrescription(input: $input) {{
            prescription {{ {FIELDS} verificationUrl }} userErrors {{ field code message }} }} }}"
    );
    client
        .data(Some(&w.doctor), &query, json!({ "input": full }))
        .await["issuePrescription"]
        .clone()
}

async fn issued(client: &Client, w: &World) -> Value {
    let payload = issue(client, w, json!({})).await;
    assert_eq!(payload["userErrors"], json!([]), "{payload}");
    payload["prescription"].clone()
}

/// Runs prescription mutation `name` with `input` as `token`; returns its payload.
async fn act(client: &Client, token: &str, name: &str, input_type: &str, input: Value) -> Value {
    let query = format!(
        "mutation($input: {input_type}!) {{ {name}(input: $input) {{
            prescription {{ {FIELDS} }} userErrors {{ field code message }} }} }}"
    );
    client
        .data(Some(token), &query, json!({ "input": input }))
        .await[name]
        .clone()
}

async fn send(client: &Client, w: &World, id: &str, pharmacy: &str) -> Value {
    act(
        client,
        &w.patient,
        "sendPrescriptionToPharmacy",
        "SendPrescriptionInput",
        json!({ "prescriptionId": id, "pharmacyId": pharmacy }),
    )
    .await
}

async fn pharmacy_act(client: &Client, token: &str, name: &str, id: &str) -> Value {
    act(
        client,
        token,
        name,
        "PharmacyPrescriptionInput",
        json!({ "prescriptionId": id }),
    )
    .await
}

async fn read(client: &Client, token: &str, id: &str) -> Value {
    let query =
        format!("query($id: ID!) {{ node(id: $id) {{ ... on Prescription {{ {FIELDS} }} }} }}");
    client.data(Some(token), &query, json!({ "id": id })).await["node"].clone()
}

fn code(payload: &Value) -> String {
    payload["userErrors"][0]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("expected a user error: {payload}"))
        .to_string()
}

fn field(payload: &Value) -> Value {
    payload["userErrors"][0]["field"].clone()
}

async fn verify_http(client: &Client, token: &str) -> (u16, Value) {
    let response = client
        .http
        .get(format!("{}/verify/prescription/{token}", client.base))
        .send()
        .await
        .expect("verify request");
    let status = response.status().as_u16();
    (status, response.json().await.expect("verification json"))
}

fn token_of(url: &str) -> String {
    url.rsplit('/').next().expect("token").to_string()
}

conformance!(
    a_prescription_goes_from_issue_to_dispensing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let p = issued(&server, &w).await;
        assert_eq!(p["status"], "READY_TO_PRINT");
        assert_eq!(p["statusLabelRu"], "Готов к печати");
        assert_eq!(p["prescribingDoctor"], "Иванова Анна Сергеевна");
        assert_eq!(p["patientInitials"], "С. О. И.");
        let id = p["id"].as_str().expect("id").to_string();

        let sent = send(&server, &w, &id, &w.pharmacy).await;
        assert_eq!(sent["userErrors"], json!([]), "{sent}");
        assert_eq!(sent["prescription"]["status"], "SENT_TO_PHARMACY");
        assert_eq!(sent["prescription"]["pharmacy"]["id"], w.pharmacy.as_str());

        let listed = server
            .data(
                Some(&w.pharmacist),
                "{ pharmacyPrescriptions(filter: { statuses: [SENT_TO_PHARMACY] }) { edges { node { id medication } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            listed["pharmacyPrescriptions"]["edges"][0]["node"]["id"],
            id.as_str()
        );

        let ready = pharmacy_act(&server, &w.pharmacist, "markPrescriptionReady", &id).await;
        assert_eq!(
            ready["prescription"]["status"], "READY_AT_PHARMACY",
            "{ready}"
        );
        // The patient is told (the projector writes messages with the read models).
        let told = server
            .data(
                Some(&w.patient),
                "{ myNotifications(first: 5) { edges { node { kind } } } }",
                json!({}),
            )
            .await;
        let kinds: Vec<&str> = told["myNotifications"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter_map(|e| e["node"]["kind"].as_str())
            .collect();
        assert_eq!(
            kinds,
            ["PRESCRIPTION_READY", "PRESCRIPTION_ISSUED"],
            "{told}"
        );
        let dispensed = pharmacy_act(&server, &w.pharmacist, "dispensePrescription", &id).await;
        assert_eq!(
            dispensed["prescription"]["status"], "DISPENSED",
            "{dispensed}"
        );

        let journal = dispensed["prescription"]["journal"]
            .as_array()
            .expect("journal")
            .clone();
        let statuses: Vec<&str> = journal
            .iter()
            .map(|e| e["status"].as_str().expect("status"))
            .collect();
        assert_eq!(
            statuses,
            [
                "READY_TO_PRINT",
                "SENT_TO_PHARMACY",
                "READY_AT_PHARMACY",
                "DISPENSED"
            ]
        );
        let roles: Vec<&str> = journal
            .iter()
            .map(|e| e["actorRole"].as_str().expect("role"))
            .collect();
        assert_eq!(roles, ["DOCTOR", "PATIENT", "PHARMACIST", "PHARMACIST"]);
        for entry in &journal {
            assert_eq!(entry["prescribingDoctor"], "Иванова Анна Сергеевна");
            assert_eq!(entry["date"].as_str().map(str::len), Some(10), "{entry}");
            assert_eq!(entry["time"].as_str().map(str::len), Some(5), "{entry}");
        }

        let mine = server
            .data(
                Some(&w.patient),
                "{ all: myPrescriptions { edges { node { id status } } }
                   dispensed: myPrescriptions(filter: { statuses: [DISPENSED] }) { edges { node { id } } }
                   open: myPrescriptions(filter: { statuses: [READY_TO_PRINT, SENT_TO_PHARMACY] }) { edges { node { id } } }
                   tomorrow: myPrescriptions(filter: { from: \"2999-01-01\" }) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(mine["all"]["edges"].as_array().map(Vec::len), Some(1));
        assert_eq!(mine["dispensed"]["edges"][0]["node"]["id"], id.as_str());
        assert_eq!(mine["open"]["edges"], json!([]));
        assert_eq!(mine["tomorrow"]["edges"], json!([]));

        let clinic = server
            .data(
                Some(&w.doctor),
                "{ organisationPrescriptions(filter: { statuses: [DISPENSED] }) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            clinic["organisationPrescriptions"]["edges"][0]["node"]["id"],
            id.as_str()
        );
        let other_clinic = server.token(Role::Registrar, Some(Uuid::now_v7()));
        let nothing = server
            .data(
                Some(&other_clinic),
                "{ organisationPrescriptions { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(nothing["organisationPrescriptions"]["edges"], json!([]));

        let token = token_of(p["verificationUrl"].as_str().expect("verification url"));
        let (status, answer) = verify_http(&server, &token).await;
        assert_eq!(status, 200);
        assert_eq!(answer["result"], "dispensed", "{answer}");
        server.stop().await;
    }
);

conformance!(
    the_patient_asks_and_the_prescribing_doctor_decides,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let id = issued(&server, &w).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        send(&server, &w, &id, &w.pharmacy).await;

        let asked = act(
            &server,
            &w.patient,
            "requestPrescriptionResend",
            "SendPrescriptionInput",
            json!({ "prescriptionId": id, "pharmacyId": w.other_pharmacy, "reason": "нет в наличии" }),
        )
        .await;
        assert_eq!(
            asked["prescription"]["pendingRequest"]["kind"], "RESEND",
            "{asked}"
        );
        assert_eq!(
            asked["prescription"]["pendingRequest"]["pharmacyName"],
            "Аптека №2"
        );
        let twice = act(
            &server,
            &w.patient,
            "requestPrescriptionCancellation",
            "CancelPrescriptionInput",
            json!({ "prescriptionId": id, "reason": "передумал" }),
        )
        .await;
        assert_eq!(code(&twice), "REQUEST_PENDING");

        let decide = |token: &str, approve: bool| {
            let token = token.to_string();
            let id = id.clone();
            let server = &server;
            async move {
                act(
                    server,
                    &token,
                    "decidePrescriptionRequest",
                    "DecidePrescriptionRequestInput",
                    json!({ "prescriptionId": id, "approve": approve, "comment": "ok" }),
                )
                .await
            }
        };
        let not_mine = decide(&w.other_doctor, true).await;
        assert_eq!(code(&not_mine), "NOT_PRESCRIBER");
        let approved = decide(&w.doctor, true).await;
        assert_eq!(
            approved["prescription"]["status"], "SENT_TO_PHARMACY",
            "{approved}"
        );
        assert_eq!(
            approved["prescription"]["pharmacy"]["id"],
            w.other_pharmacy.as_str()
        );
        assert_eq!(approved["prescription"]["pendingRequest"], Value::Null);
        // The first pharmacy no longer has it.
        let gone = pharmacy_act(&server, &w.pharmacist, "markPrescriptionReady", &id).await;
        assert_eq!(code(&gone), "NOT_FOUND");

        let nothing = decide(&w.doctor, true).await;
        assert_eq!(code(&nothing), "NO_PENDING_REQUEST");
        let cancel = |reason: &str| {
            act(
                &server,
                &w.patient,
                "requestPrescriptionCancellation",
                "CancelPrescriptionInput",
                json!({ "prescriptionId": id, "reason": reason }),
            )
        };
        assert_eq!(cancel("передумал").await["userErrors"], json!([]));
        let declined = decide(&w.doctor, false).await;
        assert_eq!(declined["prescription"]["status"], "SENT_TO_PHARMACY");
        assert_eq!(declined["prescription"]["pendingRequest"], Value::Null);
        assert_eq!(cancel("очень прошу").await["userErrors"], json!([]));
        let cancelled = decide(&w.doctor, true).await;
        assert_eq!(
            cancelled["prescription"]["status"], "CANCELLED",
            "{cancelled}"
        );
        let actions: Vec<String> = cancelled["prescription"]["journal"]
            .as_array()
            .expect("journal")
            .iter()
            .map(|e| e["action"].as_str().expect("action").to_string())
            .collect();
        assert_eq!(
            actions,
            [
                "PrescriptionIssued",
                "PrescriptionSentToPharmacy",
                "PrescriptionResendRequested",
                "PrescriptionRequestApproved",
                "PrescriptionSentToPharmacy",
                "PrescriptionCancellationRequested",
                "PrescriptionRequestDeclined",
                "PrescriptionCancellationRequested",
                "PrescriptionRequestApproved",
                "PrescriptionCancelled",
            ]
        );
        server.stop().await;
    }
);

conformance!(
    illegal_transitions_are_refused_and_change_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let id = issued(&server, &w).await["id"]
            .as_str()
            .expect("id")
            .to_string();

        // Not yet sent: the pharmacy does not have it.
        let early = pharmacy_act(&server, &w.pharmacist, "dispensePrescription", &id).await;
        assert_eq!(code(&early), "NOT_FOUND");
        send(&server, &w, &id, &w.pharmacy).await;
        let again = send(&server, &w, &id, &w.other_pharmacy).await;
        assert_eq!(code(&again), "INVALID_TRANSITION");
        let unready = pharmacy_act(&server, &w.pharmacist, "dispensePrescription", &id).await;
        assert_eq!(code(&unready), "INVALID_TRANSITION");
        pharmacy_act(&server, &w.pharmacist, "markPrescriptionReady", &id).await;

        let cancelled = act(
            &server,
            &w.doctor,
            "cancelPrescription",
            "CancelPrescriptionInput",
            json!({ "prescriptionId": id, "reason": "ошибка в дозировке" }),
        )
        .await;
        assert_eq!(
            cancelled["prescription"]["status"], "CANCELLED",
            "{cancelled}"
        );
        let before = read(&server, &w.patient, &id).await;

        let dispensed = pharmacy_act(&server, &w.pharmacist, "dispensePrescription", &id).await;
        assert_eq!(code(&dispensed), "PRESCRIPTION_CANCELLED", "{dispensed}");
        assert_eq!(dispensed["prescription"], Value::Null);
        let ready = pharmacy_act(&server, &w.pharmacist, "markPrescriptionReady", &id).await;
        assert_eq!(code(&ready), "PRESCRIPTION_CANCELLED");
        let recancel = act(
            &server,
            &w.doctor,
            "cancelPrescription",
            "CancelPrescriptionInput",
            json!({ "prescriptionId": id, "reason": "ещё раз" }),
        )
        .await;
        assert_eq!(code(&recancel), "PRESCRIPTION_CANCELLED");
        let asked = act(
            &server,
            &w.patient,
            "requestPrescriptionCancellation",
            "CancelPrescriptionInput",
            json!({ "prescriptionId": id, "reason": "x" }),
        )
        .await;
        assert_eq!(code(&asked), "PRESCRIPTION_CANCELLED");
        assert_eq!(
            read(&server, &w.patient, &id).await,
            before,
            "nothing changed"
        );
        server.stop().await;
    }
);

conformance!(
    bad_input_names_the_field_and_changes_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let backwards = issue(
            &server,
            &w,
            json!({ "validFrom": local_day(5), "validUntil": local_day(4) }),
        )
        .await;
        assert_eq!(code(&backwards), "INVALID_PERIOD");
        assert_eq!(field(&backwards), json!(["input", "validUntil"]));
        let past = issue(&server, &w, json!({ "validFrom": local_day(-1) })).await;
        assert_eq!(code(&past), "INVALID_PERIOD");
        assert_eq!(field(&past), json!(["input", "validFrom"]));
        let too_long = issue(&server, &w, json!({ "validUntil": local_day(400) })).await;
        assert_eq!(code(&too_long), "INVALID_PERIOD");
        let garbage = issue(&server, &w, json!({ "validUntil": "31.12.2026" })).await;
        assert_eq!(code(&garbage), "INVALID_DATE");
        let none = issue(&server, &w, json!({ "quantity": 0 })).await;
        assert_eq!(code(&none), "INVALID_INPUT");
        assert_eq!(field(&none), json!(["input", "quantity"]));
        let nobody = issue(
            &server,
            &w,
            json!({ "patientId": ids::encode("Account", Uuid::now_v7()).0 }),
        )
        .await;
        // Nobody's id and a stranger's answer alike: not in the clinic's care.
        assert_eq!(code(&nobody), "NOT_IN_CARE");
        assert_eq!(field(&nobody), json!(["input", "patientId"]));
        let mine = server
            .data(
                Some(&w.patient),
                "{ myPrescriptions { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            mine["myPrescriptions"]["edges"],
            json!([]),
            "nothing was issued"
        );

        let id = issued(&server, &w).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let unknown = send(
            &server,
            &w,
            &id,
            &ids::encode("Organisation", Uuid::now_v7()).0,
        )
        .await;
        assert_eq!(code(&unknown), "NOT_FOUND");
        assert_eq!(field(&unknown), json!(["input", "pharmacyId"]));
        let not_pharmacy = send(&server, &w, &id, &w.plain_organisation).await;
        assert_eq!(code(&not_pharmacy), "NOT_A_PHARMACY");
        let junk = send(&server, &w, &id, "not-an-id").await;
        assert_eq!(code(&junk), "NOT_FOUND");
        assert_eq!(
            read(&server, &w.patient, &id).await["status"],
            "READY_TO_PRINT"
        );
        let unknown_org = designate(
            &server,
            &w.admin,
            &ids::encode("Organisation", Uuid::now_v7()).0,
        )
        .await;
        assert_eq!(code(&unknown_org), "NOT_FOUND");
        server.stop().await;
    }
);

conformance!(
    each_role_reaches_only_its_own_prescriptions,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let id = issued(&server, &w).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let stranger = server.token(Role::Patient, None);
        assert_eq!(read(&server, &stranger, &id).await, Value::Null);
        let theirs = send(
            &server,
            &World {
                patient: stranger.clone(),
                ..w_clone(&w)
            },
            &id,
            &w.pharmacy,
        )
        .await;
        assert_eq!(code(&theirs), "NOT_FOUND");
        let (other_clinic, other_uuid) =
            register_organisation(&server, &w.admin, "Другая клиника").await;
        let _ = other_clinic;
        let foreign_doctor = server.token(Role::Doctor, Some(other_uuid));
        assert_eq!(read(&server, &foreign_doctor, &id).await, Value::Null);
        let foreign_cancel = act(
            &server,
            &foreign_doctor,
            "cancelPrescription",
            "CancelPrescriptionInput",
            json!({ "prescriptionId": id, "reason": "x" }),
        )
        .await;
        assert_eq!(code(&foreign_cancel), "NOT_FOUND");
        // A doctor token whose account is no doctor of the directory cannot prescribe.
        let unlisted = World {
            doctor: server.token(Role::Doctor, Some(w.clinic_uuid)),
            ..w_clone(&w)
        };
        assert_eq!(
            code(&issue(&server, &unlisted, json!({})).await),
            "NOT_A_DOCTOR"
        );

        send(&server, &w, &id, &w.pharmacy).await;
        assert_eq!(read(&server, &w.other_pharmacist, &id).await, Value::Null);
        let foreign_ready =
            pharmacy_act(&server, &w.other_pharmacist, "markPrescriptionReady", &id).await;
        assert_eq!(code(&foreign_ready), "NOT_FOUND");
        assert_eq!(
            read(&server, &w.pharmacist, &id).await["status"],
            "SENT_TO_PHARMACY"
        );

        // Wrong roles get FORBIDDEN; no token gets UNAUTHENTICATED.
        let forbidden = [
            (w.patient.clone(), "mutation { issuePrescription(input: { patientId: \"x\", medication: \"m\", dosage: \"d\", quantity: 1, validFrom: \"2026-01-01\", validUntil: \"2026-01-02\" }) { userErrors { code } } }"),
            (w.doctor.clone(), "{ myPrescriptions { edges { node { id } } } }"),
            (w.patient.clone(), "{ pharmacyPrescriptions { edges { node { id } } } }"),
            (w.pharmacist.clone(), "mutation { designatePharmacy(input: { organisationId: \"x\" }) { userErrors { code } } }"),
        ];
        for (token, query) in forbidden {
            let response = server.graphql(Some(&token), query, json!({})).await;
            assert_eq!(
                response["errors"][0]["extensions"]["code"], "FORBIDDEN",
                "{query}: {response}"
            );
        }
        let anonymous = server
            .graphql(
                None,
                "{ myPrescriptions { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            anonymous["errors"][0]["extensions"]["code"],
            "UNAUTHENTICATED"
        );
        server.stop().await;
    }
);

fn w_clone(w: &World) -> World {
    World {
        admin: w.admin.clone(),
        organisation: w.organisation.clone(),
        clinic_uuid: w.clinic_uuid,
        doctor: w.doctor.clone(),
        other_doctor: w.other_doctor.clone(),
        pharmacy: w.pharmacy.clone(),
        pharmacist: w.pharmacist.clone(),
        other_pharmacy: w.other_pharmacy.clone(),
        other_pharmacist: w.other_pharmacist.clone(),
        plain_organisation: w.plain_organisation.clone(),
        patient_id: w.patient_id,
        patient: w.patient.clone(),
    }
}

conformance!(
    the_scheduler_expires_a_prescription_when_the_clock_passes_its_validity,
    |test_db| async move {
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |_| {}).await;
        let w = World::open(&server).await;
        let p = issue(&server, &w, json!({ "validUntil": local_day(1) })).await;
        let p = p["prescription"].clone();
        let id = p["id"].as_str().expect("id").to_string();
        send(&server, &w, &id, &w.pharmacy).await;
        pharmacy_act(&server, &w.pharmacist, "markPrescriptionReady", &id).await;
        let token = token_of(p["verificationUrl"].as_str().expect("url"));
        assert_eq!(verify_http(&server, &token).await.1["result"], "valid");

        // Past the end of the last day in the clinic's zone (local day + 1 is at most 48 h ahead).
        clock.set(Utc::now() + Duration::hours(50));
        let mut status = Value::Null;
        for _ in 0..100 {
            status = read(&server, &w.patient, &id).await["status"].clone();
            if status == "EXPIRED" {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(status, "EXPIRED");
        let after = read(&server, &w.patient, &id).await;
        let journal = after["journal"].as_array().expect("journal");
        let last = journal.last().expect("entry");
        assert_eq!(last["action"], "PrescriptionExpired");
        assert_eq!(last["actorRole"], "SYSTEM");
        // The scheduler keeps running, yet expiry is recorded once.
        tokio::time::sleep(StdDuration::from_millis(600)).await;
        let again = read(&server, &w.patient, &id).await;
        assert_eq!(
            again["journal"].as_array().map(Vec::len),
            Some(journal.len())
        );
        let dispensed = pharmacy_act(&server, &w.pharmacist, "dispensePrescription", &id).await;
        assert_eq!(code(&dispensed), "PRESCRIPTION_EXPIRED");
        assert_eq!(verify_http(&server, &token).await.1["result"], "expired");
        server.stop().await;
    }
);

conformance!(
    verification_answers_valid_for_a_genuine_token_and_invalid_for_a_changed_one,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let p = issued(&server, &w).await;
        let url = p["verificationUrl"].as_str().expect("url").to_string();
        assert!(
            url.starts_with(&format!("{}/verify/prescription/", server.base)),
            "{url}"
        );
        let token = token_of(&url);
        let (status, answer) = verify_http(&server, &token).await;
        assert_eq!(status, 200);
        assert_eq!(
            answer,
            json!({
                "result": "valid", "medication": "Амоксициллин 500 мг", "dosage": "по 1 капсуле 3 раза в день",
                "quantity": 2, "validFrom": local_day(0), "validUntil": local_day(10),
                "prescriberName": "Иванова Анна Сергеевна", "organisationName": "Городская поликлиника №3",
                "patientInitials": "С. О. И."
            })
        );
        let mut changed: Vec<char> = token.chars().collect();
        let middle = changed.len() / 2;
        changed[middle] = if changed[middle] == 'A' { 'B' } else { 'A' };
        let changed: String = changed.into_iter().collect();
        for bad in [
            changed.as_str(),
            "garbage",
            "%20",
            &token[..token.len() - 1],
        ] {
            let (status, answer) = verify_http(&server, bad).await;
            assert_eq!(status, 200, "{bad}");
            assert_eq!(answer["result"], "invalid", "{bad}: {answer}");
            assert_eq!(answer["medication"], Value::Null);
        }
        let graphql = server
            .data(
                None,
                "query($t: String!) { verifyPrescription(token: $t) { result medication patientInitials } }",
                json!({ "t": token }),
            )
            .await;
        assert_eq!(graphql["verifyPrescription"]["result"], "VALID");
        assert_eq!(graphql["verifyPrescription"]["patientInitials"], "С. О. И.");
        server.stop().await;
    }
);

/// Downloads `path` (a link's path on the server) with `token`.
async fn download(client: &Client, token: &str, path: &str) -> Vec<u8> {
    let url = format!("{}{path}", client.base);
    let response = client
        .http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .expect("download");
    assert_eq!(response.status().as_u16(), 200, "{url}");
    response.bytes().await.expect("body").to_vec()
}

conformance!(
    the_qr_code_of_the_printed_prescription_verifies,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let id = issued(&server, &w).await["id"]
            .as_str()
            .expect("id")
            .to_string();
        let query = "query($id: ID!) { node(id: $id) { ... on Prescription { download { path } verificationUrl } } }";
        let node = server
            .data(Some(&w.patient), query, json!({ "id": id }))
            .await["node"]
            .clone();
        let url = node["download"]["path"]
            .as_str()
            .expect("download url")
            .to_string();
        let pdf = download(&server, &w.patient, &url).await;
        assert!(pdf.starts_with(b"%PDF"), "not a PDF");
        let again = server
            .data(Some(&w.patient), query, json!({ "id": id }))
            .await["node"]
            .clone();
        let again_pdf = download(
            &server,
            &w.patient,
            again["download"]["path"].as_str().expect("url"),
        )
        .await;
        assert_eq!(
            pdf, again_pdf,
            "the same prescription renders to the same bytes"
        );
        // Someone else's token cannot use the link.
        let stranger = server.token(Role::Patient, None);
        let refused = server
            .http
            .get(format!("{}{url}", server.base))
            .bearer_auth(&stranger)
            .send()
            .await
            .expect("download");
        assert_eq!(refused.status().as_u16(), 403);
        // Other patients get no link at all.
        let theirs = server
            .graphql(Some(&stranger), query, json!({ "id": id }))
            .await;
        assert_eq!(theirs["data"]["node"], Value::Null);

        if let Some(text) = kabinet_tests::pdf_text::pdf_text(&pdf) {
            let ru = |iso: String| {
                let d = chrono::NaiveDate::parse_from_str(&iso, "%Y-%m-%d").expect("date");
                d.format("%d.%m.%Y").to_string()
            };
            let period = format!(
                "с {} по {} включительно",
                ru(local_day(0)),
                ru(local_day(10))
            );
            assert!(text.contains(&period), "missing {period:?} in:\n{text}");
            for expected in [
                "Рецепт на лекарственный препарат",
                "Амоксициллин 500 мг",
                "по 1 капсуле 3 раза в день",
                "С. О. И.",
                "Иванова Анна Сергеевна",
                "Городская поликлиника №3",
                "Готов к печати",
            ] {
                assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
            }
        }
        let Some(codes) = kabinet_tests::pdf_text::pdf_qr_codes(&pdf) else {
            return;
        };
        assert_eq!(codes.len(), 1, "one QR code on the prescription: {codes:?}");
        let decoded = codes[0].clone();
        assert_eq!(
            decoded,
            node["verificationUrl"].as_str().expect("verification url")
        );
        let token = token_of(&decoded);
        assert_eq!(verify_http(&server, &token).await.1["result"], "valid");
        let mut changed: Vec<char> = token.chars().collect();
        let last = changed.len() - 2;
        changed[last] = if changed[last] == 'x' { 'y' } else { 'x' };
        let changed: String = changed.into_iter().collect();
        let (status, answer) = verify_http(&server, &changed).await;
        assert_eq!((status, answer["result"].as_str()), (200, Some("invalid")));
        server.stop().await;
    }
);

#[tokio::test]
async fn production_needs_a_usable_prescription_signing_key() {
    use kabinet_graphql::config::{PrescriptionKeyArgs, ServeConfig};
    use kabinet_graphql::Application;
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let mut missing = kabinet_tests::server::production_config(&url);
    missing.prescription_key = PrescriptionKeyArgs::default();
    let error = Application::build(missing).await.err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("KABINET_PRESCRIPTION_SIGNING_KEY"),
        "{error}"
    );
    let mut short = ServeConfig::for_tests(&url, kabinet_tests::server::SECRET);
    short.prescription_key = PrescriptionKeyArgs::with_seed("c2hvcnQ=");
    assert!(Application::build(short).await.is_err());
    let good = kabinet_tests::server::production_config(&url);
    assert!(Application::build(good).await.is_ok());
}

conformance!(a_development_key_survives_a_restart, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let w = World::open(&server).await;
    let url = issued(&server, &w).await["verificationUrl"]
        .as_str()
        .expect("url")
        .to_string();
    server.stop().await;
    let restarted = Server::start(&test_db, |_| {}).await;
    let (_, answer) = verify_http(&restarted, &token_of(&url)).await;
    assert_eq!(answer["result"], "valid", "{answer}");
    restarted.stop().await;
});

conformance!(
    two_servers_running_the_scheduler_expire_a_prescription_once,
    |test_db| async move {
        let clock = FixedClock::new(Utc::now());
        let fast = |c: &mut kabinet_graphql::config::ServeConfig| {
            c.scheduler_interval_ms = 50;
        };
        let first = Server::start_with_clock(&test_db, Arc::new(clock.clone()), fast).await;
        let second = Server::start_with_clock(&test_db, Arc::new(clock.clone()), fast).await;
        let w = World::open(&first).await;
        let mut ids = Vec::new();
        for _ in 0..5 {
            let p = issue(&first, &w, json!({ "validUntil": local_day(1) })).await;
            ids.push(p["prescription"]["id"].as_str().expect("id").to_string());
        }
        clock.set(Utc::now() + Duration::hours(50));
        for id in &ids {
            let mut status = Value::Null;
            for _ in 0..100 {
                status = read(&second, &w.patient, id).await["status"].clone();
                if status == "EXPIRED" {
                    break;
                }
                tokio::time::sleep(StdDuration::from_millis(100)).await;
            }
            assert_eq!(status, "EXPIRED");
        }
        // Let both schedulers run a few more passes.
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        let expiries: i64 = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'PrescriptionExpired'")
                .fetch_one(pool)
                .await
                .expect("count")
        });
        assert_eq!(
            expiries,
            ids.len() as i64,
            "each prescription expired exactly once"
        );
        second.stop().await;
        first.stop().await;
    }
);

conformance!(
    every_wrong_field_of_an_issue_is_reported_at_once,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let w = World::open(&server).await;
        let fields = |payload: &Value| -> Vec<String> {
            payload["userErrors"]
                .as_array()
                .unwrap_or_else(|| panic!("no user errors in {payload}"))
                .iter()
                .map(|e| e["field"][1].as_str().unwrap_or_default().to_string())
                .collect()
        };
        let unreadable = issue(
            &server,
            &w,
            json!({ "patientId": "garbage", "validFrom": "1 декабря", "validUntil": "31.12.2026",
            "idempotencyKey": "" }),
        )
        .await;
        assert_eq!(
            fields(&unreadable),
            ["idempotencyKey", "patientId", "validFrom", "validUntil"],
            "{unreadable}"
        );
        let refused = issue(
            &server,
            &w,
            json!({ "medication": " ", "quantity": 0,
            "validFrom": local_day(5), "validUntil": local_day(4) }),
        )
        .await;
        assert_eq!(
            fields(&refused),
            ["medication", "quantity", "validUntil"],
            "{refused}"
        );
        assert_eq!(refused["prescription"], Value::Null);
        server.stop().await;
    }
);
