//! The account journal (A5), the part made of events: every sign-in, success or
//! failure, and every change of the account, the profile and the identity
//! verification, on the account it concerns. Reads of medical data come from the
//! access record (`kabinet_domain::access`) and are merged in by the API.
//!
//! Events are picked up by stream type, whatever their event type, so new account
//! events appear without changes here (with their event type as the action).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use kabinet_domain::accounts::account::RevokeReason;
use kabinet_domain::accounts::{Account, AccountEvent};
use kabinet_domain::identity::verification::IdentityVerification;
use kabinet_domain::patients::Patient;
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::projection::{event_of, from_micros, micros, Projection, ProjectionError, ProjectionTx};

/// The account-journal projection.
pub struct AccountJournal;

/// Name of the projection and of its table.
pub const NAME: &str = "account_journal";

/// Stream types whose events belong to the journal of the account they are about.
pub const STREAM_TYPES: &[&str] = &[Account::TYPE, Patient::TYPE, IdentityVerification::TYPE];

/// Event types that are sign-in attempts; every other event is a change. By
/// name, so that sign-in events of newer builds are sorted right too.
const SIGN_IN_EVENTS: &[&str] = &[
    "SignedIn",
    "SignInFailed",
    "SignInSucceeded",
    "SignInLockedOut",
    "SecondFactorFailed",
    "SignedOut",
];

/// English and Russian labels of the actions known today; others show their event type.
pub fn label(action: &str) -> Option<(&'static str, &'static str)> {
    Some(match action {
        "AccountRegistered" => ("Account registered", "Учётная запись создана"),
        "TermsAccepted" => ("Terms accepted", "Условия приняты"),
        "PasswordChanged" => ("Password changed", "Пароль изменён"),
        "PasswordReset" => ("Password reset", "Пароль восстановлен"),
        "SignedIn" | "SignInSucceeded" => ("Signed in", "Вход в систему"),
        "SignInFailed" => ("Failed sign-in attempt", "Неудачная попытка входа"),
        "SignInLockedOut" => ("Sign-in locked", "Вход временно заблокирован"),
        "SecondFactorFailed" => ("Wrong second-factor code", "Неверный код второго фактора"),
        "SignedOut" => ("Signed out", "Выход из системы"),
        "TotpEnabled" => (
            "Authenticator app enabled",
            "Подключено приложение-аутентификатор",
        ),
        "TotpDisabled" => (
            "Authenticator app disabled",
            "Приложение-аутентификатор отключено",
        ),
        // Older lines carry no reason: they say only what happened.
        "SessionsRevoked" => ("Sessions ended", "Сеансы завершены"),
        "SessionsRevoked:sign_out_everywhere" => {
            ("Signed out everywhere", "Выход на всех устройствах")
        }
        "SessionsRevoked:password_reset" => (
            "Sessions ended after the password was reset",
            "Сеансы завершены после восстановления пароля",
        ),
        "SessionsRevoked:refresh_token_reused" => (
            "Session ended: its refresh token was used twice and may have been stolen",
            "Сеанс завершён: ключ продления сеанса использован повторно, возможно, его украли",
        ),
        "SessionsRevoked:account_closed" => (
            "Sessions ended: the account was closed",
            "Сеансы завершены: учётная запись закрыта",
        ),
        "SessionsRevoked:account_deactivated" => (
            "Sessions ended: the account was deactivated",
            "Сеансы завершены: учётная запись отключена",
        ),
        "AccountClosed" => ("Account closed", "Учётная запись закрыта"),
        "PatientProfileRecorded" => (
            "Name, birth date or sex recorded",
            "Записаны ФИО, дата рождения или пол",
        ),
        "PatientDetailsRecorded" => (
            "Documents or contacts changed",
            "Изменены документы или контакты",
        ),
        "SnilsMatched" => (
            "SNILS confirmed by the registry",
            "СНИЛС подтверждён по реестру",
        ),
        "PassportScanUploaded" => ("Passport scan uploaded", "Загружен скан паспорта"),
        "PassportScanApproved" => (
            "Passport scan approved by a reviewer",
            "Скан паспорта принят сотрудником",
        ),
        "PassportScanRejected" => (
            "Passport scan rejected by a reviewer",
            "Скан паспорта отклонён сотрудником",
        ),
        "VerificationStepUndone" => (
            "Verification step undone: the profile changed",
            "Шаг идентификации отменён: данные профиля изменились",
        ),
        "PhoneCodeSent" => (
            "Confirmation code sent by SMS",
            "Код подтверждения отправлен по SMS",
        ),
        "PhoneConfirmed" => ("Phone confirmed", "Телефон подтверждён"),
        "IdentityVerified" => ("Identity verified", "Идентификация пройдена"),
        _ => return None,
    })
}

/// The action of a journal line: the event type, and for ended sessions why
/// they ended (`SessionsRevoked:refresh_token_reused`), since that reads very
/// differently to the holder. Events this build cannot decode (written by a
/// newer one) are still listed by their type, as the module promises.
pub fn action_of(event: &RecordedEvent) -> String {
    if let Ok(Some(AccountEvent::SessionsRevoked { reason })) = event_of::<Account>(NAME, event) {
        return format!("SessionsRevoked:{}", revoke_reason(reason));
    }
    event.event_type.clone()
}

