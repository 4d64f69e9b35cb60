//! Accounts and sign-in (A1, A4, A6): registration with a code, two-factor
//! sign-in, sessions with rotating refresh tokens, recovery, TOTP, closing the
//! account, staff accounts; and the guard that lets one operation check at
//! most one credential.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{
    Context, Enum, ErrorExtensionValues, InputObject, Object, ServerError, ServerResult,
    SimpleObject, Variables, ID,
};
use chrono::{DateTime, Utc};
use kabinet_app::accounts::{
    AccountFailure, AccountView, Challenge, ChallengeMethod, CodeSent, NewSession,
    StaffAccountRequest,
};
use kabinet_domain::accounts::{AccountStatus as DomainStatus, LoginKind};
use kabinet_domain::notify::Channel;
use kabinet_domain::Role;
use uuid::Uuid;

use super::context::{actor, actor_in, internal, metadata, services, CallerSession, ClientAddress};
use super::errors::{idempotency_key, UserError};
use super::ids;

/// Root fields that check a credential or send one: an operation may hold at
/// most one of them, so aliases cannot multiply guesses or messages.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "startRegistration",
    "confirmRegistration",
    "signIn",
    "completeSignIn",
    "refreshSession",
    "requestPasswordRecovery",
    "resetPassword",
    "confirmTotpEnrolment",
    "disableTotp",
    "closeMyAccount",
];

/// The extension that refuses documents with more than one credential field.
pub struct OneCredentialPerOperation;

impl ExtensionFactory for OneCredentialPerOperation {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OneCredentialPerOperation)
    }
}

fn count_credential_fields(
    document: &ExecutableDocument,
    set: &SelectionSet,
    seen_fragments: &mut HashSet<String>,
) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(field) => {
                usize::from(CREDENTIAL_FIELDS.contains(&field.node.name.node.as_str()))
            }
            Selection::InlineFragment(fragment) => {
                count_credential_fields(document, &fragment.node.selection_set.node, seen_fragments)
            }
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                if !seen_fragments.insert(name.to_string()) {
                    // A fragment spread twice counts again: each spread is executed.
                    return document
                        .fragments
                        .get(name)
                        .map(|f| {
                            count_credential_fields(
                                document,
                                &f.node.selection_set.node,
                                &mut HashSet::new(),
                            )
                        })
                        .unwrap_or(0);
                }
                document
                    .fragments
                    .get(name)
                    .map(|f| {
                        count_credential_fields(
                            document,
                            &f.node.selection_set.node,
                            seen_fragments,
                        )
                    })
                    .unwrap_or(0)
            }
        })
        .sum()
}

/// How many credential fields the document's operations hold at their root.
pub fn credential_fields_in(document: &ExecutableDocument) -> usize {
    document
        .operations
        .iter()
        .map(|(_, op)| {
            count_credential_fields(document, &op.node.selection_set.node, &mut HashSet::new())
        })
        .sum()
}

#[async_graphql::async_trait::async_trait]
impl Extension for OneCredentialPerOperation {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if credential_fields_in(&document) > 1 {
            let mut error = ServerError::new(
                "one request may sign in, check a code or send a code only once: send one such field per request",
                None,
            );
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", "TOO_MANY_CREDENTIAL_FIELDS");
            error.extensions = Some(extensions);
            return Err(error);
        }
        Ok(document)
    }
}

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

