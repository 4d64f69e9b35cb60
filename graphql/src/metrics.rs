//! Prometheus metrics, recorded through the `metrics` facade into the
//! Prometheus exporter's recorder (without a listener of its own) and rendered
//! by the `/metrics` route, which asks for the metrics token.
//!
//! The HTTP layer calls [`track_requests`] (every route) and
//! [`observe_graphql`] (each GraphQL operation); gauges of the journal, the
//! projections, the pool, the dispatcher and the process are sampled when
//! `/metrics` is scraped.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use kabinet_domain::Db;
use kabinet_projections::Projector;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests served, by route, method and status.
pub const HTTP_REQUESTS: &str = "kabinet_http_requests_total";
/// Time to answer a request, by route.
pub const HTTP_DURATION: &str = "kabinet_http_request_duration_seconds";
/// GraphQL operations executed, by operation name.
pub const GRAPHQL_REQUESTS: &str = "kabinet_graphql_requests_total";
/// Time to execute a GraphQL operation, by operation name.
pub const GRAPHQL_DURATION: &str = "kabinet_graphql_request_duration_seconds";
/// GraphQL responses that carry top-level errors, by operation name.
pub const GRAPHQL_ERRORS: &str = "kabinet_graphql_errors_total";
/// Errors answered, by their stable code (GraphQL `extensions.code` and the
/// JSON envelope of other routes).
pub const ERRORS: &str = "kabinet_errors_total";
/// Requests refused before execution (malformed, batched, too large).
pub const REJECTED: &str = "kabinet_rejected_requests_total";
/// Requests with a bearer token that does not verify.
pub const UNAUTHENTICATED: &str = "kabinet_unauthenticated_requests_total";
/// Journal order each projection has applied, as its position.
pub const PROJECTION_POSITION: &str = "kabinet_projection_position";
/// Journal events each projection has still to apply.
pub const PROJECTION_LAG: &str = "kabinet_projection_lag_events";
/// Highest global position in the journal.
pub const JOURNAL_POSITION: &str = "kabinet_journal_position";
/// Connections the database pool holds, by state (`open`, `idle`, `max`).
pub const POOL_CONNECTIONS: &str = "kabinet_db_pool_connections";
/// Notifications waiting for the dispatcher, by state (`new`, `retry`).
pub const DISPATCHER_BACKLOG: &str = "kabinet_dispatcher_backlog";
/// Resident memory of the process.
pub const RESIDENT_MEMORY: &str = "process_resident_memory_bytes";

/// Latency buckets, in seconds: from a cached read to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Distinct operation names given labels of their own; later names share [`OTHER`].
const MAX_OPERATIONS: usize = 200;
/// Longest operation name given a label of its own.
const MAX_OPERATION_LEN: usize = 64;
/// The label of requests that name no operation.
pub const ANONYMOUS: &str = "anonymous";
/// The label of operation names past the cap or not shaped like a GraphQL name.
pub const OTHER: &str = "other";
/// Histogram samples are folded into buckets once every this many requests.
const UPKEEP_EVERY: u64 = 512;

/// The process's recorder: `metrics` has one global recorder, so every server
/// in a process (tests start several) shares it.
fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("_duration_seconds".to_string()),
                LATENCY_BUCKETS,
            )
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Fails only when another recorder was installed first; ours still renders.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
        }
        handle
    })
}

/// Makes sure the recorder is installed before anything is recorded.
pub fn install() {
    handle();
}

