//! Live stock levels in Redis: creation, opening, reads, and the conservation check.
//!
//! A category's stock is one hash (see [`crate::keyspace`]) holding `available`,
//! `held`, `sold` and `quota`, plus the sale terms the reserve script needs
//! (`event_id`, `price`, `currency`, `max_per_user`, sale window) and `state`
//! (`pending` until provisioning finishes, then `open`). A seated category's stock also
//! has `seated = 1` and its seat keys (see [`crate::seating`]); its quota is its number
//! of seats, and the counters move with the seats.
//!
//! # Who writes the stock hash
//! Not only this module: Lua scripts of three modules write it, each keeping `available
//! + held + sold == quota`:
//! - `stock`: `create_stock.lua` (the hash, pending) and `open_stock.lua` (`state open`);
//! - `reservation`: `reserve.lua` and `reserve_seats.lua` (available to held),
//!   `finish_payment.lua` (held to sold), and the prelude's `release` run by `cancel.lua`,
//!   `expire.lua` and `finish_payment.lua` (held back to available);
//! - `worker` (reconcile `--repair`): `repair_stock.lua` (a missing stock rebuilt from
//!   Postgres) and `restore_sale.lua` (a sale a failover took back).
//!
//! [`sampler`] reads it (with the outbox length) into the `stock_*` gauges.

pub mod sampler;

use crate::infrastructure::RedisConnection;
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::Serialize;
use utoipa::ToSchema;

use crate::ids::CategoryId;
use crate::keyspace::Keyspace;
use crate::lua_script;
use crate::milliseconds;
use crate::script::LuaScript;
use crate::seating::{self, SeatMap};

static CREATE_STOCK: std::sync::LazyLock<LuaScript> = std::sync::LazyLock::new(|| {
    LuaScript::with_preludes("create_stock", &[seating::PRELUDE], include_str!("stock/create_stock.lua"))
});
lua_script!(OPEN_STOCK, "open_stock", "stock/open_stock.lua");

/// Largest quota of one category: every stock counter stays far from overflow.
pub const QUOTA_MAX: i64 = 10_000_000;

/// Why a stock operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StockError {
    /// Redis failed.
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// The category's stock is not in Redis (flushed, or never provisioned).
    #[error("stock of category {0:?} is missing from redis")]
    Missing(CategoryId),
}

/// Stock levels of one category at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Levels {
    /// Tickets for sale in total.
    pub quota: i64,
    /// Tickets that can be reserved now.
    pub available: i64,
    /// Tickets in unexpired, unconfirmed holds.
    pub held: i64,
    /// Tickets confirmed.
    pub sold: i64,
}

impl Levels {
    /// Whether `available + held + sold == quota` and none is negative.
    pub fn is_conserved(&self) -> bool {
        self.available >= 0 && self.held >= 0 && self.sold >= 0 && self.available + self.held + self.sold == self.quota
    }
}

/// A sale window: reservations are accepted from `starts_at` until `ends_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct SaleWindow {
    /// Opening time, or always open.
    #[sqlx(rename = "sale_starts_at")]
    pub starts_at: Option<DateTime<Utc>>,
    /// Closing time, or never closing.
    #[sqlx(rename = "sale_ends_at")]
    pub ends_at: Option<DateTime<Utc>>,
}

/// The terms a category's stock is created with (and rebuilt with: `worker reconcile
/// --repair` reads them from Postgres, hence the row mapping).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StockTerms {
    /// The category.
    #[sqlx(rename = "id", try_from = "i64")]
    pub category_id: CategoryId,
    /// Its event.
    pub event_id: i64,
    /// Tickets for sale.
    pub quota: i64,
    /// Per-user cap.
    pub max_per_user: i64,
    /// Price per ticket, minor units.
    pub price: i64,
    /// Currency code.
    pub currency: String,
    /// When reservations are accepted.
    #[sqlx(flatten)]
    pub sale_window: SaleWindow,
    /// The seat map of a seated category (its quota is the map's number of seats).
    pub seat_map: Option<SeatMap>,
}

impl StockTerms {
    /// Adds the terms as the first arguments of a script that writes a whole stock
    /// (`create_stock.lua`, and `repair_stock.lua` of `worker reconcile --repair`): event,
    /// quota, per-user cap, price, currency, sale start and end.
    pub fn add_arguments(&self, invocation: &mut redis::ScriptInvocation<'_>) {
        invocation
            .arg(self.event_id)
            .arg(self.quota)
            .arg(self.max_per_user)
            .arg(self.price)
            .arg(&self.currency)
            .arg(milliseconds::optional_text(self.sale_window.starts_at))
            .arg(milliseconds::optional_text(self.sale_window.ends_at));
    }
}

