//! Real delivery endpoints for end-to-end tests: a local SMTP server
//! (Debian's python3-aiosmtpd writing a Maildir) and a local SMS gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::Value;

/// The bearer token the test SMS gateway demands.
pub const SMS_TOKEN: &str = "sms-gateway-test-token";

/// The first standalone run of exactly six digits in `text`.
pub fn six_digits(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 6 {
                return Some(text[start..i].to_string());
            }
        } else {
            i += 1;
        }
    }
    None
}

/// The code in the last message an in-memory notifier sent to `phone`.
pub fn last_code(notifier: &kabinet_domain::notify::MemoryNotifier, phone: &str) -> String {
    let message = notifier
        .sent()
        .into_iter()
        .rev()
        .find(|m| m.to == phone)
        .expect("an SMS was sent");
    six_digits(&message.body).expect("a six-digit code in the SMS")
}

/// Messages received so far: (recipient, text).
type Inbox = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP SMS gateway that keeps what it receives.
pub struct SmsReceiver {
    pub url: String,
    received: Inbox,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(
    State(received): State<Inbox>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> StatusCode {
    let authorised = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {SMS_TOKEN}"));
    if !authorised {
        return StatusCode::UNAUTHORIZED;
    }
    let (Some(to), Some(text)) = (body["to"].as_str(), body["text"].as_str()) else {
        return StatusCode::BAD_REQUEST;
    };
    received
        .lock()
        .expect("lock")
        .push((to.to_string(), text.to_string()));
    StatusCode::ACCEPTED
}

impl SmsReceiver {
    /// Listens on a free local port.
    pub async fn start() -> SmsReceiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/sms", post(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        SmsReceiver {
            url: format!("http://{addr}/sms"),
            received,
            task,
        }
    }

    /// Every message sent to `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<String> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|(t, _)| t == to)
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// Waits for message number `n` (counting from 1) to `to` and returns it.
    pub async fn nth_message_to(&self, to: &str, n: usize) -> String {
        for _ in 0..100 {
            if let Some(m) = self.messages_to(to).get(n - 1) {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no SMS number {n} to {to} arrived");
    }

    /// The code in the newest message to `to`.
    pub async fn last_code_to(&self, to: &str) -> String {
        let n = self.messages_to(to).len().max(1);
        let text = self.nth_message_to(to, n).await;
        six_digits(&text).unwrap_or_else(|| panic!("no code in {text:?}"))
    }
}

impl Drop for SmsReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `raw` (an RFC 5322 message) with its body decoded from base64 or
/// quoted-printable, as a mail client shows it; messages in Russian travel encoded.
fn decoded(raw: &str) -> String {
    use base64::Engine;
    let Some(split) = raw
        .find("\r\n\r\n")
        .map(|at| (at, 4))
        .or_else(|| raw.find("\n\n").map(|at| (at, 2)))
    else {
        return raw.to_string();
    };
    let (head, body) = (&raw[..split.0], &raw[split.0 + split.1..]);
    let encoding = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-transfer-encoding")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default();
    let body = match encoding.as_str() {
        "base64" => {
            let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
            match base64::engine::general_purpose::STANDARD.decode(compact) {
                Ok(bytes) => String::from_utf8_lossy(&bytes).to_string(),
                Err(_) => body.to_string(),
            }
        }
        "quoted-printable" => {
            let joined = body.replace("=\r\n", "").replace("=\n", "");
            let bytes = joined.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (bytes[i], hex) {
                    (b'=', Some(byte)) => {
                        out.push(byte);
                        i += 3;
                    }
                    (b, _) => {
                        out.push(b);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).to_string()
        }
        _ => body.to_string(),
    };
    format!("{head}\r\n\r\n{body}")
}

/// A local SMTP server (python3-aiosmtpd) that writes each message to a Maildir.
pub struct SmtpServer {
    pub url: String,
    dir: tempfile::TempDir,
    child: tokio::process::Child,
}

const PYTHON: &str = "/usr/bin/python3";

impl SmtpServer {
    /// Starts aiosmtpd on a free port; `None` (after saying SKIPPED) when it is
    /// not installed outside CI. Under `CI=true` a missing aiosmtpd fails the test.
    pub async fn start() -> Option<SmtpServer> {
        SmtpServer::start_with("smtp", &[]).await
    }

    /// [`SmtpServer::start`] with more aiosmtpd options (e.g. its TLS
    /// certificate), reached at `scheme://127.0.0.1:port`.
    pub async fn start_with(scheme: &str, options: &[&std::ffi::OsStr]) -> Option<SmtpServer> {
        let available = std::process::Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !available {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "python3-aiosmtpd is required under CI=true (apt-get install -y python3-aiosmtpd)"
            );
            eprintln!(
                "SKIPPED (python3-aiosmtpd not installed: apt-get install -y python3-aiosmtpd)"
            );
            return None;
        }
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
            listener.local_addr().expect("addr").port()
        };
        let dir = tempfile::tempdir().expect("mail dir");
        let maildir: PathBuf = dir.path().join("mail");
        let child = tokio::process::Command::new(PYTHON)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(options)
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start aiosmtpd");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Some(SmtpServer {
                    url: format!("{scheme}://127.0.0.1:{port}"),
                    dir,
                    child,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("aiosmtpd did not start on port {port}");
    }

    /// Every received message (raw RFC 5322 text) addressed to `to`, oldest first.
    pub fn messages_to(&self, to: &str) -> Vec<String> {
        let new = self.dir.path().join("mail").join("new");
        let mut files: Vec<(std::time::SystemTime, String, String)> = std::fs::read_dir(&new)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| {
                        let modified = e.metadata().ok()?.modified().ok()?;
                        let name = e.file_name().to_string_lossy().to_string();
                        let text = std::fs::read_to_string(e.path()).ok()?;
                        Some((modified, name, text))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, _, text)| decoded(&text))
            .filter(|text| {
                text.lines()
                    .any(|l| l.to_ascii_lowercase().starts_with("to:") && l.contains(to))
            })
            .collect()
    }

    /// Waits for message number `n` (from 1) to `to`.
    pub async fn nth_message_to(&self, to: &str, n: usize) -> String {
        for _ in 0..100 {
            if let Some(m) = self.messages_to(to).get(n - 1) {
                return m.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no e-mail number {n} to {to} arrived");
    }

    /// The code in the body of message number `n` to `to`.
    pub async fn code_in(&self, to: &str, n: usize) -> String {
        let text = self.nth_message_to(to, n).await.replace("\r\n", "\n");
        let body = text.split_once("\n\n").map(|(_, b)| b).unwrap_or(&text);
        six_digits(body).unwrap_or_else(|| panic!("no code in {body:?}"))
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
