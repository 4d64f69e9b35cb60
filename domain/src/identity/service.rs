//! The identity verification service: the registry port, the sealed scan store, the
//! SMS code store, and the commands of [`IdentityVerification`].

use std::sync::Arc;

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;
use uuid::Uuid;

use super::limits::{self, Cap, Counted, IdentityLimits};
use super::scan::{check_scan, DataKey, ScanError};
use super::values::Snils;
use super::verification::{
    IdentityVerification, ProfileBases, RegistryAnswer, ScanDecision, ScanFormat, ScanReview,
    VerificationCommand,
};
use crate::command::{CommandError, CommandOutcome, CommandService, Retry};
use crate::directory::BoundedText;
use crate::notify::{Channel, Message, Notifier};
use crate::patients::Patient;
use crate::user_error::{AsUserError, UserError};
use crate::{Db, EventMetadata};

/// How long an SMS code is valid.
pub const CODE_TTL_MINUTES: i64 = 10;
/// How many tries one code allows.
pub const CODE_MAX_ATTEMPTS: i32 = 5;
/// Least time between two codes.
pub const CODE_RESEND_SECONDS: i64 = 60;

/// One person in the SNILS registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    pub snils: Snils,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    pub birth_date: NaiveDate,
}

/// A registry entry as an administrator types it in.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RawRegistryEntry {
    pub snils: String,
    pub surname: String,
    pub first_name: String,
    pub patronymic: Option<String>,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
}

fn entry_error(index: usize, field: &str, code: &'static str, message: String) -> UserError {
    UserError {
        field: Some(vec![
            "input".into(),
            "entries".into(),
            index.to_string(),
            field.into(),
        ]),
        message,
        code,
    }
}

impl RegistryEntry {
    /// Parses the entries of a registry load, naming every wrong field of every entry.
    pub fn parse_all(raw: &[RawRegistryEntry]) -> Result<Vec<RegistryEntry>, Vec<UserError>> {
        let mut errors = Vec::new();
        let mut entries = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let snils = Snils::parse(&r.snils)
                .map_err(|e| {
                    use super::values::ValueError;
                    errors.push(entry_error(i, "snils", e.code(), e.to_string()))
                })
                .ok();
            let mut name = |raw: &str, field: &str| {
                BoundedText::parse(raw, 100)
                    .map(|t| t.as_str().to_string())
                    .map_err(|e| errors.push(entry_error(i, field, "INVALID_INPUT", e.to_string())))
                    .ok()
            };
            let surname = name(&r.surname, "surname");
            let first_name = name(&r.first_name, "firstName");
            let patronymic = match r.patronymic.as_deref().map(str::trim) {
                None | Some("") => Some(None),
                Some(p) => name(p, "patronymic").map(Some),
            };
            let birth_date = NaiveDate::parse_from_str(r.birth_date.trim(), "%Y-%m-%d")
                .map_err(|_| {
                    errors.push(entry_error(
                        i,
                        "birthDate",
                        "INVALID_BIRTH_DATE",
                        "not a date in the form YYYY-MM-DD".into(),
                    ))
                })
                .ok();
            if let (
                Some(snils),
                Some(surname),
                Some(first_name),
                Some(patronymic),
                Some(birth_date),
            ) = (snils, surname, first_name, patronymic, birth_date)
            {
                entries.push(RegistryEntry {
                    snils,
                    surname,
                    first_name,
                    patronymic,
                    birth_date,
                });
            }
        }
        if errors.is_empty() {
            Ok(entries)
        } else {
            Err(errors)
        }
    }
}

/// The SNILS registry port.
#[async_trait]
pub trait SnilsRegistry: Send + Sync + 'static {
    /// The registry's entry for `snils`, if any.
    async fn lookup(&self, snils: &Snils) -> Result<Option<RegistryEntry>, String>;
}

/// The registry as a table that administrators load.
#[derive(Debug, Clone)]
pub struct TableSnilsRegistry {
    db: Db,
}

impl TableSnilsRegistry {
    /// The registry table of `db`.
    pub fn new(db: Db) -> Self {
        TableSnilsRegistry { db }
    }

