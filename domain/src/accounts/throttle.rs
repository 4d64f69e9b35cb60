//! Back-off and lock-out against guessing: failures are counted per login and
//! per client address; a few are free, then each waits twice as long as the
//! one before, and many lock the key for a while.

use chrono::{DateTime, Duration, Utc};

/// How failures of one key are answered.
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures answered without delay.
    pub free: i64,
    /// Failures after which the key is locked for `lock`.
    pub lock_after: i64,
    pub lock: Duration,
    /// Longest back-off before the lock.
    pub max_backoff: Duration,
    /// A counter whose last failure is older than this starts again.
    pub forget_after: Duration,
}

/// Per login: 3 free failures, back-off up to a minute, 10 lock for 15 minutes.
pub const PER_LOGIN: ThrottlePolicy = ThrottlePolicy {
    free: 3,
    lock_after: 10,
    lock: Duration::minutes(15),
    max_backoff: Duration::seconds(60),
    forget_after: Duration::hours(24),
};

/// Per client address (many people may share one): 20 free, 100 lock.
pub const PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 20,
    lock_after: 100,
    lock: Duration::minutes(15),
    max_backoff: Duration::seconds(60),
    forget_after: Duration::hours(1),
};

/// Codes sent on behalf of one client address (against SMS pumping):
/// 30 free within an hour, then back-off, 60 stop sending for an hour.
pub const SENDS_PER_ADDRESS: ThrottlePolicy = ThrottlePolicy {
    free: 30,
    lock_after: 60,
    lock: Duration::hours(1),
    max_backoff: Duration::seconds(60),
    forget_after: Duration::hours(1),
};

/// Sign-in codes sent to one login (only after the right password, but each is
/// an SMS or a letter): 10 free within an hour, then back-off, 20 stop sending
/// for an hour.
pub const SIGN_IN_SENDS_PER_LOGIN: ThrottlePolicy = ThrottlePolicy {
    free: 10,
    lock_after: 20,
    lock: Duration::hours(1),
    max_backoff: Duration::seconds(60),
    forget_after: Duration::hours(1),
};

/// The throttling policies of the accounts service; the defaults are the
/// constants above.
#[derive(Debug, Clone, Copy)]
pub struct AccountLimits {
    pub per_login: ThrottlePolicy,
    pub per_address: ThrottlePolicy,
    pub sends_per_address: ThrottlePolicy,
    pub sign_in_sends_per_login: ThrottlePolicy,
}

impl Default for AccountLimits {
    fn default() -> Self {
        AccountLimits {
            per_login: PER_LOGIN,
            per_address: PER_ADDRESS,
            sends_per_address: SENDS_PER_ADDRESS,
            sign_in_sends_per_login: SIGN_IN_SENDS_PER_LOGIN,
        }
    }
}

impl ThrottlePolicy {
    /// This policy locking after `lock_after` (at least one) for `lock`; the
    /// free failures shrink when they would reach the lock.
    pub fn locking(self, lock_after: i64, lock: Duration) -> ThrottlePolicy {
        let lock_after = lock_after.max(1);
        ThrottlePolicy {
            free: self.free.min(lock_after - 1),
            lock_after,
            lock,
            ..self
        }
    }

    /// Whether the counter has expired at `now`.
    pub fn forgotten(&self, last_failure: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        now - last_failure > self.forget_after
    }

    /// How long a key with `failures`, the last at `last_failure`, must still
    /// wait at `now` before its next attempt is checked; `None` when it may try.
    pub fn wait(
        &self,
        failures: i64,
        last_failure: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        if self.forgotten(last_failure, now) || failures <= self.free {
            return None;
        }
        let pause = if failures >= self.lock_after {
            self.lock
        } else {
            let doubling = (failures - self.free - 1).min(20) as u32;
            Duration::seconds(1i64 << doubling).min(self.max_backoff)
        };
        let remaining = last_failure + pause - now;
        (remaining > Duration::zero()).then_some(remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0)
            .single()
            .expect("time")
    }

    #[test]
    fn a_lower_lock_shrinks_the_free_failures() {
        let p = PER_LOGIN.locking(2, Duration::minutes(5));
        assert_eq!(p.wait(1, at(0), at(0)), None);
        assert_eq!(p.wait(2, at(0), at(60)), Some(Duration::minutes(4)));
    }

    #[test]
    fn free_failures_then_doubling_back_off_then_lock_out() {
        let p = PER_LOGIN;
        assert_eq!(p.wait(3, at(0), at(0)), None);
        assert_eq!(p.wait(4, at(0), at(0)), Some(Duration::seconds(1)));
        assert_eq!(p.wait(5, at(0), at(1)), Some(Duration::seconds(1)));
        assert_eq!(p.wait(5, at(0), at(2)), None);
        assert_eq!(p.wait(9, at(0), at(0)), Some(Duration::seconds(32)));
        assert_eq!(p.wait(10, at(0), at(60)), Some(Duration::minutes(14)));
        assert_eq!(p.wait(10, at(0), at(15 * 60)), None);
        assert_eq!(
            p.wait(50, at(0), at(25 * 3600)),
            None,
            "forgotten after a day"
        );
    }
}
