//! `replay`: what was true at a moment — a stream's aggregate state, or an
//! account's read models rebuilt from the journal into a private temporary
//! database. The live read models are never read or written.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use futures::TryStreamExt;
use kabinet_domain::journal::{pending_after_pg, read_after_pg, read_after_sqlite};
use kabinet_domain::{Backend, Db, JournalOrder, RecordedEvent};
use kabinet_projections::{all_projections, Projection, ProjectionTx};
use serde_json::{json, Map, Value};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{Connection, Row};
use uuid::Uuid;

use crate::cli::ReplayArgs;
use crate::progress::Bar;
use crate::rows::{quote, sqlite_columns, sqlite_row};
use crate::source::last_position;

/// Events read from the journal per batch.
const BATCH: i64 = 1000;

/// How long to wait for a transaction below the wanted event to commit.
const HORIZON_WAIT: Duration = Duration::from_secs(30);

/// Read-model columns that name the account a row belongs to (a patient's
/// stream id is the patient's account id).
const ACCOUNT_COLUMNS: [&str; 2] = ["account_id", "patient_id"];

/// The moment to replay to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Everything committed.
    Latest,
    /// Up to and including the event at this place in the global order.
    Event(JournalOrder),
    /// Events recorded at or before this instant.
    Time(DateTime<Utc>),
}

impl AsOf {
    fn includes(&self, event: &RecordedEvent) -> bool {
        match self {
            AsOf::Latest => true,
            AsOf::Event(order) => event.order <= *order,
            AsOf::Time(at) => event.recorded_at <= *at,
        }
    }

    /// The order bound for SQL: everything up to it may be included.
    fn order_bound(&self) -> JournalOrder {
        match self {
            AsOf::Event(order) => *order,
            _ => JournalOrder {
                tx: i64::MAX,
                position: i64::MAX,
            },
        }
    }

    fn to_json(self) -> Value {
        match self {
            AsOf::Latest => Value::Null,
            AsOf::Event(order) => json!({ "position": order.position }),
            AsOf::Time(at) => json!({ "time": at }),
        }
    }
}

/// Parses `--as-of`: a position (digits) or an RFC 3339 time.
pub async fn resolve_as_of(db: &Db, text: Option<&str>) -> anyhow::Result<AsOf> {
    let Some(text) = text.map(str::trim) else {
        return Ok(AsOf::Latest);
    };
    if let Ok(position) = text.parse::<i64>() {
        let sql = match db {
            Db::Postgres(_) => {
                "SELECT tx_id::text::bigint, position FROM events WHERE position = $1"
            }
            Db::Sqlite(_) => "SELECT position, position FROM events WHERE position = $1",
        };
        let found: Option<(i64, i64)> = kabinet_domain::on_db!(db, pool => {
            sqlx::query_as(sql).bind(position).fetch_optional(pool).await?
        });
        return match found {
            Some((tx, position)) => Ok(AsOf::Event(JournalOrder { tx, position })),
            None => {
                let last = last_position(db).await?;
                if position > last || position < 1 {
                    bail!(
                        "--as-of {position} is beyond the journal (its positions are 1 to {last})"
                    )
                }
                bail!("--as-of {position}: no event has that position")
            }
        };
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| {
            anyhow!("--as-of '{text}' is neither a position nor an RFC 3339 time ({e}); e.g. 2026-03-01T12:00:00Z")
        })?
        .with_timezone(&Utc);
    if at > Utc::now() + chrono::Duration::minutes(1) {
        bail!("--as-of {at} is in the future: the journal cannot say what will be true then");
    }
    Ok(AsOf::Time(at))
}

/// Runs `replay`.
pub async fn replay(db: &Db, args: &ReplayArgs, as_json: bool) -> anyhow::Result<()> {
    let as_of = resolve_as_of(db, args.as_of.as_deref()).await?;
    let out = match (&args.stream, &args.account) {
        (Some(stream), _) => {
            let (aggregate_type, aggregate_id) = stream
                .split_once('/')
                .filter(|(t, i)| !t.is_empty() && !i.is_empty())
                .ok_or_else(|| anyhow!("--stream '{stream}' is not TYPE/ID"))?;
            if stream_length(db, aggregate_type, aggregate_id).await? == 0 {
                bail!("no stream {aggregate_type}/{aggregate_id} in the journal");
            }
            stream_state(db, aggregate_type, aggregate_id, as_of, args.events).await?
        }
        (None, Some(account)) => {
            let account = Uuid::parse_str(account.trim())
                .map_err(|_| anyhow!("--account '{account}' is not a UUID"))?;
            account_state(db, account, as_of).await?
        }
        (None, None) => bail!("give --stream TYPE/ID or --account ID"),
    };
    let text = if as_json {
        serde_json::to_string(&out)?
    } else {
        serde_json::to_string_pretty(&out)?
    };
    println!("{text}");
    Ok(())
}

