//! Who is calling: the bearer token of a request turned into an actor once,
//! by extractors every route uses, so that no handler reads headers for it.
//!
//! - [`Caller`]: anonymous without an `Authorization` header; a token that is
//!   malformed, expired, revoked, of a closed account or (in production) a
//!   development token is refused with 401 `UNAUTHENTICATED`.
//! - [`SignedIn`]: the same, and a request without a token is refused too.
//! - [`ClientIp`]: the client's address (the peer, or behind a trusted proxy
//!   the last `X-Forwarded-For` entry).

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use kabinet_domain::Actor;
use uuid::Uuid;

use super::error::{log_internal, ApiError};
use super::AppState;
use crate::auth::VerifiedToken;

/// The message for a token that does not verify.
pub(crate) const INVALID_TOKEN: &str =
    "the bearer token is malformed, expired or not signed by this server";

/// A caller whose token was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub actor: Actor,
    /// The sign-in session of the token; `None` for development tokens.
    pub session_id: Option<Uuid>,
    /// A development token, exempt from the identity-verification gate.
    pub dev: bool,
}

/// The caller of a request: signed in, or anonymous (no token at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller(pub Option<SignedIn>);

/// Why a token was not accepted.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// HTTP 401 with this message.
    Unauthenticated(&'static str),
    /// The session could not be checked (already logged).
    Internal,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::Unauthenticated(message) => ApiError::unauthenticated(message),
            Refusal::Internal => ApiError::masked(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header; `Ok(None)` without
/// the header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, &'static str> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| "the Authorization header is not valid text")?;
    value
        .strip_prefix("Bearer ")
        .map(|token| Some(token.trim()))
        .ok_or("the Authorization header must be 'Bearer <token>'")
}

/// Checks a bearer token: its signature, then its standing.
pub(crate) async fn authenticate(state: &AppState, token: &str) -> Result<SignedIn, Refusal> {
    let verified = state
        .keys
        .verify_token(token)
        .map_err(|_| Refusal::Unauthenticated(INVALID_TOKEN))?;
    standing(state, verified).await
}

/// Checks a token whose signature is verified: its session (live, account
/// active) or, for a development token, the account's state. A session
/// token speaks with the role and organisation its session row holds (copied
/// from the account's record at sign-in), never with its claims.
pub(crate) async fn standing(
    state: &AppState,
    verified: VerifiedToken,
) -> Result<SignedIn, Refusal> {
    let store = state.services.accounts.store();
    let internal = |e: sqlx::Error| {
        log_internal("cannot check a session", e);
        Refusal::Internal
    };
    match verified.session_id {
        Some(session_id) => {
            let session = store.session(session_id).await.map_err(internal)?;
            let now = state.services.clock.now();
            match session {
                Some(s) if s.live(now) && s.account_id == verified.actor.account_id => {
                    let role = s.role.parse::<kabinet_domain::Role>().map_err(|e| {
                        log_internal("a session holds an unknown role", e);
                        Refusal::Internal
                    })?;
                    Ok(SignedIn {
                        actor: Actor {
                            account_id: s.account_id,
                            role,
                            organisation_id: s.organisation_id,
                        },
                        session_id: Some(session_id),
                        dev: false,
                    })
                }
                _ => Err(Refusal::Unauthenticated(
                    "the session has ended (signed out, expired or revoked); sign in again",
                )),
            }
        }
        None if state.production => Err(Refusal::Unauthenticated(
            "development tokens are not accepted in production mode; sign in",
        )),
        None => {
            // A development token speaks for its subject; if that subject has
            // an account, the account's state decides.
            match store
                .status(verified.actor.account_id)
                .await
                .map_err(internal)?
            {
                None | Some(kabinet_domain::accounts::AccountStatus::Active) => Ok(SignedIn {
                    actor: verified.actor,
                    session_id: None,
                    dev: verified.dev,
                }),
                Some(_) => Err(Refusal::Unauthenticated(
                    "the account is closed or deactivated",
                )),
            }
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        if let Some(known) = parts.extensions.get::<Caller>() {
            return Ok(known.clone());
        }
        let refused = |refusal: Refusal| {
            if matches!(refusal, Refusal::Unauthenticated(_)) {
                crate::metrics::observe_unauthenticated();
            }
            ApiError::from(refusal)
        };
        let token = bearer_token(&parts.headers)
            .map_err(|message| refused(Refusal::Unauthenticated(message)))?;
        let caller = match token {
            None => Caller(None),
            Some(token) => Caller(Some(authenticate(state, token).await.map_err(refused)?)),
        };
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<SignedIn, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller(Some(signed_in)) => Ok(signed_in),
            Caller(None) => Err(ApiError::unauthenticated(
                "sign in first: this needs a bearer token",
            )),
        }
    }
}

/// The client's address: the socket's peer, or behind a trusted proxy the
/// last `X-Forwarded-For` entry (the one that proxy added).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl ClientIp {
    /// The client address of a request from `peer` with `headers`.
    pub(crate) fn of(trusted_proxy: bool, peer: SocketAddr, headers: &HeaderMap) -> ClientIp {
        if trusted_proxy {
            // Only the very last entry: earlier ones come from the client and may be forged.
            let forwarded = headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse::<IpAddr>().ok());
            if let Some(ip) = forwarded {
                return ClientIp(ip);
            }
        }
        ClientIp(peer.ip())
    }
}

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<ClientIp, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| *peer)
            .ok_or_else(|| {
                ApiError::internal(
                    "a request came without its peer address",
                    "the server was not started with connection info",
                )
            })?;
        Ok(ClientIp::of(state.trusted_proxy, peer, &parts.headers))
    }
}

/// The token of `Authorization: Bearer <token>`, unchecked, for routes with
/// tokens of their own (`/metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BearerToken(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<BearerToken, Self::Rejection> {
        Ok(BearerToken(
            bearer_token(&parts.headers)
                .ok()
                .flatten()
                .map(str::to_string),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header"));
        }
        map
    }

    #[test]
    fn a_bearer_header_gives_its_token_and_others_are_refused() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(
            bearer_token(&headers(&[("authorization", "Bearer abc ")])),
            Ok(Some("abc"))
        );
        assert!(bearer_token(&headers(&[("authorization", "Basic abc")])).is_err());
    }

    #[test]
    fn only_a_trusted_proxy_names_the_client_by_its_last_entry() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().expect("addr");
        let forwarded = headers(&[("x-forwarded-for", "1.1.1.1, 2.2.2.2")]);
        assert_eq!(
            ClientIp::of(true, peer, &forwarded).0,
            "2.2.2.2".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(ClientIp::of(false, peer, &forwarded).0, peer.ip());
    }
}
