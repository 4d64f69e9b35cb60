//! Building and running the application: database, projector, sealer, HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use kabinet_adapters::access_record::AccessLog;
use kabinet_adapters::identity_store::{resolve_data_key, IdentityStore, TableSnilsRegistry};
use kabinet_adapters::outbound::CaBundle;
use kabinet_adapters::sms::SmsGatewayNotifier;
use kabinet_adapters::smtp::SmtpNotifier;
use kabinet_app::accounts::Accounts;
use kabinet_app::identity::IdentityDesk;
use kabinet_domain::accounts::secrets::CodeHasher;
use kabinet_domain::clock::SystemClock;
use kabinet_domain::command::CommandRunner;
use kabinet_domain::db::PoolOptions;
use kabinet_domain::notify::{ByChannel, LogNotifier, Notifier};
use kabinet_domain::{Actor, Db, Journal, Role};
use kabinet_projections::{all_projections, Projector, ProjectorConfig, Wakeups};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::auth::TokenKeys;
use crate::config::{Mode, ServeConfig, MIN_SECRET_BYTES};
use crate::http::{router_with, AppState, EdgeSettings};
use crate::schema::context::Services;
use crate::schema::{self, Limits};

/// Events sealed per seal record at most.
const SEAL_BATCH: i64 = 10_000;

/// A built server, bound to its port, not yet serving.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    shutdown: CancellationToken,
    background: Vec<JoinHandle<()>>,
    db: Db,
    keys: TokenKeys,
    commands: CommandRunner,
    bounds: crate::http::transport::ServeBounds,
    /// Cancelled when the server stops taking requests.
    stopping: CancellationToken,
}

/// The signing secret to use, or why the server must not start.
pub fn signing_secret(config: &ServeConfig) -> anyhow::Result<Vec<u8>> {
    match (config.secret.bytes(), config.mode) {
        (Some(secret), _) if secret.len() >= MIN_SECRET_BYTES => Ok(secret),
        (Some(_), Mode::Production) => anyhow::bail!(
            "KABINET_JWT_SECRET is too weak: production needs at least {MIN_SECRET_BYTES} bytes"
        ),
        (None, Mode::Production) => {
            anyhow::bail!("KABINET_JWT_SECRET is required in production mode")
        }
        (Some(_), Mode::Development) => anyhow::bail!(
            "KABINET_JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (unset it in development to use a random one)"
        ),
        (None, Mode::Development) => {
            tracing::warn!("no KABINET_JWT_SECRET: using a random signing secret for this run; tokens minted elsewhere will not work");
            Ok(format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple()).into_bytes())
        }
    }
}

/// The notifier of `config`: SMTP for e-mail and an HTTP gateway for SMS;
/// in development a missing channel writes to the log, in production it is an error.
pub fn notifier(config: &ServeConfig) -> anyhow::Result<Arc<dyn Notifier>> {
    use secrecy::ExposeSecret;
    let production = config.mode == Mode::Production;
    let delivery = &config.delivery;
    let smtp_roots = ca_bundle(delivery.smtp_ca_file.as_deref(), "KABINET_SMTP_CA_FILE")?;
    let smtp = |url: &str, from: &str| -> anyhow::Result<Arc<dyn Notifier>> {
        let mut notifier = SmtpNotifier::new(url, from)?;
        if let Some(roots) = &smtp_roots {
            notifier = notifier.trusting(roots)?;
        }
        Ok(Arc::new(notifier))
    };
    let email: Arc<dyn Notifier> = match (&delivery.smtp_url, &delivery.mail_from) {
        (Some(url), Some(from)) => {
            smtp(url.expose_secret(), from).context("invalid e-mail delivery settings")?
        }
        (Some(url), None) if !production => {
            smtp(url.expose_secret(), "Kabinet <no-reply@kabinet.localhost>")
                .context("invalid e-mail delivery settings")?
        }
        (Some(_), None) => {
            anyhow::bail!("production mode needs KABINET_MAIL_FROM (the sender of e-mail)")
        }
        (None, _) if production => {
            anyhow::bail!(
                "production mode needs KABINET_SMTP_URL: codes must really be delivered by e-mail"
            )
        }
        (None, _) => Arc::new(LogNotifier),
    };
    let sms_roots = ca_bundle(delivery.sms_ca_file.as_deref(), "KABINET_SMS_CA_FILE")?;
    let sms: Arc<dyn Notifier> = match &delivery.sms_gateway_url {
        Some(url) => Arc::new(
            SmsGatewayNotifier::with_options(
                url,
                delivery
                    .sms_gateway_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                sms_roots.as_ref(),
                kabinet_adapters::sms::TIMEOUTS,
            )
            .context("invalid SMS delivery settings")?,
        ),
        None if production => {
            anyhow::bail!("production mode needs KABINET_SMS_GATEWAY_URL: codes must really be delivered by SMS")
        }
        None => Arc::new(LogNotifier),
    };
    Ok(Arc::new(ByChannel { email, sms }))
}

