//! Backpressure on the reservation endpoints: a bound on in-flight reserve and confirm
//! requests per process (past it, 503 at once instead of an unbounded queue), and an
//! optional per-IP token bucket (429), keyed by [`limit_key`] of the client's address
//! (see [`crate::client_address`] for which address that is behind a proxy).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::client_address::limit_key;

/// Most client addresses the rate limiter tracks at once. Past it, buckets that have
/// refilled are dropped (they equal a fresh one); if the table is still full, every new
/// address shares one overflow bucket at the same rate until room frees up: memory stays
/// bounded and the limit never fails open.
const TRACKED_ADDRESSES_MAX: usize = 100_000;

/// Why a request is shed (load shedding, never a business refusal: those are [`super::Refusal`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shedding {
    /// Too many requests in flight in this process.
    Overloaded,
    /// This address sent more than its rate.
    RateLimited {
        /// Seconds until a request would pass.
        retry_after_seconds: u64,
    },
}

impl Shedding {
    /// The `reason` label of `requests_shed_total`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Overloaded => "overload",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

/// A token bucket holding up to one second of `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn refill(&mut self, rate: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.updated = now;
    }

    /// Takes one token, or says how many whole seconds until one is there.
    fn take(&mut self, rate: f64, now: Instant) -> Result<(), u64> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(whole_seconds_up((1.0 - self.tokens) / rate).max(1))
        }
    }
}

/// A positive wait in seconds, rounded up to whole seconds.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the wait is positive and a few seconds at most; `as` saturates, it cannot wrap"
)]
fn whole_seconds_up(seconds: f64) -> u64 {
    seconds.ceil() as u64
}

struct RateLimiter {
    rate: f64,
    buckets: Mutex<Buckets>,
}

struct Buckets {
    tracked: HashMap<IpAddr, Bucket>,
    /// Shared by the addresses that found the table full.
    overflow: Bucket,
}

impl RateLimiter {
    fn new(rate: f64) -> Self {
        let overflow = Bucket { tokens: rate.max(1.0), updated: Instant::now() };
        Self { rate, buckets: Mutex::new(Buckets { tracked: HashMap::new(), overflow }) }
    }

    fn check(&self, address: IpAddr) -> Result<(), u64> {
        self.check_bounded(address, TRACKED_ADDRESSES_MAX)
    }

    fn check_bounded(&self, address: IpAddr, tracked_max: usize) -> Result<(), u64> {
        let (now, rate) = (Instant::now(), self.rate);
        let key = limit_key(address);
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Buckets { tracked, overflow } = &mut *buckets;
        if !tracked.contains_key(&key) && tracked.len() >= tracked_max {
            tracked.retain(|_, bucket| {
                bucket.refill(rate, now);
                bucket.tokens < rate.max(1.0)
            });
            if tracked.len() >= tracked_max {
                return overflow.take(rate, now);
            }
        }
        let full = Bucket { tokens: rate.max(1.0), updated: now };
        tracked.entry(key).or_insert(full).take(rate, now)
    }
}

/// Admission control of one process.
pub struct Admission {
    in_flight: Arc<Semaphore>,
    rate_limiter: Option<RateLimiter>,
}

impl Admission {
    /// At most `in_flight_max` admitted requests at once; `rate_per_ip_per_second`
    /// requests per client address per second (0 = no limit).
    pub fn new(in_flight_max: usize, rate_per_ip_per_second: u32) -> Self {
        let rate_limiter = (rate_per_ip_per_second > 0).then(|| RateLimiter::new(f64::from(rate_per_ip_per_second)));
        Self { in_flight: Arc::new(Semaphore::new(in_flight_max)), rate_limiter }
    }

    /// Applies the per-IP rate limit, if configured.
    pub fn check_rate(&self, address: IpAddr) -> Result<(), Shedding> {
        match &self.rate_limiter {
            None => Ok(()),
            Some(limiter) => {
                limiter.check(address).map_err(|retry_after_seconds| Shedding::RateLimited { retry_after_seconds })
            }
        }
    }

    /// Admits one request while fewer than `in_flight_max` run; drop the permit when done.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, Shedding> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| Shedding::Overloaded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_allow_one_second_of_rate_then_refill() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: 2.0, updated: start };
        assert!(bucket.take(2.0, start).is_ok());
        assert!(bucket.take(2.0, start).is_ok());
        assert_eq!(bucket.take(2.0, start), Err(1));
        assert!(bucket.take(2.0, start + Duration::from_millis(500)).is_ok());
        let mut slow = Bucket { tokens: 0.0, updated: start };
        assert_eq!(slow.take(0.25, start), Err(4), "retry after rounds up to whole seconds");
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let admission = Admission::new(2, 0);
        let first = admission.enter().unwrap();
        let _second = admission.enter().unwrap();
        assert_eq!(admission.enter().unwrap_err(), Shedding::Overloaded);
        drop(first);
        assert!(admission.enter().is_ok());
    }

    #[test]
    fn rate_limits_are_per_address_and_off_by_default() {
        let address: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let unlimited = Admission::new(10, 0);
        assert!((0..1000).all(|_| unlimited.check_rate(address).is_ok()));
        let limited = Admission::new(10, 3);
        assert!((0..3).all(|_| limited.check_rate(address).is_ok()));
        assert_eq!(limited.check_rate(address), Err(Shedding::RateLimited { retry_after_seconds: 1 }));
        assert!(limited.check_rate(other).is_ok());
    }

    #[test]
    fn a_full_table_never_fails_open() {
        let limiter = RateLimiter::new(1.0);
        let tracked: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limiter.check_bounded(tracked, 1).is_ok(), "the table now holds one draining bucket");
        let newcomers = (2..50).map(|last| IpAddr::from([10, 0, 1, last]));
        let passed = newcomers.filter(|address| limiter.check_bounded(*address, 1).is_ok()).count();
        assert_eq!(passed, 1, "addresses past the bound share one bucket at the rate");
        assert_eq!(limiter.buckets.lock().unwrap().tracked.len(), 1, "the table stays bounded");
    }
}
