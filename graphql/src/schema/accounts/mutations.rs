//! Registration, sign-in, sessions, recovery, second factor and staff accounts.

use super::{account_of, tokens, Account, AuthTokens, CodeDelivery, SignInChallenge, StaffRole};
use crate::schema::context::{
    actor, actor_in, internal, metadata, services, CallerSession, ClientAddress,
};
use crate::schema::errors::{idempotency_key, UserError};
use crate::schema::ids;
use async_graphql::{Context, InputObject, Object, SimpleObject, ID};
use kabinet_app::accounts::{AccountFailure, NewSession, StaffAccountRequest};
use kabinet_domain::Role;
use uuid::Uuid;

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
pub(super) fn outcome<T>(
    ctx: &Context<'_>,
    result: Result<T, AccountFailure>,
) -> async_graphql::Result<Result<T, Vec<UserError>>> {
    match result {
        Ok(v) => Ok(Ok(v)),
        Err(AccountFailure::User(e)) => Ok(Err(vec![e.into()])),
        Err(AccountFailure::Internal(e)) => Err(internal(ctx, e)),
    }
}

pub(super) fn client(ctx: &Context<'_>) -> Option<std::net::IpAddr> {
    ctx.data_opt::<ClientAddress>().and_then(|c| c.0)
}

pub(super) fn session_of(ctx: &Context<'_>) -> Option<Uuid> {
    ctx.data_opt::<CallerSession>().and_then(|s| s.0)
}

pub(super) async fn signed_in(
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

pub(super) async fn totp_payload(
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
