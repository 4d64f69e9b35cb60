//! Random secrets and their keyed hashes: one-time codes, opaque tokens.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Fills `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), SecretError> {
    Ok(getrandom::getrandom(buf)?)
}

/// The system's random source failed.
#[derive(Debug, thiserror::Error)]
#[error("no randomness available: {0}")]
pub struct SecretError(#[from] getrandom::Error);

/// A uniformly random 6-digit code.
pub fn six_digit_code() -> Result<String, SecretError> {
    // Rejection sampling keeps every code equally likely.
    loop {
        let mut buf = [0u8; 4];
        random_bytes(&mut buf)?;
        let n = u32::from_be_bytes(buf);
        if n < 4_294_000_000 {
            return Ok(format!("{:06}", n % 1_000_000));
        }
    }
}

/// An opaque token of 32 random bytes, base64url without padding.
pub fn opaque_token() -> Result<String, SecretError> {
    use base64::Engine as _;
    let mut buf = [0u8; 32];
    random_bytes(&mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// SHA-256 of a high-entropy token: enough to store it, since it cannot be guessed.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Keyed hashes of low-entropy secrets (6-digit codes): without the server's
/// key a stolen table does not reveal the codes by trying all million.
#[derive(Clone)]
pub struct CodeHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for CodeHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CodeHasher([redacted])")
    }
}

impl CodeHasher {
    /// A hasher keyed by a key derived from the server's secret.
    pub fn from_server_secret(secret: &[u8]) -> CodeHasher {
        CodeHasher {
            key: hmac_sha256(secret, b"kabinet one-time code key v1"),
        }
    }

    /// The keyed hash of `code` issued for `purpose` and `subject`.
    pub fn hash(&self, purpose: &str, subject: &str, code: &str) -> Vec<u8> {
        let message = format!("{purpose}\u{0}{subject}\u{0}{code}");
        hmac_sha256(&self.key, message.as_bytes())
    }

    /// Whether `code` matches `stored`, compared in constant time.
    pub fn matches(&self, purpose: &str, subject: &str, code: &str, stored: &[u8]) -> bool {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(format!("{purpose}\u{0}{subject}\u{0}{code}").as_bytes());
        mac.verify_slice(stored).is_ok()
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_six_digits_and_tokens_differ() {
        for _ in 0..100 {
            let code = six_digit_code().expect("code");
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
        }
        assert_ne!(opaque_token().expect("t"), opaque_token().expect("t"));
    }

    #[test]
    fn code_hashes_are_keyed_and_bound_to_their_subject() {
        let a = CodeHasher::from_server_secret(b"one secret of thirty-two bytes..");
        let b = CodeHasher::from_server_secret(b"another secret of 32 bytes......");
        let stored = a.hash("register", "+79123456789", "123456");
        assert!(a.matches("register", "+79123456789", "123456", &stored));
        assert!(!a.matches("register", "+79123456789", "123457", &stored));
        assert!(!a.matches("recover", "+79123456789", "123456", &stored));
        assert!(!b.matches("register", "+79123456789", "123456", &stored));
    }
}
