//! What an analyst may see: subject ids replaced by keyed hashes, personal
//! fields removed.

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::Sha256;
use uuid::Uuid;

/// The shortest pseudonymisation key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 16;

/// Aggregates whose stream id is a person's id (a doctor's schedule is keyed by
/// the doctor's id).
pub const PERSON_AGGREGATES: [&str; 5] = [
    "patient",
    "doctor",
    "schedule",
    "account",
    "identity_verification",
];

/// Field names (or prefixes, ending in `*`) of personal data, removed unless
/// the export includes personal data.
pub const PERSONAL_FIELDS: [&str; 23] = [
    "full_name",
    "surname",
    "first_name",
    "last_name",
    "middle_name",
    "patronymic",
    "given_name",
    "family_name",
    "birth_date",
    "date_of_birth",
    "sex",
    "snils",
    "passport*",
    "oms*",
    "phone*",
    "email*",
    "address*",
    "registration_address",
    "actual_address",
    "diagnosis_text",
    "recommendations",
    "comment*",
    "note*",
];

/// Whether a field of this name holds personal data.
pub fn is_personal(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    PERSONAL_FIELDS.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => field.starts_with(prefix),
        None => field == *p,
    })
}

/// Whether a field of this name holds subject ids (`*_id`, `*_ids`).
pub fn is_id_field(field: &str) -> bool {
    let field = field.to_ascii_lowercase();
    field.ends_with("_id") || field.ends_with("_ids")
}

/// Replaces subject ids with HMAC-SHA256 pseudonyms under one key, so the same
/// subject gets the same pseudonym in every field and every export with that key.
pub struct Pseudonymiser {
    mac: Hmac<Sha256>,
    keep_personal: bool,
}

impl Pseudonymiser {
    /// A pseudonymiser with `key`; `keep_personal` keeps personal fields.
    pub fn new(key: &[u8], keep_personal: bool) -> anyhow::Result<Self> {
        if key.len() < MIN_KEY_BYTES {
            anyhow::bail!(
                "the pseudonymisation key must be at least {MIN_KEY_BYTES} bytes (set KABINET_EXPORT_KEY)"
            );
        }
        let mac = Hmac::<Sha256>::new_from_slice(key)
            .map_err(|_| anyhow::anyhow!("the pseudonymisation key is not usable"))?;
        Ok(Pseudonymiser { mac, keep_personal })
    }

    /// The pseudonym of a subject id: hex HMAC-SHA256 of its canonical (lowercase) form.
    pub fn pseudonym(&self, id: &Uuid) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.hyphenated().to_string().as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// The stream id as exported: pseudonymised for person-like aggregates.
    pub fn aggregate_id(&self, aggregate_type: &str, aggregate_id: &str) -> String {
        match Uuid::parse_str(aggregate_id) {
            Ok(id) if PERSON_AGGREGATES.contains(&aggregate_type) => self.pseudonym(&id),
            _ => aggregate_id.to_string(),
        }
    }

    /// A payload or metadata object with ids pseudonymised and personal fields
    /// removed (unless kept), at any depth.
    pub fn value(&self, value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(self.object(map)),
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.value(v)).collect()),
            other => other,
        }
    }

    fn object(&self, map: Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::with_capacity(map.len());
        for (name, value) in map {
            if !self.keep_personal && is_personal(&name) {
                continue;
            }
            let value = if is_id_field(&name) {
                self.ids(value)
            } else {
                self.value(value)
            };
            out.insert(name, value);
        }
        out
    }

    /// An id field's value: UUID strings (alone or in a list) pseudonymised.
    fn ids(&self, value: Value) -> Value {
        match value {
            Value::String(s) => match Uuid::parse_str(&s) {
                Ok(id) => Value::String(self.pseudonym(&id)),
                Err(_) => Value::String(s),
            },
            Value::Array(items) => Value::Array(items.into_iter().map(|v| self.ids(v)).collect()),
            other => self.value(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_become_stable_pseudonyms_and_personal_fields_go() {
        let p = Pseudonymiser::new(b"0123456789abcdef", false).expect("key");
        let patient = Uuid::new_v4();
        let out = p.value(json!({
            "Booked": {
                "patient_id": patient.to_string(),
                "doctor_ids": [patient.to_string()],
                "surname": "Иванов",
                "passport_number": "4510 123456",
                "room": "12",
                "request_id": "not-a-uuid",
            }
        }));
        let pseudonym = p.pseudonym(&patient);
        assert_eq!(
            out,
            json!({ "Booked": {
                "patient_id": pseudonym,
                "doctor_ids": [pseudonym],
                "room": "12",
                "request_id": "not-a-uuid",
            }})
        );
        assert_ne!(pseudonym, patient.to_string());
        let other = Pseudonymiser::new(b"another key of 16+", false).expect("key");
        assert_ne!(other.pseudonym(&patient), pseudonym);
    }

    #[test]
    fn short_keys_are_refused() {
        assert!(Pseudonymiser::new(b"short", false).is_err());
    }
}