    /// Adds or replaces `entries` in one transaction; returns how many were written.
    pub async fn load(
        &self,
        entries: &[RegistryEntry],
        now: DateTime<Utc>,
    ) -> Result<usize, sqlx::Error> {
        const SQL: &str = "INSERT INTO snils_registry (snils, surname, first_name, patronymic, \
             birth_date, loaded_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (snils) DO UPDATE SET \
             surname = excluded.surname, first_name = excluded.first_name, \
             patronymic = excluded.patronymic, birth_date = excluded.birth_date, \
             loaded_at = excluded.loaded_at";
        crate::on_db!(&self.db, pool => {
            let mut tx = pool.begin().await?;
            for e in entries {
                sqlx::query(SQL)
                    .bind(e.snils.digits())
                    .bind(e.surname.as_str())
                    .bind(e.first_name.as_str())
                    .bind(e.patronymic.as_deref())
                    .bind(e.birth_date.to_string())
                    .bind(now.timestamp_micros())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(entries.len())
    }
}

#[async_trait]
impl SnilsRegistry for TableSnilsRegistry {
    async fn lookup(&self, snils: &Snils) -> Result<Option<RegistryEntry>, String> {
        const SQL: &str = "SELECT surname, first_name, patronymic, birth_date FROM snils_registry WHERE snils = $1";
        let digits = snils.digits();
        let row: Option<(String, String, Option<String>, String)> = crate::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(&digits)
                .fetch_optional(pool)
                .await
                .and_then(|row| row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).transpose())
                .map_err(|e| e.to_string())?
        });
        row.map(|(surname, first_name, patronymic, birth)| {
            Ok(RegistryEntry {
                snils: snils.clone(),
                surname,
                first_name,
                patronymic,
                birth_date: NaiveDate::parse_from_str(&birth, "%Y-%m-%d")
                    .map_err(|e| e.to_string())?,
            })
        })
        .transpose()
    }
}

/// A name without case, surrounding spaces, or the ё/е distinction.
fn normal_name(s: &str) -> String {
    s.trim().to_lowercase().replace('ё', "е")
}

/// Names compare without case, surrounding spaces, or the ё/е distinction.
fn same_name(a: &str, b: &str) -> bool {
    normal_name(a) == normal_name(b)
}

/// Why a verification step did not happen.
#[derive(Debug)]
pub enum IdentityFailure {
    /// Errors for the caller, each naming its field.
    User(Vec<UserError>),
    /// A fault of the store or a channel; logged, never shown.
    Internal(String),
}

impl IdentityFailure {
    fn user(error: UserError) -> Self {
        IdentityFailure::User(vec![error])
    }
}

