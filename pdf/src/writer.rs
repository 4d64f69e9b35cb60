//! A minimal PDF 1.7 file writer: numbered objects, flate streams, the cross-reference table.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Builds a PDF file object by object; object numbers are given out in order from 1.
pub(super) struct Writer {
    out: Vec<u8>,
    offsets: Vec<usize>,
}

impl Writer {
    /// A file with its header written.
    pub(super) fn new() -> Writer {
        let mut out = Vec::with_capacity(64 * 1024);
        // The binary comment tells transfer tools the file is not plain text.
        out.extend_from_slice(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        Writer {
            out,
            offsets: Vec::new(),
        }
    }

    /// Reserves the next object number (written later with `object` / `stream`).
    pub(super) fn reserve(&mut self) -> usize {
        self.offsets.push(0);
        self.offsets.len()
    }

    /// Writes object `id` with the dictionary or value `body`.
    pub(super) fn object(&mut self, id: usize, body: &str) {
        self.start(id);
        self.out.extend_from_slice(body.as_bytes());
        self.out.extend_from_slice(b"\nendobj\n");
    }

    /// Writes object `id` as a flate-compressed stream; `extra` adds dictionary entries.
    pub(super) fn stream(&mut self, id: usize, extra: &str, data: &[u8]) {
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(data, 9);
        self.start(id);
        let _ = write!(
            Bytes(&mut self.out),
            "<< /Length {} /Filter /FlateDecode{}{} >>\nstream\n",
            packed.len(),
            if extra.is_empty() { "" } else { " " },
            extra
        );
        self.out.extend_from_slice(&packed);
        self.out.extend_from_slice(b"\nendstream\nendobj\n");
    }

    fn start(&mut self, id: usize) {
        if let Some(slot) = self.offsets.get_mut(id - 1) {
            *slot = self.out.len();
        }
        let _ = writeln!(Bytes(&mut self.out), "{id} 0 obj");
    }

    /// Writes the cross-reference table and trailer and returns the file.
    ///
    /// The file id is a hash of the content, so equal documents give equal bytes.
    pub(super) fn finish(mut self, root: usize, info: usize) -> Vec<u8> {
        let digest = Sha256::digest(&self.out);
        let file_id = hex::encode(&digest[..16]);
        let xref_at = self.out.len();
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len() + 1);
        for offset in &self.offsets {
            let _ = writeln!(table, "{offset:010} 00000 n ");
        }
        let _ = write!(
            table,
            "trailer\n<< /Size {} /Root {root} 0 R /Info {info} 0 R /ID [<{file_id}> <{file_id}>] >>\nstartxref\n{xref_at}\n%%EOF\n",
            self.offsets.len() + 1
        );
        self.out.extend_from_slice(table.as_bytes());
        self.out
    }
}

/// `fmt::Write` into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A number as PDF writes it: at most two decimals, no trailing zeros.
pub(super) fn num(value: f32) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" || text.is_empty() {
        "0".to_string()
    } else {
        text.to_string()
    }
}

/// A text string for the document information dictionary (UTF-16BE with a byte-order mark).
pub(super) fn text_string(text: &str) -> String {
    let mut out = String::from("<FEFF");
    for unit in text.encode_utf16() {
        let _ = write!(out, "{unit:04X}");
    }
    out.push('>');
    out
}
