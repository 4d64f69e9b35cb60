//! The identity tables: sealed passport scans, outstanding phone codes, the caps
//! on codes and scans, the SNILS registry as a table, and the development data key.
//! Only digests and sealed bytes are kept; no phone number is a counter's key.

use async_trait::async_trait;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use kabinet_domain::identity::limits::{subject_key, Cap, CapReached, Counted, GAP};
use kabinet_domain::identity::registry::{RegistryEntry, RegistryError, SnilsRegistry};
use kabinet_domain::identity::scan::{BadDataKey, DataKey, Sealed};
use kabinet_domain::identity::verification::ScanFormat;
use kabinet_domain::identity::Snils;
use kabinet_domain::{on_db, Db};
use sqlx::Row;
use uuid::Uuid;

/// A counter row: hour start, hour count, day start, day count, last use.
type CounterRow = (i64, i64, i64, i64, i64);

/// A code row: phone, salt, hash, expiry (µs) and tries used.
type CodeRow = (String, String, String, i64, i32);

/// Review states of a stored scan.
const SCAN_PENDING: &str = "pending";
const SCAN_APPROVED: &str = "approved";

/// A scan row of the review queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingScan {
    pub patient_id: Uuid,
    pub sha256: String,
    pub size: u64,
    pub format: ScanFormat,
    pub uploaded_at: DateTime<Utc>,
}

/// An outstanding phone code: where it went, its salt and hash, expiry and tries used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutstandingCode {
    pub phone: String,
    pub salt: String,
    pub hash: String,
    pub expires_at: DateTime<Utc>,
    pub attempts: i32,
}

/// A try at an outstanding code: whether a try was left and counted, and the code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeTry {
    pub counted: bool,
    pub code: Option<OutstandingCode>,
}

/// The identity tables of one database.
#[derive(Debug, Clone)]
pub struct IdentityStore {
    db: Db,
}

impl IdentityStore {
    /// The tables in `db`.
    pub fn new(db: Db) -> Self {
        IdentityStore { db }
    }

    /// Takes one use of `cap` for `subject` at `now`, at least `gap` after the last one,
    /// or says when the next is allowed.
    ///
    /// One conditional `UPDATE`: PostgreSQL re-checks its condition on the latest row
    /// under the row lock and SQLite runs one writer at a time, so concurrent
    /// requests never pass a cap together.
    pub async fn take(
        &self,
        counted: Counted,
        subject: &str,
        cap: Cap,
        gap: Duration,
        now: DateTime<Utc>,
    ) -> Result<Result<(), CapReached>, sqlx::Error> {
        const ENSURE: &str = "INSERT INTO identity_rate_limits (subject, hour_start, hour_count, \
             day_start, day_count, last_at) VALUES ($1, 0, 0, 0, 0, 0) ON CONFLICT (subject) DO NOTHING";
        // Every right-hand side reads the row as it was before this update.
        const TAKE: &str = "UPDATE identity_rate_limits SET \
             hour_count = CASE WHEN hour_start <= $2 THEN 1 ELSE hour_count + 1 END, \
             hour_start = CASE WHEN hour_start <= $2 THEN $1 ELSE hour_start END, \
             day_count = CASE WHEN day_start <= $3 THEN 1 ELSE day_count + 1 END, \
             day_start = CASE WHEN day_start <= $3 THEN $1 ELSE day_start END, \
             last_at = $1 \
             WHERE subject = $4 AND (hour_start <= $2 OR hour_count < $5) \
             AND (day_start <= $3 OR day_count < $6) AND last_at <= $7";
        const READ: &str = "SELECT hour_start, hour_count, day_start, day_count, last_at \
             FROM identity_rate_limits WHERE subject = $1";
        let key = subject_key(counted, subject);
        let at = now.timestamp_micros();
        let hour_ago = (now - Duration::hours(1)).timestamp_micros();
        let day_ago = (now - Duration::days(1)).timestamp_micros();
        let per_hour = i64::from(cap.per_hour);
        let per_day = i64::from(cap.per_day);
        let gap_start = (now - gap).timestamp_micros();
        let (taken, row): (u64, Option<CounterRow>) = on_db!(&self.db, pool => {
            sqlx::query(ENSURE).bind(&key).execute(pool).await?;
            let taken = sqlx::query(TAKE)
                .bind(at)
                .bind(hour_ago)
                .bind(day_ago)
                .bind(&key)
                .bind(per_hour)
                .bind(per_day)
                .bind(gap_start)
                .execute(pool)
                .await?
                .rows_affected();
            let row = if taken == 0 {
                sqlx::query_as(READ).bind(&key).fetch_optional(pool).await?
            } else {
                None
            };
            (taken, row)
        });
        if taken > 0 {
            return Ok(Ok(()));
        }
        let (hour_start, _, day_start, day_count, last_at) = row.unwrap_or_default();
        let instant = |micros: i64| DateTime::from_timestamp_micros(micros).unwrap_or(now);
        let reached = if last_at > gap_start {
            CapReached {
                window: GAP,
                limit: 1,
                retry_at: instant(last_at) + gap,
                retry_seconds: 0,
            }
        } else if day_start > day_ago && day_count >= per_day {
            CapReached {
                window: "a day",
                limit: cap.per_day,
                retry_at: instant(day_start) + Duration::days(1),
                retry_seconds: 0,
            }
        } else {
            CapReached {
                window: "an hour",
                limit: cap.per_hour,
                retry_at: instant(hour_start) + Duration::hours(1),
                retry_seconds: 0,
            }
        };
        let retry_seconds = (reached.retry_at - now).num_seconds().max(1);
        Ok(Err(CapReached {
            retry_seconds,
            ..reached
        }))
    }