impl<E: std::error::Error + AsUserError> From<CommandError<E>> for IdentityFailure {
    fn from(e: CommandError<E>) -> Self {
        match e {
            CommandError::Rejected(e) => IdentityFailure::User(e.to_user_errors()),
            CommandError::Conflict => {
                IdentityFailure::user(UserError::new("CONFLICT", e.to_string()))
            }
            CommandError::IdempotencyKeyReused => IdentityFailure::user(UserError::field(
                "idempotencyKey",
                "IDEMPOTENCY_KEY_REUSED",
                e.to_string(),
            )),
            CommandError::Reserved(taken)
                if taken.scope == super::verification::VERIFIED_SNILS_SCOPE =>
            {
                use crate::journal::reservations::Reserving;
                IdentityFailure::user(IdentityVerification::reservation_error(&taken))
            }
            CommandError::Reserved(taken) => IdentityFailure::Internal(taken.to_string()),
            CommandError::Internal(e) => IdentityFailure::Internal(e),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> IdentityFailure {
    IdentityFailure::Internal(e.to_string())
}

/// A passport scan as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScan {
    pub sha256: String,
    pub size: u64,
}

/// A scan waiting in the review queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanAwaitingReview {
    pub patient_id: Uuid,
    pub sha256: String,
    pub size: u64,
    pub format: ScanFormat,
    pub uploaded_at: DateTime<Utc>,
}

/// A scan upload may not start now: too many are being read at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many passport scans are being uploaded right now; try again in a moment")]
pub struct UploadsBusy;

/// A scan stored in the review queue, and what to do with it.
const SCAN_PENDING: &str = "pending";
const SCAN_APPROVED: &str = "approved";

/// An outstanding code: phone, salt, hash, expiry (µs) and tries used.
type CodeRow = (String, String, String, i64, i32);

/// Runs identity verification.
#[derive(Clone)]
pub struct IdentityService {
    db: Db,
    commands: CommandService,
    registry: Arc<dyn SnilsRegistry>,
    key: DataKey,
    limits: IdentityLimits,
    uploads: Arc<tokio::sync::Semaphore>,
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A uniformly random six-digit code.
fn random_code() -> String {
    // Reject the top of the u32 range so every code is equally likely.
    const LIMIT: u32 = u32::MAX - (u32::MAX % 1_000_000);
    loop {
        let n = OsRng.next_u32();
        if n < LIMIT {
            return format!("{:06}", n % 1_000_000);
        }
    }
}

fn code_hash(salt: &str, code: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}:{code}").as_bytes()))
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key that seals scans: the configured one, or (development only) a random key
/// generated once and kept in this database.
pub async fn resolve_data_key(
    db: &Db,
    configured: Option<DataKey>,
    production: bool,
) -> Result<DataKey, String> {
    if let Some(key) = configured {
        return Ok(key);
    }
    if production {
        return Err(
            "KABINET_DATA_KEY is required in production mode (32 bytes, hex or base64)".into(),
        );
    }
    const SELECT: &str = "SELECT key_base64 FROM development_data_keys ORDER BY created_at LIMIT 1";
    const INSERT: &str = "INSERT INTO development_data_keys (key_id, key_base64, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    let fresh = DataKey::random();
    let stored: String = crate::on_db!(db, pool => {
        let existing: Option<String> = sqlx::query_scalar(SELECT).fetch_optional(pool).await.map_err(|e| e.to_string())?;
        match existing {
            Some(key) => key,
            None => {
                sqlx::query(INSERT)
                    .bind(fresh.id())
                    .bind(fresh.to_base64())
                    .bind(Utc::now().timestamp_micros())
                    .execute(pool)
                    .await
                    .map_err(|e| e.to_string())?;
                // Another process may have stored its key first: use the oldest.
                sqlx::query_scalar(SELECT).fetch_one(pool).await.map_err(|e| e.to_string())?
            }
        }
    });
    tracing::warn!("no KABINET_DATA_KEY: passport scans are sealed with a development key kept in the database");
    DataKey::parse(&stored).map_err(|e| e.to_string())
}

impl IdentityService {
    /// The service over `db`, sealing scans with `key`.
    pub fn new(
        db: Db,
        commands: CommandService,
        registry: Arc<dyn SnilsRegistry>,
        key: DataKey,
    ) -> Self {
        let limits = IdentityLimits::default();
        IdentityService {
            db,
            commands,
            registry,
            key,
            uploads: Arc::new(tokio::sync::Semaphore::new(limits.concurrent_uploads)),
            limits,
        }
    }

    /// The service with `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: IdentityLimits) -> Self {
        self.uploads = Arc::new(tokio::sync::Semaphore::new(
            limits.concurrent_uploads.max(1),
        ));
        self.limits = limits;
        self
    }

    /// The limits in force.
    pub fn limits(&self) -> &IdentityLimits {
        &self.limits
    }

    /// A place among the uploads read at once, held until dropped; refused at once
    /// (never queued) when all are taken, so stalled uploads cannot pile up memory.
    pub fn upload_permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, UploadsBusy> {
        self.uploads
            .clone()
            .try_acquire_owned()
            .map_err(|_| UploadsBusy)
    }

    /// What the verification steps rely on in `patient`'s profile now.
    pub fn bases(&self, patient: &Patient) -> ProfileBases {
        let person = patient.profile.as_ref().map(|p| {
            format!(
                "{}\u{1f}{}\u{1f}{}\u{1f}{}",
                normal_name(&p.surname),
                normal_name(&p.first_name),
                normal_name(p.patronymic.as_deref().unwrap_or("")),
                p.birth_date
            )
        });
        let d = &patient.details;
        let snils = match (&person, &d.snils) {
            (Some(person), Some(snils)) => Some(
                self.key
                    .fingerprint(format!("snils\u{1f}{}\u{1f}{person}", snils.digits()).as_bytes()),
            ),
            _ => None,
        };
        let passport = match (&person, &d.passport_series, &d.passport_number) {
            (Some(person), Some(series), Some(number)) => Some(
                self.key.fingerprint(
                    format!(
                        "passport\u{1f}{}\u{1f}{}\u{1f}{person}",
                        series.as_str(),
                        number.as_str()
                    )
                    .as_bytes(),
                ),
            ),
            _ => None,
        };
        ProfileBases {
            snils,
            passport,
            phone: d.phone.clone(),
        }
    }

