//! The authenticator app (TOTP) as a second factor: enrolment, confirmation, removal.

use super::*;

impl Accounts {
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

    pub(super) async fn active_state(&self, id: Uuid) -> Flow<AccountState> {
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
}
