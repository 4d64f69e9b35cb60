//! Wake-ups of projectors: local commits, other processes' commits through
//! PostgreSQL LISTEN/NOTIFY, and slow polling as the fallback.

use std::time::Duration;

use kabinet_domain::{Db, Journal};
use sqlx::postgres::PgListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The NOTIFY channel that carries "the journal grew" between processes.
pub const CHANNEL: &str = "kabinet_events";

/// How long commits are gathered before one NOTIFY announces them.
const ANNOUNCE_WINDOW: Duration = Duration::from_millis(5);

/// A merged stream of "something may have been committed" signals.
#[derive(Clone)]
pub struct Wakeups {
    /// Commits of this process.
    local: Option<watch::Receiver<u64>>,
    /// Commits of other processes (PostgreSQL only: SQLite has one process).
    remote: Option<watch::Receiver<u64>>,
}

impl Wakeups {
    /// Starts the cross-process relay (PostgreSQL only) and returns the wake-ups.
    ///
    /// Local commits are announced to other processes by one NOTIFY per burst, sent
    /// from a background task, so writers never pay for NOTIFY in their commit.
    pub fn start(journal: &Journal, shutdown: CancellationToken) -> Wakeups {
        let remote = match journal.db() {
            Db::Postgres(pool) => {
                let (remote_tx, remote) = watch::channel(0u64);
                tokio::spawn(announce(
                    pool.clone(),
                    journal.subscribe_commits(),
                    shutdown.clone(),
                ));
                tokio::spawn(listen(pool.clone(), remote_tx, shutdown));
                Some(remote)
            }
            Db::Sqlite(_) => None,
        };
        Wakeups {
            local: Some(journal.subscribe_commits()),
            remote,
        }
    }

    /// Waits until a commit is signalled or `timeout` passes.
    pub async fn wait(&mut self, timeout: Duration) {
        tokio::select! {
            _ = signalled(&mut self.local) => {}
            _ = signalled(&mut self.remote) => {}
            _ = tokio::time::sleep(timeout) => {}
        }
    }
}

/// Returns when `signal` says something changed; never for a source that is
/// absent or whose sender is gone (a closed channel answers at once, and
/// waiting on it would make an idle projector spin).
async fn signalled(signal: &mut Option<watch::Receiver<u64>>) {
    if let Some(receiver) = signal {
        if receiver.changed().await.is_ok() {
            return;
        }
        *signal = None;
    }
    std::future::pending::<()>().await
}

async fn announce(
    pool: sqlx::PgPool,
    mut commits: watch::Receiver<u64>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = commits.changed() => if changed.is_err() { return },
        }
        // Gather the commits of the next few milliseconds into one NOTIFY: other
        // processes learn of a burst at once, and NOTIFY's commit-time lock is
        // taken a few hundred times a second at most, not once per commit.
        tokio::time::sleep(ANNOUNCE_WINDOW).await;
        commits.mark_unchanged();
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "cannot announce commits to other processes");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn listen(pool: sqlx::PgPool, remote: watch::Sender<u64>, shutdown: CancellationToken) {
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for other processes' commits; polling");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "LISTEN failed; polling");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                note = listener.recv() => match note {
                    Ok(_) => remote.send_modify(|n| *n = n.wrapping_add(1)),
                    Err(e) => {
                        tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_source_whose_sender_is_gone_never_wakes_the_projector() {
        let (local_tx, local) = watch::channel(0u64);
        let (remote_tx, remote) = watch::channel(0u64);
        drop(remote_tx);
        let mut wakeups = Wakeups {
            local: Some(local),
            remote: Some(remote),
        };
        let started = tokio::time::Instant::now();
        wakeups.wait(Duration::from_secs(1)).await;
        assert_eq!(
            started.elapsed(),
            Duration::from_secs(1),
            "a closed channel must not end the wait early"
        );
        let mut absent = Wakeups {
            local: None,
            remote: None,
        };
        let started = tokio::time::Instant::now();
        absent.wait(Duration::from_secs(1)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // A commit still wakes it at once.
        local_tx.send_modify(|n| *n += 1);
        let started = tokio::time::Instant::now();
        wakeups.wait(Duration::from_secs(1)).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
