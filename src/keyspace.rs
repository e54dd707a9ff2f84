//! The Redis key layout. Every key that a script touches together shares one hash
//! tag, so each script stays on one Redis Cluster slot.
//!
//! Per ticket category `C` (hash tag `{c:C}`):
//! - `P:{c:C}:stock`: hash of stock levels and the category's sale terms;
//! - `P:{c:C}:hold:R`: hash, the record of reservation `R`;
//! - `P:{c:C}:deadlines`: sorted set of reservation ids that can still lapse, by deadline (ms);
//! - `P:{c:C}:holders`: hash of user id to tickets held + confirmed;
//! - `P:{c:C}:idem:OP:U:K`: idempotency record of operation `OP` by user `U` with key `K`;
//! - `P:{c:C}:voids`: set of payment attempts to void at the gateway;
//! - `P:{c:C}:outbox`: stream of reservation events waiting for the relay;
//! - seated categories only (see the `seating` module): `P:{c:C}:seats`, the bitmap of
//!   taken seats, one byte-aligned segment per row; `P:{c:C}:seat-free`, 16-bit free
//!   counts per row; `P:{c:C}:seat-sizes`, 16-bit row sizes; `P:{c:C}:seat-runs`, 16-bit
//!   upper bounds of each row's longest free run; `P:{c:C}:seat-rows`, hash
//!   of row name to `index:byte offset:seats` and of `#index` to row name. Every script
//!   that lays out, releases or takes seats gets them in KEYS ([`Keyspace::seat_keys`]),
//!   in the category's slot.
//!
//! Per event `E` (hash tag `{e:E}`), its waiting room (see the `waiting_room` module):
//! - `P:{e:E}:room`: hash of the room's settings and admission state;
//! - `P:{e:E}:queue`: sorted set of the users who joined, by place;
//! - `P:{e:E}:joined`: hash of user id to join time;
//! - `P:{e:E}:admissions`: sorted set of admission batches.
//!
//! Outside categories:
//! - `P:{catalog}:categories`: set of category ids that have stock (for the reaper and relay);
//! - `P:{u:HEX}:idem:OP:K`: binds user `HEX` (hex of the id) and key `K` to one request body.
//! - `P:{u:HEX}:rate:short` and `P:{u:HEX}:rate:daily`: user `HEX`'s per-user rate limits
//!   (see the `rate_limit` module).
//! - `P:{catalog}:waiting-rooms`: set of event ids whose waiting room was ever configured;
//! - `P:{relay}:lease:C`: which process relays category `C`'s outbox.
//! - `P:{gateway}:attempt:A` and `P:{gateway}:reference:R`: the simulated payment
//!   gateway's ledger (see the `payment` module); a third party's data, not ours.

use uuid::Uuid;

use crate::ids::{CategoryId, EventId, UserId};

/// Builds every Redis key under one prefix.
#[derive(Debug, Clone)]
pub struct Keyspace {
    prefix: String,
}

impl Keyspace {
    /// A keyspace under `prefix` (`REDIS_KEY_PREFIX`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix of every key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `P:{c:C}:<suffix>` built in one allocation: these keys are made on every request.
    fn category_key(&self, category: CategoryId, suffix: &str, extra: usize) -> String {
        let mut key = String::with_capacity(self.prefix.len() + 25 + suffix.len() + extra);
        key.push_str(&self.prefix);
        key.push_str(":{c:");
        key.push_str(itoa::Buffer::new().format(category.get()));
        key.push_str("}:");
        key.push_str(suffix);
        key
    }

    /// Stock levels and sale terms of a category.
    pub fn stock(&self, category: CategoryId) -> String {
        self.category_key(category, "stock", 0)
    }

    /// Prefix of hold records of a category; the reservation id follows.
    pub fn hold_prefix(&self, category: CategoryId) -> String {
        self.category_key(category, "hold:", 0)
    }

