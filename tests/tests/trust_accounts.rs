//! Trust in accounts and sign-in, end to end over HTTP on both backends:
//! attempts are counted before passwords are checked, bursts on existing and
//! unknown logins look alike, password hashing is bounded, code sends keep
//! their limits under concurrency, a failed credentials write never locks a
//! login, common passwords and malformed contacts and names are refused, and
//! account messages and journal labels are Russian and truthful.

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use kabinet_domain::clock::{Clock, FixedClock};
use kabinet_domain::Role;
use kabinet_tests::accounts::{
    error_codes, register, unique_phone, use_sms_gateway, CONFIRM, PASSWORD, REFRESH, SIGN_IN,
    START,
};
use kabinet_tests::delivery::{six_digits, SmsReceiver};
use kabinet_tests::server::{Client, Server};
use kabinet_tests::{conformance, TestBackend, TestDb};
use serde_json::{json, Value};
use uuid::Uuid;

const RECOVER: &str =
    "mutation($input: RequestPasswordRecoveryInput!) { requestPasswordRecovery(input: $input) {
    delivery { channel } userErrors { code } } }";

/// Posts `query` as if from client `address` (the server trusts its proxy).
async fn from(client: &Client, address: &str, query: &str, variables: Value) -> Value {
    let body = json!({ "query": query, "variables": variables });
    let response = client
        .http
        .post(format!("{}/graphql", client.base))
        .header("x-forwarded-for", address)
        .json(&body)
        .send()
        .await
        .expect("post");
    response.json().await.expect("json")
}

/// The account id behind the global id in a registration payload.
fn account_id(registered: &Value) -> Uuid {
    let global = registered["account"]["id"].as_str().expect("id");
    kabinet_graphql::schema::ids::decode(global)
        .map(|(_, id)| id)
        .expect("a global id")
}

/// How many of `answers` carry each error code, sorted.
fn tally(answers: &[Vec<String>]) -> Vec<(String, usize)> {
    let mut counts = std::collections::BTreeMap::new();
    for codes in answers {
        let key = if codes.is_empty() {
            "OK".to_string()
        } else {
            codes.join(",")
        };
        *counts.entry(key).or_insert(0) += 1;
    }
    counts.into_iter().collect()
}

/// Twenty wrong passwords at once on `login`, each from `address`.
async fn burst(server: &Server, login: &str, address: &str, n: usize) -> Vec<Vec<String>> {
    join_all((0..n).map(|i| {
        let client = server.client.clone();
        let login = login.to_string();
        let address = address.to_string();
        async move {
            let r = from(
                &client,
                &address,
                SIGN_IN,
                json!({ "input": { "login": login, "password": format!("wrong-guess-{i:03}") } }),
            )
            .await;
            assert!(r.get("errors").is_none(), "{r}");
            error_codes(&r["data"]["signIn"])
        }
    }))
    .await
}

async fn sign_in_failures(test_db: &TestDb, account: &str) -> i64 {
    kabinet_domain::on_db!(&test_db.db, pool => {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM events WHERE event_type = 'SignInFailed' AND aggregate_id = $1",
        )
        .bind(account)
        .fetch_one(pool)
        .await
        .expect("count")
    })
}

conformance!(
    parallel_guesses_are_counted_before_they_are_checked_and_reveal_no_login,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        // The clock stands still, so a back-off never runs out during the test.
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c);
            c.trusted_proxy = true;
        })
        .await;
        let known = unique_phone();
        let registered = register(&server, &sms, &known).await;
        let account = account_id(&registered).to_string();

        // Twenty at once from one address: only the three free failures and the
        // one that starts the back-off are checked; no answer is a conflict.
        let existing = burst(&server, &known, "198.51.100.1", 20).await;
        let unknown = burst(&server, &unique_phone(), "198.51.100.2", 20).await;
        let expected = vec![
            ("INVALID_CREDENTIALS".to_string(), 4),
            ("TOO_MANY_ATTEMPTS".to_string(), 16),
        ];
        assert_eq!(tally(&existing), expected, "existing login: {existing:?}");
        assert_eq!(tally(&unknown), expected, "unknown login: {unknown:?}");
        // The right password now waits like any other guess.
        let right = from(
            &server,
            "198.51.100.3",
            SIGN_IN,
            json!({ "input": { "login": known, "password": PASSWORD } }),
        )
        .await;
        assert_eq!(error_codes(&right["data"]["signIn"]), ["TOO_MANY_ATTEMPTS"]);

        // Sixty at once from sixty addresses on another login: the same four.
        let other = unique_phone();
        register(&server, &sms, &other).await;
        let spread = join_all((0..60).map(|i| {
            let client = server.client.clone();
            let other = other.clone();
            async move {
                let r = from(
                    &client,
                    &format!("203.0.113.{}", i + 1),
                    SIGN_IN,
                    json!({ "input": { "login": other, "password": format!("wrong-guess-{i:03}") } }),
                )
                .await;
                error_codes(&r["data"]["signIn"])
            }
        }))
        .await;
        assert_eq!(
            tally(&spread),
            vec![
                ("INVALID_CREDENTIALS".to_string(), 4),
                ("TOO_MANY_ATTEMPTS".to_string(), 56)
            ]
        );

        // Every checked failure reaches the account's stream, written aside.
        let mut recorded = 0;
        for _ in 0..100 {
            recorded = sign_in_failures(&test_db, &account).await;
            if recorded == 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(recorded, 4);

        // After the back-off the owner signs in.
        clock.set(clock.now() + Duration::seconds(61));
        let right = from(
            &server,
            "198.51.100.4",
            SIGN_IN,
            json!({ "input": { "login": known, "password": PASSWORD } }),
        )
        .await;
        assert_eq!(error_codes(&right["data"]["signIn"]), Vec::<String>::new());
        server.stop().await;
    }
);

