//! Signing keys: from configuration, or in development generated once and kept
//! in the `signing_keys` table so that restarts keep verifying what was signed.

use anyhow::Context as _;
use kabinet_domain::prescriptions::PrescriptionSigner;
use kabinet_domain::Db;

use crate::config::{Mode, ServeConfig};

/// Name of the prescription token key in `signing_keys`.
const PRESCRIPTION_KEY: &str = "prescription-verification";

/// The signer of prescription verification tokens, or why the server must not start.
pub async fn prescription_signer(
    config: &ServeConfig,
    db: &Db,
) -> anyhow::Result<PrescriptionSigner> {
    match (config.prescription_key.seed(), config.mode) {
        (Some(seed), _) => PrescriptionSigner::from_base64_seed(seed)
            .context("KABINET_PRESCRIPTION_SIGNING_KEY is not usable"),
        (None, Mode::Production) => {
            anyhow::bail!("KABINET_PRESCRIPTION_SIGNING_KEY is required in production mode")
        }
        (None, Mode::Development) => {
            let seed = stored_seed(db, PRESCRIPTION_KEY).await?;
            PrescriptionSigner::from_base64_seed(&seed)
                .context("the stored development prescription key is not usable")
        }
    }
}

/// The seed stored under `name`, generating and storing one first if there is
/// none. Racing processes agree: the first insert wins and all read it back.
async fn stored_seed(db: &Db, name: &str) -> anyhow::Result<String> {
    const INSERT: &str = "INSERT INTO signing_keys (name, seed, created_at) VALUES ($1, $2, $3) \
                          ON CONFLICT (name) DO NOTHING";
    const SELECT: &str = "SELECT seed FROM signing_keys WHERE name = $1";
    let fresh = PrescriptionSigner::generate_seed()
        .map_err(|e| anyhow::anyhow!("cannot generate a signing key: {e}"))?;
    let now = chrono::Utc::now().timestamp_micros();
    let seed: String = kabinet_domain::on_db!(db, pool => {
        sqlx::query(INSERT).bind(name).bind(&fresh).bind(now).execute(pool).await?;
        sqlx::query_scalar(SELECT).bind(name).fetch_one(pool).await?
    });
    Ok(seed)
}