    /// The record of one reservation.
    pub fn hold(&self, category: CategoryId, reservation: Uuid) -> String {
        let mut key = self.category_key(category, "hold:", uuid::fmt::Hyphenated::LENGTH);
        key.push_str(reservation.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        key
    }

    /// Reservations that can still lapse, scored by deadline in ms.
    pub fn deadlines(&self, category: CategoryId) -> String {
        self.category_key(category, "deadlines", 0)
    }

    /// Tickets held + confirmed per user.
    pub fn holders(&self, category: CategoryId) -> String {
        self.category_key(category, "holders", 0)
    }

    /// Prefix of idempotency records of a category.
    pub fn idempotency_prefix(&self, category: CategoryId) -> String {
        self.category_key(category, "idem:", 0)
    }

    /// Payment attempts that must be voided at the gateway.
    pub fn voids(&self, category: CategoryId) -> String {
        self.category_key(category, "voids", 0)
    }

    /// A marker the relay and the reaper write before `WAIT`, so the wait covers every
    /// earlier write to the category's node (see `infrastructure::replication`).
    pub fn replica_marker(&self, category: CategoryId) -> String {
        self.category_key(category, "replica-marker", 0)
    }

    /// The outbox stream of a category.
    pub fn outbox(&self, category: CategoryId) -> String {
        self.category_key(category, "outbox", 0)
    }

    /// The bitmap of a seated category's taken (held or sold) seats.
    pub fn seats(&self, category: CategoryId) -> String {
        self.category_key(category, "seats", 0)
    }

    /// A seated category's free seats per row (16-bit big-endian counts).
    pub fn seat_free(&self, category: CategoryId) -> String {
        self.category_key(category, "seat-free", 0)
    }

    /// A seated category's row sizes (16-bit big-endian counts).
    pub fn seat_sizes(&self, category: CategoryId) -> String {
        self.category_key(category, "seat-sizes", 0)
    }

    /// Upper bounds of the longest free run of each row of a seated category (16-bit
    /// big-endian): exact after a reserve read the row and found no run long enough,
    /// the row's size (or more) after seats in it were freed.
    pub fn seat_runs(&self, category: CategoryId) -> String {
        self.category_key(category, "seat-runs", 0)
    }

    /// The seat keys of a seated category in the order every seat script declares them:
    /// bitmap, free counts, row sizes, rows, longest runs.
    pub fn seat_keys(&self, category: CategoryId) -> [String; 5] {
        [
            self.seats(category),
            self.seat_free(category),
            self.seat_sizes(category),
            self.seat_rows(category),
            self.seat_runs(category),
        ]
    }

    /// A seated category's rows: name to `index:byte offset:seats`, `#index` to name.
    pub fn seat_rows(&self, category: CategoryId) -> String {
        self.category_key(category, "seat-rows", 0)
    }

    /// Category ids that have stock.
    pub fn categories(&self) -> String {
        format!("{}:{{catalog}}:categories", self.prefix)
    }

    /// Binding of a user's idempotency key to one request body.
    pub fn idempotency_binding(&self, operation: &str, user: &UserId, key: &str) -> String {
        format!("{}:idem:{operation}:{key}", self.user_slot(user))
    }

    /// `P:{u:HEX}`: the hash-tagged prefix of a user's keys (`HEX` is the id in hex).
    fn user_slot(&self, user: &UserId) -> String {
        let user_hex: String = user.as_str().bytes().map(|byte| format!("{byte:02x}")).collect();
        format!("{}:{{u:{user_hex}}}", self.prefix)
    }

    /// One of a user's per-user rate limits (`short` or `daily`), in the user's slot.
    pub fn user_rate_limit(&self, user: &UserId, limit: &str) -> String {
        format!("{}:rate:{limit}", self.user_slot(user))
    }

    /// `P:{e:E}:<suffix>`: a key of an event's waiting room.
    fn event_key(&self, event: EventId, suffix: &str) -> String {
        format!("{}:{{e:{}}}:{suffix}", self.prefix, event.get())
    }

    /// An event's waiting-room settings and admission state.
    pub fn waiting_room(&self, event: EventId) -> String {
        self.event_key(event, "room")
    }

    /// The users in an event's queue, by place.
    pub fn waiting_queue(&self, event: EventId) -> String {
        self.event_key(event, "queue")
    }

    /// When each user joined an event's queue.
    pub fn waiting_joined(&self, event: EventId) -> String {
        self.event_key(event, "joined")
    }

    /// An event's admission batches.
    pub fn waiting_admissions(&self, event: EventId) -> String {
        self.event_key(event, "admissions")
    }

    /// Event ids whose waiting room was ever configured.
    pub fn waiting_rooms(&self) -> String {
        format!("{}:{{catalog}}:waiting-rooms", self.prefix)
    }

    /// Lease of the relay for one category's outbox.
    pub fn relay_lease(&self, category: CategoryId) -> String {
        format!("{}:{{relay}}:lease:{}", self.prefix, category.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_tag(key: &str) -> &str {
        let open = key.find('{').unwrap();
        let close = open + key[open..].find('}').unwrap();
        &key[open + 1..close]
    }

    #[test]
    fn category_keys_share_one_hash_tag() {
        let keys = Keyspace::new("t");
        let category = CategoryId::new(42).unwrap();
        let reservation = Uuid::nil();
        let all = [
            keys.stock(category),
            keys.hold(category, reservation),
            keys.deadlines(category),
            keys.holders(category),
            keys.voids(category),
            keys.outbox(category),
            keys.seats(category),
            keys.seat_free(category),
            keys.seat_sizes(category),
            keys.seat_runs(category),
            keys.seat_rows(category),
            format!("{}x", keys.idempotency_prefix(category)),
        ];
        for key in &all {
            assert_eq!(hash_tag(key), "c:42", "{key}");
            assert!(key.starts_with("t:"));
        }
    }

    #[test]
    fn waiting_room_keys_share_the_event_hash_tag() {
        let keys = Keyspace::new("t");
        let event = EventId::new(9).unwrap();
        let all = [
            keys.waiting_room(event),
            keys.waiting_queue(event),
            keys.waiting_joined(event),
            keys.waiting_admissions(event),
        ];
        for key in &all {
            assert_eq!(hash_tag(key), "e:9", "{key}");
        }
        assert_eq!(keys.waiting_queue(event), "t:{e:9}:queue");
    }

    #[test]
    fn keys_read_as_documented() {
        let keys = Keyspace::new("t");
        let category = CategoryId::new(42).unwrap();
        assert_eq!(keys.stock(category), "t:{c:42}:stock");
        assert_eq!(keys.outbox(category), "t:{c:42}:outbox");
        // The seat keys share the stock key's prefix `P:{c:C}:`.
        let prefix = keys.stock(category).trim_end_matches("stock").to_owned();
        assert_eq!(keys.seats(category), format!("{prefix}seats"));
        assert_eq!(keys.seat_free(category), format!("{prefix}seat-free"));
        assert_eq!(keys.seat_sizes(category), format!("{prefix}seat-sizes"));
        assert_eq!(keys.seat_runs(category), format!("{prefix}seat-runs"));
        assert_eq!(keys.seat_rows(category), format!("{prefix}seat-rows"));
        assert_eq!(keys.hold(category, Uuid::nil()), "t:{c:42}:hold:00000000-0000-0000-0000-000000000000");
    }

    #[test]
    fn user_ids_cannot_break_the_hash_tag() {
        let keys = Keyspace::new("t");
        let user = UserId::parse("evil}{x").unwrap();
        let key = keys.idempotency_binding("reserve", &user, "k");
        assert_eq!(hash_tag(&key), "u:6576696c7d7b78");
    }
}
