//! The `kabinet` command: serve, migrate, token, schema.

use anyhow::Context as _;
use clap::Parser;
use kabinet_domain::db::PoolOptions;
use kabinet_domain::Db;
use tracing_subscriber::EnvFilter;

use crate::auth::{actor_from_args, TokenKeys, MAX_TTL_MINUTES};
use crate::config::{
    AdminCommand, Cli, Command, CreateAccountArgs, LogFormat, Mode, ServeConfig, TokenArgs,
    MIN_SECRET_BYTES,
};
use crate::startup::{shutdown_signal, Application};

fn init_tracing(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("KABINET_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Parses the command line and runs the chosen command.
pub async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => serve(*config).await,
        Command::Migrate(database) => {
            init_tracing(LogFormat::Text);
            let db = Db::connect(&database.database_url, &PoolOptions::default()).await?;
            db.migrate().await?;
            println!(
                "migrations applied to {}",
                kabinet_domain::db::redact_url(&database.database_url)
            );
            Ok(())
        }
        Command::Token(args) => {
            println!("{}", mint(&args)?);
            Ok(())
        }
        Command::Seed { database, size } => {
            init_tracing(LogFormat::Text);
            let db = Db::connect(&database.database_url, &PoolOptions::default()).await?;
            db.migrate().await?;
            let commands =
                kabinet_domain::command::CommandRunner::new(kabinet_domain::Journal::new(db));
            let started = std::time::Instant::now();
            let report = crate::seed::seed(&commands, &size).await?;
            println!(
                "seeded {} organisations, {} doctors, {} patients, {} appointments; the journal holds {} events ({:.1} s)",
                report.organisations.len(),
                report.doctors.len(),
                report.patients.len(),
                report.appointments,
                report.events,
                started.elapsed().as_secs_f64()
            );
            if let Some(patient) = report.patients.first() {
                println!("a patient to try: kabinet token --role patient --subject {patient}");
            }
            Ok(())
        }
        Command::Admin(AdminCommand::CreateAccount(args)) => {
            init_tracing(LogFormat::Text);
            let id = create_account(&args, admin_password()?).await?;
            println!("{id}");
            Ok(())
        }
        Command::Schema { output } => {
            let sdl = crate::schema::sdl();
            match output {
                Some(path) => std::fs::write(&path, sdl)
                    .with_context(|| format!("cannot write {}", path.display())),
                None => {
                    print!("{sdl}");
                    Ok(())
                }
            }
        }
    }
}

fn mint(args: &TokenArgs) -> anyhow::Result<String> {
    if std::env::var("KABINET_MODE").is_ok_and(|m| m.eq_ignore_ascii_case("production")) {
        anyhow::bail!("development tokens are not minted in production mode (KABINET_MODE=production); sign in instead");
    }
    let Some(secret) = args.secret.bytes() else {
        anyhow::bail!("no signing secret configured: set KABINET_JWT_SECRET (the server's secret) or pass --jwt-secret");
    };
    if secret.len() < MIN_SECRET_BYTES {
        anyhow::bail!("the signing secret must be at least {MIN_SECRET_BYTES} bytes");
    }
    if !(1..=MAX_TTL_MINUTES).contains(&args.ttl_minutes) {
        anyhow::bail!("--ttl-minutes must be between 1 and {MAX_TTL_MINUTES}");
    }
    let actor = actor_from_args(&args.role, &args.subject, args.org.as_deref())?;
    Ok(TokenKeys::new(&secret).mint(&actor, chrono::Duration::minutes(args.ttl_minutes))?)
}

/// In production, secrets come from the environment only: a flag would show
/// them in the process list and shell history.
fn secrets_from_environment(config: &ServeConfig) -> anyhow::Result<()> {
    use secrecy::ExposeSecret;
    if config.mode != Mode::Production {
        return Ok(());
    }
    let from_env = |name: &str, value: Option<&str>| -> anyhow::Result<()> {
        match value {
            Some(v) if std::env::var(name).ok().as_deref() != Some(v) => anyhow::bail!(
                "in production mode {name} must come from the environment, not a command-line flag"
            ),
            _ => Ok(()),
        }
    };
    from_env(
        "KABINET_JWT_SECRET",
        config.secret.jwt_secret.as_ref().map(|s| s.expose_secret()),
    )?;
    from_env(
        "KABINET_SMTP_URL",
        config.delivery.smtp_url.as_ref().map(|s| s.expose_secret()),
    )?;
    from_env(
        "KABINET_SMS_GATEWAY_TOKEN",
        config
            .delivery
            .sms_gateway_token
            .as_ref()
            .map(|s| s.expose_secret()),
    )?;
    from_env("KABINET_METRICS_TOKEN", config.metrics_token())?;
    Ok(())
}

/// The first administrator's password: `KABINET_ADMIN_PASSWORD`, else the first line of standard input.
fn admin_password() -> anyhow::Result<String> {
    if let Ok(password) = std::env::var("KABINET_ADMIN_PASSWORD") {
        return Ok(password);
    }
    eprintln!("password (one line on standard input):");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        anyhow::bail!(
            "no password given: set KABINET_ADMIN_PASSWORD or write it to standard input"
        );
    }
    Ok(password)
}

