//! Trust (issue 17): one identity gate for every medical object on every path,
//! the care relationship between patients and organisations, notifications
//! that name the doctor and the clinic, the QR page of a printed prescription,
//! and the demo's pharmacy — over HTTP against a real server, on both backends.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use kabinet_domain::clock::FixedClock;
use kabinet_domain::notify::MemoryNotifier;
use kabinet_domain::Role;
use kabinet_graphql::schema::ids;
use kabinet_graphql::startup::Overrides;
use kabinet_tests::clinic::{
    doctor_input, organisation_details, publish_schedule, register_doctor, register_organisation,
    register_service, schedule_input, tomorrow_in, with,
};
use kabinet_tests::conformance;
use kabinet_tests::server::code_of;
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};
use uuid::Uuid;

const ZONE: &str = "Europe/Moscow";
const CLINIC: &str = "Городская поликлиника №7";
const ADDRESS: &str = "ул. Тверская, 5";
const DOCTOR: &str = "Иванова Анна Сергеевна";
const MEDICATION: &str = "Сертралин 50 мг";

/// A clinic with a doctor whose schedule is tomorrow 09:00–12:00 local time.
struct Clinic {
    registrar: String,
    doctor: String,
    /// Slot ids with their start instants.
    slots: Vec<(String, DateTime<Utc>)>,
}

impl Clinic {
    async fn open(client: &Client) -> Clinic {
        let admin = client.token(Role::Admin, None);
        register_service(client, &admin, json!([])).await;
        let organisation = register_organisation(
            client,
            &admin,
            with(
                organisation_details(CLINIC),
                json!({ "address": ADDRESS, "timeZone": ZONE }),
            ),
        )
        .await;
        let registrar = client.token(Role::Registrar, Some(organisation.uuid));
        let doctor = register_doctor(
            client,
            &registrar,
            doctor_input("Иванова", &organisation.id),
        )
        .await;
        let published = publish_schedule(
            client,
            &registrar,
            schedule_input(&doctor.id, &tomorrow_in(ZONE)),
        )
        .await;
        let slots = published["slots"]
            .as_array()
            .unwrap_or_else(|| panic!("slots: {published}"))
            .iter()
            .map(|s| {
                let start = s["start"].as_str().expect("start");
                (
                    s["id"].as_str().expect("slot id").to_string(),
                    DateTime::parse_from_rfc3339(start)
                        .expect("start instant")
                        .with_timezone(&Utc),
                )
            })
            .collect();
        Clinic {
            registrar,
            doctor: client.token_for(doctor.uuid, Role::Doctor, Some(organisation.uuid)),
            slots,
        }
    }
}

/// A full profile with documents and addresses.
fn profile() -> Value {
    json!({
        "surname": "Смирнов", "firstName": "Олег", "patronymic": "Петрович",
        "birthDate": "1990-04-12", "sex": "MALE",
        "snils": "112 233 445 95", "omsPolicy": "7723 4567 8901 2346",
        "passportSeries": "45 08", "passportNumber": "123456",
        "phone": "8 (912) 345-67-89", "email": "oleg@example.ru",
        "registrationAddress": "Москва, ул. Тверская, 5", "actualAddress": "Москва, ул. Арбат, 10",
    })
}

async fn record_profile(client: &Client, token: &str) {
    let updated = client
        .data(
            Some(token),
            "mutation($input: UpdateMyProfileInput!) { updateMyProfile(input: $input) { userErrors { field code message } } }",
            json!({ "input": profile() }),
        )
        .await;
    assert_eq!(
        updated["updateMyProfile"]["userErrors"],
        json!([]),
        "{updated}"
    );
}

/// Books `slot` as `token` (for `patient` when the caller is a registrar); the appointment id.
async fn book(client: &Client, token: &str, slot: &str, patient: Option<Uuid>) -> String {
    let mut input = json!({ "slotId": slot });
    if let Some(p) = patient {
        input["patientId"] = json!(ids::encode("Account", p).0);
    }
    let booked = client
        .data(
            Some(token),
            "mutation($input: BookAppointmentInput!) { bookAppointment(input: $input) {
                appointment { id } userErrors { field code message } } }",
            json!({ "input": input }),
        )
        .await;
    booked["bookAppointment"]["appointment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("booked: {booked}"))
        .to_string()
}

