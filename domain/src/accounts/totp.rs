//! Time-based one-time passwords (RFC 6238): HMAC-SHA-1, 30-second steps,
//! 6 digits, one step of drift either way; and the `otpauth://` URI an
//! authenticator app reads from a QR code.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Seconds per step.
pub const STEP_SECONDS: i64 = 30;
/// Digits of a code.
pub const DIGITS: u32 = 6;
/// Steps of clock drift accepted either way.
pub const DRIFT_STEPS: i64 = 1;
/// Bytes of a new secret (160 bits, as RFC 4226 recommends).
pub const SECRET_BYTES: usize = 20;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// RFC 4648 base32 without padding.
pub fn base32_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(BASE32[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(BASE32[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// Decodes RFC 4648 base32 (case-insensitive, padding and spaces ignored).
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 5 / 8);
    let mut buffer: u32 = 0;
    let mut bits = 0;
    for c in text.chars().filter(|c| *c != '=' && *c != ' ') {
        let c = c.to_ascii_uppercase() as u8;
        let value = BASE32.iter().position(|&b| b == c)? as u32;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buffer >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// A fresh secret, base32-encoded.
pub fn new_secret() -> Result<String, super::secrets::SecretError> {
    let mut secret = [0u8; SECRET_BYTES];
    super::secrets::random_bytes(&mut secret)?;
    Ok(base32_encode(&secret))
}

/// The step an instant falls in.
pub fn step_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(STEP_SECONDS)
}

/// The code of `secret` at `step` (RFC 4226 dynamic truncation).
pub fn code_at(secret: &[u8], step: i64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let number = (u32::from(digest[offset] & 0x7f) << 24)
        | (u32::from(digest[offset + 1]) << 16)
        | (u32::from(digest[offset + 2]) << 8)
        | u32::from(digest[offset + 3]);
    format!(
        "{:0width$}",
        number % 10u32.pow(DIGITS),
        width = DIGITS as usize
    )
}

/// The step at which `code` is valid for `secret` around `now`, if any, and
/// only if it is later than `last_used` (so no code is accepted twice).
pub fn accept(
    secret_b32: &str,
    code: &str,
    now: DateTime<Utc>,
    last_used: Option<i64>,
) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secret = base32_decode(secret_b32)?;
    let current = step_of(now);
    (current - DRIFT_STEPS..=current + DRIFT_STEPS)
        .filter(|step| last_used.is_none_or(|last| *step > last))
        .find(|step| {
            let expected = code_at(&secret, *step);
            // Constant-time comparison of the six digits.
            expected
                .bytes()
                .zip(code.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
}

/// The `otpauth://totp/…` URI for a QR code.
pub fn provisioning_uri(secret_b32: &str, account_label: &str) -> String {
    let issuer = "Kabinet";
    format!(
        "otpauth://totp/{}:{}?secret={secret_b32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent(issuer),
        percent(account_label)
    )
}

fn percent(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn rfc6238_sha1_test_vectors() {
        // RFC 6238 appendix B, truncated to 6 digits.
        let secret = b"12345678901234567890";
        for (time, code) in [
            (59, "287082"),
            (1_111_111_109, "081804"),
            (1_111_111_111, "050471"),
            (1_234_567_890, "005924"),
            (2_000_000_000, "279037"),
        ] {
            let at = Utc.timestamp_opt(time, 0).single().expect("time");
            assert_eq!(code_at(secret, step_of(at)), code, "{time}");
        }
    }

    #[test]
    fn base32_round_trips() {
        assert_eq!(
            base32_encode(b"12345678901234567890"),
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(
            base32_decode("gezdgnbvgy3tqojqgezdgnbvgy3tqojq").as_deref(),
            Some(&b"12345678901234567890"[..])
        );
        assert_eq!(base32_decode("not base32!"), None);
    }

    #[test]
    fn codes_drift_one_step_and_are_never_accepted_twice() {
        let secret = base32_encode(b"12345678901234567890");
        let now = Utc.timestamp_opt(1_111_111_111, 0).single().expect("time");
        let step = step_of(now);
        let raw = b"12345678901234567890";
        assert_eq!(accept(&secret, &code_at(raw, step), now, None), Some(step));
        assert_eq!(
            accept(&secret, &code_at(raw, step - 1), now, None),
            Some(step - 1)
        );
        assert_eq!(
            accept(&secret, &code_at(raw, step + 1), now, None),
            Some(step + 1)
        );
        assert_eq!(accept(&secret, &code_at(raw, step - 2), now, None), None);
        assert_eq!(accept(&secret, &code_at(raw, step), now, Some(step)), None);
        assert_eq!(accept(&secret, "12345", now, None), None);
    }

    #[test]
    fn the_provisioning_uri_names_issuer_and_parameters() {
        let uri = provisioning_uri("ABC", "+79123456789");
        assert_eq!(
            uri,
            "otpauth://totp/Kabinet:%2B79123456789?secret=ABC&issuer=Kabinet&algorithm=SHA1&digits=6&period=30"
        );
    }
}
