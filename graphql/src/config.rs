//! Command line and environment: defaults, then `KABINET_*` variables, then flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
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
    /// The GraphQL console, introspection and random signing secrets allowed.
    Development,
    /// Introspection and the console off, a strong signing secret required.
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
    /// SMTP relay for e-mail (user:password@ allowed): `smtps://host:465` (implicit
    /// TLS), `smtp://host:587?tls=required` (STARTTLS), `?tls=opportunistic`,
    /// `?tls=none`; plain `smtp://host` is plain only to loopback, STARTTLS elsewhere.
    #[arg(long, env = "KABINET_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<SecretString>,
    /// PEM file of the authorities that sign the relay's certificate, instead of
    /// the public ones (a private relay, a self-signed certificate).
    #[arg(long, env = "KABINET_SMTP_CA_FILE")]
    pub smtp_ca_file: Option<PathBuf>,
    /// Sender of e-mail, e.g. `Kabinet <no-reply@kabinet.example>`.
    #[arg(long, env = "KABINET_MAIL_FROM")]
    pub mail_from: Option<String>,
    /// URL the SMS gateway takes `POST {"to", "text"}` at.
    #[arg(long, env = "KABINET_SMS_GATEWAY_URL")]
    pub sms_gateway_url: Option<String>,
    /// Bearer token of the SMS gateway.
    #[arg(long, env = "KABINET_SMS_GATEWAY_TOKEN", hide_env_values = true)]
    pub sms_gateway_token: Option<SecretString>,
    /// PEM file of the authorities that sign an `https://` gateway's certificate,
    /// instead of the public ones.
    #[arg(long, env = "KABINET_SMS_CA_FILE")]
    pub sms_ca_file: Option<PathBuf>,
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
    pub fn gate(&self) -> kabinet_adapters::password_hash::HashGate {
        use kabinet_adapters::password_hash::HashGate;
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
            .field("smtp_ca_file", &self.smtp_ca_file)
            .field("mail_from", &self.mail_from)
            .field("sms_gateway_url", &self.sms_gateway_url)
            .field(
                "sms_gateway_token",
                &shown(self.sms_gateway_token.is_some()),
            )
            .field("sms_ca_file", &self.sms_ca_file)
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

/// Bounds of the HTTP and WebSocket edge: timeouts, connection caps and
/// rate limits. A rate of 0 turns that rate limit off.
#[derive(Debug, Clone, Args)]
pub struct TransportLimits {
    /// Time a client has to send a request's headers, in milliseconds; an idle
    /// keep-alive connection waiting for its next request is closed after it too.
    #[arg(long, env = "KABINET_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// Time a client has to send a request's whole body after its headers, in milliseconds.
    #[arg(long, env = "KABINET_HTTP_BODY_TIMEOUT_MS", default_value_t = 60_000)]
    pub http_body_timeout_ms: u64,
    /// Open HTTP connections at most; further ones are answered 503 and closed.
    #[arg(long, env = "KABINET_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Requests handled at the same time at most; further ones wait.
    #[arg(
        long,
        env = "KABINET_HTTP_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub http_max_concurrent_requests: usize,
    /// How long a request waits for its turn before a 503, in milliseconds.
    #[arg(long, env = "KABINET_HTTP_QUEUE_TIMEOUT_MS", default_value_t = 2_000)]
    pub http_queue_timeout_ms: u64,
    /// Longest a request may run before it is answered 503 `REQUEST_TIMEOUT`, in milliseconds.
    #[arg(long, env = "KABINET_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Largest WebSocket message (and frame) a client may send, in bytes.
    #[arg(long, env = "KABINET_WS_MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    pub ws_max_message_bytes: usize,
    /// Time a WebSocket client has to send `connection_init`, in milliseconds.
    #[arg(long, env = "KABINET_WS_INIT_TIMEOUT_MS", default_value_t = 10_000)]
    pub ws_init_timeout_ms: u64,
    /// Interval of WebSocket pings, in milliseconds; a client silent for two
    /// intervals (no pong, no message) is disconnected.
    #[arg(long, env = "KABINET_WS_KEEPALIVE_MS", default_value_t = 30_000)]
    pub ws_keepalive_ms: u64,
    /// How often a WebSocket connection checks that its session is still live, in milliseconds.
    #[arg(long, env = "KABINET_WS_SESSION_CHECK_MS", default_value_t = 5_000)]
    pub ws_session_check_ms: u64,
    /// Subscriptions running at once on one WebSocket connection at most.
    #[arg(long, env = "KABINET_WS_MAX_SUBSCRIPTIONS", default_value_t = 10)]
    pub ws_max_subscriptions: usize,
    /// Open WebSocket connections from one client address at most.
    #[arg(
        long,
        env = "KABINET_WS_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 16
    )]
    pub ws_max_connections_per_address: usize,
    /// Open WebSocket connections in total at most.
    #[arg(long, env = "KABINET_WS_MAX_CONNECTIONS", default_value_t = 1000)]
    pub ws_max_connections: usize,
    /// Requests per second one client address may make (sustained); 0: no limit.
    #[arg(long, env = "KABINET_RATE_PER_ADDRESS", default_value_t = 20)]
    pub rate_per_address: u32,
    /// Requests one client address may make in a burst.
    #[arg(long, env = "KABINET_RATE_BURST_PER_ADDRESS", default_value_t = 60)]
    pub rate_burst_per_address: u32,
    /// Requests (and WebSocket subscriptions) per second one signed-in account may make; 0: no limit.
    #[arg(long, env = "KABINET_RATE_PER_ACCOUNT", default_value_t = 10)]
    pub rate_per_account: u32,
    /// Requests one signed-in account may make in a burst.
    #[arg(long, env = "KABINET_RATE_BURST_PER_ACCOUNT", default_value_t = 30)]
    pub rate_burst_per_account: u32,
    /// Clients (addresses or accounts) whose rate is remembered at most; the
    /// least recently seen are forgotten first.
    #[arg(long, env = "KABINET_RATE_TRACKED_CLIENTS", default_value_t = 100_000)]
    pub rate_tracked_clients: usize,
}

