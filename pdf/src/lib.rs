//! Kabinet's PDF engine: renders a document model (Cyrillic text, line wrapping, page
//! breaks, a QR code) to PDF bytes. It knows nothing of the API that asks for documents.
//!
//! A small hand-written writer rather than a PDF library: the output must be byte-for-byte
//! deterministic (no dates, random ids or hash-map order), and it needs only one embedded
//! font (DejaVu Sans, subset per document, with a ToUnicode map so text extracts), text,
//! rules and filled squares for the QR code. See README "PDF documents".

mod font;
mod writer;

use std::fmt::Write as _;

use font::{EmbeddedFont, Font};
use writer::{num, text_string, Writer};

/// A document to render: a title, blocks of content in order, and an optional QR code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfDocument {
    /// Shown at the top of the first page, in each page's footer and in the file's metadata.
    pub title: String,
    /// The content, top to bottom.
    pub blocks: Vec<PdfBlock>,
    /// Text to encode as a QR code, drawn after the content.
    pub qr: Option<String>,
}

/// One block of content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfBlock {
    /// A section heading.
    Heading(String),
    /// Running text, wrapped to the page width; `\n` starts a new line.
    Paragraph(String),
    /// A labelled value in two columns (label left, value right, both wrapped).
    Field { label: String, value: String },
    /// A list item with a bullet, wrapped with a hanging indent.
    Bullet(String),
    /// A thin horizontal rule.
    Rule,
}

/// MIME type of rendered documents.
pub const MEDIA_TYPE: &str = "application/pdf";

// A4 in points, and the page geometry.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN_X: f32 = 56.0;
const MARGIN_TOP: f32 = 64.0;
const MARGIN_BOTTOM: f32 = 64.0;
const FOOTER_Y: f32 = 36.0;
const TITLE_SIZE: f32 = 16.0;
const HEADING_SIZE: f32 = 12.5;
const BODY_SIZE: f32 = 10.5;
const FOOTER_SIZE: f32 = 8.0;
const LABEL_WIDTH: f32 = 170.0;
const COLUMN_GAP: f32 = 10.0;
const BULLET_INDENT: f32 = 14.0;
/// Side of one QR module in points (smaller for large codes, see `qr_module`).
const QR_MODULE: f32 = 3.0;
const QR_MAX_SIDE: f32 = 200.0;
/// Light modules around the code that scanners need.
const QR_QUIET: usize = 4;

/// What a page shows, in drawing order.
enum Op {
    Text {
        x: f32,
        y: f32,
        size: f32,
        grey: bool,
        text: String,
    },
    Line {
        x1: f32,
        x2: f32,
        y: f32,
    },
    Square {
        x: f32,
        y: f32,
        w: f32,
        h: f32,
    },
}

/// Lays blocks out top to bottom, starting new pages as needed.
struct Layout<'f> {
    font: &'f Font,
    pages: Vec<Vec<Op>>,
    /// Baseline cursor: the top of the next line, from the bottom of the page.
    y: f32,
}

impl<'f> Layout<'f> {
    fn new(font: &'f Font) -> Self {
        Layout {
            font,
            pages: vec![Vec::new()],
            y: PAGE_HEIGHT - MARGIN_TOP,
        }
    }

    fn content_width() -> f32 {
        PAGE_WIDTH - 2.0 * MARGIN_X
    }

    fn new_page(&mut self) {
        self.pages.push(Vec::new());
        self.y = PAGE_HEIGHT - MARGIN_TOP;
    }

    /// Makes room for `height` points, breaking the page when they do not fit.
    fn room(&mut self, height: f32) {
        let page_is_empty = self.pages.last().is_none_or(|p| p.is_empty());
        if self.y - height < MARGIN_BOTTOM && !page_is_empty {
            self.new_page();
        }
    }

    fn push(&mut self, op: Op) {
        if let Some(page) = self.pages.last_mut() {
            page.push(op);
        }
    }

    fn gap(&mut self, points: f32) {
        self.y -= points;
    }

