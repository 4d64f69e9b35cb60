//! Accounts and sign-in end to end over HTTP, on both backends: registration
//! with codes delivered by real SMTP and an SMS gateway, two-factor sign-in,
//! TOTP, sessions and refresh rotation, recovery, guessing limits, closing,
//! staff accounts and production mode.

use std::sync::Arc;

use chrono::{Duration, Utc};
use futures::future::join_all;
use kabinet_domain::accounts::totp;
use kabinet_domain::accounts::{Account, AccountCommand, Login};
use kabinet_domain::clock::FixedClock;
use kabinet_domain::command::{CommandError, Retry};
use kabinet_domain::{Actor, EventMetadata, Role};
use kabinet_graphql::config::{Mode, ServeConfig};
use kabinet_graphql::Application;
use kabinet_tests::accounts::{
    error_codes, register, unique_phone, use_sms_gateway, CONFIRM, PASSWORD, REFRESH, SIGN_IN,
    START,
};
use kabinet_tests::delivery::{SmsReceiver, SmtpServer, SMS_TOKEN};
use kabinet_tests::server::{Client, Server};
use kabinet_tests::{conformance, TestDb};
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

const COMPLETE: &str = "mutation($input: CompleteSignInInput!) { completeSignIn(input: $input) {
    account { id login } tokens { accessToken refreshToken } userErrors { field message code } } }";
const ME: &str = "{ me { accountId role } myAccount { login role status } }";

/// Signs in with a code sent by SMS; returns the `completeSignIn` payload.
async fn sign_in_by_sms(client: &Client, sms: &SmsReceiver, phone: &str, password: &str) -> Value {
    let before = sms.messages_to(phone).len();
    let signed = client
        .data(
            None,
            SIGN_IN,
            json!({ "input": { "login": phone, "password": password } }),
        )
        .await["signIn"]
        .clone();
    assert_eq!(error_codes(&signed), Vec::<String>::new(), "{signed}");
    assert_eq!(signed["challenge"]["method"], "CODE");
    let text = sms.nth_message_to(phone, before + 1).await;
    let code = kabinet_tests::delivery::six_digits(&text).expect("code");
    let completed = client
        .data(
            None,
            COMPLETE,
            json!({ "input": { "challengeId": signed["challenge"]["challengeId"], "code": code } }),
        )
        .await["completeSignIn"]
        .clone();
    assert_eq!(error_codes(&completed), Vec::<String>::new(), "{completed}");
    completed
}

async fn status_with(client: &Client, token: &str) -> u16 {
    let body = serde_json::to_vec(&json!({ "query": ME })).expect("json");
    client.post_raw(Some(token), body).await.0
}

