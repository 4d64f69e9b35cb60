//! The account aggregate (stream type `account`, id = the account's UUID): who
//! signs in, with which login and role, and what happened to their access.
//!
//! Events never hold secrets: password hashes, codes and TOTP secrets live in
//! the accounts tables (see `store`); events say only that something changed.

use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::login::{Login, LoginKind};
use crate::journal::reservations::{conflict, ReservationOp, ReservationTaken, Reserving};
use crate::metadata::Role;
use crate::user_error::{AsUserError, UserError};

/// Reservation scope that keeps logins unique across accounts.
pub const LOGIN_SCOPE: &str = "account_login";

/// The version of the terms of use a new patient accepts.
pub const TERMS_VERSION: &str = "2026-01";

/// Whether an account may be used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    #[default]
    Active,
    Deactivated,
    Closed,
}

impl AccountStatus {
    /// The stable lowercase name stored beside credentials.
    pub fn as_str(self) -> &'static str {
        match self {
            AccountStatus::Active => "active",
            AccountStatus::Deactivated => "deactivated",
            AccountStatus::Closed => "closed",
        }
    }

    /// Parses a stored name; unknown names count as closed (fail closed).
    pub fn from_stored(s: &str) -> AccountStatus {
        match s {
            "active" => AccountStatus::Active,
            "deactivated" => AccountStatus::Deactivated,
            _ => AccountStatus::Closed,
        }
    }
}

/// Why a password was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PasswordChange {
    /// Set at registration or by the administrator creating the account.
    Initial,
    /// Set through recovery with a code sent to the bound contact.
    Recovered,
}

/// The second factor a sign-in was completed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecondFactor {
    /// A one-time code sent to the login (SMS for phones, e-mail for addresses).
    Code,
    Totp,
}

/// Why a sign-in attempt failed (never the attempted secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignInFailure {
    WrongPassword,
    WrongCode,
    CodeExpired,
    /// The last allowed code was wrong: the sign-in must start again.
    TooManyAttempts,
    AccountDeactivated,
}

/// Why sessions were ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    SignOutEverywhere,
    PasswordReset,
    /// A spent refresh token came back: its session was taken over.
    RefreshTokenReused,
    AccountClosed,
    AccountDeactivated,
}

/// Commands on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    /// Opens the account; patients must accept `terms_version`.
    Register {
        login: Login,
        role: Role,
        organisation_id: Option<Uuid>,
        terms_version: Option<String>,
        password_set: bool,
    },
    /// A password was set (its hash is stored beside, never here).
    RecordPasswordChange {
        reason: PasswordChange,
    },
    RecordSignIn {
        session_id: Uuid,
        second_factor: SecondFactor,
    },
    RecordSignInFailure {
        reason: SignInFailure,
    },
    RecordSignOut {
        session_id: Uuid,
    },
    RevokeSessions {
        reason: RevokeReason,
    },
    EnableTotp,
    DisableTotp,
    Deactivate,
    Close,
}

impl AccountCommand {
    /// The command's name, e.g. `Register`.
    pub fn name(&self) -> &'static str {
        match self {
            AccountCommand::Register { .. } => "Register",
            AccountCommand::RecordPasswordChange { .. } => "RecordPasswordChange",
            AccountCommand::RecordSignIn { .. } => "RecordSignIn",
            AccountCommand::RecordSignInFailure { .. } => "RecordSignInFailure",
            AccountCommand::RecordSignOut { .. } => "RecordSignOut",
            AccountCommand::RevokeSessions { .. } => "RevokeSessions",
            AccountCommand::EnableTotp => "EnableTotp",
            AccountCommand::DisableTotp => "DisableTotp",
            AccountCommand::Deactivate => "Deactivate",
            AccountCommand::Close => "Close",
        }
    }
}

