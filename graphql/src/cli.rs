//! The `kabinet` command: serve, migrate, token, schema.

use anyhow::Context as _;
use clap::Parser;
use kabinet_domain::db::PoolOptions;
use kabinet_domain::Db;
use tracing_subscriber::EnvFilter;

use crate::auth::{actor_from_args, TokenKeys, MAX_TTL_MINUTES};
use crate::config::{Cli, Command, LogFormat, ServeConfig, TokenArgs, MIN_SECRET_BYTES};
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
        Command::Serve(config) => serve(config).await,
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

async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    init_tracing(config.log_format);
    let demo = config.demo;
    let app = Application::build(config).await?;
    tracing::info!(port = app.port(), "listening");
    if demo {
        if app.seed_demo().await? {
            tracing::info!("seeded demonstration data");
        }
        let admin = app.demo_token(kabinet_domain::Role::Admin, None)?;
        eprintln!(
            "\nKabinet is running on http://127.0.0.1:{port}/ (GraphiQL) — GraphQL at /graphql\n\
             A demo administrator token (12 hours), for the Authorization header:\n  Bearer {admin}\n",
            port = app.port()
        );
    }
    app.run_until_stopped(shutdown_signal()).await
}