conformance!(
    registration_by_email_over_smtp,
    |test_db: TestDb| async move {
        let Some(smtp) = SmtpServer::start().await else {
            return;
        };
        let server = Server::start(&test_db, |c| {
            c.delivery.smtp_url = Some(SecretString::from(smtp.url.clone()));
            c.delivery.mail_from = Some("Kabinet <no-reply@kabinet.test>".into());
        })
        .await;
        let email = format!("Ivan.{}@Example.RU", Uuid::new_v4().simple());
        let normalised = email.to_lowercase();
        let started = server
            .data(None, START, json!({ "input": { "contact": email } }))
            .await["startRegistration"]
            .clone();
        assert_eq!(started["delivery"]["channel"], "EMAIL");
        let code = smtp.code_in(&normalised, 1).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let confirm = |code: &str, password: &str, terms: bool| json!({ "input": { "contact": email, "code": code, "password": password, "acceptTerms": terms } });
        let refused = server
            .data(None, CONFIRM, confirm(&code, PASSWORD, false))
            .await;
        assert_eq!(
            error_codes(&refused["confirmRegistration"]),
            ["TERMS_NOT_ACCEPTED"]
        );
        let refused = server
            .data(None, CONFIRM, confirm(&code, "short", true))
            .await;
        assert_eq!(
            error_codes(&refused["confirmRegistration"]),
            ["PASSWORD_TOO_SHORT"]
        );
        assert_eq!(
            refused["confirmRegistration"]["userErrors"][0]["field"],
            json!(["input", "password"])
        );
        let refused = server
            .data(None, CONFIRM, confirm(wrong, PASSWORD, true))
            .await;
        assert_eq!(
            error_codes(&refused["confirmRegistration"]),
            ["INVALID_CODE"]
        );
        assert!(refused["confirmRegistration"]["userErrors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("4 attempts left"));
        let done = server
            .data(None, CONFIRM, confirm(&code, PASSWORD, true))
            .await["confirmRegistration"]
            .clone();
        assert_eq!(error_codes(&done), Vec::<String>::new(), "{done}");
        assert_eq!(done["account"]["login"], normalised);
        assert_eq!(done["account"]["loginKind"], "EMAIL");
        assert_eq!(done["account"]["role"], "PATIENT");
        assert!(done["account"]["termsVersion"].is_string());
        let token = done["tokens"]["accessToken"].as_str().expect("token");
        let me = server.data(Some(token), ME, json!({})).await;
        assert_eq!(me["myAccount"]["login"], normalised);
        // The code was used up.
        let again = server
            .data(None, CONFIRM, confirm(&code, PASSWORD, true))
            .await;
        assert_eq!(error_codes(&again["confirmRegistration"]), ["INVALID_CODE"]);

        // No "user exists" oracle: a taken contact gets the same answer, and its
        // holder a notice without a code.
        let other = format!("free.{}@example.ru", Uuid::new_v4().simple());
        let free = server
            .data(None, START, json!({ "input": { "contact": other } }))
            .await;
        let taken = server
            .data(None, START, json!({ "input": { "contact": email } }))
            .await;
        let shape = |v: &Value| {
            let d = &v["startRegistration"];
            (
                d["delivery"]["channel"].clone(),
                d["userErrors"].clone(),
                d["delivery"]["sentTo"].as_str().map(|s| s.len()),
            )
        };
        assert_eq!(shape(&free).0, shape(&taken).0);
        assert_eq!(shape(&free).1, shape(&taken).1);
        let notice = smtp.nth_message_to(&normalised, 2).await;
        assert!(notice.contains("уже есть учётная запись"), "{notice}");
        let body = notice
            .replace("\r\n", "\n")
            .split_once("\n\n")
            .map(|(_, b)| b.to_string())
            .expect("a body");
        assert_eq!(kabinet_tests::delivery::six_digits(&body), None);
        assert!(smtp.code_in(&other, 1).await.len() == 6);

        // Sign-in by e-mail: the second factor arrives by e-mail too.
        let signed = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": email, "password": PASSWORD } }),
            )
            .await["signIn"]
            .clone();
        assert_eq!(signed["challenge"]["method"], "CODE");
        let code = smtp.code_in(&normalised, 3).await;
        let completed = server
        .data(None, COMPLETE, json!({ "input": { "challengeId": signed["challenge"]["challengeId"], "code": code } }))
        .await;
        assert_eq!(
            error_codes(&completed["completeSignIn"]),
            Vec::<String>::new()
        );
        server.stop().await;
    }
);

conformance!(sessions_rotate_and_end, |test_db: TestDb| async move {
    let sms = SmsReceiver::start().await;
    let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
    let phone = unique_phone();
    let registered = register(&server, &sms, &phone).await;
    let first = registered["tokens"].clone();

    // Refresh rotates; the spent token coming back ends the whole session.
    let rotated = server
        .data(
            None,
            REFRESH,
            json!({ "input": { "refreshToken": first["refreshToken"] } }),
        )
        .await["refreshSession"]
        .clone();
    assert_eq!(error_codes(&rotated), Vec::<String>::new());
    let second = rotated["tokens"].clone();
    assert_ne!(second["refreshToken"], first["refreshToken"]);
    let access = second["accessToken"].as_str().expect("access");
    assert_eq!(status_with(&server, access).await, 200);
    let reused = server
        .data(
            None,
            REFRESH,
            json!({ "input": { "refreshToken": first["refreshToken"] } }),
        )
        .await;
    assert_eq!(
        error_codes(&reused["refreshSession"]),
        ["REFRESH_TOKEN_REUSED"]
    );
    let after = server
        .data(
            None,
            REFRESH,
            json!({ "input": { "refreshToken": second["refreshToken"] } }),
        )
        .await;
    assert_eq!(
        error_codes(&after["refreshSession"]),
        ["INVALID_REFRESH_TOKEN"]
    );
    assert_eq!(status_with(&server, access).await, 401);

    // Two sessions; signing out everywhere ends both.
    let a = sign_in_by_sms(&server, &sms, &phone, PASSWORD).await["tokens"].clone();
    let b = sign_in_by_sms(&server, &sms, &phone, PASSWORD).await["tokens"].clone();
    let a_token = a["accessToken"].as_str().expect("a");
    let b_token = b["accessToken"].as_str().expect("b");
    let out = server
        .data(
            Some(a_token),
            "mutation { signOutEverywhere { endedSessions userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(out["signOutEverywhere"]["endedSessions"], 2);
    assert_eq!(status_with(&server, a_token).await, 401);
    assert_eq!(status_with(&server, b_token).await, 401);

    // Signing out ends one session only.
    let c = sign_in_by_sms(&server, &sms, &phone, PASSWORD).await["tokens"].clone();
    let d = sign_in_by_sms(&server, &sms, &phone, PASSWORD).await["tokens"].clone();
    let c_token = c["accessToken"].as_str().expect("c");
    let d_token = d["accessToken"].as_str().expect("d");
    let out = server
        .data(
            Some(c_token),
            "mutation { signOut { signedOut userErrors { code } } }",
            json!({}),
        )
        .await;
    assert_eq!(out["signOut"]["signedOut"], true);
    assert_eq!(status_with(&server, c_token).await, 401);
    assert_eq!(status_with(&server, d_token).await, 200);
    server.stop().await;
});

conformance!(
    codes_expire_and_allow_five_tries,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c)
        })
        .await;
        let phone = unique_phone();
        server
            .data(None, START, json!({ "input": { "contact": phone } }))
            .await;
        let code = sms.last_code_to(&phone).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let confirm = |code: &str| json!({ "input": { "contact": phone, "code": code, "password": PASSWORD, "acceptTerms": true } });
        for left in (0..5).rev() {
            let r = server.data(None, CONFIRM, confirm(wrong)).await;
            assert_eq!(error_codes(&r["confirmRegistration"]), ["INVALID_CODE"]);
            let message = r["confirmRegistration"]["userErrors"][0]["message"]
                .as_str()
                .expect("m")
                .to_string();
            if left > 0 {
                assert!(
                    message.contains(&format!("{left} attempts left")),
                    "{message}"
                );
            }
        }
        let r = server.data(None, CONFIRM, confirm(&code)).await;
        assert_eq!(
            error_codes(&r["confirmRegistration"]),
            ["TOO_MANY_ATTEMPTS"]
        );

        // A resend is throttled, then allowed; the new code expires after 10 minutes.
        let r = server
            .data(None, START, json!({ "input": { "contact": phone } }))
            .await;
        assert_eq!(error_codes(&r["startRegistration"]), ["RESEND_TOO_SOON"]);
        clock.set(clock_now(&clock) + Duration::seconds(61));
        let r = server
            .data(None, START, json!({ "input": { "contact": phone } }))
            .await;
        assert_eq!(error_codes(&r["startRegistration"]), Vec::<String>::new());
        let code = sms.nth_message_to(&phone, 2).await;
        let code = kabinet_tests::delivery::six_digits(&code).expect("code");
        clock.set(clock_now(&clock) + Duration::minutes(11));
        let r = server.data(None, CONFIRM, confirm(&code)).await;
        assert_eq!(error_codes(&r["confirmRegistration"]), ["CODE_EXPIRED"]);
        server.stop().await;
    }
);

