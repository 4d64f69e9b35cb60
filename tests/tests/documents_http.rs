//! Medical document requests end to end over HTTP, on both backends: the lifecycle
//! to a downloadable PDF whose text names the patient, period and diagnoses; every
//! illegal transition refused with its code and no change; resubmission; authorisation
//! by role; bad input; overdue flags; refused download links.

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use kabinet_domain::appointments::{Appointment, AppointmentCommand, ChangedBy};
use kabinet_domain::command::Retry;
use kabinet_domain::directory::SlotInfo;
use kabinet_domain::{Actor, EventMetadata, Role};
use kabinet_graphql::files::{sha256_hex, FileLinks};
use kabinet_graphql::schema::ids;
use kabinet_tests::clinic::{
    self, doctor_input, organisation_details, patient_profile, register_doctor,
    register_organisation, with,
};
use kabinet_tests::conformance;
use kabinet_tests::pdf_text::pdf_text;
use kabinet_tests::server::get;
use kabinet_tests::server::{Client, Server, SECRET};
use kabinet_tests::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

const FIELDS: &str = "id type typeLabelRu status statusLabelRu periodFrom periodTo policyNumber
    visitDate purpose dueAt overdue rejectionReasonCode rejectionReasonLabelRu rejectionText
    resubmissionOf resubmittedAs fileSha256 download { path } organisation { name }
    journal { date time action status statusLabelRu byRole sentTo { name } }";

fn request_mutation() -> String {
    format!(
        "mutation($input: RequestDocumentInput!) {{ requestDocument(input: $input) {{
            documentRequest {{ {FIELDS} }} userErrors {{ field code message }} }} }}"
    )
}

fn action_mutation(name: &str, input: &str) -> String {
    format!(
        "mutation($input: {input}!) {{ {name}(input: $input) {{
            documentRequest {{ {FIELDS} }} userErrors {{ field code message }} }} }}"
    )
}

struct Clinic {
    organisation_id: String,
    organisation_uuid: Uuid,
    doctor_uuid: Uuid,
    registrar: String,
}

async fn organisation(client: &Client, admin: &str, name: &str) -> (String, Uuid) {
    let registered = register_organisation(client, admin, organisation_details(name)).await;
    (registered.id, registered.uuid)
}

impl Clinic {
    async fn open(client: &Client, name: &str) -> Clinic {
        let admin = client.token(Role::Admin, None);
        let (organisation_id, organisation_uuid) = organisation(client, &admin, name).await;
        let registrar = client.token(Role::Registrar, Some(organisation_uuid));
        let doctor = with(
            doctor_input("Иванова", &organisation_id),
            json!({ "patronymic": null, "serviceCodes": [] }),
        );
        let doctor = register_doctor(client, &registrar, doctor).await;
        Clinic {
            organisation_id: organisation_id.clone(),
            organisation_uuid,
            doctor_uuid: doctor.uuid,
            registrar,
        }
    }

