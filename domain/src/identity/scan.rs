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
    #[error("the content is {found}, not a PDF, JPEG or PNG")]
    UnsupportedType { found: &'static str },
    #[error("the PDF is incomplete: it has no %%EOF end marker")]
    TruncatedPdf,
    #[error("the PDF has no cross-reference section (startxref)")]
    MalformedPdf,
    #[error("the PDF has no page: a scan must show the passport on at least one page")]
    PdfWithoutPages,
    #[error("the JPEG is incomplete: it does not end with the end-of-image marker")]
    TruncatedJpeg,
    #[error("the JPEG is malformed: {0}")]
    MalformedJpeg(&'static str),
    #[error("the PNG is malformed: {0}")]
    MalformedPng(&'static str),
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
            ScanError::PdfWithoutPages => "SCAN_PDF_WITHOUT_PAGES",
            ScanError::TruncatedJpeg => "SCAN_TRUNCATED_JPEG",
            ScanError::MalformedJpeg(_) => "SCAN_MALFORMED_JPEG",
            ScanError::MalformedPng(_) => "SCAN_MALFORMED_PNG",
            ScanError::DeclaredTypeMismatch { .. } => "SCAN_TYPE_MISMATCH",
        }
    }
}

/// What other common formats look like, so a refusal can name what was sent.
fn sniff_other(bytes: &[u8]) -> &'static str {
    const KNOWN: &[(&[u8], &str)] = &[
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

/// A page object: `/Type /Page` not followed by `s` (which would be the page tree).
fn has_page_object(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.windows(5).position(|w| w == b"/Type") {
        let after = &rest[at + 5..];
        let skipped = after.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let value = &after[skipped..];
        if value.starts_with(b"/Page") && !value[5..].starts_with(b"s") {
            return true;
        }
        rest = after;
    }
    false
}

fn check_pdf(bytes: &[u8]) -> Result<(), ScanError> {
    // The end marker may be followed by line ends; look at the tail only.
    let tail = &bytes[bytes.len().saturating_sub(1024)..];
    if !contains(tail, b"%%EOF") {
        return Err(ScanError::TruncatedPdf);
    }
    if !contains(bytes, b"startxref") {
        return Err(ScanError::MalformedPdf);
    }
    if !has_page_object(bytes) {
        return Err(ScanError::PdfWithoutPages);
    }
    Ok(())
}

/// Walks the JPEG's segments up to the image data: a frame header with a non-empty
/// size must come before the scan, and the file must end with the end-of-image marker.
fn check_jpeg(bytes: &[u8]) -> Result<(), ScanError> {
    if !bytes.ends_with(&[0xFF, 0xD9]) {
        return Err(ScanError::TruncatedJpeg);
    }
    let mut at = 2;
    let mut frame = false;
    loop {
        let (Some(&0xFF), Some(&marker)) = (bytes.get(at), bytes.get(at + 1)) else {
            return Err(ScanError::MalformedJpeg(
                "a segment does not start with a marker",
            ));
        };
        if marker == 0xFF {
            // Fill byte before a marker.
            at += 1;
            continue;
        }
        if marker == 0xD9 {
            return Err(ScanError::MalformedJpeg(
                "the image ends before any image data",
            ));
        }
        if (0xD0..=0xD7).contains(&marker) || marker == 0x01 {
            at += 2;
            continue;
        }
        let Some(len) = bytes
            .get(at + 2..at + 4)
            .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
        else {
            return Err(ScanError::MalformedJpeg("a segment is cut short"));
        };
        if len < 2 || at + 2 + len > bytes.len() {
            return Err(ScanError::MalformedJpeg(
                "a segment length runs past the file",
            ));
        }
        let is_frame = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_frame {
            let segment = &bytes[at + 4..at + 2 + len];
            if segment.len() < 5 {
                return Err(ScanError::MalformedJpeg("the frame header is cut short"));
            }
            let height = u16::from_be_bytes([segment[1], segment[2]]);
            let width = u16::from_be_bytes([segment[3], segment[4]]);
            if height == 0 || width == 0 {
                return Err(ScanError::MalformedJpeg("the image has no width or height"));
            }
            frame = true;
        }
        if marker == 0xDA {
            if !frame {
                return Err(ScanError::MalformedJpeg(
                    "image data comes before the frame header",
                ));
            }
            if at + 2 + len >= bytes.len() - 2 {
                return Err(ScanError::MalformedJpeg("there is no image data"));
            }
            return Ok(());
        }
        at += 2 + len;
    }
}

/// Walks the PNG's chunks: a header with a non-empty size first, image data, and the
/// end chunk last.
fn check_png(bytes: &[u8]) -> Result<(), ScanError> {
    let mut at = 8;
    let mut first = true;
    let mut data = false;
    loop {
        let Some(head) = bytes.get(at..at + 8) else {
            return Err(ScanError::MalformedPng(
                "the file ends before the end chunk",
            ));
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let kind = &head[4..8];
        let end = at
            .checked_add(12)
            .and_then(|n| n.checked_add(len))
            .filter(|&n| n <= bytes.len())
            .ok_or(ScanError::MalformedPng("a chunk length runs past the file"))?;
        if first {
            if kind != b"IHDR" || len != 13 {
                return Err(ScanError::MalformedPng("the header chunk is missing"));
            }
            let width =
                u32::from_be_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]]);
            let height = u32::from_be_bytes([
                bytes[at + 12],
                bytes[at + 13],
                bytes[at + 14],
                bytes[at + 15],
            ]);
            if width == 0 || height == 0 {
                return Err(ScanError::MalformedPng("the image has no width or height"));
            }
            first = false;
        }
        data |= kind == b"IDAT" && len > 0;
        if kind == b"IEND" {
            if !data {
                return Err(ScanError::MalformedPng("there is no image data"));
            }
            if end != bytes.len() {
                return Err(ScanError::MalformedPng("data follows the end chunk"));
            }
            return Ok(());
        }
        at = end;
    }
}