    async fn take(
        &self,
        counted: Counted,
        subject: &str,
        cap: Cap,
        gap: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<(), limits::CapReached>, IdentityFailure> {
        limits::take(&self.db, counted, subject, cap, gap, now)
            .await
            .map_err(internal)
    }

    /// The verification of `patient_id` as it stands.
    pub async fn status(&self, patient_id: Uuid) -> Result<IdentityVerification, String> {
        self.commands
            .load::<IdentityVerification>(&patient_id.to_string())
            .await
    }

    /// Whether `patient_id`'s identity is verified.
    pub async fn is_verified(&self, patient_id: Uuid) -> Result<bool, String> {
        Ok(self.status(patient_id).await?.is_verified())
    }

    async fn patient(&self, patient_id: Uuid) -> Result<Patient, IdentityFailure> {
        self.commands
            .load::<Patient>(&patient_id.to_string())
            .await
            .map_err(IdentityFailure::Internal)
    }

    async fn refuse_if_verified(&self, patient_id: Uuid) -> Result<(), IdentityFailure> {
        if self
            .status(patient_id)
            .await
            .map_err(internal)?
            .is_verified()
        {
            return Err(IdentityFailure::user(
                super::verification::VerificationError::AlreadyVerified.to_user_error(),
            ));
        }
        Ok(())
    }

    async fn run(
        &self,
        patient_id: Uuid,
        command: VerificationCommand,
        meta: &EventMetadata,
        input: serde_json::Value,
    ) -> Result<CommandOutcome, IdentityFailure> {
        let (outcome, _) = self
            .commands
            .execute::<IdentityVerification>(
                &patient_id.to_string(),
                command,
                &(),
                meta,
                &input,
                Retry::OnConflict,
            )
            .await?;
        Ok(outcome)
    }

    /// Matches the profile's SNILS, name and birth date against the registry.
    #[tracing::instrument(skip_all)]
    pub async fn match_snils(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome, IdentityFailure> {
        let patient = self.patient(patient_id).await?;
        let mut missing = Vec::new();
        if patient.profile.is_none() {
            missing.push(UserError::field(
                "profile",
                "PROFILE_INCOMPLETE",
                "record the name and birth date in the profile first",
            ));
        }
        if patient.details.snils.is_none() {
            missing.push(UserError::field(
                "snils",
                "PROFILE_INCOMPLETE",
                "add the SNILS to the profile first",
            ));
        }
        let bases = self.bases(&patient);
        let (Some(profile), Some(snils), true) =
            (patient.profile, patient.details.snils, missing.is_empty())
        else {
            return Err(IdentityFailure::User(missing));
        };
        let entry = self
            .registry
            .lookup(&snils)
            .await
            .map_err(IdentityFailure::Internal)?;
        let matches = entry.is_some_and(|e| {
            same_name(&e.surname, &profile.surname)
                && same_name(&e.first_name, &profile.first_name)
                && same_name(
                    e.patronymic.as_deref().unwrap_or(""),
                    profile.patronymic.as_deref().unwrap_or(""),
                )
                && e.birth_date == profile.birth_date
        });
        let answer = if matches {
            RegistryAnswer::Matches
        } else {
            RegistryAnswer::DoesNotMatch
        };
        let input = json!({ "step": "snils", "snils": snils.digits() });
        self.run(
            patient_id,
            VerificationCommand::MatchSnils {
                snils,
                answer,
                bases,
                now,
            },
            meta,
            input,
        )
        .await
    }

    /// Checks, seals and stores a passport scan, then records it (digest and size only).
    #[tracing::instrument(skip_all, fields(size = bytes.len()))]
    pub async fn upload_scan(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        bytes: &[u8],
        declared_type: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(CommandOutcome, StoredScan), IdentityFailure> {
        let format = check_scan(bytes, declared_type).map_err(|e: ScanError| {
            IdentityFailure::user(UserError::new(e.code(), e.to_string()))
        })?;
        self.refuse_if_verified(patient_id).await?;
        // The scan goes with the passport data of the profile.
        let patient = self.patient(patient_id).await?;
        let bases = self.bases(&patient);
        let details = patient.details;
        let mut missing = Vec::new();
        if details.passport_series.is_none() {
            missing.push(UserError::field(
                "passportSeries",
                "PROFILE_INCOMPLETE",
                "add the passport series to the profile first",
            ));
        }
        if details.passport_number.is_none() {
            missing.push(UserError::field(
                "passportNumber",
                "PROFILE_INCOMPLETE",
                "add the passport number to the profile first",
            ));
        }
        if !missing.is_empty() {
            return Err(IdentityFailure::User(missing));
        }
        if let Err(reached) = self
            .take(
                Counted::ScansOfPerson,
                &patient_id.to_string(),
                self.limits.scans_per_person,
                Duration::zero(),
                now,
            )
            .await?
        {
            return Err(IdentityFailure::user(
                reached.to_user_error("SCAN_LIMIT_REACHED", "passport scans"),
            ));
        }
        let sha256 = hex::encode(Sha256::digest(bytes));
        let context = format!("{patient_id}:{sha256}");
        let sealed = self.key.seal(bytes, context.as_bytes());
        const SQL: &str =
            "INSERT INTO passport_scans (patient_id, sha256, size, format, key_id, nonce, \
             ciphertext, uploaded_at, review_state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') \
             ON CONFLICT (patient_id, sha256) DO UPDATE SET review_state = 'pending', \
             uploaded_at = excluded.uploaded_at";
        let patient = patient_id.to_string();
        crate::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(&patient)
                .bind(&sha256)
                .bind(bytes.len() as i64)
                .bind(format.as_str())
                .bind(self.key.id())
                .bind(&sealed.nonce)
                .bind(&sealed.ciphertext)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await
                .map_err(internal)?;
        });
        let size = bytes.len() as u64;
        let input = json!({ "step": "passport_scan", "sha256": sha256 });
        let outcome = self
            .run(
                patient_id,
                VerificationCommand::RecordPassportScan {
                    sha256: sha256.clone(),
                    size,
                    format,
                    bases,
                    now,
                },
                meta,
                input,
            )
            .await?;
        // Only the latest scan and an approved one are kept.
        const PRUNE: &str = "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 <> $2 \
             AND review_state <> 'approved'";
        crate::on_db!(&self.db, pool => {
            sqlx::query(PRUNE).bind(&patient).bind(&sha256).execute(pool).await.map_err(internal)?;
        });
        Ok((outcome, StoredScan { sha256, size }))
    }

    /// Records a reviewer's decision on `patient_id`'s scan `sha256`: an approval
    /// completes the scan step (and keeps only that scan), a rejection deletes it.
    #[tracing::instrument(skip_all)]
    pub async fn review_scan(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        sha256: &str,
        decision: ScanDecision,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome, IdentityFailure> {
        let not_found = || {
            IdentityFailure::user(UserError::field(
                "sha256",
                "NOT_FOUND",
                "no scan of this patient awaits review under this digest",
            ))
        };
        if !self
            .scan_stored(patient_id, sha256)
            .await
            .map_err(internal)?
        {
            return Err(not_found());
        }
        let patient = self.patient(patient_id).await?;
        let bases = self.bases(&patient);
        let approve = decision == ScanDecision::Approve;
        let input = json!({
            "step": "review_passport_scan",
            "patient": patient_id,
            "sha256": sha256,
            "approve": approve,
        });
        let outcome = self
            .run(
                patient_id,
                VerificationCommand::ReviewPassportScan {
                    sha256: sha256.to_string(),
                    decision,
                    reviewer: meta.actor.account_id,
                    bases,
                    now,
                },
                meta,
                input,
            )
            .await?;
        let patient = patient_id.to_string();
        const APPROVE: &str =
            "UPDATE passport_scans SET review_state = 'approved' WHERE patient_id = $1 AND sha256 = $2";
        const DROP_OTHERS: &str =
            "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 <> $2";
        const DROP: &str = "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        crate::on_db!(&self.db, pool => {
            if approve {
                sqlx::query(APPROVE).bind(&patient).bind(sha256).execute(pool).await.map_err(internal)?;
                sqlx::query(DROP_OTHERS).bind(&patient).bind(sha256).execute(pool).await.map_err(internal)?;
            } else {
                sqlx::query(DROP).bind(&patient).bind(sha256).execute(pool).await.map_err(internal)?;
            }
        });
        Ok(outcome)
    }