/// A memory figure of this process from `/proc/self/status`, in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a memory figure")
}

fn peak_resident_kib() -> u64 {
    memory_kib("VmHWM:")
}

/// Two hundred anonymous sign-ins at once against a server with two hashing
/// slots: memory stays within a small budget and the overflow is told to wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_hashing_is_bounded_and_the_overflow_is_busy() {
    let Some(test_db) = TestDb::fresh(TestBackend::Sqlite).await else {
        return;
    };
    let server = Server::start(&test_db, |c| {
        c.trusted_proxy = true;
        c.password_hashing.password_hashing_slots = Some(2);
        c.password_hashing.password_hashing_wait_ms = 300;
    })
    .await;
    let before = peak_resident_kib();
    let resident_before = memory_kib("VmRSS:");
    let answers = join_all((0..200).map(|i| {
        let client = server.client.clone();
        async move {
            let r = from(
                &client,
                &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                SIGN_IN,
                json!({ "input": { "login": unique_phone(), "password": "some-guess-123" } }),
            )
            .await;
            let codes = error_codes(&r["data"]["signIn"]);
            if codes == ["BUSY"] {
                let message = r["data"]["signIn"]["userErrors"][0]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                assert!(message.contains("try again in"), "{message}");
            }
            codes
        }
    }))
    .await;
    let grown_mib = (peak_resident_kib().saturating_sub(before)) / 1024;
    // What stays after the burst: the slots' working memory is kept for reuse
    // (2 × 19 MiB), never one copy per thread that ever hashed.
    let kept_mib = memory_kib("VmRSS:").saturating_sub(resident_before) / 1024;
    println!("peak grew by {grown_mib} MiB, {kept_mib} MiB kept after the burst");
    assert!(kept_mib < 120, "{kept_mib} MiB stayed after the burst");
    let counts = tally(&answers);
    // Two slots take 2 × 19 MiB; the rest is the margin of a busy test process
    // (unbounded, the same burst grows it by well over a gibibyte).
    assert!(grown_mib < 400, "peak memory grew by {grown_mib} MiB");
    assert!(
        counts
            .iter()
            .all(|(code, _)| code == "INVALID_CREDENTIALS" || code == "BUSY"),
        "{counts:?}"
    );
    assert!(
        counts.iter().any(|(code, _)| code == "BUSY"),
        "some are turned away: {counts:?}"
    );
    assert!(
        counts.iter().any(|(code, _)| code == "INVALID_CREDENTIALS"),
        "some are checked: {counts:?}"
    );
    server.stop().await;
    test_db.cleanup().await;
}

