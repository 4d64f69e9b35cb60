//! Content-addressed file store and short-lived signed download links.
//!
//! Files (rendered PDFs) are kept by the SHA-256 of their bytes in the `files` table, so
//! an event that records a hash pins exactly one content. A download link
//! `/files/{sha256}?exp=…&sig=…` is an HMAC-SHA256 over the hash, the expiry and the
//! account it was issued to; the route ([`crate::http::files`]) also wants that
//! account's bearer token, so a leaked link alone opens nothing.

use chrono::{DateTime, Duration, Utc};
use hmac::{Hmac, Mac};
use kabinet_domain::{on_db, Db};
use sha2::{Digest, Sha256};
use uuid::Uuid;

type HmacSha256 = Hmac<Sha256>;

/// How long a download link stays valid by default.
pub const DEFAULT_LINK_TTL: Duration = Duration::minutes(10);

/// A stored file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// Errors of the file store.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file store: {0}")]
    Database(#[from] sqlx::Error),
}

/// The content-addressed store over the `files` table.
#[derive(Debug, Clone)]
pub struct FileStore {
    db: Db,
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `text` looks like a hash this store hands out (64 lower-case hex digits).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl FileStore {
    /// A store over `db` (migration 0005 creates its table).
    pub fn new(db: Db) -> Self {
        FileStore { db }
    }

    /// Stores `bytes` and returns their SHA-256; storing the same bytes again changes nothing.
    pub async fn store(&self, bytes: &[u8], media_type: &str) -> Result<String, FileError> {
        let sha256 = sha256_hex(bytes);
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        on_db!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO files (sha256, media_type, size, bytes) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (sha256) DO NOTHING",
            )
            .bind(&sha256)
            .bind(media_type)
            .bind(size)
            .bind(bytes)
            .execute(pool)
            .await
            .map(|_| ())?
        });
        Ok(sha256)
    }

    /// The file with hash `sha256`, if stored.
    pub async fn load(&self, sha256: &str) -> Result<Option<StoredFile>, FileError> {
        let row: Option<(String, Vec<u8>)> = on_db!(&self.db, pool => {
            sqlx::query_as("SELECT media_type, bytes FROM files WHERE sha256 = $1")
                .bind(sha256)
                .fetch_optional(pool)
                .await?
        });
        Ok(row.map(|(media_type, bytes)| StoredFile {
            sha256: sha256.to_string(),
            media_type,
            bytes,
        }))
    }
}

/// Why a download link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("the download link is not valid: it was altered or issued to another account")]
    BadSignature,
    #[error("the download link has expired: ask for the document again to get a fresh link")]
    Expired,
}

/// Signs and checks download links with a key derived from the server's signing secret.
#[derive(Clone)]
pub struct FileLinks {
    key: [u8; 32],
}

impl std::fmt::Debug for FileLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FileLinks([redacted])")
    }
}

impl FileLinks {
    /// Links signed with a key derived from `secret` (the bearer-token secret), so a
    /// link signature never doubles as a token signature.
    pub fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; 32];
        if let Ok(mut mac) = HmacSha256::new_from_slice(secret) {
            mac.update(b"kabinet/file-download-links/v1");
            key.copy_from_slice(&mac.finalize().into_bytes());
        }
        FileLinks { key }
    }

    fn mac(&self, sha256: &str, expires: i64, account_id: Uuid) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail for 32 bytes.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(format!("{sha256}\n{expires}\n{account_id}").as_bytes());
        mac
    }

    /// The path and query of a link to file `sha256` for `account_id`, valid until `expires`.
    pub fn download_link(&self, sha256: &str, account_id: Uuid, expires: DateTime<Utc>) -> String {
        let exp = expires.timestamp();
        let sig = hex::encode(self.mac(sha256, exp, account_id).finalize().into_bytes());
        format!("/files/{sha256}?exp={exp}&sig={sig}")
    }

    /// Checks a link presented by `account_id` at `now`.
    pub fn verify(
        &self,
        sha256: &str,
        exp: i64,
        sig: &str,
        account_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let sig = hex::decode(sig).map_err(|_| LinkError::BadSignature)?;
        // The signature comes first: an expiry is trusted only once it is known to be ours.
        self.mac(sha256, exp, account_id)
            .verify_slice(&sig)
            .map_err(|_| LinkError::BadSignature)?;
        if now.timestamp() >= exp {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_verifies_only_unaltered_for_its_account_before_expiry() {
        let links = FileLinks::new(b"0123456789abcdef0123456789abcdef");
        let sha = sha256_hex(b"document");
        let account = Uuid::now_v7();
        let now = Utc::now();
        let link = links.download_link(&sha, account, now + Duration::minutes(5));
        let query = link.split_once('?').map(|(_, q)| q).unwrap_or_default();
        let mut exp = 0;
        let mut sig = "";
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("exp", v)) => exp = v.parse().expect("exp"),
                Some(("sig", v)) => sig = v,
                _ => {}
            }
        }
        assert_eq!(links.verify(&sha, exp, sig, account, now), Ok(()));
        assert_eq!(
            links.verify(&sha, exp, sig, Uuid::now_v7(), now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            links.verify(&sha, exp + 60, sig, account, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            links.verify(&sha256_hex(b"other"), exp, sig, account, now),
            Err(LinkError::BadSignature)
        );
        assert_eq!(
            links.verify(&sha, exp, sig, account, now + Duration::minutes(6)),
            Err(LinkError::Expired)
        );
        let other_key = FileLinks::new(b"fedcba9876543210fedcba9876543210");
        assert_eq!(
            other_key.verify(&sha, exp, sig, account, now),
            Err(LinkError::BadSignature)
        );
    }
}
