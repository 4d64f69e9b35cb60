//! Profile, identity verification and the account journal end to end over HTTP, on
//! both backends: field-precise profile errors, the three verification steps in any
//! order, uploads checked by content and sealed at rest, the medical-data gate, and
//! the reads of medical data the owner sees in their journal.

use std::sync::Arc;

use chrono::{Duration, Utc};
use kabinet_domain::notify::MemoryNotifier;
use kabinet_domain::Role;
use kabinet_tests::clinic::session_patient;
use kabinet_tests::clinic::{
    doctor_input, organisation_details, publish_schedule, register_doctor, register_organisation,
    register_service, schedule_input, tomorrow_in, with,
};
use kabinet_tests::conformance;
use kabinet_tests::delivery::last_code;
use kabinet_tests::identity::upload;
use kabinet_tests::server::code_of as top_code;
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};
use uuid::Uuid;

const UPDATE: &str = "mutation($input: UpdateMyProfileInput!) { updateMyProfile(input: $input) {
    profile { surname firstName birthDate sex snils omsPolicy passportSeries passportNumber phone email
              registrationAddress actualAddress }
    userErrors { field message code } } }";

const PROFILE: &str = "{ myProfile { surname firstName birthDate snils omsPolicy passportSeries
    passportNumber phone email registrationAddress actualAddress } }";

const STATUS: &str =
    "{ myIdentityVerification { status statusLabelRu verifiedAt steps { step done } } }";

const STEP_FIELDS: &str =
    "verification { status statusLabelRu steps { step done } } userErrors { field message code }";

fn valid_profile() -> Value {
    json!({
        "surname": "Смирнов", "firstName": "Олег", "patronymic": "Петрович",
        "birthDate": "1990-04-12", "sex": "MALE",
        "snils": "112 233 445 95", "omsPolicy": "7723 4567 8901 2346",
        "passportSeries": "45 08", "passportNumber": "123456",
        "phone": "8 (912) 345-67-89", "email": "Oleg@Example.RU",
        "registrationAddress": "Москва, ул. Тверская, 5", "actualAddress": "Москва, ул. Арбат, 10",
    })
}

async fn update(client: &Client, token: &str, input: Value) -> Value {
    client
        .data(Some(token), UPDATE, json!({ "input": input }))
        .await["updateMyProfile"]
        .clone()
}

async fn load_registry(client: &Client, entries: Value) -> Value {
    let admin = client.token(Role::Admin, None);
    client
        .data(
            Some(&admin),
            "mutation($input: LoadSnilsRegistryInput!) { loadSnilsRegistry(input: $input) { loaded userErrors { field code } } }",
            json!({ "input": { "entries": entries } }),
        )
        .await["loadSnilsRegistry"]
        .clone()
}

async fn step(client: &Client, token: &str, mutation: &str, input: Value) -> Value {
    let query = format!(
        "mutation($input: {}) {{ {mutation}(input: $input) {{ {STEP_FIELDS} }} }}",
        if mutation == "confirmIdentityCode" {
            "ConfirmIdentityCodeInput!"
        } else {
            "IdentityStepInput"
        }
    );
    client
        .data(Some(token), &query, json!({ "input": input }))
        .await[mutation]
        .clone()
}

fn pdf_with(marker: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n1 0 obj << /Type /Page /Title ({marker}) >> endobj\nxref\n0 1\ntrailer << >>\nstartxref\n9\n%%EOF\n"
    )
    .into_bytes()
}

/// An administrator approves `patient`'s scan `sha256` in the review queue.
async fn approve(client: &Client, patient: Uuid, sha256: &str) -> Value {
    let admin = client.token(Role::Admin, None);
    let patient_id = kabinet_graphql::schema::ids::encode("Account", patient);
    let out = client
        .data(
            Some(&admin),
            "mutation($input: ReviewPassportScanInput!) { reviewPassportScan(input: $input) {
                result { review identityVerified } userErrors { code message } } }",
            json!({ "input": { "patientId": patient_id.as_str(), "sha256": sha256, "decision": "APPROVE" } }),
        )
        .await["reviewPassportScan"]
        .clone();
    assert_eq!(out["userErrors"], json!([]), "{out}");
    out
}

const REGISTRY_ENTRY: &str = r#"{ "snils": "11223344595", "surname": "СМИРНОВ", "firstName": "Олег",
    "patronymic": "Петрович", "birthDate": "1990-04-12" }"#;