/// Events of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountRegistered {
        login_kind: LoginKind,
        /// The normalised login (`+7XXXXXXXXXX` or a lower-case address).
        login: String,
        role: Role,
        organisation_id: Option<Uuid>,
    },
    TermsAccepted {
        terms_version: String,
    },
    PasswordChanged {
        reason: PasswordChange,
    },
    SignedIn {
        session_id: Uuid,
        second_factor: SecondFactor,
    },
    SignInFailed {
        reason: SignInFailure,
    },
    SignedOut {
        session_id: Uuid,
    },
    SessionsRevoked {
        reason: RevokeReason,
    },
    TotpEnabled,
    TotpDisabled,
    AccountDeactivated,
    AccountClosed,
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        match self {
            AccountEvent::AccountRegistered { .. } => "AccountRegistered",
            AccountEvent::TermsAccepted { .. } => "TermsAccepted",
            AccountEvent::PasswordChanged { .. } => "PasswordChanged",
            AccountEvent::SignedIn { .. } => "SignedIn",
            AccountEvent::SignInFailed { .. } => "SignInFailed",
            AccountEvent::SignedOut { .. } => "SignedOut",
            AccountEvent::SessionsRevoked { .. } => "SessionsRevoked",
            AccountEvent::TotpEnabled => "TotpEnabled",
            AccountEvent::TotpDisabled => "TotpDisabled",
            AccountEvent::AccountDeactivated => "AccountDeactivated",
            AccountEvent::AccountClosed => "AccountClosed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why an account command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("the account already exists")]
    AlreadyRegistered,
    #[error("no such account")]
    NotFound,
    #[error("the terms of use must be accepted")]
    TermsNotAccepted,
    #[error("role {0} belongs to an organisation: give organisationId")]
    OrganisationRequired(Role),
    #[error("role {0} is not bound to an organisation: leave organisationId out")]
    OrganisationNotAllowed(Role),
    #[error("accounts cannot be opened in role {0}")]
    RoleNotAssignable(Role),
    #[error("the account is closed")]
    Closed,
    #[error("the account is deactivated")]
    Deactivated,
    #[error("the authenticator app is already enabled")]
    TotpAlreadyEnabled,
    #[error("the authenticator app is not enabled")]
    TotpNotEnabled,
}

impl AsUserError for AccountError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            AccountError::AlreadyRegistered => UserError::new("ALREADY_EXISTS", message),
            AccountError::NotFound => UserError::new("NOT_FOUND", message),
            AccountError::TermsNotAccepted => {
                UserError::field("acceptTerms", "TERMS_NOT_ACCEPTED", message)
            }
            AccountError::OrganisationRequired(_) | AccountError::OrganisationNotAllowed(_) => {
                UserError::field("organisationId", "INVALID_INPUT", message)
            }
            AccountError::RoleNotAssignable(_) => {
                UserError::field("role", "INVALID_INPUT", message)
            }
            AccountError::Closed => UserError::new("ACCOUNT_CLOSED", message),
            AccountError::Deactivated => UserError::new("ACCOUNT_DEACTIVATED", message),
            AccountError::TotpAlreadyEnabled => UserError::new("TOTP_ALREADY_ENABLED", message),
            AccountError::TotpNotEnabled => UserError::new("TOTP_NOT_ENABLED", message),
        }
    }
}

/// What an opened account is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountState {
    pub login_kind: LoginKind,
    pub login: String,
    pub role: Role,
    pub organisation_id: Option<Uuid>,
    pub status: AccountStatus,
    pub terms_version: Option<String>,
    pub password_set: bool,
    pub totp_enabled: bool,
}

/// An account; `state` is `None` before registration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub state: Option<AccountState>,
}

impl Account {
    fn active(&self) -> Result<&AccountState, AccountError> {
        let state = self.state.as_ref().ok_or(AccountError::NotFound)?;
        match state.status {
            AccountStatus::Active => Ok(state),
            AccountStatus::Deactivated => Err(AccountError::Deactivated),
            AccountStatus::Closed => Err(AccountError::Closed),
        }
    }

