//! E-mail over SMTP (lettre): plain SMTP to a configured relay (a local MTA or
//! a relay on a trusted network; TLS is left to that relay, which keeps the
//! build free of a TLS stack), credentials from the URL's user info.

use async_trait::async_trait;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use kabinet_domain::notify::{Channel, Message, Notifier, NotifyError};

/// Sends e-mail through one SMTP relay.
#[derive(Clone)]
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// Longest one message may take, from connecting to the relay's last answer.
    deadline: std::time::Duration,
}

/// How long one message may take in all: the transport's own timeout guards
/// connecting, and a relay that accepts and then never answers must not hold a
/// delivery (and those queued behind it) for good.
pub const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

impl std::fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier").finish_non_exhaustive()
    }
}

fn failed(reason: impl std::fmt::Display) -> NotifyError {
    NotifyError {
        channel: "email",
        reason: reason.to_string(),
    }
}

impl SmtpNotifier {
    /// A notifier for `url` (`smtp://[user:pass@]host:port`) sending as `from`.
    pub fn new(url: &str, from: &str) -> Result<SmtpNotifier, NotifyError> {
        let Some(rest) = url.strip_prefix("smtp://") else {
            return Err(failed("the SMTP URL must start with smtp://"));
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| failed(format!("the SMTP port '{port}' is not a number")))?,
            ),
            None => (hostport, 25),
        };
        if host.is_empty() {
            return Err(failed("the SMTP URL names no host"));
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .timeout(Some(std::time::Duration::from_secs(15)));
        if let Some(userinfo) = userinfo {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            builder = builder.credentials(Credentials::new(user.to_string(), pass.to_string()));
        }
        let from: Mailbox = from
            .parse()
            .map_err(|e| failed(format!("the sender address is not valid: {e}")))?;
        Ok(SmtpNotifier {
            transport: builder.build(),
            from,
            deadline: SEND_DEADLINE,
        })
    }

    /// The same notifier with another deadline for one message.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> SmtpNotifier {
        self.deadline = deadline;
        self
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        if message.channel != Channel::Email {
            return Err(failed("the SMTP adapter carries e-mail only"));
        }
        let to: Mailbox = message
            .to
            .parse()
            .map_err(|e| failed(format!("the recipient address is not valid: {e}")))?;
        let email = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(message.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(message.body.clone())
            .map_err(failed)?;
        tokio::time::timeout(self.deadline, self.transport.send(email))
            .await
            .map_err(|_| {
                failed(format!(
                    "the mail relay did not finish within {} s",
                    self.deadline.as_secs_f32()
                ))
            })?
            .map_err(failed)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_relay_that_never_answers_fails_the_message_within_its_deadline() {
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = relay.local_addr().expect("addr").port();
        // Accepts connections and keeps them open without a word.
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = relay.accept().await {
                open.push(socket);
            }
        });
        let notifier =
            SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "no-reply@kabinet.test")
                .expect("notifier")
                .with_deadline(std::time::Duration::from_millis(300));
        let message = Message {
            channel: Channel::Email,
            to: "oleg@example.ru".into(),
            subject: "Проверка".into(),
            body: "Текст".into(),
        };
        let answer =
            tokio::time::timeout(std::time::Duration::from_secs(10), notifier.send(&message))
                .await
                .expect("the send ends by its own deadline");
        let error = answer.expect_err("nothing was delivered");
        assert!(error.reason.contains("did not finish"), "{}", error.reason);
        held.abort();
    }
}