async fn stream_length(db: &Db, aggregate_type: &str, aggregate_id: &str) -> anyhow::Result<i64> {
    const SQL: &str = "SELECT COUNT(*) FROM events WHERE aggregate_type = $1 AND aggregate_id = $2";
    Ok(kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(SQL).bind(aggregate_type).bind(aggregate_id).fetch_one(pool).await?
    }))
}

/// One event of a stream.
struct StreamEvent {
    position: i64,
    sequence: i64,
    recorded_at: DateTime<Utc>,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

impl StreamEvent {
    fn to_json(&self) -> Value {
        json!({
            "position": self.position,
            "sequence": self.sequence,
            "recorded_at": self.recorded_at,
            "event_type": self.event_type,
            "event_version": self.event_version,
            "payload": self.payload,
            "metadata": self.metadata,
        })
    }
}

const PG_STREAM: &str = "SELECT position, sequence, recorded_at, event_type, event_version, \
     CAST(payload AS TEXT), CAST(metadata AS TEXT) FROM events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 \
       AND (tx_id, position) <= ($3::bigint::text::xid8, $4) ORDER BY sequence";

const SQLITE_STREAM: &str = "SELECT position, sequence, recorded_at, event_type, event_version, \
     CAST(payload AS TEXT), CAST(metadata AS TEXT) FROM events \
     WHERE aggregate_type = $1 AND aggregate_id = $2 AND position <= $4 AND $3 = $3 \
     ORDER BY sequence";

/// The events of a stream as of `as_of`, in sequence order.
async fn read_stream(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: AsOf,
) -> anyhow::Result<Vec<StreamEvent>> {
    let bound = as_of.order_bound();
    let sql = match db {
        Db::Postgres(_) => PG_STREAM,
        Db::Sqlite(_) => SQLITE_STREAM,
    };
    let mut events = Vec::new();
    kabinet_domain::on_db!(db, pool => {
        let mut rows = sqlx::query(sql)
            .bind(aggregate_type)
            .bind(aggregate_id)
            .bind(bound.tx)
            .bind(bound.position)
            .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let position: i64 = row.try_get(0)?;
            let json = |i: usize, what: &str| -> anyhow::Result<Value> {
                let text: &str = row.try_get(i)?;
                serde_json::from_str(text)
                    .with_context(|| format!("the {what} of the event at position {position} is not JSON"))
            };
            let event = StreamEvent {
                position,
                sequence: row.try_get(1)?,
                recorded_at: row.try_get(2)?,
                event_type: row.try_get(3)?,
                event_version: row.try_get(4)?,
                payload: json(5, "payload")?,
                metadata: json(6, "metadata")?,
            };
            if let AsOf::Time(at) = as_of {
                if event.recorded_at > at {
                    continue;
                }
            }
            events.push(event);
        }
    });
    Ok(events)
}

/// Folds `events` into aggregate `A` through its own `apply`.
fn fold<A: Aggregate>(events: &[StreamEvent]) -> anyhow::Result<Value> {
    let mut aggregate = A::default();
    for event in events {
        let decoded: A::Event =
            serde_json::from_value(event.payload.clone()).with_context(|| {
                format!(
                    "the event at position {} ({} v{}) does not decode as a {} event",
                    event.position,
                    event.event_type,
                    event.event_version,
                    A::TYPE
                )
            })?;
        aggregate.apply(decoded);
    }
    Ok(serde_json::to_value(&aggregate)?)
}

/// Folds a stream of one aggregate type into its state.
type Fold = fn(&[StreamEvent]) -> anyhow::Result<Value>;

