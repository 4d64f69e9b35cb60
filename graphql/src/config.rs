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
    Serve(Box<ServeConfig>),
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
    /// Administration: `kabinet admin create-account …`.
    #[command(subcommand)]
    Admin(AdminCommand),
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

/// How codes and messages reach people: SMTP for e-mail, an HTTP gateway for SMS.
#[derive(Clone, Args, Default)]
pub struct DeliveryArgs {
    /// SMTP relay for e-mail, e.g. `smtp://127.0.0.1:2525` (user:password@ allowed).
    #[arg(long, env = "KABINET_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// Sender of e-mail, e.g. `Kabinet <no-reply@kabinet.example>`.
    #[arg(long, env = "KABINET_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// URL the SMS gateway takes `POST {"to", "text"}` at.
    #[arg(long, env = "KABINET_SMS_GATEWAY_URL")]
    pub sms_gateway_url: Option<String>,
    /// Bearer token of the SMS gateway.
    #[arg(long, env = "KABINET_SMS_GATEWAY_TOKEN", hide_env_values = true)]
    pub sms_gateway_token: Option<SecretString>,
}

/// How many passwords are hashed at once (each Argon2id hashing takes 19 MiB), and
/// how long a sign-in waits for a free slot before it is told the server is busy.
#[derive(Debug, Clone, Args)]
pub struct PasswordHashingArgs {
    /// Most password hashings at once (default: one per core); memory for them
    /// stays within this times 19 MiB.
    #[arg(long, env = "KABINET_PASSWORD_HASHING_SLOTS")]
    pub password_hashing_slots: Option<usize>,
    /// Longest wait for a free hashing slot, in milliseconds, before the answer
    /// BUSY.
    #[arg(long, env = "KABINET_PASSWORD_HASHING_WAIT_MS", default_value_t = 3000)]
    pub password_hashing_wait_ms: u64,
}

impl Default for PasswordHashingArgs {
    fn default() -> Self {
        PasswordHashingArgs {
            password_hashing_slots: None,
            password_hashing_wait_ms: 3000,
        }
    }
}

impl PasswordHashingArgs {
    /// The bound these settings describe.
    pub fn gate(&self) -> kabinet_domain::accounts::password::HashGate {
        use kabinet_domain::accounts::password::HashGate;
        let wait = std::time::Duration::from_millis(self.password_hashing_wait_ms);
        match self.password_hashing_slots {
            Some(slots) => HashGate::new(slots, wait),
            None => HashGate::new(HashGate::default().limit(), wait),
        }
    }
}

/// Lock-outs against guessing and against sending too many codes.
#[derive(Debug, Clone, Args)]
pub struct AccountLimitsArgs {
    /// Failed sign-ins of one login that lock it.
    #[arg(long, env = "KABINET_LOGIN_LOCK_AFTER", default_value_t = 10)]
    pub login_lock_after: i64,
    /// How long a locked login stays locked, in minutes.
    #[arg(long, env = "KABINET_LOGIN_LOCK_MINUTES", default_value_t = 15)]
    pub login_lock_minutes: i64,
    /// Failed attempts from one client address (within an hour) that lock it for 15 minutes.
    #[arg(long, env = "KABINET_ADDRESS_LOCK_AFTER", default_value_t = 100)]
    pub address_lock_after: i64,
    /// Codes one client address may have sent within an hour before sending stops for an hour.
    #[arg(long, env = "KABINET_CODES_PER_ADDRESS_PER_HOUR", default_value_t = 60)]
    pub codes_per_address_per_hour: i64,
    /// Sign-in codes one login may be sent within an hour before sending stops for an hour.
    #[arg(
        long,
        env = "KABINET_SIGN_IN_CODES_PER_LOGIN_PER_HOUR",
        default_value_t = 20
    )]
    pub sign_in_codes_per_login_per_hour: i64,
}

impl Default for AccountLimitsArgs {
    fn default() -> Self {
        AccountLimitsArgs {
            login_lock_after: 10,
            login_lock_minutes: 15,
            address_lock_after: 100,
            codes_per_address_per_hour: 60,
            sign_in_codes_per_login_per_hour: 20,
        }
    }
}

impl AccountLimitsArgs {
    /// The policies these settings describe.
    pub fn limits(&self) -> kabinet_domain::accounts::throttle::AccountLimits {
        use chrono::Duration;
        let d = kabinet_domain::accounts::throttle::AccountLimits::default();
        kabinet_domain::accounts::throttle::AccountLimits {
            per_login: d.per_login.locking(
                self.login_lock_after,
                Duration::minutes(self.login_lock_minutes.max(1)),
            ),
            per_address: d
                .per_address
                .locking(self.address_lock_after, d.per_address.lock),
            sends_per_address: d
                .sends_per_address
                .locking(self.codes_per_address_per_hour, d.sends_per_address.lock),
            sign_in_sends_per_login: d.sign_in_sends_per_login.locking(
                self.sign_in_codes_per_login_per_hour,
                d.sign_in_sends_per_login.lock,
            ),
        }
    }
}