/// The kind of a journal line.
pub fn kind_of(event_type: &str) -> &'static str {
    if SIGN_IN_EVENTS.contains(&event_type) {
        "sign_in"
    } else {
        "change"
    }
}

/// The stored name of why sessions ended, as [`label`] knows it.
fn revoke_reason(reason: RevokeReason) -> &'static str {
    match reason {
        RevokeReason::SignOutEverywhere => "sign_out_everywhere",
        RevokeReason::PasswordReset => "password_reset",
        RevokeReason::RefreshTokenReused => "refresh_token_reused",
        RevokeReason::AccountClosed => "account_closed",
        RevokeReason::AccountDeactivated => "account_deactivated",
    }
}

/// One event line of an account journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLine {
    pub position: i64,
    pub occurred_at: DateTime<Utc>,
    /// `sign_in` or `change`.
    pub kind: String,
    /// The event type.
    pub action: String,
    pub actor_id: Uuid,
    pub actor_role: String,
    pub actor_organisation_id: Option<Uuid>,
}

/// Bounds and position of a listing, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineQuery {
    /// Only these kinds; empty means all.
    pub kinds: Vec<String>,
    /// Inclusive lower bound.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub to: Option<DateTime<Utc>>,
    /// Only lines older than this `(occurred_at micros, position)`.
    pub older_than: Option<(i64, i64)>,
}

#[async_trait]
impl Projection for AccountJournal {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                account_id      TEXT   NOT NULL,
                position        BIGINT NOT NULL,
                occurred_at     BIGINT NOT NULL,
                kind            TEXT   NOT NULL,
                action          TEXT   NOT NULL,
                actor_id        TEXT   NOT NULL,
                actor_role      TEXT   NOT NULL,
                actor_org_id    TEXT
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (account_id, position)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_time ON {table} (account_id, occurred_at, position)"
            ),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        let lines: Vec<(&RecordedEvent, &str, String)> = events
            .iter()
            .filter(|e| STREAM_TYPES.contains(&e.aggregate_type.as_str()))
            .filter(|e| Uuid::parse_str(&e.aggregate_id).is_ok())
            .map(|e| (e, kind_of(&e.event_type), action_of(e)))
            .collect();
        // Eight values a row; stay well under SQLite's bound-parameter limit.
        for chunk in lines.chunks(1000) {
            let head = format!(
                "INSERT INTO {table} (account_id, position, occurred_at, kind, action, actor_id, \
                 actor_role, actor_org_id) "
            );
            crate::on_tx!(tx, conn => {
                let mut q = QueryBuilder::new(head);
                q.push_values(chunk, |mut row, (event, kind, action)| {
                    row.push_bind(event.aggregate_id.clone())
                        .push_bind(event.position())
                        .push_bind(micros(event.recorded_at))
                        .push_bind(*kind)
                        .push_bind(action.clone())
                        .push_bind(event.meta("actor_id").unwrap_or_default().to_string())
                        .push_bind(event.meta("actor_role").unwrap_or_default().to_string())
                        .push_bind(event.meta("actor_organisation_id").map(str::to_string));
                });
                q.build().execute(&mut **conn).await?;
            });
        }
        Ok(())
    }
}

/// Up to `limit` event lines of `account`'s journal, newest first.
pub async fn list(
    db: &Db,
    account: Uuid,
    query: &LineQuery,
    limit: usize,
) -> Result<Vec<JournalLine>, sqlx::Error> {
    let account_text = account.to_string();
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new(
            "SELECT position, occurred_at, kind, action, actor_id, actor_role, actor_org_id \
             FROM account_journal WHERE account_id = ",
        );
        q.push_bind(&account_text);
        if !query.kinds.is_empty() {
            q.push(" AND kind IN (");
            let mut list = q.separated(", ");
            for kind in &query.kinds {
                list.push_bind(kind.as_str());
            }
            q.push(")");
        }
        if let Some(from) = query.from {
            q.push(" AND occurred_at >= ").push_bind(micros(from));
        }
        if let Some(to) = query.to {
            q.push(" AND occurred_at < ").push_bind(micros(to));
        }
        if let Some((at, position)) = query.older_than {
            q.push(" AND (occurred_at < ")
                .push_bind(at)
                .push(" OR (occurred_at = ")
                .push_bind(at)
                .push(" AND position < ")
                .push_bind(position)
                .push("))");
        }
        q.push(" ORDER BY occurred_at DESC, position DESC LIMIT ")
            .push_bind(limit as i64);
        let rows = q.build().fetch_all(pool).await?;
        rows.iter()
            .map(|row| {
                let actor: String = row.try_get(4)?;
                let org: Option<String> = row.try_get(6)?;
                Ok(JournalLine {
                    position: row.try_get(0)?,
                    occurred_at: from_micros(row.try_get(1)?),
                    kind: row.try_get(2)?,
                    action: row.try_get(3)?,
                    actor_id: Uuid::parse_str(&actor).unwrap_or_default(),
                    actor_role: row.try_get(5)?,
                    actor_organisation_id: org.and_then(|o| Uuid::parse_str(&o).ok()),
                })
            })
            .collect()
    })
}
