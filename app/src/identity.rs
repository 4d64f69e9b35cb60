//! The `IdentityDesk` use case: identity verification of a patient against the
//! SNILS registry, by a reviewed passport scan and by a code to the phone. It
//! keeps scans sealed and codes hashed in the identity tables (an adapter) and
//! records each step as [`IdentityVerification`] events.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use kabinet_adapters::identity_store::IdentityStore;
use kabinet_domain::accounts::secrets::{random_bytes, six_digit_code, SecretError};
use kabinet_domain::command::{CommandError, CommandFault, CommandOutcome, CommandRunner, Retry};
use kabinet_domain::identity::limits::{Cap, CapReached, Counted, IdentityLimits, GAP};
use kabinet_domain::identity::registry::{normal_name, same_name, RegistryError, SnilsRegistry};
use kabinet_domain::identity::scan::{check_scan, DataKey, OpenError, ScanError};
use kabinet_domain::identity::verification::{
    IdentityVerification, ProfileBases, RegistryAnswer, ScanDecision, ScanFormat, ScanReview,
    VerificationCommand, VerificationError, VERIFIED_SNILS_SCOPE,
};
use kabinet_domain::identity::{PhoneError, PhoneNumber};
use kabinet_domain::journal::reservations::ReservationTaken;
use kabinet_domain::notify::{Channel, Message, Notifier, NotifyError};
use kabinet_domain::patients::Patient;
use kabinet_domain::user_error::{AsUserError, UserError};
use kabinet_domain::EventMetadata;
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// How long an SMS code is valid.
pub const CODE_TTL_MINUTES: i64 = 10;
/// How many tries one code allows.
pub const CODE_MAX_ATTEMPTS: i32 = 5;
/// Least time between two codes.
pub const CODE_RESEND_SECONDS: i64 = 60;

/// Why a verification step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFailure {
    /// Errors for the caller, each naming its field.
    #[error("{}", .0.first().map_or("", |e| e.message.as_str()))]
    User(Vec<UserError>),
    /// A fault of the store or a channel; logged, never shown.
    #[error("internal error: {0}")]
    Internal(#[source] IdentityFault),
}

