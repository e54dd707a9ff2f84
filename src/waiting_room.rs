//! The virtual waiting room: per event, off by default. When it is on, reserving in the
//! event's categories needs a queue pass, and users get passes by waiting their turn.
//!
//! The queue lives in Redis under the event's hash tag (see `waiting_room/prelude.lua`),
//! so every API process sees one queue. Admission is computed lazily inside each script
//! from Redis `TIME`: a token bucket of `admit_per_second` tokens refilling at that rate,
//! spent on the head of the queue, so in any window of T seconds at most
//! `admit_per_second × (T + 1)` users are admitted, in queue order, whichever process
//! runs the script. No process leads. Users who join before the queue opens get a random
//! place (a 52-bit score from the CSPRNG, drawn once at their first join), all ahead of
//! later joiners, who get a sequence number; joining, polling and positions are O(log n).
//!
//! Passes are HMAC-signed ([`pass`]) with the room's epoch, which turning the room on
//! advances (and empties its queue), so a pass given before that no longer works; the
//! reserve path checks the signature in the process and the epoch with one Redis read. The
//! per-process [`directory`] says which categories need one.

pub mod directory;
pub mod pass;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::infrastructure::RedisConnection;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::ids::CategoryId;
use crate::ids::EventId;
use crate::ids::UserId;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::script::LuaScript;
use crate::stock::SaleWindow;
use crate::stock::Stock;
use crate::validation::{FieldError, FieldErrors};
use directory::Directory;
use pass::{PassKeys, PassRejection};

/// `admit_per_second` of a room never configured.
pub const ADMIT_PER_SECOND_DEFAULT: i64 = 100;
/// Largest `admit_per_second`.
pub const ADMIT_PER_SECOND_MAX: i64 = 100_000;
/// `pass_ttl_seconds` of a room never configured.
pub const PASS_TTL_SECONDS_DEFAULT: i64 = 600;
/// Shortest and longest `pass_ttl_seconds`.
pub const PASS_TTL_SECONDS_RANGE: std::ops::RangeInclusive<i64> = 5..=86_400;
/// Pre-opening places are drawn below this (2^52), so they stay exact as Redis scores.
const RANDOM_PLACE_BOUND: u64 = 1 << 52;
/// Longest `Retry-After` for a waiting user, so a client never sleeps through its turn for long.
const RETRY_AFTER_WAITING_MAX_SECONDS: f64 = 60.0;
/// `Retry-After` while the event is sold out.
const RETRY_AFTER_SOLD_OUT_SECONDS: u64 = 5;
/// Jitter added to a pre-opening `Retry-After`, so not every client polls at the same instant.
const OPENING_JITTER_SECONDS: u64 = 3;

fn prelude_script(name: &'static str, body: &str) -> LuaScript {
    LuaScript::with_preludes(name, &[include_str!("waiting_room/prelude.lua")], body)
}

static JOIN_QUEUE: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| prelude_script("join_queue", include_str!("waiting_room/join_queue.lua")));
static POLL_QUEUE: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| prelude_script("poll_queue", include_str!("waiting_room/poll_queue.lua")));
static CONFIGURE_ROOM: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| prelude_script("configure_room", include_str!("waiting_room/configure_room.lua")));
static READ_ROOM: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| prelude_script("read_room", include_str!("waiting_room/read_room.lua")));

/// Why a waiting-room operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitingRoomError {
    /// The caller has not joined the event's queue.
    #[error("the caller has not joined this queue")]
    NotJoined,
    /// The event's sale window has closed.
    #[error("the sale has closed")]
    SaleClosed,
    /// Redis failed.
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// A script answered something this code does not know.
    #[error("unexpected reply from {script}: {reply:?}")]
    UnexpectedReply {
        /// The script.
        script: &'static str,
        /// What it said.
        reply: Vec<String>,
    },
}

/// A validated change of a room's settings; `None` keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoomChange {
    /// Turn the room on or off.
    pub enabled: Option<bool>,
    /// Users admitted per second, `1..=100000`.
    pub admit_per_second: Option<i64>,
    /// Pass lifetime in seconds, `5..=86400`.
    pub pass_ttl_seconds: Option<i64>,
}

