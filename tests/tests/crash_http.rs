//! A server killed with SIGKILL while clients write: every acknowledged write is
//! in the journal, the chain is intact, and the read models catch up on restart.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kabinet_domain::journal::verify::verify_journal;
use kabinet_domain::Role;
use kabinet_tests::conformance;
use kabinet_tests::server::ServerProcess;
use serde_json::json;

const REGISTER: &str =
    "mutation($input: RegisterOrganisationInput!) { registerOrganisation(input: $input) {
    organisation { id } userErrors { code } } }";

conformance!(
    acknowledged_writes_survive_a_killed_server,
    |test_db| async move {
        let binary = env!("CARGO_BIN_EXE_kabinet-server");
        let server = ServerProcess::start(binary, &test_db.url).await;
        let admin = server.token(Role::Admin, None);
        let acknowledged: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut writers = Vec::new();
        for writer in 0..8 {
            let (client, admin, acknowledged) =
                (server.client.clone(), admin.clone(), acknowledged.clone());
            writers.push(tokio::spawn(async move {
            for i in 0..1000 {
                let input = json!({ "input": { "details": {
                    "name": format!("Поликлиника {writer}-{i}"), "region": "Москва", "address": "ул. Ленина, 1",
                    "timeZone": "Europe/Moscow", "workingHours": "8-20", "departments": [], "specialisations": [] } } });
                let body = serde_json::to_vec(&json!({ "query": REGISTER, "variables": input })).expect("json");
                // After the kill, requests fail: stop writing.
                let Ok(response) = client
                    .http
                    .post(format!("{}/graphql", client.base))
                    .bearer_auth(&admin)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                else {
                    return;
                };
                let Ok(value) = response.json::<serde_json::Value>().await else { return };
                if let Some(id) = value["data"]["registerOrganisation"]["organisation"]["id"].as_str() {
                    acknowledged.lock().expect("lock").insert(id.to_string());
                }
            }
        }));
        }
        // Let the writers get going, then kill the server mid-flight.
        for _ in 0..200 {
            if acknowledged.lock().expect("lock").len() >= 40 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        server.kill().await;
        for writer in writers {
            writer.await.expect("writer");
        }
        let acknowledged = acknowledged.lock().expect("lock").clone();
        assert!(
            acknowledged.len() >= 40,
            "writers made progress before the kill"
        );

        // Every acknowledged organisation is in the journal.
        let ids: HashSet<String> = kabinet_domain::on_db!(&test_db.db, pool => {
        sqlx::query_scalar::<_, String>("SELECT aggregate_id FROM events WHERE aggregate_type = 'organisation'")
            .fetch_all(pool)
            .await
            .expect("ids")
    })
    .into_iter()
    .collect();
        for global in &acknowledged {
            let uuid =
                kabinet_graphql::schema::ids::decode_as(global, "Organisation").expect("uuid");
            assert!(
                ids.contains(&uuid.to_string()),
                "acknowledged organisation {uuid} was lost"
            );
        }
        let report = verify_journal(&test_db.db, |_| {}).await.expect("verify");
        assert!(report.is_intact(), "{:?}", report.first_break);

        // A restarted server catches its read models up with everything.
        let restarted = ServerProcess::start(binary, &test_db.url).await;
        // Writes in flight at the kill may still have committed after the reading
        // above (unacknowledged, which is allowed): count again now.
        let journal_count = test_db.journal.count().await.expect("count") as usize;
        assert!(journal_count >= ids.len());
        let mut listed = 0;
        for _ in 0..100 {
            let mut after: Option<String> = None;
            listed = 0;
            loop {
                let page = restarted
                .data(None, "query($after: String) { organisations(first: 100, after: $after) { edges { cursor } pageInfo { hasNextPage endCursor } } }",
                    json!({ "after": after }))
                .await;
                listed += page["organisations"]["edges"]
                    .as_array()
                    .map_or(0, Vec::len);
                if page["organisations"]["pageInfo"]["hasNextPage"] != true {
                    break;
                }
                after = page["organisations"]["pageInfo"]["endCursor"]
                    .as_str()
                    .map(str::to_string);
            }
            if listed == journal_count {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            listed, journal_count,
            "the directory shows every organisation in the journal"
        );
        restarted.kill().await;
    }
);
