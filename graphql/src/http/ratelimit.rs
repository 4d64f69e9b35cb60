//! Rate limits per client address and per signed-in account: token buckets
//! in a bounded map, answered with HTTP 429, `Retry-After` and the code
//! `RATE_LIMITED`.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use uuid::Uuid;

use super::caller::{bearer_token, ClientIp};
use super::error::ApiError;
use super::AppState;

/// A token bucket: `tokens` left at `at`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by client, at most `capacity` of them.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    capacity: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `per_second` requests sustained, `burst` at once; `per_second == 0`
    /// lets everything through.
    pub fn new(per_second: u32, burst: u32, capacity: usize) -> Self {
        RateLimiter {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            capacity: capacity.max(2),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token of `key` at `now`, or says how long until one is there.
    pub fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= self.capacity && !buckets.contains_key(&key) {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        }
    }

    /// Forgets buckets that have refilled (a fresh bucket is the same), then,
    /// if the map is still full, the least recently seen half.
    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        let refill = self.burst / self.per_second;
        buckets.retain(|_, b| now.saturating_duration_since(b.at).as_secs_f64() < refill);
        if buckets.len() < self.capacity {
            return;
        }
        let mut seen: Vec<Instant> = buckets.values().map(|b| b.at).collect();
        let middle = seen.len() / 2;
        let (_, cut, _) = seen.select_nth_unstable(middle);
        let cut = *cut;
        buckets.retain(|_, b| b.at > cut);
    }

    /// How many clients are remembered.
    pub fn tracked(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The address a rate is kept for: IPv6 clients by their /64 network, since
/// one subscriber usually holds a whole /64.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// The rate limits of the server.
#[derive(Debug)]
pub struct RateLimits {
    pub addresses: RateLimiter<IpAddr>,
    pub accounts: RateLimiter<Uuid>,
}

impl RateLimits {
    /// Limits from the configuration.
    pub fn new(config: &crate::config::TransportLimits) -> Self {
        RateLimits {
            addresses: RateLimiter::new(
                config.rate_per_address,
                config.rate_burst_per_address,
                config.rate_tracked_clients,
            ),
            accounts: RateLimiter::new(
                config.rate_per_account,
                config.rate_burst_per_account,
                config.rate_tracked_clients,
            ),
        }
    }
}

/// Whole seconds to wait, at least one (the `Retry-After` header has no fractions).
pub fn retry_seconds(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The 429 answer: `Retry-After` and the code `RATE_LIMITED`, saying when to retry.
pub fn too_many_requests(who: &str, wait: Duration) -> ApiError {
    let seconds = retry_seconds(wait).max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
        format!("too many requests from this {who}: retry in {seconds} s"),
    )
    .retry_after(seconds)
}

/// Middleware: every request takes a token of its client address, and a
/// request with a validly signed bearer token one of its account too. Only
/// the signature is checked here (no database); the handler checks the rest.
pub async fn limit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let now = Instant::now();
    let headers = request.headers();
    let address = address_key(ClientIp::of(state.trusted_proxy, peer, headers).0);
    let account = bearer_token(headers)
        .ok()
        .flatten()
        .and_then(|token| state.keys.verify_token(token).ok())
        .map(|verified| verified.actor.account_id);
    let limits = &state.transport.rates;
    let refused = match limits.addresses.check(address, now) {
        Err(wait) => Some(("address", wait)),
        Ok(()) => account.and_then(|a| {
            limits
                .accounts
                .check(a, now)
                .err()
                .map(|wait| ("account", wait))
        }),
    };
    if let Some((who, wait)) = refused {
        tracing::debug!(path = %request.uri().path(), who, "rate limited");
        return too_many_requests(who, wait).into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_and_the_next_request_waits() {
        let limiter = RateLimiter::new(2, 3, 100);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check(1u32, now), Ok(()));
        }
        let wait = limiter.check(1u32, now).expect_err("limited");
        assert_eq!(wait, Duration::from_millis(500));
        // Another client has its own bucket.
        assert_eq!(limiter.check(2u32, now), Ok(()));
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let limiter = RateLimiter::new(2, 1, 100);
        let now = Instant::now();
        assert_eq!(limiter.check(1u32, now), Ok(()));
        assert!(limiter.check(1u32, now).is_err());
        assert_eq!(
            limiter.check(1u32, now + Duration::from_millis(500)),
            Ok(())
        );
    }

    #[test]
    fn a_rate_of_zero_limits_nothing() {
        let limiter = RateLimiter::new(0, 1, 100);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(limiter.check(1u32, now), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn the_map_never_holds_more_than_its_capacity() {
        let limiter = RateLimiter::new(1, 5, 1000);
        let start = Instant::now();
        for i in 0..50_000u32 {
            let _ = limiter.check(i, start + Duration::from_micros(u64::from(i)));
            assert!(limiter.tracked() <= 1000);
        }
    }

    #[test]
    fn ipv6_clients_share_their_64_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
        assert_eq!(
            address_key(mapped),
            "10.0.0.1".parse::<IpAddr>().expect("ip")
        );
    }
}