impl RoomChange {
    /// Validates the raw fields of `PUT /events/{id}/waiting-room`.
    pub fn parse(
        enabled: Option<bool>,
        admit_per_second: Option<i64>,
        pass_ttl_seconds: Option<i64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        if let Some(rate) = admit_per_second
            && !(1..=ADMIT_PER_SECOND_MAX).contains(&rate)
        {
            errors.add("admit_per_second", format!("must be an integer from 1 to {ADMIT_PER_SECOND_MAX}"));
        }
        if let Some(ttl) = pass_ttl_seconds
            && !PASS_TTL_SECONDS_RANGE.contains(&ttl)
        {
            errors.add("pass_ttl_seconds", "must be an integer from 5 to 86400");
        }
        errors.finish(|| Self { enabled, admit_per_second, pass_ttl_seconds })
    }
}

/// An event's waiting room.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(as = WaitingRoom, example = json!({"event_id": 1, "enabled": true, "admit_per_second": 100,
    "pass_ttl_seconds": 600, "opens_at": "2027-01-01T10:00:00Z", "waiting": 25000, "admitted": 1200}))]
pub struct Room {
    /// The event.
    pub event_id: i64,
    /// Whether reserving needs a pass.
    pub enabled: bool,
    /// Users admitted per second at most.
    pub admit_per_second: i64,
    /// How long a pass lasts from admission.
    pub pass_ttl_seconds: i64,
    /// When the queue opens: the sale's start, or when the room was first configured.
    pub opens_at: DateTime<Utc>,
    /// Users waiting now.
    pub waiting: i64,
    /// Users admitted so far.
    pub admitted: i64,
}

/// Where a user stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    /// In the queue.
    Waiting,
    /// Holding a valid pass.
    Admitted,
    /// The pass has expired; joining again puts the user at the back.
    Expired,
    /// Waiting, but every category of the event has nothing available.
    SoldOut,
}

/// A user's place in an event's queue.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"event_id": 1, "status": "waiting", "position": 1042,
    "joined_at": "2027-01-01T09:59:58Z", "pass": null, "pass_expires_at": null}))]
pub struct QueueStatus {
    /// The event.
    pub event_id: i64,
    /// Where the user stands.
    pub status: QueueState,
    /// While waiting after the opening: 1 + the users ahead who still wait.
    pub position: Option<i64>,
    /// When the user joined (again, after an expired pass).
    pub joined_at: DateTime<Utc>,
    /// While admitted: the pass for the `Queue-Pass` header.
    pub pass: Option<String>,
    /// When the pass expires (also once it has).
    pub pass_expires_at: Option<DateTime<Utc>>,
    /// Seconds until polling again is useful, for `Retry-After` (waiting and sold out).
    #[serde(skip)]
    pub retry_after_seconds: Option<u64>,
}

/// A join's result: a new place (201) or the place the user already had (200).
#[derive(Debug, Clone, PartialEq)]
pub enum Joined {
    /// Newly joined (or joined again after an expired pass).
    New(QueueStatus),
    /// Already in the queue.
    Existing(QueueStatus),
}

/// Settings of the waiting room service.
#[derive(Debug, Clone)]
pub struct WaitingRoomOptions {
    /// Signing keys of passes.
    pub pass_keys: PassKeys,
    /// How often each process reloads its directory of rooms.
    pub refresh_interval: Duration,
}

/// The waiting rooms of every event.
#[derive(Clone)]
pub struct WaitingRooms {
    redis: RedisConnection,
    keys: Keyspace,
    database: PgPool,
    stock: Stock,
    options: WaitingRoomOptions,
    directory: Arc<Directory>,
}

fn millis(time: Option<DateTime<Utc>>) -> i64 {
    time.map_or(0, |time| time.timestamp_millis())
}

/// The process clock in ms, for checking pass expiry without Redis.
fn process_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
}

/// A random place for a pre-opening joiner: uniform in `0..2^52`, from the CSPRNG behind
/// `Uuid::new_v4` (the `rand` crate's ChaCha, seeded from the OS).
fn random_place() -> u64 {
    uuid::Uuid::new_v4().as_u64_pair().1 % RANDOM_PLACE_BOUND
}

/// Seconds until polling again is useful: for a waiting user, a random part (half to all)
/// of the time the users ahead take at the admission rate, 1 to 60 s; before the opening,
/// the time until it plus up to 3 s of jitter. `jitter` is uniform in `0..1`.
#[expect(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "the floats are rounded, non-negative and at most a few minutes"
)]
pub fn retry_after_seconds(position: Option<i64>, rate: i64, opens_in_ms: i64, jitter: f64) -> u64 {
    match position {
        Some(position) => {
            let expected = position as f64 / rate.max(1) as f64;
            (expected * (0.5 + 0.5 * jitter)).ceil().clamp(1.0, RETRY_AFTER_WAITING_MAX_SECONDS) as u64
        }
        None => {
            let until_opening = opens_in_ms.max(0).cast_unsigned().div_ceil(1000);
            until_opening.max(1) + (jitter * (OPENING_JITTER_SECONDS as f64 + 1.0)).floor() as u64
        }
    }
}

