//! Prometheus metrics in the text exposition format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of the server.
#[derive(Debug, Default)]
pub struct Metrics {
    pub http_requests: AtomicU64,
    pub graphql_requests: AtomicU64,
    pub graphql_errors: AtomicU64,
    pub rejected_requests: AtomicU64,
    pub unauthenticated: AtomicU64,
}

impl Metrics {
    /// Adds one to `counter`.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with gauges of the projections and the process.
    pub fn render(&self, projections: &[(&str, i64)], journal_events: Option<i64>) -> String {
        let mut out = String::with_capacity(1024);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        counter(
            "kabinet_http_requests_total",
            "HTTP requests received.",
            get(&self.http_requests),
        );
        counter(
            "kabinet_graphql_requests_total",
            "GraphQL operations executed.",
            get(&self.graphql_requests),
        );
        counter(
            "kabinet_graphql_errors_total",
            "GraphQL responses carrying errors.",
            get(&self.graphql_errors),
        );
        counter(
            "kabinet_rejected_requests_total",
            "Requests refused before execution (malformed, batched).",
            get(&self.rejected_requests),
        );
        counter(
            "kabinet_unauthenticated_requests_total",
            "Requests with an invalid bearer token.",
            get(&self.unauthenticated),
        );
        let _ = writeln!(out, "# HELP kabinet_projection_position Global position each projection has applied.\n# TYPE kabinet_projection_position gauge");
        for (name, position) in projections {
            let _ = writeln!(
                out,
                "kabinet_projection_position{{projection=\"{name}\"}} {position}"
            );
        }
        if let Some(n) = journal_events {
            let _ = writeln!(out, "# HELP kabinet_journal_position Highest global position in the journal.\n# TYPE kabinet_journal_position gauge\nkabinet_journal_position {n}");
        }
        if let Some(rss) = resident_memory_bytes() {
            let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}");
        }
        out
    }
}

/// Resident set size of this process (Linux), in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
