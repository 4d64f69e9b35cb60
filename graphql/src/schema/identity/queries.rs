//! The caller's profile and verification, and the passport-scan review queue.

use super::{
    load_profile, load_verification, IdentityVerificationView, PassportScanForReview,
    PatientProfile, ScanQueueConnection,
};
use crate::schema::context::{
    actor_in, in_care_of_caller, internal, record_medical_read, services,
};
use crate::schema::ids;
use crate::schema::links::DownloadLink;
use crate::schema::pagination::forward_page;
use async_graphql::connection::{Connection, Edge};
use async_graphql::{Context, Object, ID};
use kabinet_domain::Role;

/// Profile and verification queries.
#[derive(Default)]
pub struct IdentityQuery;

#[Object]
impl IdentityQuery {
    /// The caller's profile (patients).
    async fn my_profile(&self, ctx: &Context<'_>) -> async_graphql::Result<PatientProfile> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        load_profile(ctx, actor.account_id).await
    }

    /// A patient's profile, for registrars and doctors of an organisation the patient
    /// is in the care of (an appointment, a referral, an open document request or an
    /// active prescription there); `null` otherwise. Doctors see the whole profile;
    /// registrars only what booking needs: name, birth date, sex and phone. Every
    /// such read is recorded.
    async fn patient_profile(
        &self,
        ctx: &Context<'_>,
        patient_id: ID,
    ) -> async_graphql::Result<Option<PatientProfile>> {
        let actor = actor_in(ctx, &[Role::Registrar, Role::Doctor])?;
        let Some(patient) = ids::decode_as(&patient_id, "Account") else {
            return Ok(None);
        };
        if !in_care_of_caller(ctx, actor, patient).await? {
            return Ok(None);
        }
        record_medical_read(ctx, patient, "profile", None).await?;
        let profile = load_profile(ctx, patient).await?;
        Ok(Some(match actor.role {
            Role::Doctor => profile,
            _ => PatientProfile {
                snils: None,
                oms_policy: None,
                passport_series: None,
                passport_number: None,
                email: None,
                registration_address: None,
                actual_address: None,
                ..profile
            },
        }))
    }

    /// Passport scans awaiting review, oldest first (registrars and administrators).
    /// Each read of a patient's data here is recorded.
    #[graphql(
        complexity = "crate::schema::pagination::connection_complexity(child_complexity, first, None)"
    )]
    async fn passport_scans_awaiting_review(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<ScanQueueConnection> {
        actor_in(ctx, super::REVIEWERS)?;
        let (first, offset) = forward_page(first, after)?;
        let mut queue = services(ctx)
            .identity
            .scans_awaiting_review(first + 1, offset)
            .await
            .map_err(|e| internal(ctx, e))?;
        let has_next = queue.len() > first;
        queue.truncate(first);
        let mut connection = Connection::new(offset > 0, has_next);
        for (i, scan) in queue.into_iter().enumerate() {
            record_medical_read(ctx, scan.patient_id, "passport_scan_review", None).await?;
            let profile = load_profile(ctx, scan.patient_id).await?;
            let patient_id = ids::encode("Account", scan.patient_id);
            let cursor = kabinet_projections::page::OffsetCursor(offset + i + 1).encode();
            connection.edges.push(Edge::new(
                cursor,
                PassportScanForReview {
                    download: DownloadLink::unsigned(format!(
                        "/identity/passport-scans/{}/{}",
                        patient_id.as_str(),
                        scan.sha256
                    )),
                    patient_id,
                    sha256: scan.sha256,
                    size: scan.size as i64,
                    format: scan.format.as_str().to_string(),
                    uploaded_at: scan.uploaded_at,
                    profile,
                },
            ));
        }
        Ok(connection)
    }

    /// The caller's identity verification and its steps (patients).
    async fn my_identity_verification(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<IdentityVerificationView> {
        let actor = actor_in(ctx, &[Role::Patient])?;
        load_verification(ctx, actor.account_id).await
    }
}