    // --- passport scans ------------------------------------------------------------------

    /// Stores a sealed scan awaiting review (a repeat upload of the same scan waits again).
    pub async fn put_scan(
        &self,
        patient_id: Uuid,
        sha256: &str,
        size: usize,
        format: ScanFormat,
        key_id: &str,
        sealed: &Sealed,
        now: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str =
            "INSERT INTO passport_scans (patient_id, sha256, size, format, key_id, nonce, \
             ciphertext, uploaded_at, review_state) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending') \
             ON CONFLICT (patient_id, sha256) DO UPDATE SET review_state = 'pending', \
             uploaded_at = excluded.uploaded_at";
        let patient = patient_id.to_string();
        on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(&patient)
                .bind(sha256)
                .bind(size as i64)
                .bind(format.as_str())
                .bind(key_id)
                .bind(&sealed.nonce)
                .bind(&sealed.ciphertext)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Deletes `patient_id`'s scans other than `sha256`, except an approved one.
    pub async fn prune_scans(&self, patient_id: Uuid, sha256: &str) -> Result<(), sqlx::Error> {
        const PRUNE: &str = "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 <> $2 \
             AND review_state <> 'approved'";
        let patient = patient_id.to_string();
        on_db!(&self.db, pool => {
            sqlx::query(PRUNE).bind(&patient).bind(sha256).execute(pool).await?;
        });
        Ok(())
    }

    /// Marks scan `sha256` approved and deletes every other scan of `patient_id`.
    pub async fn approve_scan(&self, patient_id: Uuid, sha256: &str) -> Result<(), sqlx::Error> {
        const APPROVE: &str =
            "UPDATE passport_scans SET review_state = 'approved' WHERE patient_id = $1 AND sha256 = $2";
        const DROP_OTHERS: &str =
            "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 <> $2";
        let patient = patient_id.to_string();
        on_db!(&self.db, pool => {
            sqlx::query(APPROVE).bind(&patient).bind(sha256).execute(pool).await?;
            sqlx::query(DROP_OTHERS).bind(&patient).bind(sha256).execute(pool).await?;
        });
        Ok(())
    }

    /// Deletes scan `sha256` of `patient_id`.
    pub async fn drop_scan(&self, patient_id: Uuid, sha256: &str) -> Result<(), sqlx::Error> {
        const DROP: &str = "DELETE FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        let patient = patient_id.to_string();
        on_db!(&self.db, pool => {
            sqlx::query(DROP).bind(&patient).bind(sha256).execute(pool).await?;
        });
        Ok(())
    }

    /// Whether scan `sha256` of `patient_id` is stored.
    pub async fn scan_stored(&self, patient_id: Uuid, sha256: &str) -> Result<bool, sqlx::Error> {
        const SQL: &str =
            "SELECT count(*) FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        let patient = patient_id.to_string();
        let n: i64 = on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL).bind(&patient).bind(sha256).fetch_one(pool).await?
        });
        Ok(n > 0)
    }

    /// Scans stored as awaiting review, oldest first: `limit` from `offset`.
    pub async fn pending_scans(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<Vec<PendingScan>, sqlx::Error> {
        const SQL: &str =
            "SELECT patient_id, sha256, size, format, uploaded_at FROM passport_scans \
             WHERE review_state = $1 ORDER BY uploaded_at, patient_id LIMIT $2 OFFSET $3";
        let rows: Vec<(String, String, i64, String, i64)> = on_db!(&self.db, pool => {
            sqlx::query_as(SQL)
                .bind(SCAN_PENDING)
                .bind(limit as i64)
                .bind(offset as i64)
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter_map(|(patient, sha256, size, format, uploaded_at)| {
                Some(PendingScan {
                    patient_id: Uuid::parse_str(&patient).ok()?,
                    sha256,
                    size: u64::try_from(size).unwrap_or(0),
                    format: ScanFormat::parse(&format).unwrap_or(ScanFormat::Pdf),
                    uploaded_at: DateTime::from_timestamp_micros(uploaded_at).unwrap_or_default(),
                })
            })
            .collect())
    }

    /// The format of scan `sha256` when it awaits review or was approved.
    pub async fn reviewable_scan_format(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<ScanFormat>, sqlx::Error> {
        const SQL: &str =
            "SELECT format FROM passport_scans WHERE patient_id = $1 AND sha256 = $2 \
             AND review_state IN ($3, $4)";
        let patient = patient_id.to_string();
        let format: Option<String> = on_db!(&self.db, pool => {
            sqlx::query_scalar(SQL)
                .bind(&patient)
                .bind(sha256)
                .bind(SCAN_PENDING)
                .bind(SCAN_APPROVED)
                .fetch_optional(pool)
                .await?
        });
        Ok(format.and_then(|f| ScanFormat::parse(&f)))
    }

    /// The sealed bytes of scan `sha256`, if stored.
    pub async fn sealed_scan(
        &self,
        patient_id: Uuid,
        sha256: &str,
    ) -> Result<Option<Sealed>, sqlx::Error> {
        const SQL: &str =
            "SELECT nonce, ciphertext FROM passport_scans WHERE patient_id = $1 AND sha256 = $2";
        let patient = patient_id.to_string();
        let row: Option<(Vec<u8>, Vec<u8>)> = on_db!(&self.db, pool => {
            sqlx::query_as(SQL).bind(&patient).bind(sha256).fetch_optional(pool).await?
        });
        Ok(row.map(|(nonce, ciphertext)| Sealed { nonce, ciphertext }))
    }

    // --- phone codes ---------------------------------------------------------------------

    /// When the outstanding code of `patient_id` was sent, if there is one.
    pub async fn code_sent_at(
        &self,
        patient_id: Uuid,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let patient = patient_id.to_string();
        let sent: Option<i64> = on_db!(&self.db, pool => {
            sqlx::query_scalar("SELECT sent_at FROM identity_codes WHERE patient_id = $1")
                .bind(&patient)
                .fetch_optional(pool)
                .await?
        });
        Ok(sent.and_then(DateTime::from_timestamp_micros))
    }

    /// Replaces `patient_id`'s code with a fresh one unless another was sent less
    /// than `resend_after` ago; false when that other one won.
    pub async fn put_code(
        &self,
        patient_id: Uuid,
        phone: &str,
        salt: &str,
        hash: &str,
        now: DateTime<Utc>,
        expires_at: DateTime<Utc>,
        resend_after: Duration,
    ) -> Result<bool, sqlx::Error> {
        const UPSERT: &str = "INSERT INTO identity_codes (patient_id, phone, salt, code_hash, sent_at, \
             expires_at, attempts) VALUES ($1, $2, $3, $4, $5, $6, 0) ON CONFLICT (patient_id) DO UPDATE SET \
             phone = excluded.phone, salt = excluded.salt, code_hash = excluded.code_hash, \
             sent_at = excluded.sent_at, expires_at = excluded.expires_at, attempts = 0 \
             WHERE identity_codes.sent_at <= $7";
        let patient = patient_id.to_string();
        let written = on_db!(&self.db, pool => {
            sqlx::query(UPSERT)
                .bind(&patient)
                .bind(phone)
                .bind(salt)
                .bind(hash)
                .bind(now.timestamp_micros())
                .bind(expires_at.timestamp_micros())
                .bind((now - resend_after).timestamp_micros())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(written > 0)
    }

    /// Counts one try at `patient_id`'s code when fewer than `max_attempts` were
    /// made and it has not expired at `now` (claimed first, so concurrent guesses
    /// cannot exceed the limit), and reads the code.
    pub async fn try_code(
        &self,
        patient_id: Uuid,
        max_attempts: i32,
        now: DateTime<Utc>,
    ) -> Result<CodeTry, sqlx::Error> {
        const CLAIM: &str = "UPDATE identity_codes SET attempts = attempts + 1 \
             WHERE patient_id = $1 AND attempts < $2 AND expires_at > $3";
        const READ: &str = "SELECT phone, salt, code_hash, expires_at, attempts FROM identity_codes WHERE patient_id = $1";
        let patient = patient_id.to_string();
        let (claimed, row): (u64, Option<CodeRow>) = on_db!(&self.db, pool => {
            let claimed = sqlx::query(CLAIM)
                .bind(&patient)
                .bind(max_attempts)
                .bind(now.timestamp_micros())
                .execute(pool)
                .await?
                .rows_affected();
            let row = sqlx::query_as(READ).bind(&patient).fetch_optional(pool).await?;
            (claimed, row)
        });
        Ok(CodeTry {
            counted: claimed > 0,
            code: row.map(
                |(phone, salt, hash, expires_at, attempts)| OutstandingCode {
                    phone,
                    salt,
                    hash,
                    expires_at: DateTime::from_timestamp_micros(expires_at).unwrap_or_default(),
                    attempts,
                },
            ),
        })
    }

    /// Deletes `patient_id`'s outstanding code.
    pub async fn delete_code(&self, patient_id: Uuid) -> Result<(), sqlx::Error> {
        let patient = patient_id.to_string();
        on_db!(&self.db, pool => {
            sqlx::query("DELETE FROM identity_codes WHERE patient_id = $1")
                .bind(&patient)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
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
        on_db!(&self.db, pool => {
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
    async fn lookup(&self, snils: &Snils) -> Result<Option<RegistryEntry>, RegistryError> {
        const SQL: &str = "SELECT surname, first_name, patronymic, birth_date FROM snils_registry WHERE snils = $1";
        let digits = snils.digits();
        let row: Option<(String, String, Option<String>, String)> = on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(&digits)
                .fetch_optional(pool)
                .await
                .and_then(|row| row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))).transpose())
                .map_err(|e| RegistryError(Box::new(e)))?
        });
        row.map(|(surname, first_name, patronymic, birth)| {
            Ok(RegistryEntry {
                snils: snils.clone(),
                surname,
                first_name,
                patronymic,
                birth_date: NaiveDate::parse_from_str(&birth, "%Y-%m-%d")
                    .map_err(|e| RegistryError(Box::new(e)))?,
            })
        })
        .transpose()
    }
}

/// Why no key seals scans.
#[derive(Debug, thiserror::Error)]
pub enum DataKeyError {
    /// Production mode needs a configured key.
    #[error("KABINET_DATA_KEY is required in production mode (32 bytes, hex or base64)")]
    Required,
    /// The development key could not be read or stored.
    #[error("cannot keep the development data key: {0}")]
    Database(#[from] sqlx::Error),
    /// The stored development key is malformed.
    #[error(transparent)]
    Malformed(#[from] BadDataKey),
}

/// The key that seals scans: the configured one, or (development only) a random key
/// generated once and kept in this database.
pub async fn resolve_data_key(
    db: &Db,
    configured: Option<DataKey>,
    production: bool,
) -> Result<DataKey, DataKeyError> {
    if let Some(key) = configured {
        return Ok(key);
    }
    if production {
        return Err(DataKeyError::Required);
    }
    const SELECT: &str = "SELECT key_base64 FROM development_data_keys ORDER BY created_at LIMIT 1";
    const INSERT: &str = "INSERT INTO development_data_keys (key_id, key_base64, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    let fresh = DataKey::random();
    let stored: String = on_db!(db, pool => {
        let existing: Option<String> = sqlx::query_scalar(SELECT).fetch_optional(pool).await?;
        match existing {
            Some(key) => key,
            None => {
                sqlx::query(INSERT)
                    .bind(fresh.id())
                    .bind(fresh.to_base64())
                    .bind(Utc::now().timestamp_micros())
                    .execute(pool)
                    .await?;
                // Another process may have stored its key first: use the oldest.
                sqlx::query_scalar(SELECT).fetch_one(pool).await?
            }
        }
    });
    tracing::warn!("no KABINET_DATA_KEY: passport scans are sealed with a development key kept in the database");
    Ok(DataKey::parse(&stored)?)
}
