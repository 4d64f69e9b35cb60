//! Trust in identity verification and the OMS policy (issue 17, items 5, 6, 8, 11, 13),
//! end to end over HTTP on both backends:
//!
//! - a change of the profile data a step checked undoes that step, so the identity is
//!   never verified with data the registry never matched; a repeated SNILS match
//!   writes nothing;
//! - a passport scan counts only after a reviewer approves it in the review queue;
//!   empty or malformed files are refused by structure; only the scans the product
//!   needs are kept, and only reviewers download them;
//! - identity SMS codes are capped per person and per phone number, scans per person,
//!   and uploads are bounded in number and time;
//! - a policy is issued to the verified applicant only, and one starting later is
//!   `ISSUED` until its first day.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use futures::future::join_all;
use kabinet_domain::clock::FixedClock;
use kabinet_domain::notify::{MemoryNotifier, Notifier};
use kabinet_domain::Role;
use kabinet_graphql::startup::Overrides;
use kabinet_tests::clinic::session_patient;
use kabinet_tests::conformance;
use kabinet_tests::delivery::last_code;
use kabinet_tests::identity::upload;
use kabinet_tests::identity::{verify_patient, TestIdentity};
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const UPDATE: &str = "mutation($input: UpdateMyProfileInput!) { updateMyProfile(input: $input) {
    profile { snils surname } userErrors { field message code } } }";

const STATUS: &str = "{ myIdentityVerification { status steps { step done } passportScanReview
    passportScanRejectionReason lastUndoneReason } }";

const QUEUE: &str = "{ passportScansAwaitingReview(first: 10) { edges { node {
    patientId sha256 size format download { path } profile { surname passportNumber } } } } }";

const REVIEW: &str =
    "mutation($input: ReviewPassportScanInput!) { reviewPassportScan(input: $input) {
    result { review rejectionReason identityVerified } userErrors { field code message } } }";

fn profile(snils: &str, phone: &str) -> Value {
    json!({
        "surname": "Смирнов", "firstName": "Олег", "patronymic": "Петрович",
        "birthDate": "1990-04-12", "sex": "MALE", "snils": snils,
        "passportSeries": "45 08", "passportNumber": "123456", "phone": phone,
    })
}

const REGISTRY: &str = r#"[{ "snils": "11223344595", "surname": "Смирнов", "firstName": "Олег",
    "patronymic": "Петрович", "birthDate": "1990-04-12" }]"#;

/// A one-page PDF whose text carries `marker`.
fn pdf(marker: &str) -> Vec<u8> {
    format!(
        "%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
         2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n\
         3 0 obj << /Type /Page /Parent 2 0 R /Title ({marker}) >> endobj\n\
         xref\n0 1\ntrailer << /Root 1 0 R >>\nstartxref\n9\n%%EOF\n"
    )
    .into_bytes()
}

/// A PDF with a catalogue and an empty page tree: the right magic, no page.
fn empty_pdf() -> Vec<u8> {
    b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n\
      2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n\
      xref\n0 1\ntrailer << /Root 1 0 R >>\nstartxref\n9\n%%EOF\n"
        .to_vec()
}

/// A 1×1 PNG (checksums are not checked).
fn png() -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend_from_slice(kind);
        c.extend_from_slice(data);
        c.extend([0, 0, 0, 0]);
        c
    };
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
    bytes.extend(chunk(b"IDAT", &[8, 29, 1, 2, 3]));
    bytes.extend(chunk(b"IEND", &[]));
    bytes
}

async fn update(client: &Client, token: &str, input: Value) -> Value {
    let out = client
        .data(Some(token), UPDATE, json!({ "input": input }))
        .await["updateMyProfile"]
        .clone();
    assert_eq!(out["userErrors"], json!([]), "{out}");
    out
}