/// Runs all three steps for a patient whose profile matches the registry.
async fn verify(client: &Client, notifier: &MemoryNotifier, token: &str, patient: Uuid) {
    let scan = upload(client, token, "application/pdf", pdf_with("scan")).await;
    assert_eq!(scan.0, 201, "{scan:?}");
    approve(client, patient, scan.1["sha256"].as_str().expect("sha256")).await;
    let sent = step(client, token, "sendIdentityCode", json!({})).await;
    assert_eq!(sent["userErrors"], json!([]), "{sent}");
    let code = last_code(notifier, "+79123456789");
    let confirmed = step(
        client,
        token,
        "confirmIdentityCode",
        json!({ "code": code }),
    )
    .await;
    assert_eq!(confirmed["userErrors"], json!([]), "{confirmed}");
    let matched = step(client, token, "verifySnils", json!({})).await;
    assert_eq!(matched["verification"]["status"], "VERIFIED", "{matched}");
}

conformance!(
    profile_errors_name_every_wrong_field_and_change_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let (_, token) = session_patient(&server);

        // A first profile needs the name, birth date and sex.
        let missing = update(&server, &token, json!({ "snils": "112-233-445 95" })).await;
        let codes: Vec<(&str, &str)> = missing["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                (
                    e["field"][1].as_str().unwrap_or_default(),
                    e["code"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            codes,
            vec![
                ("surname", "REQUIRED"),
                ("firstName", "REQUIRED"),
                ("birthDate", "REQUIRED"),
                ("sex", "REQUIRED")
            ],
            "{missing}"
        );

        let saved = update(&server, &token, valid_profile()).await;
        assert_eq!(saved["userErrors"], json!([]), "{saved}");
        let profile = saved["profile"].clone();
        assert_eq!(profile["snils"], "112-233-445 95");
        assert_eq!(profile["omsPolicy"], "7723456789012346");
        assert_eq!(profile["passportSeries"], "4508");
        assert_eq!(profile["phone"], "+79123456789");
        assert_eq!(profile["email"], "Oleg@example.ru");

        let wrong = update(
            &server,
            &token,
            json!({
                "surname": "Петров", "birthDate": "2999-01-01", "snils": "112-233-445 96",
                "omsPolicy": "7723456789012345", "passportSeries": "45O8", "passportNumber": "12345",
                "phone": "+380 44 123 4567", "email": "oleg.example.ru", "actualAddress": "x".repeat(301),
            }),
        )
        .await;
        assert_eq!(wrong["profile"], Value::Null);
        let mut errors: Vec<(String, String)> = wrong["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                assert_eq!(e["field"][0], "input");
                assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
                (
                    e["field"][1].as_str().unwrap_or_default().to_string(),
                    e["code"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        errors.sort();
        let expected: Vec<(String, String)> = [
            ("actualAddress", "INVALID_INPUT"),
            ("birthDate", "INVALID_BIRTH_DATE"),
            ("email", "INVALID_EMAIL"),
            ("omsPolicy", "INVALID_OMS_POLICY_CHECKSUM"),
            ("passportNumber", "INVALID_PASSPORT_NUMBER"),
            ("passportSeries", "INVALID_PASSPORT_SERIES"),
            ("phone", "INVALID_PHONE"),
            ("snils", "INVALID_SNILS_CHECKSUM"),
        ]
        .into_iter()
        .map(|(f, c)| (f.to_string(), c.to_string()))
        .collect();
        assert_eq!(errors, expected, "{wrong}");

        // Nothing changed, not even the valid surname.
        let now = server.data(Some(&token), PROFILE, json!({})).await;
        assert_eq!(now["myProfile"]["surname"], "Смирнов");
        assert_eq!(now["myProfile"]["snils"], "112-233-445 95");

        // An empty string clears an optional part; the name stays.
        let cleared = update(&server, &token, json!({ "actualAddress": "" })).await;
        assert_eq!(
            cleared["profile"]["actualAddress"],
            Value::Null,
            "{cleared}"
        );
        assert_eq!(
            cleared["profile"]["registrationAddress"],
            "Москва, ул. Тверская, 5"
        );

        // Staff do not update a patient's profile this way.
        let doctor = server.token(Role::Doctor, Some(Uuid::now_v7()));
        let refused = server
            .graphql(
                Some(&doctor),
                UPDATE,
                json!({ "input": { "surname": "X" } }),
            )
            .await;
        assert_eq!(top_code(&refused), Some("FORBIDDEN"));
        server.stop().await;
    }
);

conformance!(
    verification_steps_in_any_order_open_medical_data,
    |test_db| async move {
        let notifier = MemoryNotifier::default();
        let server =
            Server::start_with_notifier(&test_db, Some(Arc::new(notifier.clone())), |_| {}).await;
        let loaded = load_registry(
            &server,
            json!([serde_json::from_str::<Value>(REGISTRY_ENTRY).expect("entry")]),
        )
        .await;
        assert_eq!(loaded["loaded"], 1, "{loaded}");
        let (patient_id, token) = session_patient(&server);
        assert_eq!(
            update(&server, &token, valid_profile()).await["userErrors"],
            json!([])
        );

        // Closed before verification, with a precise code; schedules stay open.
        let closed = server
            .graphql(
                Some(&token),
                "{ visitHistory { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(top_code(&closed), Some("IDENTITY_NOT_VERIFIED"), "{closed}");
        let referrals = server
            .graphql(
                Some(&token),
                "{ myReferralRequests { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(top_code(&referrals), Some("IDENTITY_NOT_VERIFIED"));
        let schedule = server
            .graphql(
                Some(&token),
                "{ myAppointments { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert!(schedule.get("errors").is_none(), "{schedule}");
        let status = server.data(Some(&token), STATUS, json!({})).await;
        assert_eq!(status["myIdentityVerification"]["status"], "NOT_STARTED");

        // Phone first: a wrong code counts, the right one confirms.
        let sent = step(&server, &token, "sendIdentityCode", json!({})).await;
        assert_eq!(sent["verification"]["status"], "IN_PROGRESS", "{sent}");
        let again = step(&server, &token, "sendIdentityCode", json!({})).await;
        assert_eq!(again["userErrors"][0]["code"], "CODE_RESEND_TOO_SOON");
        let code = last_code(&notifier, "+79123456789");
        let wrong_code = if code == "000000" { "111111" } else { "000000" };
        let wrong = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": wrong_code }),
        )
        .await;
        assert_eq!(wrong["userErrors"][0]["code"], "CODE_WRONG", "{wrong}");
        assert_eq!(wrong["userErrors"][0]["field"], json!(["input", "code"]));
        let malformed = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": "12ab" }),
        )
        .await;
        assert_eq!(malformed["userErrors"][0]["code"], "INVALID_CODE");
        let right = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": code }),
        )
        .await;
        assert_eq!(right["userErrors"], json!([]), "{right}");

        // Then the scan, approved by a reviewer, then the SNILS: the last step completes it.
        let (status_code, body) = upload(&server, &token, "application/pdf", pdf_with("x")).await;
        assert_eq!(status_code, 201, "{body}");
        assert_eq!(body["size"], pdf_with("x").len());
        approve(
            &server,
            patient_id,
            body["sha256"].as_str().expect("sha256"),
        )
        .await;
        let matched = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(matched["verification"]["status"], "VERIFIED", "{matched}");
        assert_eq!(
            matched["verification"]["statusLabelRu"],
            "Идентификация пройдена"
        );
        let open = server
            .graphql(
                Some(&token),
                "{ visitHistory { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert!(open.get("errors").is_none(), "{open}");

        // Identity data is fixed from now on; contacts are not.
        let locked = update(
            &server,
            &token,
            json!({ "snils": "123-456-789 64", "email": "new@example.ru" }),
        )
        .await;
        assert_eq!(
            locked["userErrors"][0]["code"], "LOCKED_AFTER_IDENTIFICATION",
            "{locked}"
        );
        let contact = update(&server, &token, json!({ "email": "new@example.ru" })).await;
        assert_eq!(contact["profile"]["email"], "new@example.ru", "{contact}");
        let twice = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(twice["userErrors"][0]["code"], "IDENTITY_ALREADY_VERIFIED");

        // The same SNILS cannot complete a second account's verification.
        let (second_id, second) = session_patient(&server);
        update(&server, &second, valid_profile()).await;
        let second_scan = upload(&server, &second, "application/pdf", pdf_with("second")).await;
        assert_eq!(second_scan.0, 201, "{second_scan:?}");
        approve(
            &server,
            second_id,
            second_scan.1["sha256"].as_str().expect("sha256"),
        )
        .await;
        step(&server, &second, "sendIdentityCode", json!({})).await;
        let code = last_code(&notifier, "+79123456789");
        step(
            &server,
            &second,
            "confirmIdentityCode",
            json!({ "code": code }),
        )
        .await;
        let taken = step(&server, &second, "verifySnils", json!({})).await;
        assert_eq!(
            taken["userErrors"][0]["code"], "SNILS_ALREADY_VERIFIED",
            "{taken}"
        );
        let status = server.data(Some(&second), STATUS, json!({})).await;
        assert_eq!(status["myIdentityVerification"]["status"], "IN_PROGRESS");
        server.stop().await;
    }
);

conformance!(
    registry_mismatches_and_bad_codes_are_refused,
    |test_db| async move {
        let notifier = MemoryNotifier::default();
        let server =
            Server::start_with_notifier(&test_db, Some(Arc::new(notifier.clone())), |_| {}).await;
        let bad_load = load_registry(
            &server,
            json!([{ "snils": "112-233-445 96", "surname": "", "firstName": "Олег", "birthDate": "1990-13-01" }]),
        )
        .await;
        assert_eq!(bad_load["loaded"], 0);
        let fields: Vec<Value> = bad_load["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["field"].clone())
            .collect();
        assert_eq!(
            fields,
            vec![
                json!(["input", "entries", "0", "snils"]),
                json!(["input", "entries", "0", "surname"]),
                json!(["input", "entries", "0", "birthDate"]),
            ]
        );
        let patient = server.token(Role::Patient, None);
        let refused = server
            .graphql(
                Some(&patient),
                "mutation { loadSnilsRegistry(input: { entries: [] }) { loaded } }",
                json!({}),
            )
            .await;
        assert_eq!(top_code(&refused), Some("FORBIDDEN"));

        // The registry knows this SNILS with another birth date.
        load_registry(
            &server,
            json!([{ "snils": "11223344595", "surname": "Смирнов", "firstName": "Олег",
                     "patronymic": "Петрович", "birthDate": "1991-04-12" }]),
        )
        .await;
        let (_, token) = session_patient(&server);
        let no_profile = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(no_profile["userErrors"][0]["code"], "PROFILE_INCOMPLETE");
        update(&server, &token, valid_profile()).await;
        let mismatch = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(
            mismatch["userErrors"][0]["code"], "SNILS_NOT_MATCHED",
            "{mismatch}"
        );
        // A SNILS the registry does not know gives the same answer (no oracle).
        let (_, other) = session_patient(&server);
        update(
            &server,
            &other,
            json!({ "surname": "Иванов", "firstName": "Иван", "birthDate": "1980-01-01",
            "sex": "MALE", "snils": "123-456-789 64" }),
        )
        .await;
        let unknown = step(&server, &other, "verifySnils", json!({})).await;
        assert_eq!(unknown["userErrors"][0]["code"], "SNILS_NOT_MATCHED");

        // Codes: none sent, expired, too many tries.
        let none = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": "123456" }),
        )
        .await;
        assert_eq!(none["userErrors"][0]["code"], "CODE_NOT_SENT");
        step(&server, &token, "sendIdentityCode", json!({})).await;
        let code = last_code(&notifier, "+79123456789");
        kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query("UPDATE identity_codes SET expires_at = $1")
                .bind((Utc::now() - Duration::seconds(1)).timestamp_micros())
                .execute(pool)
                .await
                .expect("age the code");
        });
        let expired = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": code }),
        )
        .await;
        assert_eq!(
            expired["userErrors"][0]["code"], "CODE_EXPIRED",
            "{expired}"
        );
        kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query("UPDATE identity_codes SET sent_at = 0, expires_at = $1")
                .bind((Utc::now() + Duration::minutes(5)).timestamp_micros())
                .execute(pool)
                .await
                .expect("allow a resend");
        });
        step(&server, &token, "sendIdentityCode", json!({})).await;
        let code = last_code(&notifier, "+79123456789");
        let wrong_code = if code == "000000" { "111111" } else { "000000" };
        for left in (0..5).rev() {
            let wrong = step(
                &server,
                &token,
                "confirmIdentityCode",
                json!({ "code": wrong_code }),
            )
            .await;
            assert_eq!(wrong["userErrors"][0]["code"], "CODE_WRONG");
            assert!(wrong["userErrors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("{left} tries left"))));
        }
        let blocked = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": code }),
        )
        .await;
        assert_eq!(
            blocked["userErrors"][0]["code"], "CODE_TOO_MANY_ATTEMPTS",
            "{blocked}"
        );
        let status = server.data(Some(&token), STATUS, json!({})).await;
        assert_eq!(status["myIdentityVerification"]["steps"][2]["done"], false);
        server.stop().await;
    }
);

