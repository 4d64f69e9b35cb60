//! The caller's bearer token, checked as the server checks it (HS256, issuer
//! `kabinet`), without depending on the server crate.

use anyhow::bail;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// Issuer the server writes into every token.
pub const ISSUER: &str = "kabinet";

/// The role whose token unlocks personal data in exports.
pub const AUDITOR: &str = "auditor";

#[derive(Deserialize)]
struct Claims {
    sub: String,
    role: String,
}

/// The caller a token identifies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub role: String,
}

/// Verifies `token` with the server's `secret`.
pub fn verify(token: &str, secret: &[u8]) -> anyhow::Result<Caller> {
    if secret.is_empty() {
        bail!("no token secret: set KABINET_JWT_SECRET to the server's signing secret");
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_issuer(&[ISSUER]);
    validation.set_required_spec_claims(&["exp", "iss", "sub"]);
    validation.leeway = 30;
    // The token itself is never echoed: it is a credential.
    let data = decode::<Claims>(token.trim(), &DecodingKey::from_secret(secret), &validation)
        .map_err(|e| {
            anyhow::anyhow!(
                "the token is malformed, expired or not signed with KABINET_JWT_SECRET ({e})"
            )
        })?;
    Ok(Caller {
        subject: data.claims.sub,
        role: data.claims.role,
    })
}

/// Verifies `token` and requires the auditor role.
pub fn require_auditor(token: &str, secret: &[u8]) -> anyhow::Result<Caller> {
    let caller = verify(token, secret)?;
    if caller.role != AUDITOR {
        bail!(
            "personal data needs a token with the {AUDITOR} role; this token's role is '{}'",
            caller.role
        );
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(role: &str, secret: &[u8], iss: &str, exp_offset: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let claims =
            json!({ "sub": "s", "role": role, "iss": iss, "iat": now, "exp": now + exp_offset });
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .expect("encode")
    }

    #[test]
    fn only_a_valid_auditor_token_passes() {
        let secret = b"0123456789abcdef0123456789abcdef";
        assert!(require_auditor(&token("auditor", secret, ISSUER, 300), secret).is_ok());
        assert!(require_auditor(&token("analyst", secret, ISSUER, 300), secret).is_err());
        assert!(require_auditor(
            &token("auditor", b"other secret of 32 bytes........", ISSUER, 300),
            secret
        )
        .is_err());
        assert!(require_auditor(&token("auditor", secret, "elsewhere", 300), secret).is_err());
        assert!(require_auditor(&token("auditor", secret, ISSUER, -300), secret).is_err());
        assert!(require_auditor("garbage", secret).is_err());
    }
}
