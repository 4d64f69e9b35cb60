//! Subscriptions over WebSocket (`graphql-transport-ws`): the activity feed
//! pushes new entries of the caller's log, and a bad token is refused.

use futures::SinkExt;
use kabinet_domain::Role;
use kabinet_tests::conformance;
use kabinet_tests::server::Server;
use kabinet_tests::ws::{connect, next_json};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

conformance!(the_activity_feed_pushes_new_entries, |test_db| async move {
    let server = Server::start(&test_db, |_| {}).await;
    let admin = server.token(Role::Admin, None);
    let mut ws = connect(&server).await;
    let init = json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {admin}") } });
    ws.send(Message::Text(init.to_string()))
        .await
        .expect("send");
    assert_eq!(
        next_json(&mut ws).await.expect("ack")["type"],
        "connection_ack"
    );
    let subscribe = json!({ "id": "1", "type": "subscribe",
        "payload": { "query": "subscription { activityFeed { action objectType status } }" } });
    ws.send(Message::Text(subscribe.to_string()))
        .await
        .expect("send");
    // Give the subscription a moment to start before acting.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let registered = server
        .data(Some(&admin), "mutation($input: RegisterOrganisationInput!) { registerOrganisation(input: $input) { organisation { id } } }",
            json!({ "input": { "details": { "name": "Поликлиника WS", "region": "Москва", "address": "ул. Ленина, 1",
                "timeZone": "Europe/Moscow", "workingHours": "8-20", "departments": [], "specialisations": [] } } }))
        .await;
    assert!(registered["registerOrganisation"]["organisation"]["id"].is_string());
    let pushed = next_json(&mut ws).await.expect("next");
    assert_eq!(pushed["type"], "next", "{pushed}");
    assert_eq!(
        pushed["payload"]["data"]["activityFeed"],
        json!({ "action": "OrganisationRegistered", "objectType": "ORGANISATION", "status": "registered" })
    );
    server.stop().await;
});

conformance!(
    a_bad_token_is_refused_at_connection_init,
    |test_db| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let mut ws = connect(&server).await;
        let init = json!({ "type": "connection_init", "payload": { "authorization": "Bearer not-a-token" } });
        ws.send(Message::Text(init.to_string()))
            .await
            .expect("send");
        // The server closes the connection instead of acknowledging it.
        match next_json(&mut ws).await {
            None => {}
            Some(message) => assert_ne!(message["type"], "connection_ack", "{message}"),
        }
        server.stop().await;
    }
);