impl TransportLimits {
    /// Limits for tests: the defaults, with rate limits high enough for test
    /// suites that send many requests from 127.0.0.1.
    pub fn for_tests() -> TransportLimits {
        TransportLimits {
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 60_000,
            http_max_connections: 1024,
            http_max_concurrent_requests: 256,
            http_queue_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            ws_max_message_bytes: 64 * 1024,
            ws_init_timeout_ms: 10_000,
            ws_keepalive_ms: 30_000,
            ws_session_check_ms: 1_000,
            ws_max_subscriptions: 10,
            ws_max_connections_per_address: 256,
            ws_max_connections: 1000,
            rate_per_address: 100_000,
            rate_burst_per_address: 100_000,
            rate_per_account: 100_000,
            rate_burst_per_account: 100_000,
            rate_tracked_clients: 100_000,
        }
    }
}

/// Caps of identity verification: SMS codes, passport scans and their uploads.
#[derive(Debug, Clone, Args)]
pub struct IdentityLimitArgs {
    /// Identity SMS codes one person may have sent in an hour.
    #[arg(long, env = "KABINET_IDENTITY_CODES_PER_HOUR", default_value_t = 5)]
    pub identity_codes_per_hour: u32,
    /// Identity SMS codes one person may have sent in a day.
    #[arg(long, env = "KABINET_IDENTITY_CODES_PER_DAY", default_value_t = 10)]
    pub identity_codes_per_day: u32,
    /// Identity SMS codes one phone number may receive in an hour, whoever asks.
    #[arg(
        long,
        env = "KABINET_IDENTITY_CODES_PER_NUMBER_PER_HOUR",
        default_value_t = 5
    )]
    pub identity_codes_per_number_per_hour: u32,
    /// Identity SMS codes one phone number may receive in a day, whoever asks.
    #[arg(
        long,
        env = "KABINET_IDENTITY_CODES_PER_NUMBER_PER_DAY",
        default_value_t = 10
    )]
    pub identity_codes_per_number_per_day: u32,
    /// Passport scans one person may upload in an hour.
    #[arg(long, env = "KABINET_PASSPORT_SCANS_PER_HOUR", default_value_t = 5)]
    pub passport_scans_per_hour: u32,
    /// Passport scans one person may upload in a day.
    #[arg(long, env = "KABINET_PASSPORT_SCANS_PER_DAY", default_value_t = 10)]
    pub passport_scans_per_day: u32,
    /// Passport-scan uploads read at the same time; more are answered 503 at once.
    #[arg(long, env = "KABINET_SCAN_UPLOAD_CONCURRENCY", default_value_t = 16)]
    pub scan_upload_concurrency: usize,
    /// Longest time the body of one passport-scan upload may take, in milliseconds.
    #[arg(long, env = "KABINET_SCAN_UPLOAD_TIMEOUT_MS", default_value_t = 30_000)]
    pub scan_upload_timeout_ms: u64,
}

