//! The policy aggregate: applied → active (issued) or rejected; active → expired.

use chrono::{DateTime, NaiveDate, Utc};
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::application::{PolicyApplication, PolicyHolder, PolicyKind};
use super::{NUMBER_SCOPE, PERSON_SCOPE};
use crate::directory::BoundedText;
use crate::identity::OmsPolicyNumber;
use crate::journal::reservations::{conflict, ReservationOp, ReservationTaken, Reserving};
use crate::user_error::{AsUserError, UserError};

/// Where a policy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyStatus {
    Applied,
    Active,
    Rejected,
    Expired,
}

impl PolicyStatus {
    /// The stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyStatus::Applied => "applied",
            PolicyStatus::Active => "active",
            PolicyStatus::Rejected => "rejected",
            PolicyStatus::Expired => "expired",
        }
    }

    /// The status from its stable name.
    pub fn parse(raw: &str) -> Option<PolicyStatus> {
        Some(match raw {
            "applied" => PolicyStatus::Applied,
            "active" => PolicyStatus::Active,
            "rejected" => PolicyStatus::Rejected,
            "expired" => PolicyStatus::Expired,
            _ => return None,
        })
    }
}

/// The policy number whose first fifteen digits are `fifteen` (digits only),
/// completed with its check digit.
pub fn complete_number(fifteen: u64) -> Option<OmsPolicyNumber> {
    let body = format!("{fifteen:015}");
    if body.len() != 15 {
        return None;
    }
    // Exactly one of the ten possible last digits satisfies the check.
    (0..10).find_map(|d| OmsPolicyNumber::parse(&format!("{body}{d}")).ok())
}

/// Commands on a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyCommand {
    Apply {
        patient_id: Uuid,
        application: PolicyApplication,
    },
    /// Issues the policy under `number` (the server draws it).
    Issue {
        number: OmsPolicyNumber,
        now: DateTime<Utc>,
    },
    Reject {
        reason: String,
    },
    /// Sent by the scheduler `days_before` days before the period ends.
    RemindRenewal {
        today: NaiveDate,
        days_before: u32,
    },
    /// Sent by the scheduler once the period has ended.
    Expire {
        today: NaiveDate,
    },
}

/// Events of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyEvent {
    PolicyApplied {
        patient_id: Uuid,
        holder: PolicyHolder,
        kind: PolicyKind,
        region: Option<String>,
        valid_from: NaiveDate,
        valid_until: NaiveDate,
        status: PolicyStatus,
    },
    PolicyIssued {
        patient_id: Uuid,
        number: OmsPolicyNumber,
        issued_at: DateTime<Utc>,
        status: PolicyStatus,
    },
    PolicyApplicationRejected {
        patient_id: Uuid,
        reason: String,
        status: PolicyStatus,
    },
    PolicyRenewalDue {
        patient_id: Uuid,
        valid_until: NaiveDate,
        days_left: i64,
    },
    PolicyExpired {
        patient_id: Uuid,
        status: PolicyStatus,
    },
}

impl DomainEvent for PolicyEvent {
    fn event_type(&self) -> String {
        match self {
            PolicyEvent::PolicyApplied { .. } => "PolicyApplied",
            PolicyEvent::PolicyIssued { .. } => "PolicyIssued",
            PolicyEvent::PolicyApplicationRejected { .. } => "PolicyApplicationRejected",
            PolicyEvent::PolicyRenewalDue { .. } => "PolicyRenewalDue",
            PolicyEvent::PolicyExpired { .. } => "PolicyExpired",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a policy command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("no such policy application")]
    NotFound,
    #[error("the application already exists")]
    AlreadyExists,
    #[error("cannot {action} a policy that is {}", status.as_str())]
    WrongState {
        action: &'static str,
        status: PolicyStatus,
    },
    #[error("the renewal reminder was already sent")]
    AlreadyReminded,
    #[error("not due yet")]
    NotYetDue,
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
}

impl AsUserError for PolicyError {
    fn to_user_error(&self) -> UserError {
        let message = self.to_string();
        match self {
            PolicyError::NotFound => UserError::field("policyId", "NOT_FOUND", message),
            PolicyError::AlreadyExists => UserError::new("ALREADY_EXISTS", message),
            PolicyError::WrongState { .. } => UserError::new("INVALID_TRANSITION", message),
            PolicyError::AlreadyReminded => UserError::new("ALREADY_REMINDED", message),
            PolicyError::NotYetDue => UserError::new("NOT_YET_DUE", message),
            PolicyError::Invalid { field, message } => {
                UserError::field(field, "INVALID_INPUT", message.clone())
            }
        }
    }
}

/// An OMS policy, from its application on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub patient_id: Option<Uuid>,
    pub status: Option<PolicyStatus>,
    pub snils: Option<String>,
    pub valid_until: Option<NaiveDate>,
    pub number: Option<OmsPolicyNumber>,
    pub reminded: bool,
}