/// A parsed join or poll reply.
struct Reply {
    outcome: String,
    state: QueueState,
    position: i64,
    joined_ms: i64,
    expires_ms: i64,
    first_wait_ms: i64,
    waiting: i64,
    rate: i64,
    opens_ms: i64,
    now_ms: i64,
    admitted_now: i64,
    epoch: u64,
}

impl Reply {
    fn parse(script: &'static str, reply: Vec<String>) -> Result<Self, WaitingRoomError> {
        let unexpected = |reply: &Vec<String>| WaitingRoomError::UnexpectedReply { script, reply: reply.clone() };
        let state = match reply.get(1).map(String::as_str) {
            Some("waiting") => QueueState::Waiting,
            Some("admitted") => QueueState::Admitted,
            Some("expired") => QueueState::Expired,
            Some("sold_out") => QueueState::SoldOut,
            _ => return Err(unexpected(&reply)),
        };
        let numbers: Vec<i64> = reply[2..].iter().filter_map(|text| text.parse().ok()).collect();
        let [position, joined_ms, expires_ms, first_wait_ms, waiting, rate, opens_ms, now_ms, admitted_now, epoch] =
            numbers[..]
        else {
            return Err(unexpected(&reply));
        };
        let Ok(epoch) = u64::try_from(epoch) else { return Err(unexpected(&reply)) };
        Ok(Self {
            outcome: reply[0].clone(),
            state,
            position,
            joined_ms,
            expires_ms,
            first_wait_ms,
            waiting,
            rate,
            opens_ms,
            now_ms,
            admitted_now,
            epoch,
        })
    }
}

fn room_from(event: EventId, reply: Vec<String>, script: &'static str) -> Result<Room, WaitingRoomError> {
    let numbers: Vec<i64> = reply.iter().skip(1).filter_map(|text| text.parse().ok()).collect();
    let [rate, pass_ttl, opens_ms, waiting, admitted, admitted_now] = numbers[..] else {
        return Err(WaitingRoomError::UnexpectedReply { script, reply });
    };
    record_admissions(event, waiting, admitted_now);
    Ok(Room {
        event_id: event.get(),
        enabled: reply[0] == "1",
        admit_per_second: rate,
        pass_ttl_seconds: pass_ttl,
        opens_at: milliseconds::to_time(opens_ms),
        waiting,
        admitted,
    })
}

fn record_admissions(event: EventId, waiting: i64, admitted_now: i64) {
    let label = event.get().to_string();
    metrics::gauge!("waiting_room_queue_length", "event" => label.clone()).set(waiting as f64);
    if admitted_now > 0 {
        metrics::counter!("waiting_room_admitted_total", "event" => label)
            .increment(u64::try_from(admitted_now).unwrap_or(0));
    }
}

impl WaitingRooms {
    /// The service over Redis (the queues), Postgres (categories of rooms) and the stock.
    pub fn new(
        redis: RedisConnection,
        keys: Keyspace,
        database: PgPool,
        stock: Stock,
        options: WaitingRoomOptions,
    ) -> Self {
        Self { redis, keys, database, stock, options, directory: Arc::default() }
    }

