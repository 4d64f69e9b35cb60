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
use super::password::{self, NewPassword};
use super::secrets::{opaque_token, six_digit_code, token_hash, CodeHasher};
use super::store::{AccountStore, Spent, StoredCode};
use super::throttle::{PER_ADDRESS, PER_LOGIN, SENDS_PER_ADDRESS};
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
            Err(CommandError::Reserved(_)) => Err(user(UserError::field(
                "login",
                "LOGIN_TAKEN",
                "an account with this login already exists",
            ))),
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

    async fn check_address(&self, ip: Option<IpAddr>) -> Flow<()> {
        let Some(ip) = ip else { return Ok(()) };
        let now = self.clock.now();
        match self
            .store
            .throttle_wait(&PER_ADDRESS, ADDRESS_SCOPE, &ip.to_string(), now)
            .await
            .map_err(internal)?
        {
            Some(wait) => Err(too_many(wait)),
            None => Ok(()),
        }
    }

    /// Counts a code sent for `ip`, refusing when it asked for too many.
    async fn count_send(&self, ip: Option<IpAddr>) -> Flow<()> {
        let Some(ip) = ip else { return Ok(()) };
        let now = self.clock.now();
        let key = ip.to_string();
        if let Some(wait) = self
            .store
            .throttle_wait(&SENDS_PER_ADDRESS, SENDS_SCOPE, &key, now)
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
        self.store
            .throttle_fail(&SENDS_PER_ADDRESS, SENDS_SCOPE, &key, now)
            .await
            .map_err(internal)
    }

    async fn check_login(&self, login: &str) -> Flow<()> {
        let now = self.clock.now();
        match self
            .store
            .throttle_wait(&PER_LOGIN, LOGIN_SCOPE, login, now)
            .await
            .map_err(internal)?
        {
            Some(wait) => Err(too_many(wait)),
            None => Ok(()),
        }
    }

    async fn count_failure(&self, ip: Option<IpAddr>, login: Option<&str>) -> Flow<()> {
        let now = self.clock.now();
        if let Some(ip) = ip {
            self.store
                .throttle_fail(&PER_ADDRESS, ADDRESS_SCOPE, &ip.to_string(), now)
                .await
                .map_err(internal)?;
        }
        if let Some(login) = login {
            self.store
                .throttle_fail(&PER_LOGIN, LOGIN_SCOPE, login, now)
                .await
                .map_err(internal)?;
        }
        Ok(())
    }

    /// Stores a fresh code for `(purpose, subject)` unless one was sent too
    /// recently; returns the code and its expiry.
    async fn issue_code(
        &self,
        purpose: &str,
        subject: &str,
        account_id: Option<Uuid>,
        ttl: Duration,
    ) -> Flow<(String, DateTime<Utc>)> {
        let now = self.clock.now();
        let (sends, window_from) = match self
            .store
            .code_sends(purpose, subject)
            .await
            .map_err(internal)?
        {
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
        let code = six_digit_code().map_err(internal)?;
        let expires_at = now + ttl;
        let hash = self.codes.hash(purpose, subject, &code);
        self.store
            .put_code(
                purpose,
                subject,
                &hash,
                account_id,
                None,
                expires_at,
                sends,
                window_from,
                now,
            )
            .await
            .map_err(internal)?;
        Ok((code, expires_at))
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
        let (code, expires_at) = self
            .issue_code(REGISTER, login.as_str(), None, CODE_TTL)
            .await?;
        if taken {
            // The stored code is never told to anyone; the holder learns that
            // someone tried to register with their contact.
            let fresh = six_digit_code().map_err(internal)?;
            self.store
                .put_code(
                    REGISTER,
                    login.as_str(),
                    &self
                        .codes
                        .hash(REGISTER, login.as_str(), &format!("x{fresh}")),
                    None,
                    None,
                    expires_at,
                    1,
                    self.clock.now(),
                    self.clock.now(),
                )
                .await
                .map_err(internal)?;
            self.send(
                &login,
                "Kabinet: you already have an account",
                "Someone tried to register a Kabinet account with this contact. You already have one: \
                 sign in, or recover your password if you forgot it."
                    .to_string(),
            )
            .await?;
        } else {
            self.send(
                &login,
                "Kabinet registration code",
                format!("Your Kabinet registration code: {code}. It is valid for 10 minutes."),
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
        if let Err(e) = self.check_code(REGISTER, login.as_str(), code).await {
            self.count_failure(ip, None).await?;
            return Err(e);
        }
        let hash = password::hash(new_password.expose())
            .await
            .map_err(internal)?;
        let id = Uuid::now_v7();
        let actor = Actor {
            account_id: id,
            role: Role::Patient,
            organisation_id: None,
        };
        self.run(
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
        .await
        .map_err(|e| match e {
            AccountFailure::User(u) if u.code == "LOGIN_TAKEN" => user(UserError::field(
                "contact",
                "ALREADY_REGISTERED",
                "an account with this contact already exists: sign in or recover the password",
            )),
            other => other,
        })?;
        self.store
            .put_credentials(id, Some(&hash), self.clock.now())
            .await
            .map_err(internal)?;
        let state = self.state(id).await?;
        self.open_session(id, &state, SecondFactor::Code).await
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
        self.check_address(ip).await?;
        // Counted per login text, so unknown logins behave like known ones.
        self.check_login(login.as_str()).await?;
        let account_id = self
            .store
            .account_of_login(login.as_str())
            .await
            .map_err(internal)?;
        let stored = match account_id {
            Some(id) => self.store.credentials(id).await.map_err(internal)?,
            None => None,
        };
        let hash = stored.as_ref().and_then(|(hash, _)| hash.as_deref());
        let ok = password::verify(given, hash).await.map_err(internal)?;
        let wrong = || {
            user(UserError::new(
                "INVALID_CREDENTIALS",
                "the login or the password is wrong",
            ))
        };
        let (Some(id), true) = (account_id, ok) else {
            self.count_failure(ip, Some(login.as_str())).await?;
            if let Some(id) = account_id {
                self.run(
                    id,
                    Actor::system(),
                    AccountCommand::RecordSignInFailure {
                        reason: SignInFailure::WrongPassword,
                    },
                    false,
                )
                .await?;
            }
            return Err(wrong());
        };
        let state = self.state(id).await?;
        match state.status {
            AccountStatus::Active => {}
            AccountStatus::Deactivated => {
                self.run(
                    id,
                    Actor::system(),
                    AccountCommand::RecordSignInFailure {
                        reason: SignInFailure::AccountDeactivated,
                    },
                    false,
                )
                .await?;
                return Err(user(UserError::new(
                    "ACCOUNT_DEACTIVATED",
                    "the account is deactivated; contact the administrator",
                )));
            }
            AccountStatus::Closed => return Err(wrong()),
        }
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
            "Kabinet sign-in code",
            format!("Your Kabinet sign-in code: {code}. It is valid for 10 minutes. Do not tell it to anyone."),
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
            None => {
                self.count_failure(ip, None).await?;
                return Err(unknown());
            }
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
            self.count_failure(ip, Some(&login_key)).await?;
            self.run(
                id,
                Actor::system(),
                AccountCommand::RecordSignInFailure { reason },
                false,
            )
            .await?;
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
        self.open_session(id, &state, factor).await
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
        let (code, expires_at) = self
            .issue_code(RECOVER, login.as_str(), account, CODE_TTL)
            .await?;
        let active = match account {
            Some(id) => {
                self.store.status(id).await.map_err(internal)? == Some(AccountStatus::Active)
            }
            None => false,
        };
        if active {
            self.send(
                &login,
                "Kabinet password recovery",
                format!(
                    "Your Kabinet password recovery code: {code}. It is valid for 10 minutes. \
                         If you did not ask for it, ignore this message."
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
        let stored = match self.check_code(RECOVER, login.as_str(), code).await {
            Ok(stored) => stored,
            Err(e) => {
                self.count_failure(ip, None).await?;
                return Err(e);
            }
        };
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
        let hash = password::hash(new_password.expose())
            .await
            .map_err(internal)?;
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
            self.count_failure(ip, None).await?;
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
            self.count_failure(ip, Some(&state.login)).await?;
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
        self.check_login(&state.login).await?;
        let stored = self
            .store
            .credentials(actor.account_id)
            .await
            .map_err(internal)?;
        let hash = stored.as_ref().and_then(|(h, _)| h.as_deref());
        if !password::verify(given, hash).await.map_err(internal)? {
            self.count_failure(ip, Some(&state.login)).await?;
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
            Some(p) => Some(password::hash(p.expose()).await.map_err(internal)?),
            None => None,
        };
        let id = Uuid::now_v7();
        // What makes a retry under the same idempotency key "the same request"
        // (the password itself is left out: only whether one was given).
        let input = json!({
            "role": request.role.as_str(),
            "organisation_id": request.organisation_id,
            "login": login.as_str(),
            "initial_password": request.initial_password.is_some(),
        });
        let outcome = self
            .run_with(
                id,
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
            .await?;
        let id = outcome.aggregate_id.parse::<Uuid>().map_err(internal)?;
        if !outcome.replayed {
            self.store
                .put_credentials(id, hash.as_deref(), self.clock.now())
                .await
                .map_err(internal)?;
            if hash.is_none() {
                let (code, _) = self
                    .issue_code(RECOVER, login.as_str(), Some(id), INVITATION_TTL)
                    .await?;
                self.send(
                    &login,
                    "Your Kabinet staff account",
                    format!(
                        "A Kabinet staff account was opened for you. Set your password with the code {code} \
                         (resetPassword with this login); it is valid for 24 hours."
                    ),
                )
                .await?;
            }
        }
        let state = self.state(id).await?;
        Ok((AccountView { id, state }, outcome.last_order()))
    }

    /// The kind of login of a new contact, for callers that must explain where a code goes.
    pub fn login_kind(contact: &str) -> Option<LoginKind> {
        Login::parse(contact, "contact").ok().map(|l| l.kind())
    }
}