    /// Wrapped lines of `text` at `size` within `width`.
    fn wrap(&self, text: &str, size: f32, width: f32) -> Vec<String> {
        let mut lines = Vec::new();
        for paragraph in text.split('\n') {
            let mut line = String::new();
            for word in paragraph.split_whitespace() {
                let candidate = if line.is_empty() {
                    word.to_string()
                } else {
                    format!("{line} {word}")
                };
                if self.font.width(&candidate, size) <= width {
                    line = candidate;
                    continue;
                }
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                // A word wider than the column is cut where it reaches the edge.
                for c in word.chars() {
                    let mut longer = line.clone();
                    longer.push(c);
                    if self.font.width(&longer, size) > width && !line.is_empty() {
                        lines.push(std::mem::replace(&mut line, c.to_string()));
                    } else {
                        line = longer;
                    }
                }
            }
            lines.push(line);
        }
        lines
    }

    fn line_height(size: f32) -> f32 {
        size * 1.35
    }

    /// Writes wrapped `text` at `x` within `width`.
    fn text(&mut self, text: &str, x: f32, width: f32, size: f32, grey: bool) {
        let lh = Self::line_height(size);
        for line in self.wrap(text, size, width) {
            self.room(lh);
            self.y -= lh;
            if !line.is_empty() {
                self.push(Op::Text {
                    x,
                    y: self.y + lh - size,
                    size,
                    grey,
                    text: line,
                });
            }
        }
    }

    fn block(&mut self, block: &PdfBlock) {
        let width = Self::content_width();
        match block {
            PdfBlock::Heading(text) => {
                // Keep a heading with at least two lines of what follows.
                self.room(Self::line_height(HEADING_SIZE) + 2.0 * Self::line_height(BODY_SIZE));
                self.gap(8.0);
                self.text(text, MARGIN_X, width, HEADING_SIZE, false);
                self.gap(3.0);
            }
            PdfBlock::Paragraph(text) => {
                self.text(text, MARGIN_X, width, BODY_SIZE, false);
                self.gap(4.0);
            }
            PdfBlock::Bullet(text) => {
                let lh = Self::line_height(BODY_SIZE);
                self.room(lh);
                self.push(Op::Text {
                    x: MARGIN_X + 2.0,
                    y: self.y - BODY_SIZE,
                    size: BODY_SIZE,
                    grey: false,
                    text: "•".to_string(),
                });
                self.text(
                    text,
                    MARGIN_X + BULLET_INDENT,
                    width - BULLET_INDENT,
                    BODY_SIZE,
                    false,
                );
                self.gap(2.0);
            }
            PdfBlock::Field { label, value } => {
                let lh = Self::line_height(BODY_SIZE);
                let value_x = MARGIN_X + LABEL_WIDTH + COLUMN_GAP;
                let labels = self.wrap(label, BODY_SIZE, LABEL_WIDTH);
                let values = self.wrap(value, BODY_SIZE, width - LABEL_WIDTH - COLUMN_GAP);
                // Label and value share baselines, so extracted text reads "label value".
                for i in 0..labels.len().max(values.len()) {
                    self.room(lh);
                    self.y -= lh;
                    let baseline = self.y + lh - BODY_SIZE;
                    if let Some(l) = labels.get(i).filter(|l| !l.is_empty()) {
                        self.push(Op::Text {
                            x: MARGIN_X,
                            y: baseline,
                            size: BODY_SIZE,
                            grey: true,
                            text: l.clone(),
                        });
                    }
                    if let Some(v) = values.get(i).filter(|v| !v.is_empty()) {
                        self.push(Op::Text {
                            x: value_x,
                            y: baseline,
                            size: BODY_SIZE,
                            grey: false,
                            text: v.clone(),
                        });
                    }
                }
                self.gap(2.0);
            }
            PdfBlock::Rule => {
                self.room(8.0);
                self.gap(4.0);
                self.push(Op::Line {
                    x1: MARGIN_X,
                    x2: PAGE_WIDTH - MARGIN_X,
                    y: self.y,
                });
                self.gap(4.0);
            }
        }
    }

