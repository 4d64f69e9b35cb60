//! The notification dispatcher: hands each new notification to the channels
//! its person chose, and records every delivery.
//!
//! Safe with several server processes: a delivery row is claimed by an
//! `INSERT … ON CONFLICT DO NOTHING` before the message goes out, so only one
//! process sends it. A claim left by a crashed process, and a failed delivery,
//! are retried with back-off, at most [`MAX_ATTEMPTS`] times (at-least-once).
//!
//! Messages go out concurrently, in lanes: at most [`LANE_WIDTH`] at once per
//! channel. A relay that accepts and never answers fills its own channel's
//! lane until its deadline fails those messages; the other channel, and the
//! rounds that find new messages, go on meanwhile.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kabinet_domain::accounts::{Account, AccountStatus, LoginKind};
use kabinet_domain::clock::Clock;
use kabinet_domain::command::CommandRunner;
use kabinet_domain::identity::verification::IdentityVerification;
use kabinet_domain::identity::{Email, PhoneNumber};
use kabinet_domain::notifications::NotificationChannel;
use kabinet_domain::notifications::Preferences;
use kabinet_domain::notify::{Channel, Message, Notifier};
use kabinet_domain::{Db, JournalOrder};
use kabinet_projections::notifications::{self, NotificationView};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Attempts per delivery before it is given up.
pub const MAX_ATTEMPTS: i32 = 5;
/// Notifications looked at per round.
const BATCH: i64 = 100;
/// How long a claim may stay unfinished before another process takes it over;
/// far longer than any adapter's deadline for one message.
const STALE_CLAIM: chrono::Duration = chrono::Duration::minutes(5);
/// Deliveries under way at once on one channel (so at most twice this in all).
pub const LANE_WIDTH: usize = 4;
/// Most notifications one round looks through while some wait for a full lane.
const LOOKAHEAD: usize = 10 * BATCH as usize;
/// How long a stopping dispatcher lets deliveries under way finish and be recorded.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Delivers notifications.
#[derive(Clone)]
pub struct Dispatcher {
    db: Db,
    /// Loads accounts, whose login is the address of people without preferences.
    commands: CommandRunner,
    notifier: Arc<dyn Notifier>,
    clock: Arc<dyn Clock>,
    /// Every notification of an event at or before this order has been handed
    /// over, so rounds look only past it (one full look after a start).
    handed_over: Arc<Mutex<JournalOrder>>,
    lanes: Lanes,
}

/// One lane of [`LANE_WIDTH`] places per channel, shared by every clone of a dispatcher.
#[derive(Clone)]
struct Lanes {
    email: Arc<Semaphore>,
    sms: Arc<Semaphore>,
}

impl Lanes {
    fn new() -> Lanes {
        Lanes {
            email: Arc::new(Semaphore::new(LANE_WIDTH)),
            sms: Arc::new(Semaphore::new(LANE_WIDTH)),
        }
    }

    fn of(&self, channel: NotificationChannel) -> &Arc<Semaphore> {
        match channel {
            NotificationChannel::Email => &self.email,
            NotificationChannel::Sms => &self.sms,
        }
    }

    /// A place in `channel`'s lane, if one is free now.
    fn enter(&self, channel: NotificationChannel) -> Option<OwnedSemaphorePermit> {
        self.of(channel).clone().try_acquire_owned().ok()
    }

    fn all_full(&self) -> bool {
        self.email.available_permits() == 0 && self.sms.available_permits() == 0
    }
}

/// One delivery to make.
struct Delivery {
    position: i64,
    account_id: Uuid,
    channel: NotificationChannel,
    attempts: i32,
}

impl Dispatcher {
    /// A dispatcher delivering through `notifier`.
    pub fn new(
        db: Db,
        commands: CommandRunner,
        notifier: Arc<dyn Notifier>,
        clock: Arc<dyn Clock>,
    ) -> Dispatcher {
        Dispatcher {
            db,
            commands,
            notifier,
            clock,
            handed_over: Arc::new(Mutex::new(JournalOrder::START)),
            lanes: Lanes::new(),
        }
    }