    fn invocation_keys<'a>(&self, script: &'a LuaScript, event: EventId) -> redis::ScriptInvocation<'a> {
        let mut invocation = script.prepare();
        invocation
            .key(self.keys.waiting_room(event))
            .key(self.keys.waiting_queue(event))
            .key(self.keys.waiting_joined(event))
            .key(self.keys.waiting_admissions(event));
        invocation
    }

    fn sold_out_flag(&self, event: EventId) -> &'static str {
        if self.directory.sold_out(event) { "1" } else { "0" }
    }

    /// Changes a room's settings (creating it with the defaults first) and updates this
    /// process's directory at once.
    pub async fn configure(
        &self,
        event: EventId,
        window: SaleWindow,
        change: RoomChange,
    ) -> Result<Room, WaitingRoomError> {
        let mut redis = self.redis.clone();
        // The index first: a crash after it leaves an event listed whose room reads as before.
        let () = redis::cmd("SADD").arg(self.keys.waiting_rooms()).arg(event.get()).query_async(&mut redis).await?;
        let mut invocation = self.invocation_keys(&CONFIGURE_ROOM, event);
        let optional = |value: Option<i64>| value.map(|value| value.to_string()).unwrap_or_default();
        invocation
            .arg(change.enabled.map_or("", |on| if on { "1" } else { "0" }))
            .arg(optional(change.admit_per_second))
            .arg(optional(change.pass_ttl_seconds))
            .arg(millis(window.starts_at))
            .arg(millis(window.ends_at))
            .arg(ADMIT_PER_SECOND_DEFAULT)
            .arg(PASS_TTL_SECONDS_DEFAULT)
            .arg(self.sold_out_flag(event));
        let reply: Vec<String> = CONFIGURE_ROOM.run(&invocation, &mut redis).await?;
        let room = room_from(event, reply, CONFIGURE_ROOM.name())?;
        self.refresh().await?;
        Ok(room)
    }

    /// A room's settings and counts; a room never configured reads off with the defaults.
    pub async fn room(&self, event: EventId, window: SaleWindow) -> Result<Room, WaitingRoomError> {
        let mut invocation = self.invocation_keys(&READ_ROOM, event);
        invocation
            .arg(millis(window.starts_at))
            .arg(ADMIT_PER_SECOND_DEFAULT)
            .arg(PASS_TTL_SECONDS_DEFAULT)
            .arg(self.sold_out_flag(event));
        let reply: Vec<String> = READ_ROOM.run(&invocation, &mut self.redis.clone()).await?;
        room_from(event, reply, READ_ROOM.name())
    }

    /// Joins `user` to `event`'s queue, or keeps the place they have.
    pub async fn join(&self, user: &UserId, event: EventId, window: SaleWindow) -> Result<Joined, WaitingRoomError> {
        let mut invocation = self.invocation_keys(&JOIN_QUEUE, event);
        invocation
            .arg(user.as_str())
            .arg(random_place())
            .arg(self.sold_out_flag(event))
            .arg(millis(window.starts_at))
            .arg(millis(window.ends_at))
            .arg(ADMIT_PER_SECOND_DEFAULT)
            .arg(PASS_TTL_SECONDS_DEFAULT);
        let reply: Vec<String> = JOIN_QUEUE.run_acknowledged(&invocation, &mut self.redis.clone()).await?;
        if reply.first().map(String::as_str) == Some("sale_closed") {
            return Err(WaitingRoomError::SaleClosed);
        }
        let reply = Reply::parse(JOIN_QUEUE.name(), reply)?;
        let status = self.status(user, event, &reply);
        Ok(if reply.outcome == "created" { Joined::New(status) } else { Joined::Existing(status) })
    }

    /// `user`'s status in `event`'s queue, after bringing admission up to now.
    pub async fn poll(&self, user: &UserId, event: EventId) -> Result<QueueStatus, WaitingRoomError> {
        let mut invocation = self.invocation_keys(&POLL_QUEUE, event);
        invocation.arg(user.as_str()).arg(self.sold_out_flag(event));
        let reply: Vec<String> = POLL_QUEUE.run_acknowledged(&invocation, &mut self.redis.clone()).await?;
        if reply.first().map(String::as_str) == Some("not_joined") {
            return Err(WaitingRoomError::NotJoined);
        }
        let reply = Reply::parse(POLL_QUEUE.name(), reply)?;
        Ok(self.status(user, event, &reply))
    }

    fn status(&self, user: &UserId, event: EventId, reply: &Reply) -> QueueStatus {
        record_admissions(event, reply.waiting, reply.admitted_now);
        if reply.first_wait_ms >= 0 {
            metrics::histogram!("waiting_room_wait_seconds").record(reply.first_wait_ms as f64 / 1000.0);
        }
        let position = (reply.position > 0).then_some(reply.position);
        let retry_after_seconds = match reply.state {
            QueueState::Waiting => {
                Some(retry_after_seconds(position, reply.rate, reply.opens_ms - reply.now_ms, fastrand::f64()))
            }
            QueueState::SoldOut => Some(RETRY_AFTER_SOLD_OUT_SECONDS + fastrand::u64(0..=OPENING_JITTER_SECONDS)),
            QueueState::Admitted | QueueState::Expired => None,
        };
        let admitted = reply.state == QueueState::Admitted;
        QueueStatus {
            event_id: event.get(),
            status: reply.state,
            position,
            joined_at: milliseconds::to_time(reply.joined_ms),
            pass: admitted.then(|| self.options.pass_keys.sign(user, event, reply.epoch, reply.expires_ms)),
            pass_expires_at: (reply.expires_ms >= 0).then(|| milliseconds::to_time(reply.expires_ms)),
            retry_after_seconds,
        }
    }

    /// The event whose room is on and guards `category`, per this process's directory.
    pub async fn guard(&self, category: CategoryId) -> Result<Option<EventId>, WaitingRoomError> {
        self.directory.guard(category, &mut self.redis.clone(), &self.keys).await
    }

    /// Whether `event`'s room was on at this process's last refresh: its room then exists in
    /// Redis with the sale window, so a join needs no catalog read.
    pub fn is_on(&self, event: EventId) -> bool {
        self.directory.is_on(event)
    }

    /// Checks `user`'s pass for `event`, whose room this process's directory shows on: the
    /// signature and expiry in the process, then, in one Redis round trip, whether the room
    /// is still on and the pass was given in its current epoch (turning a room on voids every
    /// earlier pass). The directory may lag a room turned off in another process by one
    /// refresh, so a room found off lets the reserve through: turning a room off takes effect
    /// at once in every process. Counts refusals by reason.
    pub async fn check_pass(
        &self,
        pass: Option<&str>,
        user: &UserId,
        event: EventId,
    ) -> Result<Result<(), PassRejection>, WaitingRoomError> {
        let verified = self.options.pass_keys.verify(pass, user, event, process_now_ms());
        let (enabled, epoch): (Option<String>, Option<u64>) = redis::cmd("HMGET")
            .arg(self.keys.waiting_room(event))
            .arg("enabled")
            .arg("epoch")
            .query_async(&mut self.redis.clone())
            .await?;
        if enabled.as_deref() != Some("1") {
            return Ok(Ok(()));
        }
        let rejection = match verified {
            Ok(given_in) if given_in == epoch.unwrap_or(0) => return Ok(Ok(())),
            Ok(_) => PassRejection::Voided,
            Err(rejection) => rejection,
        };
        metrics::counter!("queue_pass_rejections_total", "reason" => rejection.reason()).increment(1);
        Ok(Err(rejection))
    }

    /// Loads the scripts into Redis ahead of the first request: a crowd's first requests
    /// would otherwise all miss (NOSCRIPT) and send the script text at once.
    pub async fn load_scripts(&self) -> Result<(), WaitingRoomError> {
        let mut redis = self.redis.clone();
        for script in [&*JOIN_QUEUE, &*POLL_QUEUE, &*CONFIGURE_ROOM, &*READ_ROOM] {
            script.prepare().load_async(&mut redis).await?;
        }
        Ok(())
    }

    /// Reloads this process's directory of rooms.
    pub async fn refresh(&self) -> Result<(), WaitingRoomError> {
        self.directory.refresh(&mut self.redis.clone(), &self.keys, &self.database, &self.stock).await
    }

    /// Refreshes the directory every `refresh_interval` until `shutdown`.
    pub async fn run_refresher(self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.options.refresh_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.refresh().await {
                tracing::warn!(?error, "waiting room directory refresh failed; keeping the last one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_bounded() {
        assert!(RoomChange::parse(Some(true), Some(1), Some(5)).is_ok());
        assert!(RoomChange::parse(None, None, None).is_ok());
        let errors = RoomChange::parse(None, Some(0), Some(4)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["admit_per_second", "pass_ttl_seconds"]);
        assert!(RoomChange::parse(None, Some(ADMIT_PER_SECOND_MAX + 1), Some(86_401)).is_err());
    }

    #[test]
    fn retry_after_follows_position_and_rate_with_jitter() {
        assert_eq!(retry_after_seconds(Some(1), 100, 0, 0.99), 1);
        assert_eq!(retry_after_seconds(Some(1000), 100, 0, 0.0), 5);
        assert_eq!(retry_after_seconds(Some(1000), 100, 0, 0.999), 10);
        assert_eq!(retry_after_seconds(Some(10_000_000), 1, 0, 0.5), 60);
        assert_eq!(retry_after_seconds(None, 100, 4_500, 0.0), 5);
        assert_eq!(retry_after_seconds(None, 100, 4_500, 0.99), 8);
    }

    #[test]
    fn random_places_stay_below_the_fifo_base() {
        assert!((0..1000).map(|_| random_place()).all(|place| place < RANDOM_PLACE_BOUND));
    }
}
