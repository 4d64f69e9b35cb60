//! The small routes: the development console, prescription verification,
//! probes and metrics, and the answers to unknown paths and methods.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;

use super::caller::BearerToken;
use super::error::{log_internal, ApiError};
use super::AppState;

/// The development console at `/`: a page of our own that needs nothing
/// from the internet (no CDN), to try queries with a bearer token.
pub(super) async fn console(State(state): State<AppState>) -> Result<Response, ApiError> {
    if !state.console {
        return Err(not_found().await);
    }
    Ok((
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        )],
        Html(include_str!("../../assets/console.html")),
    )
        .into_response())
}

/// Whether the client prefers a page to JSON: its `Accept` header ranks
/// `text/html` above `application/json` (a browser); without a header, or at
/// a tie, the answer is JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefersHtml(pub bool);

impl<S: Send + Sync> FromRequestParts<S> for PrefersHtml {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<PrefersHtml, Self::Rejection> {
        let accept = parts
            .headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok());
        Ok(PrefersHtml(accept.is_some_and(ranks_html_first)))
    }
}

fn ranks_html_first(accept: &str) -> bool {
    let mut html = 0.0_f32;
    let mut json = 0.0_f32;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/html" => html = html.max(q),
            "application/json" => json = json.max(q),
            _ => {}
        }
    }
    html > json
}

/// Public verification of a printed prescription's QR code: no sign-in, and
/// only what a pharmacist needs. A person's browser gets a page in Russian;
/// programs get JSON. A token that does not verify answers
/// `{"result": "invalid"}`; a database fault answers 503, never 500.
pub(super) async fn verify_prescription(
    State(state): State<AppState>,
    Path(token): Path<String>,
    PrefersHtml(page): PrefersHtml,
) -> Response {
    let mut response = match crate::schema::prescriptions::verify(&state.services, &token).await {
        Ok(answer) if page => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            )],
            crate::schema::prescriptions::verification_page(&answer),
        )
            .into_response(),
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            log_internal("prescription verification failed", e);
            if page {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/html; charset=utf-8"),
                    )],
                    "<!DOCTYPE html>\n<html lang=\"ru\"><head><meta charset=\"utf-8\">\
                     <title>Проверка рецепта</title></head><body><h1>Проверка рецепта сейчас \
                     недоступна</h1><p>Попробуйте ещё раз через минуту.</p></body></html>\n",
                )
                    .into_response()
            } else {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "VERIFICATION_UNAVAILABLE",
                    "verification is unavailable; try again",
                )
                .into_response()
            }
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("accept"));
    if page {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"),
        );
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
    }
    response
}

/// Liveness: the process answers.
pub(super) async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
pub(super) async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    if state.services.db.ping().await {
        Ok("ready")
    } else {
        Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "database unavailable",
        ))
    }
}

/// Who may read `/metrics`: with a metrics token configured, a caller with
/// `Authorization: Bearer <token>`; without one, anyone in development and
/// no one in production.
fn metrics_refusal(state: &AppState, given: Option<&str>) -> Option<ApiError> {
    match &state.metrics_token {
        Some(token) if given.is_some_and(|given| token.matches(given)) => None,
        Some(_) => {
            crate::metrics::observe_unauthenticated();
            Some(ApiError::unauthenticated(
                "the metrics need 'Authorization: Bearer <metrics token>' (KABINET_METRICS_TOKEN)",
            ))
        }
        None if state.production => Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "METRICS_DISABLED",
            "metrics are not served in production mode without a metrics token: set KABINET_METRICS_TOKEN",
        )),
        None => None,
    }
}

/// Prometheus metrics.
pub(super) async fn metrics(
    State(state): State<AppState>,
    BearerToken(given): BearerToken,
) -> Result<Response, ApiError> {
    if let Some(refused) = metrics_refusal(&state, given.as_deref()) {
        return Err(refused);
    }
    let text = crate::metrics::render(&state.services.db, &state.services.projector).await;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

/// Any path that is not a route.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found("not found: no such route")
}

/// A route asked with a method it does not take.
pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "this route does not take that method",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_get_the_page_and_programs_json() {
        assert!(ranks_html_first(
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        ));
        assert!(!ranks_html_first("application/json"));
        assert!(!ranks_html_first("text/html;q=0.5, application/json"));
        assert!(!ranks_html_first("*/*"));
    }
}
