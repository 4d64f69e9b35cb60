//! `GET /files/{sha256}?exp=…&sig=…`: a stored file through a signed link,
//! with the bearer token of the account the link was issued to.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::caller::SignedIn;
use super::error::ApiError;
use super::AppState;
use crate::files::{is_sha256_hex, LinkError};

/// Query of a download link.
#[derive(Debug, Deserialize)]
pub struct LinkQuery {
    exp: Option<String>,
    sig: Option<String>,
}

impl From<LinkError> for ApiError {
    fn from(e: LinkError) -> ApiError {
        match e {
            LinkError::BadSignature => {
                ApiError::new(StatusCode::FORBIDDEN, "INVALID_LINK", e.to_string())
            }
            LinkError::Expired => ApiError::new(StatusCode::GONE, "LINK_EXPIRED", e.to_string()),
        }
    }
}

/// The file of a download link.
///
/// 401 without a valid bearer token, 403 for an altered link or another account's (or
/// a patient whose identity is not verified), 410 once expired, 404 for a path that is
/// no SHA-256 or a file that is not stored.
pub(super) async fn download(
    State(state): State<AppState>,
    caller: SignedIn,
    sha256: Result<Path<String>, PathRejection>,
    query: Result<Query<LinkQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(sha256) = sha256.map_err(|_| ApiError::not_found("no such file"))?;
    let Query(query) =
        query.map_err(|e| ApiError::new(StatusCode::FORBIDDEN, "INVALID_LINK", e.body_text()))?;
    if !is_sha256_hex(&sha256) {
        return Err(ApiError::not_found("no such file"));
    }
    let (Some(exp), Some(sig)) = (query.exp, query.sig) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "INVALID_LINK",
            "the download link lacks its 'exp' and 'sig' parameters",
        ));
    };
    let exp = exp
        .parse::<i64>()
        .map_err(|_| ApiError::from(LinkError::BadSignature))?;
    let now = state.services.clock.now();
    state
        .services
        .file_links
        .verify(&sha256, exp, &sig, caller.actor.account_id, now)?;
    // Stored files are medical documents: a patient opens them, like every other
    // medical record, only once their identity is verified.
    if caller.actor.role == kabinet_domain::Role::Patient && !caller.dev {
        let verified = state
            .services
            .identity
            .is_verified(caller.actor.account_id)
            .await
            .map_err(|e| ApiError::internal("cannot check identity verification", e))?;
        if !verified {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "IDENTITY_NOT_VERIFIED",
                "medical documents open once identity verification is complete",
            ));
        }
    }
    let file = state
        .services
        .files
        .load(&sha256)
        .await
        .map_err(|e| ApiError::internal("cannot load a file", e))?
        .ok_or_else(|| ApiError::not_found("no such file"))?;
    let extension = if file.media_type == kabinet_pdf::MEDIA_TYPE {
        "pdf"
    } else {
        "bin"
    };
    let disposition = format!(
        "attachment; filename=\"kabinet-{}.{extension}\"",
        &file.sha256[..12]
    );
    let mut response = (StatusCode::OK, file.bytes).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&file.media_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", file.sha256)) {
        headers.insert(header::ETAG, value);
    }
    Ok(response)
}