impl std::fmt::Debug for DeliveryArgs {
    // The SMTP URL may hold a password and the gateway token is a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |set: bool| if set { "[redacted]" } else { "none" };
        f.debug_struct("DeliveryArgs")
            .field("smtp_url", &shown(self.smtp_url.is_some()))
            .field("mail_from", &self.mail_from)
            .field("sms_gateway_url", &self.sms_gateway_url)
            .field(
                "sms_gateway_token",
                &shown(self.sms_gateway_token.is_some()),
            )
            .finish()
    }
}

/// The Ed25519 seed that signs prescription verification tokens.
#[derive(Clone, Default, Args)]
pub struct PrescriptionKeyArgs {
    /// Base64 of a 32-byte Ed25519 seed signing prescription QR tokens; required in
    /// production (development generates one and keeps it in the database).
    #[arg(
        long = "prescription-signing-key",
        env = "KABINET_PRESCRIPTION_SIGNING_KEY",
        hide_env_values = true
    )]
    pub prescription_signing_key: Option<SecretString>,
}

impl std::fmt::Debug for PrescriptionKeyArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = if self.prescription_signing_key.is_some() {
            "[redacted]"
        } else {
            "none"
        };
        f.debug_struct("PrescriptionKeyArgs")
            .field("prescription_signing_key", &shown)
            .finish()
    }
}

impl PrescriptionKeyArgs {
    /// Settings with the base64 seed `seed` configured.
    pub fn with_seed(seed: &str) -> Self {
        PrescriptionKeyArgs {
            prescription_signing_key: Some(SecretString::from(seed.to_string())),
        }
    }

    /// The configured seed text, if any.
    pub fn seed(&self) -> Option<&str> {
        self.prescription_signing_key
            .as_ref()
            .map(|s| s.expose_secret())
    }
}

/// Settings of `kabinet serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeConfig {
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub delivery: DeliveryArgs,
    #[command(flatten)]
    pub password_hashing: PasswordHashingArgs,
    #[command(flatten)]
    pub account_limits: AccountLimitsArgs,
    /// Trust the last `X-Forwarded-For` entry as the client address (only behind a proxy that sets it).
    #[arg(long, env = "KABINET_TRUSTED_PROXY")]
    pub trusted_proxy: bool,
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
    /// Key sealing passport scans at rest (AES-256-GCM): 32 bytes as 64 hex digits or
    /// base64. Required in production; development keeps a random key in the database.
    #[arg(long = "data-key", env = "KABINET_DATA_KEY", hide_env_values = true)]
    pub data_key: Option<SecretString>,
    #[command(flatten)]
    pub prescription_key: PrescriptionKeyArgs,
    /// Public base URL of the server, used in links printed on documents
    /// (default: `http://` and the listen address).
    #[arg(long, env = "KABINET_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How many days before an OMS policy ends its holder is reminded to renew it.
    #[arg(long, env = "KABINET_POLICY_RENEWAL_DAYS", default_value_t = 30)]
    pub policy_renewal_days: u32,
    /// How often the scheduler looks for expired prescriptions and due policy
    /// reminders, in milliseconds.
    #[arg(long, env = "KABINET_SCHEDULER_INTERVAL_MS", default_value_t = 60_000)]
    pub scheduler_interval_ms: u64,
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
    /// Sets the data key (e.g. for tests of production mode).
    pub fn set_data_key(&mut self, key: &str) {
        self.data_key = Some(SecretString::from(key.to_string()));
    }

    /// The configured data key, if any (never printed).
    pub fn data_key(&self) -> anyhow::Result<Option<kabinet_domain::identity::scan::DataKey>> {
        self.data_key
            .as_ref()
            .map(|k| kabinet_domain::identity::scan::DataKey::parse(k.expose_secret()))
            .transpose()
            .map_err(|e| anyhow::anyhow!("KABINET_DATA_KEY: {e}"))
    }

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
            delivery: DeliveryArgs::default(),
            password_hashing: PasswordHashingArgs::default(),
            account_limits: AccountLimitsArgs::default(),
            trusted_proxy: false,
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
            data_key: None,
            prescription_key: PrescriptionKeyArgs::default(),
            public_url: None,
            policy_renewal_days: 30,
            scheduler_interval_ms: 200,
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

/// Administration commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Open a staff account (the first administrator, for one); the password
    /// comes from KABINET_ADMIN_PASSWORD or standard input, never a flag.
    CreateAccount(CreateAccountArgs),
}

/// Arguments of `kabinet admin create-account`.
#[derive(Debug, Clone, Args)]
pub struct CreateAccountArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// registrar, doctor, lab, pharmacist, auditor, analyst or admin.
    #[arg(long)]
    pub role: String,
    /// Phone number or e-mail address to sign in with.
    #[arg(long)]
    pub login: String,
    /// The organisation (UUID) of clinic staff.
    #[arg(long)]
    pub organisation: Option<String>,
}
