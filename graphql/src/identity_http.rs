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
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use kabinet_app::identity::IdentityFailure;
use kabinet_domain::access::MedicalRead;
use kabinet_domain::identity::scan::MAX_SCAN_BYTES;
use kabinet_domain::{EventMetadata, Role};
use uuid::Uuid;

use crate::http::{error_response, request_id, require_caller, AppState};

/// The route's body limit: the largest scan plus a little (the body is the raw file).
pub const BODY_LIMIT: usize = MAX_SCAN_BYTES + 1024;

/// How much of an oversized body is read (and dropped) before answering 413, so
/// ordinary clients see the answer instead of a reset connection. Bodies declared
/// larger than this are answered at once.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

/// Roles that review passport scans.
pub const REVIEWERS: &[Role] = &[Role::Registrar, Role::Admin];

/// The body, or `None` when it is larger than [`BODY_LIMIT`].
async fn read_limited(headers: &HeaderMap, body: Body) -> Result<Option<Vec<u8>>, String> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_LIMIT) {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0).min(BODY_LIMIT));
    let mut seen = 0usize;
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
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

fn too_large(request_id: &str) -> Response {
    error_response(
        StatusCode::PAYLOAD_TOO_LARGE,
        "SCAN_TOO_LARGE",
        &format!("the scan must be at most {MAX_SCAN_BYTES} bytes (5 MiB)"),
        request_id,
    )
}

fn with_retry_after(mut response: Response, seconds: i64) -> Response {
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn internal_error(request_id: &str, cause: &(impl std::fmt::Display + ?Sized)) -> Response {
    tracing::error!(request_id = %request_id, error = %cause, "passport scan request failed");
    error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "INTERNAL",
        &format!("internal error (request id {request_id})"),
        request_id,
    )
}

/// Checks, seals and stores a passport scan of the calling patient.
pub async fn upload_passport_scan(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let request_id = request_id(&headers);
    let actor = match require_caller(&state, &headers, &request_id).await {
        Ok(actor) => actor,
        Err(response) => return response,
    };
    if actor.role != Role::Patient {
        return error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "only patients upload their passport scan",
            &request_id,
        );
    }
    let services = &state.services;
    // Held until the answer is built: the body is in memory until then.
    let _permit = match services.identity.upload_permit() {
        Ok(permit) => permit,
        Err(busy) => {
            return with_retry_after(
                error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "UPLOADS_BUSY",
                    &busy.to_string(),
                    &request_id,
                ),
                1,
            )
        }
    };
    let timeout = services.identity.limits().upload_read_timeout;
    let body = match tokio::time::timeout(timeout, read_limited(&headers, body)).await {
        Err(_) => {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "SCAN_UPLOAD_TIMEOUT",
                &format!(
                    "the scan did not arrive within {} ms; send it again",
                    timeout.as_millis()
                ),
                &request_id,
            )
        }
        Ok(Ok(Some(body))) => body,
        Ok(Ok(None)) => return too_large(&request_id),
        Ok(Err(message)) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                &message,
                &request_id,
            )
        }
    };
    if body.len() > MAX_SCAN_BYTES {
        return too_large(&request_id);
    }
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .filter(|k| !k.is_empty() && k.len() <= 128 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_string);
    let meta = EventMetadata::new(actor.clone(), request_id.clone()).with_idempotency_key(key);
    let now = services.clock.now();
    let result = services
        .identity
        .upload_scan(&meta, actor.account_id, &body, declared, now)
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
            let mut response = (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "sha256": stored.sha256,
                    "size": stored.size,
                    "review": "AWAITING_REVIEW",
                })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            response
        }
        Err(IdentityFailure::User(errors)) => {
            let (code, message) = errors
                .first()
                .map(|e| (e.code, e.message.as_str()))
                .unwrap_or(("INVALID_INPUT", "the scan was refused"));
            let status = match code {
                "SCAN_TOO_LARGE" => StatusCode::PAYLOAD_TOO_LARGE,
                "SCAN_LIMIT_REACHED" => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            let response = error_response(status, code, message, &request_id);
            if status == StatusCode::TOO_MANY_REQUESTS {
                with_retry_after(response, retry_seconds(message))
            } else {
                response
            }
        }
        Err(IdentityFailure::Internal(cause)) => internal_error(&request_id, &cause),
    }
}

/// The seconds a cap's message says to wait ("… (in N s)").
fn retry_seconds(message: &str) -> i64 {
    message
        .rsplit("(in ")
        .next()
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(60)
}

/// The scan itself, for a reviewer.
pub async fn download_passport_scan(
    State(state): State<AppState>,
    Path((patient, sha256)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let request_id = request_id(&headers);
    let actor = match require_caller(&state, &headers, &request_id).await {
        Ok(actor) => actor,
        Err(response) => return response,
    };
    if !REVIEWERS.contains(&actor.role) {
        return error_response(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "only registrars and administrators review passport scans",
            &request_id,
        );
    }
    let not_found = || {
        error_response(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "no such scan awaits review or was approved",
            &request_id,
        )
    };
    let patient_id = crate::schema::ids::decode_as(&patient, "Account")
        .or_else(|| Uuid::parse_str(&patient).ok());
    let (Some(patient_id), true) = (
        patient_id,
        sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()),
    ) else {
        return not_found();
    };
    let services = &state.services;
    let opened = match services
        .identity
        .open_scan_for_review(patient_id, &sha256.to_ascii_lowercase())
        .await
    {
        Ok(Some(opened)) => opened,
        Ok(None) => return not_found(),
        Err(cause) => return internal_error(&request_id, &cause),
    };
    let read = MedicalRead {
        patient_id,
        reader: actor.clone(),
        what: "passport_scan".into(),
        object_id: None,
        request_id: request_id.clone(),
        at: services.clock.now(),
    };
    if let Err(e) = services.access.record(&read).await {
        return internal_error(&request_id, &e.to_string());
    }
    let (bytes, format) = opened;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.media_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", value);
    }
    response
}
