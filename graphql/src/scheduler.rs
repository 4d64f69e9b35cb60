//! The scheduler: appends the events that time causes — prescription expiry,
//! OMS policy renewal reminders and policy expiry.
//!
//! It finds due objects in the read models and sends an ordinary command as
//! the system for each. Running it in several processes is safe: the
//! aggregates refuse a second expiry or reminder, and such refusals are
//! expected and ignored.

use std::sync::Arc;
use std::time::Duration;

use chrono::Days;
use kabinet_domain::clock::Clock;
use kabinet_domain::command::{CommandError, CommandRunner, Retry};
use kabinet_domain::policies::{Policy, PolicyCommand};
use kabinet_domain::prescriptions::{Prescription, PrescriptionCommand};
use kabinet_domain::{Actor, Db, EventMetadata, Role};
use kabinet_projections::{policies, prescriptions};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Objects handled per kind and pass.
const BATCH: usize = 200;

/// What the scheduler needs.
#[derive(Clone)]
pub struct Scheduler {
    pub db: Db,
    pub commands: CommandRunner,
    pub clock: Arc<dyn Clock>,
    /// Days before a policy ends that its holder is reminded.
    pub renewal_days: u32,
}

/// How many events one pass appended, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    pub prescriptions_expired: usize,
    pub renewal_reminders: usize,
    pub policies_expired: usize,
}

fn system_metadata(what: &str) -> EventMetadata {
    let actor = Actor {
        account_id: Uuid::nil(),
        role: Role::System,
        organisation_id: None,
    };
    EventMetadata::new(
        actor,
        format!("scheduler-{what}-{}", Uuid::now_v7().simple()),
    )
}

/// Whether a failed scheduled command is worth a warning (refusals are not:
/// another process or an earlier pass got there first).
fn is_fault<E: std::error::Error>(e: &CommandError<E>) -> bool {
    !matches!(e, CommandError::Rejected(_))
}

impl Scheduler {
    /// Runs passes every `interval` until `shutdown`.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "scheduler pass failed; will retry");
            }
        }
    }

    /// One pass over everything due now.
    pub async fn pass(&self) -> Result<PassReport, sqlx::Error> {
        let now = self.clock.now();
        let today = now.date_naive();
        let mut report = PassReport::default();
        for id in prescriptions::due_for_expiry(&self.db, now, BATCH).await? {
            let result = self
                .commands
                .execute::<Prescription>(
                    &id.to_string(),
                    PrescriptionCommand::Expire { now },
                    &(),
                    &system_metadata("expire-prescription"),
                    &serde_json::json!({ "expire": id }),
                    Retry::OnConflict,
                )
                .await;
            match result {
                Ok((outcome, _)) if !outcome.events.is_empty() => report.prescriptions_expired += 1,
                Ok(_) => {}
                Err(e) if is_fault(&e) => {
                    tracing::warn!(prescription = %id, error = %e, "cannot expire prescription")
                }
                Err(_) => {}
            }
        }
        let remind_by = today
            .checked_add_days(Days::new(u64::from(self.renewal_days)))
            .unwrap_or(today);
        for id in policies::active_ending_by(&self.db, remind_by, true, BATCH).await? {
            let command = PolicyCommand::RemindRenewal {
                today,
                days_before: self.renewal_days,
            };
            self.policy(id, command, "remind-renewal", &mut report.renewal_reminders)
                .await;
        }
        let ended_by = today.pred_opt().unwrap_or(today);
        for id in policies::active_ending_by(&self.db, ended_by, false, BATCH).await? {
            let command = PolicyCommand::Expire { today };
            self.policy(id, command, "expire-policy", &mut report.policies_expired)
                .await;
        }
        Ok(report)
    }

    /// Sends `command` to policy `id`; counts it in `done` when it appended.
    async fn policy(&self, id: Uuid, command: PolicyCommand, what: &str, done: &mut usize) {
        let result = self
            .commands
            .execute::<Policy>(
                &id.to_string(),
                command,
                &(),
                &system_metadata(what),
                &serde_json::json!({ what: id }),
                Retry::OnConflict,
            )
            .await;
        match result {
            Ok((outcome, _)) if !outcome.events.is_empty() => *done += 1,
            Ok(_) => {}
            Err(e) if is_fault(&e) => {
                tracing::warn!(policy = %id, error = %e, "scheduled policy command failed")
            }
            Err(_) => {}
        }
    }
}
