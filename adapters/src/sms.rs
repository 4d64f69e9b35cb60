//! SMS through an HTTP gateway: `POST {url}` with a bearer token and the JSON
//! body `{"to": "+7XXXXXXXXXX", "text": "…"}`; any non-2xx answer is a failure.
//! `https://` gateways are reached over rustls; connecting, each read and the
//! whole call have their own deadlines (see [`Timeouts`]).

use async_trait::async_trait;

use kabinet_domain::notify::{Channel, Message, Notifier, NotifyError};

use crate::outbound::{CaBundle, Timeouts};

/// The default time limits of one call to the gateway.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: std::time::Duration::from_secs(5),
    read: std::time::Duration::from_secs(10),
    total: std::time::Duration::from_secs(15),
};

/// Sends SMS through one HTTP gateway.
#[derive(Clone)]
pub struct SmsGatewayNotifier {
    http: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl std::fmt::Debug for SmsGatewayNotifier {
    // The token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmsGatewayNotifier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

fn failed(reason: impl std::fmt::Display) -> NotifyError {
    NotifyError {
        channel: "sms",
        reason: reason.to_string(),
    }
}

impl SmsGatewayNotifier {
    /// A notifier posting to `url`, authorised by `token` when given, trusting
    /// the public certificate authorities, with the default [`TIMEOUTS`].
    pub fn new(url: &str, token: Option<String>) -> Result<SmsGatewayNotifier, NotifyError> {
        SmsGatewayNotifier::with_options(url, token, None, TIMEOUTS)
    }

    /// A notifier posting to `url`, trusting only the authorities of `roots`
    /// when given, within `timeouts`.
    pub fn with_options(
        url: &str,
        token: Option<String>,
        roots: Option<&CaBundle>,
        timeouts: Timeouts,
    ) -> Result<SmsGatewayNotifier, NotifyError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(failed(
                "the SMS gateway URL must start with http:// or https://",
            ));
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(timeouts.connect)
            .read_timeout(timeouts.read)
            .timeout(timeouts.total);
        if let Some(roots) = roots {
            builder = builder.tls_built_in_root_certs(false);
            let certificates = reqwest::Certificate::from_pem_bundle(roots.pem())
                .map_err(|e| failed(format!("the SMS CA file is not usable: {e}")))?;
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(failed)?;
        Ok(SmsGatewayNotifier {
            http,
            url: url.to_string(),
            token,
        })
    }
}

#[async_trait]
impl Notifier for SmsGatewayNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        if message.channel != Channel::Sms {
            return Err(failed("the SMS gateway carries SMS only"));
        }
        let mut request = self
            .http
            .post(&self.url)
            .json(&serde_json::json!({ "to": message.to, "text": message.body }));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| failed(why(e)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("the gateway answered {status}")));
        }
        Ok(())
    }
}

/// The reason a call failed, with its causes (a TLS refusal sits deep in the
/// chain) and without the URL, which may carry a key.
fn why(error: reqwest::Error) -> String {
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut reason = error.to_string();
    let mut cause = std::error::Error::source(&error);
    while let Some(inner) = cause {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        cause = inner.source();
    }
    if timed_out {
        reason.push_str(" (the gateway did not answer in time)");
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gateway_silent_after_connecting_fails_by_the_read_timeout() {
        let gateway = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = gateway.local_addr().expect("addr").port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = gateway.accept().await {
                open.push(socket);
            }
        });
        let notifier = SmsGatewayNotifier::with_options(
            &format!("http://127.0.0.1:{port}/sms"),
            None,
            None,
            Timeouts {
                connect: std::time::Duration::from_millis(200),
                read: std::time::Duration::from_millis(200),
                total: std::time::Duration::from_secs(60),
            },
        )
        .expect("notifier");
        let message = Message {
            channel: Channel::Sms,
            to: "+79161234567".into(),
            subject: String::new(),
            body: "Код 123456".into(),
        };
        let error =
            tokio::time::timeout(std::time::Duration::from_secs(10), notifier.send(&message))
                .await
                .expect("the call ends by its read timeout")
                .expect_err("nothing was delivered");
        assert!(
            error.reason.contains("did not answer in time"),
            "{}",
            error.reason
        );
        held.abort();
    }
}
