//! Command line: flags with `KABINET_*` / `DATABASE_URL` environment fallbacks.
//!
//! Secrets (`--pseudonym-key`, `--token`, `--jwt-secret`) are read from the
//! environment by preference, never printed, and the argument structs holding
//! them do not implement `Debug`.

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Verify, replay, rebuild and export the Kabinet journal.
///
/// Exit status: 0 success (the journal is intact, no differences), 1 the journal
/// is broken or a rebuild check found differences, 2 the tool could not run.
#[derive(Parser)]
#[command(name = "kabinet-replay", version)]
pub struct Cli {
    /// `sqlite://PATH` or `postgres://USER@HOST/DB`.
    #[arg(
        long,
        global = true,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://kabinet.db"
    )]
    pub database_url: String,
    /// Machine-readable output (one JSON document on stdout).
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Subcommand)]
pub enum Command {
    /// Recompute the hash chains and seals, optionally of a range, and prove a kept digest.
    Verify(VerifyArgs),
    /// Print the journal's current digest (`HASH@POSITION`) for the auditor to keep.
    Digest,
    /// Show a stream's aggregate state, or an account's read models, as of a moment.
    Replay(ReplayArgs),
    /// Rebuild read models from position zero and swap them in, or check them.
    Rebuild(RebuildArgs),
    /// Export the journal for analysts, with subject ids pseudonymised.
    Export(ExportArgs),
    /// Measure verify and rebuild on a freshly filled journal (see README).
    #[command(hide = true)]
    Bench(BenchArgs),
}

/// `verify` options.
#[derive(Args)]
pub struct VerifyArgs {
    /// First global position to check.
    #[arg(long, value_name = "POS")]
    pub from: Option<i64>,
    /// Last global position to check.
    #[arg(long, value_name = "POS")]
    pub to: Option<i64>,
    /// A digest kept earlier (`HASH@POSITION`): prove that nothing up to it
    /// changed, disappeared or was reordered. Checks from the first event.
    #[arg(long, value_name = "HASH@POS")]
    pub digest: Option<String>,
}

/// `replay` options.
#[derive(Args)]
pub struct ReplayArgs {
    /// The stream to fold, as `TYPE/ID` (e.g. `organisation/0190…`).
    #[arg(
        long,
        value_name = "TYPE/ID",
        required_unless_present = "account",
        conflicts_with = "account"
    )]
    pub stream: Option<String>,
    /// The account whose read models to rebuild (a UUID).
    #[arg(long, value_name = "ID")]
    pub account: Option<String>,
    /// The moment: an RFC 3339 time (events recorded at or before it) or a
    /// global position (events up to and including that event in the global order).
    #[arg(long, value_name = "TIME|POSITION")]
    pub as_of: Option<String>,
    /// Also list the stream's events when its aggregate type is known.
    #[arg(long)]
    pub events: bool,
}

/// `rebuild` options.
#[derive(Args)]
pub struct RebuildArgs {
    /// The projection to rebuild.
    #[arg(
        long,
        value_name = "NAME",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub projection: Option<String>,
    /// Rebuild every projection.
    #[arg(long)]
    pub all: bool,
    /// Rebuild into a temporary shadow and report every difference from the
    /// live table, without swapping (nothing of the database is changed).
    #[arg(long)]
    pub check: bool,
    /// Events applied per transaction.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub batch_size: i64,
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line.
    Ndjson,
    /// RFC 4180 CSV with a header; payload and metadata as JSON text.
    Csv,
}

/// `export` options.
#[derive(Args)]
pub struct ExportArgs {
    #[arg(long, value_enum)]
    pub format: Format,
    /// First global position to export.
    #[arg(long, value_name = "POS")]
    pub from: Option<i64>,
    /// Last global position to export.
    #[arg(long, value_name = "POS")]
    pub to: Option<i64>,
    /// Only events of this type (e.g. `OrganisationRegistered`).
    #[arg(long = "type", value_name = "EVENT_TYPE")]
    pub event_type: Option<String>,
    /// The key of the keyed hash (HMAC-SHA256) that pseudonymises subject ids.
    #[arg(long, env = "KABINET_EXPORT_KEY", hide_env_values = true)]
    pub pseudonym_key: Option<String>,
    /// Keep personal fields (names, birth dates, documents, contacts);
    /// needs `--token` with the auditor role.
    #[arg(long)]
    pub include_personal_data: bool,
    /// The caller's bearer token (JWT).
    #[arg(long, env = "KABINET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The server's token signing secret (HS256).
    #[arg(long, env = "KABINET_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
}

/// Backends the benchmark runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchBackend {
    Sqlite,
    Postgres,
}

/// `bench` options.
#[derive(Args)]
pub struct BenchArgs {
    #[arg(long, value_enum)]
    pub backend: BenchBackend,
    /// Events to fill the journal with.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per stream.
    #[arg(long, default_value_t = 10)]
    pub stream_length: u64,
    /// PostgreSQL server to create the benchmark database on.
    #[arg(
        long,
        env = "KABINET_TEST_PG_URL",
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    pub pg_url: String,
    /// Keep the benchmark database instead of dropping it.
    #[arg(long)]
    pub keep: bool,
}
