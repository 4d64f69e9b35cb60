//! Accounts, tokens and sign-in challenges as the API shows them.

use crate::schema::ids;
use crate::schema::labels::LabelRu;
use async_graphql::{Enum, Object, SimpleObject, ID};
use chrono::{DateTime, Utc};
use kabinet_app::accounts::{AccountView, Challenge, ChallengeMethod, CodeSent};
use kabinet_domain::accounts::{AccountStatus as DomainStatus, LoginKind};
use kabinet_domain::notify::Channel;
use kabinet_domain::Role;

// --- types ---------------------------------------------------------------------------------

/// How an account signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AccountLoginKind {
    Phone,
    Email,
}

/// Whether an account may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum AccountStatus {
    Active,
    Deactivated,
    Closed,
}

/// The channel a code went by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum DeliveryChannel {
    Email,
    Sms,
}

/// How the second factor of a sign-in is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SecondFactorMethod {
    /// A code sent to the login (SMS to a phone, e-mail to an address).
    Code,
    /// The current code of the authenticator app.
    Totp,
}

/// Roles an administrator may give a staff account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum StaffRole {
    Registrar,
    Doctor,
    Lab,
    Pharmacist,
    Auditor,
    Analyst,
    Admin,
}

/// The role an account or an actor holds; `SYSTEM` is the server itself (schedulers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum UserRole {
    Patient,
    Registrar,
    Doctor,
    Lab,
    Pharmacist,
    Auditor,
    Analyst,
    Admin,
    System,
}

impl From<Role> for UserRole {
    fn from(r: Role) -> UserRole {
        match r {
            Role::Patient => UserRole::Patient,
            Role::Registrar => UserRole::Registrar,
            Role::Doctor => UserRole::Doctor,
            Role::Lab => UserRole::Lab,
            Role::Pharmacist => UserRole::Pharmacist,
            Role::Auditor => UserRole::Auditor,
            Role::Analyst => UserRole::Analyst,
            Role::Admin => UserRole::Admin,
            Role::System => UserRole::System,
        }
    }
}

impl UserRole {
    /// The role of a stored record (`patient`, …, `system`); an error names a record
    /// written with a role this server does not know.
    pub fn of_record(name: &str) -> async_graphql::Result<UserRole> {
        if name == Role::System.as_str() {
            return Ok(UserRole::System);
        }
        name.parse::<Role>()
            .map(UserRole::from)
            .map_err(|e| async_graphql::Error::new(format!("stored record: {e}")))
    }
}

impl From<StaffRole> for Role {
    fn from(r: StaffRole) -> Role {
        match r {
            StaffRole::Registrar => Role::Registrar,
            StaffRole::Doctor => Role::Doctor,
            StaffRole::Lab => Role::Lab,
            StaffRole::Pharmacist => Role::Pharmacist,
            StaffRole::Auditor => Role::Auditor,
            StaffRole::Analyst => Role::Analyst,
            StaffRole::Admin => Role::Admin,
        }
    }
}

/// An account: its login, role and state (never its secrets).
#[derive(Debug, Clone)]
pub struct Account(pub AccountView);

impl Account {
    /// How the account signs in.
    fn login_kind_now(&self) -> AccountLoginKind {
        match self.0.state.login_kind {
            LoginKind::Phone => AccountLoginKind::Phone,
            LoginKind::Email => AccountLoginKind::Email,
        }
    }

    /// Whether the account may be used.
    fn status_now(&self) -> AccountStatus {
        match self.0.state.status {
            DomainStatus::Active => AccountStatus::Active,
            DomainStatus::Deactivated => AccountStatus::Deactivated,
            DomainStatus::Closed => AccountStatus::Closed,
        }
    }
}

#[Object]
impl Account {
    /// Global id.
    async fn id(&self) -> ID {
        ids::encode("Account", self.0.id)
    }
    async fn login_kind(&self) -> AccountLoginKind {
        self.login_kind_now()
    }
    /// The login kind in Russian, for display.
    async fn login_kind_label_ru(&self) -> &'static str {
        self.login_kind_now().label_ru()
    }
    /// The normalised login: `+7XXXXXXXXXX` or a lower-case e-mail address.
    async fn login(&self) -> &str {
        &self.0.state.login
    }
    async fn role(&self) -> UserRole {
        self.0.state.role.into()
    }
    /// The role in Russian, for display.
    async fn role_label_ru(&self) -> &'static str {
        UserRole::from(self.0.state.role).label_ru()
    }
    /// Global id of the staff member's organisation.
    async fn organisation_id(&self) -> Option<ID> {
        self.0
            .state
            .organisation_id
            .map(|o| ids::encode("Organisation", o))
    }
    async fn status(&self) -> AccountStatus {
        self.status_now()
    }
    /// The status in Russian, for display.
    async fn status_label_ru(&self) -> &'static str {
        self.status_now().label_ru()
    }
    /// Whether sign-in asks for the authenticator app's code.
    async fn totp_enabled(&self) -> bool {
        self.0.state.totp_enabled
    }
    /// The version of the terms of use accepted (patients).
    async fn terms_version(&self) -> Option<&str> {
        self.0.state.terms_version.as_deref()
    }
}

/// Tokens of a sign-in session.
#[derive(Debug, Clone, SimpleObject)]
pub struct AuthTokens {
    /// Bearer token for `Authorization: Bearer …`, valid 15 minutes.
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    /// Spend once with `refreshSession` for new tokens; a spent one coming back ends the session.
    pub refresh_token: String,
    /// When the session ends and must be signed in again.
    pub session_expires_at: DateTime<Utc>,
}

/// Where a code was sent.
#[derive(Debug, Clone, SimpleObject)]
pub struct CodeDelivery {
    pub channel: DeliveryChannel,
    /// The channel in Russian, for display.
    pub channel_label_ru: &'static str,
    /// The contact with most of it hidden.
    pub sent_to: String,
    pub expires_at: DateTime<Utc>,
}

impl From<CodeSent> for CodeDelivery {
    fn from(sent: CodeSent) -> Self {
        let channel = match sent.channel {
            Channel::Email => DeliveryChannel::Email,
            Channel::Sms => DeliveryChannel::Sms,
        };
        CodeDelivery {
            channel,
            channel_label_ru: channel.label_ru(),
            sent_to: sent.sent_to,
            expires_at: sent.expires_at,
        }
    }
}

/// The second step of a sign-in.
#[derive(Debug, Clone, SimpleObject)]
pub struct SignInChallenge {
    /// Give it to `completeSignIn` with the code.
    pub challenge_id: String,
    pub method: SecondFactorMethod,
    /// Where the code went (`CODE` only).
    pub sent_to: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl From<Challenge> for SignInChallenge {
    fn from(c: Challenge) -> Self {
        SignInChallenge {
            challenge_id: c.challenge_id,
            method: match c.method {
                ChallengeMethod::Code => SecondFactorMethod::Code,
                ChallengeMethod::Totp => SecondFactorMethod::Totp,
            },
            sent_to: c.sent_to,
            expires_at: c.expires_at,
        }
    }
}
