//! Recovery: a code to the login, then a new password; every session ends.

use super::*;

impl Accounts {
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
    pub(super) async fn recoverable(&self, id: Uuid) -> Flow<bool> {
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
}