/// The state of a known aggregate type, or `None` for a type this tool does not know.
fn fold_known(aggregate_type: &str, events: &[StreamEvent]) -> Option<anyhow::Result<Value>> {
    use kabinet_domain::appointments::{Appointment, Referral};
    use kabinet_domain::directory::{Doctor, MedicalService, Organisation, Schedule};
    use kabinet_domain::identity::verification::IdentityVerification;
    use kabinet_domain::patients::Patient;
    let known: [(&str, Fold); 8] = [
        (Organisation::TYPE, fold::<Organisation>),
        (Doctor::TYPE, fold::<Doctor>),
        (MedicalService::TYPE, fold::<MedicalService>),
        (Schedule::TYPE, fold::<Schedule>),
        (Patient::TYPE, fold::<Patient>),
        (Appointment::TYPE, fold::<Appointment>),
        (Referral::TYPE, fold::<Referral>),
        (IdentityVerification::TYPE, fold::<IdentityVerification>),
    ];
    known
        .iter()
        .find(|(name, _)| *name == aggregate_type)
        .map(|(_, fold)| fold(events))
}

async fn stream_state(
    db: &Db,
    aggregate_type: &str,
    aggregate_id: &str,
    as_of: AsOf,
    list_events: bool,
) -> anyhow::Result<Value> {
    let events = read_stream(db, aggregate_type, aggregate_id, as_of).await?;
    let state = fold_known(aggregate_type, &events).transpose()?;
    let mut out = json!({
        "stream": format!("{aggregate_type}/{aggregate_id}"),
        "aggregate_type": aggregate_type,
        "aggregate_id": aggregate_id,
        "as_of": as_of.to_json(),
        "known_type": state.is_some(),
        "version": events.last().map(|e| e.sequence),
        "last_position": events.last().map(|e| e.position),
        "event_count": events.len(),
        "state": state,
    });
    if list_events || out["known_type"] == Value::Bool(false) {
        out["events"] = events.iter().map(StreamEvent::to_json).collect();
    }
    Ok(out)
}

/// Reads the journal in global order up to an as-of point.
struct GlobalReader<'a> {
    db: &'a Db,
    as_of: AsOf,
    after: JournalOrder,
    done: bool,
}

impl GlobalReader<'_> {
    /// The next non-empty batch of events as of the point, or `None` at the end.
    async fn next_batch(&mut self) -> anyhow::Result<Option<Vec<RecordedEvent>>> {
        let started = tokio::time::Instant::now();
        while !self.done {
            let (events, pending) = match self.db {
                Db::Postgres(pool) => {
                    let mut conn = pool.acquire().await?;
                    let events = read_after_pg(&mut conn, self.after, BATCH).await?;
                    let pending =
                        events.is_empty() && pending_after_pg(&mut conn, self.after).await?;
                    (events, pending)
                }
                Db::Sqlite(pool) => {
                    let mut conn = pool.acquire().await?;
                    (
                        read_after_sqlite(&mut conn, self.after, BATCH).await?,
                        false,
                    )
                }
            };
            let Some(last) = events.last().map(|e| e.order) else {
                let wanted = match self.as_of {
                    AsOf::Event(order) => self.after < order,
                    _ => false,
                };
                // PostgreSQL: a transaction below the horizon is still open;
                // its events belong before what follows.
                if pending && started.elapsed() < HORIZON_WAIT {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                if wanted {
                    bail!("the event at the --as-of position is not readable yet: a transaction before it is still open");
                }
                self.done = true;
                break;
            };
            self.after = last;
            if let AsOf::Event(order) = self.as_of {
                self.done = last >= order;
            }
            let kept: Vec<RecordedEvent> = events
                .into_iter()
                .filter(|e| self.as_of.includes(e))
                .collect();
            if !kept.is_empty() {
                return Ok(Some(kept));
            }
        }
        Ok(None)
    }
}

/// All projections, applied to a private temporary SQLite database.
struct PrivateModels {
    conn: sqlx::SqliteConnection,
    projections: Vec<Arc<dyn Projection>>,
    // Dropped last: removes the database file.
    _dir: tempfile::TempDir,
}