/// Axum middleware: counts every request and times it per matched route
/// (the route's pattern, so paths with ids stay one series).
pub async fn track_requests(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = request.method().as_str().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    observe_request(
        &route,
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Records one answered request.
pub fn observe_request(route: &str, method: &str, status: u16, elapsed: Duration) {
    counter!(
        HTTP_REQUESTS,
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    histogram!(HTTP_DURATION, "route" => route.to_string()).record(elapsed.as_secs_f64());
    upkeep();
}

/// The name of the operation `request` runs: the one it gives, else the name
/// of the document's only operation (frontends often leave `operationName` out).
pub fn operation_of(request: &async_graphql::Request) -> Option<String> {
    if let Some(name) = request.operation_name.as_ref().filter(|n| !n.is_empty()) {
        return Some(name.clone());
    }
    // Parsed once more only when the request names no operation; the body
    // size limit bounds the cost, and a document that does not parse is anonymous.
    let document = async_graphql::parser::parse_query(&request.query).ok()?;
    match document.operations {
        async_graphql::parser::types::DocumentOperations::Multiple(operations)
            if operations.len() == 1 =>
        {
            operations.into_keys().next().map(|name| name.to_string())
        }
        _ => None,
    }
}

/// The codes of `response`'s top-level errors, as its extensions give them.
pub fn error_codes(response: &async_graphql::Response) -> Vec<&str> {
    response
        .errors
        .iter()
        .filter_map(|e| match e.extensions.as_ref()?.get("code")? {
            async_graphql::Value::String(code) => Some(code.as_str()),
            _ => None,
        })
        .collect()
}

/// Records one executed GraphQL operation with the codes of its top-level errors.
pub fn observe_graphql(operation: Option<&str>, elapsed: Duration, error_codes: &[&str]) {
    let operation = operation_label(operation);
    counter!(GRAPHQL_REQUESTS, "operation" => operation.clone()).increment(1);
    histogram!(GRAPHQL_DURATION, "operation" => operation.clone()).record(elapsed.as_secs_f64());
    if !error_codes.is_empty() {
        counter!(GRAPHQL_ERRORS, "operation" => operation).increment(1);
    }
    for code in error_codes {
        observe_error(code);
    }
}

/// Records an error answered with `code`.
pub fn observe_error(code: &str) {
    counter!(ERRORS, "code" => code_label(code)).increment(1);
}

/// Records a request refused before execution.
pub fn observe_rejected() {
    counter!(REJECTED).increment(1);
}

/// Records a request whose credentials did not verify.
pub fn observe_unauthenticated() {
    counter!(UNAUTHENTICATED).increment(1);
}

/// The label of an operation name: the name itself for the first
/// [`MAX_OPERATIONS`] well-formed names, else [`OTHER`]; none is [`ANONYMOUS`].
fn operation_label(operation: Option<&str>) -> String {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let Some(name) = operation.filter(|n| !n.is_empty()) else {
        return ANONYMOUS.to_string();
    };
    let well_formed = name.len() <= MAX_OPERATION_LEN
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !well_formed {
        return OTHER.to_string();
    }
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if seen.contains(name) {
        return name.to_string();
    }
    if seen.len() < MAX_OPERATIONS {
        seen.insert(name.to_string());
        return name.to_string();
    }
    OTHER.to_string()
}

/// The label of an error code: codes are ours (`SLOT_TAKEN`), so anything
/// else shaped differently is folded into one label.
fn code_label(code: &str) -> String {
    let ours = !code.is_empty()
        && code.len() <= 48
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    if ours {
        code.to_string()
    } else {
        "OTHER".to_string()
    }
}

/// Folds buffered histogram samples into their buckets now and then, so memory
/// stays bounded between scrapes.
fn upkeep() {
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    if REQUESTS.fetch_add(1, Ordering::Relaxed) % UPKEEP_EVERY == UPKEEP_EVERY - 1 {
        handle().run_upkeep();
    }
}

/// Samples the gauges of this server and renders every metric in the
/// Prometheus text format.
pub async fn render(db: &Db, projector: &Projector) -> String {
    for (name, at) in projector.progress() {
        gauge!(PROJECTION_POSITION, "projection" => name).set(at.position as f64);
    }
    match kabinet_projections::events_behind(db, &projector.names()).await {
        Ok(behind) => {
            for (name, events) in behind {
                gauge!(PROJECTION_LAG, "projection" => name).set(events as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot measure projection lag"),
    }
    let head = kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(position) FROM events")
            .fetch_one(pool)
            .await
    });
    match head {
        Ok(head) => gauge!(JOURNAL_POSITION).set(head.unwrap_or(0) as f64),
        Err(e) => tracing::warn!(error = %e, "cannot read the journal head"),
    }
    let (open, idle, max) = kabinet_domain::on_db!(db, pool => {
        (pool.size(), pool.num_idle(), pool.options().get_max_connections())
    });
    gauge!(POOL_CONNECTIONS, "state" => "open").set(f64::from(open));
    gauge!(POOL_CONNECTIONS, "state" => "idle").set(idle as f64);
    gauge!(POOL_CONNECTIONS, "state" => "max").set(f64::from(max));
    match kabinet_projections::notifications::dispatch_backlog(db).await {
        Ok((new, retry)) => {
            gauge!(DISPATCHER_BACKLOG, "state" => "new").set(new as f64);
            gauge!(DISPATCHER_BACKLOG, "state" => "retry").set(retry as f64);
        }
        // The notifications table appears with the projector's first start.
        Err(e) => tracing::debug!(error = %e, "cannot measure the dispatcher backlog"),
    }
    if let Some(bytes) = resident_memory_bytes() {
        gauge!(RESIDENT_MEMORY).set(bytes as f64);
    }
    handle().render()
}

/// Resident set size of this process in bytes (Linux: `VmRSS` of
/// `/proc/self/status`, given in kB whatever the page size).
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_rss_bytes(&status)
}

/// `VmRSS:   12345 kB` → bytes.
fn vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = words.next()?.parse().ok()?;
    match words.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_is_read_in_kilobytes_not_pages() {
        let status = "Name:\tkabinet\nVmHWM:\t  20480 kB\nVmRSS:\t   16384 kB\nThreads:\t8\n";
        assert_eq!(vm_rss_bytes(status), Some(16384 * 1024));
        assert_eq!(vm_rss_bytes("VmRSS:\t16384 pages\n"), None);
        assert!(resident_memory_bytes().is_some_and(|b| b > 0));
    }

    #[test]
    fn operation_labels_stay_bounded() {
        assert_eq!(operation_label(None), ANONYMOUS);
        assert_eq!(operation_label(Some("")), ANONYMOUS);
        assert_eq!(operation_label(Some("not a name")), OTHER);
        assert_eq!(operation_label(Some(&"a".repeat(65))), OTHER);
        assert_eq!(operation_label(Some("BookAppointment")), "BookAppointment");
        for i in 0..MAX_OPERATIONS {
            operation_label(Some(&format!("Filler{i}")));
        }
        assert_eq!(operation_label(Some("OneTooMany")), OTHER);
        assert_eq!(operation_label(Some("BookAppointment")), "BookAppointment");
    }

    #[test]
    fn an_operation_is_named_by_the_request_or_by_its_only_operation() {
        let named = |query: &str, name: Option<&str>| {
            let mut request = async_graphql::Request::new(query);
            if let Some(name) = name {
                request = request.operation_name(name);
            }
            operation_of(&request)
        };
        assert_eq!(
            named("query A { a } query B { b }", Some("B")).as_deref(),
            Some("B")
        );
        assert_eq!(named("mutation Book { b }", None).as_deref(), Some("Book"));
        assert_eq!(named("{ a }", None), None);
        assert_eq!(named("query A { a } query B { b }", None), None);
        assert_eq!(named("not graphql", None), None);
    }

    #[test]
    fn error_codes_are_ours_or_folded() {
        assert_eq!(code_label("SLOT_TAKEN"), "SLOT_TAKEN");
        assert_eq!(code_label("drop table"), "OTHER");
    }
}
