//! Text of a PDF through poppler's `pdftotext`, as a reader of the document would get it.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// The text of `pdf` via `pdftotext - -`.
///
/// `None` (after printing "SKIPPED …") when `pdftotext` is not installed outside CI;
/// under `CI=true` a missing `pdftotext` fails the test (install poppler-utils).
pub fn pdf_text(pdf: &[u8]) -> Option<String> {
    let child = Command::new("pdftotext")
        .args(["-enc", "UTF-8", "-", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("pdftotext is required under CI (install poppler-utils): {e}");
            }
            println!("SKIPPED (pdftotext not installed: {e}; install poppler-utils)");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(pdf).expect("write the PDF to pdftotext");
    }
    let output = child.wait_with_output().expect("run pdftotext");
    assert!(
        output.status.success(),
        "pdftotext refused the file: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.stderr.is_empty(),
        "pdftotext complained: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(String::from_utf8(output.stdout).expect("pdftotext gives UTF-8"))
}
