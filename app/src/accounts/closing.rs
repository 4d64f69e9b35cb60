//! Closing an account by its holder and deactivation by an administrator.

use super::*;

impl Accounts {
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
}
