//! Passport scans over plain HTTP.
//!
//! `POST /identity/passport-scan`: the scan step of identity verification. The body
//! is the file itself (PDF, JPEG or PNG, at most 5 MiB), with a bearer token of the
//! patient. Only a bounded number of uploads are read at once (more are answered 503
//! with `Retry-After` at once, never queued), each body must arrive within a time
//! limit (else 408), and each person may store only so many scans an hour and a day
//! (else 429 with `Retry-After`). The content decides the type: a disguised,
//! truncated or empty file is refused with a precise code, and nothing is stored. A
//! stored scan waits for a reviewer; it counts only once approved.
//!
//! `GET /identity/passport-scans/{patient}/{sha256}`: the scan itself, for reviewers
//! (registrars and administrators) only, while it awaits review or once approved.
//! Every download is recorded as a read of the patient's data.

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use kabinet_app::identity::IdentityFailure;
use kabinet_domain::access::MedicalRead;
use kabinet_domain::identity::scan::MAX_SCAN_BYTES;
use kabinet_domain::{EventMetadata, Role};
use uuid::Uuid;

use super::caller::SignedIn;
use super::error::ApiError;
use super::request_id::RequestId;
use super::AppState;
use crate::schema::identity::REVIEWERS;

/// The route's body limit: the largest scan plus a little (the body is the raw file).
pub const BODY_LIMIT: usize = MAX_SCAN_BYTES + 1024;

/// How much of an oversized body is read (and dropped) before answering 413, so
/// ordinary clients see the answer instead of a reset connection. Bodies declared
/// larger than this are answered at once.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// What the client says about an upload: its declared length and type, and
/// its idempotency key (`Idempotency-Key`, printable, at most 128 characters).
#[derive(Debug, Clone, Default)]
pub struct UploadHeaders {
    pub content_length: Option<usize>,
    pub content_type: Option<String>,
    pub idempotency_key: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for UploadHeaders {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<UploadHeaders, Self::Rejection> {
        let text = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        Ok(UploadHeaders {
            content_length: text(header::CONTENT_LENGTH.as_str()).and_then(|v| v.parse().ok()),
            content_type: text(header::CONTENT_TYPE.as_str()),
            idempotency_key: text("idempotency-key").filter(|k| {
                !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic())
            }),
        })
    }
}

/// The body, or `None` when it is larger than [`BODY_LIMIT`].
async fn read_limited(declared: Option<usize>, body: Body) -> Result<Option<Vec<u8>>, axum::Error> {
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(BODY_LIMIT));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        seen += chunk.len();
        if seen > DRAIN_LIMIT {
            return Ok(None);
        }
        if seen <= BODY_LIMIT {
            bytes.extend_from_slice(&chunk);
        }
    }
    Ok((seen <= BODY_LIMIT).then_some(bytes))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SCAN_TOO_LARGE",
        format!("the scan must be at most {MAX_SCAN_BYTES} bytes (5 MiB)"),
    )
}

/// Checks, seals and stores a passport scan of the calling patient.
pub(super) async fn upload_passport_scan(
    State(state): State<AppState>,
    caller: SignedIn,
    request_id: RequestId,
    upload: UploadHeaders,
    body: Body,
) -> Result<Response, ApiError> {
    let actor = caller.actor;
    if actor.role != Role::Patient {
        return Err(ApiError::forbidden(
            "only patients upload their passport scan",
        ));
    }
    let services = &state.services;
    // Held until the answer is built: the body is in memory until then.
    let _permit = services.identity.upload_permit().map_err(|busy| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UPLOADS_BUSY",
            busy.to_string(),
        )
        .retry_after(1)
    })?;
    let timeout = services.identity.limits().upload_read_timeout;
    let body = match tokio::time::timeout(timeout, read_limited(upload.content_length, body)).await
    {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "SCAN_UPLOAD_TIMEOUT",
                format!(
                    "the scan did not arrive within {} ms; send it again",
                    timeout.as_millis()
                ),
            ))
        }
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return Err(too_large()),
        Ok(Err(e)) => return Err(ApiError::bad_request(e.to_string())),
    };
    if body.len() > MAX_SCAN_BYTES {
        return Err(too_large());
    }
    let meta = EventMetadata::new(actor.clone(), request_id.into_string())
        .with_idempotency_key(upload.idempotency_key);
    let now = services.clock.now();
    let result = services
        .identity
        .upload_scan(
            &meta,
            actor.account_id,
            &body,
            upload.content_type.as_deref(),
            now,
        )
        .await;
    match result {
        Ok((outcome, stored)) => {
            if let Some(order) = outcome.last_order() {
                let names = [kabinet_projections::account_journal::NAME];
                let _ = services
                    .projector
                    .wait_for(&names, order, services.read_your_writes)
                    .await;
            }
            Ok((
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "sha256": stored.sha256,
                    "size": stored.size,
                    "review": "AWAITING_REVIEW",
                })),
            )
                .into_response())
        }
        Err(IdentityFailure::User(errors)) => {
            let (code, message) = errors
                .first()
                .map(|e| (e.code, e.message.clone()))
                .unwrap_or(("INVALID_INPUT", "the scan was refused".to_string()));
            let status = match code {
                "SCAN_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
                "SCAN_LIMIT_REACHED" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let wait = retry_seconds(&message);
            let error = ApiError::new(status, code, message);
            Err(if status == StatusCode::TOO_MANY_REQUESTS {
                error.retry_after(wait)
            } else {
                error
            })
        }
        Err(IdentityFailure::Internal(cause)) => {
            Err(ApiError::internal("a passport scan upload failed", cause))
        }
    }
}

/// The seconds a cap's message says to wait ("… (in N s)").
fn retry_seconds(message: &str) -> u64 {
    message
        .rsplit("(in ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(60)
}

/// The scan itself, for a reviewer.
pub(super) async fn download_passport_scan(
    State(state): State<AppState>,
    caller: SignedIn,
    request_id: RequestId,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let actor = caller.actor;
    if !REVIEWERS.contains(&actor.role) {
        return Err(ApiError::forbidden(
            "only registrars and administrators review passport scans",
        ));
    }
    let not_found = || ApiError::not_found("no such scan awaits review or was approved");
    let Path((patient, sha256)) = path.map_err(|_| not_found())?;
    let patient_id = crate::schema::ids::decode_as(&patient, "Account")
        .or_else(|| Uuid::parse_str(&patient).ok());
    let (Some(patient_id), true) = (
        patient_id,
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
    ) else {
        return Err(not_found());
    };
    let services = &state.services;
    let (bytes, format) = services
        .identity
        .open_scan_for_review(patient_id, &sha256.to_ascii_lowercase())
        .await
        .map_err(|cause| ApiError::internal("cannot open a passport scan", cause))?
        .ok_or_else(not_found)?;
    let read = MedicalRead {
        patient_id,
        reader: actor.clone(),
        what: "passport_scan".into(),
        object_id: None,
        request_id: request_id.into_string(),
        at: services.clock.now(),
    };
    services
        .access
        .record(&read)
        .await
        .map_err(|e| ApiError::internal("cannot record a read of a passport scan", e))?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_comes_from_the_cap_message() {
        assert_eq!(retry_seconds("at most 3 scans an hour (in 1200 s)"), 1200);
        assert_eq!(retry_seconds("no number here"), 60);
    }
}
