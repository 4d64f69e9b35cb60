//! GraphQL over WebSocket (`graphql-transport-ws`) the way a frontend speaks it.

use futures::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::server::Client;

/// A WebSocket to a test server.
pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql/ws` of the server of `client` with the `graphql-transport-ws` protocol.
pub async fn connect(client: &Client) -> Socket {
    try_connect(client).await.expect("connect")
}

/// [`connect`], returning the handshake's failure (a refused upgrade) to the test.
pub async fn try_connect(client: &Client) -> Result<Socket, tokio_tungstenite::tungstenite::Error> {
    let url = format!("{}/graphql/ws", client.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().expect("request");
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(ws, _)| ws)
}

/// The next text message as JSON, waiting at most 10 s; `None` once the
/// server closed the socket (with or without a closing handshake).
pub async fn next_json(ws: &mut Socket) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("a message within 10 s")?;
        match message {
            Ok(Message::Text(text)) => return Some(serde_json::from_str(&text).expect("json")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}