/// Issues a prescription of `MEDICATION` to `patient` as `doctor`; the payload.
async fn prescribe(client: &Client, doctor: &str, patient: Uuid) -> Value {
    let tz: chrono_tz::Tz = ZONE.parse().expect("zone");
    let today = Utc::now().with_timezone(&tz).date_naive();
    client
        .data(
            Some(doctor),
            "mutation($input: IssuePrescriptionInput!) { issuePrescription(input: $input) {
                prescription { id verificationUrl } userErrors { field code message } } }",
            json!({ "input": { "patientId": ids::encode("Account", patient).0, "medication": MEDICATION,
                "dosage": "по 1 таблетке утром", "quantity": 1,
                "validFrom": today.to_string(), "validUntil": (today + Duration::days(10)).to_string() } }),
        )
        .await["issuePrescription"]
        .clone()
}

/// The caller's notifications of `kind`, waiting (bounded) for at least one.
async fn notifications_of(client: &Client, token: &str, kind: &str) -> Vec<Value> {
    for _ in 0..100 {
        let listed = client
            .data(
                Some(token),
                "{ myNotifications(first: 50) { edges { node { kind title body } } } }",
                json!({}),
            )
            .await;
        let found: Vec<Value> = listed["myNotifications"]["edges"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|e| e["node"].clone())
            .filter(|n| n["kind"] == kind)
            .collect();
        if !found.is_empty() {
            return found;
        }
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    panic!("no {kind} notification arrived");
}

conformance!(
    an_unverified_patient_reaches_no_medical_detail_by_any_path,
    |test_db| async move {
        let notifier = MemoryNotifier::default();
        let server =
            Server::start_with_notifier(&test_db, Some(Arc::new(notifier.clone())), |_| {}).await;
        let clinic = Clinic::open(&server).await;
        let patient = Uuid::now_v7();
        // Signed in through a session: the identity gate applies; not verified yet.
        let session = server.session_token_for(patient, Role::Patient, None);
        // The same account with a development token, which counts as verified.
        let verified = server.token_for(patient, Role::Patient, None);
        record_profile(&server, &session).await;
        let preferences = server
            .data(
                Some(&session),
                "mutation { setNotificationPreferences(input: { channels: [EMAIL], email: \"oleg@example.ru\" }) { userErrors { code } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            preferences["setNotificationPreferences"]["userErrors"],
            json!([])
        );
        book(&server, &session, &clinic.slots[0].0, None).await;
        let issued = prescribe(&server, &clinic.doctor, patient).await;
        assert_eq!(issued["userErrors"], json!([]), "{issued}");
        let id = issued["prescription"]["id"]
            .as_str()
            .expect("id")
            .to_string();

        // The list was closed before; node and its nested fields are closed too.
        let listed = server
            .graphql(
                Some(&session),
                "{ myPrescriptions(first: 5) { edges { node { medication } } } }",
                json!({}),
            )
            .await;
        assert_eq!(code_of(&listed), Some("IDENTITY_NOT_VERIFIED"), "{listed}");
        let by_node = server
            .graphql(
                Some(&session),
                "query($id: ID!) { node(id: $id) { ... on Prescription { medication dosage download { path } } } }",
                json!({ "id": id }),
            )
            .await;
        assert_eq!(
            code_of(&by_node),
            Some("IDENTITY_NOT_VERIFIED"),
            "{by_node}"
        );
        assert!(!by_node.to_string().contains("Сертралин"), "{by_node}");

        // A download link of the account opens nothing until verification.
        let link = server
            .data(
                Some(&verified),
                "query($id: ID!) { node(id: $id) { ... on Prescription { download { path } } } }",
                json!({ "id": id }),
            )
            .await["node"]["download"]["path"]
            .as_str()
            .expect("download link")
            .to_string();
        let refused = server
            .http
            .get(format!("{}{link}", server.base))
            .bearer_auth(&session)
            .send()
            .await
            .expect("download");
        assert_eq!(refused.status().as_u16(), 403);
        let body: Value = refused.json().await.expect("json");
        assert_eq!(body["error"]["code"], "IDENTITY_NOT_VERIFIED", "{body}");
        let opened = server
            .http
            .get(format!("{}{link}", server.base))
            .bearer_auth(&verified)
            .send()
            .await
            .expect("download");
        assert_eq!(opened.status().as_u16(), 200);

        // Notifications say that something is new, not what, on screen and by e-mail.
        let shown = notifications_of(&server, &session, "PRESCRIPTION_ISSUED").await;
        assert!(!shown[0].to_string().contains("Сертралин"), "{shown:?}");
        assert!(
            shown[0]["body"]
                .as_str()
                .is_some_and(|b| b.contains("подтверждения личности")),
            "{shown:?}"
        );
        let full = notifications_of(&server, &verified, "PRESCRIPTION_ISSUED").await;
        assert!(
            full[0]["body"]
                .as_str()
                .is_some_and(|b| b.contains(MEDICATION)),
            "{full:?}"
        );
        let neutral_title = "Новое сообщение в личном кабинете";
        let mut mailed = Vec::new();
        for _ in 0..100 {
            mailed = notifier
                .sent()
                .into_iter()
                .filter(|m| m.to == "oleg@example.ru")
                .collect();
            if mailed.iter().any(|m| m.subject == neutral_title) {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert!(
            mailed.iter().any(|m| m.subject == neutral_title),
            "{mailed:?}"
        );
        assert!(
            mailed.iter().all(|m| !m.body.contains("Сертралин")),
            "{mailed:?}"
        );
        server.stop().await;
    }
);

conformance!(
    visit_notifications_name_the_doctor_and_the_clinic,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server).await;
        let patient = Uuid::now_v7();
        let token = server.token_for(patient, Role::Patient, None);
        record_profile(&server, &token).await;
        book(&server, &token, &clinic.slots[1].0, None).await;
        let told = notifications_of(&server, &token, "APPOINTMENT_BOOKED").await;
        let body = told[0]["body"].as_str().expect("body");
        assert!(body.starts_with("Вы записаны на приём "), "{body}");
        assert!(body.contains("кабинет 214."), "{body}");
        assert!(body.contains(&format!("Врач: {DOCTOR}.")), "{body}");
        assert!(body.contains(&format!("{CLINIC}, {ADDRESS}.")), "{body}");
        server.stop().await;
    }
);

conformance!(
    the_qr_link_gives_people_a_russian_page_and_programs_json,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server).await;
        let patient = Uuid::now_v7();
        let token = server.token_for(patient, Role::Patient, None);
        record_profile(&server, &token).await;
        book(&server, &token, &clinic.slots[2].0, None).await;
        let issued = prescribe(&server, &clinic.doctor, patient).await;
        let url = issued["prescription"]["verificationUrl"]
            .as_str()
            .unwrap_or_else(|| panic!("issued: {issued}"))
            .to_string();
        let browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        let page = server
            .http
            .get(&url)
            .header("accept", browser)
            .send()
            .await
            .expect("page");
        assert_eq!(page.status().as_u16(), 200);
        let content_type = page.headers()["content-type"]
            .to_str()
            .expect("type")
            .to_string();
        assert!(content_type.starts_with("text/html"), "{content_type}");
        let html = page.text().await.expect("html");
        assert!(html.contains("<html lang=\"ru\">"), "{html}");
        assert!(html.contains("Рецепт действителен"), "{html}");
        assert!(html.contains(MEDICATION) && html.contains(DOCTOR), "{html}");
        // A program asking for JSON, or not saying, gets the JSON it always got.
        for accept in [
            Some("application/json"),
            None,
            Some("application/json, text/html"),
        ] {
            let mut request = server.http.get(&url);
            if let Some(a) = accept {
                request = request.header("accept", a);
            }
            let answer: Value = request
                .send()
                .await
                .expect("json")
                .json()
                .await
                .expect("json body");
            assert_eq!(answer["result"], "valid", "{accept:?}: {answer}");
            assert_eq!(answer["medication"], MEDICATION);
        }
        let forged = format!("{url}x");
        let html = server
            .http
            .get(&forged)
            .header("accept", browser)
            .send()
            .await
            .expect("page")
            .text()
            .await
            .expect("html");
        assert!(html.contains("Рецепт не найден"), "{html}");
        server.stop().await;
    }
);

