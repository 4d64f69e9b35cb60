//! OMS policies end to end over HTTP on both backends: application checks,
//! issuance with a valid unique number, one active policy per person under
//! concurrency, renewal reminders and expiry by the scheduler, and roles. Applicants
//! are patients with a verified identity: the policy's holder is taken from it.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use futures::future::join_all;
use kabinet_domain::clock::FixedClock;
use kabinet_domain::identity::OmsPolicyNumber;
use kabinet_domain::Role;
use kabinet_tests::conformance;
use kabinet_tests::server::{Client, Server};
use serde_json::{json, Value};

const POLICY: &str = "id status statusLabelRu number kind region validFrom validUntil holderName
    birthDate snils rejectionReason renewalRemindedAt";

fn day(days: i64) -> String {
    (Utc::now().date_naive() + Duration::days(days)).to_string()
}

fn application(snils: &str) -> Value {
    json!({
        "surname": "Иванова", "firstName": "Мария", "patronymic": "Петровна",
        "birthDate": "1990-04-12", "snils": snils, "passportSeries": "45 08", "passportNumber": "123456",
        "kind": "REGIONAL", "region": "Москва", "validFrom": day(0), "validUntil": day(365 * 5),
        "consent": true,
    })
}

/// A token of a patient verified as the holder `application` describes (with `snils`).
async fn verified(test_db: &kabinet_tests::TestDb, client: &Client, snils: &str, n: u32) -> String {
    let account = uuid::Uuid::now_v7();
    let identity = kabinet_tests::identity::TestIdentity {
        snils: snils.chars().filter(char::is_ascii_digit).collect(),
        passport_number: "123456".into(),
        ..kabinet_tests::identity::TestIdentity::numbered(n)
    };
    kabinet_tests::identity::verify_patient(&test_db.commands(), account, &identity).await;
    client.token_for(account, Role::Patient, None)
}

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

async fn admin_act(
    client: &Client,
    admin: &str,
    name: &str,
    input_type: &str,
    input: Value,
) -> Value {
    let query = format!(
        "mutation($input: {input_type}!) {{ {name}(input: $input) {{
            policy {{ {POLICY} }} userErrors {{ field code message }} }} }}"
    );
    client
        .data(Some(admin), &query, json!({ "input": input }))
        .await[name]
        .clone()
}

async fn issue(client: &Client, admin: &str, id: &str) -> Value {
    admin_act(
        client,
        admin,
        "issuePolicy",
        "IssuePolicyInput",
        json!({ "policyId": id }),
    )
    .await
}

async fn my_policy(client: &Client, token: &str) -> Value {
    let query = format!("{{ myPolicy {{ {POLICY} }} }}");
    client.data(Some(token), &query, json!({})).await["myPolicy"].clone()
}

fn fields(payload: &Value) -> Vec<String> {
    payload["userErrors"]
        .as_array()
        .expect("user errors")
        .iter()
        .map(|e| e["field"][1].as_str().unwrap_or("").to_string())
        .collect()
}