async fn load_registry(client: &Client) {
    let admin = client.token(Role::Admin, None);
    let entries: Value = serde_json::from_str(REGISTRY).expect("registry");
    let out = client
        .data(
            Some(&admin),
            "mutation($input: LoadSnilsRegistryInput!) { loadSnilsRegistry(input: $input) { loaded } }",
            json!({ "input": { "entries": entries } }),
        )
        .await;
    assert_eq!(out["loadSnilsRegistry"]["loaded"], 1, "{out}");
}

async fn step(client: &Client, token: &str, mutation: &str, input: Value) -> Value {
    let input_type = if mutation == "confirmIdentityCode" {
        "ConfirmIdentityCodeInput!"
    } else {
        "IdentityStepInput"
    };
    let query = format!(
        "mutation($input: {input_type}) {{ {mutation}(input: $input) {{
            verification {{ status }} userErrors {{ field message code }} }} }}"
    );
    client
        .data(Some(token), &query, json!({ "input": input }))
        .await[mutation]
        .clone()
}

async fn status(client: &Client, token: &str) -> Value {
    client.data(Some(token), STATUS, json!({})).await["myIdentityVerification"].clone()
}

fn step_done(status: &Value, step: &str) -> bool {
    status["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .any(|s| s["step"] == step && s["done"] == true)
}

async fn confirm_phone(client: &Client, notifier: &MemoryNotifier, token: &str, phone: &str) {
    let sent = step(client, token, "sendIdentityCode", json!({})).await;
    assert_eq!(sent["userErrors"], json!([]), "{sent}");
    let code = last_code(notifier, phone);
    let confirmed = step(
        client,
        token,
        "confirmIdentityCode",
        json!({ "code": code }),
    )
    .await;
    assert_eq!(confirmed["userErrors"], json!([]), "{confirmed}");
}

async fn review(
    client: &Client,
    token: &str,
    patient: Uuid,
    sha256: &str,
    decision: &str,
    reason: Option<&str>,
) -> Value {
    let patient_id = kabinet_graphql::schema::ids::encode("Account", patient);
    client
        .data(
            Some(token),
            REVIEW,
            json!({ "input": { "patientId": patient_id.as_str(), "sha256": sha256,
                               "decision": decision, "reason": reason } }),
        )
        .await["reviewPassportScan"]
        .clone()
}

async fn count(test_db: &kabinet_tests::TestDb, sql: &str, patient: Uuid) -> i64 {
    let patient = patient.to_string();
    kabinet_domain::on_db!(&test_db.db, pool => {
        sqlx::query_scalar::<_, i64>(sql).bind(&patient).fetch_one(pool).await.expect("count")
    })
}

const SNILS_MATCHES: &str =
    "SELECT count(*) FROM events WHERE aggregate_type = 'identity_verification' \
     AND aggregate_id = $1 AND event_type = 'SnilsMatched'";

async fn start(test_db: &kabinet_tests::TestDb, notifier: Arc<MemoryNotifier>) -> Server {
    Server::start_with_notifier(test_db, Some(notifier as Arc<dyn Notifier>), |_| {}).await
}

conformance!(
    changed_profile_data_undoes_the_steps_that_checked_it,
    |test_db| async move {
        let notifier = Arc::new(MemoryNotifier::default());
        let server = start(&test_db, notifier.clone()).await;
        load_registry(&server).await;
        let (patient, token) = session_patient(&server);
        update(&server, &token, profile("112-233-445 95", "+79123456789")).await;

        let matched = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(matched["userErrors"], json!([]), "{matched}");
        // Matching the same data again writes no second event.
        let again = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(again["userErrors"], json!([]), "{again}");
        assert_eq!(count(&test_db, SNILS_MATCHES, patient).await, 1);

        // Another person's SNILS, surname and birth date: the registry never saw them.
        update(
            &server,
            &token,
            json!({ "snils": kabinet_tests::identity::snils_number(2), "surname": "Кузнецов", "birthDate": "1985-01-01" }),
        )
        .await;
        let now = status(&server, &token).await;
        assert!(!step_done(&now, "SNILS"), "{now}");
        assert!(
            now["lastUndoneReason"]
                .as_str()
                .is_some_and(|r| r.contains("SNILS")),
            "{now}"
        );

        // Every other step, including an approved scan: still not verified.
        let (code, body) = upload(&server, &token, "application/pdf", pdf("scan")).await;
        assert_eq!(code, 201, "{body}");
        confirm_phone(&server, &notifier, &token, "+79123456789").await;
        let registrar = server.token(Role::Registrar, Some(Uuid::now_v7()));
        let sha = body["sha256"].as_str().expect("sha256");
        let approved = review(&server, &registrar, patient, sha, "APPROVE", None).await;
        assert_eq!(approved["userErrors"], json!([]), "{approved}");
        assert_eq!(approved["result"]["identityVerified"], false, "{approved}");
        let now = status(&server, &token).await;
        assert_eq!(now["status"], "IN_PROGRESS", "{now}");
        let refused = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(
            refused["userErrors"][0]["code"], "SNILS_NOT_MATCHED",
            "{refused}"
        );

        // Back to the matched data: the SNILS step completes the verification.
        update(
            &server,
            &token,
            json!({ "snils": "112-233-445 95", "surname": "Смирнов", "birthDate": "1990-04-12" }),
        )
        .await;
        let now = status(&server, &token).await;
        // The scan went with the changed name: it was undone too and must be reviewed again.
        assert_eq!(now["passportScanReview"], "NONE", "{now}");
        let (code, body) = upload(&server, &token, "image/png", png()).await;
        assert_eq!(code, 201, "{body}");
        let sha = body["sha256"].as_str().expect("sha256");
        let matched = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(
            matched["verification"]["status"], "IN_PROGRESS",
            "{matched}"
        );
        let approved = review(&server, &registrar, patient, sha, "APPROVE", None).await;
        assert_eq!(approved["result"]["identityVerified"], true, "{approved}");

        // A new phone undoes the phone step of a patient still in progress.
        let (other, other_token) = session_patient(&server);
        update(
            &server,
            &other_token,
            profile("112-233-445 95", "+79120000001"),
        )
        .await;
        confirm_phone(&server, &notifier, &other_token, "+79120000001").await;
        update(&server, &other_token, json!({ "phone": "+79120000002" })).await;
        let now = status(&server, &other_token).await;
        assert!(!step_done(&now, "PHONE"), "{now}");
        let _ = other;
        server.stop().await;
    }
);

conformance!(
    a_scan_counts_only_once_a_reviewer_approves_it,
    |test_db| async move {
        let notifier = Arc::new(MemoryNotifier::default());
        let server = start(&test_db, notifier.clone()).await;
        load_registry(&server).await;
        let (patient, token) = session_patient(&server);
        update(&server, &token, profile("112-233-445 95", "+79123456789")).await;
        let matched = step(&server, &token, "verifySnils", json!({})).await;
        assert_eq!(matched["userErrors"], json!([]), "{matched}");
        confirm_phone(&server, &notifier, &token, "+79123456789").await;

        // The right magic bytes are not enough.
        let (code, body) = upload(&server, &token, "application/pdf", empty_pdf()).await;
        assert_eq!(
            (code, body["error"]["code"].clone()),
            (422, json!("SCAN_PDF_WITHOUT_PAGES")),
            "{body}"
        );
        let (code, body) = upload(
            &server,
            &token,
            "image/jpeg",
            vec![0xFF, 0xD8, 0xFF, 0xE0, 0, 2, 0xFF, 0xD9],
        )
        .await;
        assert_eq!(
            (code, body["error"]["code"].clone()),
            (422, json!("SCAN_MALFORMED_JPEG")),
            "{body}"
        );

        // A real scan waits for review: the other two steps do not make it verified.
        let first = pdf("first");
        let (code, body) = upload(&server, &token, "application/pdf", first.clone()).await;
        assert_eq!(code, 201, "{body}");
        assert_eq!(body["review"], "AWAITING_REVIEW");
        let first_sha = body["sha256"].as_str().expect("sha").to_string();
        let now = status(&server, &token).await;
        assert_eq!(now["status"], "IN_PROGRESS", "{now}");
        assert_eq!(now["passportScanReview"], "AWAITING_REVIEW", "{now}");
        assert!(!step_done(&now, "PASSPORT_SCAN"), "{now}");

        // Only reviewers see the queue and the scan.
        let forbidden = server.graphql(Some(&token), QUEUE, json!({})).await;
        assert_eq!(
            forbidden["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{forbidden}"
        );
        let registrar = server.token(Role::Registrar, Some(Uuid::now_v7()));
        let queue = server.data(Some(&registrar), QUEUE, json!({})).await;
        let edges = queue["passportScansAwaitingReview"]["edges"]
            .as_array()
            .expect("edges")
            .clone();
        assert_eq!(edges.len(), 1, "{queue}");
        let item = &edges[0]["node"];
        assert_eq!(item["sha256"], first_sha.as_str());
        assert_eq!(item["profile"]["surname"], "Смирнов");
        assert_eq!(item["profile"]["passportNumber"], "123456");
        let path = item["download"]["path"].as_str().expect("path").to_string();
        let get = |token: String| {
            let http = server.http.clone();
            let url = format!("{}{path}", server.base);
            async move {
                let response = http.get(url).bearer_auth(token).send().await.expect("get");
                (
                    response.status().as_u16(),
                    response.bytes().await.expect("bytes").to_vec(),
                )
            }
        };
        assert_eq!(
            get(token.clone()).await.0,
            403,
            "the patient does not download it here"
        );
        assert_eq!(
            get(server.token(Role::Doctor, Some(Uuid::now_v7())))
                .await
                .0,
            403
        );
        let (code, bytes) = get(registrar.clone()).await;
        assert_eq!(code, 200);
        assert_eq!(bytes, first, "the reviewer gets the scan itself");

        // A rejection: the patient sees why, and the scan is gone.
        let no_reason = review(&server, &registrar, patient, &first_sha, "REJECT", None).await;
        assert_eq!(
            no_reason["userErrors"][0]["code"], "REASON_REQUIRED",
            "{no_reason}"
        );
        let rejected = review(
            &server,
            &registrar,
            patient,
            &first_sha,
            "REJECT",
            Some("Скан нечитаем"),
        )
        .await;
        assert_eq!(rejected["result"]["review"], "REJECTED", "{rejected}");
        let now = status(&server, &token).await;
        assert_eq!(now["passportScanReview"], "REJECTED", "{now}");
        assert_eq!(now["passportScanRejectionReason"], "Скан нечитаем", "{now}");
        assert_eq!(get(registrar.clone()).await.0, 404);

        // Storage: of many uploads only the latest awaiting review is kept.
        let mut last = String::new();
        for i in 0..3 {
            let (code, body) = upload(
                &server,
                &token,
                "application/pdf",
                pdf(&format!("again {i}")),
            )
            .await;
            assert_eq!(code, 201, "{body}");
            last = body["sha256"].as_str().expect("sha").to_string();
        }
        let kept = count(
            &test_db,
            "SELECT count(*) FROM passport_scans WHERE patient_id = $1",
            patient,
        )
        .await;
        assert_eq!(kept, 1);
        let stale = review(&server, &registrar, patient, &first_sha, "APPROVE", None).await;
        assert_eq!(stale["userErrors"][0]["code"], "NOT_FOUND", "{stale}");
        let admin = server.token(Role::Admin, None);
        let approved = review(&server, &admin, patient, &last, "APPROVE", None).await;
        assert_eq!(approved["result"]["identityVerified"], true, "{approved}");
        assert_eq!(status(&server, &token).await["status"], "VERIFIED");
        let queue = server.data(Some(&admin), QUEUE, json!({})).await;
        assert_eq!(
            queue["passportScansAwaitingReview"]["edges"],
            json!([]),
            "{queue}"
        );
        server.stop().await;
    }
);

conformance!(
    identity_codes_are_capped_per_person_and_per_number,
    |test_db| async move {
        let notifier = Arc::new(MemoryNotifier::default());
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let overrides = Overrides {
            clock: Some(clock.clone()),
            notifier: Some(notifier.clone() as Arc<dyn Notifier>),
            ..Overrides::default()
        };
        let server = Server::start_with(&test_db, overrides, |c| {
            c.identity_limits.identity_codes_per_hour = 3;
            c.identity_limits.identity_codes_per_day = 4;
            c.identity_limits.identity_codes_per_number_per_hour = 2;
            c.identity_limits.identity_codes_per_number_per_day = 10;
        })
        .await;
        let tick = || clock.set(kabinet_domain::clock::Clock::now(&*clock) + Duration::seconds(61));
        let send = |token: String| {
            let server = &server;
            async move { step(server, &token, "sendIdentityCode", json!({})).await }
        };
        let (_, token) = session_patient(&server);
        update(&server, &token, profile("112-233-445 95", "+79120000001")).await;

        // Two codes to one number, then that number's cap.
        assert_eq!(send(token.clone()).await["userErrors"], json!([]));
        tick();
        assert_eq!(send(token.clone()).await["userErrors"], json!([]));
        tick();
        let capped = send(token.clone()).await;
        assert_eq!(
            capped["userErrors"][0]["code"], "CODE_LIMIT_REACHED",
            "{capped}"
        );
        assert!(
            capped["userErrors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("phone number") && m.contains("try again after")),
            "{capped}"
        );

        // Another patient cannot send to that number either.
        let (_, second) = session_patient(&server);
        update(&server, &second, profile("112-233-445 95", "+79120000001")).await;
        let capped = send(second.clone()).await;
        assert_eq!(
            capped["userErrors"][0]["code"], "CODE_LIMIT_REACHED",
            "{capped}"
        );

        // Changing the profile phone does not escape the person's cap (three tries
        // an hour: the refused one counted too).
        update(&server, &token, json!({ "phone": "+79120000002" })).await;
        tick();
        let capped = send(token.clone()).await;
        assert_eq!(
            capped["userErrors"][0]["code"], "CODE_LIMIT_REACHED",
            "{capped}"
        );
        assert!(
            capped["userErrors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("an hour")),
            "{capped}"
        );
        assert_eq!(notifier.sent().len(), 2);

        // An hour later one more, then the daily cap.
        clock.set(kabinet_domain::clock::Clock::now(&*clock) + Duration::minutes(61));
        assert_eq!(send(token.clone()).await["userErrors"], json!([]));
        tick();
        let capped = send(token.clone()).await;
        assert!(
            capped["userErrors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("a day")),
            "{capped}"
        );

        // Concurrent requests of a fresh patient send exactly one code.
        let (_, third) = session_patient(&server);
        update(&server, &third, profile("112-233-445 95", "+79120000009")).await;
        let results = join_all((0..20).map(|_| send(third.clone()))).await;
        let ok = results
            .iter()
            .filter(|r| r["userErrors"] == json!([]))
            .count();
        assert_eq!(ok, 1, "{results:?}");
        assert_eq!(
            notifier
                .sent()
                .iter()
                .filter(|m| m.to == "+79120000009")
                .count(),
            1
        );
        server.stop().await;
    }
);

/// Opens a connection and sends an upload's head and part of its body, then stalls.
async fn stalled_upload(base: &str, token: &str) -> tokio::net::TcpStream {
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let head = format!(
        "POST /identity/passport-scan HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/pdf\r\nContent-Length: 100000\r\n\r\n%PDF-1.4\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream
}

conformance!(
    scans_are_capped_per_person_and_uploads_are_bounded,
    |test_db| async move {
        let server = Server::start(&test_db, |c| {
            c.identity_limits.passport_scans_per_hour = 2;
            c.identity_limits.scan_upload_concurrency = 2;
            c.identity_limits.scan_upload_timeout_ms = 1500;
        })
        .await;
        let (_, token) = session_patient(&server);
        update(&server, &token, profile("112-233-445 95", "+79123456789")).await;
        for i in 0..2 {
            let (code, body) =
                upload(&server, &token, "application/pdf", pdf(&format!("n{i}"))).await;
            assert_eq!(code, 201, "{body}");
        }
        let response = server
            .http
            .post(format!("{}/identity/passport-scan", server.base))
            .bearer_auth(&token)
            .header("content-type", "application/pdf")
            .body(pdf("third"))
            .send()
            .await
            .expect("upload");
        assert_eq!(response.status().as_u16(), 429);
        let retry: i64 = response.headers()["retry-after"]
            .to_str()
            .expect("retry-after")
            .parse()
            .expect("seconds");
        assert!(retry > 0 && retry <= 3600, "{retry}");
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["error"]["code"], "SCAN_LIMIT_REACHED", "{body}");

        // Two stalled uploads take every place: a third is turned away at once.
        let (_, other) = session_patient(&server);
        update(&server, &other, profile("112-233-445 95", "+79123456780")).await;
        let mut stalled = vec![
            stalled_upload(&server.base, &other).await,
            stalled_upload(&server.base, &other).await,
        ];
        tokio::time::sleep(StdDuration::from_millis(300)).await;
        let (code, body) = upload(&server, &other, "application/pdf", pdf("busy")).await;
        assert_eq!(
            (code, body["error"]["code"].clone()),
            (503, json!("UPLOADS_BUSY")),
            "{body}"
        );

        // The stalled ones are answered 408 within the read timeout, and their places freed.
        for stream in stalled.iter_mut() {
            let mut answer = vec![0u8; 1024];
            let n = tokio::time::timeout(StdDuration::from_secs(10), stream.read(&mut answer))
                .await
                .expect("answered within the timeout")
                .expect("read");
            let text = String::from_utf8_lossy(&answer[..n]).to_string();
            assert!(text.starts_with("HTTP/1.1 408"), "{text}");
            assert!(text.contains("SCAN_UPLOAD_TIMEOUT"), "{text}");
        }
        drop(stalled);
        let (code, body) = upload(&server, &other, "application/pdf", pdf("after")).await;
        assert_eq!(code, 201, "{body}");
        server.stop().await;
    }
);

const POLICY: &str = "id status statusLabelRu holderName snils validFrom";

async fn apply(client: &Client, token: &str, input: Value) -> Value {
    let query = format!(
        "mutation($input: ApplyForPolicyInput!) {{ applyForPolicy(input: $input) {{
            policy {{ {POLICY} }} userErrors {{ field code message }} }} }}"
    );
    client
        .data(Some(token), &query, json!({ "input": input }))
        .await["applyForPolicy"]
        .clone()
}

async fn issue(client: &Client, id: &str) -> Value {
    let admin = client.token(Role::Admin, None);
    let query = format!(
        "mutation($input: IssuePolicyInput!) {{ issuePolicy(input: $input) {{
            policy {{ {POLICY} }} userErrors {{ field code message }} }} }}"
    );
    client
        .data(Some(&admin), &query, json!({ "input": { "policyId": id } }))
        .await["issuePolicy"]
        .clone()
}

