//! The reaper: a task in every API process that releases holds past their deadline.
//!
//! Each tick, for every category (concurrently, bounded), `find_due` lists the ids whose
//! deadline has passed by Redis time, and `expire` releases one bounded batch of them in
//! one script that re-checks every hold. Any number of reapers can run: the first
//! script to release a hold takes it out of the deadlines, so the others skip it.
//!
//! A category whose next deadline is later is not polled again until then, but at
//! least every [`IDLE_CHECK_INTERVAL`]: a deadline can move earlier (an abandoned
//! payment returns to its hold's own deadline), and that bounds the extra delay.
//!
//! Payment attempts queued in a category's `voids` set (by the `expire` and payment
//! scripts) are voided at the gateway here and then removed; voiding is idempotent, so
//! a crash between the two only voids again.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::infrastructure::RedisConnection;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::engine::ReservationEngine;
use super::error::ReservationError;
use super::record::with_prelude;
use crate::ids::CategoryId;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::outbox::{self, EventType};
use crate::payment::{AttemptId, PaymentGateway};
use crate::script::LuaScript;

static FIND_DUE: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("find_due", include_str!("find_due.lua")));
static EXPIRE: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("expire", include_str!("expire.lua")));

/// Categories swept at the same time.
const SWEEP_CONCURRENCY: usize = 32;

/// Batches one category may release in one tick before the others get their turn.
const SWEEP_BATCHES_MAX: usize = 20;

/// Queued payment attempts voided per category per tick.
const VOIDS_PER_SWEEP_MAX: usize = 100;

/// The category list is reloaded when its size changes, and at least this often.
const CATEGORIES_REFRESH: Duration = Duration::from_secs(10);

/// Longest pause between two sweeps of one category, however far its next deadline.
pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest pause between two warnings about failing sweeps.
const WARNING_INTERVAL: Duration = Duration::from_secs(5);

/// Options of the reaper, passed explicitly.
#[derive(Debug, Clone, Copy)]
pub struct ReaperOptions {
    /// Pause between two sweeps (`REAPER_INTERVAL`).
    pub interval: Duration,
    /// Holds released per script call (`REAPER_BATCH_MAX`).
    pub batch_max: usize,
}

/// What one sweep of one category did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Holds released as expired.
    pub released: usize,
    /// Holds whose payment window lapsed before their deadline, returned to held.
    pub returned: usize,
    /// Deadline entries of finished holds, dropped.
    pub stale: usize,
    /// Deadline entries whose record was gone, dropped (their tickets cannot be returned;
    /// a live record has no TTL, so only a Redis loss does this).
    pub missing: usize,
    /// Payment attempts voided at the gateway.
    pub voided: usize,
    /// Time until the category's next deadline, by Redis time, when one is pending.
    pub next_due_in: Option<Duration>,
}

/// Releases holds past their deadline.
pub struct Reaper {
    redis: RedisConnection,
    keys: Keyspace,
    gateway: Arc<dyn PaymentGateway>,
    options: ReaperOptions,
    record_ttl: Duration,
}

impl Reaper {
    /// A reaper on the engine's Redis, keyspace and gateway.
    pub fn new(engine: &ReservationEngine, options: ReaperOptions) -> Self {
        Self {
            redis: engine.redis(),
            keys: engine.keys().clone(),
            gateway: engine.gateway().clone(),
            options,
            record_ttl: engine.options().record_ttl,
        }
    }

