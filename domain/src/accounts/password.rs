//! Passwords: the policy new passwords meet, and Argon2id hashing off the async runtime.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::user_error::UserError;

/// Fewest characters of a password.
pub const MIN_LEN: usize = 10;
/// Most characters of a password (hashing cost stays bounded).
pub const MAX_LEN: usize = 128;
/// Fewest different characters.
pub const MIN_DISTINCT: usize = 5;

/// Passwords so common that guessing tries them first.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "0987654321",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "qwertyuiop",
    "password123",
    "password1234",
    "passw0rd123",
    "iloveyou123",
    "qwerty12345",
    "qwerty123456",
    "1234qwerty",
    "abcdefghij",
    "abc1234567",
    "zaq12wsxcde",
    "йцукенгшщз",
    "пароль12345",
    "asdfghjkl1",
    "administrator",
    "welcome123",
    "letmein123",
    "1111111111",
    "0000000000",
];

/// A password that meets the policy.
pub struct NewPassword(String);

impl NewPassword {
    /// Checks `raw` against the policy; `login` is the account's normalised login.
    /// The error names `field`.
    pub fn parse(raw: &str, login: &str, field: &str) -> Result<NewPassword, UserError> {
        let chars = raw.chars().count();
        if chars < MIN_LEN {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_SHORT",
                format!("the password must have at least {MIN_LEN} characters, it has {chars}"),
            ));
        }
        if chars > MAX_LEN {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_LONG",
                format!("the password must have at most {MAX_LEN} characters, it has {chars}"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(UserError::field(
                field,
                "PASSWORD_INVALID_CHARACTER",
                "the password must not contain control characters",
            ));
        }
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < MIN_DISTINCT {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_SIMPLE",
                format!(
                    "the password must use at least {MIN_DISTINCT} different characters, it uses {}",
                    distinct.len()
                ),
            ));
        }
        let lower = raw.to_lowercase();
        if COMMON.contains(&lower.as_str()) {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_COMMON",
                "the password is one of the most common ones; choose another",
            ));
        }
        let login_core = login
            .split('@')
            .next()
            .unwrap_or(login)
            .trim_start_matches("+7")
            .to_lowercase();
        if login_core.chars().count() >= 4 && lower.contains(&login_core) {
            return Err(UserError::field(
                field,
                "PASSWORD_CONTAINS_LOGIN",
                "the password must not contain the login",
            ));
        }
        Ok(NewPassword(raw.to_string()))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Hashing failed (never for well-formed input).
#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

/// Argon2id with OWASP's minimum: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string of `password` with a fresh salt, computed on a blocking thread.
pub async fn hash(password: &str) -> Result<String, HashError> {
    let password = password.to_string();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        super::secrets::random_bytes(&mut salt).map_err(|e| HashError(e.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
        hasher()?
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| HashError(e.to_string()))
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

/// Whether `password` matches the stored PHC string, checked on a blocking thread.
/// With no stored hash a dummy one is checked, so unknown logins cost the same time.
pub async fn verify(password: &str, stored: Option<&str>) -> Result<bool, HashError> {
    let password = password.to_string();
    let stored = stored.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let dummy;
        let (phc, real) = match &stored {
            Some(s) => (s.as_str(), true),
            None => {
                dummy = dummy_hash()?;
                (dummy.as_str(), false)
            }
        };
        let parsed = PasswordHash::new(phc).map_err(|e| HashError(e.to_string()))?;
        let ok = hasher()?
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await
    .map_err(|e| HashError(e.to_string()))?
}

fn dummy_hash() -> Result<String, HashError> {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(h) = DUMMY.get() {
        return Ok(h.clone());
    }
    let salt =
        SaltString::encode_b64(b"kabinet-dummy-salt").map_err(|e| HashError(e.to_string()))?;
    let h = hasher()?
        .hash_password(b"no account has this password", &salt)
        .map_err(|e| HashError(e.to_string()))?
        .to_string();
    Ok(DUMMY.get_or_init(|| h).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> &'static str {
        match NewPassword::parse(raw, "+79123456789", "password") {
            Ok(_) => "OK",
            Err(e) => e.code,
        }
    }

    #[test]
    fn the_policy_gives_precise_reasons() {
        assert_eq!(code("short1"), "PASSWORD_TOO_SHORT");
        assert_eq!(code(&"ab1".repeat(50)), "PASSWORD_TOO_LONG");
        assert_eq!(code("aaaaabbbbb"), "PASSWORD_TOO_SIMPLE");
        assert_eq!(code("Qwertyuiop"), "PASSWORD_TOO_COMMON");
        assert_eq!(code("my9123456789pw"), "PASSWORD_CONTAINS_LOGIN");
        assert_eq!(code("зимний-вечер-42"), "OK");
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = hash("зимний-вечер-42").await.expect("hash");
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify("зимний-вечер-42", Some(&h)).await.expect("verify"));
        assert!(!verify("зимний-вечер-43", Some(&h)).await.expect("verify"));
        assert!(!verify("no account has this password", None)
            .await
            .expect("verify"));
    }
}
