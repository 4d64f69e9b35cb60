//! What browsers need from the API: CORS for pages of allowed origins, and
//! response headers that keep personal data out of caches and frames.

use std::time::Duration;

use axum::http::{header, HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// Web origins whose pages may call the API.
#[derive(Debug, Clone)]
pub struct BrowserOrigins {
    listed: Vec<HeaderValue>,
    /// Development: any `http://localhost:PORT` and `http://127.0.0.1:PORT`.
    local: bool,
}

/// A configured origin that is not `scheme://host[:port]`.
#[derive(Debug, thiserror::Error)]
#[error("--cors-origin '{0}' is not an origin: write scheme://host[:port], e.g. https://kabinet.example.ru (no path, no '*')")]
pub struct BadOrigin(String);

impl BrowserOrigins {
    /// The `listed` origins, and in development the local ones too.
    pub fn new(listed: &[String], development: bool) -> Result<BrowserOrigins, BadOrigin> {
        let listed = listed
            .iter()
            .map(|o| o.trim().trim_end_matches('/'))
            .filter(|o| !o.is_empty())
            .map(|o| {
                if is_origin(o) {
                    HeaderValue::from_str(o).map_err(|_| BadOrigin(o.to_string()))
                } else {
                    Err(BadOrigin(o.to_string()))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BrowserOrigins {
            listed,
            local: development,
        })
    }

    /// Whether a page of `origin` may call the API.
    pub fn allows(&self, origin: &HeaderValue) -> bool {
        self.listed.iter().any(|o| o == origin)
            || (self.local && origin.to_str().is_ok_and(is_local_origin))
    }
}

/// `http(s)://host[:port]` with a plain host name or IPv4 address.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
    else {
        return false;
    };
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    host_ok && port.is_none_or(is_port)
}

fn is_port(port: &str) -> bool {
    !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// `http://localhost[:port]` or `http://127.0.0.1[:port]`.
fn is_local_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("http://") else {
        return false;
    };
    let (host, port) = match rest.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (rest, None),
    };
    matches!(host, "localhost" | "127.0.0.1") && port.is_none_or(is_port)
}

/// CORS for pages of `origins`: GraphQL over POST with a bearer token, the
/// request id and `Retry-After` readable by the page; preflights cached 10 minutes.
pub fn cors(origins: BrowserOrigins) -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::predicate(move |origin, _| {
            origins.allows(origin)
        }))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([HeaderName::from_static("x-request-id"), header::RETRY_AFTER])
        .allow_credentials(true)
        .max_age(Duration::from_secs(600))
}

/// Headers on every response unless a route set its own: nothing is sniffed,
/// framed, cached or sent on as a referrer (answers carry personal and medical
/// data, and download links carry their signature).
pub fn with_protective_headers(router: axum::Router) -> axum::Router {
    let header = |name: HeaderName, value: &'static str| {
        SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value))
    };
    router
        .layer(header(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(header(header::X_FRAME_OPTIONS, "DENY"))
        .layer(header(header::CACHE_CONTROL, "no-store"))
        .layer(header(header::REFERRER_POLICY, "no-referrer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(origins: &BrowserOrigins, origin: &str) -> bool {
        origins.allows(&HeaderValue::from_str(origin).expect("header"))
    }

    #[test]
    fn development_allows_local_pages_and_the_listed_origins() {
        let dev = BrowserOrigins::new(&["https://kabinet.example.ru".into()], true).expect("ok");
        assert!(allows(&dev, "http://localhost:5173"));
        assert!(allows(&dev, "http://127.0.0.1:8081"));
        assert!(allows(&dev, "http://localhost"));
        assert!(allows(&dev, "https://kabinet.example.ru"));
        assert!(!allows(&dev, "http://localhost.evil.example"));
        assert!(!allows(&dev, "http://localhost:80@evil.example"));
        assert!(!allows(&dev, "https://evil.example"));
        assert!(!allows(&dev, "null"));
    }

    #[test]
    fn production_allows_only_the_listed_origins() {
        let prod = BrowserOrigins::new(&["https://kabinet.example.ru/".into()], false).expect("ok");
        assert!(allows(&prod, "https://kabinet.example.ru"));
        assert!(!allows(&prod, "http://localhost:5173"));
        assert!(!allows(&prod, "https://kabinet.example.ru.evil.example"));
    }

    #[test]
    fn malformed_origins_are_refused() {
        for bad in [
            "*",
            "kabinet.example.ru",
            "https://kabinet.example.ru/app",
            "ftp://x.ru",
        ] {
            assert!(BrowserOrigins::new(&[bad.into()], false).is_err(), "{bad}");
        }
    }
}