fn clock_now(clock: &FixedClock) -> chrono::DateTime<Utc> {
    use kabinet_domain::clock::Clock;
    clock.now()
}

conformance!(
    totp_sign_in_refuses_replayed_codes,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c)
        })
        .await;
        let phone = unique_phone();
        let registered = register(&server, &sms, &phone).await;
        let token = registered["tokens"]["accessToken"]
            .as_str()
            .expect("token")
            .to_string();
        let started = server
            .data(
                Some(&token),
                "mutation { startTotpEnrolment { secret provisioningUri userErrors { code } } }",
                json!({}),
            )
            .await["startTotpEnrolment"]
            .clone();
        let uri = started["provisioningUri"].as_str().expect("uri");
        assert!(uri.starts_with("otpauth://totp/Kabinet:"), "{uri}");
        assert!(uri.contains("algorithm=SHA1&digits=6&period=30"));
        let secret_b32 = uri
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("secret="))
            .expect("secret in uri");
        let secret = totp::base32_decode(secret_b32).expect("base32");
        let code_now = |clock: &FixedClock| totp::code_at(&secret, totp::step_of(clock_now(clock)));
        const CONFIRM_TOTP: &str =
            "mutation($input: TotpCodeInput!) { confirmTotpEnrolment(input: $input) {
        account { totpEnabled } userErrors { field code } } }";
        let wrong = server
            .data(
                Some(&token),
                CONFIRM_TOTP,
                json!({ "input": { "code": "12345" } }),
            )
            .await;
        assert_eq!(
            error_codes(&wrong["confirmTotpEnrolment"]),
            ["INVALID_CODE"]
        );
        let first = code_now(&clock);
        let enabled = server
            .data(
                Some(&token),
                CONFIRM_TOTP,
                json!({ "input": { "code": first } }),
            )
            .await;
        assert_eq!(
            enabled["confirmTotpEnrolment"]["account"]["totpEnabled"], true,
            "{enabled}"
        );

        let sign_in = || async {
            server
                .data(
                    None,
                    SIGN_IN,
                    json!({ "input": { "login": phone, "password": PASSWORD } }),
                )
                .await["signIn"]["challenge"]
                .clone()
        };
        let challenge = sign_in().await;
        assert_eq!(challenge["method"], "TOTP");
        let complete = |code: String, challenge: Value| {
            let server = &server;
            async move {
                server
                .data(None, COMPLETE, json!({ "input": { "challengeId": challenge["challengeId"], "code": code } }))
                .await["completeSignIn"]
                .clone()
            }
        };
        // The enrolment used this step: the same code is not accepted again.
        let replay = complete(first.clone(), challenge.clone()).await;
        assert_eq!(error_codes(&replay), ["INVALID_CODE"]);
        clock.set(clock_now(&clock) + Duration::seconds(30));
        let fresh = code_now(&clock);
        let done = complete(fresh.clone(), challenge).await;
        assert_eq!(error_codes(&done), Vec::<String>::new(), "{done}");
        let again = complete(fresh, sign_in().await).await;
        assert_eq!(error_codes(&again), ["INVALID_CODE"]);
        // Codes one step away are accepted (clock drift).
        clock.set(clock_now(&clock) + Duration::seconds(30));
        let ahead = totp::code_at(&secret, totp::step_of(clock_now(&clock)) + 1);
        let drift = complete(ahead, sign_in().await).await;
        assert_eq!(error_codes(&drift), Vec::<String>::new(), "{drift}");
        server.stop().await;
    }
);