impl Default for IdentityLimitArgs {
    fn default() -> Self {
        IdentityLimitArgs::from(&kabinet_domain::identity::limits::IdentityLimits::default())
    }
}

impl From<&kabinet_domain::identity::limits::IdentityLimits> for IdentityLimitArgs {
    fn from(l: &kabinet_domain::identity::limits::IdentityLimits) -> Self {
        IdentityLimitArgs {
            identity_codes_per_hour: l.codes_per_person.per_hour,
            identity_codes_per_day: l.codes_per_person.per_day,
            identity_codes_per_number_per_hour: l.codes_per_number.per_hour,
            identity_codes_per_number_per_day: l.codes_per_number.per_day,
            passport_scans_per_hour: l.scans_per_person.per_hour,
            passport_scans_per_day: l.scans_per_person.per_day,
            scan_upload_concurrency: l.concurrent_uploads,
            scan_upload_timeout_ms: l.upload_read_timeout.as_millis() as u64,
        }
    }
}

impl IdentityLimitArgs {
    /// The limits these settings describe.
    pub fn limits(&self) -> kabinet_domain::identity::limits::IdentityLimits {
        use kabinet_domain::identity::limits::{Cap, IdentityLimits};
        IdentityLimits {
            codes_per_person: Cap {
                per_hour: self.identity_codes_per_hour,
                per_day: self.identity_codes_per_day,
            },
            codes_per_number: Cap {
                per_hour: self.identity_codes_per_number_per_hour,
                per_day: self.identity_codes_per_number_per_day,
            },
            scans_per_person: Cap {
                per_hour: self.passport_scans_per_hour,
                per_day: self.passport_scans_per_day,
            },
            concurrent_uploads: self.scan_upload_concurrency.max(1),
            upload_read_timeout: std::time::Duration::from_millis(self.scan_upload_timeout_ms),
        }
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
    /// Largest query complexity accepted: each field counts one, a list times
    /// the most items it can return, costly lookups (signature checks, PDFs) more.
    #[arg(long, env = "KABINET_MAX_COMPLEXITY", default_value_t = 10_000)]
    pub max_complexity: usize,
    /// Most fields (`__typename` included) one request may select once its
    /// fragments are written out; checked before the query is validated.
    #[arg(long, env = "KABINET_MAX_QUERY_FIELDS", default_value_t = 2000)]
    pub max_query_fields: usize,
    /// Most aliased fields one request may hold, fragments expanded.
    #[arg(long, env = "KABINET_MAX_ALIASES", default_value_t = 64)]
    pub max_aliases: usize,
    /// Largest GraphQL response body in bytes; a larger one is replaced by an error.
    #[arg(long, env = "KABINET_MAX_RESPONSE_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_response_bytes: usize,
    /// Bearer token that `/metrics` asks for. Without it `/metrics` is open in
    /// development and closed in production.
    #[arg(long, env = "KABINET_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<SecretString>,
    /// Largest request body in bytes.
    #[arg(long, env = "KABINET_MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// A web origin whose pages may call the API from a browser, e.g.
    /// `https://kabinet.example.ru` (repeat the flag, or separate by commas in
    /// the environment). Development also allows `http://localhost:*` and
    /// `http://127.0.0.1:*`; production allows only these.
    #[arg(
        long = "cors-origin",
        env = "KABINET_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,
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
    #[command(flatten)]
    pub transport: TransportLimits,
    #[command(flatten)]
    pub identity_limits: IdentityLimitArgs,
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
    /// Days after a visit (or a referral's approval) that a patient stays in the
    /// organisation's care: its staff may read their profile and prescribe.
    #[arg(long, env = "KABINET_CARE_DAYS_AFTER_VISIT", default_value_t = kabinet_projections::care::DEFAULT_DAYS_AFTER_VISIT)]
    pub care_days_after_visit: u32,
    /// Minutes before a visit's start from which arrival and the outcome may be recorded.
    #[arg(long, env = "KABINET_VISIT_OPENS_MINUTES", default_value_t = 60)]
    pub visit_opens_minutes: u32,
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

    /// The metrics token, if configured (never printed).
    pub fn metrics_token(&self) -> Option<&str> {
        self.metrics_token.as_ref().map(|t| t.expose_secret())
    }

    /// In production mode, refuses settings that would leave the server open:
    /// guessable secrets and keys, SMS over plain HTTP, e-mail in clear text, the demonstration
    /// mode. Says which setting is wrong and why.
    pub fn check_production(&self) -> Result<(), ProductionRefusal> {
        if self.mode != Mode::Production {
            return Ok(());
        }
        if self.demo {
            return Err(ProductionRefusal(
                "--demo (KABINET_DEMO) seeds demonstration data and prints bearer tokens: \
                 it is refused in production mode"
                    .into(),
            ));
        }
        if let Some(secret) = self.secret.bytes() {
            if let Some(why) = weak_secret(&secret, MIN_SECRET_BYTES) {
                return Err(ProductionRefusal(format!(
                    "KABINET_JWT_SECRET is too weak for production: {why}"
                )));
            }
        }
        if let Some(key) = self.data_key.as_ref() {
            // A key that does not parse is reported by `data_key()` itself.
            if let Ok(parsed) = kabinet_domain::identity::scan::DataKey::parse(key.expose_secret())
            {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(parsed.to_base64())
                    .unwrap_or_default();
                if let Some(why) = weak_key(&bytes) {
                    return Err(ProductionRefusal(format!(
                        "KABINET_DATA_KEY is not usable in production: {why}"
                    )));
                }
            }
        }
        if let Some(seed) = self.prescription_key.seed().and_then(decode_seed) {
            if let Some(why) = weak_key(&seed) {
                return Err(ProductionRefusal(format!(
                    "KABINET_PRESCRIPTION_SIGNING_KEY is not usable in production: {why}"
                )));
            }
        }
        if let Some(url) = self.delivery.sms_gateway_url.as_deref() {
            if !secure_gateway_url(url) {
                return Err(ProductionRefusal(
                    "KABINET_SMS_GATEWAY_URL must start with https:// in production: codes \
                     and messages would cross the network in clear text (plain http:// is \
                     allowed only to a gateway on this machine's loopback address)"
                        .into(),
                ));
            }
        }
        if let Some(url) = self.delivery.smtp_url.as_ref() {
            // A URL that does not parse is reported when the notifier is built.
            let parsed = kabinet_adapters::smtp::SmtpUrl::parse(url.expose_secret());
            if parsed.is_ok_and(|url| url.clear_text_off_this_machine()) {
                return Err(ProductionRefusal(
                    "KABINET_SMTP_URL sends e-mail in clear text to another machine, refused in \
                     production: use smtps://host:465 or smtp://host:587?tls=required (plain \
                     or opportunistic TLS is allowed only to this machine's loopback address)"
                        .into(),
                ));
            }
        }
        if let Some(token) = self.metrics_token() {
            if let Some(why) = weak_secret(token.as_bytes(), MIN_METRICS_TOKEN_BYTES) {
                return Err(ProductionRefusal(format!(
                    "KABINET_METRICS_TOKEN is too weak for production: {why}"
                )));
            }
        }
        Ok(())
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
            max_complexity: 10_000,
            max_query_fields: 2000,
            max_aliases: 64,
            max_response_bytes: 4 * 1024 * 1024,
            metrics_token: None,
            max_body_bytes: 64 * 1024,
            cors_origins: Vec::new(),
            read_your_writes_ms: 5000,
            seal_interval_ms: 200,
            poll_interval_ms: 200,
            log_format: LogFormat::Text,
            demo: false,
            data_key: None,
            prescription_key: PrescriptionKeyArgs::default(),
            transport: TransportLimits::for_tests(),
            identity_limits: IdentityLimitArgs::default(),
            public_url: None,
            policy_renewal_days: 30,
            scheduler_interval_ms: 200,
            deadline_history_extract_hours: 24,
            deadline_health_certificate_hours: 24,
            deadline_examination_results_hours: 24,
            care_days_after_visit: kabinet_projections::care::DEFAULT_DAYS_AFTER_VISIT,
            visit_opens_minutes: 60,
        }
    }
}