/// Category ids added to the registry per command by [`Stock::register`].
const REGISTER_CHUNK_MEMBERS: usize = 1000;

/// The stock store.
#[derive(Clone)]
pub struct Stock {
    redis: RedisConnection,
    keys: Keyspace,
}

impl Stock {
    /// A stock store on a Redis connection under a keyspace.
    pub fn new(redis: RedisConnection, keys: Keyspace) -> Self {
        Self { redis, keys }
    }

    /// Creates the stock in state `pending` unless it exists, and lists the category.
    pub async fn create_pending(&self, terms: &StockTerms) -> Result<(), StockError> {
        let mut redis = self.redis.clone();
        let _: i64 = redis.sadd(self.keys.categories(), terms.category_id.get()).await?;
        let category = terms.category_id;
        let mut invocation = CREATE_STOCK.prepare();
        invocation.key(self.keys.stock(category));
        if terms.seat_map.is_some() {
            for key in self.keys.seat_keys(category) {
                invocation.key(key);
            }
        }
        terms.add_arguments(&mut invocation);
        if let Some(map) = &terms.seat_map {
            invocation.arg(map.sizes_u16());
            for row in map.rows() {
                invocation.arg(&row.row);
            }
        }
        let _: i64 = CREATE_STOCK.run(&invocation, &mut redis).await?;
        Ok(())
    }

    /// Lists categories in the registry the reaper and the relay walk (idempotent). Run
    /// periodically, it heals a registry that lost members: on a Redis Cluster, the
    /// writes a failed master had not yet sent to the replica that took over.
    pub async fn register(&self, categories: &[CategoryId]) -> Result<(), StockError> {
        let mut redis = self.redis.clone();
        for chunk in categories.chunks(REGISTER_CHUNK_MEMBERS) {
            let ids: Vec<i64> = chunk.iter().map(|category| category.get()).collect();
            let _: i64 = redis.sadd(self.keys.categories(), ids).await?;
        }
        Ok(())
    }

    /// Makes a pending stock reservable; fails with `Missing` if there is no stock.
    pub async fn open(&self, category: CategoryId) -> Result<bool, StockError> {
        let mut invocation = OPEN_STOCK.prepare();
        invocation.key(self.keys.stock(category));
        let opened: i64 = OPEN_STOCK.run(&invocation, &mut self.redis.clone()).await?;
        match opened {
            -1 => Err(StockError::Missing(category)),
            opened => Ok(opened == 1),
        }
    }

    /// Opens every pending stock among `categories`; missing stock is logged, not created.
    pub async fn open_pending(&self, categories: &[CategoryId]) -> Result<usize, StockError> {
        let mut opened = 0;
        for &category in categories {
            match self.open(category).await {
                Ok(true) => opened += 1,
                Ok(false) => {}
                Err(StockError::Missing(category)) => {
                    tracing::warn!(
                        category = category.get(),
                        "stock missing from redis; run `worker reconcile --repair`"
                    );
                }
                Err(error) => return Err(error),
            }
        }
        Ok(opened)
    }

    /// Current levels of each category, in order, with one pipelined round trip.
    pub async fn levels(&self, categories: &[CategoryId]) -> Result<Vec<Levels>, StockError> {
        // Redis refuses an empty pipeline ("empty command"): an event without categories.
        if categories.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for &category in categories {
            pipe.cmd("HMGET").arg(self.keys.stock(category)).arg(&["quota", "available", "held", "sold"]);
        }
        let rows: Vec<[Option<i64>; 4]> = pipe.query_async(&mut self.redis.clone()).await?;
        categories
            .iter()
            .zip(rows)
            .map(|(&category, row)| match row {
                [Some(quota), Some(available), Some(held), Some(sold)] => Ok(Levels { quota, available, held, sold }),
                _ => Err(StockError::Missing(category)),
            })
            .collect()
    }

    /// The conservation check for one category: its levels, or an error naming what broke.
    pub async fn check_conservation(&self, category: CategoryId) -> Result<Levels, String> {
        let levels = self.levels(&[category]).await.map_err(|error| format!("{error:?}"))?;
        let levels = levels[0];
        if levels.is_conserved() {
            Ok(levels)
        } else {
            Err(format!("conservation broken for category {}: {levels:?}", category.get()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conservation_needs_the_sum_and_no_negatives() {
        assert!(Levels { quota: 10, available: 5, held: 3, sold: 2 }.is_conserved());
        assert!(!Levels { quota: 10, available: 5, held: 3, sold: 3 }.is_conserved());
        assert!(!Levels { quota: 10, available: 11, held: -1, sold: 0 }.is_conserved());
    }
}