conformance!(
    guessing_is_throttled_and_recovery_unlocks,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            use_sms_gateway(&sms, c)
        })
        .await;
        let phone = unique_phone();
        let registered = register(&server, &sms, &phone).await;
        let old_token = registered["tokens"]["accessToken"]
            .as_str()
            .expect("token")
            .to_string();
        let attempt = |password: &'static str| {
            let server = &server;
            let phone = phone.clone();
            async move {
                error_codes(
                    &server
                        .data(
                            None,
                            SIGN_IN,
                            json!({ "input": { "login": phone, "password": password } }),
                        )
                        .await["signIn"],
                )
            }
        };
        for _ in 0..4 {
            assert_eq!(attempt("wrong-password-1").await, ["INVALID_CREDENTIALS"]);
        }
        // Back-off: the next attempt is refused before the password is checked.
        assert_eq!(attempt(PASSWORD).await, ["TOO_MANY_ATTEMPTS"]);
        for _ in 4..10 {
            clock.set(clock_now(&clock) + Duration::seconds(61));
            assert_eq!(attempt("wrong-password-1").await, ["INVALID_CREDENTIALS"]);
        }
        // Ten failures lock the login for 15 minutes, even with the right password.
        clock.set(clock_now(&clock) + Duration::minutes(5));
        assert_eq!(attempt(PASSWORD).await, ["TOO_MANY_ATTEMPTS"]);
        // An unknown login is answered the same way as a known one.
        let unknown = phone_unknown();
        let r = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": unknown, "password": PASSWORD } }),
            )
            .await;
        assert_eq!(error_codes(&r["signIn"]), ["INVALID_CREDENTIALS"]);

        // Recovery: same answer for a stranger; the code resets the password,
        // ends every session and lifts the lock.
        const RECOVER: &str = "mutation($input: RequestPasswordRecoveryInput!) { requestPasswordRecovery(input: $input) {
        delivery { channel } userErrors { code } } }";
        let stranger = server
            .data(None, RECOVER, json!({ "input": { "contact": unknown } }))
            .await;
        let ours = server
            .data(None, RECOVER, json!({ "input": { "contact": phone } }))
            .await;
        assert_eq!(stranger, ours);
        assert!(sms.messages_to(&unknown).is_empty());
        let code = sms.last_code_to(&phone).await;
        const RESET: &str = "mutation($input: ResetPasswordInput!) { resetPassword(input: $input) {
        passwordChanged userErrors { field code } } }";
        let weak = server
        .data(None, RESET, json!({ "input": { "contact": phone, "code": code, "newPassword": "aaaaaaaaaaaa" } }))
        .await;
        assert_eq!(error_codes(&weak["resetPassword"]), ["PASSWORD_TOO_SIMPLE"]);
        let new_password = "летний-полдень-17";
        let reset = server
            .data(
                None,
                RESET,
                json!({ "input": { "contact": phone, "code": code, "newPassword": new_password } }),
            )
            .await;
        assert_eq!(reset["resetPassword"]["passwordChanged"], true, "{reset}");
        assert_eq!(status_with(&server, &old_token).await, 401);
        let signed = sign_in_by_sms(&server, &sms, &phone, new_password).await;
        assert!(signed["tokens"]["accessToken"].is_string());
        server.stop().await;
    }
);

fn phone_unknown() -> String {
    unique_phone()
}

conformance!(
    one_credential_field_per_operation,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let phone = unique_phone();
        register(&server, &sms, &phone).await;
        let aliased = format!(
            r#"mutation {{ a: signIn(input: {{ login: "{phone}", password: "guess-one-111" }}) {{ userErrors {{ code }} }}
                      b: signIn(input: {{ login: "{phone}", password: "guess-two-222" }}) {{ userErrors {{ code }} }} }}"#
        );
        let r = server.graphql(None, &aliased, json!({})).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "TOO_MANY_CREDENTIAL_FIELDS",
            "{r}"
        );
        assert!(r["data"].is_null());
        let fragments = format!(
            r#"mutation {{ ...A ...B }}
           fragment A on Mutation {{ signIn(input: {{ login: "{phone}", password: "x-guess-111" }}) {{ userErrors {{ code }} }} }}
           fragment B on Mutation {{ resetPassword(input: {{ contact: "{phone}", code: "123456", newPassword: "x-guess-222-long" }}) {{ userErrors {{ code }} }} }}"#
        );
        let r = server.graphql(None, &fragments, json!({})).await;
        assert_eq!(
            r["errors"][0]["extensions"]["code"], "TOO_MANY_CREDENTIAL_FIELDS",
            "{r}"
        );
        // Nothing was checked: four wrong guesses in a row still get no back-off.
        for _ in 0..3 {
            let r = server
                .data(
                    None,
                    SIGN_IN,
                    json!({ "input": { "login": phone, "password": "wrong-password-1" } }),
                )
                .await;
            assert_eq!(error_codes(&r["signIn"]), ["INVALID_CREDENTIALS"]);
        }
        let r = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": phone, "password": "wrong-password-1" } }),
            )
            .await;
        assert_eq!(error_codes(&r["signIn"]), ["INVALID_CREDENTIALS"]);
        server.stop().await;
    }
);

