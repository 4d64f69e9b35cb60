//! The organisation directory read model (B1): search by name, region, specialisation.

use async_trait::async_trait;
use kabinet_domain::directory::{Organisation, OrganisationDetails, OrganisationEvent};
use kabinet_domain::{Backend, Db, RecordedEvent};
use sqlx::{QueryBuilder, Row};
use uuid::Uuid;

use crate::page::{Cursor, Page};
use crate::projection::{bad_event, event_of, Projection, ProjectionError, ProjectionTx};

/// The organisations projection.
pub struct Organisations;

/// Name of the projection and of its table.
pub const NAME: &str = "organisations";

/// An organisation as the directory shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrganisationView {
    pub id: Uuid,
    pub details: OrganisationDetails,
    /// Global position of the registration, the stable sort key of the directory.
    pub position: i64,
}

/// Filters of [`list`]; all given filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrganisationFilter {
    /// Part of the name, any case.
    pub name: Option<String>,
    /// The region, any case.
    pub region: Option<String>,
    /// One of the organisation's specialisations, exactly.
    pub specialisation: Option<String>,
}

fn search_key(s: &str) -> String {
    s.trim().to_lowercase()
}

/// Specialisations kept as `|a|b|` so one can be matched with LIKE on both backends.
fn joined(items: &[String]) -> String {
    format!("|{}|", items.join("|"))
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[async_trait]
impl Projection for Organisations {
    fn name(&self) -> &'static str {
        NAME
    }

    fn create_table(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                id              TEXT   NOT NULL,
                position        BIGINT NOT NULL,
                name            TEXT   NOT NULL,
                name_key        TEXT   NOT NULL,
                region          TEXT   NOT NULL,
                region_key      TEXT   NOT NULL,
                specialisations_key TEXT NOT NULL,
                details         TEXT   NOT NULL
            )"
        )]
    }

    fn create_indexes(&self, _backend: Backend, table: &str) -> Vec<String> {
        vec![
            format!("CREATE UNIQUE INDEX IF NOT EXISTS {table}_key ON {table} (id)"),
            format!(
                "CREATE INDEX IF NOT EXISTS {table}_by_region ON {table} (region_key, position)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {table}_by_position ON {table} (position)"),
        ]
    }

    async fn apply(
        &self,
        tx: &mut ProjectionTx<'_>,
        table: &str,
        events: &[RecordedEvent],
    ) -> Result<(), ProjectionError> {
        for event in events {
            let details: OrganisationDetails = match event_of::<Organisation>(NAME, event)? {
                Some(
                    OrganisationEvent::OrganisationRegistered(details)
                    | OrganisationEvent::OrganisationDetailsChanged(details),
                ) => details,
                Some(OrganisationEvent::PharmacyDesignated) | None => continue,
            };
            let sql = format!(
                "INSERT INTO {table} (id, position, name, name_key, region, region_key, specialisations_key, details) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
                 ON CONFLICT (id) DO UPDATE SET name = excluded.name, name_key = excluded.name_key, \
                 region = excluded.region, region_key = excluded.region_key, \
                 specialisations_key = excluded.specialisations_key, details = excluded.details"
            );
            let text = serde_json::to_string(&details).map_err(|e| bad_event(NAME, event, e))?;
            let values = (
                event.aggregate_id.as_str(),
                event.position(),
                details.name.as_str(),
                search_key(&details.name),
                details.region.as_str(),
                search_key(&details.region),
                joined(&details.specialisations),
                text,
            );
            match tx {
                ProjectionTx::Postgres(conn) => {
                    sqlx::query(&sql)
                        .bind(values.0)
                        .bind(values.1)
                        .bind(values.2)
                        .bind(&values.3)
                        .bind(values.4)
                        .bind(&values.5)
                        .bind(&values.6)
                        .bind(&values.7)
                        .execute(&mut **conn)
                        .await?;
                }
                ProjectionTx::Sqlite(conn) => {
                    sqlx::query(&sql)
                        .bind(values.0)
                        .bind(values.1)
                        .bind(values.2)
                        .bind(&values.3)
                        .bind(values.4)
                        .bind(&values.5)
                        .bind(&values.6)
                        .bind(&values.7)
                        .execute(&mut **conn)
                        .await?;
                }
            }
        }
        Ok(())
    }
}

fn view_of<R: Row>(row: &R) -> Result<OrganisationView, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let id: String = row.try_get(0)?;
    let details: String = row.try_get(2)?;
    Ok(OrganisationView {
        id: Uuid::parse_str(&id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        position: row.try_get(1)?,
        details: serde_json::from_str(&details).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
    })
}

/// One organisation by id.
pub async fn get(db: &Db, id: Uuid) -> Result<Option<OrganisationView>, sqlx::Error> {
    const SQL: &str = "SELECT id, position, details FROM organisations WHERE id = $1";
    let id = id.to_string();
    kabinet_domain::on_db!(db, pool => {
        let row = sqlx::query(SQL).bind(&id).fetch_optional(pool).await?;
        row.as_ref().map(view_of).transpose()
    })
}

/// A page of organisations in registration order, `first` after `after`.
pub async fn list(
    db: &Db,
    filter: &OrganisationFilter,
    first: usize,
    after: Option<Cursor>,
) -> Result<Page<OrganisationView>, sqlx::Error> {
    kabinet_domain::on_db!(db, pool => {
        let mut q = QueryBuilder::new("SELECT id, position, details FROM organisations WHERE 1 = 1");
        if let Some(name) = &filter.name {
            q.push(" AND name_key LIKE ")
                .push_bind(format!("%{}%", escape_like(&search_key(name))))
                .push(" ESCAPE '\\'");
        }
        if let Some(region) = &filter.region {
            q.push(" AND region_key = ").push_bind(search_key(region));
        }
        if let Some(spec) = &filter.specialisation {
            q.push(" AND specialisations_key LIKE ")
                .push_bind(format!("%|{}|%", escape_like(spec.trim())))
                .push(" ESCAPE '\\'");
        }
        if let Some(after) = after {
            q.push(" AND position > ").push_bind(after.position);
        }
        q.push(" ORDER BY position LIMIT ").push_bind(first as i64 + 1);
        let rows = q.build().fetch_all(pool).await?;
        let mut items = rows
            .iter()
            .map(|row| {
                let view = view_of(row)?;
                Ok((Cursor { at_micros: 0, position: view.position }, view))
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let has_next = items.len() > first;
        items.truncate(first);
        Ok(Page { items, has_previous: after.is_some(), has_next })
    })
}
