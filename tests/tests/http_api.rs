//! End-to-end tests over HTTP: the real server on port 0, a fresh database per
//! test, GraphQL spoken the way a frontend speaks it.

use kabinet_domain::Role;
use kabinet_graphql::auth::TokenKeys;
use kabinet_graphql::config::{Mode, ServeConfig};
use kabinet_graphql::Application;
use kabinet_tests::conformance;
use kabinet_tests::server::code_of;
use kabinet_tests::server::{Server, SECRET};
use serde_json::{json, Value};
use uuid::Uuid;

const REGISTER: &str = "mutation Register($input: RegisterOrganisationInput!) {
  registerOrganisation(input: $input) {
    organisation { id name region timeZone specialisations }
    userErrors { field message code }
  }
}";

fn details(name: &str) -> Value {
    json!({
        "name": name,
        "region": "Москва",
        "address": "ул. Ленина, 1",
        "timeZone": "Europe/Moscow",
        "workingHours": "Пн–Пт 08:00–20:00",
        "departments": ["Терапия"],
        "specialisations": ["therapist"],
    })
}

conformance!(registration_is_read_back_at_once, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let admin = server.token(Role::Admin, None);
    let response = server
        .graphql(
            Some(&admin),
            REGISTER,
            json!({ "input": { "details": details("Поликлиника №7") } }),
        )
        .await;
    let payload = &response["data"]["registerOrganisation"];
    assert_eq!(payload["userErrors"], json!([]), "{response}");
    assert_eq!(payload["organisation"]["name"], "Поликлиника №7");
    assert_eq!(payload["organisation"]["timeZone"], "Europe/Moscow");

    // Read-your-writes: the activity log already shows the action.
    let log = server
        .graphql(
            Some(&admin),
            "{ activityLog(first: 10) { edges { node { action objectType status actorRole } } } }",
            json!({}),
        )
        .await;
    assert_eq!(
        log["data"]["activityLog"]["edges"],
        json!([{ "node": { "action": "OrganisationRegistered", "objectType": "ORGANISATION",
                           "status": "registered", "actorRole": "ADMIN" } }])
    );

    // The directory finds it by any-case part of its name, and through `node`.
    let id = payload["organisation"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    // The log names the object by the global id `node` takes, with its kind in Russian.
    let logged = server
        .data(
            Some(&admin),
            "{ activityLog(first: 10) { nodes { objectId objectTypeLabelRu } } }",
            json!({}),
        )
        .await;
    let entry = &logged["activityLog"]["nodes"][0];
    assert_eq!(entry["objectId"], json!(id), "{logged}");
    assert_eq!(entry["objectTypeLabelRu"], "Организация");
    let found = server
        .graphql(
            None,
            "query($id: ID!) { organisations(filter: { name: \"ПОЛИКЛИНИКА\" }) { edges { node { id } } }
                               node(id: $id) { ... on Organisation { name } } }",
            json!({ "id": id }),
        )
        .await;
    assert_eq!(
        found["data"]["organisations"]["edges"][0]["node"]["id"],
        json!(id)
    );
    assert_eq!(found["data"]["node"]["name"], "Поликлиника №7");
    server.stop().await;
});

conformance!(
    idempotency_keys_return_the_first_result,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let admin = server.token(Role::Admin, None);
        let input = json!({ "input": { "details": details("Поликлиника №8"), "idempotencyKey": "register-8" } });
        let first = server.graphql(Some(&admin), REGISTER, input.clone()).await;
        let again = server.graphql(Some(&admin), REGISTER, input).await;
        assert_eq!(
            first["data"], again["data"],
            "a retry reports the first result"
        );
        assert_eq!(test_db.journal.count().await.expect("count"), 1);

        let other =
            json!({ "input": { "details": details("Другая"), "idempotencyKey": "register-8" } });
        let reused = server.graphql(Some(&admin), REGISTER, other).await;
        assert_eq!(
            reused["data"]["registerOrganisation"]["userErrors"][0]["code"],
            "IDEMPOTENCY_KEY_REUSED"
        );
        assert_eq!(
            reused["data"]["registerOrganisation"]["userErrors"][0]["field"],
            json!(["input", "idempotencyKey"])
        );
        assert_eq!(
            test_db.journal.count().await.expect("count"),
            1,
            "nothing written"
        );
        server.stop().await;
    }
);

