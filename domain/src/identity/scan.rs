//! Passport scans: checked by content (never by name or declared type) and sealed with
//! AES-256-GCM before they reach the database.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::verification::ScanFormat;

/// Largest scan accepted: 5 MiB.
pub const MAX_SCAN_BYTES: usize = 5 * 1024 * 1024;

/// Why a scan was refused; each has a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("the scan is empty")]
    Empty,
    #[error("the scan is {got} bytes; at most {MAX_SCAN_BYTES} bytes (5 MiB) are accepted")]
    TooLarge { got: usize },
    #[error("the content is {found}, not a PDF or JPEG")]
    UnsupportedType { found: &'static str },
    #[error("the PDF is incomplete: it has no %%EOF end marker")]
    TruncatedPdf,
    #[error("the PDF has no cross-reference section (startxref)")]
    MalformedPdf,
    #[error("the JPEG is incomplete: it does not end with the end-of-image marker")]
    TruncatedJpeg,
    #[error("the content is {found}, but the request declared {declared}")]
    DeclaredTypeMismatch {
        found: &'static str,
        declared: String,
    },
}

impl ScanError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ScanError::Empty => "SCAN_EMPTY",
            ScanError::TooLarge { .. } => "SCAN_TOO_LARGE",
            ScanError::UnsupportedType { .. } => "SCAN_UNSUPPORTED_TYPE",
            ScanError::TruncatedPdf => "SCAN_TRUNCATED_PDF",
            ScanError::MalformedPdf => "SCAN_MALFORMED_PDF",
            ScanError::TruncatedJpeg => "SCAN_TRUNCATED_JPEG",
            ScanError::DeclaredTypeMismatch { .. } => "SCAN_TYPE_MISMATCH",
        }
    }
}

/// What other common formats look like, so a refusal can name what was sent.
fn sniff_other(bytes: &[u8]) -> &'static str {
    const KNOWN: &[(&[u8], &str)] = &[
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"GIF8", "a GIF image"),
        (b"PK\x03\x04", "a ZIP archive (or an office document)"),
        (b"MZ", "a Windows executable"),
        (b"\x7fELF", "an executable"),
        (b"RIFF", "a RIFF file (WebP, WAV or AVI)"),
        (b"II*\0", "a TIFF image"),
        (b"MM\0*", "a TIFF image"),
    ];
    KNOWN
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, name)| *name)
        .unwrap_or("of an unknown type")
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks that `bytes` are a complete PDF or JPEG; `declared` is the request's
/// `Content-Type`, when it names one of the two.
pub fn check_scan(bytes: &[u8], declared: Option<&str>) -> Result<ScanFormat, ScanError> {
    if bytes.is_empty() {
        return Err(ScanError::Empty);
    }
    if bytes.len() > MAX_SCAN_BYTES {
        return Err(ScanError::TooLarge { got: bytes.len() });
    }
    let format = if bytes.starts_with(b"%PDF-") {
        // The end marker may be followed by line ends; look at the tail only.
        let tail_start = bytes.len().saturating_sub(1024);
        let tail = &bytes[tail_start..];
        if !contains(tail, b"%%EOF") {
            return Err(ScanError::TruncatedPdf);
        }
        if !contains(tail, b"startxref") && !contains(bytes, b"startxref") {
            return Err(ScanError::MalformedPdf);
        }
        ScanFormat::Pdf
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if !bytes.ends_with(&[0xFF, 0xD9]) {
            return Err(ScanError::TruncatedJpeg);
        }
        ScanFormat::Jpeg
    } else {
        return Err(ScanError::UnsupportedType {
            found: sniff_other(bytes),
        });
    };
    let found = match format {
        ScanFormat::Pdf => "a PDF",
        ScanFormat::Jpeg => "a JPEG image",
    };
    let declared_format = declared.map(|d| d.split(';').next().unwrap_or("").trim().to_lowercase());
    match declared_format.as_deref() {
        Some("application/pdf") if format != ScanFormat::Pdf => {
            Err(ScanError::DeclaredTypeMismatch {
                found,
                declared: "application/pdf".into(),
            })
        }
        Some("image/jpeg") | Some("image/jpg") if format != ScanFormat::Jpeg => {
            Err(ScanError::DeclaredTypeMismatch {
                found,
                declared: "image/jpeg".into(),
            })
        }
        _ => Ok(format),
    }
}

/// The key that seals scans at rest (32 bytes). `Debug` never shows it.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id())
    }
}

/// A data key that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the data key must be 32 bytes written as 64 hex digits or in base64")]
pub struct BadDataKey;

