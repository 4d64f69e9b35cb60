//! The notifier port: how codes and messages reach a person by e-mail or SMS.
//!
//! Adapters live beside the port: [`LogNotifier`] (development only: writes
//! the message to the log) and [`MemoryNotifier`] (tests: keeps what was sent).
//! The SMTP and SMS-gateway adapters (crate `kabinet-adapters`) are chosen from
//! configuration at start-up;
//! [`ByChannel`] routes each message to the adapter of its channel.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

/// The channel a message travels by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
}

impl Channel {
    /// The stable lowercase name used in preferences and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
        }
    }
}

/// One message to one recipient.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: Channel,
    /// An e-mail address or a phone number in `+7XXXXXXXXXX` form.
    pub to: String,
    /// The subject line (e-mail only; SMS ignores it).
    pub subject: String,
    pub body: String,
}

impl std::fmt::Debug for Message {
    // Bodies carry one-time codes and recipients are personal data: neither is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("channel", &self.channel)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// A message could not be handed over to its channel.
#[derive(Debug, thiserror::Error)]
#[error("cannot deliver the {channel} message: {reason}")]
pub struct NotifyError {
    pub channel: &'static str,
    pub reason: String,
}

/// Delivers messages.
#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Hands `message` over to its channel; returns once the channel accepted it.
    async fn send(&self, message: &Message) -> Result<(), NotifyError>;
}

/// Development adapter: writes messages to the log instead of sending them.
/// Refused in production mode.
#[derive(Debug, Default, Clone, Copy)]
pub struct LogNotifier;

#[async_trait]
impl Notifier for LogNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        // Development only: the body is shown so a developer can read the code.
        tracing::info!(
            channel = message.channel.as_str(),
            to = %message.to,
            subject = %message.subject,
            body = %message.body,
            "development notifier: message not sent"
        );
        Ok(())
    }
}

/// Test adapter: keeps every message it was given.
#[derive(Debug, Default, Clone)]
pub struct MemoryNotifier {
    sent: Arc<Mutex<Vec<Message>>>,
}

impl MemoryNotifier {
    /// Every message sent so far, oldest first.
    pub fn sent(&self) -> Vec<Message> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(message.clone());
        Ok(())
    }
}

/// Routes each message to the adapter of its channel.
#[derive(Clone)]
pub struct ByChannel {
    pub email: Arc<dyn Notifier>,
    pub sms: Arc<dyn Notifier>,
}

#[async_trait]
impl Notifier for ByChannel {
    async fn send(&self, message: &Message) -> Result<(), NotifyError> {
        match message.channel {
            Channel::Email => self.email.send(message).await,
            Channel::Sms => self.sms.send(message).await,
        }
    }
}