conformance!(
    uploads_are_checked_by_content_and_sealed_at_rest,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let (patient_id, token) = session_patient(&server);
        let (status, body) = upload(&server, &token, "application/pdf", pdf_with("x")).await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["code"], "PROFILE_INCOMPLETE", "{body}");
        update(&server, &token, valid_profile()).await;

        let too_big = vec![b'%'; 5 * 1024 * 1024 + 1];
        let (status, body) = upload(&server, &token, "application/pdf", too_big).await;
        assert_eq!(status, 413, "{body}");
        assert_eq!(body["error"]["code"], "SCAN_TOO_LARGE");
        let far_too_big = vec![0u8; 8 * 1024 * 1024];
        let (status, body) = upload(&server, &token, "application/pdf", far_too_big).await;
        assert_eq!(status, 413);
        assert_eq!(body["error"]["code"], "SCAN_TOO_LARGE");

        let gif = [&b"GIF89a"[..], &[0u8; 64]].concat();
        let (status, body) = upload(&server, &token, "application/pdf", gif).await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["code"], "SCAN_UNSUPPORTED_TYPE");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("GIF")));
        let whole = pdf_with("truncated");
        let (status, body) = upload(
            &server,
            &token,
            "application/pdf",
            whole[..whole.len() / 2].to_vec(),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["code"], "SCAN_TRUNCATED_PDF");
        let jpeg_cut = vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F'];
        let (_, body) = upload(&server, &token, "image/jpeg", jpeg_cut).await;
        assert_eq!(body["error"]["code"], "SCAN_TRUNCATED_JPEG");
        let (status, _) = server
            .post_bytes(
                "/identity/passport-scan",
                None,
                "application/pdf",
                pdf_with("x"),
            )
            .await;
        assert_eq!(status, 401);
        let doctor = server.token(Role::Doctor, Some(Uuid::now_v7()));
        let (status, _) = upload(&server, &doctor, "application/pdf", pdf_with("x")).await;
        assert_eq!(status, 403);

        let marker = "PASSPORT-MARKER-4508-123456";
        let (status, body) = upload(&server, &token, "application/pdf", pdf_with(marker)).await;
        assert_eq!(status, 201, "{body}");
        let sha = body["sha256"].as_str().expect("sha").to_string();
        let (rows, ciphertext, events): (i64, Vec<u8>, Vec<String>) = kabinet_domain::on_db!(&test_db.db, pool => {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM passport_scans WHERE patient_id = $1")
                .bind(patient_id.to_string())
                .fetch_one(pool)
                .await
                .expect("count");
            let ciphertext: Vec<u8> = sqlx::query_scalar("SELECT ciphertext FROM passport_scans WHERE sha256 = $1")
                .bind(&sha)
                .fetch_one(pool)
                .await
                .expect("row");
            let events: Vec<String> = sqlx::query_scalar("SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'PassportScanUploaded'")
                .fetch_all(pool)
                .await
                .expect("events");
            (rows, ciphertext, events)
        });
        assert_eq!(rows, 1, "refused uploads store nothing");
        let found = ciphertext
            .windows(marker.len())
            .any(|w| w == marker.as_bytes());
        assert!(!found, "the scan is stored in plaintext");
        assert!(!ciphertext.windows(5).any(|w| w == b"%PDF-"));
        assert_eq!(events.len(), 1);
        assert!(
            events[0].contains(&sha) && !events[0].contains(marker),
            "{}",
            events[0]
        );
        // Uploaded is not done: the scan waits for a reviewer.
        let status = server.data(Some(&token), STATUS, json!({})).await;
        assert_eq!(status["myIdentityVerification"]["steps"][1]["done"], false);
        approve(&server, patient_id, &sha).await;
        let status = server.data(Some(&token), STATUS, json!({})).await;
        assert_eq!(status["myIdentityVerification"]["steps"][1]["done"], true);
        server.stop().await;
    }
);