conformance!(
    concurrent_code_requests_keep_the_send_limits,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c);
            c.trusted_proxy = true;
        })
        .await;
        let at_once = |query: &'static str, contact: String, n: usize, address: &'static str| {
            let client = server.client.clone();
            async move {
                join_all((0..n).map(|_| {
                    let client = client.clone();
                    let contact = contact.clone();
                    async move {
                        let r = from(
                            &client,
                            address,
                            query,
                            json!({ "input": { "contact": contact } }),
                        )
                        .await;
                        let data = r["data"].as_object().expect("data");
                        error_codes(data.values().next().expect("payload"))
                    }
                }))
                .await
            }
        };
        // Registration: one code, however many ask at once.
        let contact = unique_phone();
        let answers = at_once(START, contact.clone(), 25, "192.0.2.1").await;
        assert_eq!(
            tally(&answers),
            vec![("OK".to_string(), 1), ("RESEND_TOO_SOON".to_string(), 24)]
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(sms.messages_to(&contact).len(), 1);

        // Recovery of a registered login: one code as well.
        let owner = unique_phone();
        register(&server, &sms, &owner).await;
        let sent_before = sms.messages_to(&owner).len();
        clock.set(clock.now() + Duration::seconds(61));
        let answers = at_once(RECOVER, owner.clone(), 25, "192.0.2.2").await;
        assert_eq!(
            tally(&answers),
            vec![("OK".to_string(), 1), ("RESEND_TOO_SOON".to_string(), 24)]
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(sms.messages_to(&owner).len(), sent_before + 1);

        // One address asking for codes to many contacts at once: at most the
        // thirty free sends and the one that starts the back-off.
        let answers = join_all((0..45).map(|_| {
            let client = server.client.clone();
            async move {
                let r = from(
                    &client,
                    "192.0.2.3",
                    START,
                    json!({ "input": { "contact": unique_phone() } }),
                )
                .await;
                error_codes(&r["data"]["startRegistration"])
            }
        }))
        .await;
        assert_eq!(
            tally(&answers),
            vec![
                ("OK".to_string(), 31),
                ("TOO_MANY_CODES_REQUESTED".to_string(), 14)
            ]
        );

        // Sign-in codes to one login: ten free, one starting the back-off, then a pause.
        let mut sign_ins = Vec::new();
        for i in 0..12 {
            let r = from(
                &server,
                &format!("192.0.2.{}", 10 + i),
                SIGN_IN,
                json!({ "input": { "login": owner, "password": PASSWORD } }),
            )
            .await;
            sign_ins.push(error_codes(&r["data"]["signIn"]));
        }
        assert_eq!(
            tally(&sign_ins),
            vec![("OK".to_string(), 11), ("RESEND_LIMIT".to_string(), 1)]
        );
        server.stop().await;
    }
);

/// Makes every write of credentials fail, as a crash or a full disk would.
async fn break_credentials(test_db: &TestDb, broken: bool) {
    let statements: &[&str] = match (test_db.backend, broken) {
        (TestBackend::Sqlite, true) => &[
            "CREATE TRIGGER injected_fault BEFORE INSERT ON account_credentials \
             BEGIN SELECT RAISE(ABORT, 'injected fault'); END",
        ],
        (TestBackend::Sqlite, false) => &["DROP TRIGGER injected_fault"],
        (TestBackend::Postgres, true) => &[
            "ALTER TABLE account_credentials ADD CONSTRAINT injected_fault \
             CHECK (account_id = 'none') NOT VALID",
        ],
        (TestBackend::Postgres, false) => {
            &["ALTER TABLE account_credentials DROP CONSTRAINT injected_fault"]
        }
    };
    for sql in statements {
        kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query(sql).execute(pool).await.expect("fault injection");
        });
    }
}

