//! Opaque slot ids: a slot is a doctor and a start instant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// The opaque id of the slot of `doctor_id` starting at `start`.
pub fn encode(doctor_id: Uuid, start: DateTime<Utc>) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("Slot:{doctor_id}:{}", start.timestamp())))
}

/// The doctor and start of a slot id.
pub fn decode(raw: &str) -> Option<(Uuid, DateTime<Utc>)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("Slot"), Some(doctor), Some(start), None) => Some((
            Uuid::parse_str(doctor).ok()?,
            DateTime::from_timestamp(start.parse().ok()?, 0)?,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_round_trip() {
        let doctor = Uuid::now_v7();
        let start = DateTime::from_timestamp(1_795_000_000, 0).expect("time");
        assert_eq!(decode(&encode(doctor, start)), Some((doctor, start)));
        assert_eq!(decode("Slot"), None);
    }
}