    fn decide(&self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand as C;
        use AccountEvent as E;
        match command {
            C::Register {
                login,
                role,
                organisation_id,
                terms_version,
                password_set,
            } => {
                if self.state.is_some() {
                    return Err(AccountError::AlreadyRegistered);
                }
                if !Role::ASSIGNABLE.contains(&role) {
                    return Err(AccountError::RoleNotAssignable(role));
                }
                match (role.is_clinic_staff(), organisation_id) {
                    (true, None) => return Err(AccountError::OrganisationRequired(role)),
                    (false, Some(_)) => return Err(AccountError::OrganisationNotAllowed(role)),
                    _ => {}
                }
                if role == Role::Patient && terms_version.is_none() {
                    return Err(AccountError::TermsNotAccepted);
                }
                let mut events = vec![E::AccountRegistered {
                    login_kind: login.kind(),
                    login: login.as_str().to_string(),
                    role,
                    organisation_id,
                }];
                if let Some(terms_version) = terms_version {
                    events.push(E::TermsAccepted { terms_version });
                }
                if password_set {
                    events.push(E::PasswordChanged {
                        reason: PasswordChange::Initial,
                    });
                }
                Ok(events)
            }
            C::RecordPasswordChange { reason } => {
                self.active()?;
                Ok(vec![E::PasswordChanged { reason }])
            }
            C::RecordSignIn {
                session_id,
                second_factor,
            } => {
                self.active()?;
                Ok(vec![E::SignedIn {
                    session_id,
                    second_factor,
                }])
            }
            C::RecordSignInFailure { reason } => {
                // Failures are recorded whatever the status: the owner sees them.
                self.state.as_ref().ok_or(AccountError::NotFound)?;
                Ok(vec![E::SignInFailed { reason }])
            }
            C::RecordSignOut { session_id } => {
                self.state.as_ref().ok_or(AccountError::NotFound)?;
                Ok(vec![E::SignedOut { session_id }])
            }
            C::RevokeSessions { reason } => {
                self.state.as_ref().ok_or(AccountError::NotFound)?;
                Ok(vec![E::SessionsRevoked { reason }])
            }
            C::EnableTotp => {
                if self.active()?.totp_enabled {
                    return Err(AccountError::TotpAlreadyEnabled);
                }
                Ok(vec![E::TotpEnabled])
            }
            C::DisableTotp => {
                if !self.active()?.totp_enabled {
                    return Err(AccountError::TotpNotEnabled);
                }
                Ok(vec![E::TotpDisabled])
            }
            C::Deactivate => {
                self.active()?;
                Ok(vec![E::AccountDeactivated])
            }
            C::Close => {
                let state = self.state.as_ref().ok_or(AccountError::NotFound)?;
                if state.status == AccountStatus::Closed {
                    return Err(AccountError::Closed);
                }
                Ok(vec![E::AccountClosed])
            }
        }
    }
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in self.decide(command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        use AccountEvent as E;
        if let E::AccountRegistered {
            login_kind,
            login,
            role,
            organisation_id,
        } = &event
        {
            self.state = Some(AccountState {
                login_kind: *login_kind,
                login: login.clone(),
                role: *role,
                organisation_id: *organisation_id,
                status: AccountStatus::Active,
                terms_version: None,
                password_set: false,
                totp_enabled: false,
            });
            return;
        }
        let Some(state) = self.state.as_mut() else {
            return;
        };
        match event {
            E::TermsAccepted { terms_version } => state.terms_version = Some(terms_version),
            E::PasswordChanged { .. } => state.password_set = true,
            E::TotpEnabled => state.totp_enabled = true,
            E::TotpDisabled => state.totp_enabled = false,
            E::AccountDeactivated => state.status = AccountStatus::Deactivated,
            E::AccountClosed => state.status = AccountStatus::Closed,
            E::AccountRegistered { .. }
            | E::SignedIn { .. }
            | E::SignInFailed { .. }
            | E::SignedOut { .. }
            | E::SessionsRevoked { .. } => {}
        }
    }
}

impl Reserving for Account {
    fn reservations(aggregate_id: &str, events: &[AccountEvent]) -> Vec<ReservationOp> {
        events
            .iter()
            .filter_map(|event| match event {
                AccountEvent::AccountRegistered { login, .. } => Some(ReservationOp::Take {
                    scope: LOGIN_SCOPE,
                    key: login.clone(),
                    owner: owner(aggregate_id),
                }),
                // A closed account frees its login for a new registration.
                AccountEvent::AccountClosed => Some(ReservationOp::ReleaseAll {
                    owner: owner(aggregate_id),
                }),
                _ => None,
            })
            .collect()
    }

    fn reservation_error(taken: &ReservationTaken) -> UserError {
        match taken.scope.as_str() {
            LOGIN_SCOPE => UserError::field(
                "login",
                "LOGIN_TAKEN",
                "an account with this login already exists",
            ),
            _ => conflict(taken),
        }
    }
}

