//! E-mail over SMTP (lettre with rustls).
//!
//! The relay is named by a URL, credentials in its user info:
//! - `smtps://host[:465]`: TLS from the first byte (implicit TLS);
//! - `smtp://host[:25]?tls=required`: STARTTLS, and no message without it;
//! - `smtp://host?tls=opportunistic`: STARTTLS when the relay offers it;
//! - `smtp://host?tls=none`: plain text;
//! - `smtp://host` alone: plain text to this machine's loopback (a local MTA),
//!   STARTTLS required to any other host.
//!
//! Each exchange with the relay has a deadline (see [`Timeouts`]), so a relay
//! that accepts and never answers fails the message instead of holding it.

use async_trait::async_trait;
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;

use kabinet_domain::notify::{Channel, Message, Notifier, NotifyError};

use crate::outbound::{is_loopback_host, CaBundle, Timeouts};

/// How long one message may take in all, from connecting to the relay's last answer.
pub const SEND_DEADLINE: std::time::Duration = std::time::Duration::from_secs(30);

/// The default time limits of one message.
pub const TIMEOUTS: Timeouts = Timeouts {
    connect: std::time::Duration::from_secs(10),
    read: std::time::Duration::from_secs(15),
    total: SEND_DEADLINE,
};

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    /// TLS from the first byte (`smtps://`).
    Implicit,
    /// STARTTLS, required before anything is sent.
    StartTls,
    /// STARTTLS when the relay offers it, plain text otherwise.
    Opportunistic,
    /// Plain text.
    Plain,
}

/// A parsed SMTP relay URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
    pub security: Security,
    user: Option<(String, String)>,
}

impl std::fmt::Debug for SmtpUrl {
    // The user info holds a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("credentials", &self.user.is_some())
            .finish()
    }
}

fn failed(reason: impl std::fmt::Display) -> NotifyError {
    NotifyError {
        channel: "email",
        reason: reason.to_string(),
    }
}

impl SmtpUrl {
    /// Parses `smtp://` and `smtps://` URLs (see the module documentation).
    pub fn parse(url: &str) -> Result<SmtpUrl, NotifyError> {
        let (implicit, rest) = if let Some(rest) = url.strip_prefix("smtps://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("smtp://") {
            (false, rest)
        } else {
            return Err(failed("the SMTP URL must start with smtp:// or smtps://"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let rest = rest.trim_end_matches('/');
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((user, host)) => (Some(user), host),
            None => (None, rest),
        };
        let (host, port) = split_host_port(hostport)?;
        let port = port.unwrap_or(if implicit { 465 } else { 25 });
        if host.is_empty() {
            return Err(failed("the SMTP URL names no host"));
        }
        let mut tls = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", value)) if tls.is_none() => tls = Some(value),
                Some(("tls", _)) => return Err(failed("the SMTP URL names tls= twice")),
                _ => {
                    return Err(failed(format!(
                        "the SMTP URL parameter '{pair}' is not known (only tls= is)"
                    )))
                }
            }
        }
        let security = match (implicit, tls) {
            (true, None | Some("implicit")) => Security::Implicit,
            (true, Some(other)) => {
                return Err(failed(format!(
                    "smtps:// always speaks TLS; tls={other} contradicts it"
                )))
            }
            (false, Some("required")) => Security::StartTls,
            (false, Some("opportunistic")) => Security::Opportunistic,
            (false, Some("none")) => Security::Plain,
            (false, Some(other)) => {
                return Err(failed(format!(
                    "tls={other} is not known: use tls=required, tls=opportunistic or tls=none"
                )))
            }
            (false, None) if is_loopback_host(host) => Security::Plain,
            (false, None) => Security::StartTls,
        };
        let user = userinfo.map(|userinfo| {
            let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (user.to_string(), pass.to_string())
        });
        Ok(SmtpUrl {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            security,
            user,
        })
    }