impl Policy {
    fn decide(&self, command: PolicyCommand) -> Result<PolicyEvent, PolicyError> {
        use PolicyStatus as S;
        if let PolicyCommand::Apply {
            patient_id,
            application,
        } = command
        {
            if self.patient_id.is_some() {
                return Err(PolicyError::AlreadyExists);
            }
            return Ok(PolicyEvent::PolicyApplied {
                patient_id,
                holder: application.holder,
                kind: application.kind,
                region: application.region,
                valid_from: application.valid_from,
                valid_until: application.valid_until,
                status: S::Applied,
            });
        }
        let (Some(patient_id), Some(status), Some(valid_until)) =
            (self.patient_id, self.status, self.valid_until)
        else {
            return Err(PolicyError::NotFound);
        };
        let require = |action, allowed: S| {
            if status == allowed {
                Ok(())
            } else {
                Err(PolicyError::WrongState { action, status })
            }
        };
        Ok(match command {
            PolicyCommand::Apply { .. } => return Err(PolicyError::AlreadyExists),
            PolicyCommand::Issue { number, now } => {
                require("issue", S::Applied)?;
                PolicyEvent::PolicyIssued {
                    patient_id,
                    number,
                    issued_at: now,
                    status: S::Active,
                }
            }
            PolicyCommand::Reject { reason } => {
                require("reject", S::Applied)?;
                let reason =
                    BoundedText::parse(&reason, 1000).map_err(|e| PolicyError::Invalid {
                        field: "reason",
                        message: e.to_string(),
                    })?;
                PolicyEvent::PolicyApplicationRejected {
                    patient_id,
                    reason: reason.as_str().to_string(),
                    status: S::Rejected,
                }
            }
            PolicyCommand::RemindRenewal { today, days_before } => {
                require("remind about", S::Active)?;
                if self.reminded {
                    return Err(PolicyError::AlreadyReminded);
                }
                let days_left = (valid_until - today).num_days();
                if days_left > i64::from(days_before) {
                    return Err(PolicyError::NotYetDue);
                }
                PolicyEvent::PolicyRenewalDue {
                    patient_id,
                    valid_until,
                    days_left: days_left.max(0),
                }
            }
            PolicyCommand::Expire { today } => {
                require("expire", S::Active)?;
                // Valid through its last day.
                if today <= valid_until {
                    return Err(PolicyError::NotYetDue);
                }
                PolicyEvent::PolicyExpired {
                    patient_id,
                    status: S::Expired,
                }
            }
        })
    }
}

impl Aggregate for Policy {
    const TYPE: &'static str = "policy";
    type Command = PolicyCommand;
    type Event = PolicyEvent;
    type Error = PolicyError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = self.decide(command)?;
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PolicyEvent::PolicyApplied {
                patient_id,
                holder,
                valid_until,
                status,
                ..
            } => {
                self.patient_id = Some(patient_id);
                self.snils = Some(holder.snils.digits());
                self.valid_until = Some(valid_until);
                self.status = Some(status);
            }
            PolicyEvent::PolicyIssued { number, status, .. } => {
                self.number = Some(number);
                self.status = Some(status);
            }
            PolicyEvent::PolicyApplicationRejected { status, .. }
            | PolicyEvent::PolicyExpired { status, .. } => self.status = Some(status),
            PolicyEvent::PolicyRenewalDue { .. } => self.reminded = true,
        }
    }
}

