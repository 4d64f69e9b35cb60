//! `export`: the journal for analysts, streamed in global order, subject ids
//! pseudonymised and personal fields left out unless an auditor asks for them.

use std::io::{BufWriter, Write};

use anyhow::{anyhow, bail, Context};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::TryStreamExt;
use kabinet_domain::Db;
use serde_json::{json, Value};
use sqlx::Row;

use crate::cli::{ExportArgs, Format};
use crate::pseudonym::Pseudonymiser;
use crate::source::position_range;
use crate::token::require_auditor;

const PG_EXPORT: &str = "SELECT position, recorded_at, aggregate_type, aggregate_id, sequence, \
     event_type, event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT) FROM events \
     WHERE position >= $1 AND position <= $2 AND ($3 = '' OR event_type = $3) \
     ORDER BY tx_id, position";

const SQLITE_EXPORT: &str = "SELECT position, recorded_at, aggregate_type, aggregate_id, \
     sequence, event_type, event_version, payload, metadata FROM events \
     WHERE position >= $1 AND position <= $2 AND ($3 = '' OR event_type = $3) \
     ORDER BY position";

const CSV_HEADER: &str = "position,recorded_at,aggregate_type,aggregate_id,sequence,event_type,\
     event_version,actor_id,actor_role,payload,metadata";

/// One exported event, already pseudonymised.
struct Exported {
    position: i64,
    recorded_at: DateTime<Utc>,
    aggregate_type: String,
    aggregate_id: String,
    sequence: i64,
    event_type: String,
    event_version: String,
    payload: Value,
    metadata: Value,
}

/// Runs `export`. Everything is checked before the first byte is written.
pub async fn export(db: &Db, args: &ExportArgs) -> anyhow::Result<()> {
    let key = args
        .pseudonym_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            anyhow!("refusing to export without a pseudonymisation key: set KABINET_EXPORT_KEY (or pass --pseudonym-key)")
        })?;
    if args.include_personal_data {
        let Some(token) = args.token.as_deref().filter(|t| !t.is_empty()) else {
            bail!("--include-personal-data needs the caller's token with the auditor role (--token or KABINET_TOKEN)");
        };
        let secret = args.jwt_secret.as_deref().unwrap_or_default();
        require_auditor(token, secret.as_bytes())?;
    }
    let pseudonymiser = Pseudonymiser::new(key.as_bytes(), args.include_personal_data)?;
    let (from, to) = position_range(db, args.from, args.to).await?;
    let event_type = args.event_type.clone().unwrap_or_default();
    let sql = match db {
        Db::Postgres(_) => PG_EXPORT,
        Db::Sqlite(_) => SQLITE_EXPORT,
    };
    let mut out = BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    if args.format == Format::Csv {
        write!(out, "{CSV_HEADER}\r\n")?;
    }
    kabinet_domain::on_db!(db, pool => {
        let mut rows = sqlx::query(sql)
            .bind(from)
            .bind(to)
            .bind(&event_type)
            .fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let position: i64 = row.try_get(0)?;
            let json = |i: usize| -> anyhow::Result<Value> {
                let text: &str = row.try_get(i)?;
                serde_json::from_str(text)
                    .with_context(|| format!("the event at position {position} is not JSON"))
            };
            let aggregate_type: String = row.try_get(2)?;
            let aggregate_id: &str = row.try_get(3)?;
            let event = Exported {
                position,
                recorded_at: row.try_get(1)?,
                aggregate_id: pseudonymiser.aggregate_id(&aggregate_type, aggregate_id),
                aggregate_type,
                sequence: row.try_get(4)?,
                event_type: row.try_get(5)?,
                event_version: row.try_get(6)?,
                payload: pseudonymiser.value(json(7)?),
                metadata: pseudonymiser.value(json(8)?),
            };
            match args.format {
                Format::Ndjson => write_ndjson(&mut out, &event)?,
                Format::Csv => write_csv(&mut out, &event)?,
            }
        }
    });
    out.flush()?;
    Ok(())
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn write_ndjson(out: &mut impl Write, event: &Exported) -> anyhow::Result<()> {
    let line = json!({
        "position": event.position,
        "recorded_at": time(event.recorded_at),
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "sequence": event.sequence,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "payload": event.payload,
        "metadata": event.metadata,
    });
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A CSV field, quoted when it holds a separator, quote or line break (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

fn write_csv(out: &mut impl Write, event: &Exported) -> anyhow::Result<()> {
    let meta = |key: &str| {
        event
            .metadata
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let fields = [
        event.position.to_string(),
        time(event.recorded_at),
        event.aggregate_type.clone(),
        event.aggregate_id.clone(),
        event.sequence.to_string(),
        event.event_type.clone(),
        event.event_version.clone(),
        meta("actor_id"),
        meta("actor_role"),
        event.payload.to_string(),
        event.metadata.to_string(),
    ];
    let line = fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",");
    out.write_all(line.as_bytes())?;
    out.write_all(b"\r\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(
            csv_field("{\"a\":1,\"b\":2}"),
            "\"{\"\"a\"\":1,\"\"b\"\":2}\""
        );
        assert_eq!(csv_field("line\nbreak"), "\"line\nbreak\"");
    }
}