    /// Whether messages may cross a network in clear text: plain or
    /// opportunistic (which an attacker on the path can strip) to a host that
    /// is not this machine's loopback.
    pub fn clear_text_off_this_machine(&self) -> bool {
        matches!(self.security, Security::Plain | Security::Opportunistic)
            && !is_loopback_host(&self.host)
    }
}

/// `host[:port]`, with IPv6 addresses in brackets.
fn split_host_port(hostport: &str) -> Result<(&str, Option<u16>), NotifyError> {
    let (host, port) = if hostport.starts_with('[') {
        match hostport.split_once(']') {
            Some((v6, "")) => (&hostport[..v6.len() + 1], None),
            Some((v6, port)) => match port.strip_prefix(':') {
                Some(port) => (&hostport[..v6.len() + 1], Some(port)),
                None => return Err(failed("the SMTP URL has text after its IPv6 address")),
            },
            None => return Err(failed("the SMTP URL's IPv6 address has no closing ]")),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    let port = port
        .map(|port| {
            port.parse::<u16>()
                .map_err(|_| failed(format!("the SMTP port '{port}' is not a number")))
        })
        .transpose()?;
    Ok((host, port))
}

/// Sends e-mail through one SMTP relay.
#[derive(Clone)]
pub struct SmtpNotifier {
    url: SmtpUrl,
    credentials: Option<Credentials>,
    /// Absent for plain relays.
    tls: Option<TlsParameters>,
    from: Mailbox,
    timeouts: Timeouts,
}

impl std::fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("url", &self.url)
            .field("timeouts", &self.timeouts)
            .finish_non_exhaustive()
    }
}

fn tls_parameters(host: &str, roots: Option<&CaBundle>) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(host.to_string());
    if let Some(roots) = roots {
        let certificate = Certificate::from_pem(roots.pem())
            .map_err(|e| failed(format!("the SMTP CA file is not usable: {e}")))?;
        builder = builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| failed(format!("cannot set up TLS to the mail relay: {e}")))
}

impl SmtpNotifier {
    /// A notifier for `url` (see the module documentation) sending as `from`,
    /// trusting the public certificate authorities.
    pub fn new(url: &str, from: &str) -> Result<SmtpNotifier, NotifyError> {
        let url = SmtpUrl::parse(url)?;
        let tls = match url.security {
            Security::Plain => None,
            _ => Some(tls_parameters(&url.host, None)?),
        };
        let credentials = url
            .user
            .as_ref()
            .map(|(user, pass)| Credentials::new(user.clone(), pass.clone()));
        let from: Mailbox = from
            .parse()
            .map_err(|e| failed(format!("the sender address is not valid: {e}")))?;
        Ok(SmtpNotifier {
            url,
            credentials,
            tls,
            from,
            timeouts: TIMEOUTS,
        })
    }

    /// The same notifier trusting only the authorities of `roots`.
    pub fn trusting(mut self, roots: &CaBundle) -> Result<SmtpNotifier, NotifyError> {
        if self.tls.is_some() {
            self.tls = Some(tls_parameters(&self.url.host, Some(roots))?);
        }
        Ok(self)
    }

    /// The same notifier with other time limits.
    pub fn with_timeouts(mut self, timeouts: Timeouts) -> SmtpNotifier {
        self.timeouts = timeouts;
        self
    }

    /// The same notifier with another deadline for one whole message.
    pub fn with_deadline(mut self, deadline: std::time::Duration) -> SmtpNotifier {
        self.timeouts.total = deadline;
        self
    }

    /// The relay this notifier sends through.
    pub fn url(&self) -> &SmtpUrl {
        &self.url
    }