impl PrivateModels {
    async fn create() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("kabinet-replay-")
            .tempdir()
            .context("cannot create a temporary directory for the replayed read models")?;
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("replay.db"))
            .create_if_missing(true)
            // A scratch database: nothing in it needs to survive a crash.
            .journal_mode(SqliteJournalMode::Off)
            .synchronous(SqliteSynchronous::Off);
        let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
        let projections = all_projections();
        for projection in &projections {
            let name = projection.name();
            let mut statements = projection.create_table(Backend::Sqlite, name);
            statements.extend(projection.create_indexes(Backend::Sqlite, name));
            for statement in statements {
                sqlx::query(&statement).execute(&mut conn).await?;
            }
        }
        Ok(PrivateModels {
            conn,
            projections,
            _dir: dir,
        })
    }

    async fn apply(&mut self, events: &[RecordedEvent]) -> anyhow::Result<()> {
        let mut tx = self.conn.begin().await?;
        for projection in &self.projections {
            projection
                .apply(
                    &mut ProjectionTx::Sqlite(&mut tx),
                    projection.name(),
                    events,
                )
                .await
                .with_context(|| format!("projection {} failed", projection.name()))?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The rows of every read model that names `account`, by projection.
    async fn rows_of(&mut self, account: &str) -> anyhow::Result<Map<String, Value>> {
        let mut out = Map::new();
        for projection in &self.projections {
            let table = projection.name();
            let columns = sqlite_columns(&mut self.conn, table).await?;
            let has = |name: &str| columns.iter().any(|c| c.name == name);
            let keys: Vec<&str> = ACCOUNT_COLUMNS.into_iter().filter(|c| has(c)).collect();
            if keys.is_empty() {
                continue;
            }
            let filter = keys
                .iter()
                .map(|k| format!("{} = $1", quote(k)))
                .collect::<Vec<_>>()
                .join(" OR ");
            let order = if has("position") {
                "\"position\", rowid"
            } else {
                "rowid"
            };
            let sql = format!(
                "SELECT * FROM {} WHERE {filter} ORDER BY {order}",
                quote(table)
            );
            let rows = sqlx::query(&sql)
                .bind(account)
                .fetch_all(&mut self.conn)
                .await?;
            let rows: Vec<Value> = rows.iter().map(|r| Value::Object(sqlite_row(r))).collect();
            out.insert(table.to_string(), Value::Array(rows));
        }
        Ok(out)
    }
}

async fn account_state(db: &Db, account: Uuid, as_of: AsOf) -> anyhow::Result<Value> {
    let account_text = account.to_string();
    let mut models = PrivateModels::create().await?;
    let total = last_position(db).await?.max(0) as u64;
    let mut bar = Bar::new("replaying");
    let mut reader = GlobalReader {
        db,
        as_of,
        after: JournalOrder::START,
        done: false,
    };
    let mut applied = 0u64;
    let mut last_applied = None;
    while let Some(events) = reader.next_batch().await? {
        models.apply(&events).await?;
        applied += events.len() as u64;
        last_applied = events.last().map(RecordedEvent::position);
        bar.set(reader.after.position.max(0) as u64, total);
    }
    bar.finish();
    let read_models = models.rows_of(&account_text).await?;
    let mut aggregates = Map::new();
    const TYPES: &str =
        "SELECT DISTINCT aggregate_type FROM events WHERE aggregate_id = $1 ORDER BY 1";
    let types: Vec<String> = kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(TYPES).bind(&account_text).fetch_all(pool).await?
    });
    for aggregate_type in &types {
        let state = stream_state(db, aggregate_type, &account_text, as_of, false).await?;
        aggregates.insert(aggregate_type.clone(), state);
    }
    let nothing = read_models
        .values()
        .all(|rows| rows.as_array().is_some_and(Vec::is_empty));
    if nothing && types.is_empty() && !mentioned(db, &account_text).await? {
        bail!("account {account} does not appear in the journal");
    }
    Ok(json!({
        "account": account_text,
        "as_of": as_of.to_json(),
        "events_applied": applied,
        "last_position": last_applied,
        "aggregates": aggregates,
        "read_models": read_models,
    }))
}

/// Whether any event was written by the account or mentions its id.
async fn mentioned(db: &Db, account: &str) -> anyhow::Result<bool> {
    let sql = match db {
        Db::Postgres(_) => {
            "SELECT EXISTS (SELECT 1 FROM events WHERE metadata->>'actor_id' = $1 \
             OR aggregate_id = $1 OR CAST(payload AS TEXT) LIKE $2)"
        }
        Db::Sqlite(_) => {
            "SELECT EXISTS (SELECT 1 FROM events WHERE json_extract(metadata, '$.actor_id') = $1 \
             OR aggregate_id = $1 OR payload LIKE $2)"
        }
    };
    let pattern = format!("%{account}%");
    Ok(kabinet_domain::on_db!(db, pool => {
        sqlx::query_scalar(sql).bind(account).bind(&pattern).fetch_one(pool).await?
    }))
}
