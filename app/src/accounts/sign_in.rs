//! Sign-in: the password, then the second factor (a sent code or the authenticator app).

use super::*;

impl Accounts {
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
}