/// A production setting that the server refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ProductionRefusal(pub String);

/// Least length of a production metrics token.
pub const MIN_METRICS_TOKEN_BYTES: usize = 24;

/// Fewest different byte values a production secret may use: 40 × 'a' has
/// one, a hex-encoded random secret up to 16.
pub const MIN_SECRET_DISTINCT_BYTES: usize = 10;

/// Least estimated strength of a production secret, in bits: its length times
/// the Shannon entropy of its byte frequencies.
pub const MIN_SECRET_BITS: f64 = 100.0;

/// Fewest different byte values a 32-byte random key may use: a random key has
/// about 30, a key written by hand (zeros, a repeated pattern) far fewer.
pub const MIN_KEY_DISTINCT_BYTES: usize = 16;

fn distinct_bytes(bytes: &[u8]) -> usize {
    let mut seen = [false; 256];
    for &b in bytes {
        seen[usize::from(b)] = true;
    }
    seen.iter().filter(|s| **s).count()
}

/// Why a text secret looks guessable, or `None` when it does not.
/// How many evenly spaced characters in a row make a secret or key look
/// written by hand (`abcdefgh`, `01234567`, bytes `00 01 02 …`), and how long
/// a stretch may not occur twice (`passwordpassword`).
const MAX_PATTERN_RUN: usize = 8;

