//! Opaque global ids of the `Node` interface: base64 of `Type:uuid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

/// Encodes the global id of object `id` of GraphQL type `type_name`.
pub fn encode(type_name: &str, id: Uuid) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{type_name}:{id}")))
}

/// Splits a global id into its type name and uuid.
pub fn decode(raw: &str) -> Option<(String, Uuid)> {
    let bytes = URL_SAFE_NO_PAD.decode(raw.as_bytes()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (type_name, id) = text.split_once(':')?;
    Some((type_name.to_string(), Uuid::parse_str(id).ok()?))
}

/// The uuid of a global id that must be of `type_name`.
pub fn decode_as(raw: &str, type_name: &str) -> Option<Uuid> {
    match decode(raw) {
        Some((t, id)) if t == type_name => Some(id),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_keep_their_type() {
        let id = Uuid::now_v7();
        let global = encode("Organisation", id);
        assert_eq!(decode_as(&global, "Organisation"), Some(id));
        assert_eq!(decode_as(&global, "Appointment"), None);
        assert_eq!(decode("%%%"), None);
    }
}
