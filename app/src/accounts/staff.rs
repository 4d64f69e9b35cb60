//! Staff accounts: created by administrators, with a password or an invitation code.

use super::*;

impl Accounts {
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
            Some(p) => Some(self.hashing.hash(p.expose()).await.map_err(gated)?),
            None => None,
        };
        let fresh_id = Uuid::now_v7();
        // What makes a retry under the same idempotency key "the same request"
        // (the password itself is left out: only whether one was given).
        let input = json!({
            "role": request.role.as_str(),
            "organisation_id": request.organisation_id,
            "login": login.as_str(),
            "initial_password": request.initial_password.is_some(),
        });
        // The credentials first, keyed by the new id, as for patients.
        self.store
            .put_credentials(fresh_id, hash.as_deref(), self.clock.now())
            .await
            .map_err(internal)?;
        let outcome = self
            .run_with(
                fresh_id,
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
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(e) => {
                if let AccountFailure::User(_) = e {
                    self.store
                        .delete_credentials(fresh_id)
                        .await
                        .map_err(internal)?;
                }
                return Err(e);
            }
        };
        let id = outcome.aggregate_id.parse::<Uuid>().map_err(internal)?;
        // A retry of a request that opened the account but stopped before its
        // credentials (or its invitation) completes it now.
        let complete = if outcome.replayed {
            self.store
                .delete_credentials(fresh_id)
                .await
                .map_err(internal)?;
            let missing = self
                .store
                .credentials(id)
                .await
                .map_err(internal)?
                .is_none();
            if missing {
                self.store
                    .put_credentials(id, hash.as_deref(), self.clock.now())
                    .await
                    .map_err(internal)?;
            }
            missing
        } else {
            true
        };
        if complete && hash.is_none() {
            let (code, _) = self
                .issue_code(RECOVER, login.as_str(), Some(id), INVITATION_TTL, false)
                .await?;
            self.send(
                &login,
                "Ваша служебная учётная запись в Кабинете",
                format!(
                    "Для вас открыта служебная учётная запись в Кабинете. Задайте пароль с кодом {code}: \
                     восстановите пароль (resetPassword) с этим логином. Код действует 24 часа."
                ),
            )
            .await?;
        }
        let state = self.state(id).await?;
        Ok((AccountView { id, state }, outcome.last_order()))
    }
}