fn terms(from: chrono::NaiveDate) -> Value {
    json!({ "kind": "FEDERAL", "validFrom": from.to_string(),
            "validUntil": (from + Duration::days(365)).to_string(), "consent": true })
}

fn with(mut base: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().expect("object") {
        base[k] = v.clone();
    }
    base
}

conformance!(
    a_policy_is_issued_only_to_the_verified_applicant,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let today = Utc::now().date_naive();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let (alice_id, bob_id) = (TestIdentity::numbered(1), TestIdentity::numbered(2));
        verify_patient(&test_db.commands(), alice, &alice_id).await;
        verify_patient(&test_db.commands(), bob, &bob_id).await;
        let alice_token = server.token_for(alice, Role::Patient, None);
        let bob_token = server.token_for(bob, Role::Patient, None);

        // Alice cannot apply as Bob.
        let as_bob = apply(
            &server,
            &alice_token,
            with(terms(today), json!({ "surname": "Иванова", "snils": bob_id.snils,
                "passportSeries": bob_id.passport_series, "passportNumber": bob_id.passport_number })),
        )
        .await;
        let mut refused: Vec<(String, String)> = as_bob["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| {
                (
                    e["field"][1].as_str().unwrap_or("").to_string(),
                    e["code"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        refused.sort();
        assert_eq!(
            refused,
            vec![
                (
                    "passportNumber".to_string(),
                    "IDENTITY_MISMATCH".to_string()
                ),
                ("snils".to_string(), "IDENTITY_MISMATCH".to_string())
            ],
            "{as_bob}"
        );
        assert_eq!(as_bob["policy"], Value::Null);

        // Her own application needs no identity fields: the profile's are taken.
        let own = apply(&server, &alice_token, terms(today)).await;
        assert_eq!(own["userErrors"], json!([]), "{own}");
        let digits: String = own["policy"]["snils"]
            .as_str()
            .expect("snils")
            .chars()
            .filter(char::is_ascii_digit)
            .collect();
        assert_eq!(digits, alice_id.snils);
        assert_eq!(own["policy"]["holderName"], "Иванова Мария Петровна");
        let issued = issue(&server, own["policy"]["id"].as_str().expect("id")).await;
        assert_eq!(issued["policy"]["status"], "ACTIVE", "{issued}");
        let twice = apply(&server, &alice_token, terms(today)).await;
        assert_eq!(
            twice["userErrors"][0]["code"], "POLICY_ALREADY_ACTIVE",
            "{twice}"
        );

        // Bob is not locked out by anyone else's application.
        let bobs = apply(&server, &bob_token, terms(today)).await;
        assert_eq!(bobs["userErrors"], json!([]), "{bobs}");

        // Without a verified identity there is no application at all.
        let stranger = server.token(Role::Patient, None);
        let unverified = apply(&server, &stranger, with(terms(today), json!({
            "surname": "Иванова", "firstName": "Мария", "birthDate": "1990-04-12",
            "snils": TestIdentity::numbered(3).snils, "passportSeries": "4508", "passportNumber": "000003" }))).await;
        assert_eq!(
            unverified["userErrors"][0]["code"], "IDENTITY_NOT_VERIFIED",
            "{unverified}"
        );
        server.stop().await;
    }
);

conformance!(
    a_policy_starting_later_is_issued_and_active_from_its_first_day,
    |test_db| async move {
        let clock = Arc::new(FixedClock::new(Utc::now()));
        let server = Server::start_with_clock(&test_db, clock.clone(), |_| {}).await;
        let patient = Uuid::now_v7();
        verify_patient(&test_db.commands(), patient, &TestIdentity::numbered(4)).await;
        let token = server.token_for(patient, Role::Patient, None);
        let today = kabinet_domain::clock::Clock::now(&*clock).date_naive();
        let start = today + Duration::days(10);
        let applied = apply(&server, &token, terms(start)).await;
        assert_eq!(applied["userErrors"], json!([]), "{applied}");
        let issued = issue(&server, applied["policy"]["id"].as_str().expect("id")).await;
        assert_eq!(issued["policy"]["status"], "ISSUED", "{issued}");
        let label = format!("Оформлен, действует с {}", start.format("%d.%m.%Y"));
        assert_eq!(issued["policy"]["statusLabelRu"], label.as_str());
        let active = server
            .data(
                Some(&token),
                "{ myPolicies(status: ACTIVE) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(active["myPolicies"]["edges"], json!([]), "{active}");

        clock.set(kabinet_domain::clock::Clock::now(&*clock) + Duration::days(10));
        let now = server
            .data(Some(&token), "{ myPolicy { status } }", json!({}))
            .await;
        assert_eq!(now["myPolicy"]["status"], "ACTIVE", "{now}");
        let active = server
            .data(
                Some(&token),
                "{ myPolicies(status: ACTIVE) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            active["myPolicies"]["edges"].as_array().map(Vec::len),
            Some(1),
            "{active}"
        );
        server.stop().await;
    }
);