conformance!(callers_are_checked, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let input = json!({ "input": { "details": details("Поликлиника №9") } });

    let anonymous = server.graphql(None, REGISTER, input.clone()).await;
    assert_eq!(code_of(&anonymous), Some("UNAUTHENTICATED"));

    let patient = server.token(Role::Patient, None);
    let refused = server
        .graphql(Some(&patient), REGISTER, input.clone())
        .await;
    assert_eq!(code_of(&refused), Some("FORBIDDEN"));

    // A token signed with another key is refused at the HTTP level.
    let foreign = TokenKeys::new(b"another-secret-another-secret-0123456789")
        .mint(
            &kabinet_domain::Actor {
                account_id: Uuid::now_v7(),
                role: Role::Admin,
                organisation_id: None,
            },
            chrono::Duration::minutes(5),
        )
        .expect("token");
    let body = serde_json::to_vec(&json!({ "query": REGISTER, "variables": input })).expect("json");
    let (status, value) = server.post_raw(Some(&foreign), body).await;
    assert_eq!(status, 401);
    assert_eq!(code_of(&value), Some("UNAUTHENTICATED"));

    // A registrar of another organisation learns nothing about this one.
    let admin = server.token(Role::Admin, None);
    let created = server
        .graphql(
            Some(&admin),
            REGISTER,
            json!({ "input": { "details": details("Своя") } }),
        )
        .await;
    let id = created["data"]["registerOrganisation"]["organisation"]["id"].clone();
    let stranger = server.token(Role::Registrar, Some(Uuid::now_v7()));
    let update = server
        .graphql(
            Some(&stranger),
            "mutation($input: UpdateOrganisationInput!) { updateOrganisation(input: $input) {
                organisation { name } userErrors { code field } } }",
            json!({ "input": { "id": id, "details": details("Чужая") } }),
        )
        .await;
    assert_eq!(
        update["data"]["updateOrganisation"]["userErrors"][0]["code"],
        "NOT_FOUND"
    );

    // Only auditors read someone else's activity log.
    let someone = kabinet_graphql::schema::ids::encode("Account", Uuid::now_v7());
    let query = "query($id: ID) { activityLog(accountId: $id) { edges { cursor } } }";
    let denied = server
        .graphql(Some(&patient), query, json!({ "id": someone }))
        .await;
    assert_eq!(code_of(&denied), Some("FORBIDDEN"));
    let auditor = server.token(Role::Auditor, None);
    let allowed = server
        .graphql(Some(&auditor), query, json!({ "id": someone }))
        .await;
    assert_eq!(allowed["data"]["activityLog"]["edges"], json!([]));
    assert_eq!(test_db.journal.count().await.expect("count"), 1);
    server.stop().await;
});