    /// One SMTP session: connect (and TLS), STARTTLS where asked, sign in,
    /// hand over the message, say goodbye; each step within its own limit.
    async fn deliver(&self, envelope: &Envelope, raw: &[u8]) -> Result<(), NotifyError> {
        let Timeouts { connect, read, .. } = self.timeouts;
        let hello = ClientId::default();
        let implicit = match self.url.security {
            Security::Implicit => self.tls.clone(),
            _ => None,
        };
        // Connecting includes the TLS handshake, the greeting and EHLO.
        let mut connection = within(
            connect + read,
            "connecting",
            AsyncSmtpConnection::connect_tokio1(
                (self.url.host.as_str(), self.url.port),
                Some(connect),
                &hello,
                implicit,
                None,
            ),
        )
        .await?;
        let upgrade = match self.url.security {
            Security::StartTls if !connection.can_starttls() => {
                return Err(failed(
                    "the mail relay does not offer STARTTLS, which its URL requires",
                ))
            }
            Security::StartTls => true,
            Security::Opportunistic => connection.can_starttls(),
            Security::Implicit | Security::Plain => false,
        };
        if upgrade {
            if let Some(tls) = self.tls.clone() {
                within(read, "STARTTLS", connection.starttls(tls, &hello)).await?;
            }
        }
        if let Some(credentials) = &self.credentials {
            within(
                read,
                "signing in",
                connection.auth(DEFAULT_MECHANISMS, credentials),
            )
            .await?;
        }
        // MAIL, RCPT, DATA and the message itself: four exchanges.
        within(
            read * 4,
            "handing over the message",
            connection.send(envelope, raw),
        )
        .await?;
        // The message is accepted; a relay slow to say goodbye changes nothing.
        let _ = tokio::time::timeout(read, connection.quit()).await;
        Ok(())
    }
}