/// The longest run of bytes that rise or fall by the same step (a step of 0,
/// `aaaa`, counts too).
fn longest_even_run(bytes: &[u8]) -> usize {
    let mut longest = bytes.len().min(1);
    let mut run = longest;
    let mut step = None;
    for pair in bytes.windows(2) {
        let this = i16::from(pair[1]) - i16::from(pair[0]);
        run = if step == Some(this) { run + 1 } else { 2 };
        step = Some(this);
        longest = longest.max(run);
    }
    longest
}

/// Whether some stretch of [`MAX_PATTERN_RUN`] bytes occurs twice.
fn repeats_a_stretch(bytes: &[u8]) -> bool {
    let mut seen = std::collections::HashSet::new();
    bytes
        .windows(MAX_PATTERN_RUN)
        .any(|stretch| !seen.insert(stretch))
}

/// Why `bytes` look made by a person: a counting run or a repeated stretch.
fn patterned(bytes: &[u8], what: &str, generate: &str) -> Option<String> {
    let run = longest_even_run(bytes);
    if run >= MAX_PATTERN_RUN {
        return Some(format!(
            "{what} {run} evenly spaced characters in a row (like abcdefgh or 01234567); \
             generate one, e.g. `{generate}`"
        ));
    }
    if repeats_a_stretch(bytes) {
        return Some(format!(
            "{what} the same {MAX_PATTERN_RUN} characters twice (like passwordpassword); \
             generate one, e.g. `{generate}`"
        ));
    }
    None
}