conformance!(
    bad_input_is_refused_clearly_and_changes_nothing,
    |test_db| async move {
        let server = Server::start(&test_db, |c| c.max_body_bytes = 16 * 1024).await;
        let admin = server.token(Role::Admin, None);

        let bad_zone = server
        .graphql(
            Some(&admin),
            REGISTER,
            json!({ "input": { "details": { "name": "X", "region": "Москва", "address": "A",
                "timeZone": "Mars/Olympus", "workingHours": "8-20", "departments": [], "specialisations": [] } } }),
        )
        .await;
        let error = &bad_zone["data"]["registerOrganisation"]["userErrors"][0];
        assert_eq!(error["field"], json!(["input", "timeZone"]));
        assert_eq!(error["code"], "INVALID_INPUT");

        let empty_name = server
            .graphql(
                Some(&admin),
                REGISTER,
                json!({ "input": { "details": details("   ") } }),
            )
            .await;
        assert_eq!(
            empty_name["data"]["registerOrganisation"]["userErrors"][0]["field"],
            json!(["input", "name"])
        );

        // Malformed JSON, batches and non-objects: 400 with a GraphQL-shaped error.
        for body in [
            &b"{not json"[..],
            b"[{\"query\":\"{ me { role } }\"}]",
            b"42",
        ] {
            let (status, value) = server.post_raw(Some(&admin), body.to_vec()).await;
            assert_eq!(status, 400, "{value}");
            assert_eq!(code_of(&value), Some("BAD_REQUEST"));
        }

        // Oversized bodies are refused before parsing.
        let huge =
            json!({ "query": "{ me { role } }", "variables": { "x": "y".repeat(32 * 1024) } });
        let (status, _) = server
            .post_raw(Some(&admin), serde_json::to_vec(&huge).expect("json"))
            .await;
        assert_eq!(status, 413);

        // Syntax errors, wrong variables, huge pages, bad cursors: GraphQL errors.
        let syntax = server
            .graphql(Some(&admin), "{ me { role ", json!({}))
            .await;
        assert!(syntax["errors"][0]["message"].is_string());
        let wrong_vars = server
            .graphql(Some(&admin), REGISTER, json!({ "input": 5 }))
            .await;
        assert!(wrong_vars["errors"][0]["message"].is_string());
        let huge_page = server
            .graphql(
                Some(&admin),
                "{ activityLog(first: 100000) { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(code_of(&huge_page), Some("BAD_USER_INPUT"));
        let negative = server
            .graphql(
                Some(&admin),
                "{ activityLog(first: -1) { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(code_of(&negative), Some("BAD_USER_INPUT"));
        let cursor = server
            .graphql(
                Some(&admin),
                "{ activityLog(after: \"garbage\") { edges { cursor } } }",
                json!({}),
            )
            .await;
        assert_eq!(code_of(&cursor), Some("BAD_USER_INPUT"));

        // Too deep and too complex queries are refused before execution.
        let deep = format!("{{ {}__typename{} }}", "me { ".repeat(20), " }".repeat(20));
        let too_deep = server.graphql(Some(&admin), &deep, json!({})).await;
        assert!(too_deep["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("deep")
                || m.contains("depth")
                || m.contains("Unknown field")));
        // Under the alias limit, over the complexity limit: 30 pages of 100.
        let aliases: String = (0..30)
        .map(|i| format!("a{i}: organisations(first: 100) {{ edges {{ node {{ name region address }} }} }} "))
        .collect();
        let complex = server
            .graphql(Some(&admin), &format!("{{ {aliases} }}"), json!({}))
            .await;
        assert!(
            complex["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("complex")),
            "{complex}"
        );

        assert_eq!(
            test_db.journal.count().await.expect("count"),
            0,
            "nothing was written"
        );
        server.stop().await;
    }
);

conformance!(
    production_mode_hides_introspection_and_the_console,
    |test_db| async move {
        let production = kabinet_tests::server::production_config(&test_db.url);
        let server = Server::start(&test_db, |c| *c = production).await;
        let introspection = server
            .graphql(None, "{ __schema { queryType { name } } }", json!({}))
            .await;
        assert!(
            introspection["data"]["__schema"].is_null(),
            "{introspection}"
        );
        let page = server
            .client
            .http
            .get(format!("{}/", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(page.status().as_u16(), 404);
        let health = server
            .client
            .http
            .get(format!("{}/healthz", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(health.status().as_u16(), 200);
        let ready = server
            .client
            .http
            .get(format!("{}/readyz", server.base))
            .send()
            .await
            .expect("get");
        assert_eq!(ready.status().as_u16(), 200);
        let metrics = server
            .client
            .http
            .get(format!("{}/metrics", server.base))
            .bearer_auth(kabinet_tests::server::METRICS_TOKEN)
            .send()
            .await
            .expect("get")
            .text()
            .await
            .expect("text");
        assert!(metrics.contains("kabinet_projection_position{projection=\"activity_log\"}"));
        server.stop().await;
    }
);

#[tokio::test]
async fn production_refuses_to_start_without_a_strong_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let mut weak = ServeConfig::for_tests(&url, "short");
    weak.mode = Mode::Production;
    assert!(Application::build(weak).await.is_err());
    let mut missing = ServeConfig::for_tests(&url, SECRET);
    missing.mode = Mode::Production;
    missing.secret.jwt_secret = None;
    assert!(Application::build(missing).await.is_err());
}
