//! What reconcile found: per category ([`CategoryReport`], its [`Finding`]) and for the
//! pipeline ([`Drain`]), and the table `worker reconcile` prints.

use std::fmt;

use crate::stock::Levels;

/// Whether Postgres has caught up with the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drain {
    /// Every partition's stored offset reached the high watermark seen at the start.
    Drained,
    /// Entries that were in an outbox at the start were not even relayed in time.
    NotRelayed,
    /// Records still unconsumed when the drain timeout passed.
    Behind {
        /// Unconsumed records, all partitions.
        records: i64,
    },
    /// The broker could not be asked.
    Unknown(String),
}

/// The Postgres side of a category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct PostgresTotals {
    /// Reservations held.
    pub held_reservations: i64,
    /// Tickets in them.
    pub held_tickets: i64,
    /// Reservations confirmed.
    pub confirmed_reservations: i64,
    /// Tickets in them.
    pub confirmed_tickets: i64,
}

/// What the live hold records of a category say, against its stock and per-user counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveHolds {
    /// Tickets in the held and paying records listed in the category's deadlines.
    pub held_tickets: i64,
    /// Deadline entries whose record is gone (lost by Redis: live records have no TTL).
    pub orphans: i64,
    /// Users whose `holders` count differs from their live held + confirmed tickets.
    pub users_off: i64,
}

impl LiveHolds {
    /// Whether the records agree with the stock's `held` and the per-user counts.
    pub fn agrees_with(&self, levels: &Levels) -> bool {
        self.held_tickets == levels.held && self.orphans == 0 && self.users_off == 0
    }
}

/// The outcome for one category.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finding {
    /// Redis and Postgres agree.
    Ok,
    /// The outbox still holds events; Postgres trails.
    Pending,
    /// Redis and Postgres disagree, or conservation is broken.
    Drift,
    /// The stock is missing from Redis.
    Missing,
    /// The stock was missing and has been rebuilt, or sales that were behind in Redis
    /// have been restored.
    Repaired,
    /// Reservations that Postgres has confirmed are behind in Redis (see `restore_sales`).
    Behind,
}

impl Finding {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Pending => "pending",
            Self::Drift => "drift",
            Self::Missing => "missing",
            Self::Repaired => "repaired",
            Self::Behind => "behind",
        }
    }
}

/// One category's comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryReport {
    /// The category.
    pub category_id: i64,
    /// Its quota (Postgres).
    pub quota: i64,
    /// Redis levels, if the stock exists (after a repair: the rebuilt levels).
    pub redis: Option<Levels>,
    /// The live hold records, if the stock exists.
    pub live: Option<LiveHolds>,
    /// Entries waiting in the category's outbox.
    pub outbox_entries: i64,
    /// Reservations confirmed in Postgres and behind in Redis (see `restore_sales`).
    pub behind: usize,
    /// Postgres totals.
    pub postgres: PostgresTotals,
    /// The outcome.
    pub finding: Finding,
}

impl CategoryReport {
    /// Redis held minus Postgres held tickets.
    pub fn held_drift(&self) -> Option<i64> {
        self.redis.map(|levels| levels.held - self.postgres.held_tickets)
    }

    /// Redis sold minus Postgres confirmed tickets.
    pub fn sold_drift(&self) -> Option<i64> {
        self.redis.map(|levels| levels.sold - self.postgres.confirmed_tickets)
    }
}

/// The whole comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Whether the pipeline had drained.
    pub drain: Drain,
    /// Per category, in id order.
    pub categories: Vec<CategoryReport>,
}

impl ReconcileReport {
    /// Whether anything is not `ok` or `repaired`, or the pipeline had not drained.
    pub fn has_drift(&self) -> bool {
        self.drain != Drain::Drained
            || self.categories.iter().any(|category| !matches!(category.finding, Finding::Ok | Finding::Repaired))
    }
}

impl fmt::Display for ReconcileReport {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.drain {
            Drain::Drained => writeln!(out, "pipeline: drained")?,
            Drain::NotRelayed => writeln!(out, "pipeline: outbox entries not yet relayed (drift may be transient)")?,
            Drain::Behind { records } => {
                writeln!(out, "pipeline: {records} records not yet consumed (drift may be transient)")?
            }
            Drain::Unknown(reason) => writeln!(out, "pipeline: drain unknown ({reason})")?,
        }
        writeln!(
            out,
            "{:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>7} {:>8}",
            "category",
            "quota",
            "available",
            "held",
            "sold",
            "outbox",
            "pg_held",
            "pg_sold",
            "held_drift",
            "sold_drift",
            "live_held",
            "users_off",
            "behind",
            "status"
        )?;
        for row in &self.categories {
            let level =
                |pick: fn(&Levels) -> i64| row.redis.as_ref().map_or("-".to_owned(), |levels| pick(levels).to_string());
            let drift = |value: Option<i64>| value.map_or("-".to_owned(), |value| format!("{value:+}"));
            let live =
                |pick: fn(&LiveHolds) -> i64| row.live.as_ref().map_or("-".to_owned(), |live| pick(live).to_string());
            writeln!(
                out,
                "{:>8} {:>9} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>10} {:>10} {:>9} {:>10} {:>7} {:>8}",
                row.category_id,
                row.quota,
                level(|levels| levels.available),
                level(|levels| levels.held),
                level(|levels| levels.sold),
                row.outbox_entries,
                row.postgres.held_tickets,
                row.postgres.confirmed_tickets,
                drift(row.held_drift()),
                drift(row.sold_drift()),
                live(|live| live.held_tickets),
                live(|live| live.users_off + live.orphans),
                row.behind,
                row.finding.as_str()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_holds_agree_only_with_the_stock_held_and_no_stray_counts() {
        let levels = Levels { quota: 10, available: 5, held: 3, sold: 2 };
        assert!(LiveHolds { held_tickets: 3, orphans: 0, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 1, orphans: 0, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 3, orphans: 1, users_off: 0 }.agrees_with(&levels));
        assert!(!LiveHolds { held_tickets: 3, orphans: 0, users_off: 1 }.agrees_with(&levels));
    }
}