/// A sealed scan: the nonce and the ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

/// The scan could not be opened: wrong key, or the row was altered or moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the sealed scan cannot be opened with this key")]
pub struct OpenError;

impl DataKey {
    /// Reads a key given as 64 hex digits or as base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<DataKey, BadDataKey> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(text).map_err(|_| BadDataKey)?
        } else {
            STANDARD.decode(text).map_err(|_| BadDataKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| BadDataKey)?;
        Ok(DataKey(key))
    }

    /// A fresh random key.
    pub fn random() -> DataKey {
        DataKey(Aes256Gcm::generate_key(&mut OsRng).into())
    }

    /// The key in base64, for storing the development key.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// A short public fingerprint of the key (first 8 bytes of its SHA-256, hex), stored
    /// with each sealed row so a wrong key is recognised.
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.0)[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new(&Key::<Aes256Gcm>::from(self.0))
    }

    /// Seals `plaintext`, binding it to `context` (e.g. the patient and digest) so a
    /// row copied elsewhere does not open.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Sealed {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            // Encryption of in-memory data with a valid key fails only past 64 GiB.
            .unwrap_or_default();
        Sealed {
            nonce: nonce.to_vec(),
            ciphertext,
        }
    }

    /// Opens what [`DataKey::seal`] sealed with the same `context`.
    pub fn open(&self, sealed: &Sealed, context: &[u8]) -> Result<Vec<u8>, OpenError> {
        let nonce: [u8; 12] = sealed.nonce.as_slice().try_into().map_err(|_| OpenError)?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| OpenError)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pdf() -> Vec<u8> {
        b"%PDF-1.4\n1 0 obj <<>> endobj\nxref\n0 1\ntrailer <<>>\nstartxref\n9\n%%EOF\n".to_vec()
    }

    #[test]
    fn complete_pdf_and_jpeg_are_accepted() {
        assert_eq!(
            check_scan(&pdf(), Some("application/pdf")),
            Ok(ScanFormat::Pdf)
        );
        let jpeg = [&[0xFF, 0xD8, 0xFF, 0xE0][..], b"JFIF data", &[0xFF, 0xD9]].concat();
        assert_eq!(check_scan(&jpeg, None), Ok(ScanFormat::Jpeg));
    }

    #[test]
    fn disguised_and_truncated_files_are_refused() {
        let png = b"\x89PNG\r\n\x1a\n rest".to_vec();
        let error = check_scan(&png, Some("application/pdf")).expect_err("png");
        assert_eq!(error.code(), "SCAN_UNSUPPORTED_TYPE");
        assert!(error.to_string().contains("PNG"));
        let truncated = pdf()[..30].to_vec();
        assert_eq!(check_scan(&truncated, None), Err(ScanError::TruncatedPdf));
        let jpeg = vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3];
        assert_eq!(check_scan(&jpeg, None), Err(ScanError::TruncatedJpeg));
        assert_eq!(check_scan(&[], None), Err(ScanError::Empty));
        assert_eq!(
            check_scan(&pdf(), Some("image/jpeg")).map_err(|e| e.code()),
            Err("SCAN_TYPE_MISMATCH")
        );
        let big = [pdf(), vec![b' '; MAX_SCAN_BYTES]].concat();
        assert_eq!(
            check_scan(&big, None).map_err(|e| e.code()),
            Err("SCAN_TOO_LARGE")
        );
    }

    #[test]
    fn sealed_scans_open_only_with_their_key_and_context() {
        let key = DataKey::random();
        let sealed = key.seal(b"passport bytes", b"patient-1");
        assert!(!contains(&sealed.ciphertext, b"passport"));
        assert_eq!(
            key.open(&sealed, b"patient-1"),
            Ok(b"passport bytes".to_vec())
        );
        assert_eq!(key.open(&sealed, b"patient-2"), Err(OpenError));
        assert_eq!(
            DataKey::random().open(&sealed, b"patient-1"),
            Err(OpenError)
        );
    }

    #[test]
    fn keys_parse_from_hex_or_base64_and_do_not_show_in_debug() {
        let key = DataKey::random();
        let again = DataKey::parse(&key.to_base64()).expect("base64");
        assert_eq!(again.id(), key.id());
        let hex_key = hex::encode(key.0);
        assert_eq!(DataKey::parse(&hex_key).expect("hex").id(), key.id());
        assert_eq!(DataKey::parse("short").map(|k| k.id()), Err(BadDataKey));
        assert!(!format!("{key:?}").contains(&hex_key));
    }
}
