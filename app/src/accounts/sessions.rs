//! Sessions: rotating refresh tokens (a reused token revokes its family) and signing out.

use super::*;

impl Accounts {
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
                let role = session.role.parse::<Role>().map_err(internal)?;
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

    /// Opens a session for `id` after both factors, recording the sign-in.
    pub(super) async fn open_session(
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
}