/// Runs one step of the session within `limit`.
async fn within<T>(
    limit: std::time::Duration,
    step: &str,
    work: impl std::future::Future<Output = Result<T, lettre::transport::smtp::Error>>,
) -> Result<T, NotifyError> {
    match tokio::time::timeout(limit, work).await {
        Ok(done) => done.map_err(|e| failed(format!("{step}: {e}"))),
        Err(_) => Err(failed(format!(
            "the mail relay did not answer within {} s ({step})",
            limit.as_secs_f32()
        ))),
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
        let deadline = self.timeouts.total;
        tokio::time::timeout(deadline, self.deliver(email.envelope(), &email.formatted()))
            .await
            .map_err(|_| {
                failed(format!(
                    "the mail relay did not finish within {} s",
                    deadline.as_secs_f32()
                ))
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            channel: Channel::Email,
            to: "oleg@example.ru".into(),
            subject: "Проверка".into(),
            body: "Текст".into(),
        }
    }

    /// A relay that accepts connections and keeps them open without a word.
    async fn silent_relay() -> (u16, tokio::task::JoinHandle<()>) {
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = relay.local_addr().expect("addr").port();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((socket, _)) = relay.accept().await {
                open.push(socket);
            }
        });
        (port, held)
    }

    #[tokio::test]
    async fn a_relay_that_never_answers_fails_the_message_within_its_deadline() {
        let (port, held) = silent_relay().await;
        let notifier =
            SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "no-reply@kabinet.test")
                .expect("notifier")
                .with_deadline(std::time::Duration::from_millis(300));
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            notifier.send(&message()),
        )
        .await
        .expect("the send ends by its own deadline");
        let error = answer.expect_err("nothing was delivered");
        assert!(error.reason.contains("did not finish"), "{}", error.reason);
        held.abort();
    }

    #[tokio::test]
    async fn a_relay_silent_after_connecting_fails_by_the_read_timeout() {
        let (port, held) = silent_relay().await;
        let notifier =
            SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "no-reply@kabinet.test")
                .expect("notifier")
                .with_timeouts(Timeouts {
                    connect: std::time::Duration::from_millis(200),
                    read: std::time::Duration::from_millis(200),
                    total: std::time::Duration::from_secs(60),
                });
        let error = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            notifier.send(&message()),
        )
        .await
        .expect("the send ends by its read timeout")
        .expect_err("nothing was delivered");
        assert!(
            error.reason.contains("did not answer") && error.reason.contains("connecting"),
            "{}",
            error.reason
        );
        held.abort();
    }

    fn security_of(url: &str) -> Security {
        SmtpUrl::parse(url).expect(url).security
    }

    #[test]
    fn the_url_says_how_the_relay_is_protected() {
        assert_eq!(security_of("smtps://mail.example.ru"), Security::Implicit);
        assert_eq!(
            security_of("smtps://mail.example.ru:465?tls=implicit"),
            Security::Implicit
        );
        assert_eq!(
            security_of("smtp://mail.example.ru:587?tls=required"),
            Security::StartTls
        );
        assert_eq!(
            security_of("smtp://mail.example.ru?tls=opportunistic"),
            Security::Opportunistic
        );
        assert_eq!(
            security_of("smtp://mail.example.ru?tls=none"),
            Security::Plain
        );
    }

    #[test]
    fn without_a_tls_parameter_only_loopback_is_plain() {
        assert_eq!(security_of("smtp://127.0.0.1:2525"), Security::Plain);
        assert_eq!(security_of("smtp://localhost"), Security::Plain);
        assert_eq!(security_of("smtp://[::1]:25"), Security::Plain);
        assert_eq!(security_of("smtp://mail.example.ru"), Security::StartTls);
        assert_eq!(
            security_of("smtp://user:pw@10.0.0.5:25"),
            Security::StartTls
        );
    }

    #[test]
    fn ports_default_by_scheme_and_ipv6_hosts_lose_their_brackets() {
        let implicit = SmtpUrl::parse("smtps://mail.example.ru").expect("url");
        assert_eq!(
            (implicit.host.as_str(), implicit.port),
            ("mail.example.ru", 465)
        );
        let plain = SmtpUrl::parse("smtp://user:p@ss@[::1]").expect("url");
        assert_eq!((plain.host.as_str(), plain.port), ("::1", 25));
        assert_eq!(plain.user, Some(("user".into(), "p@ss".into())));
    }

    #[test]
    fn malformed_urls_say_what_is_wrong() {
        let reason = |url: &str| SmtpUrl::parse(url).expect_err(url).reason;
        assert!(reason("http://mail.example.ru").contains("smtp:// or smtps://"));
        assert!(reason("smtp://mail.example.ru:mail").contains("not a number"));
        assert!(reason("smtp://:25").contains("no host"));
        assert!(reason("smtp://mail.example.ru?tls=maybe").contains("tls=maybe"));
        assert!(reason("smtps://mail.example.ru?tls=none").contains("contradicts"));
        assert!(reason("smtp://mail.example.ru?tls=none&tls=required").contains("twice"));
        assert!(reason("smtp://mail.example.ru?timeout=5").contains("not known"));
        assert!(reason("smtp://[::1:25").contains("closing ]"));
    }

    #[test]
    fn clear_text_is_flagged_only_off_this_machine() {
        let flagged = |url: &str| {
            SmtpUrl::parse(url)
                .expect(url)
                .clear_text_off_this_machine()
        };
        assert!(flagged("smtp://mail.example.ru?tls=none"));
        assert!(flagged("smtp://mail.example.ru?tls=opportunistic"));
        assert!(!flagged("smtp://mail.example.ru?tls=required"));
        assert!(!flagged("smtp://mail.example.ru"));
        assert!(!flagged("smtps://mail.example.ru"));
        assert!(!flagged("smtp://127.0.0.1:25?tls=none"));
    }

    #[test]
    fn the_password_never_shows_in_debug_output() {
        let notifier = SmtpNotifier::new("smtp://user:secret-pw@127.0.0.1:25", "a@kabinet.test")
            .expect("notifier");
        assert!(!format!("{notifier:?}").contains("secret-pw"));
    }
}
