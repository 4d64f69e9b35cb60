//! Command line and environment: defaults, then `KABINET_*` variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// The Kabinet server.
#[derive(Debug, Parser)]
#[command(
    name = "kabinet",
    version,
    about = "Kabinet: personal health account backend"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply migrations, start the projector and the sealer, serve GraphQL.
    Serve(ServeConfig),
    /// Apply database migrations and exit.
    Migrate(DatabaseArgs),
    /// Mint a development bearer token (refused without a configured secret).
    Token(TokenArgs),
    /// Write a realistic dataset through the same commands the API uses.
    Seed {
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        size: crate::seed::SeedSize,
    },
    /// Print the GraphQL schema (SDL).
    Schema {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
}

/// Where the journal and read models live.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// `sqlite://PATH` (embedded, the default) or `postgres://USER@HOST/DB`.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://kabinet.db")]
    pub database_url: String,
    /// Largest number of pooled database connections.
    #[arg(long, env = "KABINET_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,
}

/// Development or production behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// GraphiQL, introspection and random signing secrets allowed.
    Development,
    /// Introspection and GraphiQL off, a strong signing secret required.
    Production,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The signing secret of bearer tokens (HS256).
#[derive(Clone, Args)]
pub struct SecretArgs {
    /// HS256 signing secret of bearer tokens, at least 32 bytes.
    #[arg(
        long = "jwt-secret",
        env = "KABINET_JWT_SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<SecretString>,
}

impl std::fmt::Debug for SecretArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.jwt_secret.is_some() {
            "[redacted]"
        } else {
            "none"
        };
        f.debug_struct("SecretArgs")
            .field("jwt_secret", &shown)
            .finish()
    }
}

/// Least length of a production signing secret.
pub const MIN_SECRET_BYTES: usize = 32;

impl SecretArgs {
    /// The secret's bytes, if configured.
    pub fn bytes(&self) -> Option<Vec<u8>> {
        self.jwt_secret
            .as_ref()
            .map(|s| s.expose_secret().as_bytes().to_vec())
    }
}

/// Settings of `kabinet serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, env = "KABINET_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "KABINET_MODE", value_enum, default_value_t = Mode::Development)]
    pub mode: Mode,
    /// Serve schema introspection (default: on in development, off in production).
    #[arg(long, env = "KABINET_INTROSPECTION")]
    pub introspection: Option<bool>,
    /// Deepest query nesting accepted.
    #[arg(long, env = "KABINET_MAX_DEPTH", default_value_t = 12)]
    pub max_depth: usize,
    /// Largest query complexity accepted (each field counts one, lists times their page size).
    #[arg(long, env = "KABINET_MAX_COMPLEXITY", default_value_t = 1000)]
    pub max_complexity: usize,
    /// Largest request body in bytes.
    #[arg(long, env = "KABINET_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// How long a mutation waits for the read models to show its effect, in milliseconds.
    #[arg(long, env = "KABINET_READ_YOUR_WRITES_MS", default_value_t = 5000)]
    pub read_your_writes_ms: u64,
    /// How often the sealer seals new events, in milliseconds.
    #[arg(long, env = "KABINET_SEAL_INTERVAL_MS", default_value_t = 1000)]
    pub seal_interval_ms: u64,
    /// Fallback poll interval of the projector, in milliseconds.
    #[arg(long, env = "KABINET_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub poll_interval_ms: u64,
    #[arg(long, env = "KABINET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Seed demonstration data into an empty database and print tokens to try it.
    #[arg(long, env = "KABINET_DEMO")]
    pub demo: bool,
    /// Hours an organisation has to answer a request for an extract from the history.
    #[arg(
        long,
        env = "KABINET_DEADLINE_HISTORY_EXTRACT_HOURS",
        default_value_t = 24
    )]
    pub deadline_history_extract_hours: u32,
    /// Hours an organisation has to answer a request for a health certificate.
    #[arg(
        long,
        env = "KABINET_DEADLINE_HEALTH_CERTIFICATE_HOURS",
        default_value_t = 24
    )]
    pub deadline_health_certificate_hours: u32,
    /// Hours an organisation has to answer a request for examination results.
    #[arg(
        long,
        env = "KABINET_DEADLINE_EXAMINATION_RESULTS_HOURS",
        default_value_t = 24
    )]
    pub deadline_examination_results_hours: u32,
}

impl ServeConfig {
    /// Whether introspection is served.
    pub fn introspection_enabled(&self) -> bool {
        self.introspection.unwrap_or(self.mode == Mode::Development)
    }

    /// Settings for tests: a fresh database URL, port 0, a fixed secret.
    pub fn for_tests(database_url: &str, secret: &str) -> ServeConfig {
        ServeConfig {
            database: DatabaseArgs {
                database_url: database_url.to_string(),
                db_max_connections: 16,
            },
            secret: SecretArgs {
                jwt_secret: Some(SecretString::from(secret.to_string())),
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            mode: Mode::Development,
            introspection: None,
            max_depth: 12,
            max_complexity: 1000,
            max_body_bytes: 64 * 1024,
            read_your_writes_ms: 5000,
            seal_interval_ms: 200,
            poll_interval_ms: 200,
            log_format: LogFormat::Text,
            demo: false,
            deadline_history_extract_hours: 24,
            deadline_health_certificate_hours: 24,
            deadline_examination_results_hours: 24,
        }
    }
}

/// Arguments of `kabinet token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// patient, registrar, doctor, lab, pharmacist, auditor, analyst or admin.
    #[arg(long)]
    pub role: String,
    /// The account id (UUID) the token speaks for.
    #[arg(long)]
    pub subject: String,
    /// The organisation (UUID) of clinic staff.
    #[arg(long)]
    pub org: Option<String>,
    /// Lifetime of the token in minutes.
    #[arg(long, default_value_t = 60)]
    pub ttl_minutes: i64,
}
