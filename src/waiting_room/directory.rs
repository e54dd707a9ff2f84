//! Each process's view of which events have their waiting room on, which event each
//! category belongs to, and which events are sold out. The reserve path reads it without
//! a Redis round trip in the common case; the rooms are refreshed every
//! `WAITING_ROOM_REFRESH_INTERVAL` and at once in the process that changes a room.
//!
//! Which rooms are on comes from Redis alone, and which event a category belongs to never
//! changes, so it is cached per category and looked up in Redis (the `event_id` of the
//! category's stock) the first time a category is reserved while some room is on: a
//! category created in an event whose room is on needs a pass at once, whether or not a
//! refresh has run since, and a Postgres that keeps failing only stales the sold-out view.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use sqlx::PgPool;

use super::WaitingRoomError;
use crate::ids::CategoryId;
use crate::ids::EventId;
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::stock::Stock;

/// Most categories whose event a process remembers; past it the cache starts afresh.
const CATEGORY_EVENTS_MAX: usize = 100_000;

/// The rooms that are on and the events sold out.
#[derive(Debug, Default)]
struct Snapshot {
    on: HashSet<EventId>,
    sold_out: HashSet<EventId>,
}

/// The per-process directory of rooms.
#[derive(Debug, Default)]
pub struct Directory {
    snapshot: RwLock<Snapshot>,
    /// The event of each category seen so far (a fact that never changes).
    events: RwLock<HashMap<CategoryId, EventId>>,
}

impl Directory {
    /// The event whose room guards `category`, when that room is on. Asks Redis for the
    /// category's event the first time, and only while some room is on.
    pub async fn guard(
        &self,
        category: CategoryId,
        redis: &mut RedisConnection,
        keys: &Keyspace,
    ) -> Result<Option<EventId>, WaitingRoomError> {
        if self.snapshot.read().expect("never poisoned").on.is_empty() {
            return Ok(None);
        }
        let known = self.events.read().expect("never poisoned").get(&category).copied();
        let event = match known {
            Some(event) => Some(event),
            None => {
                let event: Option<i64> =
                    redis::cmd("HGET").arg(keys.stock(category)).arg("event_id").query_async(redis).await?;
                // No stock: the reserve itself answers (404 or 503), and nothing is cached.
                let event = event.and_then(EventId::new);
                if let Some(event) = event {
                    self.remember(category, event);
                }
                event
            }
        };
        Ok(event.filter(|&event| self.is_on(event)))
    }

    fn remember(&self, category: CategoryId, event: EventId) {
        let mut events = self.events.write().expect("never poisoned");
        if events.len() >= CATEGORY_EVENTS_MAX {
            events.clear();
        }
        events.insert(category, event);
    }

    /// Whether `event`'s room was on at the last refresh.
    pub fn is_on(&self, event: EventId) -> bool {
        self.snapshot.read().expect("never poisoned").on.contains(&event)
    }

    /// Whether every category of `event` (whose room is on) had nothing available at the last refresh.
    pub fn sold_out(&self, event: EventId) -> bool {
        self.snapshot.read().expect("never poisoned").sold_out.contains(&event)
    }

    /// Reloads the directory: the rooms from Redis (applied at once), then their categories
    /// from Postgres and the stock levels from Redis (the sold-out view). A Postgres error
    /// keeps the last sold-out view but not the last rooms.
    pub async fn refresh(
        &self,
        redis: &mut RedisConnection,
        keys: &Keyspace,
        database: &PgPool,
        stock: &Stock,
    ) -> Result<(), WaitingRoomError> {
        let on = rooms_on(redis, keys).await?;
        self.snapshot.write().expect("never poisoned").on = on.iter().copied().filter_map(EventId::new).collect();
        // Most of the time no room is on: then there is nothing to ask Postgres.
        let rows: Vec<(i64, i64)> = if on.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as("SELECT id, event_id FROM ticket_categories WHERE event_id = ANY($1)")
                .bind(&on)
                .fetch_all(database)
                .await?
        };
        let mut guarded = HashMap::new();
        for (category, event) in rows {
            if let (Some(category), Some(event)) = (CategoryId::new(category), EventId::new(event)) {
                guarded.insert(category, event);
                self.remember(category, event);
            }
        }
        let categories: Vec<CategoryId> = guarded.keys().copied().collect();
        let sold_out = sold_out_events(stock, &guarded, &categories).await;
        self.snapshot.write().expect("never poisoned").sold_out = sold_out;
        Ok(())
    }
}

/// The events whose room is on, from Redis.
async fn rooms_on(redis: &mut RedisConnection, keys: &Keyspace) -> Result<Vec<i64>, WaitingRoomError> {
    let configured: Vec<i64> = redis::cmd("SMEMBERS").arg(keys.waiting_rooms()).query_async(redis).await?;
    let events: Vec<EventId> = configured.into_iter().filter_map(EventId::new).collect();
    if events.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for &event in &events {
        pipe.cmd("HGET").arg(keys.waiting_room(event)).arg("enabled");
    }
    let enabled: Vec<Option<String>> = pipe.query_async(redis).await?;
    Ok(events
        .iter()
        .zip(enabled)
        .filter(|(_, flag)| flag.as_deref() == Some("1"))
        .map(|(event, _)| event.get())
        .collect())
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