conformance!(
    care_decides_prescribing_profiles_and_the_visit_window,
    |test_db| async move {
        let clock = FixedClock::new(Utc::now());
        let overrides = Overrides {
            clock: Some(Arc::new(clock.clone())),
            ..Overrides::default()
        };
        let server = Server::start_with(&test_db, overrides, |_| {}).await;
        let clinic = Clinic::open(&server).await;
        let stranger = Uuid::now_v7();
        record_profile(&server, &server.token_for(stranger, Role::Patient, None)).await;

        // A doctor prescribes only to patients in their organisation's care.
        let refused = prescribe(&server, &clinic.doctor, stranger).await;
        assert_eq!(refused["prescription"], Value::Null);
        assert_eq!(refused["userErrors"][0]["code"], "NOT_IN_CARE", "{refused}");
        assert_eq!(
            refused["userErrors"][0]["field"],
            json!(["input", "patientId"])
        );
        let profile_query = "query($p: ID!) { patientProfile(patientId: $p) {
            surname firstName birthDate phone snils passportSeries passportNumber
            registrationAddress actualAddress omsPolicy email } }";
        let p = json!({ "p": ids::encode("Account", stranger).0 });
        let unseen = server
            .data(Some(&clinic.registrar), profile_query, p.clone())
            .await;
        assert_eq!(unseen["patientProfile"], Value::Null);

        // A registrar booking by phone sees what booking needs, never documents or addresses.
        let appointment = book(
            &server,
            &clinic.registrar,
            &clinic.slots[3].0,
            Some(stranger),
        )
        .await;
        let seen = server
            .data(Some(&clinic.registrar), profile_query, p.clone())
            .await;
        let seen = &seen["patientProfile"];
        assert_eq!(seen["surname"], "Смирнов", "{seen}");
        assert_eq!(seen["birthDate"], "1990-04-12");
        assert_eq!(seen["phone"], "+79123456789");
        for hidden in [
            "snils",
            "passportSeries",
            "passportNumber",
            "registrationAddress",
            "actualAddress",
            "omsPolicy",
            "email",
        ] {
            assert_eq!(seen[hidden], Value::Null, "registrar sees {hidden}");
        }
        // The doctor of that organisation sees the whole profile, and may prescribe.
        let doctor_view = server
            .data(Some(&clinic.doctor), profile_query, p.clone())
            .await;
        assert_eq!(
            doctor_view["patientProfile"]["snils"], "112-233-445 95",
            "{doctor_view}"
        );
        let issued = prescribe(&server, &clinic.doctor, stranger).await;
        assert_eq!(issued["userErrors"], json!([]), "{issued}");

        // Arrival and outcome wait for the visit: not 31 hours ahead.
        let start = clinic.slots[3].1;
        clock.set(start - Duration::hours(31));
        let act = |name: &'static str, extra: &'static str| {
            format!(
                "mutation($id: ID!) {{ {name}(input: {{ appointmentId: $id{extra} }}) {{
                appointment {{ status }} userErrors {{ field code message }} }} }}"
            )
        };
        let fulfil = act(
            "fulfilVisit",
            ", diagnosisCode: \"J06.9\", diagnosisText: \"ОРВИ\"",
        );
        let arrive = act("markPatientArrived", "");
        let v = json!({ "id": appointment });
        let early = server.data(Some(&clinic.doctor), &fulfil, v.clone()).await;
        assert_eq!(
            early["fulfilVisit"]["userErrors"][0]["code"], "VISIT_NOT_OPEN",
            "{early}"
        );
        let early = server
            .data(Some(&clinic.registrar), &arrive, v.clone())
            .await;
        assert_eq!(
            early["markPatientArrived"]["userErrors"][0]["code"], "VISIT_NOT_OPEN",
            "{early}"
        );
        clock.set(start - Duration::minutes(30));
        let arrived = server
            .data(Some(&clinic.registrar), &arrive, v.clone())
            .await;
        assert_eq!(
            arrived["markPatientArrived"]["appointment"]["status"], "ARRIVED",
            "{arrived}"
        );
        clock.set(start + Duration::minutes(10));
        let done = server.data(Some(&clinic.doctor), &fulfil, v.clone()).await;
        assert_eq!(
            done["fulfilVisit"]["appointment"]["status"], "FULFILLED",
            "{done}"
        );
        // The diagnosis is for the organisation's doctors, not its front desk.
        let outcome = "query($id: ID!) { node(id: $id) { ... on Appointment { status outcome { diagnosisCode } } } }";
        let by_doctor = server.data(Some(&clinic.doctor), outcome, v.clone()).await;
        assert_eq!(
            by_doctor["node"]["outcome"]["diagnosisCode"], "J06.9",
            "{by_doctor}"
        );
        let by_registrar = server
            .data(Some(&clinic.registrar), outcome, v.clone())
            .await;
        assert_eq!(
            by_registrar["node"]["status"], "FULFILLED",
            "{by_registrar}"
        );
        assert_eq!(
            by_registrar["node"]["outcome"],
            Value::Null,
            "{by_registrar}"
        );

        // Cancelling a booking ends the access it gave.
        clock.set(Utc::now());
        let other = Uuid::now_v7();
        record_profile(&server, &server.token_for(other, Role::Patient, None)).await;
        let booked = book(&server, &clinic.registrar, &clinic.slots[4].0, Some(other)).await;
        let q = json!({ "p": ids::encode("Account", other).0 });
        let during = server
            .data(Some(&clinic.registrar), profile_query, q.clone())
            .await;
        assert_eq!(during["patientProfile"]["surname"], "Смирнов");
        let cancelled = server
            .data(
                Some(&clinic.registrar),
                "mutation($id: ID!) { cancelAppointment(input: { appointmentId: $id }) { userErrors { code } } }",
                json!({ "id": booked }),
            )
            .await;
        assert_eq!(cancelled["cancelAppointment"]["userErrors"], json!([]));
        for token in [&clinic.registrar, &clinic.doctor] {
            let after = server.data(Some(token), profile_query, q.clone()).await;
            assert_eq!(after["patientProfile"], Value::Null, "{after}");
        }
        let refused = prescribe(&server, &clinic.doctor, other).await;
        assert_eq!(refused["userErrors"][0]["code"], "NOT_IN_CARE", "{refused}");

        // Staff of another organisation get nothing of a patient in care elsewhere.
        let elsewhere = server.token(Role::Doctor, Some(Uuid::now_v7()));
        let theirs = server
            .data(Some(&elsewhere), profile_query, p.clone())
            .await;
        assert_eq!(theirs["patientProfile"], Value::Null);
        server.stop().await;
    }
);

