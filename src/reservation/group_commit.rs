//! Group commit of counted reserves: per category, the reserves that arrive while the
//! category's `reserve.lua` call is in flight in this process go to Redis together in
//! the next call, which decides each of them in order exactly as it would alone
//! (`reserve.lua` is the one definition of the rules, and a batch of one is a single
//! reserve).
//!
//! # No waiting when idle
//! A reserve of a category with no call in flight is sent at once, as a batch of one.
//! A batch is whatever queued while the previous call ran, oldest first, at most
//! `RESERVE_BATCH_MAX` requests; the rest wait for the call after. `RESERVE_BATCH_MAX=1`
//! turns batching off: every reserve is its own call, sent at once, as before batching.
//!
//! # Bounds, failures, cancellation
//! - The queue holds only requests that wait for their answer, and each one holds its
//!   admission permit meanwhile (`RESERVE_IN_FLIGHT_MAX`, see [`super::admission`]),
//!   so a process queues at most that many across all categories (plus requests whose
//!   caller went away, until the next call takes them).
//! - A Redis error fails every request of its call the way a single call fails: each
//!   gets the error (503 `unavailable`).
//! - Calls run in a task of their own: a request whose caller goes away (a dropped
//!   future) is still decided with its batch, and its result still teaches the
//!   sold-out fast path; its hold and `reserved` event exist as if the client had hung
//!   up after sending, which is what happens without batching too.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::NewReservation;
use super::engine::EngineOptions;
use super::idempotency::{IDEMPOTENCY_TTL_SECONDS, Idempotency, IdempotentOperation, outcome_key};
use super::reserve_reply::ReserveReply;
use super::sold_out::SoldOutVerdicts;
use crate::ids::{CategoryId, ReservationId, UserId};
use crate::infrastructure::RedisConnection;
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::outbox::{self, EventType};
use crate::script::LuaScript;
use crate::telemetry::trace_context::{self, TraceParent};

/// Items of `reserve.lua`'s reply per request (its `REPLY_ITEMS`).
pub const REPLY_ITEMS: usize = 9;

// The hot path runs without the prelude, whose top level Redis would run on every call.
/// What `reserve.lua` and `reserve_seats.lua` share: the stock read, the sale checks, the
/// idempotency record of a reserve and the `reserved` outbox entry.
pub(crate) const RESERVE_PRELUDE: &str = include_str!("reserve_prelude.lua");

static RESERVE: std::sync::LazyLock<LuaScript> =
    std::sync::LazyLock::new(|| LuaScript::with_preludes("reserve", &[RESERVE_PRELUDE], include_str!("reserve.lua")));

/// One counted reserve, ready for `reserve.lua`.
#[derive(Debug, Clone)]
pub struct ReserveCall {
    /// Who reserves.
    pub user: UserId,
    /// What (a counted request: [`crate::seating::SeatSelection::Any`]).
    pub request: NewReservation,
    /// The id the hold gets.
    pub id: ReservationId,
    /// The request's key and fingerprint, when it has an `Idempotency-Key`.
    pub idempotency: Option<Idempotency>,
    /// The request's trace, when it is traced: its outbox entry carries it.
    pub traceparent: Option<TraceParent>,
}

/// What a waiting request gets: its reply, or the error of its whole call.
type Answer = redis::RedisResult<ReserveReply>;

/// A queued request and where its answer goes.
struct Waiting {
    call: Arc<ReserveCall>,
    answer: oneshot::Sender<Answer>,
}

/// The queues of the categories with a call in flight: a category is in the map exactly
/// while a call for it runs in this process.
pub struct Combiner<Item> {
    batch_max: usize,
    queues: Mutex<HashMap<CategoryId, VecDeque<Item>>>,
}

impl<Item> Combiner<Item> {
    /// Batches of at most `batch_max` items (at least 1).
    pub fn new(batch_max: usize) -> Self {
        Self { batch_max: batch_max.max(1), queues: Mutex::new(HashMap::new()) }
    }

    /// The largest batch.
    pub fn batch_max(&self) -> usize {
        self.batch_max
    }

    /// Queues `item` behind the call in flight for `category`, or, when none is, returns
    /// it as a batch of one to send at once: the caller then owns the category's calls
    /// and asks [`Combiner::next`] for the next batch when its call has finished.
    pub fn join(&self, category: CategoryId, item: Item) -> Option<Vec<Item>> {
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match queues.get_mut(&category) {
            Some(queue) => {
                queue.push_back(item);
                None
            }
            None => {
                queues.insert(category, VecDeque::new());
                Some(vec![item])
            }
        }
    }

    /// The next batch of `category` (oldest first, at most `batch_max`) once its call has
    /// finished; `None` when nothing waits, and the category is idle again.
    pub fn next(&self, category: CategoryId) -> Option<Vec<Item>> {
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let queue = queues.get_mut(&category)?;
        if queue.is_empty() {
            queues.remove(&category);
            return None;
        }
        let taken = queue.len().min(self.batch_max);
        Some(queue.drain(..taken).collect())
    }

