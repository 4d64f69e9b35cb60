//! `verify` and `digest`: the auditor's proof that the journal is what was written.

use std::process::ExitCode;

use anyhow::{bail, Context};
use kabinet_domain::journal::verify::{
    verify_scope, ChainBreak, Digest, VerifyPhase, VerifyReport, VerifyScope,
};
use kabinet_domain::{Db, Journal};
use serde_json::{json, Value};

use crate::cli::VerifyArgs;
use crate::progress::Bar;
use crate::source::position_range;

/// Runs `verify`: exit 0 intact, 1 broken.
pub async fn verify(db: &Db, args: &VerifyArgs, as_json: bool) -> anyhow::Result<ExitCode> {
    let digest = args
        .digest
        .as_deref()
        .map(str::parse::<Digest>)
        .transpose()?;
    let (from, to) = if args.from.is_some() || args.to.is_some() {
        let (from, to) = position_range(db, args.from, args.to).await?;
        (Some(from), Some(to))
    } else {
        (None, None)
    };
    let scope = VerifyScope { from, to, digest };
    // Chains and seals are checked side by side: the bar shows both together.
    let mut bar = Bar::new("verifying chains+seals");
    let (mut chains, mut seals) = ((0, 0), (0, 0));
    let report = verify_scope(db, &scope, |p| {
        match p.phase {
            VerifyPhase::Chains => chains = (p.done, p.total),
            VerifyPhase::Seals => seals = (p.done, p.total),
        }
        bar.set(chains.0 + seals.0, chains.1 + seals.1);
    })
    .await
    .context("the check could not read the journal")?;
    bar.finish();
    print_report(&report, &scope, as_json);
    Ok(if report.is_intact() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn break_json(b: &ChainBreak) -> Value {
    json!({
        "position": b.position,
        "stream": format!("{}/{}", b.aggregate_type, b.aggregate_id),
        "sequence": b.sequence,
        "kind": kind_name(b),
        "expected": b.expected.map(hex::encode),
        "found": b.found.map(hex::encode),
        "description": b.to_string(),
    })
}

/// A stable name of what broke, for scripts.
fn kind_name(b: &ChainBreak) -> &'static str {
    use kabinet_domain::journal::verify::BreakKind;
    match b.kind {
        BreakKind::HashMismatch => "hash_mismatch",
        BreakKind::MissingEvents { .. } => "missing_events",
        BreakKind::SealMismatch { .. } => "seal_mismatch",
        BreakKind::Reordered { .. } => "reordered",
        BreakKind::DigestMismatch { .. } => "digest_mismatch",
    }
}

fn print_report(report: &VerifyReport, scope: &VerifyScope, as_json: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "intact": report.is_intact(),
                "from": scope.from,
                "to": scope.to,
                "digest": scope.digest.map(|d| d.to_string()),
                "digest_proven": scope.digest.map(|_| report.is_intact()),
                "digest_seal": report.digest_seal,
                "events": report.events_checked,
                "streams": report.streams_checked,
                "seals": report.seals_checked,
                "bytes_hashed": report.bytes_hashed,
                "breaks": report.breaks,
                "first_break": report.first_break.as_ref().map(break_json),
            })
        );
        return;
    }
    if let Some(first) = &report.first_break {
        println!("BROKEN: {first}");
        println!(
            "{} problem(s) in {} events, {} seals",
            report.breaks, report.events_checked, report.seals_checked
        );
    } else {
        println!(
            "intact: {} events in {} streams, {} seals",
            report.events_checked, report.streams_checked, report.seals_checked
        );
        if let (Some(digest), Some(seal)) = (scope.digest, report.digest_seal) {
            println!("digest {digest} proven: seal {seal} and everything before it are unchanged");
        }
    }
}

/// Runs `digest`: prints the newest seal's digest.
pub async fn digest(db: Db, as_json: bool) -> anyhow::Result<ExitCode> {
    let Some(seal) = Journal::new(db).latest_seal().await? else {
        bail!("the journal has no seal yet: start the server, which seals new events");
    };
    if as_json {
        println!(
            "{}",
            json!({
                "digest": seal.digest(),
                "seal": seal.seal_no,
                "position": seal.last.position,
                "sealed_at": seal.sealed_at,
            })
        );
    } else {
        println!("{}", seal.digest());
    }
    Ok(ExitCode::SUCCESS)
}