/// Registers an organisation, its service and a doctor, publishes tomorrow's
/// schedule and returns (organisation uuid, organisation id, a free slot id).
async fn clinic(client: &Client) -> (Uuid, String, String) {
    let admin = client.token(Role::Admin, None);
    let organisation = register_organisation(
        client,
        &admin,
        with(
            organisation_details("Поликлиника №7"),
            json!({ "address": "ул. Лесная, 1" }),
        ),
    )
    .await;
    register_service(client, &admin, json!([])).await;
    let registrar = client.token(Role::Registrar, Some(organisation.uuid));
    let doctor = with(
        doctor_input("Иванова", &organisation.id),
        json!({ "patronymic": null }),
    );
    let doctor = register_doctor(client, &registrar, doctor).await;
    let published = publish_schedule(
        client,
        &registrar,
        with(
            schedule_input(&doctor.id, &tomorrow_in("Europe/Moscow")),
            json!({ "end": "10:00", "room": "101" }),
        ),
    )
    .await;
    let slot = published["slots"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("slot: {published}"))
        .to_string();
    (organisation.uuid, organisation.id, slot)
}

conformance!(
    the_account_journal_shows_changes_and_reads_by_a_doctor,
    |test_db| async move {
        let notifier = MemoryNotifier::default();
        let clock = kabinet_domain::clock::FixedClock::new(Utc::now());
        let overrides = kabinet_graphql::startup::Overrides {
            clock: Some(Arc::new(clock.clone())),
            notifier: Some(Arc::new(notifier.clone())),
            ..Default::default()
        };
        let server = Server::start_with(&test_db, overrides, |_| {}).await;
        load_registry(
            &server,
            json!([serde_json::from_str::<Value>(REGISTRY_ENTRY).expect("entry")]),
        )
        .await;
        let (organisation, _, slot) = clinic(&server).await;
        let (patient_id, token) = session_patient(&server);
        update(&server, &token, valid_profile()).await;
        verify(&server, &notifier, &token, patient_id).await;
        let booked = server
            .data(
                Some(&token),
                "mutation($input: BookAppointmentInput!) { bookAppointment(input: $input) { appointment { id start } userErrors { code message } } }",
                json!({ "input": { "slotId": slot } }),
            )
            .await;
        let appointment = booked["bookAppointment"]["appointment"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("booked: {booked}"))
            .to_string();
        // The outcome is recorded at the visit, not before it.
        let start = booked["bookAppointment"]["appointment"]["start"]
            .as_str()
            .expect("start");
        let visit_time = chrono::DateTime::parse_from_rfc3339(start)
            .expect("start instant")
            .with_timezone(&Utc)
            + Duration::minutes(5);
        clock.set(visit_time);
        let doctor = server.token(Role::Doctor, Some(organisation));
        let fulfilled = server
            .data(
                Some(&doctor),
                "mutation($input: FulfilVisitInput!) { fulfilVisit(input: $input) { appointment { id } userErrors { code } } }",
                json!({ "input": { "appointmentId": appointment, "diagnosisCode": "J06.9", "diagnosisText": "ОРВИ" } }),
            )
            .await;
        assert_eq!(fulfilled["fulfilVisit"]["userErrors"], json!([]));
        // The doctor reads the diagnosis through the node and the profile.
        let read = server
            .data(
                Some(&doctor),
                "query($id: ID!, $p: ID!) { node(id: $id) { ... on Appointment { outcome { diagnosisCode } } }
                   patientProfile(patientId: $p) { surname } }",
                json!({ "id": appointment, "p": kabinet_graphql::schema::ids::encode("Account", patient_id) }),
            )
            .await;
        assert_eq!(read["node"]["outcome"]["diagnosisCode"], "J06.9", "{read}");
        assert_eq!(read["patientProfile"]["surname"], "Смирнов");
        // Staff of another organisation see neither.
        let stranger = server.token(Role::Doctor, Some(Uuid::now_v7()));
        let hidden = server
            .data(
                Some(&stranger),
                "query($id: ID!, $p: ID!) { node(id: $id) { id } patientProfile(patientId: $p) { surname } }",
                json!({ "id": appointment, "p": kabinet_graphql::schema::ids::encode("Account", patient_id) }),
            )
            .await;
        assert_eq!(hidden, json!({ "node": null, "patientProfile": null }));

        let journal = server
            .data(
                Some(&token),
                "{ accountJournal(first: 100) { edges { node { kind action labelRu byOwner actorRole organisation { name } } } } }",
                json!({}),
            )
            .await;
        let entries = journal["accountJournal"]["edges"]
            .as_array()
            .expect("edges")
            .clone();
        let reads: Vec<&Value> = entries
            .iter()
            .map(|e| &e["node"])
            .filter(|n| n["kind"] == "MEDICAL_READ" && n["byOwner"] == false)
            .collect();
        let actions: Vec<&str> = reads.iter().filter_map(|n| n["action"].as_str()).collect();
        assert!(actions.contains(&"visit_outcome"), "{journal}");
        assert!(actions.contains(&"profile"), "{journal}");
        for read in &reads {
            assert_eq!(read["actorRole"], "DOCTOR");
            assert_eq!(read["organisation"]["name"], "Поликлиника №7");
        }
        let changes: Vec<&str> = entries
            .iter()
            .map(|e| &e["node"])
            .filter(|n| n["kind"] == "CHANGE")
            .filter_map(|n| n["action"].as_str())
            .collect();
        for expected in [
            "PatientProfileRecorded",
            "PatientDetailsRecorded",
            "PassportScanUploaded",
            "IdentityVerified",
        ] {
            assert!(changes.contains(&expected), "{expected} missing: {journal}");
        }
        assert!(entries
            .iter()
            .any(|e| e["node"]["labelRu"] == "Идентификация пройдена"));

        // Filters and paging: only reads, two at a time, newest first, no repeats.
        let mut seen = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = server
                .data(
                    Some(&token),
                    "query($after: String) { accountJournal(filter: { kinds: [MEDICAL_READ] }, first: 2, after: $after) {
                        edges { cursor node { kind occurredAt } } pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }),
                )
                .await;
            let connection = &page["accountJournal"];
            for edge in connection["edges"].as_array().expect("edges") {
                assert_eq!(edge["node"]["kind"], "MEDICAL_READ");
                seen.push(edge["cursor"].as_str().expect("cursor").to_string());
            }
            if connection["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = connection["pageInfo"]["endCursor"]
                .as_str()
                .map(str::to_string);
        }
        let total_reads = entries
            .iter()
            .filter(|e| e["node"]["kind"] == "MEDICAL_READ")
            .count();
        assert_eq!(seen.len(), total_reads);
        let mut unique = seen.clone();
        unique.dedup();
        assert_eq!(unique.len(), seen.len());
        let future = server
            .data(
                Some(&token),
                "query($from: DateTime) { accountJournal(filter: { from: $from }) { edges { node { kind } } } }",
                json!({ "from": (visit_time + Duration::hours(1)).to_rfc3339() }),
            )
            .await;
        assert_eq!(future["accountJournal"]["edges"], json!([]));
        server.stop().await;
    }
);

