//! Each process's view of which events have their waiting room on, which categories
//! belong to them, and which of them are sold out. The reserve path reads it without a
//! Redis round trip; it is refreshed every `WAITING_ROOM_REFRESH_INTERVAL` and at once in
//! the process that changes a room.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use sqlx::PgPool;

use super::WaitingRoomError;
use crate::ids::CategoryId;
use crate::ids::EventId;
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::stock::Stock;

/// The rooms that are on, by category, and the events sold out.
#[derive(Debug, Default)]
struct Snapshot {
    on: HashSet<EventId>,
    guarded: HashMap<CategoryId, EventId>,
    sold_out: HashSet<EventId>,
}

/// The per-process directory of rooms.
#[derive(Debug, Default)]
pub struct Directory {
    snapshot: RwLock<Snapshot>,
}

impl Directory {
    /// The event whose room guards `category`, when that room is on.
    pub fn guard(&self, category: CategoryId) -> Option<EventId> {
        self.snapshot.read().expect("never poisoned").guarded.get(&category).copied()
    }

    /// Whether `event`'s room was on at the last refresh.
    pub fn is_on(&self, event: EventId) -> bool {
        self.snapshot.read().expect("never poisoned").on.contains(&event)
    }

    /// Whether every category of `event` (whose room is on) had nothing available at the last refresh.
    pub fn sold_out(&self, event: EventId) -> bool {
        self.snapshot.read().expect("never poisoned").sold_out.contains(&event)
    }

    /// Reloads the directory: the rooms from Redis, their categories from Postgres, the
    /// stock levels from Redis.
    pub async fn refresh(
        &self,
        redis: &mut RedisConnection,
        keys: &Keyspace,
        database: &PgPool,
        stock: &Stock,
    ) -> Result<(), WaitingRoomError> {
        let configured: Vec<i64> = redis::cmd("SMEMBERS").arg(keys.waiting_rooms()).query_async(redis).await?;
        let mut pipe = redis::pipe();
        let events: Vec<EventId> = configured.into_iter().filter_map(EventId::new).collect();
        for &event in &events {
            pipe.cmd("HGET").arg(keys.waiting_room(event)).arg("enabled");
        }
        let enabled: Vec<Option<String>> = if events.is_empty() { Vec::new() } else { pipe.query_async(redis).await? };
        let on: Vec<i64> = events
            .iter()
            .zip(enabled)
            .filter(|(_, flag)| flag.as_deref() == Some("1"))
            .map(|(event, _)| event.get())
            .collect();
        // Most of the time no room is on: then there is nothing to ask Postgres.
        let rows: Vec<(i64, i64)> = if on.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as("SELECT id, event_id FROM ticket_categories WHERE event_id = ANY($1)")
                .bind(&on)
                .fetch_all(database)
                .await?
        };
        let mut snapshot =
            Snapshot { on: on.iter().copied().filter_map(EventId::new).collect(), ..Snapshot::default() };
        let mut categories = Vec::new();
        for (category, event) in rows {
            if let (Some(category), Some(event)) = (CategoryId::new(category), EventId::new(event)) {
                snapshot.guarded.insert(category, event);
                categories.push(category);
            }
        }
        snapshot.sold_out = sold_out_events(stock, &snapshot.guarded, &categories).await;
        *self.snapshot.write().expect("never poisoned") = snapshot;
        Ok(())
    }
}

/// Events all of whose categories have nothing available. Missing stock counts as not
/// sold out, so a flushed Redis never reads as a sold-out sale.
async fn sold_out_events(
    stock: &Stock,
    guarded: &HashMap<CategoryId, EventId>,
    categories: &[CategoryId],
) -> HashSet<EventId> {
    let mut available: HashMap<EventId, bool> = HashMap::new();
    for &category in categories {
        let any = match stock.levels(&[category]).await {
            Ok(levels) => levels[0].available > 0,
            Err(_) => true,
        };
        *available.entry(guarded[&category]).or_default() |= any;
    }
    available.into_iter().filter(|(_, any)| !any).map(|(event, _)| event).collect()
}