    fn qr(&mut self, text: &str) {
        let code = qrcode::QrCode::new(text.as_bytes())
            .or_else(|_| qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L));
        let Ok(code) = code else {
            // Beyond a QR code's capacity: say so on the page rather than fail the document.
            self.text(
                "QR-код не помещается: текст слишком длинный.",
                MARGIN_X,
                Self::content_width(),
                BODY_SIZE,
                true,
            );
            return;
        };
        let modules = code.width();
        let module = qr_module(modules);
        let side = (modules + 2 * QR_QUIET) as f32 * module;
        self.gap(6.0);
        self.room(side);
        let left = MARGIN_X + QR_QUIET as f32 * module;
        let top = self.y - QR_QUIET as f32 * module;
        let colors = code.to_colors();
        for row in 0..modules {
            let mut col = 0;
            while col < modules {
                let dark = |c: usize| colors.get(row * modules + c) == Some(&qrcode::Color::Dark);
                if !dark(col) {
                    col += 1;
                    continue;
                }
                // One rectangle per run of dark modules keeps the page small.
                let start = col;
                while col < modules && dark(col) {
                    col += 1;
                }
                self.push(Op::Square {
                    x: left + start as f32 * module,
                    y: top - (row + 1) as f32 * module,
                    w: (col - start) as f32 * module,
                    h: module,
                });
            }
        }
        self.y -= side;
    }
}

/// Module size so that the code with its quiet zone fits `QR_MAX_SIDE`.
fn qr_module(modules: usize) -> f32 {
    let total = (modules + 2 * QR_QUIET) as f32;
    if total * QR_MODULE <= QR_MAX_SIDE {
        QR_MODULE
    } else {
        (QR_MAX_SIDE / total * 4.0).floor() / 4.0
    }
}

/// Renders `doc` to PDF bytes; the same document always gives the same bytes.
pub fn render(doc: &PdfDocument) -> Vec<u8> {
    let font = Font::embedded();
    let mut layout = Layout::new(&font);
    layout.text(
        &doc.title,
        MARGIN_X,
        Layout::content_width(),
        TITLE_SIZE,
        false,
    );
    layout.block(&PdfBlock::Rule);
    for block in &doc.blocks {
        layout.block(block);
    }
    if let Some(qr) = &doc.qr {
        layout.qr(qr);
    }
    let page_count = layout.pages.len();
    let footers: Vec<String> = (1..=page_count)
        .map(|n| format!("{} · стр. {n} из {page_count}", doc.title))
        .collect();
    let mut pages = layout.pages;
    for (page, footer) in pages.iter_mut().zip(&footers) {
        page.push(Op::Text {
            x: MARGIN_X,
            y: FOOTER_Y,
            size: FOOTER_SIZE,
            grey: true,
            text: footer.clone(),
        });
    }

    let mut used = Vec::new();
    for op in pages.iter().flatten() {
        if let Op::Text { text, .. } = op {
            used.extend(text.chars());
        }
    }
    used.extend(doc.title.chars());
    let embedded = EmbeddedFont::new(&font, &used);

    let mut w = Writer::new();
    let catalog = w.reserve();
    let pages_id = w.reserve();
    let type0 = w.reserve();
    let cid_font = w.reserve();
    let to_unicode = w.reserve();
    let descriptor = w.reserve();
    let font_file = w.reserve();
    let info = w.reserve();
    let page_ids: Vec<(usize, usize)> = pages.iter().map(|_| (w.reserve(), w.reserve())).collect();

    w.object(
        catalog,
        &format!("<< /Type /Catalog /Pages {pages_id} 0 R >>"),
    );
    let kids: Vec<String> = page_ids.iter().map(|(p, _)| format!("{p} 0 R")).collect();
    w.object(
        pages_id,
        &format!(
            "<< /Type /Pages /Kids [{}] /Count {} /MediaBox [0 0 {} {}] >>",
            kids.join(" "),
            page_ids.len(),
            num(PAGE_WIDTH),
            num(PAGE_HEIGHT)
        ),
    );
    let name = &embedded.base_name;
    w.object(
        type0,
        &format!(
            "<< /Type /Font /Subtype /Type0 /BaseFont /{name} /Encoding /Identity-H \
             /DescendantFonts [{cid_font} 0 R] /ToUnicode {to_unicode} 0 R >>"
        ),
    );
    w.object(
        cid_font,
        &format!(
            "<< /Type /Font /Subtype /CIDFontType2 /BaseFont /{name} \
             /CIDSystemInfo << /Registry (Adobe) /Ordering (Identity) /Supplement 0 >> \
             /FontDescriptor {descriptor} 0 R /CIDToGIDMap /Identity /DW 1000 /W {} >>",
            embedded.widths_array()
        ),
    );
    w.stream(to_unicode, "", embedded.to_unicode_cmap().as_bytes());
    w.object(
        descriptor,
        &format!(
            "<< /Type /FontDescriptor /FontName /{name} /Flags 32 {} /ItalicAngle 0 /StemV 80 \
             /FontFile2 {font_file} 0 R >>",
            EmbeddedFont::metrics(&font)
        ),
    );
    w.stream(
        font_file,
        &format!("/Length1 {}", embedded.program.len()),
        &embedded.program,
    );
    w.object(
        info,
        &format!(
            "<< /Title {} /Producer (Kabinet) >>",
            text_string(&doc.title)
        ),
    );
    for (ops, (page_id, content_id)) in pages.iter().zip(&page_ids) {
        w.object(
            *page_id,
            &format!(
                "<< /Type /Page /Parent {pages_id} 0 R /Resources << /Font << /F1 {type0} 0 R >> >> \
                 /Contents {content_id} 0 R >>"
            ),
        );
        w.stream(*content_id, "", content(ops, &font, &embedded).as_bytes());
    }
    w.finish(catalog, info)
}