conformance!(
    tokens_of_closed_accounts_and_foreign_keys_are_refused,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let phone = unique_phone();
        let registered = register(&server, &sms, &phone).await;
        let token = registered["tokens"]["accessToken"]
            .as_str()
            .expect("token")
            .to_string();
        let id = registered["account"]["id"].as_str().expect("id");
        let account_id = kabinet_graphql::schema::ids::decode_as(id, "Account").expect("uuid");
        // A development token for the account takes its state.
        let dev = server.token_for(account_id, Role::Patient, None);
        assert_eq!(status_with(&server, &dev).await, 200);
        // A development token for a subject without an account is taken as claimed.
        let stranger = server.token(Role::Patient, None);
        assert_eq!(status_with(&server, &stranger).await, 200);
        // Another key's token is refused.
        let other = kabinet_graphql::auth::TokenKeys::new(b"another-secret-of-at-least-32-bytes!!");
        let foreign = other
            .mint(
                &Actor {
                    account_id,
                    role: Role::Patient,
                    organisation_id: None,
                },
                Duration::minutes(5),
            )
            .expect("mint");
        assert_eq!(status_with(&server, &foreign).await, 401);

        const CLOSE: &str =
            "mutation($input: CloseMyAccountInput!) { closeMyAccount(input: $input) {
        closed userErrors { field code } } }";
        let wrong = server
            .data(
                Some(&token),
                CLOSE,
                json!({ "input": { "password": "not-the-password" } }),
            )
            .await;
        assert_eq!(
            error_codes(&wrong["closeMyAccount"]),
            ["INVALID_CREDENTIALS"]
        );
        let closed = server
            .data(
                Some(&token),
                CLOSE,
                json!({ "input": { "password": PASSWORD } }),
            )
            .await;
        assert_eq!(closed["closeMyAccount"]["closed"], true, "{closed}");
        assert_eq!(status_with(&server, &token).await, 401);
        assert_eq!(status_with(&server, &dev).await, 401);
        let r = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": phone, "password": PASSWORD } }),
            )
            .await;
        assert_eq!(error_codes(&r["signIn"]), ["INVALID_CREDENTIALS"]);
        // The login is free again.
        let again = register(&server, &sms, &phone).await;
        assert_ne!(again["account"]["id"], registered["account"]["id"]);
        server.stop().await;
    }
);