conformance!(
    production_needs_a_data_key_and_development_keeps_one,
    |test_db| async move {
        // Everything else production needs is there: only the data key is missing.
        let mut config = kabinet_tests::server::production_config(&test_db.url);
        config.data_key = None;
        let refused = kabinet_graphql::Application::build(config.clone()).await;
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("KABINET_DATA_KEY"), "{message}");
        config.set_data_key("not a key");
        let refused = kabinet_graphql::Application::build(config).await;
        assert!(refused.is_err());

        // Development keeps one key per database across restarts.
        for _ in 0..2 {
            let server = Server::start(&test_db, |_| {}).await;
            let (_, token) = session_patient(&server);
            update(&server, &token, valid_profile()).await;
            let (status, _) = upload(&server, &token, "application/pdf", pdf_with("k")).await;
            assert_eq!(status, 201);
            server.stop().await;
        }
        let keys: i64 = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM development_data_keys")
                .fetch_one(pool)
                .await
                .expect("count")
        });
        assert_eq!(keys, 1);
    }
);

conformance!(
    parallel_guesses_get_five_tries_in_all,
    |test_db| async move {
        let notifier = MemoryNotifier::default();
        let server =
            Server::start_with_notifier(&test_db, Some(Arc::new(notifier.clone())), |_| {}).await;
        let (_, token) = session_patient(&server);
        update(&server, &token, valid_profile()).await;
        let keyed = json!({ "idempotencyKey": "send-1" });
        let first = step(&server, &token, "sendIdentityCode", keyed.clone()).await;
        let retry = step(&server, &token, "sendIdentityCode", keyed).await;
        assert_eq!(
            first, retry,
            "a retry under the same key reports the first result"
        );
        assert_eq!(notifier.sent().len(), 1, "a retry sends no second code");
        let code = last_code(&notifier, "+79123456789");
        let wrong_code = if code == "000000" { "111111" } else { "000000" };
        let guesses = (0..12).map(|_| {
            step(
                &server,
                &token,
                "confirmIdentityCode",
                json!({ "code": wrong_code }),
            )
        });
        let answers = futures::future::join_all(guesses).await;
        let count = |code: &str| {
            answers
                .iter()
                .filter(|a| a["userErrors"][0]["code"] == code)
                .count()
        };
        assert_eq!(count("CODE_WRONG"), 5, "{answers:?}");
        assert_eq!(count("CODE_TOO_MANY_ATTEMPTS"), 7, "{answers:?}");
        let right = step(
            &server,
            &token,
            "confirmIdentityCode",
            json!({ "code": code }),
        )
        .await;
        assert_eq!(right["userErrors"][0]["code"], "CODE_TOO_MANY_ATTEMPTS");
        server.stop().await;
    }
);

