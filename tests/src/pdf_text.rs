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

/// Whether a missing tool should fail the test (under CI) rather than skip it.
fn required(tool: &str, package: &str, e: &std::io::Error) -> Option<()> {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{tool} is required under CI (install {package}): {e}");
    }
    println!("SKIPPED ({tool} not installed: {e}; install {package})");
    None
}

/// The texts of the QR codes on the pages of `pdf`: rendered at 150 dpi by poppler's
/// `pdftoppm` and read by `zbarimg`, as a scanner would see a printout.
///
/// `None` (after printing "SKIPPED …") when a tool is missing outside CI.
pub fn pdf_qr_codes(pdf: &[u8]) -> Option<Vec<String>> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let input = dir.path().join("document.pdf");
    std::fs::write(&input, pdf).expect("write the PDF");
    let prefix = dir.path().join("page");
    let rendered = Command::new("pdftoppm")
        .args(["-r", "150", "-png"])
        .arg(&input)
        .arg(&prefix)
        .output();
    let rendered = match rendered {
        Ok(output) => output,
        Err(e) => return required("pdftoppm", "poppler-utils", &e).map(|_| Vec::new()),
    };
    assert!(
        rendered.status.success(),
        "pdftoppm refused the file: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let mut pages: Vec<_> = std::fs::read_dir(dir.path())
        .expect("list pages")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    pages.sort();
    let mut codes = Vec::new();
    for page in pages {
        let scanned = Command::new("zbarimg")
            .args(["--quiet", "--raw", "-Sdisable", "-Sqrcode.enable"])
            .arg(&page)
            .output();
        let scanned = match scanned {
            Ok(output) => output,
            Err(e) => return required("zbarimg", "zbar-tools", &e).map(|_| Vec::new()),
        };
        // zbarimg exits 4 when a page holds no code.
        codes.extend(
            String::from_utf8_lossy(&scanned.stdout)
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string),
        );
    }
    Some(codes)
}