    /// A visit that took place `days_ago` at 10:00 UTC, fulfilled with a diagnosis.
    async fn past_visit(
        &self,
        test_db: &TestDb,
        patient: Uuid,
        days_ago: i64,
        code: &str,
        text: &str,
    ) {
        let day = (Utc::now() - Duration::days(days_ago)).date_naive();
        let start = Utc.from_utc_datetime(&day.and_hms_opt(10, 0, 0).expect("time"));
        let slot = SlotInfo {
            doctor_id: self.doctor_uuid,
            organisation_id: self.organisation_uuid,
            period_id: Uuid::now_v7(),
            start,
            end: start + Duration::minutes(20),
            day,
            time_zone: "Europe/Moscow".into(),
            room: "214".into(),
            service_codes: vec![],
            booking_horizon_days: 30,
            change_cutoff_hours: 2,
            min_age: None,
            max_age: None,
        };
        let commands = test_db.commands();
        let id = Uuid::now_v7().to_string();
        let meta = EventMetadata::new(
            Actor {
                account_id: patient,
                role: Role::Patient,
                organisation_id: None,
            },
            "test".to_string(),
        );
        commands
            .execute::<Appointment>(
                &id,
                AppointmentCommand::Book {
                    patient_id: patient,
                    slot,
                    service_code: None,
                    patient_age: Some(35),
                    by: ChangedBy::Patient,
                    now: start - Duration::days(1),
                },
                &(),
                &meta,
                &json!({}),
                Retry::Never,
            )
            .await
            .expect("book a past visit");
        commands
            .execute::<Appointment>(
                &id,
                AppointmentCommand::Fulfil {
                    diagnosis_code: code.into(),
                    diagnosis_text: text.into(),
                    recommendations: "Обильное питьё, покой".into(),
                    prescriptions: vec![],
                    referrals: vec![],
                    now: start + Duration::minutes(15),
                    opens_before: Duration::minutes(60),
                },
                &(),
                &meta,
                &json!({}),
                Retry::Never,
            )
            .await
            .expect("fulfil a past visit");
    }
}

/// A patient with a recorded profile.
async fn patient(client: &Client) -> (Uuid, String) {
    clinic::patient(client, patient_profile()).await
}

fn days_ago(n: i64) -> NaiveDate {
    (Utc::now() - Duration::days(n)).date_naive()
}

fn ru(day: NaiveDate) -> String {
    day.format("%d.%m.%Y").to_string()
}

async fn request(client: &Client, token: &str, input: Value) -> Value {
    client
        .data(Some(token), &request_mutation(), json!({ "input": input }))
        .await["requestDocument"]
        .clone()
}

async fn act(client: &Client, token: &str, name: &str, input_type: &str, input: Value) -> Value {
    client
        .data(
            Some(token),
            &action_mutation(name, input_type),
            json!({ "input": input }),
        )
        .await[name]
        .clone()
}

async fn start(client: &Client, token: &str, id: &str) -> Value {
    act(
        client,
        token,
        "startDocumentRequest",
        "DocumentRequestActionInput",
        json!({ "requestId": id }),
    )
    .await
}

async fn fulfil(client: &Client, token: &str, id: &str) -> Value {
    act(
        client,
        token,
        "fulfilDocumentRequest",
        "DocumentRequestActionInput",
        json!({ "requestId": id }),
    )
    .await
}

async fn reject(client: &Client, token: &str, id: &str) -> Value {
    act(
        client,
        token,
        "rejectDocumentRequest",
        "RejectDocumentRequestInput",
        json!({ "requestId": id, "reasonCode": "NO_RECORDS_IN_PERIOD", "text": "Нет записей за этот период" }),
    )
    .await
}

async fn send(client: &Client, token: &str, id: &str, organisation: &str) -> Value {
    act(
        client,
        token,
        "sendDocumentToClinic",
        "SendDocumentToClinicInput",
        json!({ "requestId": id, "organisationId": organisation }),
    )
    .await
}

async fn resubmit(client: &Client, token: &str, input: Value) -> Value {
    act(
        client,
        token,
        "resubmitDocumentRequest",
        "ResubmitDocumentRequestInput",
        input,
    )
    .await
}

fn code(payload: &Value) -> Option<&str> {
    payload["userErrors"][0]["code"].as_str()
}

fn field(payload: &Value) -> Value {
    payload["userErrors"][0]["field"].clone()
}