/// Stands in for the account aggregate of sign-in: its stream type is `account`,
/// and the journal must show its events without knowing them.
mod sign_in_stand_in {
    use cqrs_es::{Aggregate, DomainEvent};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, Default, Serialize, Deserialize)]
    pub struct Account;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub enum AccountEvent {
        SignedIn { ip: String },
        SignInFailed { ip: String },
        SomethingNew { detail: String },
    }

    impl DomainEvent for AccountEvent {
        fn event_type(&self) -> String {
            match self {
                AccountEvent::SignedIn { .. } => "SignedIn",
                AccountEvent::SignInFailed { .. } => "SignInFailed",
                AccountEvent::SomethingNew { .. } => "SomethingNew",
            }
            .to_string()
        }
        fn event_version(&self) -> String {
            "1".to_string()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("never")]
    pub struct Never;

    impl Aggregate for Account {
        const TYPE: &'static str = "account";
        type Command = AccountEvent;
        type Event = AccountEvent;
        type Error = Never;
        type Services = ();

        async fn handle(
            &mut self,
            command: AccountEvent,
            _: &(),
            sink: &cqrs_es::event_sink::EventSink<Self>,
        ) -> Result<(), Never> {
            sink.write(command, self).await;
            Ok(())
        }

        fn apply(&mut self, _: AccountEvent) {}
    }

    impl kabinet_domain::journal::reservations::Reserving for Account {}
}

