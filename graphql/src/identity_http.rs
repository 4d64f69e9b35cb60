//! `POST /identity/passport-scan`: the passport scan step of identity verification.
//!
//! The body is the file itself (PDF or JPEG, at most 5 MiB), with a bearer token of
//! the patient. The route has its own body limit; anything larger answers 413 with a
//! JSON error. The content decides the type: a disguised or truncated file is refused
//! with a precise code, and nothing is stored.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use kabinet_domain::identity::scan::MAX_SCAN_BYTES;
use kabinet_domain::identity::service::IdentityFailure;
use kabinet_domain::{EventMetadata, Role};

use crate::http::{error_response, request_id, require_caller, AppState};

/// The route's body limit: the largest scan plus a little (the body is the raw file).
pub const BODY_LIMIT: usize = MAX_SCAN_BYTES + 1024;

/// How much of an oversized body is read (and dropped) before answering 413, so
/// ordinary clients see the answer instead of a reset connection. Bodies declared
/// larger than this are answered at once.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

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
    let body = match read_limited(&headers, body).await {
        Ok(Some(body)) => body,
        Ok(None) => return too_large(&request_id),
        Err(message) => {
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
    let services = &state.services;
    let result = services
        .identity
        .upload_scan(
            &meta,
            actor.account_id,
            &body,
            declared,
            services.clock.now(),
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
            let mut response = (
                StatusCode::CREATED,
                Json(serde_json::json!({
                    "sha256": stored.sha256,
                    "size": stored.size,
                })),
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            response
        }
        Err(IdentityFailure::User(errors)) => {
            let status = if errors.iter().any(|e| e.code == "SCAN_TOO_LARGE") {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            let (code, message) = errors
                .first()
                .map(|e| (e.code, e.message.as_str()))
                .unwrap_or(("INVALID_INPUT", "the scan was refused"));
            error_response(status, code, message, &request_id)
        }
        Err(IdentityFailure::Internal(cause)) => {
            tracing::error!(request_id = %request_id, error = %cause, "passport scan upload failed");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL",
                &format!("internal error (request id {request_id})"),
                &request_id,
            )
        }
    }
}
