//! Opaque global ids of the `Node` interface: base64 of `Type:uuid`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use uuid::Uuid;

/// Encodes the global id of object `id` of GraphQL type `type_name`.
pub fn encode(type_name: &str, id: Uuid) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{type_name}:{id}")))
}

/// Encodes the global id of an object of `type_name` keyed by text rather than a uuid
/// (a medical service by its code); `node` answers `null` for it.
pub fn encode_key(type_name: &str, key: &str) -> async_graphql::ID {
    async_graphql::ID(URL_SAFE_NO_PAD.encode(format!("{type_name}:{key}")))
}

/// The kind of object a journal line is about: the aggregate its event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
pub enum ObjectType {
    Organisation,
    Doctor,
    /// A doctor's schedule; its id is the doctor's.
    Schedule,
    MedicalService,
    Appointment,
    ReferralRequest,
    Prescription,
    Policy,
    DocumentRequest,
    Account,
    /// A patient's details; the id is the patient's account.
    Patient,
    /// A patient's identity verification; the id is the patient's account.
    IdentityVerification,
    /// Notification preferences; the id is the account's.
    NotificationSettings,
    /// A kind of object this server version does not name.
    Other,
}

impl ObjectType {
    /// The object type of an aggregate type as the journal stores it.
    pub fn of_aggregate(aggregate_type: &str) -> ObjectType {
        match aggregate_type {
            "organisation" => ObjectType::Organisation,
            "doctor" => ObjectType::Doctor,
            "schedule" => ObjectType::Schedule,
            "service" => ObjectType::MedicalService,
            "appointment" => ObjectType::Appointment,
            "referral" => ObjectType::ReferralRequest,
            "prescription" => ObjectType::Prescription,
            "policy" => ObjectType::Policy,
            "document_request" => ObjectType::DocumentRequest,
            "account" => ObjectType::Account,
            "patient" => ObjectType::Patient,
            "identity_verification" => ObjectType::IdentityVerification,
            "notification_settings" => ObjectType::NotificationSettings,
            _ => ObjectType::Other,
        }
    }

    /// The GraphQL type whose global id names the object.
    fn id_type(self) -> &'static str {
        match self {
            ObjectType::Organisation => "Organisation",
            ObjectType::Doctor | ObjectType::Schedule => "Doctor",
            ObjectType::MedicalService => "MedicalService",
            ObjectType::Appointment => "Appointment",
            ObjectType::ReferralRequest => "ReferralRequest",
            ObjectType::Prescription => "Prescription",
            ObjectType::Policy => "Policy",
            ObjectType::DocumentRequest => "DocumentRequest",
            ObjectType::Account
            | ObjectType::Patient
            | ObjectType::IdentityVerification
            | ObjectType::NotificationSettings => "Account",
            ObjectType::Other => "Unknown",
        }
    }

    /// The global id of the object with stream id `raw`.
    pub fn global_id(self, raw: &str) -> async_graphql::ID {
        match Uuid::parse_str(raw) {
            Ok(id) => encode(self.id_type(), id),
            Err(_) => encode_key(self.id_type(), raw),
        }
    }
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

    #[test]
    fn journal_objects_get_the_global_id_of_their_type() {
        let id = Uuid::now_v7();
        let raw = id.to_string();
        let of = |t: &str| ObjectType::of_aggregate(t).global_id(&raw);
        assert_eq!(decode_as(&of("appointment"), "Appointment"), Some(id));
        assert_eq!(decode_as(&of("referral"), "ReferralRequest"), Some(id));
        assert_eq!(decode_as(&of("schedule"), "Doctor"), Some(id));
        assert_eq!(decode_as(&of("patient"), "Account"), Some(id));
        let service = ObjectType::of_aggregate("service").global_id("B01.047.001");
        assert_eq!(
            decode(&service),
            None,
            "a code is not a uuid: node answers null"
        );
        assert_eq!(ObjectType::of_aggregate("comet"), ObjectType::Other);
    }
}