/// The reservation owner of an account's login.
pub fn owner(aggregate_id: &str) -> String {
    format!("account:{aggregate_id}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    fn login() -> Login {
        Login::parse("+7 912 345-67-89", "login").expect("login")
    }

    fn registered() -> AccountEvent {
        AccountEvent::AccountRegistered {
            login_kind: LoginKind::Phone,
            login: "+79123456789".into(),
            role: Role::Patient,
            organisation_id: None,
        }
    }

    fn register(role: Role, org: Option<Uuid>, terms: Option<&str>) -> AccountCommand {
        AccountCommand::Register {
            login: login(),
            role,
            organisation_id: org,
            terms_version: terms.map(str::to_string),
            password_set: true,
        }
    }

    #[test]
    fn a_patient_registers_accepting_terms_with_a_password() {
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(register(Role::Patient, None, Some(TERMS_VERSION)))
            .then_expect_events(vec![
                registered(),
                AccountEvent::TermsAccepted {
                    terms_version: TERMS_VERSION.into(),
                },
                AccountEvent::PasswordChanged {
                    reason: PasswordChange::Initial,
                },
            ]);
    }

    #[test]
    fn a_patient_cannot_register_without_accepting_terms() {
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(register(Role::Patient, None, None))
            .then_expect_error(AccountError::TermsNotAccepted);
    }

    #[test]
    fn clinic_staff_need_an_organisation_and_others_must_not_have_one() {
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(register(Role::Doctor, None, None))
            .then_expect_error(AccountError::OrganisationRequired(Role::Doctor));
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(register(Role::Auditor, Some(Uuid::now_v7()), None))
            .then_expect_error(AccountError::OrganisationNotAllowed(Role::Auditor));
        TestFramework::<Account>::with(())
            .given_no_previous_events()
            .when(register(Role::System, None, None))
            .then_expect_error(AccountError::RoleNotAssignable(Role::System));
    }

    #[test]
    fn cannot_register_twice() {
        TestFramework::<Account>::with(())
            .given(vec![registered()])
            .when(register(Role::Patient, None, Some(TERMS_VERSION)))
            .then_expect_error(AccountError::AlreadyRegistered);
    }

    #[test]
    fn a_closed_account_cannot_sign_in_but_failures_are_still_recorded() {
        TestFramework::<Account>::with(())
            .given(vec![registered(), AccountEvent::AccountClosed])
            .when(AccountCommand::RecordSignIn {
                session_id: Uuid::nil(),
                second_factor: SecondFactor::Code,
            })
            .then_expect_error(AccountError::Closed);
        TestFramework::<Account>::with(())
            .given(vec![registered(), AccountEvent::AccountClosed])
            .when(AccountCommand::RecordSignInFailure {
                reason: SignInFailure::WrongPassword,
            })
            .then_expect_events(vec![AccountEvent::SignInFailed {
                reason: SignInFailure::WrongPassword,
            }]);
    }

    #[test]
    fn totp_is_enabled_once_and_disabled_only_when_enabled() {
        TestFramework::<Account>::with(())
            .given(vec![registered()])
            .when(AccountCommand::EnableTotp)
            .then_expect_events(vec![AccountEvent::TotpEnabled]);
        TestFramework::<Account>::with(())
            .given(vec![registered(), AccountEvent::TotpEnabled])
            .when(AccountCommand::EnableTotp)
            .then_expect_error(AccountError::TotpAlreadyEnabled);
        TestFramework::<Account>::with(())
            .given(vec![registered()])
            .when(AccountCommand::DisableTotp)
            .then_expect_error(AccountError::TotpNotEnabled);
    }

    #[test]
    fn closing_twice_is_refused() {
        TestFramework::<Account>::with(())
            .given(vec![registered(), AccountEvent::AccountClosed])
            .when(AccountCommand::Close)
            .then_expect_error(AccountError::Closed);
    }

    #[test]
    fn registering_takes_the_login_and_closing_releases_it() {
        let ops = Account::reservations("a1", &[registered()]);
        assert_eq!(
            ops,
            vec![ReservationOp::Take {
                scope: LOGIN_SCOPE,
                key: "+79123456789".into(),
                owner: "account:a1".into()
            }]
        );
        assert_eq!(
            Account::reservations("a1", &[AccountEvent::AccountClosed]),
            vec![ReservationOp::ReleaseAll {
                owner: "account:a1".into()
            }]
        );
    }
}
