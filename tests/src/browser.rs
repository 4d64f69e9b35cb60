//! A real browser for end-to-end tests: headless Chromium (Debian's
//! `chromium`) loads a page served from an origin of its own and the test
//! reads the page's DOM after its scripts ran.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// How long the page host holds a `GET /hold` before answering it.
const HOLD: Duration = Duration::from_millis(100);

/// A script for pages that wait on something Chromium's virtual clock does not
/// wait for (a WebSocket's answers): `await holdUntil(() => condition)` keeps a
/// request to the page host open, 100 ms of real time at a time, until the
/// condition holds or about 30 s have passed. Page time stands still while a
/// request is pending, so the page is not dumped before the answer arrives,
/// however slow the machine.
pub const HOLD_UNTIL_JS: &str = "async function holdUntil(done) { \
    for (let i = 0; i < 300 && !done(); i++) { \
        try { await fetch('/hold', { cache: 'no-store' }); } catch (e) { return; } \
    } }";

/// Serves one page on a port of its own, so the page's origin differs from
/// the server it calls.
pub struct PageHost {
    listener: TcpListener,
    /// `http://127.0.0.1:PORT`, the origin of the page.
    pub origin: String,
}

impl PageHost {
    /// A host on a free port of 127.0.0.1.
    pub async fn bind() -> PageHost {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        PageHost {
            listener,
            origin: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Loads `html` from this host in headless Chromium, lets its scripts run
    /// (up to a few seconds of page time; see [`HOLD_UNTIL_JS`] to wait longer)
    /// and returns the DOM.
    ///
    /// `None` (after printing "SKIPPED …") when Chromium is not installed
    /// outside CI; under `CI=true` a missing Chromium fails the test.
    pub async fn render(self, html: &str) -> Option<String> {
        let body = html.to_string();
        let listener = self.listener;
        let serving = tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let read = socket.read(&mut request).await.unwrap_or(0);
                    if request[..read].starts_with(b"GET /hold ") {
                        // Real time passes while the page's clock stands still.
                        tokio::time::sleep(HOLD).await;
                        let _ = socket
                            .write_all(
                                b"HTTP/1.1 204 No Content\r\ncache-control: no-store\r\nconnection: close\r\n\r\n",
                            )
                            .await;
                        return;
                    }
                    let head = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                });
            }
        });
        let dom = dump_dom(&format!("{}/", self.origin)).await;
        serving.abort();
        dom
    }
}

/// Loads `url` in headless Chromium, lets its scripts run (up to a few seconds
/// of page time) and returns the DOM; `None` (after printing "SKIPPED …") when
/// Chromium is not installed outside CI, a failure under `CI=true`.
pub async fn dump_dom(url: &str) -> Option<String> {
    let profile = tempfile::tempdir().expect("profile dir");
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(60), run).await {
        Err(_) => panic!("chromium did not finish within a minute"),
        Ok(Err(e)) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("chromium is required under CI (install chromium): {e}");
            }
            println!("SKIPPED (chromium not installed: {e}; install chromium)");
            None
        }
        Ok(Ok(output)) => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
    }
}