pub fn weak_secret(secret: &[u8], min_len: usize) -> Option<String> {
    if secret.len() < min_len {
        return Some(format!(
            "it has {} bytes, at least {min_len} are needed",
            secret.len()
        ));
    }
    let distinct = distinct_bytes(secret);
    if distinct < MIN_SECRET_DISTINCT_BYTES {
        return Some(format!(
            "it uses only {distinct} different characters (at least {MIN_SECRET_DISTINCT_BYTES}); \
             generate one, e.g. `openssl rand -base64 48`"
        ));
    }
    let mut counts = [0usize; 256];
    for &b in secret {
        counts[usize::from(b)] += 1;
    }
    let len = secret.len() as f64;
    let bits: f64 = counts
        .iter()
        .filter(|c| **c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2() * len
        })
        .sum();
    if bits < MIN_SECRET_BITS {
        return Some(format!(
            "it is too repetitive (about {bits:.0} bits, at least {MIN_SECRET_BITS:.0}); \
             generate one, e.g. `openssl rand -base64 48`"
        ));
    }
    patterned(secret, "it has", "openssl rand -base64 48")
}

/// Why a 32-byte key looks written by hand rather than drawn at random.
pub fn weak_key(key: &[u8]) -> Option<String> {
    if key.iter().all(|b| *b == 0) {
        return Some("it is all zeros".into());
    }
    let distinct = distinct_bytes(key);
    if distinct < MIN_KEY_DISTINCT_BYTES {
        return Some(format!(
            "its {} bytes take only {distinct} different values (a random key takes about 30); \
             generate one, e.g. `openssl rand -base64 32`",
            key.len()
        ));
    }
    patterned(key, "its bytes hold", "openssl rand -base64 32")
}

/// The 32 bytes of a base64 Ed25519 seed, in the forms the signer reads.
fn decode_seed(text: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let text = text.trim();
    STANDARD
        .decode(text)
        .or_else(|_| STANDARD_NO_PAD.decode(text))
        .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
        .ok()
        .filter(|bytes| bytes.len() == 32)
}