/// Checks that `bytes` are a complete PDF with a page, JPEG or PNG, by content and
/// structure; `declared` is the request's `Content-Type`, when it names one of them.
pub fn check_scan(bytes: &[u8], declared: Option<&str>) -> Result<ScanFormat, ScanError> {
    if bytes.is_empty() {
        return Err(ScanError::Empty);
    }
    if bytes.len() > MAX_SCAN_BYTES {
        return Err(ScanError::TooLarge { got: bytes.len() });
    }
    let format = if bytes.starts_with(b"%PDF-") {
        check_pdf(bytes)?;
        ScanFormat::Pdf
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        check_jpeg(bytes)?;
        ScanFormat::Jpeg
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        check_png(bytes)?;
        ScanFormat::Png
    } else {
        return Err(ScanError::UnsupportedType {
            found: sniff_other(bytes),
        });
    };
    let found = match format {
        ScanFormat::Pdf => "a PDF",
        ScanFormat::Jpeg => "a JPEG image",
        ScanFormat::Png => "a PNG image",
    };
    let declared_format = declared.map(|d| d.split(';').next().unwrap_or("").trim().to_lowercase());
    let declared_as = match declared_format.as_deref() {
        Some("application/pdf") => Some(ScanFormat::Pdf),
        Some("image/jpeg") | Some("image/jpg") => Some(ScanFormat::Jpeg),
        Some("image/png") => Some(ScanFormat::Png),
        _ => None,
    };
    match declared_as {
        Some(declared) if declared != format => Err(ScanError::DeclaredTypeMismatch {
            found,
            declared: declared.media_type().into(),
        }),
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

    /// A keyed fingerprint (HMAC-SHA-256, hex) of `data`: equal data give equal
    /// fingerprints, yet the data cannot be guessed back from it without the key.
    pub fn fingerprint(&self, data: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            // HMAC takes keys of any length.
            .unwrap_or_else(|_| unreachable!("HMAC accepts a 32-byte key"));
        mac.update(b"kabinet identity basis\0");
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
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
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n3 0 obj << /Type /Page /Parent 2 0 R >> endobj\nxref\n0 1\ntrailer <<>>\nstartxref\n9\n%%EOF\n".to_vec()
    }

    /// A 1×1 JPEG's structure: SOI, a frame header, a scan header, data, EOI.
    fn jpeg() -> Vec<u8> {
        let mut bytes = vec![0xFF, 0xD8];
        bytes.extend([0xFF, 0xE0, 0x00, 0x04, b'J', b'F']);
        bytes.extend([0xFF, 0xC0, 0x00, 0x0B, 8, 0, 1, 0, 1, 1, 1, 0x11, 0]);
        bytes.extend([0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0x3F, 0]);
        bytes.extend([0x12, 0x34, 0x56]);
        bytes.extend([0xFF, 0xD9]);
        bytes
    }

    fn png() -> Vec<u8> {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend([0, 0, 0, 0]);
            c
        };
        let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
        bytes.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
        bytes.extend(chunk(b"IDAT", &[1, 2, 3]));
        bytes.extend(chunk(b"IEND", &[]));
        bytes
    }

    #[test]
    fn complete_pdf_and_jpeg_are_accepted() {
        assert_eq!(
            check_scan(&pdf(), Some("application/pdf")),
            Ok(ScanFormat::Pdf)
        );
        assert_eq!(check_scan(&jpeg(), None), Ok(ScanFormat::Jpeg));
        assert_eq!(check_scan(&png(), Some("image/png")), Ok(ScanFormat::Png));
    }

    #[test]
    fn files_with_the_right_magic_but_no_content_are_refused() {
        let empty_pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\nxref\n0 1\ntrailer <<>>\nstartxref\n9\n%%EOF\n";
        assert_eq!(check_scan(empty_pdf, None), Err(ScanError::PdfWithoutPages));
        let bare_jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x02, 0xFF, 0xD9];
        assert_eq!(
            check_scan(&bare_jpeg, None).map_err(|e| e.code()),
            Err("SCAN_MALFORMED_JPEG")
        );
        let mut no_data = png();
        no_data.truncate(8 + 25);
        assert_eq!(
            check_scan(&no_data, None).map_err(|e| e.code()),
            Err("SCAN_MALFORMED_PNG")
        );
    }

    #[test]
    fn disguised_and_truncated_files_are_refused() {
        let gif = b"GIF89a rest".to_vec();
        let error = check_scan(&gif, Some("application/pdf")).expect_err("gif");
        assert_eq!(error.code(), "SCAN_UNSUPPORTED_TYPE");
        assert!(error.to_string().contains("GIF"));
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