conformance!(
    sign_ins_and_new_account_events_appear_in_the_journal,
    |test_db| async move {
        use sign_in_stand_in::{Account, AccountEvent};
        let server = Server::start(&test_db, |_| {}).await;
        let account = Uuid::now_v7();
        let commands = kabinet_domain::command::CommandRunner::new(kabinet_domain::Journal::new(
            test_db.db.clone(),
        ));
        for (i, event) in [
            AccountEvent::SignInFailed {
                ip: "10.0.0.1".into(),
            },
            AccountEvent::SignedIn {
                ip: "10.0.0.1".into(),
            },
            AccountEvent::SomethingNew { detail: "x".into() },
        ]
        .into_iter()
        .enumerate()
        {
            let meta = kabinet_tests::metadata_of(account);
            commands
                .execute::<Account>(
                    &account.to_string(),
                    event,
                    &(),
                    &meta,
                    &json!({ "n": i }),
                    kabinet_domain::command::Retry::OnConflict,
                )
                .await
                .expect("commit");
        }
        let token = server.session_token_for(account, Role::Patient, None);
        let query = "{ accountJournal(filter: { kinds: [SIGN_IN, CHANGE] }) { edges { node { kind action labelEn labelRu byOwner } } } }";
        let mut entries = Value::Null;
        for _ in 0..100 {
            let data = server.data(Some(&token), query, json!({})).await;
            entries = data["accountJournal"]["edges"].clone();
            if entries.as_array().is_some_and(|e| e.len() == 3) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let nodes: Vec<(String, String, String)> = entries
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| {
                let n = &e["node"];
                (
                    n["kind"].as_str().unwrap_or_default().to_string(),
                    n["action"].as_str().unwrap_or_default().to_string(),
                    n["labelRu"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        assert_eq!(
            nodes,
            vec![
                (
                    "CHANGE".into(),
                    "SomethingNew".into(),
                    "SomethingNew".into()
                ),
                ("SIGN_IN".into(), "SignedIn".into(), "Вход в систему".into()),
                (
                    "SIGN_IN".into(),
                    "SignInFailed".into(),
                    "Неудачная попытка входа".into()
                ),
            ],
            "{entries}"
        );
        let only_sign_ins = server
            .data(
                Some(&token),
                "{ accountJournal(filter: { kinds: [SIGN_IN] }) { edges { node { action } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            only_sign_ins["accountJournal"]["edges"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        // Nobody else sees them.
        let other = server.token(Role::Patient, None);
        let theirs = server.data(Some(&other), query, json!({})).await;
        assert_eq!(theirs["accountJournal"]["edges"], json!([]));
        server.stop().await;
    }
);
