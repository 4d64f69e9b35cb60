//! Verification tokens of printed prescriptions: an Ed25519 signature over the
//! prescription's id and issue instant, so a pharmacist's scan proves the QR
//! code was made by this service for exactly that prescription.
//!
//! Layout (then base64url without padding): version byte `1`, the 16 bytes of
//! the id, the issue instant as big-endian microseconds (8 bytes), and the
//! 64-byte signature over a domain tag, the id and the instant. Ed25519 is
//! deterministic, so one prescription always gets the same token (and the same
//! PDF bytes).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use uuid::Uuid;

const VERSION: u8 = 1;
const TAG: &[u8] = b"kabinet/prescription-verification/v1";
const TOKEN_BYTES: usize = 1 + 16 + 8 + 64;

/// A token that does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
}

/// Why a signing key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not base64.
    #[error("the prescription signing key must be 32 bytes in base64 (a seed), got text that is not base64")]
    NotBase64,
    /// The seed has the wrong length.
    #[error("the prescription signing key must be 32 bytes in base64 (a seed), got {0} bytes")]
    WrongLength(usize),
}

/// Signs and verifies prescription tokens.
#[derive(Clone)]
pub struct PrescriptionSigner {
    key: SigningKey,
    public: VerifyingKey,
}

impl std::fmt::Debug for PrescriptionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrescriptionSigner")
            .field("public", &URL_SAFE_NO_PAD.encode(self.public.as_bytes()))
            .finish_non_exhaustive()
    }
}

impl PrescriptionSigner {
    /// A signer from a 32-byte seed.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let public = key.verifying_key();
        PrescriptionSigner { key, public }
    }

    /// A signer from a base64 seed (standard or URL-safe alphabet, padding optional).
    pub fn from_base64_seed(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text))
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| KeyError::NotBase64)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        Ok(Self::from_seed(&seed))
    }

    /// A fresh random seed, base64.
    pub fn generate_seed() -> Result<String, getrandom::Error> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed)?;
        Ok(base64::engine::general_purpose::STANDARD.encode(seed))
    }

    /// The public key, base64url, for anyone who verifies offline.
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.public.as_bytes())
    }

    fn message(id: Uuid, issued_at_micros: i64) -> Vec<u8> {
        let mut message = Vec::with_capacity(TAG.len() + 24);
        message.extend_from_slice(TAG);
        message.extend_from_slice(id.as_bytes());
        message.extend_from_slice(&issued_at_micros.to_be_bytes());
        message
    }

    /// The token of prescription `id` issued at `issued_at`.
    pub fn sign(&self, id: Uuid, issued_at: DateTime<Utc>) -> String {
        let micros = issued_at.timestamp_micros();
        let signature = self.key.sign(&Self::message(id, micros));
        let mut bytes = Vec::with_capacity(TOKEN_BYTES);
        bytes.push(VERSION);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&micros.to_be_bytes());
        bytes.extend_from_slice(&signature.to_bytes());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The prescription id and issue instant (microseconds) a genuine token names.
    pub fn verify(&self, token: &str) -> Result<(Uuid, i64), TokenError> {
        if token.len() > 2 * TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        if bytes.len() != TOKEN_BYTES || bytes[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let id = Uuid::from_slice(&bytes[1..17]).map_err(|_| TokenError::Malformed)?;
        let micros_bytes: [u8; 8] = bytes[17..25]
            .try_into()
            .map_err(|_| TokenError::Malformed)?;
        let micros = i64::from_be_bytes(micros_bytes);
        let signature = Signature::from_slice(&bytes[25..]).map_err(|_| TokenError::Malformed)?;
        self.public
            .verify(&Self::message(id, micros), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        Ok((id, micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer() -> PrescriptionSigner {
        PrescriptionSigner::from_seed(&[7u8; 32])
    }

    #[test]
    fn a_signed_token_verifies_and_names_its_prescription() {
        let id = Uuid::now_v7();
        let at = Utc::now();
        let token = signer().sign(id, at);
        assert_eq!(signer().verify(&token), Ok((id, at.timestamp_micros())));
        assert_eq!(token, signer().sign(id, at), "tokens are deterministic");
    }

    #[test]
    fn any_changed_character_makes_the_token_invalid() {
        let token = signer().sign(Uuid::now_v7(), Utc::now());
        for i in 0..token.len() {
            let mut chars: Vec<char> = token.chars().collect();
            chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
            let changed: String = chars.into_iter().collect();
            assert!(signer().verify(&changed).is_err(), "position {i}");
        }
        assert_eq!(signer().verify(""), Err(TokenError::Malformed));
        assert_eq!(signer().verify("%%%"), Err(TokenError::Malformed));
    }

    #[test]
    fn another_key_does_not_verify() {
        let token = signer().sign(Uuid::now_v7(), Utc::now());
        let other = PrescriptionSigner::from_seed(&[8u8; 32]);
        assert_eq!(other.verify(&token), Err(TokenError::BadSignature));
    }

    #[test]
    fn seeds_round_trip_through_base64() {
        let seed = PrescriptionSigner::generate_seed().expect("seed");
        let a = PrescriptionSigner::from_base64_seed(&seed).expect("parses");
        let b = PrescriptionSigner::from_base64_seed(&seed).expect("parses");
        assert_eq!(a.public_key(), b.public_key());
        assert!(PrescriptionSigner::from_base64_seed("c2hvcnQ=").is_err());
    }
}