conformance!(
    an_application_is_issued_with_a_valid_unique_number,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let applied = apply(&server, &patient, application("112-233-445 95")).await;
        assert_eq!(applied["userErrors"], json!([]), "{applied}");
        let policy = &applied["policy"];
        assert_eq!(policy["status"], "APPLIED");
        assert_eq!(policy["statusLabelRu"], "Заявление на рассмотрении");
        assert_eq!(policy["snils"], "112-233-445 95");
        assert_eq!(policy["holderName"], "Иванова Мария Петровна");
        assert_eq!(policy["number"], Value::Null);
        let no_pdf = server
            .data(
                Some(&patient),
                "{ myPolicy { download { path } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            no_pdf["myPolicy"]["download"]["path"],
            Value::Null,
            "no PDF before issuance"
        );
        let id = policy["id"].as_str().expect("id").to_string();

        let issued = issue(&server, &admin, &id).await;
        assert_eq!(issued["userErrors"], json!([]), "{issued}");
        assert_eq!(issued["policy"]["status"], "ACTIVE");
        let number = issued["policy"]["number"].as_str().expect("number");
        assert_eq!(number.len(), 16);
        assert!(
            OmsPolicyNumber::parse(number).is_ok(),
            "check digit of {number}"
        );
        assert_eq!(my_policy(&server, &patient).await["number"], number);
        let link = server
            .data(
                Some(&patient),
                "{ myPolicy { download { path } } }",
                json!({}),
            )
            .await["myPolicy"]["download"]["path"]
            .as_str()
            .expect("download url")
            .to_string();
        let response = server
            .http
            .get(format!("{}{link}", server.base))
            .bearer_auth(&patient)
            .send()
            .await
            .expect("download");
        assert_eq!(response.status().as_u16(), 200);
        let pdf = response.bytes().await.expect("pdf").to_vec();
        if let Some(text) = kabinet_tests::pdf_text::pdf_text(&pdf) {
            for expected in [
                number,
                "Иванова Мария Петровна",
                "12.04.1990",
                "региональный",
                "Действует",
            ] {
                assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
            }
        }

        let twice = issue(&server, &admin, &id).await;
        assert_eq!(twice["userErrors"][0]["code"], "INVALID_TRANSITION");
        assert_eq!(
            my_policy(&server, &patient).await["number"],
            number,
            "unchanged"
        );

        // Numbers of many policies are all different and all valid.
        let mut numbers = vec![number.to_string()];
        for (n, snils) in ["123-456-789 64", "987-654-321 83", "111-223-344 79"]
            .into_iter()
            .enumerate()
        {
            let p = verified(&test_db, &server, snils, 10 + n as u32).await;
            let applied = apply(&server, &p, application(snils)).await;
            assert_eq!(applied["userErrors"], json!([]), "{snils}: {applied}");
            let issued = issue(
                &server,
                &admin,
                applied["policy"]["id"].as_str().expect("id"),
            )
            .await;
            let n = issued["policy"]["number"]
                .as_str()
                .expect("number")
                .to_string();
            assert!(OmsPolicyNumber::parse(&n).is_ok());
            numbers.push(n);
        }
        let mut unique = numbers.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), numbers.len());
        server.stop().await;
    }
);

conformance!(
    a_bad_application_names_every_wrong_field_and_changes_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let bad = apply(
            &server,
            &patient,
            json!({ "firstName": "Мария", "birthDate": "12.04.1990", "snils": "112-233-445 96",
                    "passportSeries": "45", "kind": "REGIONAL",
                    "validFrom": day(10), "validUntil": day(5), "consent": false }),
        )
        .await;
        assert_eq!(
            fields(&bad),
            [
                "birthDate",
                "snils",
                "passportSeries",
                "region",
                "validUntil",
                "consent"
            ],
            "{bad}"
        );
        let codes: Vec<&str> = bad["userErrors"]
            .as_array()
            .expect("errors")
            .iter()
            .map(|e| e["code"].as_str().unwrap_or(""))
            .collect();
        assert!(codes.contains(&"INVALID_SNILS_CHECKSUM"), "{codes:?}");
        assert!(codes.contains(&"CONSENT_REQUIRED"), "{codes:?}");
        assert!(codes.contains(&"INVALID_PERIOD"), "{codes:?}");
        assert_eq!(bad["policy"], Value::Null);
        assert_eq!(
            my_policy(&server, &patient).await,
            Value::Null,
            "nothing was recorded"
        );
        server.stop().await;
    }
);

