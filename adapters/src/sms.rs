//! SMS through an HTTP gateway: `POST {url}` with a bearer token and the JSON
//! body `{"to": "+7XXXXXXXXXX", "text": "…"}`; any non-2xx answer is a failure.

use async_trait::async_trait;

use kabinet_domain::notify::{Channel, Message, Notifier, NotifyError};

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
    /// A notifier posting to `url`, authorised by `token` when given.
    pub fn new(url: &str, token: Option<String>) -> Result<SmsGatewayNotifier, NotifyError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(failed(
                "the SMS gateway URL must start with http:// or https://",
            ));
        }
        // Connecting, and the whole exchange, each have a deadline.
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(failed)?;
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
        let response = request.send().await.map_err(|e| failed(e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("the gateway answered {status}")));
        }
        Ok(())
    }
}
