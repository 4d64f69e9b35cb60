//! The medical services read model (B3): search by name or code.

use async_trait::async_trait;
use kabinet_domain::directory::{MedicalService, ServiceDetails, ServiceEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::QueryBuilder;

use crate::doctors::{escape_like, search_key};
use crate::page::OffsetPage;
use crate::projection::{bad_event, event_of, Projection, ProjectionError, ProjectionTx};

/// The services projection.
pub struct Services;

/// Name of the projection and of its table.
pub const NAME: &str = "medical_services";

/// Filters of [`list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFilter {
    /// Part of the name or the code, any case.
    pub text: Option<String>,
    /// `consultation`, `diagnostics`, `treatment` or `prevention`.
    pub kind: Option<String>,
}

#[async_trait]
impl Projection for Services {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                code     TEXT   NOT NULL,
                position BIGINT NOT NULL,
                name_key TEXT   NOT NULL,
                kind     TEXT   NOT NULL,
                details  TEXT   NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (code)"
        )]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let Some(ServiceEvent::ServiceRegistered(details)) =
                event_of::<MedicalService>(NAME, event)?
            else {
                continue;
            };
            let text = serde_json::to_string(&details).map_err(|e| bad_event(NAME, event, e))?;
            let sql = format!(
                "INSERT INTO {table} (code, position, name_key, kind, details) VALUES ($1, $2, $3, $4, $5)"
            );
            crate::on_tx!(tx, conn => {
                sqlx::query(&sql)
                    .bind(&details.code)
                    .bind(event.position())
                    .bind(format!("{} {}", search_key(&details.name), search_key(&details.code)))
                    .bind(details.kind.as_str())
                    .bind(&text)
                    .execute(&mut **conn)
                    .await?;
            });
        }
        Ok(())
    }
}

fn parse(text: String) -> Result<ServiceDetails, sqlx::Error> {
    serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// One service by code.
pub async fn get(db: &Db, code: &str) -> Result<Option<ServiceDetails>, sqlx::Error> {
    const SQL: &str = "SELECT details FROM medical_services WHERE code = $1";
    let code = code.trim().to_ascii_uppercase();
    let text: Option<String> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(SQL).bind(&code).fetch_optional(pool).await?
    });
    text.map(parse).transpose()
}

/// A page of services in registration order.
pub async fn list(
    db: &Db,
    filter: &ServiceFilter,
    first: usize,
    offset: usize,
) -> Result<OffsetPage<ServiceDetails>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new("SELECT details FROM medical_services WHERE 1 = 1");
        if let Some(text) = &filter.text {
            q.push(" AND name_key LIKE ")
                .push_bind(format!("%{}%", escape_like(&search_key(text))))
                .push(" ESCAPE '\\'");
        }
        if let Some(kind) = &filter.kind {
            q.push(" AND kind = ").push_bind(kind.as_str());
        }
        q.push(" ORDER BY position LIMIT ").push_bind(first as i64 + 1).push(" OFFSET ").push_bind(offset as i64);
        let rows: Vec<String> = q.build_query_scalar().fetch_all(pool).await?;
        let items = rows.into_iter().map(parse).collect::<Result<Vec<_>, _>>()?;
        Ok(OffsetPage::from_rows(items, offset, first))
    })
}