    /// Ends the category's calls without running what waits (their owner failed); the
    /// waiting items are returned.
    pub fn abandon(&self, category: CategoryId) -> VecDeque<Item> {
        let mut queues = self.queues.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        queues.remove(&category).unwrap_or_default()
    }
}

/// Splits `reserve.lua`'s flat reply into `requests` replies of [`REPLY_ITEMS`] items; a
/// request the reply has no items for gets an empty reply (an unexpected reply).
pub fn split_replies(flat: Vec<Option<String>>, requests: usize) -> Vec<Vec<Option<String>>> {
    let mut replies: Vec<Vec<Option<String>>> = Vec::with_capacity(requests);
    let mut items = flat.into_iter();
    for _ in 0..requests {
        replies.push(items.by_ref().take(REPLY_ITEMS).collect());
    }
    replies
}

/// Owns the category's calls for as long as it lives: when dropped before
/// [`Ownership::release`] (a panic, a runtime shutting down), the category is idle
/// again and the requests that waited get an error instead of waiting forever.
struct Ownership<'a> {
    combiner: &'a Combiner<Waiting>,
    category: CategoryId,
    owned: bool,
}

impl Ownership<'_> {
    fn release(mut self) {
        self.owned = false;
    }
}

impl Drop for Ownership<'_> {
    // Why: a category left in the map would queue its reserves forever.
    fn drop(&mut self) {
        if self.owned {
            drop(self.combiner.abandon(self.category));
        }
    }
}

/// The reserve calls of one engine: the per-category combiner and what a call needs.
pub struct GroupCommit {
    redis: RedisConnection,
    keys: Keyspace,
    hold_ttl: Duration,
    outbox_backlog_max: u64,
    sold_out: Arc<SoldOutVerdicts>,
    combiner: Combiner<Waiting>,
}

impl GroupCommit {
    /// Calls of at most `options.reserve_batch_max` requests (1: no batching) on `redis`;
    /// every fresh answer teaches `sold_out`.
    pub fn new(
        redis: RedisConnection,
        keys: Keyspace,
        options: &EngineOptions,
        sold_out: Arc<SoldOutVerdicts>,
    ) -> Self {
        Self {
            redis,
            keys,
            hold_ttl: options.hold_ttl,
            outbox_backlog_max: options.outbox_backlog_max,
            sold_out,
            combiner: Combiner::new(options.reserve_batch_max),
        }
    }

    /// Decides `call` in a call of its category: at once when none is in flight in this
    /// process, else together with the others that queued meanwhile.
    pub async fn reserve(self: &Arc<Self>, call: Arc<ReserveCall>) -> Answer {
        if self.combiner.batch_max() == 1 {
            return self
                .run(&[call])
                .await
                .map(|mut replies| replies.pop().unwrap_or_else(|| ReserveReply::parse(&[])));
        }
        let category = call.request.category;
        let (answer, answered) = oneshot::channel();
        if let Some(batch) = self.combiner.join(category, Waiting { call, answer }) {
            let group = Arc::clone(self);
            tokio::spawn(async move { group.drive(category, batch).await });
        }
        answered
            .await
            .unwrap_or_else(|_| Err(redis::RedisError::from((redis::ErrorKind::Io, "the reserve call was abandoned"))))
    }

    /// Runs the category's calls, one batch after another, until nothing waits.
    async fn drive(&self, category: CategoryId, first: Vec<Waiting>) {
        let ownership = Ownership { combiner: &self.combiner, category, owned: true };
        let mut batch = first;
        loop {
            let calls: Vec<Arc<ReserveCall>> = batch.iter().map(|waiting| Arc::clone(&waiting.call)).collect();
            let result = self.run(&calls).await;
            match result {
                Ok(replies) => {
                    for (waiting, reply) in batch.into_iter().zip(replies) {
                        // A caller that went away has its hold all the same.
                        let _ = waiting.answer.send(Ok(reply));
                    }
                }
                Err(error) => {
                    for waiting in batch {
                        let _ = waiting.answer.send(Err(error.clone()));
                    }
                }
            }
            match self.combiner.next(category) {
                Some(next) => batch = next,
                None => break,
            }
        }
        ownership.release();
    }