conformance!(
    a_person_has_at_most_one_active_policy_even_under_concurrency,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        // One verified person applying eight times at once.
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let tokens: Vec<String> = (0..8).map(|_| patient.clone()).collect();
        let attempts = join_all(
            tokens
                .iter()
                .map(|t| apply(&server, t, application("112-233-445 95"))),
        )
        .await;
        let winners: Vec<&Value> = attempts
            .iter()
            .filter(|a| a["userErrors"] == json!([]))
            .collect();
        assert_eq!(winners.len(), 1, "{attempts:?}");
        for loser in attempts.iter().filter(|a| a["userErrors"] != json!([])) {
            assert_eq!(
                loser["userErrors"][0]["code"], "POLICY_ALREADY_ACTIVE",
                "{loser}"
            );
            assert_eq!(loser["userErrors"][0]["field"], json!(["input", "snils"]));
        }
        let id = winners[0]["policy"]["id"].as_str().expect("id").to_string();
        let issued = issue(&server, &admin, &id).await;
        assert_eq!(issued["policy"]["status"], "ACTIVE");
        let second = apply(&server, &tokens[0], application("11223344595")).await;
        assert_eq!(
            second["userErrors"][0]["code"], "POLICY_ALREADY_ACTIVE",
            "{second}"
        );

        // A rejected application frees the person.
        let other = verified(&test_db, &server, "123-456-789 64", 2).await;
        let first = apply(&server, &other, application("123-456-789 64")).await;
        let first_id = first["policy"]["id"].as_str().expect("id").to_string();
        let rejected = admin_act(
            &server,
            &admin,
            "rejectPolicyApplication",
            "RejectPolicyApplicationInput",
            json!({ "policyId": first_id, "reason": "Паспорт недействителен" }),
        )
        .await;
        assert_eq!(rejected["policy"]["status"], "REJECTED", "{rejected}");
        assert_eq!(
            rejected["policy"]["rejectionReason"],
            "Паспорт недействителен"
        );
        let issue_rejected = issue(&server, &admin, &first_id).await;
        assert_eq!(
            issue_rejected["userErrors"][0]["code"],
            "INVALID_TRANSITION"
        );
        let again = apply(&server, &other, application("123-456-789 64")).await;
        assert_eq!(again["userErrors"], json!([]), "{again}");
        server.stop().await;
    }
);

