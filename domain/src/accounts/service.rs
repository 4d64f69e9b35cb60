//! The accounts service: registration, sign-in with a second factor, sessions,
//! recovery, TOTP enrolment, closing, and staff accounts. It keeps secrets in
//! the accounts tables and records what happened as account events.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use uuid::Uuid;

use super::account::{
    Account, AccountCommand, AccountState, AccountStatus, PasswordChange, RevokeReason,
    SecondFactor, SignInFailure, TERMS_VERSION,
};
use super::login::{Login, LoginKind};
use super::password::{GateError, HashGate, NewPassword};
use super::secrets::{opaque_token, six_digit_code, token_hash, CodeHasher};
use super::store::{AccountStore, Spent, StoredCode};
use super::throttle::AccountLimits;
use super::totp;
use crate::clock::Clock;
use crate::command::{CommandError, CommandOutcome, CommandService, Retry};
use crate::directory::Organisation;
use crate::journal::JournalOrder;
use crate::metadata::{Actor, EventMetadata, Role};
use crate::notify::{Message, Notifier};
use crate::user_error::{AsUserError, UserError};

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
    Internal(String),
}

type Flow<T> = Result<T, AccountFailure>;

fn internal(e: impl std::fmt::Display) -> AccountFailure {
    AccountFailure::Internal(e.to_string())
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
    pub channel: crate::notify::Channel,
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

/// Runs the account flows.
#[derive(Clone)]
pub struct AccountService {
    commands: CommandService,
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

impl AccountService {
    /// A service writing through `commands`, sending with `notifier`, hashing codes with `codes`.
    pub fn new(
        commands: CommandService,
        clock: Arc<dyn Clock>,
        notifier: Arc<dyn Notifier>,
        codes: CodeHasher,
    ) -> Self {
        let store = AccountStore::new(commands.journal().db().clone());
        AccountService {
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

    /// The service hashing passwords through `gate` (by default one slot per core).
    pub fn with_hash_gate(mut self, gate: HashGate) -> Self {
        self.hashing = gate;
        self
    }

    /// The service throttling with `limits`.
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
                <Account as crate::journal::reservations::Reserving>::reservation_error(&taken),
            )),
            Err(CommandError::IdempotencyKeyReused) => Err(user(UserError::field(
                "idempotencyKey",
                "IDEMPOTENCY_KEY_REUSED",
                "this idempotency key was already used for a different request",
            ))),
            Err(e @ CommandError::Conflict) => Err(user(UserError::new("CONFLICT", e.to_string()))),
            Err(CommandError::Internal(e)) => Err(AccountFailure::Internal(e)),
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

    async fn open_session(
        &self,
        id: Uuid,
        state: &AccountState,
        second_factor: SecondFactor,
    ) -> Flow<NewSession> {
        let now = self.clock.now();
        let session_id = Uuid::now_v7();
        let refresh_token = opaque_token().map_err(internal)?;
        let expires_at = now + SESSION_TTL;
        self.store
            .create_session(
                session_id,
                id,
                state.role.as_str(),
                state.organisation_id,
                &token_hash(&refresh_token),
                now,
                expires_at,
            )
            .await
            .map_err(internal)?;
        let actor = Self::self_actor(id, state);
        let outcome = self
            .run(
                id,
                actor.clone(),
                AccountCommand::RecordSignIn {
                    session_id,
                    second_factor,
                },
                false,
            )
            .await?;
        Ok(NewSession {
            session_id,
            refresh_token,
            expires_at,
            actor,
            last_order: outcome.last_order(),
        })
    }

    // --- registration --------------------------------------------------------------------

    /// Sends a registration code to `contact`. The answer is the same whether
    /// or not the contact has an account: a taken one gets a notice instead.
    pub async fn start_registration(&self, contact: &str, ip: Option<IpAddr>) -> Flow<CodeSent> {
        let login = Login::parse(contact, "contact").map_err(user)?;
        self.count_send(ip).await?;
        let taken = self
            .store
            .account_of_login(login.as_str())
            .await
            .map_err(internal)?
            .is_some();
        // A taken contact gets a stored code nobody is told (so the answer and
        // the limits are the same) and a notice instead.
        let (code, expires_at) = self
            .issue_code(REGISTER, login.as_str(), None, CODE_TTL, taken)
            .await?;
        if taken {
            self.send(
                &login,
                "Кабинет: у вас уже есть учётная запись",
                "Кто-то пытался зарегистрироваться в Кабинете с этим телефоном или адресом. \
                 У вас уже есть учётная запись: войдите в неё или восстановите пароль, если забыли его."
                    .to_string(),
            )
            .await?;
        } else {
            self.send(
                &login,
                "Код регистрации в Кабинете",
                format!(
                    "Код для регистрации в Кабинете: {code}. Он действует 10 минут. \
                     Никому его не сообщайте."
                ),
            )
            .await?;
        }
        Ok(CodeSent {
            channel: login.kind().channel(),
            sent_to: login.masked(),
            expires_at,
        })
    }

    /// Opens a patient account for `contact` after checking its code.
    pub async fn confirm_registration(
        &self,
        contact: &str,
        code: &str,
        new_password: &str,
        accept_terms: bool,
        ip: Option<IpAddr>,
    ) -> Flow<NewSession> {
        let login = Login::parse(contact, "contact").map_err(user)?;
        if !accept_terms {
            return Err(user(UserError::field(
                "acceptTerms",
                "TERMS_NOT_ACCEPTED",
                "the terms of use must be accepted to register",
            )));
        }
        let new_password =
            NewPassword::parse(new_password, login.as_str(), "password").map_err(user)?;
        self.check_address(ip).await?;
        self.check_code(REGISTER, login.as_str(), code).await?;
        let hash = self
            .hashing
            .hash(new_password.expose())
            .await
            .map_err(gated)?;
        let id = Uuid::now_v7();
        // The credentials first, keyed by the new account's id: once the
        // account exists its password does too, and a failure before the event
        // leaves only a row no account points at.
        self.store
            .put_credentials(id, Some(&hash), self.clock.now())
            .await
            .map_err(internal)?;
        let actor = Actor {
            account_id: id,
            role: Role::Patient,
            organisation_id: None,
        };
        let registered = self
            .run(
                id,
                actor,
                AccountCommand::Register {
                    login: login.clone(),
                    role: Role::Patient,
                    organisation_id: None,
                    terms_version: Some(TERMS_VERSION.to_string()),
                    password_set: true,
                },
                true,
            )
            .await;
        if let Err(e) = registered {
            if let AccountFailure::User(_) = e {
                // Refused, so no account has this id: drop its row.
                self.store.delete_credentials(id).await.map_err(internal)?;
            }
            return Err(match e {
                AccountFailure::User(u) if u.code == "LOGIN_TAKEN" => user(UserError::field(
                    "contact",
                    "ALREADY_REGISTERED",
                    "an account with this contact already exists: sign in or recover the password",
                )),
                other => other,
            });
        }
        let state = self.state(id).await?;
        let session = self.open_session(id, &state, SecondFactor::Code).await?;
        self.refund_address(ip).await?;
        Ok(session)
    }

    async fn state(&self, id: Uuid) -> Flow<AccountState> {
        self.account(id)
            .await?
            .map(|v| v.state)
            .ok_or_else(|| internal(format!("account {id} has no events")))
    }

    // --- sign-in -------------------------------------------------------------------------

    /// Checks the password of `login`; on success starts the second factor.
    pub async fn sign_in(&self, login: &str, given: &str, ip: Option<IpAddr>) -> Flow<Challenge> {
        let login = Login::parse(login, "login").map_err(user)?;
        // The attempt is counted before the password is checked, per address
        // and per login text (so unknown logins behave like known ones).
        self.check_address(ip).await?;
        self.check_login(login.as_str(), ip).await?;
        let account_id = self
            .store
            .account_of_login(login.as_str())
            .await
            .map_err(internal)?;
        // Unknown logins read a row too, so both cost the same.
        let stored = self
            .store
            .credentials(account_id.unwrap_or(Uuid::nil()))
            .await
            .map_err(internal)?;
        let hash = stored.as_ref().and_then(|(hash, _)| hash.as_deref());
        let ok = match self.hashing.verify(given, hash).await {
            Ok(ok) => ok,
            Err(e) => {
                // Not checked, so not a failure.
                self.refund_attempt(ip, login.as_str()).await?;
                return Err(gated(e));
            }
        };
        let wrong = || {
            user(UserError::new(
                "INVALID_CREDENTIALS",
                "the login or the password is wrong",
            ))
        };
        let (Some(id), true) = (account_id, ok) else {
            if let Some(id) = account_id {
                // Written aside, so the answer neither waits for the journal
                // nor differs from an unknown login's.
                let service = self.clone();
                tokio::spawn(async move {
                    service
                        .record_failure(id, SignInFailure::WrongPassword)
                        .await
                });
            }
            return Err(wrong());
        };
        let state = self.state(id).await?;
        match state.status {
            AccountStatus::Active => {}
            AccountStatus::Deactivated => {
                self.record_failure(id, SignInFailure::AccountDeactivated)
                    .await;
                return Err(user(UserError::new(
                    "ACCOUNT_DEACTIVATED",
                    "the account is deactivated; contact the administrator",
                )));
            }
            AccountStatus::Closed => return Err(wrong()),
        }
        // The password was right: the attempt is not a failure.
        self.refund_attempt(ip, login.as_str()).await?;
        let challenge_id = opaque_token().map_err(internal)?;
        let subject = hex::encode(token_hash(&challenge_id));
        let now = self.clock.now();
        if state.totp_enabled {
            let expires_at = now + TOTP_CHALLENGE_TTL;
            self.store
                .put_code(
                    SIGN_IN,
                    &subject,
                    &[],
                    Some(id),
                    Some("totp"),
                    expires_at,
                    1,
                    now,
                    now,
                )
                .await
                .map_err(internal)?;
            return Ok(Challenge {
                challenge_id,
                method: ChallengeMethod::Totp,
                sent_to: None,
                expires_at,
            });
        }
        self.count_sign_in_send(login.as_str()).await?;
        let code = six_digit_code().map_err(internal)?;
        let expires_at = now + CODE_TTL;
        let hash = self.codes.hash(SIGN_IN, &subject, &code);
        self.store
            .put_code(
                SIGN_IN,
                &subject,
                &hash,
                Some(id),
                Some("code"),
                expires_at,
                1,
                now,
                now,
            )
            .await
            .map_err(internal)?;
        self.send(
            &login,
            "Код для входа в Кабинет",
            format!(
                "Код для входа в Кабинет: {code}. Он действует 10 минут. \
                 Никому его не сообщайте, даже сотрудникам клиники."
            ),
        )
        .await?;
        Ok(Challenge {
            challenge_id,
            method: ChallengeMethod::Code,
            sent_to: Some(login.masked()),
            expires_at,
        })
    }

    /// Completes a sign-in with the second factor's code.
    pub async fn complete_sign_in(
        &self,
        challenge_id: &str,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Flow<NewSession> {
        self.check_address(ip).await?;
        let subject = hex::encode(token_hash(challenge_id.trim()));
        let unknown = || {
            user(UserError::field(
                "challengeId",
                "INVALID_CHALLENGE",
                "the sign-in has expired or is unknown; sign in again",
            ))
        };
        let stored = match self
            .store
            .attempt_code(SIGN_IN, &subject, CODE_ATTEMPTS)
            .await
            .map_err(internal)?
        {
            None => return Err(unknown()),
            Some(Err(())) => {
                return Err(user(UserError::field(
                    "code",
                    "TOO_MANY_ATTEMPTS",
                    format!("{CODE_ATTEMPTS} wrong codes were entered; sign in again"),
                )))
            }
            Some(Ok(stored)) => stored,
        };
        let Some(id) = stored
            .account_id
            .as_deref()
            .and_then(|a| Uuid::parse_str(a).ok())
        else {
            return Err(unknown());
        };
        let state = self.state(id).await?;
        let now = self.clock.now();
        let login_key = state.login.clone();
        let fail = |reason: SignInFailure, error: UserError| async move {
            self.count_login_failure(&login_key).await?;
            self.record_failure(id, reason).await;
            Err::<NewSession, _>(user(error))
        };
        if stored.expires_at <= now {
            return fail(
                SignInFailure::CodeExpired,
                UserError::field(
                    "code",
                    "CODE_EXPIRED",
                    "the code has expired; sign in again",
                ),
            )
            .await;
        }
        let left = CODE_ATTEMPTS - stored.attempts;
        let wrong_reason = if left > 0 {
            SignInFailure::WrongCode
        } else {
            SignInFailure::TooManyAttempts
        };
        let wrong = UserError::field(
            "code",
            "INVALID_CODE",
            if left > 0 {
                format!("the code is wrong; {left} attempts left")
            } else {
                "the code is wrong and no attempts are left; sign in again".to_string()
            },
        );
        let factor = match stored.method.as_deref() {
            Some("totp") => {
                let totp = self.store.totp(id).await.map_err(internal)?;
                let accepted = totp
                    .secret
                    .as_deref()
                    .and_then(|secret| totp::accept(secret, code, now, totp.last_step));
                let fresh = match accepted {
                    Some(step) => self.store.use_totp_step(id, step).await.map_err(internal)?,
                    None => false,
                };
                if !fresh {
                    return fail(wrong_reason, wrong).await;
                }
                SecondFactor::Totp
            }
            _ => {
                let code = code.trim();
                if !self
                    .codes
                    .matches(SIGN_IN, &subject, code, &stored.code_hash)
                {
                    return fail(wrong_reason, wrong).await;
                }
                SecondFactor::Code
            }
        };
        self.store
            .delete_code(SIGN_IN, &subject)
            .await
            .map_err(internal)?;
        self.store
            .throttle_reset(LOGIN_SCOPE, &state.login)
            .await
            .map_err(internal)?;
        if state.status != AccountStatus::Active {
            return Err(unknown());
        }
        let session = self.open_session(id, &state, factor).await?;
        self.refund_address(ip).await?;
        Ok(session)
    }

    // --- sessions ------------------------------------------------------------------------

    /// Spends `refresh_token` and returns the session with a new one. A spent
    /// token coming back revokes its whole session.
    pub async fn refresh(&self, refresh_token: &str) -> Flow<NewSession> {
        let now = self.clock.now();
        let invalid = || {
            user(UserError::field(
                "refreshToken",
                "INVALID_REFRESH_TOKEN",
                "the refresh token is unknown, expired or revoked; sign in again",
            ))
        };
        let hash = token_hash(refresh_token.trim());
        match self
            .store
            .spend_refresh(&hash, now)
            .await
            .map_err(internal)?
        {
            Spent::Unknown => Err(invalid()),
            Spent::Reused(session_id) => {
                let session = self.store.session(session_id).await.map_err(internal)?;
                if let Some(session) = session {
                    let revoked = self
                        .store
                        .revoke_session(session_id, "refresh_token_reused", now)
                        .await
                        .map_err(internal)?;
                    if revoked {
                        self.run(
                            session.account_id,
                            Actor::system(),
                            AccountCommand::RevokeSessions {
                                reason: RevokeReason::RefreshTokenReused,
                            },
                            false,
                        )
                        .await?;
                    }
                }
                Err(user(UserError::field(
                    "refreshToken",
                    "REFRESH_TOKEN_REUSED",
                    "this refresh token was used before; the session is ended for safety: sign in again",
                )))
            }
            Spent::Fresh(session_id) => {
                let Some(session) = self.store.session(session_id).await.map_err(internal)? else {
                    return Err(invalid());
                };
                if !session.live(now) {
                    return Err(invalid());
                }
                let refresh_token = opaque_token().map_err(internal)?;
                self.store
                    .add_refresh(session_id, &token_hash(&refresh_token), now)
                    .await
                    .map_err(internal)?;
                let role = session
                    .role
                    .parse::<Role>()
                    .map_err(|e| internal(e.to_string()))?;
                Ok(NewSession {
                    session_id,
                    refresh_token,
                    expires_at: session.expires_at,
                    actor: Actor {
                        account_id: session.account_id,
                        role,
                        organisation_id: session.organisation_id,
                    },
                    last_order: None,
                })
            }
        }
    }

    /// Ends session `session_id` of `actor`.
    pub async fn sign_out(&self, actor: &Actor, session_id: Uuid) -> Flow<Option<JournalOrder>> {
        let now = self.clock.now();
        let revoked = self
            .store
            .revoke_session(session_id, "signed_out", now)
            .await
            .map_err(internal)?;
        if !revoked {
            return Ok(None);
        }
        let outcome = self
            .run(
                actor.account_id,
                actor.clone(),
                AccountCommand::RecordSignOut { session_id },
                false,
            )
            .await?;
        Ok(outcome.last_order())
    }

    /// Ends every session of `actor`; returns how many were live.
    pub async fn sign_out_everywhere(&self, actor: &Actor) -> Flow<(u64, Option<JournalOrder>)> {
        let now = self.clock.now();
        let count = self
            .store
            .revoke_all(actor.account_id, "sign_out_everywhere", now)
            .await
            .map_err(internal)?;
        let outcome = self
            .run(
                actor.account_id,
                actor.clone(),
                AccountCommand::RevokeSessions {
                    reason: RevokeReason::SignOutEverywhere,
                },
                false,
            )
            .await?;
        Ok((count, outcome.last_order()))
    }

    // --- recovery ------------------------------------------------------------------------

    /// Sends a recovery code to `contact` if it has an active account; the
    /// answer is the same either way.
    pub async fn request_recovery(&self, contact: &str, ip: Option<IpAddr>) -> Flow<CodeSent> {
        let login = Login::parse(contact, "contact").map_err(user)?;
        self.count_send(ip).await?;
        let account = self
            .store
            .account_of_login(login.as_str())
            .await
            .map_err(internal)?;
        let active = match account {
            Some(id) => self.recoverable(id).await?,
            None => false,
        };
        // Contacts without an active account get a stored code nobody is told,
        // so the answer and the limits are the same.
        let (code, expires_at) = self
            .issue_code(RECOVER, login.as_str(), account, CODE_TTL, !active)
            .await?;
        if active {
            self.send(
                &login,
                "Восстановление пароля в Кабинете",
                format!(
                    "Код для восстановления пароля в Кабинете: {code}. Он действует 10 минут. \
                     Если вы не просили восстановить пароль, просто не обращайте внимания на это сообщение."
                ),
            )
            .await?;
        }
        Ok(CodeSent {
            channel: login.kind().channel(),
            sent_to: login.masked(),
            expires_at,
        })
    }

    /// Whether account `id` may recover its password: it is active. An account
    /// whose registration stopped before its credentials were stored (possible
    /// before they were written first) is completed here, so it is not locked out.
    async fn recoverable(&self, id: Uuid) -> Flow<bool> {
        match self.store.status(id).await.map_err(internal)? {
            Some(status) => Ok(status == AccountStatus::Active),
            None => match self.account(id).await? {
                Some(view) if view.state.status == AccountStatus::Active => {
                    self.store
                        .put_credentials(id, None, self.clock.now())
                        .await
                        .map_err(internal)?;
                    Ok(true)
                }
                _ => Ok(false),
            },
        }
    }

    /// Sets a new password with a recovery code; ends every session.
    pub async fn reset_password(
        &self,
        contact: &str,
        code: &str,
        new_password: &str,
        ip: Option<IpAddr>,
    ) -> Flow<Option<JournalOrder>> {
        let login = Login::parse(contact, "contact").map_err(user)?;
        let new_password =
            NewPassword::parse(new_password, login.as_str(), "newPassword").map_err(user)?;
        self.check_address(ip).await?;
        let stored = self.check_code(RECOVER, login.as_str(), code).await?;
        let Some(id) = stored
            .account_id
            .as_deref()
            .and_then(|a| Uuid::parse_str(a).ok())
        else {
            // A code stored for a contact without an account never matches a sent one.
            return Err(user(UserError::field(
                "code",
                "INVALID_CODE",
                "the code is wrong",
            )));
        };
        let state = self.state(id).await?;
        let hash = self
            .hashing
            .hash(new_password.expose())
            .await
            .map_err(gated)?;
        let now = self.clock.now();
        let actor = Self::self_actor(id, &state);
        self.run(
            id,
            actor.clone(),
            AccountCommand::RecordPasswordChange {
                reason: PasswordChange::Recovered,
            },
            false,
        )
        .await?;
        self.store
            .set_password(id, &hash, now)
            .await
            .map_err(internal)?;
        self.store
            .revoke_all(id, "password_reset", now)
            .await
            .map_err(internal)?;
        self.store
            .throttle_reset(LOGIN_SCOPE, login.as_str())
            .await
            .map_err(internal)?;
        let outcome = self
            .run(
                id,
                actor,
                AccountCommand::RevokeSessions {
                    reason: RevokeReason::PasswordReset,
                },
                false,
            )
            .await?;
        self.refund_address(ip).await?;
        Ok(outcome.last_order())
    }

    // --- TOTP ----------------------------------------------------------------------------

    /// Starts enrolling an authenticator app: a new secret awaiting its first code.
    pub async fn start_totp(&self, actor: &Actor) -> Flow<TotpEnrolment> {
        let state = self.active_state(actor.account_id).await?;
        if state.totp_enabled {
            return Err(user(UserError::new(
                "TOTP_ALREADY_ENABLED",
                "the authenticator app is already enabled; disable it first",
            )));
        }
        let secret = totp::new_secret().map_err(internal)?;
        self.store
            .set_totp_pending(actor.account_id, &secret)
            .await
            .map_err(internal)?;
        Ok(TotpEnrolment {
            provisioning_uri: totp::provisioning_uri(&secret, &state.login),
            secret,
        })
    }

    async fn active_state(&self, id: Uuid) -> Flow<AccountState> {
        let state = self
            .account(id)
            .await?
            .map(|v| v.state)
            .ok_or_else(|| user(UserError::new("NOT_FOUND", "the caller has no account")))?;
        match state.status {
            AccountStatus::Active => Ok(state),
            AccountStatus::Deactivated => Err(user(UserError::new(
                "ACCOUNT_DEACTIVATED",
                "the account is deactivated",
            ))),
            AccountStatus::Closed => Err(user(UserError::new(
                "ACCOUNT_CLOSED",
                "the account is closed",
            ))),
        }
    }

    /// Enables the app after its first code.
    pub async fn confirm_totp(
        &self,
        actor: &Actor,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Flow<Option<JournalOrder>> {
        self.check_address(ip).await?;
        let state = self.active_state(actor.account_id).await?;
        let record = self.store.totp(actor.account_id).await.map_err(internal)?;
        let Some(pending) = record.pending else {
            return Err(user(UserError::new(
                "TOTP_NOT_STARTED",
                "start the enrolment first (startTotpEnrolment)",
            )));
        };
        if state.totp_enabled {
            return Err(user(UserError::new(
                "TOTP_ALREADY_ENABLED",
                "the authenticator app is already enabled",
            )));
        }
        let now = self.clock.now();
        let accepted = match totp::accept(&pending, code, now, record.last_step) {
            Some(step) => self
                .store
                .activate_totp(actor.account_id, step)
                .await
                .map_err(internal)?,
            None => false,
        };
        if !accepted {
            return Err(user(UserError::field(
                "code",
                "INVALID_CODE",
                "the code is wrong or was used already; enter the current code of the app",
            )));
        }
        let outcome = self
            .run(
                actor.account_id,
                actor.clone(),
                AccountCommand::EnableTotp,
                false,
            )
            .await?;
        self.refund_address(ip).await?;
        Ok(outcome.last_order())
    }

    /// Disables the app; needs a current code of it.
    pub async fn disable_totp(
        &self,
        actor: &Actor,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Flow<Option<JournalOrder>> {
        self.check_address(ip).await?;
        let state = self.active_state(actor.account_id).await?;
        if !state.totp_enabled {
            return Err(user(UserError::new(
                "TOTP_NOT_ENABLED",
                "the authenticator app is not enabled",
            )));
        }
        let record = self.store.totp(actor.account_id).await.map_err(internal)?;
        let now = self.clock.now();
        let accepted = match record
            .secret
            .as_deref()
            .and_then(|s| totp::accept(s, code, now, record.last_step))
        {
            Some(step) => self
                .store
                .use_totp_step(actor.account_id, step)
                .await
                .map_err(internal)?,
            None => false,
        };
        if !accepted {
            self.count_login_failure(&state.login).await?;
            return Err(user(UserError::field(
                "code",
                "INVALID_CODE",
                "the code is wrong or was used already",
            )));
        }
        let outcome = self
            .run(
                actor.account_id,
                actor.clone(),
                AccountCommand::DisableTotp,
                false,
            )
            .await?;
        self.store
            .clear_totp(actor.account_id)
            .await
            .map_err(internal)?;
        self.refund_address(ip).await?;
        Ok(outcome.last_order())
    }

    // --- closing -------------------------------------------------------------------------

    /// Closes the caller's account after checking the password: sessions end
    /// and the login becomes free.
    pub async fn close(
        &self,
        actor: &Actor,
        given: &str,
        ip: Option<IpAddr>,
    ) -> Flow<Option<JournalOrder>> {
        self.check_address(ip).await?;
        let state = self.active_state(actor.account_id).await?;
        self.check_login(&state.login, ip).await?;
        let stored = self
            .store
            .credentials(actor.account_id)
            .await
            .map_err(internal)?;
        let hash = stored.as_ref().and_then(|(h, _)| h.as_deref());
        let ok = match self.hashing.verify(given, hash).await {
            Ok(ok) => ok,
            Err(e) => {
                self.refund_attempt(ip, &state.login).await?;
                return Err(gated(e));
            }
        };
        if !ok {
            return Err(user(UserError::field(
                "password",
                "INVALID_CREDENTIALS",
                "the password is wrong",
            )));
        }
        let now = self.clock.now();
        // Status and sessions first: a crash before the event leaves the account
        // unusable rather than open.
        self.store
            .set_status(actor.account_id, AccountStatus::Closed, now)
            .await
            .map_err(internal)?;
        self.store
            .revoke_all(actor.account_id, "account_closed", now)
            .await
            .map_err(internal)?;
        let outcome = self
            .run(
                actor.account_id,
                actor.clone(),
                AccountCommand::Close,
                false,
            )
            .await?;
        self.refund_attempt(ip, &state.login).await?;
        Ok(outcome.last_order())
    }

    /// Deactivates account `id` on behalf of `metadata`'s actor (an
    /// administrator): its sessions end and it can no longer sign in; the
    /// login stays taken.
    pub async fn deactivate(
        &self,
        id: Uuid,
        metadata: &EventMetadata,
    ) -> Flow<(AccountView, Option<JournalOrder>)> {
        let not_found = || {
            user(UserError::field(
                "accountId",
                "NOT_FOUND",
                "no such account",
            ))
        };
        let state = self.account(id).await?.ok_or_else(not_found)?.state;
        if state.status != AccountStatus::Active {
            return Err(user(UserError::field(
                "accountId",
                "ACCOUNT_NOT_ACTIVE",
                format!("the account is {} already", state.status.as_str()),
            )));
        }
        let now = self.clock.now();
        // As with closing: unusable first, then the event.
        self.store
            .set_status(id, AccountStatus::Deactivated, now)
            .await
            .map_err(internal)?;
        self.store
            .revoke_all(id, "account_deactivated", now)
            .await
            .map_err(internal)?;
        let input = json!({ "account": id, "command": "Deactivate" });
        let outcome = self
            .run_with(id, AccountCommand::Deactivate, false, metadata, &input)
            .await?;
        let state = self.state(id).await?;
        Ok((AccountView { id, state }, outcome.last_order()))
    }

    // --- staff ---------------------------------------------------------------------------

    /// Opens a staff account on behalf of `metadata`'s actor (an administrator,
    /// or the system for the first administrator).
    pub async fn create_staff(
        &self,
        request: &StaffAccountRequest,
        metadata: &EventMetadata,
    ) -> Flow<(AccountView, Option<JournalOrder>)> {
        if request.role == Role::Patient || !Role::ASSIGNABLE.contains(&request.role) {
            return Err(user(UserError::field(
                "role",
                "INVALID_INPUT",
                "staff roles are registrar, doctor, lab, pharmacist, auditor, analyst and admin; patients register themselves",
            )));
        }
        let login = Login::parse(&request.login, "login").map_err(user)?;
        let new_password = request
            .initial_password
            .as_deref()
            .map(|p| NewPassword::parse(p, login.as_str(), "initialPassword"))
            .transpose()
            .map_err(user)?;
        if let Some(org) = request.organisation_id {
            let organisation: Organisation = self
                .commands
                .load(&org.to_string())
                .await
                .map_err(internal)?;
            if organisation.details.is_none() {
                return Err(user(UserError::field(
                    "organisationId",
                    "NOT_FOUND",
                    "no such organisation",
                )));
            }
        }
        let hash = match &new_password {
            Some(p) => Some(self.hashing.hash(p.expose()).await.map_err(gated)?),
            None => None,
        };
        let fresh_id = Uuid::now_v7();
        // What makes a retry under the same idempotency key "the same request"
        // (the password itself is left out: only whether one was given).
        let input = json!({
            "role": request.role.as_str(),
            "organisation_id": request.organisation_id,
            "login": login.as_str(),
            "initial_password": request.initial_password.is_some(),
        });
        // The credentials first, keyed by the new id, as for patients.
        self.store
            .put_credentials(fresh_id, hash.as_deref(), self.clock.now())
            .await
            .map_err(internal)?;
        let outcome = self
            .run_with(
                fresh_id,
                AccountCommand::Register {
                    login: login.clone(),
                    role: request.role,
                    organisation_id: request.organisation_id,
                    terms_version: None,
                    password_set: hash.is_some(),
                },
                true,
                metadata,
                &input,
            )
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                if let AccountFailure::User(_) = e {
                    self.store
                        .delete_credentials(fresh_id)
                        .await
                        .map_err(internal)?;
                }
                return Err(e);
            }
        };
        let id = outcome.aggregate_id.parse::<Uuid>().map_err(internal)?;
        // A retry of a request that opened the account but stopped before its
        // credentials (or its invitation) completes it now.
        let complete = if outcome.replayed {
            self.store
                .delete_credentials(fresh_id)
                .await
                .map_err(internal)?;
            let missing = self
                .store
                .credentials(id)
                .await
                .map_err(internal)?
                .is_none();
            if missing {
                self.store
                    .put_credentials(id, hash.as_deref(), self.clock.now())
                    .await
                    .map_err(internal)?;
            }
            missing
        } else {
            true
        };
        if complete && hash.is_none() {
            let (code, _) = self
                .issue_code(RECOVER, login.as_str(), Some(id), INVITATION_TTL, false)
                .await?;
            self.send(
                &login,
                "Ваша служебная учётная запись в Кабинете",
                format!(
                    "Для вас открыта служебная учётная запись в Кабинете. Задайте пароль с кодом {code}: \
                     восстановите пароль (resetPassword) с этим логином. Код действует 24 часа."
                ),
            )
            .await?;
        }
        let state = self.state(id).await?;
        Ok((AccountView { id, state }, outcome.last_order()))
    }

    /// The kind of login of a new contact, for callers that must explain where a code goes.
    pub fn login_kind(contact: &str) -> Option<LoginKind> {
        Login::parse(contact, "contact").ok().map(|l| l.kind())
    }
}