conformance!(
    the_demo_seeds_a_pharmacy_where_its_patient_can_take_a_prescription,
    |test_db| async move {
        let size = kabinet_graphql::seed::SeedSize {
            organisations: 2,
            doctors: 3,
            days: 2,
            patients: 3,
            past_visits: 0,
            past_days: 0,
            concurrency: 2,
            seed: 1,
        };
        let report = kabinet_graphql::seed::seed(&test_db.commands(), &size)
            .await
            .expect("seed");
        let server = Server::start(&test_db, |_| {}).await;
        let pharmacy = *report.pharmacies.first().expect("a pharmacy");
        let mut listed = Value::Null;
        for _ in 0..100 {
            listed = server
                .data(
                    None,
                    "{ pharmacies(first: 10) { edges { node { id name isPharmacy } } } }",
                    json!({}),
                )
                .await;
            if listed["pharmacies"]["edges"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
            {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(
            listed["pharmacies"]["edges"][0]["node"]["name"], "Аптека «Здоровье»",
            "{listed}"
        );
        // The flow the demo prints: the doctor prescribes to the patient, the patient
        // sends it to the pharmacy, the pharmacist prepares and dispenses it.
        let (doctor, organisation) = (report.doctors[0], report.doctor_organisations[0]);
        let patient = report.patients[0];
        let doctor = server.token_for(doctor, Role::Doctor, Some(organisation));
        let mut issued = Value::Null;
        for _ in 0..100 {
            issued = prescribe(&server, &doctor, patient).await;
            if issued["userErrors"] == json!([]) {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(issued["userErrors"], json!([]), "{issued}");
        let id = issued["prescription"]["id"]
            .as_str()
            .expect("id")
            .to_string();
        let patient = server.token_for(patient, Role::Patient, None);
        let pharmacist = server.token(Role::Pharmacist, Some(pharmacy));
        let steps = [
            (
                &patient,
                "sendPrescriptionToPharmacy",
                "SendPrescriptionInput",
                json!({ "prescriptionId": id, "pharmacyId": ids::encode("Organisation", pharmacy).0 }),
                "SENT_TO_PHARMACY",
            ),
            (
                &pharmacist,
                "markPrescriptionReady",
                "PharmacyPrescriptionInput",
                json!({ "prescriptionId": id }),
                "READY_AT_PHARMACY",
            ),
            (
                &pharmacist,
                "dispensePrescription",
                "PharmacyPrescriptionInput",
                json!({ "prescriptionId": id }),
                "DISPENSED",
            ),
        ];
        for (token, name, input_type, input, status) in steps {
            let query = format!(
                "mutation($input: {input_type}!) {{ {name}(input: $input) {{ prescription {{ status }} userErrors {{ field code message }} }} }}"
            );
            let done = server
                .data(Some(token), &query, json!({ "input": input }))
                .await;
            assert_eq!(
                done[name]["prescription"]["status"], status,
                "{name}: {done}"
            );
        }
        server.stop().await;
    }
);