/// The content stream of one page.
fn content(ops: &[Op], font: &Font, embedded: &EmbeddedFont) -> String {
    let mut out = String::new();
    for op in ops {
        match op {
            Op::Text {
                x,
                y,
                size,
                grey,
                text,
            } => {
                let shade = if *grey { "0.35" } else { "0" };
                let _ = writeln!(
                    out,
                    "BT /F1 {} Tf {shade} g {} {} Td {} Tj ET",
                    num(*size),
                    num(*x),
                    num(*y),
                    embedded.encode(font, text)
                );
            }
            Op::Line { x1, x2, y } => {
                let _ = writeln!(
                    out,
                    "0.6 G 0.5 w {} {y} m {} {y} l S",
                    num(*x1),
                    num(*x2),
                    y = num(*y)
                );
            }
            Op::Square { x, y, w, h } => {
                let _ = writeln!(
                    out,
                    "0 g {} {} {} {} re f",
                    num(*x),
                    num(*y),
                    num(*w),
                    num(*h)
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PdfDocument {
        PdfDocument {
            title: "Выписка из истории болезни".to_string(),
            blocks: vec![
                PdfBlock::Field {
                    label: "Пациент".to_string(),
                    value: "Иванова Мария Петровна".to_string(),
                },
                PdfBlock::Heading("Посещения".to_string()),
                PdfBlock::Paragraph("Длинный абзац ".repeat(400)),
                PdfBlock::Bullet("Рекомендации: покой".to_string()),
            ],
            qr: Some("https://kabinet.example/verify/abc".to_string()),
        }
    }

    #[test]
    fn the_same_document_renders_to_the_same_bytes() {
        assert_eq!(render(&sample()), render(&sample()));
    }

    #[test]
    fn long_text_breaks_into_pages_and_the_file_is_well_formed() {
        let pdf = render(&sample());
        assert!(pdf.starts_with(b"%PDF-1.7"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let text = String::from_utf8_lossy(&pdf);
        let pages = text.matches("/Type /Page ").count();
        assert!(pages >= 2, "expected a page break, got {pages} page(s)");
        // A subset, not the 750 kB font.
        assert!(pdf.len() < 120_000, "{} bytes", pdf.len());
    }

    #[test]
    fn wrapping_keeps_lines_within_the_column() {
        let font = Font::embedded();
        let layout = Layout::new(&font);
        let lines = layout.wrap(&"слово ".repeat(100), BODY_SIZE, 200.0);
        assert!(lines.len() > 5);
        for line in &lines {
            assert!(font.width(line, BODY_SIZE) <= 200.0, "{line}");
        }
        let cut = layout.wrap(&"ы".repeat(300), BODY_SIZE, 100.0);
        assert!(cut.len() > 1);
    }
}