conformance!(
    a_failed_credentials_write_never_locks_the_login,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c)
        })
        .await;

        // A patient whose credentials cannot be written.
        let contact = unique_phone();
        let started = server
            .data(None, START, json!({ "input": { "contact": contact } }))
            .await;
        assert_eq!(
            error_codes(&started["startRegistration"]),
            Vec::<String>::new()
        );
        let code = sms.last_code_to(&contact).await;
        break_credentials(&test_db, true).await;
        let failed = server
            .graphql(
                None,
                CONFIRM,
                json!({ "input": { "contact": contact, "code": code, "password": PASSWORD, "acceptTerms": true } }),
            )
            .await;
        assert!(
            failed["data"]["confirmRegistration"]["tokens"].is_null(),
            "{failed}"
        );
        break_credentials(&test_db, false).await;
        // The login stayed free: a new code arrives (not "you have an account")
        // and the registration completes.
        clock.set(clock.now() + Duration::seconds(61));
        register(&server, &sms, &contact).await;
        let last = sms.messages_to(&contact).last().cloned().expect("sms");
        assert!(last.contains("Код для регистрации"), "{last}");
        let signed = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": contact, "password": PASSWORD } }),
            )
            .await;
        assert_eq!(
            error_codes(&signed["signIn"]),
            Vec::<String>::new(),
            "{signed}"
        );

        // A staff account retried under its idempotency key gets its invitation.
        const CREATE: &str =
            "mutation($input: CreateStaffAccountInput!) { createStaffAccount(input: $input) {
            account { id } userErrors { code } } }";
        let admin = server.token(Role::Admin, None);
        let analyst = unique_phone();
        let input = json!({ "input": { "role": "ANALYST", "login": analyst, "idempotencyKey": "staff-fault-1" } });
        break_credentials(&test_db, true).await;
        let failed = server.graphql(Some(&admin), CREATE, input.clone()).await;
        assert!(
            failed["data"]["createStaffAccount"]["account"].is_null(),
            "{failed}"
        );
        break_credentials(&test_db, false).await;
        let retried = server.data(Some(&admin), CREATE, input).await;
        assert_eq!(
            error_codes(&retried["createStaffAccount"]),
            Vec::<String>::new()
        );
        let invitation = sms.nth_message_to(&analyst, 1).await;
        assert!(
            invitation.contains("служебная учётная запись"),
            "{invitation}"
        );
        let code = six_digits(&invitation).expect("code");
        const RESET: &str = "mutation($input: ResetPasswordInput!) { resetPassword(input: $input) {
            passwordChanged userErrors { code } } }";
        let reset = server
            .data(
                None,
                RESET,
                json!({ "input": { "contact": analyst, "code": code, "newPassword": "осенний-ветер-35" } }),
            )
            .await;
        assert_eq!(reset["resetPassword"]["passwordChanged"], true, "{reset}");

        // An account an older server left without credentials recovers its password.
        let legacy = unique_phone();
        let registered = register(&server, &sms, &legacy).await;
        let id = account_id(&registered).to_string();
        kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query("DELETE FROM account_credentials WHERE account_id = $1")
                .bind(&id)
                .execute(pool)
                .await
                .expect("delete");
        });
        let sent = sms.messages_to(&legacy).len();
        let asked = server
            .data(None, RECOVER, json!({ "input": { "contact": legacy } }))
            .await;
        assert_eq!(
            error_codes(&asked["requestPasswordRecovery"]),
            Vec::<String>::new()
        );
        let text = sms.nth_message_to(&legacy, sent + 1).await;
        assert!(text.contains("восстановления пароля"), "{text}");
        let code = six_digits(&text).expect("code");
        let reset = server
            .data(
                None,
                RESET,
                json!({ "input": { "contact": legacy, "code": code, "newPassword": "осенний-ветер-35" } }),
            )
            .await;
        assert_eq!(reset["resetPassword"]["passwordChanged"], true, "{reset}");
        let signed = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": legacy, "password": "осенний-ветер-35" } }),
            )
            .await;
        assert_eq!(
            error_codes(&signed["signIn"]),
            Vec::<String>::new(),
            "{signed}"
        );
        server.stop().await;
    }
);

conformance!(
    common_passwords_and_malformed_input_are_refused_clearly,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let start = |contact: &'static str| {
            let server = &server;
            async move {
                server
                    .data(None, START, json!({ "input": { "contact": contact } }))
                    .await["startRegistration"]["userErrors"][0]
                    .clone()
            }
        };
        let missing = start("8915111223").await;
        assert_eq!(missing["code"], "INVALID_PHONE");
        assert!(
            missing["message"]
                .as_str()
                .unwrap_or_default()
                .contains("a digit missing"),
            "{missing}"
        );
        let short = start("+7 915 111-22-3").await;
        assert_eq!(
            short["message"],
            "after +7 a Russian phone number has 10 digits, this one has 9, e.g. +7 912 345-67-89"
        );
        let markup = start("<script>@example.ru").await;
        assert_eq!(markup["code"], "INVALID_EMAIL");
        assert_eq!(markup["field"], json!(["input", "contact"]));

        // Common passwords, in any case and with digits around them.
        let contact = unique_phone();
        server
            .data(None, START, json!({ "input": { "contact": contact } }))
            .await;
        let code = sms.last_code_to(&contact).await;
        for common in ["password12", "ЙЦУКЕН2024", "P@ssw0rd!!"] {
            let r = server
                .data(
                    None,
                    CONFIRM,
                    json!({ "input": { "contact": contact, "code": code, "password": common, "acceptTerms": true } }),
                )
                .await;
            assert_eq!(
                error_codes(&r["confirmRegistration"]),
                ["PASSWORD_TOO_COMMON"],
                "{common}"
            );
        }
        let registered = server
            .data(
                None,
                CONFIRM,
                json!({ "input": { "contact": contact, "code": code, "password": PASSWORD, "acceptTerms": true } }),
            )
            .await["confirmRegistration"]
            .clone();
        assert_eq!(
            error_codes(&registered),
            Vec::<String>::new(),
            "{registered}"
        );
        let token = registered["tokens"]["accessToken"]
            .as_str()
            .expect("token")
            .to_string();

        // Names with direction overrides, zero-width characters or markup.
        const PROFILE: &str =
            "mutation($input: UpdateMyProfileInput!) { updateMyProfile(input: $input) {
            userErrors { field code message } } }";
        let r = server
            .data(
                Some(&token),
                PROFILE,
                json!({ "input": { "surname": "Иванов\u{202E}", "firstName": "Ив\u{200B}ан", "patronymic": "<b>" } }),
            )
            .await;
        let found: Vec<(Value, Value)> = r["updateMyProfile"]["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| (e["field"].clone(), e["code"].clone()))
            .collect();
        assert_eq!(
            found,
            vec![
                (json!(["input", "surname"]), json!("INVALID_NAME")),
                (json!(["input", "firstName"]), json!("INVALID_NAME")),
                (json!(["input", "patronymic"]), json!("INVALID_NAME")),
            ],
            "{r}"
        );
        const RECORD: &str =
            "mutation($input: RecordPatientProfileInput!) { recordPatientProfile(input: $input) {
            recorded userErrors { field message } } }";
        let r = server
            .data(
                Some(&token),
                RECORD,
                json!({ "input": { "surname": "Петров\u{202E}", "firstName": "Пётр", "birthDate": "1980-01-02", "sex": "MALE" } }),
            )
            .await;
        assert_eq!(r["recordPatientProfile"]["recorded"], false, "{r}");
        let message = r["recordPatientProfile"]["userErrors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("U+202E"), "{r}");
        server.stop().await;
    }
);

