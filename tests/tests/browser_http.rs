//! What a browser page on another origin meets, over HTTP: CORS preflights
//! and answers for allowed origins (local pages in development, the
//! configured ones in production), nothing for others, and protective
//! headers on every answer.

use kabinet_domain::Role;
use kabinet_tests::server::{production_config, Server};
use kabinet_tests::{conformance, TestDb};
use reqwest::header::HeaderMap;
use reqwest::Method;

/// The answer to a CORS preflight of a GraphQL POST with a bearer token.
async fn preflight(server: &Server, origin: &str) -> (u16, HeaderMap) {
    let response = server
        .client
        .http
        .request(Method::OPTIONS, format!("{}/graphql", server.client.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    (response.status().as_u16(), response.headers().clone())
}

/// The headers of a GraphQL POST sent by a page of `origin`.
async fn posted(server: &Server, origin: &str, token: &str) -> HeaderMap {
    let response = server
        .client
        .http
        .post(format!("{}/graphql", server.client.base))
        .header("origin", origin)
        .bearer_auth(token)
        .json(&serde_json::json!({ "query": "{ me { role } }" }))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status().as_u16(), 200);
    response.headers().clone()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

conformance!(
    local_pages_may_call_the_api_in_development,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let page = "http://localhost:5173";
        let (status, headers) = preflight(&server, page).await;
        assert!(
            status == 200 || status == 204,
            "preflight answered {status}"
        );
        assert_eq!(header(&headers, "access-control-allow-origin"), Some(page));
        assert_eq!(
            header(&headers, "access-control-allow-credentials"),
            Some("true")
        );
        let allowed = header(&headers, "access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );

        let token = server.token(Role::Patient, None);
        let answer = posted(&server, page, &token).await;
        assert_eq!(header(&answer, "access-control-allow-origin"), Some(page));
        let exposed = header(&answer, "access-control-expose-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(exposed.contains("x-request-id"), "{exposed}");
        assert_eq!(header(&answer, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&answer, "cache-control"), Some("no-store"));
        assert_eq!(header(&answer, "x-frame-options"), Some("DENY"));

        // A page of any other origin gets no permission to read.
        let (_, refused) = preflight(&server, "https://evil.example").await;
        assert_eq!(header(&refused, "access-control-allow-origin"), None);
        let other = posted(&server, "http://localhost.evil.example", &token).await;
        assert_eq!(header(&other, "access-control-allow-origin"), None);
        server.stop().await;
    }
);

conformance!(
    production_allows_only_the_configured_origins,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |c| {
            *c = production_config(&test_db.url);
            c.cors_origins = vec!["https://kabinet.example.ru".to_string()];
        })
        .await;
        let (_, allowed) = preflight(&server, "https://kabinet.example.ru").await;
        assert_eq!(
            header(&allowed, "access-control-allow-origin"),
            Some("https://kabinet.example.ru")
        );
        let (_, local) = preflight(&server, "http://localhost:5173").await;
        assert_eq!(header(&local, "access-control-allow-origin"), None);
        server.stop().await;
    }
);

/// A page that calls `server` with `query` over `fetch` (and, with a token,
/// opens a subscription socket), writing what it got into the DOM.
fn calling_page(server: &str, query: &str, token: Option<&str>) -> String {
    let authorization = token
        .map(|t| format!("'Authorization': 'Bearer {t}',"))
        .unwrap_or_default();
    let socket = match token {
        Some(t) => format!(
            "const ws = new WebSocket('{ws}/graphql/ws', 'graphql-transport-ws');
             ws.onopen = () => ws.send(JSON.stringify({{ type: 'connection_init', payload: {{ authorization: 'Bearer {t}' }} }}));
             ws.onmessage = (m) => {{ document.getElementById('socket').textContent = 'SOCKET ' + JSON.parse(m.data).type; }};
             ws.onclose = () => {{ const s = document.getElementById('socket'); if (s.textContent === 'no socket') s.textContent = 'SOCKET closed'; }};",
            ws = server.replacen("http://", "ws://", 1)
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html><html><body><pre id=\"answer\">waiting</pre><pre id=\"socket\">no socket</pre><script>
         fetch('{server}/graphql', {{ method: 'POST',
             headers: {{ {authorization} 'Content-Type': 'application/json' }},
             body: JSON.stringify({{ query: '{query}' }}) }})
           .then(r => r.json())
           .then(j => {{ document.getElementById('answer').textContent = 'ANSWER ' + JSON.stringify(j); }})
           .catch(e => {{ document.getElementById('answer').textContent = 'REFUSED ' + e; }});
         {socket}
         {hold}
         holdUntil(() => document.getElementById('answer').textContent !== 'waiting'
             && {socket_done});
         </script></body></html>",
        hold = kabinet_tests::browser::HOLD_UNTIL_JS,
        socket_done = if token.is_some() {
            "document.getElementById('socket').textContent !== 'no socket'"
        } else {
            "true"
        },
    )
}

conformance!(
    a_browser_page_on_another_origin_calls_the_api_and_subscribes,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let token = server.token(Role::Patient, None);
        let host = kabinet_tests::browser::PageHost::bind().await;
        let page = calling_page(&server.client.base, "{ me { role } }", Some(&token));
        let Some(dom) = host.render(&page).await else {
            server.stop().await;
            return;
        };
        assert!(
            dom.contains(r#"ANSWER {"data":{"me":{"role":"PATIENT"}}}"#),
            "{dom}"
        );
        assert!(dom.contains("SOCKET connection_ack"), "{dom}");
        server.stop().await;
    }
);

conformance!(
    a_browser_page_reads_answers_only_from_configured_origins_in_production,
    |test_db: TestDb| async move {
        let allowed = kabinet_tests::browser::PageHost::bind().await;
        let origin = allowed.origin.clone();
        let server = Server::start(&test_db, |c| {
            *c = production_config(&test_db.url);
            c.cors_origins = vec![origin];
        })
        .await;
        let page = calling_page(&server.client.base, "{ __typename }", None);
        let Some(dom) = allowed.render(&page).await else {
            server.stop().await;
            return;
        };
        assert!(
            dom.contains(r#"ANSWER {"data":{"__typename":"Query"}}"#),
            "{dom}"
        );
        let other = kabinet_tests::browser::PageHost::bind().await;
        let dom = other
            .render(&page)
            .await
            .expect("chromium ran once already");
        assert!(dom.contains("REFUSED TypeError"), "{dom}");
        server.stop().await;
    }
);

conformance!(
    the_development_console_works_without_the_internet,
    |test_db: TestDb| async move {
        let server = Server::start(&test_db, |_| {}).await;
        let page = server
            .client
            .http
            .get(format!("{}/", server.client.base))
            .send()
            .await
            .expect("console")
            .text()
            .await
            .expect("html");
        // Nothing is loaded from elsewhere: no script, style or font address.
        assert!(
            !page.contains("src=\"http") && !page.contains("href=\"http"),
            "{page}"
        );
        let Some(dom) = kabinet_tests::browser::dump_dom(&format!("{}/", server.client.base)).await
        else {
            server.stop().await;
            return;
        };
        // On load the page asked the server for its root fields and listed them.
        assert!(
            dom.contains("<li title=") && dom.contains(">doctors</li>"),
            "{dom}"
        );
        assert!(dom.contains(">mutation bookAppointment</li>"), "{dom}");
        server.stop().await;
    }
);