impl Reserving for Policy {
    /// An application holds its person until it is rejected or the policy
    /// expires; a number is held for ever (under its own owner, so releasing
    /// the person never frees it).
    fn reservations(aggregate_id: &str, events: &[PolicyEvent]) -> Vec<ReservationOp> {
        events
            .iter()
            .filter_map(|event| match event {
                PolicyEvent::PolicyApplied { holder, .. } => Some(ReservationOp::Take {
                    scope: PERSON_SCOPE,
                    key: holder.snils.digits(),
                    owner: aggregate_id.to_string(),
                }),
                PolicyEvent::PolicyIssued { number, .. } => Some(ReservationOp::Take {
                    scope: NUMBER_SCOPE,
                    key: number.as_str().to_string(),
                    owner: format!("{aggregate_id}/number"),
                }),
                PolicyEvent::PolicyApplicationRejected { .. }
                | PolicyEvent::PolicyExpired { .. } => Some(ReservationOp::ReleaseAll {
                    owner: aggregate_id.to_string(),
                }),
                PolicyEvent::PolicyRenewalDue { .. } => None,
            })
            .collect()
    }

    fn reservation_error(taken: &ReservationTaken) -> UserError {
        match taken.scope.as_str() {
            PERSON_SCOPE => UserError::field(
                "snils",
                "POLICY_ALREADY_ACTIVE",
                "this person already has an active OMS policy or an application in progress",
            ),
            NUMBER_SCOPE => UserError::new(
                "POLICY_NUMBER_TAKEN",
                "the drawn policy number is already in use; try again",
            ),
            _ => conflict(taken),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policies::{parse_application, RawApplication};
    use cqrs_es::test::TestFramework;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date")
    }

    fn application() -> PolicyApplication {
        let raw = RawApplication {
            surname: Some("Иванова".into()),
            first_name: Some("Мария".into()),
            patronymic: None,
            birth_date: Some("1990-04-12".into()),
            snils: Some("112-233-445 95".into()),
            passport_series: Some("4508".into()),
            passport_number: Some("123456".into()),
            kind: Some(PolicyKind::Federal),
            region: None,
            valid_from: Some("2026-12-01".into()),
            valid_until: Some("2027-12-01".into()),
            consent: true,
        };
        let holder = PolicyHolder {
            surname: "Иванова".into(),
            first_name: "Мария".into(),
            patronymic: None,
            birth_date: day("1990-04-12"),
            snils: crate::identity::Snils::parse("112-233-445 95").expect("snils"),
            passport_series: crate::identity::PassportSeries::parse("4508").expect("series"),
            passport_number: crate::identity::PassportNumber::parse("123456").expect("number"),
        };
        parse_application(&raw, &holder, day("2026-12-01")).expect("valid")
    }

    fn patient() -> Uuid {
        Uuid::from_u128(1)
    }

    fn applied() -> PolicyEvent {
        let a = application();
        PolicyEvent::PolicyApplied {
            patient_id: patient(),
            holder: a.holder,
            kind: a.kind,
            region: a.region,
            valid_from: a.valid_from,
            valid_until: a.valid_until,
            status: PolicyStatus::Applied,
        }
    }

    fn number() -> OmsPolicyNumber {
        complete_number(772345678901234).expect("number")
    }

    fn issued() -> PolicyEvent {
        PolicyEvent::PolicyIssued {
            patient_id: patient(),
            number: number(),
            issued_at: DateTime::from_timestamp(1_800_000_000, 0).expect("instant"),
            status: PolicyStatus::Active,
        }
    }

    #[test]
    fn applying_records_the_application() {
        TestFramework::<Policy>::with(())
            .given_no_previous_events()
            .when(PolicyCommand::Apply {
                patient_id: patient(),
                application: application(),
            })
            .then_expect_events(vec![applied()]);
    }

    #[test]
    fn issuing_an_application_makes_the_policy_active() {
        TestFramework::<Policy>::with(())
            .given(vec![applied()])
            .when(PolicyCommand::Issue {
                number: number(),
                now: DateTime::from_timestamp(1_800_000_000, 0).expect("instant"),
            })
            .then_expect_events(vec![issued()]);
    }

    #[test]
    fn cannot_issue_twice_or_reject_an_issued_policy() {
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::Reject {
                reason: "нет".into(),
            })
            .then_expect_error(PolicyError::WrongState {
                action: "reject",
                status: PolicyStatus::Active,
            });
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::Issue {
                number: number(),
                now: Utc::now(),
            })
            .then_expect_error(PolicyError::WrongState {
                action: "issue",
                status: PolicyStatus::Active,
            });
    }

    #[test]
    fn rejecting_needs_a_reason_and_closes_the_application() {
        TestFramework::<Policy>::with(())
            .given(vec![applied()])
            .when(PolicyCommand::Reject {
                reason: "  ".into(),
            })
            .then_expect_error(PolicyError::Invalid {
                field: "reason",
                message: crate::directory::TextError::Empty.to_string(),
            });
        TestFramework::<Policy>::with(())
            .given(vec![applied()])
            .when(PolicyCommand::Reject {
                reason: "Паспорт недействителен".into(),
            })
            .then_expect_events(vec![PolicyEvent::PolicyApplicationRejected {
                patient_id: patient(),
                reason: "Паспорт недействителен".into(),
                status: PolicyStatus::Rejected,
            }]);
    }

    #[test]
    fn the_renewal_reminder_comes_once_and_only_when_due() {
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::RemindRenewal {
                today: day("2027-10-01"),
                days_before: 30,
            })
            .then_expect_error(PolicyError::NotYetDue);
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::RemindRenewal {
                today: day("2027-11-11"),
                days_before: 30,
            })
            .then_expect_events(vec![PolicyEvent::PolicyRenewalDue {
                patient_id: patient(),
                valid_until: day("2027-12-01"),
                days_left: 20,
            }]);
        let reminded = PolicyEvent::PolicyRenewalDue {
            patient_id: patient(),
            valid_until: day("2027-12-01"),
            days_left: 20,
        };
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued(), reminded])
            .when(PolicyCommand::RemindRenewal {
                today: day("2027-11-12"),
                days_before: 30,
            })
            .then_expect_error(PolicyError::AlreadyReminded);
    }

    #[test]
    fn a_policy_expires_after_its_last_day_only() {
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::Expire {
                today: day("2027-12-01"),
            })
            .then_expect_error(PolicyError::NotYetDue);
        TestFramework::<Policy>::with(())
            .given(vec![applied(), issued()])
            .when(PolicyCommand::Expire {
                today: day("2027-12-02"),
            })
            .then_expect_events(vec![PolicyEvent::PolicyExpired {
                patient_id: patient(),
                status: PolicyStatus::Expired,
            }]);
        TestFramework::<Policy>::with(())
            .given(vec![applied()])
            .when(PolicyCommand::Expire {
                today: day("2027-12-02"),
            })
            .then_expect_error(PolicyError::WrongState {
                action: "expire",
                status: PolicyStatus::Applied,
            });
    }

    #[test]
    fn commands_on_an_unknown_policy_are_not_found() {
        TestFramework::<Policy>::with(())
            .given_no_previous_events()
            .when(PolicyCommand::Reject { reason: "x".into() })
            .then_expect_error(PolicyError::NotFound);
    }

    #[test]
    fn applications_hold_the_person_and_issues_hold_the_number_for_ever() {
        let ops = Policy::reservations("p1", &[applied(), issued()]);
        assert_eq!(
            ops,
            vec![
                ReservationOp::Take {
                    scope: PERSON_SCOPE,
                    key: "11223344595".into(),
                    owner: "p1".into()
                },
                ReservationOp::Take {
                    scope: NUMBER_SCOPE,
                    key: number().as_str().into(),
                    owner: "p1/number".into()
                },
            ]
        );
        let expired = PolicyEvent::PolicyExpired {
            patient_id: patient(),
            status: PolicyStatus::Expired,
        };
        assert_eq!(
            Policy::reservations("p1", &[expired]),
            vec![ReservationOp::ReleaseAll { owner: "p1".into() }]
        );
    }

    #[test]
    fn drawn_numbers_carry_a_valid_check_digit() {
        for fifteen in [0u64, 1, 772345678901234, 999_999_999_999_999] {
            let n = complete_number(fifteen).expect("completes");
            assert_eq!(n.as_str().len(), 16);
            assert!(OmsPolicyNumber::parse(n.as_str()).is_ok());
        }
        assert!(complete_number(1_000_000_000_000_000).is_none());
    }
}
