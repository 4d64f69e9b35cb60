//! The `Accounts` use case: registration, sign-in with a second factor, sessions,
//! recovery, the authenticator app, closing, and staff accounts. It keeps secrets
//! in the accounts tables (an adapter) and records what happened as account events.
//! Each flow is a module of its own; this one holds what they share.

mod closing;
mod recovery;
mod registration;
mod second_factor;
mod sessions;
mod sign_in;
mod staff;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kabinet_adapters::account_store::{AccountStore, Spent, StoredCode};
use kabinet_adapters::password_hash::{GateError, HashError, HashGate};
use kabinet_domain::accounts::account::{
    Account, AccountCommand, AccountState, AccountStatus, PasswordChange, RevokeReason,
    SecondFactor, SignInFailure, TERMS_VERSION,
};
use kabinet_domain::accounts::login::{Login, LoginKind};
use kabinet_domain::accounts::password::NewPassword;
use kabinet_domain::accounts::secrets::{
    opaque_token, six_digit_code, token_hash, CodeHasher, SecretError,
};
use kabinet_domain::accounts::throttle::AccountLimits;
use kabinet_domain::accounts::totp;
use kabinet_domain::clock::Clock;
use kabinet_domain::command::{CommandError, CommandFault, CommandOutcome, CommandRunner, Retry};
use kabinet_domain::directory::Organisation;
use kabinet_domain::journal::JournalOrder;
use kabinet_domain::metadata::{Actor, EventMetadata, Role, UnknownRole};
use kabinet_domain::notify::{Message, Notifier, NotifyError};
use kabinet_domain::user_error::{AsUserError, UserError};
use serde_json::json;
use uuid::Uuid;

/// Lifetime of a one-time code.
pub const CODE_TTL: Duration = Duration::minutes(10);
/// Lifetime of a staff invitation code (the holder sets a password with it).
pub const INVITATION_TTL: Duration = Duration::hours(24);
/// Attempts allowed at one code.
pub const CODE_ATTEMPTS: i64 = 5;
/// Least time between two sends of a code to one contact.
pub const RESEND_AFTER: Duration = Duration::seconds(60);
/// Most sends to one contact per window.
pub const SENDS_PER_WINDOW: i64 = 5;
/// The sending window.
pub const SEND_WINDOW: Duration = Duration::hours(1);
/// Lifetime of a sign-in session (its refresh tokens die with it).
pub const SESSION_TTL: Duration = Duration::days(30);
/// Lifetime of a TOTP sign-in challenge.
pub const TOTP_CHALLENGE_TTL: Duration = Duration::minutes(5);

const REGISTER: &str = "register";
const RECOVER: &str = "recover";
const SIGN_IN: &str = "sign_in";
const LOGIN_SCOPE: &str = "login";
const ADDRESS_SCOPE: &str = "ip";
const SENDS_SCOPE: &str = "ip_sends";
const SIGN_IN_SENDS_SCOPE: &str = "login_sends";

/// Why an accounts action failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountFailure {
    /// A business error for the caller.
    #[error("{}", .0.message)]
    User(UserError),
    /// A fault of the store or a channel; logged and masked.
    #[error("internal error: {0}")]
    Internal(#[source] AccountFault),
}