/// The CA bundle at `path`, if one is configured (`setting` names it in errors).
fn ca_bundle(path: Option<&std::path::Path>, setting: &str) -> anyhow::Result<Option<CaBundle>> {
    path.map(CaBundle::read)
        .transpose()
        .with_context(|| format!("{setting} is not usable"))
}

/// Parts of the application that tests replace.
#[derive(Clone, Default)]
pub struct Overrides {
    /// The clock instead of the system clock.
    pub clock: Option<Arc<dyn kabinet_domain::clock::Clock>>,
    /// The notifier instead of the configured delivery adapters.
    pub notifier: Option<Arc<dyn Notifier>>,
    /// Routes of a test, served behind every layer of the real ones.
    pub routes: Option<axum::Router>,
}

impl Application {
    /// Connects, migrates, starts the projector and the sealer, and binds the listener.
    pub async fn build(config: ServeConfig) -> anyhow::Result<Application> {
        Self::build_with(config, Overrides::default()).await
    }

    /// [`Application::build`] with parts replaced (tests move the clock by
    /// hand and read the messages the server sends).
    pub async fn build_with(
        config: ServeConfig,
        overrides: Overrides,
    ) -> anyhow::Result<Application> {
        config.check_production()?;
        let origins = crate::http::browser::BrowserOrigins::new(
            &config.cors_origins,
            config.mode == Mode::Development,
        )?;
        let secret = signing_secret(&config)?;
        let notifier = match overrides.notifier {
            Some(notifier) => notifier,
            None => notifier(&config)?,
        };
        let clock: Arc<dyn kabinet_domain::clock::Clock> =
            overrides.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let configured_data_key = config.data_key()?;
        if configured_data_key.is_none() && config.mode == Mode::Production {
            anyhow::bail!(
                "KABINET_DATA_KEY is required in production mode (32 bytes, hex or base64)"
            );
        }
        let keys = TokenKeys::new(&secret);
        let db = Db::connect(
            &config.database.database_url,
            &PoolOptions {
                max_connections: config.database.db_max_connections,
                ..PoolOptions::default()
            },
        )
        .await?;
        db.migrate().await?;
        let data_key =
            resolve_data_key(&db, configured_data_key, config.mode == Mode::Production).await?;
        let journal = Journal::new(db.clone());
        let shutdown = CancellationToken::new();
        let projector = Projector::new(
            journal.clone(),
            all_projections(),
            ProjectorConfig {
                poll_interval: Duration::from_millis(config.poll_interval_ms),
                ..ProjectorConfig::default()
            },
        );
        let wakeups = Wakeups::start(&journal, shutdown.clone());
        let mut background = projector
            .start(wakeups, shutdown.clone())
            .await
            .context("cannot start the projector")?;
        background.push(tokio::spawn(run_sealer(
            journal.clone(),
            Duration::from_millis(config.seal_interval_ms),
            shutdown.clone(),
        )));
        background.push(tokio::spawn(
            crate::dispatcher::Dispatcher::new(
                db.clone(),
                CommandRunner::new(journal.clone()),
                notifier.clone(),
                clock.clone(),
            )
            .run(
                Duration::from_millis(config.poll_interval_ms),
                shutdown.clone(),
            ),
        ));
        let commands = CommandRunner::new(journal.clone());
        let accounts = Accounts::new(
            commands.clone(),
            clock.clone(),
            notifier.clone(),
            CodeHasher::from_server_secret(&secret),
        )
        .with_hash_gate(config.password_hashing.gate())
        .with_limits(config.account_limits.limits());
        let snils_registry = TableSnilsRegistry::new(db.clone());
        let prescription_signer = crate::keys::prescription_signer(&config, &db).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        // Links on documents need the bound port when port 0 was asked for.
        let public_url = match &config.public_url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => format!("http://{}", listener.local_addr()?),
        };
        background.push(tokio::spawn(
            crate::scheduler::Scheduler {
                db: db.clone(),
                commands: commands.clone(),
                clock: clock.clone(),
                renewal_days: config.policy_renewal_days,
            }
            .run(
                Duration::from_millis(config.scheduler_interval_ms),
                shutdown.clone(),
            ),
        ));
        let services = Services {
            identity: IdentityDesk::new(
                IdentityStore::new(db.clone()),
                commands.clone(),
                Arc::new(snils_registry.clone()),
                data_key,
            )
            .with_limits(config.identity_limits.limits()),
            snils_registry,
            access: AccessLog::new(db.clone()),
            db: db.clone(),
            journal,
            booking: kabinet_domain::appointments::Bookings::new(commands.clone(), clock.clone()),
            commands,
            projector,
            clock,
            notifier,
            read_your_writes: Duration::from_millis(config.read_your_writes_ms),
            accounts,
            tokens: keys.clone(),
            prescription_signer: Arc::new(prescription_signer),
            public_url,
            files: crate::files::FileStore::new(db.clone()),
            file_links: crate::files::FileLinks::new(&secret),
            document_deadlines: crate::schema::documents::DocumentDeadlines {
                history_extract_hours: config.deadline_history_extract_hours,
                health_certificate_hours: config.deadline_health_certificate_hours,
                examination_results_hours: config.deadline_examination_results_hours,
            },
            care: kabinet_projections::care::CareRules {
                days_after_visit: config.care_days_after_visit,
            },
            visit_opens_before: chrono::Duration::minutes(i64::from(config.visit_opens_minutes)),
        };
        let limits = Limits {
            max_depth: config.max_depth,
            max_complexity: config.max_complexity,
            document: schema::limits::DocumentLimits {
                max_fields: config.max_query_fields,
                max_aliases: config.max_aliases,
            },
            introspection: config.introspection_enabled(),
        };
        let state_commands = services.commands.clone();
        let stopping = CancellationToken::new();
        crate::metrics::install();
        let state = AppState {
            schema: schema::build(limits, Some(services.clone())),
            services,
            keys: keys.clone(),
            console: config.mode == Mode::Development,
            production: config.mode == Mode::Production,
            trusted_proxy: config.trusted_proxy,
            max_response_bytes: config.max_response_bytes,
            metrics_token: config.metrics_token().map(crate::http::MetricsToken::new),
            transport: Arc::new(crate::http::transport::Transport::new(
                &config.transport,
                stopping.clone(),
            )),
        };
        Ok(Application {
            listener,
            router: router_with(
                state,
                EdgeSettings {
                    max_body_bytes: config.max_body_bytes,
                    request_timeout: Duration::from_millis(config.transport.request_timeout_ms),
                    origins,
                },
                overrides.routes.unwrap_or_default(),
            ),
            shutdown,
            background,
            db,
            keys,
            commands: state_commands,
            bounds: crate::http::transport::ServeBounds::new(&config.transport),
            stopping,
        })
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Seeds demonstration data into an empty journal; `None` when it holds events already.
    pub async fn seed_demo(&self) -> anyhow::Result<Option<crate::seed::SeedReport>> {
        if self.commands.journal().count().await? > 0 {
            return Ok(None);
        }
        Ok(Some(
            crate::seed::seed(&self.commands, &crate::seed::SeedSize::default()).await?,
        ))
    }

    /// A token for account `account_id` in `role`, signed with this server's key.
    pub fn demo_token(
        &self,
        account_id: Uuid,
        role: Role,
        organisation_id: Option<Uuid>,
    ) -> anyhow::Result<String> {
        let actor = Actor {
            account_id,
            role,
            organisation_id,
        };
        Ok(self.keys.mint(&actor, chrono::Duration::hours(12))?)
    }

    /// Serves until `stop` completes, then drains requests and stops background work.
    pub async fn run_until_stopped(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let shutdown = self.shutdown.clone();
        let stopping = self.stopping;
        let serve = tokio::spawn(crate::http::transport::serve(
            self.listener,
            self.router,
            self.bounds,
            stopping.clone(),
            Duration::from_secs(30),
        ));
        stop.await;
        tracing::info!("shutting down");
        stopping.cancel();
        let result = serve.await;
        shutdown.cancel();
        for task in self.background {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        self.db.close().await;
        result.context("server failed")
    }
}

async fn run_sealer(journal: Journal, interval: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        loop {
            match journal.seal(SEAL_BATCH).await {
                Ok(Some(seal)) if seal.event_count == SEAL_BATCH => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sealing failed; will retry");
                    break;
                }
            }
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