conformance!(
    the_scheduler_reminds_once_before_the_end_and_expires_after_it,
    |test_db| async move {
        let clock = FixedClock::new(Utc::now());
        let server = Server::start_with_clock(&test_db, Arc::new(clock.clone()), |c| {
            c.policy_renewal_days = 30;
        })
        .await;
        let admin = server.token(Role::Admin, None);
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let mut input = application("112-233-445 95");
        input["validUntil"] = json!(day(60));
        let applied = apply(&server, &patient, input).await;
        let id = applied["policy"]["id"].as_str().expect("id").to_string();
        issue(&server, &admin, &id).await;
        tokio::time::sleep(StdDuration::from_millis(500)).await;
        assert_eq!(
            my_policy(&server, &patient).await["renewalRemindedAt"],
            Value::Null,
            "not due yet"
        );

        clock.set(Utc::now() + Duration::days(40));
        let mut policy = Value::Null;
        for _ in 0..100 {
            policy = my_policy(&server, &patient).await;
            if policy["renewalRemindedAt"] != Value::Null {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_ne!(policy["renewalRemindedAt"], Value::Null, "{policy}");
        assert_eq!(policy["status"], "ACTIVE");
        tokio::time::sleep(StdDuration::from_millis(600)).await;
        let log = server
            .data(
                Some(&patient),
                "{ activityLog(filter: { actions: [\"PolicyRenewalDue\"] }) { edges { node { action actorRole } } } }",
                json!({}),
            )
            .await;
        let reminders = log["activityLog"]["edges"].as_array().expect("edges");
        assert_eq!(reminders.len(), 1, "reminded exactly once: {log}");
        assert_eq!(reminders[0]["node"]["actorRole"], "SYSTEM");

        clock.set(Utc::now() + Duration::days(62));
        for _ in 0..100 {
            policy = my_policy(&server, &patient).await;
            if policy["status"] == "EXPIRED" {
                break;
            }
            tokio::time::sleep(StdDuration::from_millis(100)).await;
        }
        assert_eq!(policy["status"], "EXPIRED", "{policy}");
        server.stop().await;
    }
);

conformance!(
    policies_are_seen_and_decided_only_by_their_holder_and_administrators,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let applied = apply(&server, &patient, application("112-233-445 95")).await;
        let id = applied["policy"]["id"].as_str().expect("id").to_string();
        let node = |token: String| {
            let id = id.clone();
            let server = &server;
            async move {
                server
                    .data(
                        Some(&token),
                        "query($id: ID!) { node(id: $id) { ... on Policy { id } } }",
                        json!({ "id": id }),
                    )
                    .await["node"]
                    .clone()
            }
        };
        assert_eq!(node(patient.clone()).await["id"], id.as_str());
        assert_eq!(node(admin.clone()).await["id"], id.as_str());
        assert_eq!(node(server.token(Role::Patient, None)).await, Value::Null);
        assert_eq!(
            node(server.token(Role::Registrar, Some(uuid::Uuid::now_v7()))).await,
            Value::Null
        );
        let listed = server
            .data(
                Some(&admin),
                "{ policyApplications(status: APPLIED) { edges { node { id } } } }",
                json!({}),
            )
            .await;
        assert_eq!(
            listed["policyApplications"]["edges"][0]["node"]["id"],
            id.as_str()
        );
        for (token, query) in [
            (patient.clone(), format!("mutation {{ issuePolicy(input: {{ policyId: \"{id}\" }}) {{ userErrors {{ code }} }} }}")),
            (patient.clone(), "{ policyApplications { edges { node { id } } } }".to_string()),
            (admin.clone(), "{ myPolicy { id } }".to_string()),
        ] {
            let response = server.graphql(Some(&token), &query, json!({})).await;
            assert_eq!(response["errors"][0]["extensions"]["code"], "FORBIDDEN", "{query}: {response}");
        }
        let unknown = issue(&server, &admin, "bm90LWEtcG9saWN5").await;
        assert_eq!(unknown["userErrors"][0]["code"], "NOT_FOUND");
        server.stop().await;
    }
);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next text message of `ws` as JSON, waiting at most 10 s.
async fn next_json(ws: &mut Socket) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let message = tokio::time::timeout(StdDuration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a message");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

conformance!(
    the_policy_status_is_pushed_live_over_websocket,
    |test_db| async move {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;

        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let patient = verified(&test_db, &server, "112-233-445 95", 1).await;
        let applied = apply(&server, &patient, application("112-233-445 95")).await;
        let id = applied["policy"]["id"].as_str().expect("id").to_string();

        let mut ws = kabinet_tests::ws::connect(&server).await;
        let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {patient}") } });
        ws.send(Message::Text(init.to_string()))
            .await
            .expect("send");
        assert_eq!(next_json(&mut ws).await["type"], "connection_ack");
        let subscribe = json!({ "id": "1", "type": "subscribe",
            "payload": { "query": "subscription { myPolicyUpdates { id status number } }" } });
        ws.send(Message::Text(subscribe.to_string()))
            .await
            .expect("send");
        let first = next_json(&mut ws).await;
        assert_eq!(
            first["payload"]["data"]["myPolicyUpdates"]["status"], "APPLIED",
            "{first}"
        );
        assert_eq!(
            first["payload"]["data"]["myPolicyUpdates"]["id"],
            id.as_str()
        );
        let issued = issue(&server, &admin, &id).await;
        let number = issued["policy"]["number"].clone();
        let pushed = next_json(&mut ws).await;
        assert_eq!(
            pushed["payload"]["data"]["myPolicyUpdates"]["status"], "ACTIVE",
            "{pushed}"
        );
        assert_eq!(
            pushed["payload"]["data"]["myPolicyUpdates"]["number"],
            number
        );
        server.stop().await;
    }
);
