//! Bearer tokens (HS256 JWT) and the caller they identify.

use chrono::{Duration, Utc};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use kabinet_domain::{Actor, Role};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Issuer written into and required from every token.
pub const ISSUER: &str = "kabinet";

/// Token lifetime bounds for minted tokens.
pub const MAX_TTL_MINUTES: i64 = 24 * 60;

/// The claims of a Kabinet bearer token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<String>,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// The sign-in session the token belongs to; absent on development tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// True for development tokens (`kabinet token`, the demo), which pass the
    /// identity-verification gate; absent in tokens issued by a sign-in.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dev: bool,
}

/// Lifetime of an access token issued by a sign-in session.
pub const ACCESS_TTL_MINUTES: i64 = 15;

/// A verified token: who it speaks for and, for session tokens, the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub actor: Actor,
    pub session_id: Option<Uuid>,
    /// A development token, exempt from the identity-verification gate.
    pub dev: bool,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the bearer token is malformed, expired or not signed by this server")]
    Invalid,
    #[error("the token's role is not known")]
    UnknownRole,
    #[error("{0}")]
    BadInput(String),
}

/// Signs and checks bearer tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the HS256 secret.
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 30;
        TokenKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `actor`, valid for `ttl`.
    pub fn mint(&self, actor: &Actor, ttl: Duration) -> Result<String, TokenError> {
        self.mint_with(actor, ttl, None, true)
    }

    /// Mints a development token without the identity-gate exemption: the
    /// caller is treated like a signed-in person (tests of the gate).
    pub fn mint_unmarked(&self, actor: &Actor, ttl: Duration) -> Result<String, TokenError> {
        self.mint_with(actor, ttl, None, false)
    }

    /// Mints a short-lived access token of session `session_id`.
    pub fn mint_session(&self, actor: &Actor, session_id: Uuid) -> Result<String, TokenError> {
        self.mint_with(
            actor,
            Duration::minutes(ACCESS_TTL_MINUTES),
            Some(session_id),
            false,
        )
    }

    fn mint_with(
        &self,
        actor: &Actor,
        ttl: Duration,
        session_id: Option<Uuid>,
        dev: bool,
    ) -> Result<String, TokenError> {
        let now = Utc::now();
        let claims = Claims {
            sub: actor.account_id.to_string(),
            role: actor.role.as_str().to_string(),
            org: actor.organisation_id.map(|o| o.to_string()),
            iss: ISSUER.to_string(),
            iat: now.timestamp(),
            exp: (now + ttl).timestamp(),
            sid: session_id.map(|s| s.to_string()),
            dev,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|_| TokenError::Invalid)
    }

    /// The caller a token speaks for.
    pub fn verify(&self, token: &str) -> Result<Actor, TokenError> {
        self.verify_token(token).map(|t| t.actor)
    }

    /// The caller and session a token speaks for.
    pub fn verify_token(&self, token: &str) -> Result<VerifiedToken, TokenError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        let claims = data.claims;
        let role: Role = claims.role.parse().map_err(|_| TokenError::UnknownRole)?;
        let account_id = Uuid::parse_str(&claims.sub).map_err(|_| TokenError::Invalid)?;
        let organisation_id = claims
            .org
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| TokenError::Invalid)?;
        if role.is_clinic_staff() && organisation_id.is_none() {
            return Err(TokenError::Invalid);
        }
        let session_id = claims
            .sid
            .as_deref()
            .map(Uuid::parse_str)
            .transpose()
            .map_err(|_| TokenError::Invalid)?;
        Ok(VerifiedToken {
            actor: Actor {
                account_id,
                role,
                organisation_id,
            },
            session_id,
            dev: claims.dev && claims.sid.is_none(),
        })
    }
}

/// Parses the arguments of `kabinet token` into an actor.
pub fn actor_from_args(role: &str, subject: &str, org: Option<&str>) -> Result<Actor, TokenError> {
    let role: Role = role
        .parse()
        .map_err(|e: kabinet_domain::metadata::UnknownRole| TokenError::BadInput(e.to_string()))?;
    let account_id = Uuid::parse_str(subject)
        .map_err(|_| TokenError::BadInput(format!("--subject '{subject}' is not a UUID")))?;
    let organisation_id = org
        .map(|o| {
            Uuid::parse_str(o)
                .map_err(|_| TokenError::BadInput(format!("--org '{o}' is not a UUID")))
        })
        .transpose()?;
    if role.is_clinic_staff() && organisation_id.is_none() {
        return Err(TokenError::BadInput(format!(
            "role {role} belongs to an organisation: give --org"
        )));
    }
    Ok(Actor {
        account_id,
        role,
        organisation_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patient() -> Actor {
        Actor {
            account_id: Uuid::now_v7(),
            role: Role::Patient,
            organisation_id: None,
        }
    }

    #[test]
    fn a_minted_token_verifies_to_its_actor() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef");
        let actor = patient();
        let token = keys.mint(&actor, Duration::minutes(5)).expect("mint");
        assert_eq!(keys.verify(&token), Ok(actor));
    }

    #[test]
    fn tokens_of_another_key_or_expired_are_refused() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef");
        let other = TokenKeys::new(b"fedcba9876543210fedcba9876543210");
        let token = other.mint(&patient(), Duration::minutes(5)).expect("mint");
        assert_eq!(keys.verify(&token), Err(TokenError::Invalid));
        let expired = keys.mint(&patient(), Duration::minutes(-5)).expect("mint");
        assert_eq!(keys.verify(&expired), Err(TokenError::Invalid));
        assert_eq!(keys.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn session_tokens_carry_their_session() {
        let keys = TokenKeys::new(b"0123456789abcdef0123456789abcdef");
        let session = Uuid::now_v7();
        let token = keys.mint_session(&patient(), session).expect("mint");
        assert_eq!(
            keys.verify_token(&token).expect("verify").session_id,
            Some(session)
        );
        let dev = keys.mint(&patient(), Duration::minutes(5)).expect("mint");
        assert_eq!(keys.verify_token(&dev).expect("verify").session_id, None);
    }

    #[test]
    fn staff_tokens_need_an_organisation() {
        assert!(actor_from_args("doctor", &Uuid::now_v7().to_string(), None).is_err());
        assert!(actor_from_args("wizard", &Uuid::now_v7().to_string(), None).is_err());
    }
}
