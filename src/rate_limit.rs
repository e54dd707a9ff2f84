//! Per-user rate limits shared by every api process: a user's state-changing requests
//! (reserve, confirm, cancel, joining a queue) pass a short limit (a rate per second with
//! a burst) and a daily budget, both kept in Redis in the user's slot and decided by one
//! script (GCRA, see `rate_limit/user_rate_limit.lua`). What one token can make the
//! service store is bounded by them: every such request writes at most a few records that
//! live a day (see docs/operations.md, "Security").

use std::time::Duration;

use crate::ids::UserId;
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::lua_script;

lua_script!(USER_RATE_LIMIT, "user_rate_limit", "rate_limit/user_rate_limit.lua");

/// The limits of one user, passed explicitly by the caller; 0 turns a limit off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserRateOptions {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may come at once on top of the sustained rate (at least 1).
    pub burst: u32,
    /// Requests in any 24 h.
    pub per_day: u32,
}

/// Why a request of a user does not run.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// The user is over a limit.
    #[error("over the per-user rate limit; retry in {retry_after_seconds} s")]
    Limited {
        /// Whole seconds until a request would pass.
        retry_after_seconds: u64,
    },
    /// Redis failed; the request does not run (the limit never fails open).
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
}

/// One limit as the script takes it: emission interval and burst tolerance, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    interval_micros: u64,
    tolerance_micros: u64,
}

impl Cell {
    /// `requests` per `period`, `burst` of them at once; `None` when `requests` is 0.
    fn new(requests: u32, period: Duration, burst: u32) -> Option<Self> {
        let period_micros = u64::try_from(period.as_micros()).unwrap_or(u64::MAX);
        let interval_micros = period_micros.checked_div(u64::from(requests))?.max(1);
        let tolerance_micros = interval_micros.saturating_mul(u64::from(burst.max(1) - 1));
        Some(Self { interval_micros, tolerance_micros })
    }

    fn arguments(cell: Option<Self>) -> [u64; 2] {
        cell.map_or([0, 0], |cell| [cell.interval_micros, cell.tolerance_micros])
    }
}

/// The per-user limits of the api.
#[derive(Clone)]
pub struct UserRateLimit {
    redis: RedisConnection,
    keys: Keyspace,
    short: Option<Cell>,
    daily: Option<Cell>,
}

impl UserRateLimit {
    /// Limits over `redis` under `keys`.
    pub fn new(redis: RedisConnection, keys: Keyspace, options: UserRateOptions) -> Self {
        let short = Cell::new(options.per_second, Duration::from_secs(1), options.burst);
        let daily = Cell::new(options.per_day, Duration::from_secs(24 * 3600), options.per_day);
        Self { redis, keys, short, daily }
    }

    /// Counts one request of `user`, or refuses it when a limit is reached.
    pub async fn check(&self, user: &UserId) -> Result<(), RateLimitError> {
        if self.short.is_none() && self.daily.is_none() {
            return Ok(());
        }
        let mut invocation = USER_RATE_LIMIT.prepare();
        invocation.key(self.keys.user_rate_limit(user, "short")).key(self.keys.user_rate_limit(user, "daily"));
        for argument in Cell::arguments(self.short).into_iter().chain(Cell::arguments(self.daily)) {
            invocation.arg(argument);
        }
        let (allowed, wait_milliseconds): (i64, u64) =
            USER_RATE_LIMIT.run(&invocation, &mut self.redis.clone()).await?;
        if allowed == 1 {
            return Ok(());
        }
        Err(RateLimitError::Limited { retry_after_seconds: wait_milliseconds.div_ceil(1000).max(1) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_turn_rates_into_intervals_and_tolerances() {
        let short = Cell::new(5, Duration::from_secs(1), 20).unwrap();
        assert_eq!((short.interval_micros, short.tolerance_micros), (200_000, 19 * 200_000));
        let daily = Cell::new(2000, Duration::from_secs(86_400), 2000).unwrap();
        assert_eq!(daily.interval_micros, 43_200_000, "one request per 43.2 s once the budget is spent");
        assert_eq!(daily.tolerance_micros, 1999 * 43_200_000, "the whole budget may come at once");
        assert_eq!(Cell::new(0, Duration::from_secs(1), 20), None, "0 turns a limit off");
        assert_eq!(Cell::new(5, Duration::from_secs(1), 0).unwrap().tolerance_micros, 0, "a burst of 0 is 1");
    }
}