/// Opens a staff account through the same command path as `createStaffAccount`.
pub async fn create_account(
    args: &CreateAccountArgs,
    password: String,
) -> anyhow::Result<uuid::Uuid> {
    use kabinet_app::accounts::{AccountFailure, StaffAccountRequest};
    let role: kabinet_domain::Role = args.role.parse()?;
    let organisation_id = args
        .organisation
        .as_deref()
        .map(uuid::Uuid::parse_str)
        .transpose()
        .map_err(|_| anyhow::anyhow!("--organisation must be a UUID"))?;
    let db = Db::connect(&args.database.database_url, &PoolOptions::default()).await?;
    db.migrate().await?;
    let commands =
        kabinet_domain::command::CommandRunner::new(kabinet_domain::Journal::new(db.clone()));
    // No code is sent here (the password is given), so the code key need not be the server's.
    let mut key = [0u8; 32];
    kabinet_domain::accounts::secrets::random_bytes(&mut key)?;
    let accounts = kabinet_app::accounts::Accounts::new(
        commands,
        std::sync::Arc::new(kabinet_domain::clock::SystemClock),
        std::sync::Arc::new(kabinet_domain::notify::LogNotifier),
        kabinet_domain::accounts::secrets::CodeHasher::from_server_secret(&key),
    );
    let request = StaffAccountRequest {
        role,
        organisation_id,
        login: args.login.clone(),
        initial_password: Some(password),
    };
    let metadata = kabinet_domain::EventMetadata::new(
        kabinet_domain::Actor::system(),
        format!("cli-{}", uuid::Uuid::now_v7().simple()),
    );
    let result = accounts.create_staff(&request, &metadata).await;
    db.close().await;
    match result {
        Ok((view, _)) => Ok(view.id),
        Err(AccountFailure::User(e)) => {
            let field = e.field.as_ref().and_then(|f| f.last()).cloned();
            let field = match field.as_deref() {
                Some("initialPassword") => " (password)".to_string(),
                Some(f) => format!(" ({f})"),
                None => String::new(),
            };
            anyhow::bail!("{}{field}: {}", e.code, e.message)
        }
        Err(AccountFailure::Internal(e)) => anyhow::bail!("internal error: {e}"),
    }
}

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    secrets_from_environment(&config)?;
    init_tracing(config.log_format);
    let demo = config.demo;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "listening");
    if demo {
        print_demo(&app).await?;
    }
    app.run_until_stopped(shutdown_signal()).await
}

/// Seeds an empty database and prints tokens for the demonstration accounts.
async fn print_demo(app: &Application) -> anyhow::Result<()> {
    use kabinet_domain::Role;
    let started = std::time::Instant::now();
    let Some(report) = app.seed_demo().await? else {
        eprintln!(
            "\nThe database already holds events: not seeding. Mint tokens with `kabinet token`.\n"
        );
        return Ok(());
    };
    tracing::info!(
        events = report.events,
        seconds = started.elapsed().as_secs_f64(),
        "seeded demonstration data"
    );
    let organisation = report.organisations.first().copied();
    let patient = report
        .patients
        .first()
        .copied()
        .unwrap_or_else(uuid::Uuid::now_v7);
    // The doctor token speaks for a seeded doctor, so it may prescribe.
    let (doctor, doctor_organisation) =
        match (report.doctors.first(), report.doctor_organisations.first()) {
            (Some(d), Some(o)) => (*d, Some(*o)),
            _ => (uuid::Uuid::now_v7(), organisation),
        };
    // The pharmacist works at the seeded pharmacy: the patient sends a
    // prescription there, the pharmacist prepares and dispenses it.
    let pharmacy = report.pharmacies.first().copied();
    let port = app.port();
    eprintln!(
        "\nKabinet is running: the GraphQL console at http://127.0.0.1:{port}/ , GraphQL at http://127.0.0.1:{port}/graphql\n\
         Demo tokens (12 hours), for the header  Authorization: Bearer <token>\n\
         patient    {}\n\
         registrar  {}\n\
         doctor     {}\n\
         pharmacist {}\n\
         admin      {}\n\
         The doctor may prescribe to the patient (a visit is booked with them); the patient\n\
         sends the prescription to the pharmacy {}; the pharmacist marks it ready and dispenses it.\n",
        app.demo_token(patient, Role::Patient, None)?,
        app.demo_token(uuid::Uuid::now_v7(), Role::Registrar, organisation)?,
        app.demo_token(doctor, Role::Doctor, doctor_organisation)?,
        app.demo_token(uuid::Uuid::now_v7(), Role::Pharmacist, pharmacy)?,
        app.demo_token(uuid::Uuid::now_v7(), Role::Admin, None)?,
        pharmacy
            .map(|p| crate::schema::ids::encode("Organisation", p).0)
            .unwrap_or_default(),
    );
    Ok(())
}
