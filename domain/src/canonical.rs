//! RFC 8785 (JSON Canonicalization Scheme) encoding of the values the journal hashes.
//!
//! Events never hold floats, so numbers are always integers and print exactly;
//! a float is refused rather than canonicalised approximately.

use serde_json::Value;

/// Why a value has no canonical form in the journal.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    #[error("a number that is not an integer cannot be hashed into the journal: {0}")]
    NonIntegerNumber(String),
    #[error("the integer {0} is outside the exactly representable range of RFC 8785")]
    IntegerOutOfRange(String),
}

/// Largest integer that RFC 8785 (IEEE 754 doubles) represents exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The canonical bytes of `value`.
pub fn to_canonical_bytes(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(256);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Appends the canonical encoding of `value` to `out`.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange(n.to_string()));
                }
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError::IntegerOutOfRange(n.to_string()));
                }
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return Err(CanonicalError::NonIntegerNumber(n.to_string()));
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // RFC 8785 orders members by the UTF-16 code units of their names.
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, (name, item)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(name, out);
                out.push(b':');
                write_value(item, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

/// JSON string escaping as RFC 8785 requires: `"` and `\` escaped, the short
/// forms for \b \t \n \f \r, other control characters as lowercase `\u00xx`,
/// everything else verbatim.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{08}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{0c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes());
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(v: Value) -> String {
        String::from_utf8(to_canonical_bytes(&v).expect("canonical")).expect("utf8")
    }

    #[test]
    fn members_are_sorted_by_utf16_code_units() {
        // U+FB33 sorts after U+1F600 in UTF-16 (0xFB33 > 0xD83D) although it sorts
        // before it by code point.
        let v = json!({"\u{fb33}": 1, "\u{1f600}": 2, "a": 3, "\r": 4, "1": 5, "\u{20ac}": 6});
        assert_eq!(
            canon(v),
            "{\"\\r\":4,\"1\":5,\"a\":3,\"€\":6,\"😀\":2,\"\u{fb33}\":1}"
        );
    }

    #[test]
    fn whitespace_is_removed_and_nesting_kept() {
        let v: Value = serde_json::from_str(r#"{ "b" : [ 1 , { "d":null, "c":true } ], "a":"x" }"#)
            .expect("json");
        assert_eq!(canon(v), r#"{"a":"x","b":[1,{"c":true,"d":null}]}"#);
    }

    #[test]
    fn strings_escape_only_what_the_rfc_requires() {
        let v = json!("a\"b\\c/\u{1}\u{1f}\n\tй€");
        assert_eq!(canon(v), "\"a\\\"b\\\\c/\\u0001\\u001f\\n\\tй€\"");
    }

    #[test]
    fn floats_and_unsafe_integers_are_refused() {
        assert!(matches!(
            to_canonical_bytes(&json!(1.5)),
            Err(CanonicalError::NonIntegerNumber(_))
        ));
        assert!(matches!(
            to_canonical_bytes(&json!(1u64 << 60)),
            Err(CanonicalError::IntegerOutOfRange(_))
        ));
        assert_eq!(canon(json!(-42)), "-42");
    }
}
