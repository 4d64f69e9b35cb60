//! Read-model rows of any table as JSON objects, and the catalog questions the
//! tool asks about tables it does not know in advance.

use serde_json::{Map, Value};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::{Column, Row, TypeInfo, ValueRef};

/// A SQLite row as a JSON object, by the storage class of each value.
pub fn sqlite_row(row: &SqliteRow) -> Map<String, Value> {
    sqlite_pairs(row).into_iter().collect()
}

/// A SQLite row as (column, value) pairs in column order (names may repeat).
pub fn sqlite_pairs(row: &SqliteRow) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match row.try_get_raw(i) {
            Ok(raw) if raw.is_null() => Value::Null,
            Ok(raw) => {
                let kind = raw.type_info().name().to_ascii_uppercase();
                match kind.as_str() {
                    "INTEGER" | "BIGINT" | "INT8" | "BOOLEAN" => {
                        row.try_get::<i64, _>(i).map_or(Value::Null, Value::from)
                    }
                    "REAL" => row.try_get::<f64, _>(i).map_or(Value::Null, Value::from),
                    "BLOB" => row
                        .try_get::<Vec<u8>, _>(i)
                        .map_or(Value::Null, |b| Value::String(hex::encode(b))),
                    _ => row
                        .try_get::<String, _>(i)
                        .map_or(Value::Null, Value::String),
                }
            }
            Err(_) => Value::Null,
        };
        out.push((column.name().to_string(), value));
    }
    out
}

/// A PostgreSQL row as (column, value) pairs in column order (names may
/// repeat). Columns of types without a JSON form here are selected as text by
/// [`pg_select_list`].
pub fn pg_pairs(row: &PgRow) -> Vec<(String, Value)> {
    let mut out = Vec::with_capacity(row.len());
    for (i, column) in row.columns().iter().enumerate() {
        let value = match column.type_info().name() {
            "INT2" => opt(row.try_get::<Option<i16>, _>(i)),
            "INT4" => opt(row.try_get::<Option<i32>, _>(i)),
            "INT8" => opt(row.try_get::<Option<i64>, _>(i)),
            "FLOAT4" => opt(row.try_get::<Option<f32>, _>(i)),
            "FLOAT8" => opt(row.try_get::<Option<f64>, _>(i)),
            "BOOL" => opt(row.try_get::<Option<bool>, _>(i)),
            "JSON" | "JSONB" => row
                .try_get::<Option<Value>, _>(i)
                .ok()
                .flatten()
                .unwrap_or(Value::Null),
            "BYTEA" => row
                .try_get::<Option<Vec<u8>>, _>(i)
                .ok()
                .flatten()
                .map_or(Value::Null, |b| Value::String(hex::encode(b))),
            _ => opt(row.try_get::<Option<String>, _>(i)),
        };
        out.push((column.name().to_string(), value));
    }
    out
}

fn opt<T: Into<Value>>(value: Result<Option<T>, sqlx::Error>) -> Value {
    value.ok().flatten().map_or(Value::Null, Into::into)
}

/// PostgreSQL types [`pg_row`] reads directly; others are cast to text.
const PG_NATIVE: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "real",
    "double precision",
    "boolean",
    "json",
    "jsonb",
    "bytea",
    "text",
    "character varying",
    "character",
];

/// A column of a table: its name and the database's name of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub data_type: String,
}

/// Quotes an identifier for SQL.
pub fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The select list of `columns` (prefixed by `alias.` when given) that [`pg_row`] can read.
pub fn pg_select_list(columns: &[ColumnInfo], alias: Option<&str>) -> String {
    columns
        .iter()
        .map(|c| {
            let qualified = match alias {
                Some(a) => format!("{a}.{}", quote(&c.name)),
                None => quote(&c.name),
            };
            if PG_NATIVE.contains(&c.data_type.as_str()) {
                qualified
            } else {
                format!("CAST({qualified} AS TEXT) AS {}", quote(&c.name))
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns of `table` in the current schema of a PostgreSQL connection
/// (a temporary table shadows a permanent one of the same name).
pub async fn pg_columns(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<ColumnInfo>, sqlx::Error> {
    const SQL: &str = "SELECT a.attname::text, format_type(a.atttypid, NULL) \
         FROM pg_attribute a WHERE a.attrelid = to_regclass($1) \
           AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";
    let rows: Vec<(String, String)> = sqlx::query_as(SQL)
        .bind(quote(table))
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type)| ColumnInfo { name, data_type })
        .collect())
}

/// The columns of the first unique index of `table` (PostgreSQL).
pub async fn pg_unique_key(
    conn: &mut sqlx::PgConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    const SQL: &str = "SELECT a.attname::text FROM pg_index i \
         CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
         WHERE i.indexrelid = (SELECT i2.indexrelid FROM pg_index i2 \
             WHERE i2.indrelid = to_regclass($1) AND i2.indisunique \
             ORDER BY i2.indexrelid LIMIT 1) \
         ORDER BY k.n";
    sqlx::query_scalar(SQL)
        .bind(quote(table))
        .fetch_all(&mut *conn)
        .await
}

/// The columns of `table` (SQLite; temporary tables first, as name lookup does).
pub async fn sqlite_columns(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Vec<ColumnInfo>, sqlx::Error> {
    const SQL: &str = "SELECT name, type FROM pragma_table_info($1)";
    let rows: Vec<(String, String)> = sqlx::query_as(SQL)
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type)| ColumnInfo { name, data_type })
        .collect())
}

/// The columns of the first unique index of `table` (SQLite).
pub async fn sqlite_unique_key(
    conn: &mut sqlx::SqliteConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    const INDEXES: &str =
        "SELECT name FROM pragma_index_list($1) WHERE \"unique\" = 1 ORDER BY seq LIMIT 1";
    const COLUMNS: &str = "SELECT name FROM pragma_index_info($1) ORDER BY seqno";
    let index: Option<String> = sqlx::query_scalar(INDEXES)
        .bind(table)
        .fetch_optional(&mut *conn)
        .await?;
    let Some(index) = index else {
        return Ok(Vec::new());
    };
    sqlx::query_scalar(COLUMNS)
        .bind(index)
        .fetch_all(&mut *conn)
        .await
}