    async fn scan_stored(&self, patient_id: Uuid, sha256: &str) -> Result<bool, sqlx::Error> {
        const SQL: &str =
            "SELECT count(*) FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        let patient = patient_id.to_string();
        let n: i64 = crate::on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL).bind(&patient).bind(sha256).fetch_one(pool).await?
        });
        Ok(n > 0)
    }

    /// Scans awaiting review, oldest first: `limit` from `offset`. The table is the
    /// queue's index; each patient's verification stream decides what still waits.
    pub async fn scans_awaiting_review(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ScanAwaitingReview>, String> {
        const SQL: &str =
            "SELECT patient_id, sha256, size, format, uploaded_at FROM passport_scans \
             WHERE review_state = $1 ORDER BY uploaded_at, patient_id LIMIT $2 OFFSET $3";
        let rows: Vec<(String, String, i64, String, i64)> = crate::on_db!(&self.db, pool => {
            sqlx::query_as(SQL)
                .bind(SCAN_PENDING)
                .bind(limit as i64)
                .bind(offset as i64)
                .fetch_all(pool)
                .await
                .map_err(|e| e.to_string())?
        });
        let mut queue = Vec::with_capacity(rows.len());
        for (patient, sha256, size, format, uploaded_at) in rows {
            let Ok(patient_id) = Uuid::parse_str(&patient) else {
                continue;
            };
            let status = self.status(patient_id).await?;
            let waiting = status.scan_review == Some(ScanReview::AwaitingReview)
                && status.scan_sha256.as_deref() == Some(sha256.as_str());
            if !waiting {
                continue;
            }
            queue.push(ScanAwaitingReview {
                patient_id,
                sha256,
                size: u64::try_from(size).unwrap_or(0),
                format: ScanFormat::parse(&format).unwrap_or(ScanFormat::Pdf),
                uploaded_at: DateTime::from_timestamp_micros(uploaded_at).unwrap_or_default(),
            });
        }
        Ok(queue)
    }

    /// The plaintext and format of a scan that awaits review or was approved.
    pub async fn open_scan_for_review(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<(Vec<u8>, ScanFormat)>, String> {
        const SQL: &str =
            "SELECT format FROM passport_scans WHERE patient_id = $1 AND sha256 = $2 \
             AND review_state IN ($3, $4)";
        let patient = patient_id.to_string();
        let format: Option<String> = crate::on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL)
                .bind(&patient)
                .bind(sha256)
                .bind(SCAN_PENDING)
                .bind(SCAN_APPROVED)
                .fetch_optional(pool)
                .await
                .map_err(|e| e.to_string())?
        });
        let Some(format) = format.and_then(|f| ScanFormat::parse(&f)) else {
            return Ok(None);
        };
        Ok(self
            .open_scan(patient_id, sha256)
            .await?
            .map(|bytes| (bytes, format)))
    }

    /// After a profile change: undoes the steps whose data the profile no longer holds,
    /// and deletes a scan that no longer goes with the profile.
    #[tracing::instrument(skip_all)]
    pub async fn revise(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome, IdentityFailure> {
        let patient = self.patient(patient_id).await?;
        let bases = self.bases(&patient);
        let before = self.status(patient_id).await.map_err(internal)?;
        let input = json!({ "step": "revise" });
        // A revision follows another command; it never answers for that one's key.
        let meta = meta.clone().with_idempotency_key(None);
        let outcome = self
            .run(
                patient_id,
                VerificationCommand::Revise { bases, now },
                &meta,
                input,
            )
            .await?;
        let after = self.status(patient_id).await.map_err(internal)?;
        if let (Some(old), None) = (before.scan_sha256, after.scan_sha256) {
            const DROP: &str = "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
            let patient = patient_id.to_string();
            crate::on_db!(&self.db, pool => {
                sqlx::query(DROP).bind(&patient).bind(&old).execute(pool).await.map_err(internal)?;
            });
        }
        Ok(outcome)
    }

    /// The plaintext of a stored scan (for staff review tools and tests).
    pub async fn open_scan(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, String> {
        const SQL: &str =
            "SELECT nonce, ciphertext FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        let patient = patient_id.to_string();
        let row: Option<(Vec<u8>, Vec<u8>)> = crate::on_db!(&self.db, pool => {
            sqlx::query_as(SQL).bind(&patient).bind(sha256).fetch_optional(pool).await.map_err(|e| e.to_string())?
        });
        let Some((nonce, ciphertext)) = row else {
            return Ok(None);
        };
        let context = format!("{patient_id}:{sha256}");
        self.key
            .open(
                &super::scan::Sealed { nonce, ciphertext },
                context.as_bytes(),
            )
            .map(Some)
            .map_err(|e| e.to_string())
    }

    /// Sends a fresh six-digit code to the profile's phone (throttled), keeping its hash.
    #[tracing::instrument(skip_all)]
    pub async fn send_phone_code(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        notifier: &dyn Notifier,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome, IdentityFailure> {
        // A retry under the same idempotency key sends no second code.
        let input = json!({ "step": "send_phone_code" });
        if let Some(outcome) = self
            .commands
            .earlier_outcome::<IdentityVerification>(meta, &input)
            .await?
        {
            return Ok(outcome);
        }
        self.refuse_if_verified(patient_id).await?;
        let patient = self.patient(patient_id).await?;
        let Some(phone) = patient.details.phone else {
            return Err(IdentityFailure::user(UserError::field(
                "phone",
                "PROFILE_INCOMPLETE",
                "add a phone number to the profile first",
            )));
        };
        let patient = patient_id.to_string();
        let last_sent: Option<i64> = crate::on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT sent_at FROM identity_codes WHERE patient_id = $1")
                .bind(&patient)
                .fetch_optional(pool)
                .await
                .map_err(internal)?
        });
        if let Some(sent) = last_sent.and_then(DateTime::from_timestamp_micros) {
            let wait = sent + Duration::seconds(CODE_RESEND_SECONDS) - now;
            if wait > Duration::zero() {
                return Err(IdentityFailure::user(UserError::new(
                    "CODE_RESEND_TOO_SOON",
                    format!(
                        "a code was sent a moment ago; ask again in {} s",
                        wait.num_seconds().max(1)
                    ),
                )));
            }
        }
        // One person gets a code at most once a minute and within an hourly and a
        // daily cap; each number too, whoever asks. The person's turn is taken first
        // and in one statement, so a burst of requests sends one code and uses one turn.
        let person = match self
            .take(
                Counted::CodesToPerson,
                &patient,
                self.limits.codes_per_person,
                Duration::seconds(CODE_RESEND_SECONDS),
                now,
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(reached) if reached.window == limits::GAP => {
                return Err(IdentityFailure::user(UserError::new(
                    "CODE_RESEND_TOO_SOON",
                    format!(
                        "a code was sent a moment ago; ask again in {} s",
                        reached.retry_seconds
                    ),
                )))
            }
            Err(reached) => Err(reached.to_user_error("CODE_LIMIT_REACHED", "identity codes")),
        };
        let number = match person {
            Ok(()) => self
                .take(
                    Counted::CodesToNumber,
                    phone.as_str(),
                    self.limits.codes_per_number,
                    Duration::zero(),
                    now,
                )
                .await?
                .map_err(|r| r.to_user_error("CODE_LIMIT_REACHED", "codes to this phone number")),
            Err(e) => Err(e),
        };
        if let Err(error) = number {
            return Err(IdentityFailure::user(error));
        }
        let code = random_code();
        let salt = random_hex(16);
        let hash = code_hash(&salt, &code);
        let expires_at = now + Duration::minutes(CODE_TTL_MINUTES);
        const UPSERT: &str = "INSERT INTO identity_codes (patient_id, phone, salt, code_hash, sent_at, \
             expires_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (patient_id) DO UPDATE SET \
             phone = excluded.phone, salt = excluded.salt, code_hash = excluded.code_hash, \
             sent_at = excluded.sent_at, expires_at = excluded.expires_at, attempts = 0 \
             WHERE identity_codes.sent_at <= $7";
        let written = crate::on_db!(&self.db, pool => {
            sqlx::query(UPSERT)
                .bind(&patient)
                .bind(phone.as_str())
                .bind(&salt)
                .bind(&hash)
                .bind(now.timestamp_micros())
                .bind(expires_at.timestamp_micros())
                .bind((now - Duration::seconds(CODE_RESEND_SECONDS)).timestamp_micros())
                .execute(pool)
                .await
                .map_err(internal)?
                .rows_affected()
        });
        // Another request sent a code in the meantime.
        if written == 0 {
            return Err(IdentityFailure::user(UserError::new(
                "CODE_RESEND_TOO_SOON",
                "a code was sent a moment ago; ask again in a minute",
            )));
        }
        notifier
            .send(&Message {
                channel: Channel::Sms,
                to: phone.as_str().to_string(),
                subject: "Код подтверждения".into(),
                body: format!(
                    "Код для подтверждения личности в Кабинете: {code}. Действует {CODE_TTL_MINUTES} минут. Никому его не сообщайте."
                ),
            })
            .await
            .map_err(internal)?;
        self.run(
            patient_id,
            VerificationCommand::RecordPhoneCodeSent { phone, expires_at },
            meta,
            input,
        )
        .await
    }

    /// Checks a code; each try counts, whatever its outcome, up to the limit.
    #[tracing::instrument(skip_all)]
    pub async fn confirm_phone_code(
        &self,
        meta: &EventMetadata,
        patient_id: Uuid,
        code: &str,
        now: DateTime<Utc>,
    ) -> Result<CommandOutcome, IdentityFailure> {
        let code = code.trim();
        if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdentityFailure::user(UserError::field(
                "code",
                "INVALID_CODE",
                "the code has six digits",
            )));
        }
        let input = json!({ "step": "confirm_phone_code" });
        if let Some(outcome) = self
            .commands
            .earlier_outcome::<IdentityVerification>(meta, &input)
            .await?
        {
            return Ok(outcome);
        }
        self.refuse_if_verified(patient_id).await?;
        let patient = patient_id.to_string();
        let at = now.timestamp_micros();
        // Claim one try first, so concurrent guesses cannot exceed the limit.
        const CLAIM: &str = "UPDATE identity_codes SET attempts = attempts + 1 \
             WHERE patient_id = $1 AND attempts < $2 AND expires_at > $3";
        const READ: &str = "SELECT phone, salt, code_hash, expires_at, attempts FROM identity_codes WHERE patient_id = $1";
        let (claimed, row): (u64, Option<CodeRow>) = crate::on_db!(&self.db, pool => {
            let claimed = sqlx::query(CLAIM)
                .bind(&patient)
                .bind(CODE_MAX_ATTEMPTS)
                .bind(at)
                .execute(pool)
                .await
                .map_err(internal)?
                .rows_affected();
            let row = sqlx::query_as(READ)
                .bind(&patient)
                .fetch_optional(pool)
                .await
                .map_err(internal)?;
            (claimed, row)
        });
        let Some((phone, salt, hash, expires_at, attempts)) = row else {
            return Err(IdentityFailure::user(UserError::field(
                "code",
                "CODE_NOT_SENT",
                "no code was sent; ask for a code first",
            )));
        };
        if claimed == 0 {
            return Err(IdentityFailure::user(if expires_at <= at {
                UserError::field(
                    "code",
                    "CODE_EXPIRED",
                    "the code has expired; ask for a new one",
                )
            } else {
                UserError::field(
                    "code",
                    "CODE_TOO_MANY_ATTEMPTS",
                    "too many wrong tries; ask for a new code",
                )
            }));
        }
        if !same_bytes(code_hash(&salt, code).as_bytes(), hash.as_bytes()) {
            let left = (CODE_MAX_ATTEMPTS - attempts).max(0);
            return Err(IdentityFailure::user(UserError::field(
                "code",
                "CODE_WRONG",
                format!("the code is wrong; {left} tries left"),
            )));
        }
        crate::on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM identity_codes WHERE patient_id = $1")
                .bind(&patient)
                .execute(pool)
                .await
                .map_err(internal)?;
        });
        let phone = super::values::PhoneNumber::parse(&phone).map_err(internal)?;
        let bases = self.bases(&self.patient(patient_id).await?);
        self.run(
            patient_id,
            VerificationCommand::ConfirmPhone { phone, bases, now },
            meta,
            input,
        )
        .await
    }
}
