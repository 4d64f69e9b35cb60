//! Rendered PDFs read back as text by poppler: Cyrillic survives, long text wraps
//! across pages, and rendering is deterministic.

use kabinet_pdf::{render, PdfBlock, PdfDocument};
use kabinet_tests::pdf_text::pdf_text;

fn document() -> PdfDocument {
    let mut blocks = vec![
        PdfBlock::Field {
            label: "Пациент".to_string(),
            value: "Смирнова Анна Сергеевна".to_string(),
        },
        PdfBlock::Field {
            label: "Период".to_string(),
            value: "01.03.2026 — 31.03.2026".to_string(),
        },
        PdfBlock::Heading("Посещения за период".to_string()),
    ];
    for day in 1..=40 {
        blocks.push(PdfBlock::Bullet(format!(
            "{day:02}.03.2026, терапевт: диагноз J06.9 Острая инфекция верхних дыхательных путей; \
             рекомендации: обильное питьё, покой, повторный приём через неделю"
        )));
    }
    PdfDocument {
        title: "Выписка из истории болезни".to_string(),
        blocks,
        qr: Some("https://kabinet.example/verify/token".to_string()),
    }
}

#[test]
fn russian_text_comes_back_from_the_rendered_pdf() {
    let pdf = render(&document());
    assert_eq!(pdf, render(&document()), "rendering is deterministic");
    let Some(text) = pdf_text(&pdf) else { return };
    for expected in [
        "Выписка из истории болезни",
        "Пациент",
        "Смирнова Анна Сергеевна",
        "01.03.2026 — 31.03.2026",
        "Острая инфекция верхних",
        "40.03.2026, терапевт",
        "стр. 1 из",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Forty wrapped items do not fit one page.
    assert!(text.contains("стр. 2 из"), "no second page in:\n{text}");
}

#[test]
fn the_qr_code_on_the_page_scans_back_to_its_text() {
    let pdf = render(&document());
    let Some(codes) = kabinet_tests::pdf_text::pdf_qr_codes(&pdf) else {
        return;
    };
    assert_eq!(
        codes,
        vec!["https://kabinet.example/verify/token".to_string()]
    );
}
