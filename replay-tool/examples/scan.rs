use std::str::FromStr;
use std::time::{Duration, Instant};
use futures::{FutureExt, TryStreamExt};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::Row;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::args().nth(1).unwrap();
    const SQL: &str = "SELECT position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS TEXT), CAST(metadata AS TEXT), hash \
     FROM events ORDER BY aggregate_type, aggregate_id, sequence";
    for buf in [50usize, 1024, 8192] {
        let opts = SqliteConnectOptions::from_str(&url)?.row_buffer_size(buf);
        let pool = SqlitePoolOptions::new().max_connections(2).connect_with(opts).await?;
        let t = Instant::now();
        let mut n = 0u64;
        let mut rows = sqlx::query(SQL).fetch(&pool);
        while let Some(row) = rows.try_next().await? { let _p: &str = row.try_get(6)?; n += 1; }
        println!("buf {buf} plain: {n} in {:?}", t.elapsed());
        drop(rows);
        let t = Instant::now();
        let mut n = 0u64;
        let mut rows = sqlx::query(SQL).fetch(&pool);
        loop {
            let next = rows.try_next().now_or_never();
            let row = match next {
                Some(r) => r?,
                None => { tokio::time::sleep(Duration::from_micros(500)).await; continue; }
            };
            let Some(row) = row else { break };
            let _p: &str = row.try_get(6)?; n += 1;
        }
        println!("buf {buf} batched: {n} in {:?}", t.elapsed());
    }
    Ok(())
}