conformance!(
    staff_accounts_by_admins_and_the_command_line,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let admin_phone = unique_phone();
        let args = kabinet_graphql::config::CreateAccountArgs {
            database: kabinet_graphql::config::DatabaseArgs {
                database_url: test_db.url.clone(),
                db_max_connections: 2,
            },
            role: "admin".into(),
            login: admin_phone.clone(),
            organisation: None,
        };
        let weak = kabinet_graphql::cli::create_account(&args, "short".into()).await;
        assert!(weak
            .expect_err("weak")
            .to_string()
            .contains("PASSWORD_TOO_SHORT"));
        kabinet_graphql::cli::create_account(&args, PASSWORD.into())
            .await
            .expect("first admin");
        let admin = sign_in_by_sms(&server, &sms, &admin_phone, PASSWORD).await["tokens"]
            ["accessToken"]
            .as_str()
            .expect("admin token")
            .to_string();
        let org = server
        .data(
            Some(&admin),
            "mutation($input: RegisterOrganisationInput!) { registerOrganisation(input: $input) { organisation { id } userErrors { code } } }",
            json!({ "input": { "details": { "name": "Поликлиника №1", "region": "Москва", "address": "ул. Ленина, 1",
                "timeZone": "Europe/Moscow", "workingHours": "08:00–20:00", "departments": [], "specialisations": [] } } }),
        )
        .await["registerOrganisation"]["organisation"]["id"]
        .as_str()
        .expect("org")
        .to_string();
        const CREATE: &str =
            "mutation($input: CreateStaffAccountInput!) { createStaffAccount(input: $input) {
        account { id login role organisationId } userErrors { field code } } }";
        let doctor_phone = unique_phone();
        let create = |input: Value| {
            let server = &server;
            let admin = admin.clone();
            async move {
                server
                    .data(Some(&admin), CREATE, json!({ "input": input }))
                    .await["createStaffAccount"]
                    .clone()
            }
        };
        let r = create(json!({ "role": "DOCTOR", "login": doctor_phone })).await;
        assert_eq!(error_codes(&r), ["INVALID_INPUT"]);
        assert_eq!(
            r["userErrors"][0]["field"],
            json!(["input", "organisationId"])
        );
        let missing = kabinet_graphql::schema::ids::encode("Organisation", Uuid::now_v7());
        let r =
            create(json!({ "role": "DOCTOR", "login": doctor_phone, "organisationId": missing }))
                .await;
        assert_eq!(error_codes(&r), ["NOT_FOUND"]);
        let r =
            create(json!({ "role": "DOCTOR", "login": doctor_phone, "organisationId": org })).await;
        assert_eq!(error_codes(&r), Vec::<String>::new(), "{r}");
        assert_eq!(r["account"]["role"], "DOCTOR");
        assert_eq!(r["account"]["organisationId"], org);
        let doctor_id = r["account"]["id"].clone();
        let r = create(json!({ "role": "AUDITOR", "login": doctor_phone })).await;
        assert_eq!(error_codes(&r), ["LOGIN_TAKEN"]);
        // A retry under one idempotency key gives the first account; other input under it is refused.
        let analyst = unique_phone();
        let first =
            create(json!({ "role": "ANALYST", "login": analyst, "idempotencyKey": "staff-1" }))
                .await;
        let retry =
            create(json!({ "role": "ANALYST", "login": analyst, "idempotencyKey": "staff-1" }))
                .await;
        assert_eq!(error_codes(&retry), Vec::<String>::new(), "{retry}");
        assert_eq!(first["account"]["id"], retry["account"]["id"]);
        let other = create(
            json!({ "role": "ANALYST", "login": unique_phone(), "idempotencyKey": "staff-1" }),
        )
        .await;
        assert_eq!(error_codes(&other), ["IDEMPOTENCY_KEY_REUSED"]);
        assert_eq!(
            sms.messages_to(&analyst).len(),
            1,
            "the invitation is sent once"
        );
        // Non-admins may not create accounts.
        let patient = server.token(Role::Patient, None);
        let r = server
            .graphql(
                Some(&patient),
                CREATE,
                json!({ "input": { "role": "AUDITOR", "login": unique_phone() } }),
            )
            .await;
        assert_eq!(r["errors"][0]["extensions"]["code"], "FORBIDDEN");
        // The doctor sets a password with the invitation code, then signs in.
        let code = sms.last_code_to(&doctor_phone).await;
        let reset = server
        .data(
            None,
            "mutation($input: ResetPasswordInput!) { resetPassword(input: $input) { passwordChanged userErrors { code } } }",
            json!({ "input": { "contact": doctor_phone, "code": code, "newPassword": PASSWORD } }),
        )
        .await;
        assert_eq!(reset["resetPassword"]["passwordChanged"], true, "{reset}");
        let doctor = sign_in_by_sms(&server, &sms, &doctor_phone, PASSWORD).await["tokens"]
            ["accessToken"]
            .as_str()
            .expect("doctor")
            .to_string();
        let me = server.data(Some(&doctor), ME, json!({})).await;
        assert_eq!(me["me"]["role"], "DOCTOR");
        // Deactivation ends the doctor's sessions and sign-ins.
        const DEACTIVATE: &str =
            "mutation($input: DeactivateAccountInput!) { deactivateAccount(input: $input) {
            account { status } userErrors { field code } } }";
        let done = server
            .data(
                Some(&admin),
                DEACTIVATE,
                json!({ "input": { "accountId": doctor_id } }),
            )
            .await;
        assert_eq!(
            done["deactivateAccount"]["account"]["status"], "DEACTIVATED",
            "{done}"
        );
        assert_eq!(status_with(&server, &doctor).await, 401);
        let r2 = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": doctor_phone, "password": PASSWORD } }),
            )
            .await;
        assert_eq!(error_codes(&r2["signIn"]), ["ACCOUNT_DEACTIVATED"]);
        let again = server
            .data(
                Some(&admin),
                DEACTIVATE,
                json!({ "input": { "accountId": doctor_id } }),
            )
            .await;
        assert_eq!(
            error_codes(&again["deactivateAccount"]),
            ["ACCOUNT_NOT_ACTIVE"]
        );
        server.stop().await;
    }
);

conformance!(
    production_mode_refuses_dev_tokens_and_weak_secrets,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let production = |secret: &str| {
            let mut c = ServeConfig::for_tests(&test_db.url, secret);
            c.mode = Mode::Production;
            c.delivery.sms_gateway_url = Some(sms.url.clone());
            c.delivery.sms_gateway_token = Some(SecretString::from(SMS_TOKEN.to_string()));
            c.delivery.smtp_url = Some(SecretString::from("smtp://127.0.0.1:25".to_string()));
            c.delivery.mail_from = Some("no-reply@kabinet.test".into());
            c.set_data_key("407aaefd3152b38ac33ed4a604b6a8253730903ab7f1daad5d5ff6f25f7d0cc7");
            c.prescription_key = kabinet_graphql::config::PrescriptionKeyArgs::with_seed(
                "DYgu4X8B+Mvyb/GSYB5/o45QATtYkhaWHzYUGEvwIgg=",
            );
            c
        };
        let weak = Application::build(production("short-secret")).await;
        assert!(weak
            .err()
            .expect("weak refused")
            .to_string()
            .contains("too weak"));
        let mut missing = production(kabinet_tests::server::SECRET);
        missing.secret.jwt_secret = None;
        assert!(Application::build(missing).await.is_err());
        let mut no_sms = production(kabinet_tests::server::SECRET);
        no_sms.delivery.sms_gateway_url = None;
        let refused = Application::build(no_sms)
            .await
            .err()
            .expect("no sms refused");
        assert!(
            refused.to_string().contains("KABINET_SMS_GATEWAY_URL"),
            "{refused}"
        );
        let server =
            Server::start(&test_db, |c| *c = production(kabinet_tests::server::SECRET)).await;
        let dev = server.token(Role::Admin, None);
        assert_eq!(status_with(&server, &dev).await, 401);
        let r = server
            .graphql(None, "{ __schema { queryType { name } } }", json!({}))
            .await;
        assert!(r["data"]["__schema"].is_null(), "introspection is off: {r}");
        // Session tokens work.
        let phone = unique_phone();
        let registered = register(&server, &sms, &phone).await;
        let token = registered["tokens"]["accessToken"].as_str().expect("token");
        assert_eq!(status_with(&server, token).await, 200);
        server.stop().await;
    }
);