/// Whether an SMS gateway URL keeps messages off the network in clear text:
/// `https://`, or `http://` to a loopback address of this machine.
pub fn secure_gateway_url(url: &str) -> bool {
    let lower = url.trim().to_ascii_lowercase();
    if lower.starts_with("https://") {
        return true;
    }
    let Some(rest) = lower.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.split(':').next().unwrap_or(""),
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn a_long_secret_of_one_repeated_character_is_weak() {
        assert!(weak_secret(&[b'a'; 40], MIN_SECRET_BYTES).is_some());
        assert!(weak_secret(b"abababababababababababababababababababab", 32).is_some());
        assert!(weak_secret(b"short", MIN_SECRET_BYTES).is_some());
    }

    #[test]
    fn random_looking_secrets_pass() {
        // Hex of random bytes uses at most 16 characters and still passes.
        assert_eq!(
            weak_secret(b"9f3c27d1e8b4a6503d7e2f91c4b8a06e", MIN_SECRET_BYTES),
            None
        );
        assert_eq!(
            weak_secret(
                b"e2e-38KqILXXMdp8sYRqRVGtH4idJ0PbeKZGZMHV",
                MIN_SECRET_BYTES
            ),
            None
        );
    }

    #[test]
    fn counting_runs_and_repeated_words_are_weak() {
        for secret in [
            "abcdefghijklmnopqrstuvwxyz012345",
            "passwordpasswordpassword1234567890",
            "end-to-end-test-secret-0123456789abcdef",
        ] {
            assert!(
                weak_secret(secret.as_bytes(), MIN_SECRET_BYTES).is_some(),
                "{secret} passed"
            );
        }
        assert_eq!(
            weak_secret(b"Zq8vN2kPw5xR7tLm9cY3bH6jD4fG1sAa", MIN_SECRET_BYTES),
            None
        );
    }

    #[test]
    fn zero_and_patterned_keys_are_weak() {
        assert_eq!(weak_key(&[0; 32]).as_deref(), Some("it is all zeros"));
        assert!(weak_key(&[7, 7, 7, 7, 1, 2, 3, 4].repeat(4)).is_some());
        let counting: Vec<u8> = (0..32).collect();
        assert!(weak_key(&counting).is_some());
        let sixteen_twice: Vec<u8> = (0..16).chain(0..16).collect();
        assert!(weak_key(&sixteen_twice).is_some());
        let stepped: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(0x11)).collect();
        assert!(weak_key(&stepped).is_some());
        let drawn = hex::decode("407aaefd3152b38ac33ed4a604b6a8253730903ab7f1daad5d5ff6f25f7d0cc7")
            .expect("hex");
        assert_eq!(weak_key(&drawn), None);
    }

    #[test]
    fn sms_gateways_need_https_off_this_machine() {
        assert!(secure_gateway_url("https://sms.example.ru/send"));
        assert!(secure_gateway_url("http://127.0.0.1:9000/sms"));
        assert!(secure_gateway_url("http://[::1]:9000/sms"));
        assert!(secure_gateway_url("http://localhost/sms"));
        assert!(!secure_gateway_url("http://sms.example.ru/send"));
        assert!(!secure_gateway_url("http://127.0.0.1@sms.example.ru/send"));
        assert!(!secure_gateway_url("http://127.0.0.1.example.ru/send"));
        assert!(!secure_gateway_url("ftp://127.0.0.1/sms"));
    }

    #[test]
    fn production_refuses_clear_text_e_mail_to_another_machine() {
        let mut config =
            ServeConfig::for_tests("sqlite::memory:", "Zq8vN2kPw5xR7tLm9cY3bH6jD4fG1sAa");
        config.mode = Mode::Production;
        for (url, refused) in [
            ("smtp://mail.example.ru:25?tls=none", true),
            ("smtp://mail.example.ru:25?tls=opportunistic", true),
            ("smtp://mail.example.ru:587?tls=required", false),
            ("smtp://mail.example.ru:587", false),
            ("smtps://user:pw@mail.example.ru", false),
            ("smtp://127.0.0.1:25?tls=none", false),
            ("smtp://127.0.0.1:25", false),
        ] {
            config.delivery.smtp_url = Some(SecretString::from(url.to_string()));
            match config.check_production() {
                Err(ProductionRefusal(why)) => {
                    assert!(refused, "{url} refused: {why}");
                    assert!(why.contains("KABINET_SMTP_URL"), "{why}");
                }
                Ok(()) => assert!(!refused, "{url} allowed"),
            }
        }
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn transport_limits_have_their_documented_defaults() {
        let cli = Cli::try_parse_from(["kabinet", "serve"]).expect("parses");
        let Command::Serve(config) = cli.command else {
            panic!("not serve");
        };
        let t = config.transport;
        assert_eq!(
            (t.http_header_timeout_ms, t.http_body_timeout_ms),
            (10_000, 60_000)
        );
        assert_eq!(
            (t.http_max_connections, t.http_max_concurrent_requests),
            (1024, 256)
        );
        assert_eq!(t.ws_max_message_bytes, 64 * 1024);
        assert_eq!((t.ws_init_timeout_ms, t.ws_keepalive_ms), (10_000, 30_000));
        assert_eq!(t.ws_session_check_ms, 5_000);
        assert_eq!(
            (
                t.ws_max_subscriptions,
                t.ws_max_connections_per_address,
                t.ws_max_connections
            ),
            (10, 16, 1000)
        );
        assert_eq!((t.rate_per_address, t.rate_burst_per_address), (20, 60));
        assert_eq!((t.rate_per_account, t.rate_burst_per_account), (10, 30));
    }
}