fn id_of(payload: &Value) -> String {
    payload["documentRequest"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request in {payload}"))
        .to_string()
}

async fn count(test_db: &TestDb, sql: &str) -> i64 {
    test_db.scalar(sql, &[]).await
}

async fn events(test_db: &TestDb) -> i64 {
    count(test_db, "SELECT COUNT(*) FROM events").await
}

conformance!(
    a_request_goes_from_submitted_to_a_pdf_the_patient_downloads_and_sends,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Городская поликлиника №2").await;
        let (patient_id, token) = patient(&server).await;
        clinic
            .past_visit(
                &test_db,
                patient_id,
                20,
                "J06.9",
                "Острая инфекция верхних дыхательных путей",
            )
            .await;
        clinic
            .past_visit(&test_db, patient_id, 10, "I10", "Эссенциальная гипертензия")
            .await;
        // Outside the period: must not appear in the extract.
        clinic
            .past_visit(&test_db, patient_id, 60, "K29.7", "Гастрит неуточнённый")
            .await;

        let (from, to) = (days_ago(30), days_ago(1));
        let submitted = request(
            &server,
            &token,
            json!({ "organisationId": clinic.organisation_id, "type": "HISTORY_EXTRACT",
                "periodFrom": from.to_string(), "periodTo": to.to_string(),
                "policyNumber": "7723 4567 8901 2346", "visitDate": days_ago(10).to_string(),
                "purpose": "для работодателя" }),
        )
        .await;
        assert_eq!(submitted["userErrors"], json!([]), "{submitted}");
        let r = &submitted["documentRequest"];
        assert_eq!(r["status"], "SUBMITTED");
        assert_eq!(r["statusLabelRu"], "Подан");
        assert_eq!(r["type"], "HISTORY_EXTRACT");
        assert_eq!(r["typeLabelRu"], "Выписка из истории болезни");
        assert_eq!(r["policyNumber"], "7723456789012346");
        assert_eq!(r["organisation"]["name"], "Городская поликлиника №2");
        assert_eq!(r["overdue"], false);
        assert_eq!(r["download"]["path"], Value::Null);
        let due: chrono::DateTime<Utc> = serde_json::from_value(r["dueAt"].clone()).expect("dueAt");
        let hours = (due - Utc::now()).num_minutes();
        assert!(
            (23 * 60..=24 * 60).contains(&hours),
            "due in {hours} minutes"
        );
        let id = id_of(&submitted);

        let worklist = server
            .data(
                Some(&clinic.registrar),
                "{ organisationDocumentRequests { edges { node { id status overdue } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            worklist["organisationDocumentRequests"]["edges"][0]["node"],
            json!({ "id": id, "status": "SUBMITTED", "overdue": false })
        );

        let started = start(&server, &clinic.registrar, &id).await;
        assert_eq!(
            started["documentRequest"]["status"], "IN_PROGRESS",
            "{started}"
        );
        let doctor = server.token(Role::Doctor, Some(clinic.organisation_uuid));
        let fulfilled = fulfil(&server, &doctor, &id).await;
        assert_eq!(fulfilled["userErrors"], json!([]), "{fulfilled}");
        let r = &fulfilled["documentRequest"];
        assert_eq!(r["status"], "FULFILLED");
        let sha = r["fileSha256"].as_str().expect("sha").to_string();
        assert_eq!(sha.len(), 64);
        let journal: Vec<(String, String, String)> = r["journal"]
            .as_array()
            .expect("journal")
            .iter()
            .map(|e| {
                (
                    e["action"].as_str().unwrap_or_default().to_string(),
                    e["status"].as_str().unwrap_or_default().to_string(),
                    e["byRole"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        let expected = [
            ("submitted", "SUBMITTED", "PATIENT"),
            ("started", "IN_PROGRESS", "REGISTRAR"),
            ("fulfilled", "FULFILLED", "DOCTOR"),
        ];
        assert_eq!(
            journal,
            expected
                .iter()
                .map(|(a, s, b)| (a.to_string(), s.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
        assert!(r["journal"][0]["date"]
            .as_str()
            .is_some_and(|d| d.len() == 10));
        assert!(r["journal"][0]["time"]
            .as_str()
            .is_some_and(|t| t.len() == 5));
        // The event records the file's hash.
        let recorded = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'DocumentRequestFulfilled'",
            )
            .fetch_one(pool)
            .await
            .expect("event")
        });
        assert!(recorded.contains(&sha), "{recorded}");

        // The patient downloads the PDF through the signed link.
        let listed = server
            .data(
                Some(&token),
                &format!("{{ documentRequests(filter: {{ statuses: [FULFILLED] }}) {{ edges {{ node {{ {FIELDS} }} }} }} }}"),
                json!({}),
            )
            .await;
        let node = &listed["documentRequests"]["edges"][0]["node"];
        assert_eq!(node["id"], json!(id));
        let link = node["download"]["path"]
            .as_str()
            .expect("download url")
            .to_string();
        assert!(link.starts_with(&format!("/files/{sha}?exp=")), "{link}");
        let (status, pdf) = get(&server, &link, Some(&token)).await;
        assert_eq!(status, 200);
        assert_eq!(
            sha256_hex(&pdf),
            sha,
            "the stored bytes are the recorded ones"
        );
        if let Some(text) = pdf_text(&pdf) {
            // Wrapped lines come back as separate lines.
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            for expected in [
                "Выписка из истории болезни".to_string(),
                "Смирнов Олег Игоревич".to_string(),
                format!("{} — {}", ru(from), ru(to)),
                "J06.9".to_string(),
                "Острая инфекция верхних дыхательных путей".to_string(),
                "I10".to_string(),
                "Эссенциальная гипертензия".to_string(),
                "Обильное питьё".to_string(),
                "7723456789012346".to_string(),
                "Городская поликлиника №2".to_string(),
            ] {
                assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
            }
            assert!(
                !text.contains("K29.7"),
                "a visit outside the period:\n{text}"
            );
        }
        let none = server
            .data(
                Some(&token),
                "{ a: documentRequests(filter: { statuses: [REJECTED] }) { edges { node { id } } }
                   b: documentRequests(filter: { types: [HEALTH_CERTIFICATE] }) { edges { node { id } } }
                   c: documentRequests(filter: { types: [HISTORY_EXTRACT], submittedFrom: \"2000-01-01\" }) { edges { node { id } } }
                   d: documentRequests(filter: { submittedTo: \"2000-01-01\" }) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(none["a"]["edges"], json!([]));
        assert_eq!(none["b"]["edges"], json!([]));
        assert_eq!(none["c"]["edges"][0]["node"]["id"], json!(id));
        assert_eq!(none["d"]["edges"], json!([]));

        // Send to another clinic: recorded in the journal, the request stays fulfilled.
        let admin = server.token(Role::Admin, None);
        let (other_org, _) = organisation(&server, &admin, "Кардиоцентр").await;
        let sent = send(&server, &token, &id, &other_org).await;
        assert_eq!(sent["userErrors"], json!([]), "{sent}");
        let last = &sent["documentRequest"]["journal"][3];
        assert_eq!(last["action"], "sent_to_clinic");
        assert_eq!(last["status"], "FULFILLED");
        assert_eq!(last["byRole"], "PATIENT");
        assert_eq!(last["sentTo"]["name"], "Кардиоцентр");
        server.stop().await;
    }
);

conformance!(
    illegal_transitions_return_their_code_and_change_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Поликлиника").await;
        let (_, token) = patient(&server).await;
        let input = json!({ "organisationId": clinic.organisation_id, "type": "HEALTH_CERTIFICATE",
            "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(1).to_string() });
        let first = id_of(&request(&server, &token, input.clone()).await);
        let staff = &clinic.registrar;

        let before = events(&test_db).await;
        let refused = fulfil(&server, staff, &first).await;
        assert_eq!(code(&refused), Some("REQUEST_NOT_STARTED"), "{refused}");
        assert_eq!(
            code(&send(&server, &token, &first, &clinic.organisation_id).await),
            Some("REQUEST_NOT_STARTED")
        );
        assert_eq!(
            code(&resubmit(&server, &token, json!({ "requestId": first })).await),
            Some("REQUEST_NOT_REJECTED")
        );
        assert_eq!(events(&test_db).await, before, "refusals write nothing");

        let rejected = reject(&server, staff, &first).await;
        assert_eq!(
            rejected["documentRequest"]["status"], "REJECTED",
            "{rejected}"
        );
        assert_eq!(
            rejected["documentRequest"]["rejectionReasonCode"],
            "NO_RECORDS_IN_PERIOD"
        );
        assert_eq!(
            rejected["documentRequest"]["rejectionReasonLabelRu"],
            "Нет записей за период"
        );
        assert_eq!(
            rejected["documentRequest"]["rejectionText"],
            "Нет записей за этот период"
        );

        let before = events(&test_db).await;
        for (what, payload) in [
            ("fulfil", fulfil(&server, staff, &first).await),
            ("start", start(&server, staff, &first).await),
            ("reject", reject(&server, staff, &first).await),
            (
                "send",
                send(&server, &token, &first, &clinic.organisation_id).await,
            ),
        ] {
            assert_eq!(
                code(&payload),
                Some("REQUEST_REJECTED"),
                "{what}: {payload}"
            );
            assert_eq!(payload["documentRequest"], Value::Null);
        }
        assert_eq!(events(&test_db).await, before, "refusals write nothing");
        assert_eq!(count(&test_db, "SELECT COUNT(*) FROM files").await, 0);

        // Resubmission: a new request linked to the rejected one, as often as needed.
        let second = resubmit(
            &server,
            &token,
            json!({ "requestId": first, "purpose": "в бассейн" }),
        )
        .await;
        assert_eq!(second["userErrors"], json!([]), "{second}");
        let r = &second["documentRequest"];
        assert_eq!(r["status"], "SUBMITTED");
        assert_eq!(r["type"], "HEALTH_CERTIFICATE");
        assert_eq!(r["resubmissionOf"], json!(first));
        assert_eq!(r["purpose"], "в бассейн");
        let second = id_of(&second);
        let old = server
            .data(
                Some(&token),
                "query($id: ID!) { node(id: $id) { ... on DocumentRequest { status resubmittedAs } } }",
                json!({ "id": first }),
            )
            .await;
        assert_eq!(old["node"]["resubmittedAs"], json!(second));
        assert_eq!(
            code(&resubmit(&server, &token, json!({ "requestId": first })).await),
            Some("ALREADY_RESUBMITTED")
        );
        assert_eq!(
            reject(&server, staff, &second).await["documentRequest"]["status"],
            "REJECTED"
        );
        let third = resubmit(&server, &token, json!({ "requestId": second })).await;
        assert_eq!(
            third["documentRequest"]["resubmissionOf"],
            json!(second),
            "{third}"
        );
        let third = id_of(&third);

        // In progress: cannot be taken again; fulfilled: cannot be fulfilled, taken or rejected.
        start(&server, staff, &third).await;
        assert_eq!(
            code(&start(&server, staff, &third).await),
            Some("REQUEST_IN_PROGRESS")
        );
        // A retried fulfilment with the same key answers the first result and adds nothing.
        let keyed = json!({ "requestId": third, "idempotencyKey": "fulfil-third" });
        let fulfil_input = "DocumentRequestActionInput";
        let once = act(
            &server,
            staff,
            "fulfilDocumentRequest",
            fulfil_input,
            keyed.clone(),
        )
        .await;
        assert_eq!(once["documentRequest"]["status"], "FULFILLED", "{once}");
        let before = events(&test_db).await;
        let files = count(&test_db, "SELECT COUNT(*) FROM files").await;
        let again = act(&server, staff, "fulfilDocumentRequest", fulfil_input, keyed).await;
        assert_eq!(again["userErrors"], json!([]), "{again}");
        assert_eq!(
            again["documentRequest"]["fileSha256"],
            once["documentRequest"]["fileSha256"]
        );
        assert_eq!(events(&test_db).await, before);
        for (what, payload) in [
            ("fulfil", fulfil(&server, staff, &third).await),
            ("start", start(&server, staff, &third).await),
            ("reject", reject(&server, staff, &third).await),
        ] {
            assert_eq!(
                code(&payload),
                Some("REQUEST_FULFILLED"),
                "{what}: {payload}"
            );
        }
        assert_eq!(events(&test_db).await, before);
        assert_eq!(count(&test_db, "SELECT COUNT(*) FROM files").await, files);

        // The certificate states what was asked.
        let node = server
            .data(
                Some(&token),
                "query($id: ID!) { node(id: $id) { ... on DocumentRequest { download { path } } } }",
                json!({ "id": third }),
            )
            .await;
        let link = node["node"]["download"]["path"]
            .as_str()
            .expect("link")
            .to_string();
        let (status, pdf) = get(&server, &link, Some(&token)).await;
        assert_eq!(status, 200);
        if let Some(text) = pdf_text(&pdf) {
            let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(text.contains("Справка о состоянии здоровья"), "{text}");
            assert!(text.contains("в бассейн"), "{text}");
            assert!(text.contains("Смирнов Олег Игоревич"), "{text}");
        }
        server.stop().await;
    }
);

conformance!(
    bad_input_names_the_field_and_changes_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Поликлиника").await;
        let (_, token) = patient(&server).await;
        let base = json!({ "organisationId": clinic.organisation_id, "type": "EXAMINATION_RESULTS",
        "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(1).to_string() });
        let with = |changes: Value| {
            let mut input = base.clone();
            if let (Some(i), Some(c)) = (input.as_object_mut(), changes.as_object()) {
                for (k, v) in c {
                    i.insert(k.clone(), v.clone());
                }
            }
            input
        };
        let before = events(&test_db).await;
        let unknown_org = ids::encode("Organisation", Uuid::now_v7()).0;
        for (changes, expected_code, expected_field) in [
            (
                json!({ "periodTo": days_ago(6).to_string() }),
                "PERIOD_ENDS_BEFORE_START",
                "periodTo",
            ),
            (
                json!({ "periodTo": (Utc::now() + Duration::days(3)).date_naive().to_string() }),
                "PERIOD_IN_FUTURE",
                "periodTo",
            ),
            (
                json!({ "organisationId": unknown_org }),
                "UNKNOWN_ORGANISATION",
                "organisationId",
            ),
            (
                json!({ "organisationId": "garbage" }),
                "UNKNOWN_ORGANISATION",
                "organisationId",
            ),
            (
                json!({ "policyNumber": "7723456789012345" }),
                "INVALID_POLICY_NUMBER",
                "policyNumber",
            ),
            (
                json!({ "visitDate": (Utc::now() + Duration::days(3)).date_naive().to_string() }),
                "VISIT_DATE_IN_FUTURE",
                "visitDate",
            ),
            (
                json!({ "periodFrom": "01.02.2026" }),
                "INVALID_INPUT",
                "periodFrom",
            ),
            (
                json!({ "purpose": "я".repeat(501) }),
                "INVALID_INPUT",
                "purpose",
            ),
        ] {
            let refused = request(&server, &token, with(changes.clone())).await;
            assert_eq!(code(&refused), Some(expected_code), "{changes}: {refused}");
            assert_eq!(
                field(&refused),
                json!(["input", expected_field]),
                "{changes}"
            );
            assert_eq!(refused["documentRequest"], Value::Null);
        }
        // A rejection needs a text.
        let id = id_of(&request(&server, &token, base.clone()).await);
        let after_one = events(&test_db).await;
        assert_eq!(after_one, before + 1);
        let empty = act(
            &server,
            &clinic.registrar,
            "rejectDocumentRequest",
            "RejectDocumentRequestInput",
            json!({ "requestId": id, "reasonCode": "OTHER", "text": "  " }),
        )
        .await;
        assert_eq!(code(&empty), Some("INVALID_INPUT"));
        assert_eq!(field(&empty), json!(["input", "text"]));
        assert_eq!(events(&test_db).await, after_one);
        server.stop().await;
    }
);

conformance!(
    only_the_patient_and_the_organisations_staff_reach_a_request,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Поликлиника").await;
        let other = Clinic::open(&server, "Другая поликлиника").await;
        let (_, token) = patient(&server).await;
        let (_, stranger) = patient(&server).await;
        let id = id_of(
            &request(
                &server,
                &token,
                json!({ "organisationId": clinic.organisation_id, "type": "HISTORY_EXTRACT",
                    "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(1).to_string() }),
            )
            .await,
        );
        let node = "query($id: ID!) { node(id: $id) { ... on DocumentRequest { id } } }";
        let before = events(&test_db).await;

        // Another patient: nothing to see, nothing to change.
        let seen = server
            .data(Some(&stranger), node, json!({ "id": id }))
            .await;
        assert_eq!(seen["node"], Value::Null);
        let theirs = server
            .data(
                Some(&stranger),
                "{ documentRequests { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(theirs["documentRequests"]["edges"], json!([]));
        assert_eq!(
            code(&send(&server, &stranger, &id, &clinic.organisation_id).await),
            Some("NOT_FOUND")
        );
        assert_eq!(
            code(&resubmit(&server, &stranger, json!({ "requestId": id })).await),
            Some("NOT_FOUND")
        );

        // Another organisation's staff.
        let seen = server
            .data(Some(&other.registrar), node, json!({ "id": id }))
            .await;
        assert_eq!(seen["node"], Value::Null);
        let list = server
            .data(
                Some(&other.registrar),
                "{ organisationDocumentRequests { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(list["organisationDocumentRequests"]["edges"], json!([]));
        for payload in [
            start(&server, &other.registrar, &id).await,
            reject(&server, &other.registrar, &id).await,
            fulfil(&server, &other.registrar, &id).await,
        ] {
            assert_eq!(code(&payload), Some("NOT_FOUND"), "{payload}");
        }
        assert_eq!(events(&test_db).await, before);

        // Roles: staff do not request documents, patients do not work on them,
        // and nobody without a token gets anything.
        let doctor = server.token(Role::Doctor, Some(clinic.organisation_uuid));
        let forbidden = server
            .graphql(
                Some(&doctor),
                &request_mutation(),
                json!({ "input": { "organisationId": clinic.organisation_id, "type": "HISTORY_EXTRACT",
                    "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(1).to_string() } }),
            )
            .await;
        assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
        let forbidden = server
            .graphql(
                Some(&token),
                &action_mutation("startDocumentRequest", "DocumentRequestActionInput"),
                json!({ "input": { "requestId": id } }),
            )
            .await;
        assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
        let forbidden = server
            .graphql(
                Some(&token),
                "{ organisationDocumentRequests { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN");
        let anonymous = server
            .graphql(
                None,
                "{ documentRequests { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            anonymous["errors"][0]["extensions"]["code"],
            "UNAUTHENTICATED"
        );

        // A download link works only for the account it was issued to, unaltered, in time.
        start(&server, &clinic.registrar, &id).await;
        let done = fulfil(&server, &clinic.registrar, &id).await;
        let sha = done["documentRequest"]["fileSha256"]
            .as_str()
            .expect("sha")
            .to_string();
        let mine = server
            .data(
                Some(&token),
                node.replace("{ id }", "{ download { path } }").as_str(),
                json!({ "id": id }),
            )
            .await;
        let link = mine["node"]["download"]["path"]
            .as_str()
            .expect("link")
            .to_string();
        assert_eq!(get(&server, &link, Some(&token)).await.0, 200);
        assert_eq!(get(&server, &link, Some(&stranger)).await.0, 403);
        assert_eq!(get(&server, &link, Some(&clinic.registrar)).await.0, 403);
        assert_eq!(get(&server, &link, None).await.0, 401);
        let altered = link.replace("exp=", "exp=9");
        let (status, body) = get(&server, &altered, Some(&token)).await;
        assert_eq!(status, 403);
        assert!(String::from_utf8_lossy(&body).contains("INVALID_LINK"));
        let patient_id = ids::decode_as(
            server
                .data(Some(&token), "{ me { accountId } }", json!({}))
                .await["me"]["accountId"]
                .as_str()
                .expect("me"),
            "Account",
        )
        .expect("account");
        let expired = FileLinks::new(SECRET.as_bytes()).download_link(
            &sha,
            patient_id,
            Utc::now() - Duration::minutes(1),
        );
        let (status, body) = get(&server, &expired, Some(&token)).await;
        assert_eq!(status, 410);
        assert!(String::from_utf8_lossy(&body).contains("LINK_EXPIRED"));
        server.stop().await;
    }
);

conformance!(
    requests_past_their_deadline_are_flagged_in_the_worklist,
    |test_db| async move {
        // Certificates are due at once, extracts in the default 24 hours.
        let server = Server::start(&test_db, |c| c.deadline_health_certificate_hours = 0).await;
        let clinic = Clinic::open(&server, "Поликлиника").await;
        let (_, token) = patient(&server).await;
        let period =
            json!({ "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(1).to_string() });
        let mut late = period.clone();
        late["organisationId"] = json!(clinic.organisation_id);
        late["type"] = json!("HEALTH_CERTIFICATE");
        let late = id_of(&request(&server, &token, late).await);
        let mut timely = period.clone();
        timely["organisationId"] = json!(clinic.organisation_id);
        timely["type"] = json!("HISTORY_EXTRACT");
        let timely = id_of(&request(&server, &token, timely).await);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;

        let list = server
            .data(
                Some(&clinic.registrar),
                "{ all: organisationDocumentRequests { edges { node { id overdue } } }
                   late: organisationDocumentRequests(filter: { overdueOnly: true }) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            list["all"]["edges"],
            json!([
                { "node": { "id": late, "overdue": true } },
                { "node": { "id": timely, "overdue": false } },
            ])
        );
        assert_eq!(list["late"]["edges"], json!([{ "node": { "id": late } }]));

        // Once answered, a request is no longer overdue.
        reject(&server, &clinic.registrar, &late).await;
        let list = server
            .data(
                Some(&clinic.registrar),
                "{ organisationDocumentRequests(filter: { overdueOnly: true }) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(list["organisationDocumentRequests"]["edges"], json!([]));
        server.stop().await;
    }
);

/// The input fields named by a payload's user errors, in order.
fn error_fields(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .unwrap_or_else(|| panic!("no user errors in {payload}"))
        .iter()
        .map(|e| e["field"][1].as_str().unwrap_or_default().to_string())
        .collect()
}

conformance!(
    every_wrong_field_of_a_request_is_reported_at_once,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let clinic = Clinic::open(&server, "Поликлиника").await;
        let (_, token) = patient(&server).await;
        let before = events(&test_db).await;
        let unreadable = request(
            &server,
            &token,
            json!({ "organisationId": "garbage", "type": "EXAMINATION_RESULTS",
            "periodFrom": "01.02.2026", "periodTo": days_ago(1).to_string(),
            "visitDate": "вчера", "idempotencyKey": "" }),
        )
        .await;
        assert_eq!(
            error_fields(&unreadable),
            [
                "idempotencyKey",
                "organisationId",
                "periodFrom",
                "visitDate"
            ],
            "{unreadable}"
        );
        let future = (Utc::now() + Duration::days(3)).date_naive().to_string();
        let refused = request(
            &server,
            &token,
            json!({ "organisationId": clinic.organisation_id, "type": "EXAMINATION_RESULTS",
            "periodFrom": days_ago(5).to_string(), "periodTo": days_ago(6).to_string(),
            "visitDate": future, "policyNumber": "7723456789012345" }),
        )
        .await;
        assert_eq!(
            error_fields(&refused),
            ["periodTo", "visitDate", "policyNumber"],
            "{refused}"
        );
        assert_eq!(refused["documentRequest"], Value::Null);
        assert_eq!(events(&test_db).await, before, "nothing was recorded");
        server.stop().await;
    }
);