/// A fault under a verification step, with its cause.
#[derive(Debug, thiserror::Error)]
pub enum IdentityFault {
    /// The identity tables failed.
    #[error("identity tables: {0}")]
    Store(#[from] sqlx::Error),
    /// The command path failed.
    #[error(transparent)]
    Command(#[from] CommandFault),
    /// The SNILS registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The SMS channel refused the code.
    #[error(transparent)]
    Delivery(#[from] NotifyError),
    /// A stored scan does not open with the data key.
    #[error("a stored scan cannot be opened: {0}")]
    Sealed(#[from] OpenError),
    /// A stored phone number no longer parses.
    #[error("a stored phone number is malformed: {0}")]
    StoredPhone(#[from] PhoneError),
    /// A reservation the verification does not expect was held.
    #[error("{0}")]
    Reserved(ReservationTaken),
    /// No randomness for a code.
    #[error(transparent)]
    Randomness(#[from] SecretError),
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
            CommandError::Reserved(taken) if taken.scope == VERIFIED_SNILS_SCOPE => {
                use kabinet_domain::journal::reservations::Reserving;
                IdentityFailure::user(IdentityVerification::reservation_error(&taken))
            }
            CommandError::Reserved(taken) => internal(IdentityFault::Reserved(taken)),
            CommandError::Internal(e) => internal(e),
        }
    }
}

fn internal(e: impl Into<IdentityFault>) -> IdentityFailure {
    IdentityFailure::Internal(e.into())
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

/// The identity verification use case.
#[derive(Clone)]
pub struct IdentityDesk {
    store: IdentityStore,
    commands: CommandRunner,
    registry: Arc<dyn SnilsRegistry>,
    key: DataKey,
    limits: IdentityLimits,
    uploads: Arc<tokio::sync::Semaphore>,
}

fn random_hex(bytes: usize) -> Result<String, SecretError> {
    let mut buf = vec![0u8; bytes];
    random_bytes(&mut buf)?;
    Ok(hex::encode(buf))
}

fn code_hash(salt: &str, code: &str) -> String {
    hex::encode(Sha256::digest(format!("{salt}:{code}").as_bytes()))
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl IdentityDesk {
    /// The service over `db`, sealing scans with `key`.
    pub fn new(
        store: IdentityStore,
        commands: CommandRunner,
        registry: Arc<dyn SnilsRegistry>,
        key: DataKey,
    ) -> Self {
        let limits = IdentityLimits::default();
        IdentityDesk {
            store,
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
    ) -> Result<Result<(), CapReached>, IdentityFailure> {
        self.store
            .take(counted, subject, cap, gap, now)
            .await
            .map_err(internal)
    }

    /// The verification of `patient_id` as it stands.
    pub async fn status(&self, patient_id: Uuid) -> Result<IdentityVerification, CommandFault> {
        self.commands
            .load::<IdentityVerification>(&patient_id.to_string())
            .await
    }

    /// Whether `patient_id`'s identity is verified.
    pub async fn is_verified(&self, patient_id: Uuid) -> Result<bool, CommandFault> {
        Ok(self.status(patient_id).await?.is_verified())
    }

    async fn patient(&self, patient_id: Uuid) -> Result<Patient, IdentityFailure> {
        self.commands
            .load::<Patient>(&patient_id.to_string())
            .await
            .map_err(internal)
    }

    async fn refuse_if_verified(&self, patient_id: Uuid) -> Result<(), IdentityFailure> {
        if self
            .status(patient_id)
            .await
            .map_err(internal)?
            .is_verified()
        {
            return Err(IdentityFailure::user(
                VerificationError::AlreadyVerified.to_user_error(),
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
        let entry = self.registry.lookup(&snils).await.map_err(internal)?;
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
        self.store
            .put_scan(
                patient_id,
                &sha256,
                bytes.len(),
                format,
                &self.key.id(),
                &sealed,
                now,
            )
            .await
            .map_err(internal)?;
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
        self.store
            .prune_scans(patient_id, &sha256)
            .await
            .map_err(internal)?;
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
            .store
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
        if approve {
            self.store.approve_scan(patient_id, sha256).await
        } else {
            self.store.drop_scan(patient_id, sha256).await
        }
        .map_err(internal)?;
        Ok(outcome)
    }

    /// Scans awaiting review, oldest first: `limit` from `offset`. The table is the
    /// queue's index; each patient's verification stream decides what still waits.
    pub async fn scans_awaiting_review(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<ScanAwaitingReview>, IdentityFault> {
        let mut queue = Vec::new();
        for scan in self.store.pending_scans(limit, offset).await? {
            let status = self.status(scan.patient_id).await?;
            let waiting = status.scan_review == Some(ScanReview::AwaitingReview)
                && status.scan_sha256.as_deref() == Some(scan.sha256.as_str());
            if !waiting {
                continue;
            }
            queue.push(ScanAwaitingReview {
                patient_id: scan.patient_id,
                sha256: scan.sha256,
                size: scan.size,
                format: scan.format,
                uploaded_at: scan.uploaded_at,
            });
        }
        Ok(queue)
    }

    /// The plaintext and format of a scan that awaits review or was approved.
    pub async fn open_scan_for_review(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<(Vec<u8>, ScanFormat)>, IdentityFault> {
        let Some(format) = self
            .store
            .reviewable_scan_format(patient_id, sha256)
            .await?
        else {
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
            self.store
                .drop_scan(patient_id, &old)
                .await
                .map_err(internal)?;
        }
        Ok(outcome)
    }

    /// The plaintext of a stored scan (for staff review tools and tests).
    pub async fn open_scan(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<Vec<u8>>, IdentityFault> {
        let Some(sealed) = self.store.sealed_scan(patient_id, sha256).await? else {
            return Ok(None);
        };
        let context = format!("{patient_id}:{sha256}");
        Ok(Some(self.key.open(&sealed, context.as_bytes())?))
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
        let last_sent = self
            .store
            .code_sent_at(patient_id)
            .await
            .map_err(internal)?;
        if let Some(sent) = last_sent {
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
            Err(reached) if reached.window == GAP => {
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
        let code = six_digit_code().map_err(internal)?;
        let salt = random_hex(16).map_err(internal)?;
        let hash = code_hash(&salt, &code);
        let expires_at = now + Duration::minutes(CODE_TTL_MINUTES);
        let written = self
            .store
            .put_code(
                patient_id,
                phone.as_str(),
                &salt,
                &hash,
                now,
                expires_at,
                Duration::seconds(CODE_RESEND_SECONDS),
            )
            .await
            .map_err(internal)?;
        // Another request sent a code in the meantime.
        if !written {
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
        let tried = self
            .store
            .try_code(patient_id, CODE_MAX_ATTEMPTS, now)
            .await
            .map_err(internal)?;
        let Some(stored) = tried.code else {
            return Err(IdentityFailure::user(UserError::field(
                "code",
                "CODE_NOT_SENT",
                "no code was sent; ask for a code first",
            )));
        };
        if !tried.counted {
            return Err(IdentityFailure::user(if stored.expires_at <= now {
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
        if !same_bytes(
            code_hash(&stored.salt, code).as_bytes(),
            stored.hash.as_bytes(),
        ) {
            let left = (CODE_MAX_ATTEMPTS - stored.attempts).max(0);
            return Err(IdentityFailure::user(UserError::field(
                "code",
                "CODE_WRONG",
                format!("the code is wrong; {left} tries left"),
            )));
        }
        self.store.delete_code(patient_id).await.map_err(internal)?;
        let phone = PhoneNumber::parse(&stored.phone).map_err(internal)?;
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
