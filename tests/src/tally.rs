//! `Tally`: the smallest aggregate that exercises the journal, a running sum.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::Barrier;

/// Commands on a tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyCommand {
    Add {
        amount: i64,
    },
    /// One `Added` event per amount, committed together.
    AddEach {
        amounts: Vec<i64>,
    },
}

/// Events of a tally.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TallyEvent {
    Added { amount: i64 },
}

impl DomainEvent for TallyEvent {
    fn event_type(&self) -> String {
        match self {
            TallyEvent::Added { .. } => "Added".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

/// Why a tally refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TallyError {
    /// Adding nothing is refused, so tests can provoke a business error.
    #[error("the amount must not be zero")]
    ZeroAmount,
}

/// What a tally's handler may use: an optional gate that holds the first
/// attempt of a command between loading the aggregate and committing.
///
/// Every command given the same gate waits until all of them have loaded the
/// same stream head, so they are certain to race for one sequence number.
/// Retries after a conflict pass straight through.
#[derive(Debug, Default)]
pub struct TallyServices {
    gate: Option<Arc<Barrier>>,
    passed: AtomicBool,
}

impl TallyServices {
    /// Services whose first `handle` waits at `gate`.
    pub fn gated(gate: Arc<Barrier>) -> Self {
        TallyServices {
            gate: Some(gate),
            passed: AtomicBool::new(false),
        }
    }
}

/// A running sum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub total: i64,
    pub additions: i64,
}

impl Aggregate for Tally {
    const TYPE: &'static str = "tally";
    type Command = TallyCommand;
    type Event = TallyEvent;
    type Error = TallyError;
    type Services = TallyServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let Some(gate) = &services.gate {
            if !services.passed.swap(true, Ordering::SeqCst) {
                gate.wait().await;
            }
        }
        let amounts = match command {
            TallyCommand::Add { amount } => vec![amount],
            TallyCommand::AddEach { amounts } => amounts,
        };
        if amounts.contains(&0) {
            return Err(TallyError::ZeroAmount);
        }
        for amount in amounts {
            sink.write(TallyEvent::Added { amount }, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TallyEvent::Added { amount } => {
                self.total += amount;
                self.additions += 1;
            }
        }
    }
}

impl kabinet_domain::journal::reservations::Reserving for Tally {}