/// A fault under an accounts action, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum AccountFault {
    /// The accounts tables failed.
    #[error("accounts tables: {0}")]
    Store(#[from] sqlx::Error),
    /// The command path failed.
    #[error(transparent)]
    Command(#[from] CommandFault),
    /// Password hashing failed.
    #[error(transparent)]
    Hashing(#[from] HashError),
    /// No randomness for a code or token.
    #[error(transparent)]
    Randomness(#[from] SecretError),
    /// A channel refused a message.
    #[error(transparent)]
    Delivery(#[from] NotifyError),
    /// A stored session names a role that does not exist.
    #[error("a session holds an unknown role: {0}")]
    SessionRole(#[from] UnknownRole),
    /// A committed account id did not read back as a UUID.
    #[error("a new account's id is not a UUID: {0}")]
    AccountId(#[from] uuid::Error),
    /// An account expected to exist has no events.
    #[error("account {0} has no events")]
    NoEvents(Uuid),
}

type Flow<T> = Result<T, AccountFailure>;

fn internal(e: impl Into<AccountFault>) -> AccountFailure {
    AccountFailure::Internal(e.into())
}

fn user(e: UserError) -> AccountFailure {
    AccountFailure::User(e)
}

/// The answer when every password-hashing slot stayed busy.
fn gated(e: GateError) -> AccountFailure {
    match e {
        GateError::Busy { retry_after } => {
            let seconds = retry_after.as_secs().max(1);
            user(UserError::new(
                "BUSY",
                format!("the server is busy checking passwords; try again in {seconds} s"),
            ))
        }
        GateError::Failed(e) => internal(e),
    }
}

fn too_many(wait: Duration) -> AccountFailure {
    let seconds = wait.num_seconds().max(1);
    user(UserError::new(
        "TOO_MANY_ATTEMPTS",
        format!("too many failed attempts; try again in {seconds} s"),
    ))
}

/// Where a code went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSent {
    pub channel: kabinet_domain::notify::Channel,
    /// The contact with most of it hidden.
    pub sent_to: String,
    pub expires_at: DateTime<Utc>,
}

/// A new session: its id, the first refresh token, and who it speaks for.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub session_id: Uuid,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub actor: Actor,
    /// The last account event written, for read-your-writes.
    pub last_order: Option<JournalOrder>,
}

/// How a second factor is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeMethod {
    /// A code sent to the login's contact.
    Code,
    /// A code of the authenticator app.
    Totp,
}

/// The second step of a sign-in.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub challenge_id: String,
    pub method: ChallengeMethod,
    /// Where the code went (code challenges only).
    pub sent_to: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// What a TOTP enrolment shows the holder.
#[derive(Debug, Clone)]
pub struct TotpEnrolment {
    pub secret: String,
    pub provisioning_uri: String,
}

/// An account as callers see it.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub id: Uuid,
    pub state: AccountState,
}

/// A new staff account.
#[derive(Debug, Clone)]
pub struct StaffAccountRequest {
    pub role: Role,
    pub organisation_id: Option<Uuid>,
    pub login: String,
    /// Without one, a code to set the password is sent to the login.
    pub initial_password: Option<String>,
}

/// The accounts use case: runs the account flows.
#[derive(Clone)]
pub struct Accounts {
    commands: CommandRunner,
    store: AccountStore,
    clock: Arc<dyn Clock>,
    notifier: Arc<dyn Notifier>,
    codes: CodeHasher,
    hashing: HashGate,
    limits: AccountLimits,
    /// Failed sign-ins are recorded one at a time, so a burst of them never
    /// meets itself on one account stream.
    failure_writes: Arc<tokio::sync::Mutex<()>>,
}

impl Accounts {
    /// Accounts writing through `commands`, sending with `notifier`, hashing codes with `codes`.
    pub fn new(
        commands: CommandRunner,
        clock: Arc<dyn Clock>,
        notifier: Arc<dyn Notifier>,
        codes: CodeHasher,
    ) -> Self {
        let store = AccountStore::new(commands.journal().db().clone());
        Accounts {
            commands,
            store,
            clock,
            notifier,
            codes,
            hashing: HashGate::default(),
            limits: AccountLimits::default(),
            failure_writes: Arc::default(),
        }
    }

    /// The use case hashing passwords through `gate` (by default one slot per core).
    pub fn with_hash_gate(mut self, gate: HashGate) -> Self {
        self.hashing = gate;
        self
    }

    /// The use case throttling with `limits`.
    pub fn with_limits(mut self, limits: AccountLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The bound on concurrent password hashing.
    pub fn hash_gate(&self) -> &HashGate {
        &self.hashing
    }

    /// Records a failed sign-in on account `id`. Such writes are serialised and
    /// retried; should one still meet a concurrent change, it is logged and the
    /// caller's answer stays the same, so nothing tells a burst on an existing
    /// login from one on an unknown login.
    async fn record_failure(&self, id: Uuid, reason: SignInFailure) {
        let _turn = self.failure_writes.lock().await;
        if let Err(e) = self
            .run(
                id,
                Actor::system(),
                AccountCommand::RecordSignInFailure { reason },
                false,
            )
            .await
        {
            tracing::warn!(account = %id, error = %e, "a failed sign-in was not recorded");
        }
    }

    /// The accounts tables.
    pub fn store(&self) -> &AccountStore {
        &self.store
    }

    /// The account `id`, if registered.
    pub async fn account(&self, id: Uuid) -> Flow<Option<AccountView>> {
        let account: Account = self
            .commands
            .load(&id.to_string())
            .await
            .map_err(internal)?;
        Ok(account.state.map(|state| AccountView { id, state }))
    }

    async fn run(
        &self,
        id: Uuid,
        actor: Actor,
        command: AccountCommand,
        fresh: bool,
    ) -> Flow<CommandOutcome> {
        let metadata = EventMetadata::new(actor, format!("accounts-{}", Uuid::now_v7().simple()));
        // No idempotency key here, so the input only names what was done.
        let input = json!({ "account": id, "command": command.name() });
        self.run_with(id, command, fresh, &metadata, &input).await
    }

    async fn run_with(
        &self,
        id: Uuid,
        command: AccountCommand,
        fresh: bool,
        metadata: &EventMetadata,
        input: &serde_json::Value,
    ) -> Flow<CommandOutcome> {
        let result = if fresh {
            self.commands
                .execute_new::<Account>(
                    &id.to_string(),
                    command,
                    &(),
                    metadata,
                    input,
                    Retry::OnConflict,
                )
                .await
        } else {
            self.commands
                .execute::<Account>(
                    &id.to_string(),
                    command,
                    &(),
                    metadata,
                    input,
                    Retry::OnConflict,
                )
                .await
        };
        match result {
            Ok((outcome, _)) => Ok(outcome),
            Err(CommandError::Rejected(e)) => Err(user(e.to_user_error())),
            Err(CommandError::Reserved(taken)) => Err(user(
                <Account as kabinet_domain::journal::reservations::Reserving>::reservation_error(
                    &taken,
                ),
            )),
            Err(CommandError::IdempotencyKeyReused) => Err(user(UserError::field(
                "idempotencyKey",
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was already used for a different request",
            ))),
            Err(e @ CommandError::Conflict) => Err(user(UserError::new("CONFLICT", e.to_string()))),
            Err(CommandError::Internal(e)) => Err(internal(e)),
        }
    }

    fn self_actor(id: Uuid, state: &AccountState) -> Actor {
        Actor {
            account_id: id,
            role: state.role,
            organisation_id: state.organisation_id,
        }
    }

    /// Counts an attempt of client `ip` before anything is checked, refusing
    /// when the address must wait. A success gives it back ([`Self::refund_address`]).
    async fn check_address(&self, ip: Option<IpAddr>) -> Flow<()> {
        let Some(ip) = ip else { return Ok(()) };
        let now = self.clock.now();
        match self
            .store
            .throttle_reserve(
                &self.limits.per_address,
                ADDRESS_SCOPE,
                &ip.to_string(),
                now,
            )
            .await
            .map_err(internal)?
        {
            Err(wait) => Err(too_many(wait)),
            Ok(()) => Ok(()),
        }
    }

    /// Gives back the attempt of `ip` counted by [`Self::check_address`]: it succeeded.
    async fn refund_address(&self, ip: Option<IpAddr>) -> Flow<()> {
        let Some(ip) = ip else { return Ok(()) };
        self.store
            .throttle_refund(ADDRESS_SCOPE, &ip.to_string())
            .await
            .map_err(internal)
    }

    /// Counts a code sent for `ip`, refusing when it asked for too many.
    async fn count_send(&self, ip: Option<IpAddr>) -> Flow<()> {
        let Some(ip) = ip else { return Ok(()) };
        let now = self.clock.now();
        if let Err(wait) = self
            .store
            .throttle_reserve(
                &self.limits.sends_per_address,
                SENDS_SCOPE,
                &ip.to_string(),
                now,
            )
            .await
            .map_err(internal)?
        {
            let seconds = wait.num_seconds().max(1);
            return Err(user(UserError::new(
                "TOO_MANY_CODES_REQUESTED",
                format!(
                    "too many codes were requested from this address; try again in {seconds} s"
                ),
            )));
        }
        Ok(())
    }

    /// Counts a sign-in code sent to `login`, refusing when too many were.
    async fn count_sign_in_send(&self, login: &str) -> Flow<()> {
        let now = self.clock.now();
        if let Err(wait) = self
            .store
            .throttle_reserve(
                &self.limits.sign_in_sends_per_login,
                SIGN_IN_SENDS_SCOPE,
                login,
                now,
            )
            .await
            .map_err(internal)?
        {
            let seconds = wait.num_seconds().max(1);
            return Err(user(UserError::new(
                "RESEND_LIMIT",
                format!("too many sign-in codes were sent to this login; try again in {seconds} s"),
            )));
        }
        Ok(())
    }

    /// Counts an attempt at `login` before its password is checked, refusing
    /// (and giving back the address's attempt) when the login must wait.
    async fn check_login(&self, login: &str, ip: Option<IpAddr>) -> Flow<()> {
        let now = self.clock.now();
        match self
            .store
            .throttle_reserve(&self.limits.per_login, LOGIN_SCOPE, login, now)
            .await
            .map_err(internal)?
        {
            Err(wait) => {
                self.refund_address(ip).await?;
                Err(too_many(wait))
            }
            Ok(()) => Ok(()),
        }
    }

    /// Gives back the attempts of [`Self::check_address`] and [`Self::check_login`].
    async fn refund_attempt(&self, ip: Option<IpAddr>, login: &str) -> Flow<()> {
        self.refund_address(ip).await?;
        self.store
            .throttle_refund(LOGIN_SCOPE, login)
            .await
            .map_err(internal)
    }

    /// Counts a failed second step against `login` (its address attempt is counted already).
    async fn count_login_failure(&self, login: &str) -> Flow<()> {
        self.store
            .throttle_fail(&self.limits.per_login, LOGIN_SCOPE, login, self.clock.now())
            .await
            .map_err(internal)
    }

    /// Stores a fresh code for `(purpose, subject)` unless one was sent too
    /// recently; returns the code and its expiry. The check and the write are
    /// one compare-and-set on the last send, so parallel requests cannot pass
    /// the limits together. A `decoy` stores a code nobody is told.
    async fn issue_code(
        &self,
        purpose: &str,
        subject: &str,
        account_id: Option<Uuid>,
        ttl: Duration,
        decoy: bool,
    ) -> Flow<(String, DateTime<Utc>)> {
        let now = self.clock.now();
        let code = six_digit_code().map_err(internal)?;
        let stored = if decoy {
            let other = six_digit_code().map_err(internal)?;
            self.codes.hash(purpose, subject, &format!("x{other}"))
        } else {
            self.codes.hash(purpose, subject, &code)
        };
        let expires_at = now + ttl;
        for _ in 0..8 {
            let last = self
                .store
                .code_sends(purpose, subject)
                .await
                .map_err(internal)?;
            let (sends, window_from) = match last {
                Some((sent_at, _, _)) if now - sent_at < RESEND_AFTER => {
                    let wait = (sent_at + RESEND_AFTER - now).num_seconds().max(1);
                    return Err(user(UserError::new(
                        "RESEND_TOO_SOON",
                        format!("a code was sent less than a minute ago; ask again in {wait} s"),
                    )));
                }
                Some((_, sends, window_from)) if now - window_from < SEND_WINDOW => {
                    if sends >= SENDS_PER_WINDOW {
                        let wait = (window_from + SEND_WINDOW - now).num_minutes().max(1);
                        return Err(user(UserError::new(
                            "RESEND_LIMIT",
                            format!("{SENDS_PER_WINDOW} codes were sent within an hour; ask again in {wait} min"),
                        )));
                    }
                    (sends + 1, window_from)
                }
                _ => (1, now),
            };
            if self
                .store
                .put_code_if_unchanged(
                    purpose,
                    subject,
                    &stored,
                    account_id,
                    expires_at,
                    sends,
                    window_from,
                    now,
                    last.map(|(sent_at, _, _)| sent_at),
                )
                .await
                .map_err(internal)?
            {
                return Ok((code, expires_at));
            }
            // Another request sent a code in between: look again.
        }
        Err(user(UserError::new(
            "RESEND_TOO_SOON",
            "a code is being sent right now; ask again in a minute",
        )))
    }

    /// Checks `code` against `(purpose, subject)`, counting the attempt; the
    /// code is used up when it matches.
    async fn check_code(&self, purpose: &str, subject: &str, code: &str) -> Flow<StoredCode> {
        let wrong = |left: i64| {
            user(UserError::field(
                "code",
                "INVALID_CODE",
                if left > 0 {
                    format!("the code is wrong; {left} attempts left")
                } else {
                    "the code is wrong; no attempts left: ask for a new code".to_string()
                },
            ))
        };
        let stored = match self
            .store
            .attempt_code(purpose, subject, CODE_ATTEMPTS)
            .await
            .map_err(internal)?
        {
            // No code was asked for: the same answer as a wrong one, so it says nothing.
            None => return Err(wrong(CODE_ATTEMPTS - 1)),
            Some(Err(())) => {
                return Err(user(UserError::field(
                    "code",
                    "TOO_MANY_ATTEMPTS",
                    format!("{CODE_ATTEMPTS} wrong codes were entered; ask for a new code"),
                )))
            }
            Some(Ok(stored)) => stored,
        };
        if stored.expires_at <= self.clock.now() {
            return Err(user(UserError::field(
                "code",
                "CODE_EXPIRED",
                "the code has expired; ask for a new one",
            )));
        }
        let code = code.trim();
        let well_formed = code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit());
        if !well_formed
            || !self
                .codes
                .matches(purpose, subject, code, &stored.code_hash)
        {
            return Err(wrong(CODE_ATTEMPTS - stored.attempts));
        }
        self.store
            .delete_code(purpose, subject)
            .await
            .map_err(internal)?;
        Ok(stored)
    }

    async fn send(&self, login: &Login, subject: &str, body: String) -> Flow<()> {
        let message = Message {
            channel: login.kind().channel(),
            to: login.as_str().to_string(),
            subject: subject.to_string(),
            body,
        };
        self.notifier.send(&message).await.map_err(internal)
    }

    async fn state(&self, id: Uuid) -> Flow<AccountState> {
        self.account(id)
            .await?
            .map(|v| v.state)
            .ok_or_else(|| internal(AccountFault::NoEvents(id)))
    }

    /// The kind of login of a new contact, for callers that must explain where a code goes.
    pub fn login_kind(contact: &str) -> Option<LoginKind> {
        Login::parse(contact, "contact").ok().map(|l| l.kind())
    }
}