conformance!(
    concurrent_registrations_of_one_contact_make_one_account,
    |test_db: TestDb| async move {
        let commands = kabinet_domain::command::CommandRunner::new(test_db.journal.clone());
        let login = Login::parse(&unique_phone(), "contact").expect("login");
        let attempts = (0..8).map(|_| {
            let commands = commands.clone();
            let login = login.clone();
            async move {
                let id = Uuid::now_v7();
                let actor = Actor {
                    account_id: id,
                    role: Role::Patient,
                    organisation_id: None,
                };
                commands
                    .execute_new::<Account>(
                        &id.to_string(),
                        AccountCommand::Register {
                            login,
                            role: Role::Patient,
                            organisation_id: None,
                            terms_version: Some("2026-01".into()),
                            password_set: true,
                        },
                        &(),
                        &EventMetadata::new(actor, "test"),
                        &json!({ "id": id }),
                        Retry::OnConflict,
                    )
                    .await
            }
        });
        let results = join_all(attempts).await;
        let won = results.iter().filter(|r| r.is_ok()).count();
        let reserved = results
            .iter()
            .filter(|r| matches!(r, Err(CommandError::Reserved(_))))
            .count();
        assert_eq!((won, reserved), (1, 7));
        let registered: i64 = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = 'AccountRegistered'")
                .fetch_one(pool)
                .await
                .expect("count")
        });
        assert_eq!(registered, 1);
    }
);

conformance!(
    addresses_are_throttled_behind_a_trusted_proxy,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| {
            use_sms_gateway(&sms, c);
            c.trusted_proxy = true;
        })
        .await;
        let attempt = |address: &'static str| {
            let server = &server;
            async move {
                let body = json!({ "query": SIGN_IN, "variables": { "input": { "login": unique_phone(), "password": "wrong-password-1" } } });
                let response = server
                    .http
                    .post(format!("{}/graphql", server.base))
                    // A forged entry first; the proxy's own (last) entry counts.
                    .header("x-forwarded-for", format!("203.0.113.9, {address}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("post");
                let value: Value = response.json().await.expect("json");
                error_codes(&value["data"]["signIn"])
            }
        };
        // Twenty failures from one address (each on another login) are free.
        for _ in 0..20 {
            assert_eq!(attempt("198.51.100.7").await, ["INVALID_CREDENTIALS"]);
        }
        assert_eq!(attempt("198.51.100.7").await, ["INVALID_CREDENTIALS"]);
        assert_eq!(attempt("198.51.100.7").await, ["TOO_MANY_ATTEMPTS"]);
        // Another address is not held back.
        assert_eq!(attempt("198.51.100.8").await, ["INVALID_CREDENTIALS"]);
        server.stop().await;
    }
);

mod websocket {
    use super::*;
    use futures::SinkExt;
    use kabinet_tests::ws::{connect, next_json};
    use tokio_tungstenite::tungstenite::Message;

    /// The first message the server answers `connection_init` with; `None` when it closes.
    async fn connection_init(server: &Server, token: &str) -> Option<Value> {
        let mut ws = connect(server).await;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } });
        ws.send(Message::Text(init.to_string()))
            .await
            .expect("send");
        next_json(&mut ws).await
    }

    conformance!(
        ended_sessions_are_refused_at_connection_init,
        |test_db: TestDb| async move {
            let sms = SmsReceiver::start().await;
            let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
            let phone = unique_phone();
            let registered = register(&server, &sms, &phone).await;
            let token = registered["tokens"]["accessToken"]
                .as_str()
                .expect("token")
                .to_string();
            let ack = connection_init(&server, &token).await.expect("ack");
            assert_eq!(ack["type"], "connection_ack");
            server
                .data(
                    Some(&token),
                    "mutation { signOut { signedOut } }",
                    json!({}),
                )
                .await;
            if let Some(message) = connection_init(&server, &token).await {
                assert_ne!(message["type"], "connection_ack", "{message}");
            }
            server.stop().await;
        }
    );
}

