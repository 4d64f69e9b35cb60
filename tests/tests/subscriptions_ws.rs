//! Subscriptions over WebSocket (`graphql-transport-ws`): the activity feed
//! pushes new entries of the caller's log, and a bad token is refused.

use futures::{SinkExt, StreamExt};
use kabinet_domain::Role;
use kabinet_tests::conformance;
use kabinet_tests::server::Server;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

async fn connect(
    server: &Server,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let url = format!("{}/graphql/ws", server.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .expect("connect")
        .0
}

async fn next_json(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")?;
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).expect("json")),
            // Closed, with or without a closing handshake.
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

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
