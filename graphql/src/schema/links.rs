//! Download links in one form everywhere: a path on this server, relative to the
//! API's origin, fetched with the caller's bearer token; signed links also say
//! until when they work.

use async_graphql::SimpleObject;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::context::Services;

/// Where to download a file.
#[derive(Debug, Clone, SimpleObject)]
pub struct DownloadLink {
    /// Path and query on the API's origin, e.g. `/files/<sha256>?exp=…&sig=…`
    /// (`GET` with the same bearer token).
    pub path: String,
    /// When a signed link stops working; `null` for a path that needs only the token.
    pub expires_at: Option<DateTime<Utc>>,
}

impl DownloadLink {
    /// A signed link to stored file `sha256` for `account`, valid until `expires_at`.
    pub fn signed(s: &Services, sha256: &str, account: Uuid, expires_at: DateTime<Utc>) -> Self {
        DownloadLink {
            path: s.file_links.download_link(sha256, account, expires_at),
            expires_at: Some(expires_at),
        }
    }

    /// A path that needs only the bearer token (and the role it checks).
    pub fn unsigned(path: String) -> Self {
        DownloadLink {
            path,
            expires_at: None,
        }
    }
}
