//! Who acted and why: the metadata every journal event carries.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Version of the metadata layout written into new events.
pub const METADATA_SCHEMA_VERSION: &str = "1";

/// A role an account acts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Patient,
    Registrar,
    Doctor,
    Lab,
    Pharmacist,
    Auditor,
    Analyst,
    Admin,
    /// The server itself (schedulers, the sealer); never granted to a token.
    System,
}

impl Role {
    /// Every role a token may carry.
    pub const ASSIGNABLE: [Role; 8] = [
        Role::Patient,
        Role::Registrar,
        Role::Doctor,
        Role::Lab,
        Role::Pharmacist,
        Role::Auditor,
        Role::Analyst,
        Role::Admin,
    ];

    /// The stable lowercase name used in tokens and metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Patient => "patient",
            Role::Registrar => "registrar",
            Role::Doctor => "doctor",
            Role::Lab => "lab",
            Role::Pharmacist => "pharmacist",
            Role::Auditor => "auditor",
            Role::Analyst => "analyst",
            Role::Admin => "admin",
            Role::System => "system",
        }
    }

    /// Whether the role belongs to clinic staff, bound to one organisation.
    pub fn is_clinic_staff(self) -> bool {
        matches!(
            self,
            Role::Registrar | Role::Doctor | Role::Lab | Role::Pharmacist
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A role name that is not one of the assignable roles.
#[derive(Debug, thiserror::Error)]
#[error("unknown role '{0}'; expected one of patient, registrar, doctor, lab, pharmacist, auditor, analyst, admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ASSIGNABLE
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

/// The authenticated caller of a command or query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub account_id: Uuid,
    pub role: Role,
    pub organisation_id: Option<Uuid>,
}

impl Actor {
    /// The server acting on its own behalf.
    pub fn system() -> Self {
        Actor {
            account_id: Uuid::nil(),
            role: Role::System,
            organisation_id: None,
        }
    }
}

/// Metadata recorded with every event of one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMetadata {
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub request_id: String,
    pub idempotency_key: Option<String>,
}

impl EventMetadata {
    /// Metadata for a command that starts a new causal chain.
    pub fn new(actor: Actor, request_id: impl Into<String>) -> Self {
        let id = Uuid::now_v7();
        EventMetadata {
            actor,
            correlation_id: id,
            causation_id: id,
            request_id: request_id.into(),
            idempotency_key: None,
        }
    }

    /// The same metadata carrying an idempotency key.
    pub fn with_idempotency_key(mut self, key: Option<String>) -> Self {
        self.idempotency_key = key;
        self
    }

    /// The string map cqrs-es stores in the `metadata` column.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut map = HashMap::with_capacity(8);
        map.insert("schema_version".into(), METADATA_SCHEMA_VERSION.into());
        map.insert("actor_id".into(), self.actor.account_id.to_string());
        map.insert("actor_role".into(), self.actor.role.as_str().into());
        if let Some(org) = self.actor.organisation_id {
            map.insert("actor_organisation_id".into(), org.to_string());
        }
        map.insert("correlation_id".into(), self.correlation_id.to_string());
        map.insert("causation_id".into(), self.causation_id.to_string());
        map.insert("request_id".into(), self.request_id.clone());
        if let Some(key) = &self.idempotency_key {
            map.insert("idempotency_key".into(), key.clone());
        }
        map
    }
}
