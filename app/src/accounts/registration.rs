//! Registration: a one-time code to the new login, then the account with its password.

use super::*;

impl Accounts {
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
}
