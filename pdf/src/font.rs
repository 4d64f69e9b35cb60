//! The embedded font: glyph lookup, advances, subsetting and the ToUnicode map.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ttf_parser::{Face, GlyphId};

/// DejaVu Sans (Bitstream Vera licence, see assets/fonts/LICENSE-DejaVu.txt):
/// full Cyrillic and Latin coverage, freely redistributable.
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// PostScript name of the embedded font.
const FONT_NAME: &str = "DejaVuSans";

/// The embedded font, parsed.
pub(super) struct Font {
    face: Face<'static>,
    units_per_em: f32,
}

impl Font {
    /// Parses the embedded font; it is part of the binary, so failing here is a build defect
    /// that the module's tests catch.
    pub(super) fn embedded() -> Font {
        #[allow(clippy::expect_used)]
        let face = Face::parse(DEJAVU_SANS, 0).expect("the embedded DejaVu Sans font parses");
        let units_per_em = f32::from(face.units_per_em().max(1));
        Font { face, units_per_em }
    }

    /// The glyph of `c`, or `.notdef` (0) when the font lacks it.
    pub(super) fn glyph(&self, c: char) -> u16 {
        self.face.glyph_index(c).map(|g| g.0).unwrap_or(0)
    }

    /// Advance width of glyph `gid` in thousandths of the font size.
    pub(super) fn advance_milli(&self, gid: u16) -> f32 {
        let units = self.face.glyph_hor_advance(GlyphId(gid)).unwrap_or(0);
        f32::from(units) * 1000.0 / self.units_per_em
    }

    /// Width of `text` set at `size` points.
    pub(super) fn width(&self, text: &str, size: f32) -> f32 {
        text.chars()
            .map(|c| self.advance_milli(self.glyph(c)))
            .sum::<f32>()
            * size
            / 1000.0
    }

    /// Scales font units to the PDF's thousandths of an em.
    fn milli(&self, units: i16) -> i32 {
        (f32::from(units) * 1000.0 / self.units_per_em).round() as i32
    }
}

/// The font as embedded in one document: a subset of the glyphs it uses.
pub(super) struct EmbeddedFont {
    /// Glyph id in the full font → character id written in content streams.
    cids: BTreeMap<u16, u16>,
    /// The font program (a TrueType subset, or the whole font if subsetting failed).
    pub(super) program: Vec<u8>,
    /// `/W` entries: character id → advance in thousandths of an em.
    widths: BTreeMap<u16, i32>,
    /// Character id → the text it stands for, for `ToUnicode`.
    unicode: BTreeMap<u16, char>,
    /// Subset tag + name, e.g. `ABCDEF+DejaVuSans`.
    pub(super) base_name: String,
}

impl EmbeddedFont {
    /// Subsets `font` to the glyphs of `chars` (in first-use order).
    pub(super) fn new(font: &Font, chars: &[char]) -> EmbeddedFont {
        let mut by_glyph: BTreeMap<u16, char> = BTreeMap::new();
        for &c in chars {
            by_glyph.entry(font.glyph(c)).or_insert(c);
        }
        let glyphs: Vec<u16> = by_glyph.keys().copied().collect();
        let remapper = subsetter::GlyphRemapper::new_from_glyphs_sorted(&glyphs);
        let (program, cids): (Vec<u8>, BTreeMap<u16, u16>) =
            match subsetter::subset(DEJAVU_SANS, 0, &remapper) {
                Ok(subset) => (
                    subset,
                    glyphs
                        .iter()
                        .map(|&g| (g, remapper.get(g).unwrap_or(0)))
                        .collect(),
                ),
                Err(e) => {
                    // A larger file beats a document without text.
                    tracing::warn!(error = %e, "font subsetting failed; embedding the whole font");
                    (
                        DEJAVU_SANS.to_vec(),
                        glyphs.iter().map(|&g| (g, g)).collect(),
                    )
                }
            };
        let mut widths = BTreeMap::new();
        let mut unicode = BTreeMap::new();
        for (&gid, &cid) in &cids {
            widths.insert(cid, font.advance_milli(gid).round() as i32);
            if gid != 0 {
                if let Some(&c) = by_glyph.get(&gid) {
                    unicode.insert(cid, c);
                }
            }
        }
        EmbeddedFont {
            base_name: format!("{}+{FONT_NAME}", subset_tag(&glyphs)),
            cids,
            program,
            widths,
            unicode,
        }
    }

    /// The content-stream string (`<…>` hex of two-byte character ids) showing `text`.
    pub(super) fn encode(&self, font: &Font, text: &str) -> String {
        let mut out = String::with_capacity(text.len() * 4 + 2);
        out.push('<');
        for c in text.chars() {
            let cid = self.cids.get(&font.glyph(c)).copied().unwrap_or(0);
            let _ = write!(out, "{cid:04X}");
        }
        out.push('>');
        out
    }

    /// The `/W` array of the CID font.
    pub(super) fn widths_array(&self) -> String {
        let mut out = String::from("[");
        for (cid, w) in &self.widths {
            let _ = write!(out, " {cid} [{w}]");
        }
        out.push_str(" ]");
        out
    }

    /// The ToUnicode CMap, so text extraction gives back the characters.
    pub(super) fn to_unicode_cmap(&self) -> String {
        let mut out = String::from(
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
             /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
             /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
             1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n",
        );
        let entries: Vec<(&u16, &char)> = self.unicode.iter().collect();
        // A bfchar block holds at most 100 entries.
        for chunk in entries.chunks(100) {
            let _ = writeln!(out, "{} beginbfchar", chunk.len());
            for (cid, c) in chunk {
                let mut utf16 = [0u16; 2];
                let hex: String = c
                    .encode_utf16(&mut utf16)
                    .iter()
                    .map(|u| format!("{u:04X}"))
                    .collect();
                let _ = writeln!(out, "<{cid:04X}> <{hex}>");
            }
            out.push_str("endbfchar\n");
        }
        out.push_str("endcmap\nCMapName currentdict /defineresource pop\nend\nend\n");
        out
    }

    /// The font descriptor's metrics: `/FontBBox`, `/Ascent`, `/Descent`, `/CapHeight`.
    pub(super) fn metrics(font: &Font) -> String {
        let bbox = font.face.global_bounding_box();
        let ascent = font.milli(font.face.ascender());
        let descent = font.milli(font.face.descender());
        let cap = font.milli(font.face.capital_height().unwrap_or(font.face.ascender()));
        format!(
            "/FontBBox [{} {} {} {}] /Ascent {ascent} /Descent {descent} /CapHeight {cap}",
            font.milli(bbox.x_min),
            font.milli(bbox.y_min),
            font.milli(bbox.x_max),
            font.milli(bbox.y_max),
        )
    }
}

/// Six capital letters derived from the glyph set: the same subset gets the same tag,
/// so the output stays deterministic while distinct subsets stay distinguishable.
fn subset_tag(glyphs: &[u16]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for g in glyphs {
        hasher.update(g.to_be_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(6)
        .map(|b| char::from(b'A' + b % 26))
        .collect()
}