    /// Sweeps every category each `interval` until `shutdown` fires.
    pub async fn run(self, shutdown: CancellationToken) {
        let reaper = Arc::new(self);
        let mut ticker = tokio::time::interval(reaper.options.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut categories: Vec<CategoryId> = Vec::new();
        let mut loaded_at: Option<Instant> = None;
        let mut next_check: HashMap<CategoryId, Instant> = HashMap::new();
        let mut warned_at: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = match reaper.refresh(&mut categories, &mut loaded_at).await {
                Ok(()) => reaper.tick(&categories, &mut next_check).await,
                Err(error) => Err(error.into()),
            };
            if let Err(error) = result
                && warned_at.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL)
            {
                tracing::warn!(%error, "reaper sweep failed; retrying next tick");
                warned_at = Some(Instant::now());
            }
        }
    }

    /// Sweeps the categories that are due for a check and schedules their next one.
    async fn tick(
        self: &Arc<Self>,
        categories: &[CategoryId],
        next_check: &mut HashMap<CategoryId, Instant>,
    ) -> Result<(), ReservationError> {
        let now = Instant::now();
        let due: Vec<CategoryId> = categories
            .iter()
            .copied()
            .filter(|category| next_check.get(category).is_none_or(|at| *at <= now))
            .collect();
        let mut first_error = None;
        for (category, result) in self.sweep_all(&due).await {
            match result {
                Ok(sweep) => {
                    let wait = sweep.next_due_in.unwrap_or(IDLE_CHECK_INTERVAL).min(IDLE_CHECK_INTERVAL);
                    next_check.insert(category, now + wait);
                }
                Err(error) => {
                    next_check.remove(&category);
                    first_error.get_or_insert(error);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Reloads the category ids when the set's size changed (categories are only ever
    /// added) or the last load is old.
    async fn refresh(
        &self,
        categories: &mut Vec<CategoryId>,
        loaded_at: &mut Option<Instant>,
    ) -> Result<(), redis::RedisError> {
        let mut redis = self.redis.clone();
        let count: usize = redis::cmd("SCARD").arg(self.keys.categories()).query_async(&mut redis).await?;
        if count == categories.len() && loaded_at.is_some_and(|at| at.elapsed() < CATEGORIES_REFRESH) {
            return Ok(());
        }
        let ids: Vec<i64> = redis::cmd("SMEMBERS").arg(self.keys.categories()).query_async(&mut redis).await?;
        *categories = ids.into_iter().filter_map(CategoryId::new).collect();
        categories.sort_unstable();
        *loaded_at = Some(Instant::now());
        Ok(())
    }

    /// Sweeps categories concurrently, at most [`SWEEP_CONCURRENCY`] at a time.
    async fn sweep_all(
        self: &Arc<Self>,
        categories: &[CategoryId],
    ) -> Vec<(CategoryId, Result<Sweep, ReservationError>)> {
        let mut results = Vec::with_capacity(categories.len());
        for chunk in categories.chunks(SWEEP_CONCURRENCY) {
            let mut sweeps = JoinSet::new();
            for &category in chunk {
                let reaper = self.clone();
                sweeps.spawn(async move { (category, reaper.sweep(category).await) });
            }
            while let Some(joined) = sweeps.join_next().await {
                match joined {
                    Ok(result) => results.push(result),
                    Err(error) => tracing::error!(%error, "a reaper sweep panicked"),
                }
            }
        }
        results
    }

    /// Releases what is due in one category (up to `SWEEP_BATCHES_MAX` batches) and
    /// voids queued payment attempts.
    pub async fn sweep(&self, category: CategoryId) -> Result<Sweep, ReservationError> {
        let mut total = Sweep::default();
        for batch in 0..SWEEP_BATCHES_MAX {
            let mut invocation = FIND_DUE.prepare();
            invocation
                .key(self.keys.deadlines(category))
                .key(self.keys.voids(category))
                .arg(self.options.batch_max)
                .arg(VOIDS_PER_SWEEP_MAX);
            let (due, voids, wait_ms): (Vec<String>, Vec<String>, i64) =
                FIND_DUE.run(&invocation, &mut self.redis.clone()).await?;
            total.next_due_in = u64::try_from(wait_ms).ok().map(Duration::from_millis);
            if batch == 0 && !voids.is_empty() {
                total.voided = self.void_queued(category, &voids).await;
            }
            if due.is_empty() {
                break;
            }
            self.expire(category, &due, &mut total).await?;
            if due.len() < self.options.batch_max {
                break;
            }
            // Still a full batch after the last allowed one: come back next tick.
            total.next_due_in = Some(Duration::ZERO);
        }
        Ok(total)
    }

    async fn expire(&self, category: CategoryId, due: &[String], total: &mut Sweep) -> Result<(), ReservationError> {
        let mut invocation = EXPIRE.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.deadlines(category))
            .key(self.keys.holders(category))
            .key(self.keys.outbox(category))
            .key(self.keys.voids(category))
            .key(&self.keys.seat_keys(category));
        // Every hold key is named here (same hash tag), so the script only touches declared keys.
        let hold_prefix = self.keys.hold_prefix(category);
        for id in due {
            invocation.key(format!("{hold_prefix}{id}"));
        }
        invocation.arg(milliseconds::of_duration(self.record_ttl));
        for id in due {
            // An id that is not a UUID has no hold record to release, so its event id is
            // never written.
            let event = Uuid::try_parse(id).map(|uuid| outbox::event_id(uuid, EventType::Expired).to_string());
            invocation.arg(id).arg(event.unwrap_or_default());
        }
        let (delays, returned, stale, missing, queued): (Vec<i64>, usize, usize, usize, Vec<String>) =
            match EXPIRE.run_acknowledged(&invocation, &mut self.redis.clone()).await {
                Ok(reply) => reply,
                Err(error) if error.code() == Some("STOCK_MISSING") => {
                    return Err(ReservationError::StockMissing(category));
                }
                Err(error) => return Err(error.into()),
            };
        metrics::counter!("reservations_expired_total").increment(delays.len() as u64);
        for delay in &delays {
            metrics::histogram!("reaper_release_delay_seconds").record(*delay as f64 / 1000.0);
        }
        if missing > 0 {
            tracing::error!(
                category = category.get(),
                missing,
                "hold records vanished before release (lost by redis); their tickets stay unavailable (run `worker reconcile`)"
            );
        }
        total.released += delays.len();
        total.returned += returned;
        total.stale += stale;
        total.missing += missing;
        if !queued.is_empty() {
            total.voided += self.void_queued(category, &queued).await;
        }
        Ok(())
    }

    /// Voids queued attempts at the gateway and forgets the ones it accepted.
    async fn void_queued(&self, category: CategoryId, attempts: &[String]) -> usize {
        // A void is final at the gateway: only once a replica holds the release that
        // queued it, so a failover cannot bring back a paying hold whose charge is gone.
        if let Err(error) = self.redis.clone().wait_behind(&self.keys.replica_marker(category)).await {
            tracing::warn!(category = category.get(), %error, "voids wait for a replica; the next sweep retries them");
            return 0;
        }
        let mut voided = 0;
        for text in attempts {
            let done = match AttemptId::parse(text) {
                Some(attempt) => self.gateway.void(attempt).await.is_ok(),
                None => true,
            };
            if !done {
                continue;
            }
            let removed: Result<i64, _> =
                redis::cmd("SREM").arg(self.keys.voids(category)).arg(text).query_async(&mut self.redis.clone()).await;
            if removed.is_ok() {
                voided += 1;
            }
        }
        voided
    }
}