/// Runs the `kabinet` binary (built as `kabinet-server`) with `args` and `env`.
fn kabinet(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kabinet-server"));
    command
        .args(args)
        .env_remove("KABINET_MODE")
        .env_remove("KABINET_JWT_SECRET")
        .env_remove("KABINET_ADMIN_PASSWORD")
        .env("KABINET_LOG", "error")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("run kabinet");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

#[test]
fn the_token_command_refuses_in_production_mode() {
    let secret = kabinet_tests::server::SECRET;
    let subject = Uuid::now_v7().to_string();
    let args = ["token", "--role", "patient", "--subject", subject.as_str()];
    let dev = kabinet(&args, &[("KABINET_JWT_SECRET", secret)], None);
    assert!(
        dev.status.success(),
        "{}",
        String::from_utf8_lossy(&dev.stderr)
    );
    let prod = kabinet(
        &args,
        &[
            ("KABINET_JWT_SECRET", secret),
            ("KABINET_MODE", "production"),
        ],
        None,
    );
    assert!(!prod.status.success());
    assert!(String::from_utf8_lossy(&prod.stderr).contains("production"));
}

#[test]
fn production_secrets_come_from_the_environment_only() {
    let out = kabinet(
        &[
            "serve",
            "--mode",
            "production",
            "--jwt-secret",
            kabinet_tests::server::SECRET,
        ],
        &[],
        None,
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("must come from the environment"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(kabinet_tests::server::SECRET),
        "the secret is never printed"
    );
}

conformance!(
    the_first_admin_is_created_from_standard_input,
    |test_db: TestDb| async move {
        let login = format!("admin.{}@kabinet.test", Uuid::new_v4().simple());
        let args = [
            "admin",
            "create-account",
            "--role",
            "admin",
            "--login",
            login.as_str(),
            "--database-url",
            test_db.url.as_str(),
        ];
        let out = kabinet(&args, &[], Some(&format!("{PASSWORD}\n")));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id: Uuid = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("an account id");
        let commands = kabinet_domain::command::CommandRunner::new(test_db.journal.clone());
        let account: Account = commands.load(&id.to_string()).await.expect("load");
        let state = account.state.expect("registered");
        assert_eq!(
            (state.role, state.login.as_str()),
            (Role::Admin, login.as_str())
        );
        assert!(state.password_set);
        let again = kabinet(&args, &[("KABINET_ADMIN_PASSWORD", PASSWORD)], None);
        assert!(!again.status.success());
        assert!(String::from_utf8_lossy(&again.stderr).contains("LOGIN_TAKEN"));
    }
);

conformance!(
    a_sign_in_code_allows_five_tries,
    |test_db: TestDb| async move {
        let sms = SmsReceiver::start().await;
        let server = Server::start(&test_db, |c| use_sms_gateway(&sms, c)).await;
        let phone = unique_phone();
        register(&server, &sms, &phone).await;
        let before = sms.messages_to(&phone).len();
        let signed = server
            .data(
                None,
                SIGN_IN,
                json!({ "input": { "login": phone, "password": PASSWORD } }),
            )
            .await["signIn"]["challenge"]
            .clone();
        assert_eq!(
            signed["sentTo"],
            format!("+7 *** ***-**-{}", &phone[phone.len() - 2..])
        );
        let text = sms.nth_message_to(&phone, before + 1).await;
        let code = kabinet_tests::delivery::six_digits(&text).expect("code");
        let wrong = if code == "000000" { "111111" } else { "000000" };
        let complete =
            |code: &str| json!({ "input": { "challengeId": signed["challengeId"], "code": code } });
        for _ in 0..5 {
            let r = server.data(None, COMPLETE, complete(wrong)).await;
            assert_eq!(error_codes(&r["completeSignIn"]), ["INVALID_CODE"]);
        }
        let r = server.data(None, COMPLETE, complete(&code)).await;
        assert_eq!(error_codes(&r["completeSignIn"]), ["TOO_MANY_ATTEMPTS"]);
        let r = server
            .data(
                None,
                COMPLETE,
                json!({ "input": { "challengeId": "made-up", "code": code } }),
            )
            .await;
        assert_eq!(error_codes(&r["completeSignIn"]), ["INVALID_CHALLENGE"]);
        // The owner's stream records each failure, and never a code.
        let failures: Vec<String> = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT CAST(payload AS TEXT) FROM events WHERE event_type = 'SignInFailed' ORDER BY position")
                .fetch_all(pool)
                .await
                .expect("events")
        });
        assert_eq!(failures.len(), 5);
        assert!(failures[4].contains("too_many_attempts"), "{failures:?}");
        let all: Vec<String> = kabinet_domain::on_db!(&test_db.db, pool => {
            sqlx::query_scalar("SELECT CAST(payload AS TEXT) FROM events WHERE aggregate_type = 'account'")
                .fetch_all(pool)
                .await
                .expect("events")
        });
        assert!(all
            .iter()
            .all(|p| !p.contains(&code) && !p.contains(PASSWORD) && !p.contains("argon2")));
        server.stop().await;
    }
);
