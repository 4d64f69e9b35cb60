//! The per-stream SHA-256 chain and the global seal chain.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::canonical::{write_value, CanonicalError};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The previous hash of the first event of every stream, and of the first seal.
pub const GENESIS: Hash = [0u8; 32];

/// The parts of an event that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct EventContent<'a> {
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub sequence: i64,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a Value,
    pub metadata: &'a Value,
}

impl EventContent<'_> {
    /// The RFC 8785 canonical JSON object the hash is taken over: the event's
    /// fields and `prev_hash` (hex), members in canonical order.
    pub fn canonical_bytes(&self, prev: &Hash) -> Result<Vec<u8>, CanonicalError> {
        let mut out = Vec::with_capacity(512);
        // Member names in RFC 8785 order (all ASCII, so byte order is UTF-16 order).
        out.extend_from_slice(b"{\"aggregate_id\":");
        write_value(&Value::String(self.aggregate_id.to_string()), &mut out)?;
        out.extend_from_slice(b",\"aggregate_type\":");
        write_value(&Value::String(self.aggregate_type.to_string()), &mut out)?;
        out.extend_from_slice(b",\"event_type\":");
        write_value(&Value::String(self.event_type.to_string()), &mut out)?;
        out.extend_from_slice(b",\"event_version\":");
        write_value(&Value::String(self.event_version.to_string()), &mut out)?;
        out.extend_from_slice(b",\"metadata\":");
        write_value(self.metadata, &mut out)?;
        out.extend_from_slice(b",\"payload\":");
        write_value(self.payload, &mut out)?;
        out.extend_from_slice(b",\"prev_hash\":\"");
        out.extend_from_slice(hex::encode(prev).as_bytes());
        out.extend_from_slice(b"\",\"sequence\":");
        out.extend_from_slice(self.sequence.to_string().as_bytes());
        out.push(b'}');
        Ok(out)
    }

    /// The event's chain hash given the previous event's hash in its stream.
    pub fn hash(&self, prev: &Hash) -> Result<Hash, CanonicalError> {
        Ok(Sha256::digest(self.canonical_bytes(prev)?).into())
    }
}

/// Folds event hashes, in global order, into a seal root.
#[derive(Clone, Default)]
pub struct SealRoot {
    hasher: Sha256,
    count: i64,
}

impl SealRoot {
    /// Adds the next event hash in global order.
    pub fn push(&mut self, event_hash: &[u8]) {
        self.hasher.update(event_hash);
        self.count += 1;
    }

    /// How many hashes were folded in.
    pub fn count(&self) -> i64 {
        self.count
    }

    /// The root: SHA-256 over the concatenated event hashes.
    pub fn finish(self) -> Hash {
        self.hasher.finalize().into()
    }
}

/// The fields of a seal record its hash covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContent {
    pub seal_no: i64,
    pub first: (i64, i64),
    pub last: (i64, i64),
    pub event_count: i64,
    pub root: Hash,
    pub prev_hash: Hash,
}

impl SealContent {
    /// The seal's hash over its canonical JSON form.
    pub fn hash(&self) -> Hash {
        let text = format!(
            "{{\"event_count\":{},\"first_position\":{},\"first_tx\":{},\"last_position\":{},\"last_tx\":{},\"prev_hash\":\"{}\",\"root\":\"{}\",\"seal_no\":{}}}",
            self.event_count,
            self.first.1,
            self.first.0,
            self.last.1,
            self.last.0,
            hex::encode(self.prev_hash),
            hex::encode(self.root),
            self.seal_no
        );
        Sha256::digest(text.as_bytes()).into()
    }
}

/// Reads a 32-byte hash from a database column.
pub fn hash_from_slice(bytes: &[u8]) -> Option<Hash> {
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_is_the_rfc_8785_encoding_of_the_whole_object() {
        let payload = json!({"b": 1, "a": "й"});
        let metadata = json!({"actor_id": "x"});
        let content = EventContent {
            aggregate_type: "t",
            aggregate_id: "id",
            sequence: 3,
            event_type: "E",
            event_version: "1.0",
            payload: &payload,
            metadata: &metadata,
        };
        let bytes = content.canonical_bytes(&GENESIS).expect("canonical");
        let whole = json!({
            "aggregate_type": "t", "aggregate_id": "id", "sequence": 3, "event_type": "E",
            "event_version": "1.0", "payload": payload, "metadata": metadata,
            "prev_hash": hex::encode(GENESIS),
        });
        assert_eq!(
            bytes,
            crate::canonical::to_canonical_bytes(&whole).expect("canonical")
        );
    }

    #[test]
    fn hash_depends_on_the_previous_hash() {
        let v = json!({});
        let content = EventContent {
            aggregate_type: "t",
            aggregate_id: "id",
            sequence: 1,
            event_type: "E",
            event_version: "1",
            payload: &v,
            metadata: &v,
        };
        assert_ne!(
            content.hash(&GENESIS).expect("hash"),
            content.hash(&[1u8; 32]).expect("hash")
        );
    }
}