    fn handed_over(&self) -> JournalOrder {
        *self.handed_over.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs rounds every `interval` (and whenever a delivery ends) until
    /// `shutdown`; then gives deliveries under way a short grace to finish.
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let mut sending = JoinSet::new();
        while !shutdown.is_cancelled() {
            while let Some(done) = sending.try_join_next() {
                ended(done);
            }
            match self.round(&mut sending).await {
                Ok(n) if n > 0 => continue,
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "notification dispatch failed; will retry"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(interval) => {}
                Some(done) = sending.join_next(), if !sending.is_empty() => ended(done),
            }
        }
        // A delivery cut off here keeps its claim and is taken over once stale.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while let Some(done) = sending.join_next().await {
                ended(done);
            }
        })
        .await;
        sending.abort_all();
    }

    /// One round: new notifications, then retries; each delivery starts in
    /// `sending` when its channel's lane has room. Returns how many started.
    async fn round(&self, sending: &mut JoinSet<()>) -> Result<usize, sqlx::Error> {
        let mut started = 0;
        // Read first: every message up to it is in the table before the query runs.
        let projected = notifications::projected_up_to(&self.db).await?;
        // Notifications left unclaimed this round because a lane they need is full.
        let mut waiting: HashSet<(i64, Uuid)> = HashSet::new();
        let all_of_them = loop {
            let limit = BATCH + waiting.len() as i64;
            let new = notifications::undelivered(&self.db, self.handed_over(), limit).await?;
            for notification in &new {
                if waiting.contains(&(notification.position, notification.account_id)) {
                    continue;
                }
                match self.deliver_new(notification, sending).await? {
                    Some(n) => started += n,
                    None => {
                        waiting.insert((notification.position, notification.account_id));
                    }
                }
            }
            if (new.len() as i64) < limit {
                break true;
            }
            // Claimed ones leave the list: look past those waiting, within bounds.
            if waiting.is_empty() || waiting.len() >= LOOKAHEAD || self.lanes.all_full() {
                break false;
            }
        };
        if all_of_them && waiting.is_empty() {
            *self.handed_over.lock().unwrap_or_else(|e| e.into_inner()) = projected;
        }
        for channel in [NotificationChannel::Email, NotificationChannel::Sms] {
            if self.lanes.of(channel).available_permits() == 0 {
                continue;
            }
            for delivery in self.due_retries(channel).await? {
                let Some(place) = self.lanes.enter(channel) else {
                    break;
                };
                let Some(notification) = self
                    .notification(delivery.position, delivery.account_id)
                    .await?
                else {
                    continue;
                };
                if self.reclaim(&delivery).await? {
                    let preferences = self.preferences_for(delivery.account_id).await?;
                    self.start(sending, notification, delivery, preferences, place);
                    started += 1;
                }
            }
        }
        Ok(started)
    }

    /// Claims and starts the deliveries of a new notification; `None` (nothing
    /// claimed) when a lane it needs is full, so a later round takes it whole:
    /// a notification claimed in part would never be listed as new again.
    async fn deliver_new(
        &self,
        n: &NotificationView,
        sending: &mut JoinSet<()>,
    ) -> Result<Option<usize>, sqlx::Error> {
        let preferences = self.preferences_for(n.account_id).await?;
        let channels: Vec<NotificationChannel> = preferences
            .as_ref()
            .map(|p| p.channels.clone())
            .unwrap_or_default();
        if channels.is_empty() {
            // Listed in the account, sent nowhere: the person chose no channel.
            self.claim(n, "none", "skipped").await?;
            return Ok(Some(0));
        }
        let mut places = Vec::with_capacity(channels.len());
        for channel in &channels {
            match self.lanes.enter(*channel) {
                Some(place) => places.push(place),
                None => return Ok(None),
            }
        }
        let mut started = 0;
        for (channel, place) in channels.into_iter().zip(places) {
            let delivery = Delivery {
                position: n.position,
                account_id: n.account_id,
                channel,
                attempts: 0,
            };
            if self.claim(n, channel.as_str(), "sending").await? {
                self.start(sending, n.clone(), delivery, preferences.clone(), place);
                started += 1;
            }
        }
        Ok(Some(started))
    }

    /// Sends a claimed delivery in the background, holding its lane `place`
    /// until the result is recorded.
    fn start(
        &self,
        sending: &mut JoinSet<()>,
        n: NotificationView,
        delivery: Delivery,
        preferences: Option<Preferences>,
        place: OwnedSemaphorePermit,
    ) {
        let dispatcher = self.clone();
        sending.spawn(async move {
            let _place = place;
            if let Err(e) = dispatcher.send(&n, &delivery, preferences.as_ref()).await {
                tracing::warn!(
                    position = n.position,
                    channel = delivery.channel.as_str(),
                    error = %e,
                    "cannot record a delivery; its claim will be taken over later"
                );
            }
        });
    }

    /// Sends one delivery that this process holds the claim of, to the address
    /// `preferences` give, and records the result.
    async fn send(
        &self,
        n: &NotificationView,
        delivery: &Delivery,
        preferences: Option<&Preferences>,
    ) -> Result<(), sqlx::Error> {
        let (channel, to) = match (delivery.channel, preferences) {
            (NotificationChannel::Email, Some(p)) => (
                Channel::Email,
                p.email.as_ref().map(|e| e.as_str().to_string()),
            ),
            (NotificationChannel::Sms, Some(p)) => (
                Channel::Sms,
                p.phone.as_ref().map(|p| p.as_str().to_string()),
            ),
            _ => (Channel::Email, None),
        };
        let Some(to) = to else {
            // The person removed the address since: nothing to send to.
            return self
                .finish(delivery, "skipped", Some("no address for this channel"))
                .await;
        };
        let (title, body) = self.words_for(n).await;
        let message = Message {
            channel,
            to,
            subject: title.clone(),
            body: format!("{title}\n\n{body}"),
        };
        match self.notifier.send(&message).await {
            Ok(()) => self.finish(delivery, "sent", None).await,
            Err(e) => {
                tracing::warn!(position = n.position, channel = delivery.channel.as_str(), error = %e, "notification not delivered");
                let status = if delivery.attempts + 1 >= MAX_ATTEMPTS {
                    "gave_up"
                } else {
                    "failed"
                };
                self.finish(delivery, status, Some(&e.to_string())).await
            }
        }
    }

    /// The title and text to send: medical details only to a person whose
    /// identity is verified, neutral words otherwise (and when that cannot be
    /// checked now).
    async fn words_for(&self, n: &NotificationView) -> (String, String) {
        if !notifications::tells_medical_details(&n.kind) {
            return (n.title.clone(), n.body.clone());
        }
        match self
            .commands
            .load::<IdentityVerification>(&n.account_id.to_string())
            .await
        {
            Ok(v) if v.is_verified() => (n.title.clone(), n.body.clone()),
            Ok(_) => notifications::neutral(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot check identity verification; sending neutral words");
                notifications::neutral()
            }
        }
    }

    /// What the person chose; without a choice, their sign-in login on its own
    /// channel (an SMS to a phone login, an e-mail to an e-mail login).
    async fn preferences_for(&self, account: Uuid) -> Result<Option<Preferences>, sqlx::Error> {
        if let Some(chosen) = notifications::preferences_of(&self.db, account).await? {
            return Ok(Some(chosen));
        }
        let loaded = match self.commands.load::<Account>(&account.to_string()).await {
            Ok(account) => account,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load an account for its login address");
                return Ok(None);
            }
        };
        let Some(state) = loaded.state.filter(|s| s.status == AccountStatus::Active) else {
            return Ok(None);
        };
        Ok(Some(match state.login_kind {
            LoginKind::Phone => Preferences {
                channels: vec![NotificationChannel::Sms],
                email: None,
                phone: PhoneNumber::parse(&state.login).ok(),
            },
            LoginKind::Email => Preferences {
                channels: vec![NotificationChannel::Email],
                email: Email::parse(&state.login).ok(),
                phone: None,
            },
        }))
    }

    fn now_micros(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    /// Claims a delivery; false when another process has it already.
    async fn claim(
        &self,
        n: &NotificationView,
        channel: &str,
        status: &str,
    ) -> Result<bool, sqlx::Error> {
        const SQL: &str = "INSERT INTO notification_deliveries \
            (position, account_id, channel, status, attempts, updated_at) VALUES ($1, $2, $3, $4, 0, $5) \
            ON CONFLICT (position, account_id, channel) DO NOTHING";
        let done = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(n.position)
                .bind(n.account_id.to_string())
                .bind(channel)
                .bind(status)
                .bind(self.now_micros())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Takes a failed or stale delivery back for another attempt; false when
    /// another process took it first.
    async fn reclaim(&self, d: &Delivery) -> Result<bool, sqlx::Error> {
        const SQL: &str = "UPDATE notification_deliveries SET status = 'sending', updated_at = $4 \
            WHERE position = $1 AND account_id = $2 AND channel = $3 AND attempts = $5 \
            AND status IN ('failed', 'sending')";
        let done = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(d.position)
                .bind(d.account_id.to_string())
                .bind(d.channel.as_str())
                .bind(self.now_micros())
                .bind(d.attempts)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    async fn finish(
        &self,
        d: &Delivery,
        status: &str,
        error: Option<&str>,
    ) -> Result<(), sqlx::Error> {
        const SQL: &str = "UPDATE notification_deliveries SET status = $4, attempts = attempts + 1, \
            last_error = $5, updated_at = $6 WHERE position = $1 AND account_id = $2 AND channel = $3";
        kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query(SQL)
                .bind(d.position)
                .bind(d.account_id.to_string())
                .bind(d.channel.as_str())
                .bind(status)
                .bind(error)
                .bind(self.now_micros())
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Failed deliveries of `channel` whose back-off has passed, and its claims gone stale.
    async fn due_retries(
        &self,
        channel: NotificationChannel,
    ) -> Result<Vec<Delivery>, sqlx::Error> {
        const SQL: &str = "SELECT position, account_id, channel, attempts, status, updated_at \
            FROM notification_deliveries WHERE status IN ('failed', 'sending') \
            AND updated_at < $1 AND channel = $3 ORDER BY updated_at LIMIT $2";
        let now = self.now_micros();
        // The shortest back-off bounds the query; each row's own is checked below.
        let cutoff = now - backoff(1).num_microseconds().unwrap_or(0);
        let rows: Vec<(i64, String, String, i32, String, i64)> = kabinet_domain::on_db!(&self.db, pool => {
            sqlx::query_as(SQL)
                .bind(cutoff)
                .bind(BATCH)
                .bind(channel.as_str())
                .fetch_all(pool)
                .await?
        });
        Ok(rows
            .into_iter()
            .filter(|(_, _, _, attempts, status, updated)| {
                let wait = if status == "sending" {
                    STALE_CLAIM
                } else {
                    backoff(*attempts)
                };
                now - updated >= wait.num_microseconds().unwrap_or(0)
            })
            .filter_map(|(position, account, channel, attempts, _, _)| {
                Some(Delivery {
                    position,
                    account_id: Uuid::parse_str(&account).ok()?,
                    channel: NotificationChannel::parse(&channel)?,
                    attempts,
                })
            })
            .collect())
    }

    async fn notification(
        &self,
        position: i64,
        account: Uuid,
    ) -> Result<Option<NotificationView>, sqlx::Error> {
        notifications::get(&self.db, position, account).await
    }
}

/// Reports a delivery task that ended without recording its result.
fn ended(done: Result<(), JoinError>) {
    if let Err(e) = done {
        if e.is_panic() {
            tracing::error!(error = %e, "a delivery task panicked; its claim will be taken over later");
        }
    }
}

/// Wait before attempt `attempts + 1`: 2, 4, 8, 16 seconds.
fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::seconds(1i64 << attempts.clamp(1, 6))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_and_is_bounded() {
        assert_eq!(backoff(1), chrono::Duration::seconds(2));
        assert_eq!(backoff(3), chrono::Duration::seconds(8));
        assert_eq!(backoff(40), chrono::Duration::seconds(64));
    }
}