    /// Decides `calls`, all of one category, in one `reserve.lua` call, in order; one
    /// reply per call. Fresh answers teach the sold-out fast path.
    pub async fn run(&self, calls: &[Arc<ReserveCall>]) -> redis::RedisResult<Vec<ReserveReply>> {
        let Some(first) = calls.first() else { return Ok(Vec::new()) };
        let category = first.request.category;
        let mut invocation = RESERVE.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.deadlines(category))
            .key(self.keys.holders(category))
            .key(self.keys.outbox(category))
            .arg(category.get())
            .arg(milliseconds::of_duration(self.hold_ttl))
            .arg(self.outbox_backlog_max)
            .arg(IDEMPOTENCY_TTL_SECONDS);
        for call in calls {
            debug_assert_eq!(call.request.category, category, "one category per call");
            invocation.key(self.keys.hold(category, call.id.uuid()));
            if let Some(idempotency) = &call.idempotency {
                invocation.key(outcome_key(
                    &self.keys,
                    category,
                    IdempotentOperation::Reserve,
                    &call.user,
                    &idempotency.key,
                ));
            }
            invocation
                .arg(call.id.to_string())
                .arg(call.user.as_str())
                .arg(call.request.quantity.get())
                .arg(call.request.event.map(|event| event.get().to_string()).unwrap_or_default())
                .arg(call.idempotency.as_ref().map_or("", |idempotency| idempotency.fingerprint.as_str()))
                .arg(outbox::event_id(call.id.uuid(), EventType::Reserved).to_string())
                .arg(trace_context::script_argument(call.traceparent.as_ref()));
        }
        #[expect(clippy::cast_precision_loss, reason = "a batch is far below 2^52 requests")]
        metrics::histogram!("reserve_batch_requests").record(calls.len() as f64);
        let sent_at = Instant::now();
        let span = RESERVE.batch_span(calls.len(), calls.iter().filter_map(|call| call.traceparent.as_ref()));
        let flat: Vec<Option<String>> = RESERVE.run_acknowledged_in(&invocation, &mut self.redis.clone(), span).await?;
        let replies: Vec<ReserveReply> =
            split_replies(flat, calls.len()).iter().map(|reply| ReserveReply::parse(reply)).collect();
        for (call, reply) in calls.iter().zip(&replies) {
            self.sold_out.learn_from_reply(&call.request, sent_at, reply);
        }
        Ok(replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(id: i64) -> CategoryId {
        CategoryId::new(id).unwrap()
    }

    #[test]
    fn an_idle_category_sends_at_once_and_a_busy_one_queues() {
        let combiner = Combiner::new(64);
        assert_eq!(combiner.join(category(1), 'a'), Some(vec!['a']));
        assert_eq!(combiner.join(category(1), 'b'), None);
        assert_eq!(combiner.join(category(2), 'x'), Some(vec!['x']), "categories are independent");
        assert_eq!(combiner.join(category(1), 'c'), None);
        assert_eq!(combiner.next(category(1)), Some(vec!['b', 'c']));
        assert_eq!(combiner.next(category(1)), None, "nothing waits: idle again");
        assert_eq!(combiner.join(category(1), 'd'), Some(vec!['d']));
    }

    #[test]
    fn batches_are_bounded_and_oldest_first() {
        let combiner = Combiner::new(2);
        assert_eq!(combiner.join(category(1), 0), Some(vec![0]));
        for item in 1..=5 {
            assert_eq!(combiner.join(category(1), item), None);
        }
        assert_eq!(combiner.next(category(1)), Some(vec![1, 2]));
        assert_eq!(combiner.next(category(1)), Some(vec![3, 4]));
        assert_eq!(combiner.next(category(1)), Some(vec![5]));
        assert_eq!(combiner.next(category(1)), None);
        assert_eq!(Combiner::<u8>::new(0).batch_max(), 1, "a batch holds one request at least");
    }

    #[test]
    fn an_abandoned_category_hands_back_its_queue_and_is_idle() {
        let combiner = Combiner::new(8);
        assert_eq!(combiner.join(category(1), 'a'), Some(vec!['a']));
        assert_eq!(combiner.join(category(1), 'b'), None);
        assert_eq!(combiner.abandon(category(1)), VecDeque::from(['b']));
        assert_eq!(combiner.join(category(1), 'c'), Some(vec!['c']));
    }

    #[test]
    fn flat_replies_split_per_request() {
        let item = |text: &str| Some(text.to_owned());
        let mut flat = vec![item("held"), item("0"), item("id"), item("1"), item("1000"), item("USD")];
        flat.extend([item("1"), item("2"), None, item("sold_out"), item("0")]);
        flat.extend(std::iter::repeat_n(None, 7));
        let replies = split_replies(flat, 3);
        assert_eq!(replies.len(), 3);
        assert_eq!(replies[0].len(), REPLY_ITEMS);
        assert_eq!(replies[1][..2], [item("sold_out"), item("0")]);
        assert!(replies[2].is_empty(), "a reply too short leaves the last request without one");
    }

    #[test]
    fn the_script_and_the_engine_agree_on_the_layout() {
        let script = include_str!("reserve.lua");
        assert!(script.contains(&format!("local REPLY_ITEMS = {REPLY_ITEMS}\n")));
        // `run` passes seven arguments per request.
        assert!(script.contains("local REQUEST_ARGUMENTS = 7\n"));
    }
}