#[Object]
impl Account {
    /// Global id.
    async fn id(&self) -> ID {
        ids::encode("Account", self.0.id)
    }
    async fn login_kind(&self) -> AccountLoginKind {
        match self.0.state.login_kind {
            LoginKind::Phone => AccountLoginKind::Phone,
            LoginKind::Email => AccountLoginKind::Email,
        }
    }
    /// The normalised login: `+7XXXXXXXXXX` or a lower-case e-mail address.
    async fn login(&self) -> &str {
        &self.0.state.login
    }
    /// `patient`, `registrar`, `doctor`, `lab`, `pharmacist`, `auditor`, `analyst` or `admin`.
    async fn role(&self) -> &str {
        self.0.state.role.as_str()
    }
    /// Global id of the staff member's organisation.
    async fn organisation_id(&self) -> Option<ID> {
        self.0
            .state
            .organisation_id
            .map(|o| ids::encode("Organisation", o))
    }
    async fn status(&self) -> AccountStatus {
        match self.0.state.status {
            DomainStatus::Active => AccountStatus::Active,
            DomainStatus::Deactivated => AccountStatus::Deactivated,
            DomainStatus::Closed => AccountStatus::Closed,
        }
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
    /// The contact with most of it hidden.
    pub sent_to: String,
    pub expires_at: DateTime<Utc>,
}

impl From<CodeSent> for CodeDelivery {
    fn from(sent: CodeSent) -> Self {
        CodeDelivery {
            channel: match sent.channel {
                Channel::Email => DeliveryChannel::Email,
                Channel::Sms => DeliveryChannel::Sms,
            },
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

// --- inputs and payloads -------------------------------------------------------------------

/// A phone number or e-mail address to register with.
#[derive(Debug, InputObject)]
pub struct StartRegistrationInput {
    pub contact: String,
}

/// What `startRegistration` did.
#[derive(Debug, SimpleObject)]
pub struct StartRegistrationPayload {
    /// Where the code went; the same answer whether or not the contact has an account.
    pub delivery: Option<CodeDelivery>,
    pub user_errors: Vec<UserError>,
}

/// The code, a password and the acceptance of the terms.
#[derive(Debug, InputObject)]
pub struct ConfirmRegistrationInput {
    pub contact: String,
    pub code: String,
    /// The new password: 10 to 128 characters, at least 5 different ones, no
    /// control characters, not containing the login, and not a common password
    /// or a common word with digits or signs around it (`password12`, `йцукен2024`,
    /// `P@ssw0rd!`), compared without regard to case (PASSWORD_TOO_COMMON).
    pub password: String,
    /// Must be true: registering accepts the terms of use.
    pub accept_terms: bool,
}

/// A new account, signed in.
#[derive(Debug, SimpleObject)]
pub struct SignedInPayload {
    pub account: Option<Account>,
    pub tokens: Option<AuthTokens>,
    pub user_errors: Vec<UserError>,
}

/// A login and its password.
#[derive(Debug, InputObject)]
pub struct SignInInput {
    /// Phone number or e-mail address.
    pub login: String,
    pub password: String,
}

/// The second factor to answer with `completeSignIn`.
#[derive(Debug, SimpleObject)]
pub struct SignInPayload {
    pub challenge: Option<SignInChallenge>,
    pub user_errors: Vec<UserError>,
}

/// The second factor's answer.
#[derive(Debug, InputObject)]
pub struct CompleteSignInInput {
    pub challenge_id: String,
    pub code: String,
}

/// A refresh token to spend.
#[derive(Debug, InputObject)]
pub struct RefreshSessionInput {
    pub refresh_token: String,
}

/// New tokens of the same session.
#[derive(Debug, SimpleObject)]
pub struct RefreshSessionPayload {
    pub tokens: Option<AuthTokens>,
    pub user_errors: Vec<UserError>,
}

/// What `signOut` did.
#[derive(Debug, SimpleObject)]
pub struct SignOutPayload {
    /// False when the session had ended already.
    pub signed_out: bool,
    pub user_errors: Vec<UserError>,
}

/// What `signOutEverywhere` did.
#[derive(Debug, SimpleObject)]
pub struct SignOutEverywherePayload {
    /// Sessions that were live and are now ended.
    pub ended_sessions: i32,
    pub user_errors: Vec<UserError>,
}

/// The contact to send a recovery code to.
#[derive(Debug, InputObject)]
pub struct RequestPasswordRecoveryInput {
    pub contact: String,
}

/// What `requestPasswordRecovery` did: always the same answer.
#[derive(Debug, SimpleObject)]
pub struct RequestPasswordRecoveryPayload {
    pub delivery: Option<CodeDelivery>,
    pub user_errors: Vec<UserError>,
}

/// A recovery code and the new password.
#[derive(Debug, InputObject)]
pub struct ResetPasswordInput {
    pub contact: String,
    pub code: String,
    /// The new password: 10 to 128 characters, at least 5 different ones, no
    /// control characters, not containing the login, and not a common password
    /// or a common word with digits or signs around it (`password12`, `йцукен2024`,
    /// `P@ssw0rd!`), compared without regard to case (PASSWORD_TOO_COMMON).
    pub new_password: String,
}

/// What `resetPassword` did; every session of the account was ended.
#[derive(Debug, SimpleObject)]
pub struct ResetPasswordPayload {
    pub password_changed: bool,
    pub user_errors: Vec<UserError>,
}

/// A new authenticator secret to confirm with its first code.
#[derive(Debug, SimpleObject)]
pub struct StartTotpEnrolmentPayload {
    /// Base32 secret, for typing in by hand.
    pub secret: Option<String>,
    /// `otpauth://totp/…` for a QR code.
    pub provisioning_uri: Option<String>,
    pub user_errors: Vec<UserError>,
}

/// A current code of the authenticator app.
#[derive(Debug, InputObject)]
pub struct TotpCodeInput {
    pub code: String,
}

/// The account after a TOTP change.
#[derive(Debug, SimpleObject)]
pub struct TotpPayload {
    pub account: Option<Account>,
    pub user_errors: Vec<UserError>,
}

/// The password, to confirm closing.
#[derive(Debug, InputObject)]
pub struct CloseMyAccountInput {
    pub password: String,
}

/// What `closeMyAccount` did.
#[derive(Debug, SimpleObject)]
pub struct CloseMyAccountPayload {
    pub closed: bool,
    pub user_errors: Vec<UserError>,
}

/// A staff account to open.
#[derive(Debug, InputObject)]
pub struct CreateStaffAccountInput {
    pub role: StaffRole,
    /// Global id of the organisation (registrar, doctor, lab, pharmacist only).
    pub organisation_id: Option<ID>,
    /// Phone number or e-mail address to sign in with.
    pub login: String,
    /// Without one, a code to set the password (with `resetPassword`) is sent to the login.
    /// The same rules as every new password: 10 to 128 characters, at least 5
    /// different ones, not containing the login, and not a common password or a
    /// common word with digits or signs around it, regardless of case.
    pub initial_password: Option<String>,
    pub idempotency_key: Option<String>,
}

/// The new staff account.
#[derive(Debug, SimpleObject)]
pub struct CreateStaffAccountPayload {
    pub account: Option<Account>,
    pub user_errors: Vec<UserError>,
}

// --- resolvers -----------------------------------------------------------------------------

/// Splits a flow's failure into user errors (returned) and faults (masked).
fn outcome<T>(
    ctx: &Context<'_>,
    result: Result<T, AccountFailure>,
) -> async_graphql::Result<Result<T, Vec<UserError>>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(AccountFailure::User(e)) => Ok(Err(vec![e.into()])),
        Err(AccountFailure::Internal(e)) => Err(internal(ctx, e)),
    }
}

fn client(ctx: &Context<'_>) -> Option<std::net::IpAddr> {
    ctx.data_opt::<ClientAddress>().and_then(|c| c.0)
}

fn session_of(ctx: &Context<'_>) -> Option<Uuid> {
    ctx.data_opt::<CallerSession>().and_then(|s| s.0)
}

fn tokens(ctx: &Context<'_>, session: &NewSession) -> async_graphql::Result<AuthTokens> {
    let access_token = services(ctx)
        .tokens
        .mint_session(&session.actor, session.session_id)
        .map_err(|e| internal(ctx, e))?;
    Ok(AuthTokens {
        access_token,
        access_token_expires_at: Utc::now()
            + chrono::Duration::minutes(crate::auth::ACCESS_TTL_MINUTES),
        refresh_token: session.refresh_token.clone(),
        session_expires_at: session.expires_at,
    })
}

async fn account_of(ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Account>> {
    let view = services(ctx)
        .accounts
        .account(id)
        .await
        .map_err(|e| internal(ctx, e))?;
    Ok(view.map(Account))
}

async fn signed_in(
    ctx: &Context<'_>,
    result: Result<NewSession, AccountFailure>,
) -> async_graphql::Result<SignedInPayload> {
    match outcome(ctx, result)? {
        Ok(session) => Ok(SignedInPayload {
            tokens: Some(tokens(ctx, &session)?),
            account: account_of(ctx, session.actor.account_id).await?,
            user_errors: vec![],
        }),
        Err(user_errors) => Ok(SignedInPayload {
            account: None,
            tokens: None,
            user_errors,
        }),
    }
}

/// Account queries.
#[derive(Default)]
pub struct AccountsQuery;

#[Object]
impl AccountsQuery {
    /// The caller's account; `null` for a development token whose subject has none.
    async fn my_account(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Account>> {
        let actor = actor(ctx)?;
        account_of(ctx, actor.account_id).await
    }
}

/// Account mutations.
#[derive(Default)]
pub struct AccountsMutation;

#[Object]
impl AccountsMutation {
    /// Sends a 6-digit code (10 minutes, 5 tries) to a phone (SMS) or e-mail
    /// address; a contact that has an account gets a notice instead, with the
    /// same answer here.
    async fn start_registration(
        &self,
        ctx: &Context<'_>,
        input: StartRegistrationInput,
    ) -> async_graphql::Result<StartRegistrationPayload> {
        let result = services(ctx)
            .accounts
            .start_registration(&input.contact, client(ctx))
            .await;
        Ok(match outcome(ctx, result)? {
            Ok(sent) => StartRegistrationPayload {
                delivery: Some(sent.into()),
                user_errors: vec![],
            },
            Err(user_errors) => StartRegistrationPayload {
                delivery: None,
                user_errors,
            },
        })
    }

    /// Opens a patient account with the code, a password and the terms
    /// accepted, and signs it in.
    async fn confirm_registration(
        &self,
        ctx: &Context<'_>,
        input: ConfirmRegistrationInput,
    ) -> async_graphql::Result<SignedInPayload> {
        let result = services(ctx)
            .accounts
            .confirm_registration(
                &input.contact,
                &input.code,
                &input.password,
                input.accept_terms,
                client(ctx),
            )
            .await;
        signed_in(ctx, result).await
    }

    /// Checks the password; the answer is the second factor to complete. Every
    /// attempt counts against the login and the client address before the
    /// password is checked (TOO_MANY_ATTEMPTS); when every password-checking
    /// slot of the server stays busy the answer is BUSY with when to try again.
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        input: SignInInput,
    ) -> async_graphql::Result<SignInPayload> {
        let result = services(ctx)
            .accounts
            .sign_in(&input.login, &input.password, client(ctx))
            .await;
        Ok(match outcome(ctx, result)? {
            Ok(challenge) => SignInPayload {
                challenge: Some(challenge.into()),
                user_errors: vec![],
            },
            Err(user_errors) => SignInPayload {
                challenge: None,
                user_errors,
            },
        })
    }

    /// Completes a sign-in with the sent code or the authenticator's code.
    async fn complete_sign_in(
        &self,
        ctx: &Context<'_>,
        input: CompleteSignInInput,
    ) -> async_graphql::Result<SignedInPayload> {
        let result = services(ctx)
            .accounts
            .complete_sign_in(&input.challenge_id, &input.code, client(ctx))
            .await;
        signed_in(ctx, result).await
    }

    /// Spends a refresh token for new tokens of the same session.
    async fn refresh_session(
        &self,
        ctx: &Context<'_>,
        input: RefreshSessionInput,
    ) -> async_graphql::Result<RefreshSessionPayload> {
        let result = services(ctx).accounts.refresh(&input.refresh_token).await;
        Ok(match outcome(ctx, result)? {
            Ok(session) => RefreshSessionPayload {
                tokens: Some(tokens(ctx, &session)?),
                user_errors: vec![],
            },
            Err(user_errors) => RefreshSessionPayload {
                tokens: None,
                user_errors,
            },
        })
    }

    /// Ends the caller's session.
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<SignOutPayload> {
        let actor = actor(ctx)?;
        let Some(session_id) = session_of(ctx) else {
            return Ok(SignOutPayload {
                signed_out: false,
                user_errors: vec![UserError {
                    field: None,
                    message: "this token belongs to no sign-in session".into(),
                    code: "NO_SESSION".into(),
                }],
            });
        };
        let result = services(ctx).accounts.sign_out(actor, session_id).await;
        Ok(match outcome(ctx, result)? {
            Ok(order) => SignOutPayload {
                signed_out: order.is_some(),
                user_errors: vec![],
            },
            Err(user_errors) => SignOutPayload {
                signed_out: false,
                user_errors,
            },
        })
    }

    /// Ends every session of the caller's account.
    async fn sign_out_everywhere(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<SignOutEverywherePayload> {
        let actor = actor(ctx)?;
        let result = services(ctx).accounts.sign_out_everywhere(actor).await;
        Ok(match outcome(ctx, result)? {
            Ok((count, _)) => SignOutEverywherePayload {
                ended_sessions: i32::try_from(count).unwrap_or(i32::MAX),
                user_errors: vec![],
            },
            Err(user_errors) => SignOutEverywherePayload {
                ended_sessions: 0,
                user_errors,
            },
        })
    }

    /// Sends a recovery code to the bound phone or e-mail; the same answer
    /// whether or not the contact has an account.
    async fn request_password_recovery(
        &self,
        ctx: &Context<'_>,
        input: RequestPasswordRecoveryInput,
    ) -> async_graphql::Result<RequestPasswordRecoveryPayload> {
        let result = services(ctx)
            .accounts
            .request_recovery(&input.contact, client(ctx))
            .await;
        Ok(match outcome(ctx, result)? {
            Ok(sent) => RequestPasswordRecoveryPayload {
                delivery: Some(sent.into()),
                user_errors: vec![],
            },
            Err(user_errors) => RequestPasswordRecoveryPayload {
                delivery: None,
                user_errors,
            },
        })
    }

    /// Sets a new password with a recovery code; every session ends.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        input: ResetPasswordInput,
    ) -> async_graphql::Result<ResetPasswordPayload> {
        let result = services(ctx)
            .accounts
            .reset_password(
                &input.contact,
                &input.code,
                &input.new_password,
                client(ctx),
            )
            .await;
        Ok(match outcome(ctx, result)? {
            Ok(_) => ResetPasswordPayload {
                password_changed: true,
                user_errors: vec![],
            },
            Err(user_errors) => ResetPasswordPayload {
                password_changed: false,
                user_errors,
            },
        })
    }

    /// Starts enrolling an authenticator app (TOTP, RFC 6238).
    async fn start_totp_enrolment(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<StartTotpEnrolmentPayload> {
        let actor = actor(ctx)?;
        let result = services(ctx).accounts.start_totp(actor).await;
        Ok(match outcome(ctx, result)? {
            Ok(enrolment) => StartTotpEnrolmentPayload {
                secret: Some(enrolment.secret),
                provisioning_uri: Some(enrolment.provisioning_uri),
                user_errors: vec![],
            },
            Err(user_errors) => StartTotpEnrolmentPayload {
                secret: None,
                provisioning_uri: None,
                user_errors,
            },
        })
    }

    /// Enables the authenticator app with its first code.
    async fn confirm_totp_enrolment(
        &self,
        ctx: &Context<'_>,
        input: TotpCodeInput,
    ) -> async_graphql::Result<TotpPayload> {
        let actor = actor(ctx)?;
        let result = services(ctx)
            .accounts
            .confirm_totp(actor, &input.code, client(ctx))
            .await;
        totp_payload(ctx, actor.account_id, result).await
    }

    /// Disables the authenticator app; needs its current code.
    async fn disable_totp(
        &self,
        ctx: &Context<'_>,
        input: TotpCodeInput,
    ) -> async_graphql::Result<TotpPayload> {
        let actor = actor(ctx)?;
        let result = services(ctx)
            .accounts
            .disable_totp(actor, &input.code, client(ctx))
            .await;
        totp_payload(ctx, actor.account_id, result).await
    }

    /// Closes the caller's account: sessions end, the login becomes free.
    async fn close_my_account(
        &self,
        ctx: &Context<'_>,
        input: CloseMyAccountInput,
    ) -> async_graphql::Result<CloseMyAccountPayload> {
        let actor = actor(ctx)?;
        let result = services(ctx)
            .accounts
            .close(actor, &input.password, client(ctx))
            .await;
        Ok(match outcome(ctx, result)? {
            Ok(_) => CloseMyAccountPayload {
                closed: true,
                user_errors: vec![],
            },
            Err(user_errors) => CloseMyAccountPayload {
                closed: false,
                user_errors,
            },
        })
    }

    /// Opens a staff account (administrators).
    async fn create_staff_account(
        &self,
        ctx: &Context<'_>,
        input: CreateStaffAccountInput,
    ) -> async_graphql::Result<CreateStaffAccountPayload> {
        let admin = actor_in(ctx, &[Role::Admin])?;
        let failed = |user_errors| CreateStaffAccountPayload {
            account: None,
            user_errors,
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(key) => key,
            Err(e) => return Ok(failed(vec![e])),
        };
        let organisation_id = match &input.organisation_id {
            None => None,
            Some(id) => match ids::decode_as(id, "Organisation") {
                Some(uuid) => Some(uuid),
                None => {
                    return Ok(failed(vec![UserError::on_field(
                        "organisationId",
                        "NOT_FOUND",
                        "no such organisation",
                    )]))
                }
            },
        };
        let request = StaffAccountRequest {
            role: input.role.into(),
            organisation_id,
            login: input.login.clone(),
            initial_password: input.initial_password.clone(),
        };
        let meta = metadata(ctx, admin, key);
        let result = services(ctx).accounts.create_staff(&request, &meta).await;
        Ok(match outcome(ctx, result)? {
            Ok((view, _)) => CreateStaffAccountPayload {
                account: Some(Account(view)),
                user_errors: vec![],
            },
            Err(user_errors) => failed(user_errors),
        })
    }
}

/// The account to deactivate.
#[derive(Debug, InputObject)]
pub struct DeactivateAccountInput {
    /// Global id of the account.
    pub account_id: ID,
    pub idempotency_key: Option<String>,
}

/// The deactivated account.
#[derive(Debug, SimpleObject)]
pub struct DeactivateAccountPayload {
    pub account: Option<Account>,
    pub user_errors: Vec<UserError>,
}

/// Administrators' account mutations beyond creation.
#[derive(Default)]
pub struct AccountAdminMutation;

#[Object]
impl AccountAdminMutation {
    /// Deactivates an account (administrators): its sessions end and it can no
    /// longer sign in; the login stays taken.
    async fn deactivate_account(
        &self,
        ctx: &Context<'_>,
        input: DeactivateAccountInput,
    ) -> async_graphql::Result<DeactivateAccountPayload> {
        let admin = actor_in(ctx, &[Role::Admin])?;
        let failed = |user_errors| DeactivateAccountPayload {
            account: None,
            user_errors,
        };
        let key = match idempotency_key(input.idempotency_key.clone()) {
            Ok(key) => key,
            Err(e) => return Ok(failed(vec![e])),
        };
        let Some(id) = ids::decode_as(&input.account_id, "Account") else {
            return Ok(failed(vec![UserError::on_field(
                "accountId",
                "NOT_FOUND",
                "no such account",
            )]));
        };
        let meta = metadata(ctx, admin, key);
        let result = services(ctx).accounts.deactivate(id, &meta).await;
        Ok(match outcome(ctx, result)? {
            Ok((view, _)) => DeactivateAccountPayload {
                account: Some(Account(view)),
                user_errors: vec![],
            },
            Err(user_errors) => failed(user_errors),
        })
    }
}

async fn totp_payload(
    ctx: &Context<'_>,
    account_id: Uuid,
    result: Result<Option<kabinet_domain::JournalOrder>, AccountFailure>,
) -> async_graphql::Result<TotpPayload> {
    Ok(match outcome(ctx, result)? {
        Ok(_) => TotpPayload {
            account: account_of(ctx, account_id).await?,
            user_errors: vec![],
        },
        Err(user_errors) => TotpPayload {
            account: None,
            user_errors,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::credential_fields_in;
    use async_graphql::parser::parse_query;

    fn count(query: &str) -> usize {
        credential_fields_in(&parse_query(query).expect("parses"))
    }

    #[test]
    fn aliases_fragments_and_operations_all_count() {
        assert_eq!(count("mutation { signIn(input: {login: \"a\", password: \"b\"}) { challenge { method } } }"), 1);
        assert_eq!(
            count("mutation { a: signIn(input: {}) { x } b: signIn(input: {}) { x } }"),
            2
        );
        assert_eq!(
            count(
                "mutation { ...F ...F } fragment F on Mutation { resetPassword(input: {}) { x } }"
            ),
            2
        );
        assert_eq!(count("mutation { ... on Mutation { completeSignIn(input: {}) { x } } signIn(input: {}) { x } }"), 2);
        assert_eq!(count("mutation A { signIn(input: {}) { x } } mutation B { closeMyAccount(input: {}) { x } }"), 2);
        assert_eq!(count("{ me { role } myAccount { login } }"), 0);
    }
}