conformance!(
    account_messages_are_russian_and_journal_labels_truthful,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let contact = unique_phone();
        let registered = register(&server, &sms, &contact).await;
        let first = sms.nth_message_to(&contact, 1).await;
        assert!(
            first.starts_with("Код для регистрации в Кабинете"),
            "{first}"
        );
        let signed = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": contact, "password": PASSWORD } }),
            )
            .await;
        assert_eq!(error_codes(&signed["signIn"]), Vec::<String>::new());
        let second = sms.nth_message_to(&contact, 2).await;
        assert!(second.starts_with("Код для входа в Кабинет"), "{second}");

        // A refresh token used twice ends the session, and the journal says so.
        let tokens = registered["tokens"].clone();
        let rotated = server
            .data(
                None,
                REFRESH,
                json!({ "input": { "refreshToken": tokens["refreshToken"] } }),
            )
            .await["refreshSession"]["tokens"]
            .clone();
        let reused = server
            .data(
                None,
                REFRESH,
                json!({ "input": { "refreshToken": tokens["refreshToken"] } }),
            )
            .await;
        assert_eq!(
            error_codes(&reused["refreshSession"]),
            ["REFRESH_TOKEN_REUSED"]
        );
        let _ = rotated;
        let token = server.session_token_for(account_id(&registered), Role::Patient, None);
        const JOURNAL: &str =
            "{ accountJournal(first: 100) { edges { node { action labelEn labelRu } } } }";
        let mut entry = Value::Null;
        for _ in 0..100 {
            let journal = server.data(Some(&token), JOURNAL, json!({})).await;
            if let Some(found) = journal["accountJournal"]["edges"]
                .as_array()
                .expect("edges")
                .iter()
                .find(|e| {
                    e["node"]["action"]
                        .as_str()
                        .is_some_and(|a| a.starts_with("SessionsRevoked"))
                })
            {
                entry = found["node"].clone();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(entry["action"], "SessionsRevoked:refresh_token_reused");
        let label = entry["labelRu"].as_str().unwrap_or_default();
        assert!(label.contains("использован повторно"), "{label}");
        assert_ne!(label, "Выход на всех устройствах");
        server.stop().await;
    }
);

conformance!(
    the_login_lock_is_configurable,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c);
            c.account_limits.login_lock_after = 2;
            c.account_limits.login_lock_minutes = 1;
        })
        .await;
        let contact = unique_phone();
        register(&server, &sms, &contact).await;
        let attempt = |password: &'static str| {
            let server = &server;
            let contact = contact.clone();
            async move {
                error_codes(
                    &server
                        .data(
                            None,
                            SIGN_IN,
                            json!({ "input": { "login": contact, "password": password } }),
                        )
                        .await["signIn"],
                )
            }
        };
        assert_eq!(attempt("wrong-guess-001").await, ["INVALID_CREDENTIALS"]);
        assert_eq!(attempt("wrong-guess-002").await, ["INVALID_CREDENTIALS"]);
        assert_eq!(attempt(PASSWORD).await, ["TOO_MANY_ATTEMPTS"]);
        clock.set(clock.now() + Duration::seconds(61));
        assert_eq!(attempt(PASSWORD).await, Vec::<String>::new());
        server.stop().await;
    }
);
