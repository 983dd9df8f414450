//! A token bucket per key (a user, a username being logged into, an address):
//! `rate` requests per second, bursts up to `burst`.

use std::time::Instant;

use dashmap::DashMap;
use uuid::Uuid;

use crate::problem::ApiError;

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: DashMap<Uuid, Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// Buckets kept at most; past this the idle ones are dropped (a full bucket
/// costs nothing to recreate).
const MAX_BUCKETS: usize = 200_000;

impl RateLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self {
            rate,
            burst: burst.max(1.0),
            buckets: DashMap::new(),
        }
    }

    /// A limiter that lets everything through.
    pub fn disabled() -> Self {
        Self::new(0.0, 0.0)
    }

    /// Takes one token for `key` (a user id, or a key made from a name), or answers
    /// 429 with how long to wait.
    pub fn check(&self, key: Uuid) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
    }

    /// Gives back the token a request took (a login that succeeded: only
    /// failures count against a login budget).
    pub fn refund(&self, key: Uuid) {
        if let Some(mut bucket) = self.buckets.get_mut(&key) {
            bucket.tokens = (bucket.tokens + 1.0).min(self.burst);
        }
    }

    fn check_at(&self, user: Uuid, now: Instant) -> Result<(), ApiError> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() > MAX_BUCKETS {
            let burst = self.burst;
            let rate = self.rate;
            self.buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.refilled).as_secs_f64() * rate < burst
            });
        }
        let mut bucket = self.buckets.entry(user).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err(ApiError::TooManyRequests {
                retry_after_secs: wait.ceil().max(1.0) as u64,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_refund_gives_one_token_back() {
        let limiter = RateLimiter::new(0.001, 2.0);
        let key = Uuid::now_v7();
        limiter.check(key).unwrap();
        limiter.check(key).unwrap();
        assert!(limiter.check(key).is_err());
        limiter.refund(key);
        limiter.check(key).unwrap();
    }

    #[test]
    fn allows_a_burst_then_refuses_then_refills() {
        let limiter = RateLimiter::new(2.0, 3.0);
        let user = Uuid::now_v7();
        let t0 = Instant::now();
        for _ in 0..3 {
            limiter.check_at(user, t0).unwrap();
        }
        match limiter.check_at(user, t0) {
            Err(ApiError::TooManyRequests { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        // Another user has a bucket of their own.
        limiter.check_at(Uuid::now_v7(), t0).unwrap();
        // Half a second refills one token at 2/s.
        limiter
            .check_at(user, t0 + Duration::from_millis(500))
            .unwrap();
        assert!(limiter
            .check_at(user, t0 + Duration::from_millis(500))
            .is_err());
    }

    #[test]
    fn a_zero_rate_disables_limiting() {
        let limiter = RateLimiter::new(0.0, 0.0);
        let user = Uuid::now_v7();
        for _ in 0..1000 {
            limiter.check(user).unwrap();
        }
    }
}
