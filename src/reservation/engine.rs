//! The reservation engine: reserve, confirm (with payment), cancel and read, each
//! transition one Lua script on the category's hash tag.
//!
//! # Confirm is safe against the reaper, and the deadline is absolute
//! 1. `begin_payment` moves the hold to `paying` for one attempt, until
//!    `paying_until_ms = min(now + payment window, expires_at)`; the reaper leaves it
//!    alone until then. Where the master has replicas, the charge waits until a
//!    replica holds this (`REDIS_REPLICAS_ACK`, [`crate::infrastructure::replication`]):
//!    a failover can then never forget an attempt that took money. Not acknowledged in
//!    time: the hold goes back to held at once, nothing is charged, and the confirm
//!    answers 503.
//! 2. The gateway charges under a timeout shorter than the window.
//! 3. `finish_payment` (answered only once a replica holds it) confirms only if the hold is still paying with this attempt and
//!    its deadline has not passed. Otherwise the reaper took it back (or the deadline
//!    passed: the script releases the hold itself); the same script queues the attempt
//!    in the category's `voids` set, it is voided (refunded) at the gateway, and the
//!    confirm answers 410 when the deadline has passed.
//! 4. On decline, failure or timeout `abandon_payment` returns the hold to `held`
//!    under its own deadline; an attempt whose outcome is unknown is voided first.
//!
//! A crash at any point leaves the hold `paying` until the window ends, at the latest
//! at its deadline; the reaper then queues the attempt for voiding and releases the
//! hold (or returns it to `held`) in one script, and voids the attempt at the gateway,
//! which refunds a charge that landed and refuses one that lands later. So a hold is
//! never both sold and released, no charge stands for a released hold, and a payment
//! in flight never keeps the tickets past the deadline plus one reaper pass.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::infrastructure::RedisConnection;
use redis::ScriptInvocation;
use uuid::Uuid;

use super::group_commit::{GroupCommit, ReserveCall, ReserveReply};
use super::idempotency::{
    Fingerprint, IDEMPOTENCY_TTL_SECONDS, Idempotency, IdempotencyKey, IdempotentOperation, outcome_key,
};
use super::sold_out::{SOLD_OUT_VERDICT_TTL_MAX, SoldOutVerdicts};
use super::{
    Confirmation, LEGACY_RECORD_FIELDS, NewReservation, PAYMENT_FIELDS, RECORD_FIELDS, RECORD_FIELDS_OF_BOTH_LAYOUTS,
    either_layout, reservation_from_record,
};
use crate::catalog::{Catalog, CatalogError};
use crate::contract::{Reservation, ReservationStatus, seat_list};
use crate::ids::{CategoryId, ReservationId, UserId};
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::outbox::{self, EventType, MalformedEntry, ReservationEvent};
use crate::payment::{AttemptId, Charge, PaymentError, PaymentGateway, PaymentId, PaymentToken};
use crate::script::LuaScript;
use crate::seating::{SeatName, SeatSelection};
use crate::telemetry::trace_context::{self, TraceParent};

/// Helpers the reservation scripts start with.
const PRELUDE: &str = include_str!("prelude.lua");

/// A reservation script: the hold-record layout, the prelude, then the script's own file.
pub(crate) fn with_prelude(name: &'static str, body: &str) -> LuaScript {
    with_record_layout(name, &format!("{PRELUDE}{body}"))
}

/// A script that starts with the hold-record layout's Lua definitions
/// ([`record_fields_lua`]), for one that writes records without the prelude.
pub(crate) fn with_record_layout(name: &'static str, body: &str) -> LuaScript {
    LuaScript::new(name, &format!("{}{body}", record_fields_lua()))
}

/// The Lua definitions of the hold-record layout that every prelude script (and
/// `repair_stock`) starts with: [`RECORD_FIELDS`], and `FIELD`, each field's stored name
/// by its meaning (the legacy names of [`LEGACY_RECORD_FIELDS`]).
fn record_fields_lua() -> String {
    let quoted: Vec<String> = RECORD_FIELDS.iter().map(|field| format!("'{field}'")).collect();
    let stored = RECORD_FIELDS.iter().chain(&PAYMENT_FIELDS);
    let named: Vec<String> =
        LEGACY_RECORD_FIELDS.iter().zip(stored).map(|(meaning, field)| format!("{meaning} = '{field}'")).collect();
    format!("local RECORD_FIELDS = {{{}}}\nlocal FIELD = {{{}}}\n", quoted.join(", "), named.join(", "))
}

/// A script that answers the hold-record layout the prelude scripts run with, so a
/// test can compare what Redis sees with [`RECORD_FIELDS`].
static RECORD_LAYOUT: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("record_layout", "return RECORD_FIELDS"));

/// The hold-record fields as the prelude scripts see them in Redis (for tests).
pub async fn record_layout(redis: &mut RedisConnection) -> redis::RedisResult<Vec<String>> {
    RECORD_LAYOUT.run(&RECORD_LAYOUT.prepare(), redis).await
}

static RESERVE_SEATS: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("reserve_seats", include_str!("reserve_seats.lua")));
static CANCEL: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("cancel", include_str!("cancel.lua")));
static BEGIN_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("begin_payment", include_str!("begin_payment.lua")));
static FINISH_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("finish_payment", include_str!("finish_payment.lua")));
static ABANDON_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("abandon_payment", include_str!("abandon_payment.lua")));

/// How long a finished (confirmed, cancelled, expired) record stays readable in Redis;
/// later reads and repeated confirms and cancels answer from Postgres. A held or paying
/// record has no TTL at all.
pub const FINAL_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Added to the payment timeout to get the payment window: time to record the outcome
/// of a charge that answered just before its timeout.
pub const PAYMENT_WINDOW_MARGIN: Duration = Duration::from_secs(5);

/// Attempts of an idempotent follow-up script (finish, abandon) on a Redis error.
const FOLLOW_UP_ATTEMPTS: u32 = 3;

/// Outbox entries read per round trip by [`ReservationEngine::outbox_events`].
const OUTBOX_PAGE_ENTRIES: usize = 1000;

/// Options of the engine, passed explicitly.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// How long a hold lasts (`HOLD_TTL`).
    pub hold_ttl: Duration,
    /// Reserve is shed (503) while the category's outbox holds this many entries.
    pub outbox_backlog_max: u64,
    /// Longest wait for the gateway's answer to a charge.
    pub payment_timeout: Duration,
    /// How long a hold may stay `paying`; longer than `payment_timeout`.
    pub payment_window: Duration,
    /// How long a finished record stays in Redis ([`FINAL_RECORD_TTL`] but in tests).
    pub record_ttl: Duration,
    /// Most counted reserves of one category decided in one script call (1: each its own
    /// call), see [`super::group_commit`].
    pub reserve_batch_max: usize,
}

/// Why a reserve was refused: 4xx outcomes that are stored for idempotent requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `event_id` does not match the category's event.
    EventMismatch,
    /// Before the sale window.
    SaleNotOpen,
    /// After the sale window.
    SaleClosed,
    /// Fewer tickets left than asked for.
    SoldOut,
    /// The user's held + confirmed tickets would pass `max_per_user`.
    LimitExceeded,
    /// `price * quantity` is too large to represent exactly.
    AmountTooLarge,
    /// No row has that many adjacent free seats, though that many are free in all.
    NoAdjacentSeats,
    /// Seat fields in a category without seats.
    NotSeated,
    /// More seats named than the category's `max_per_user`, or more than
    /// [`crate::seating::SEATS_PER_REQUEST_MAX`] seats asked for at once.
    TooManySeats,
}

impl Refusal {
    /// The code the script returns and the outcome metric label.
    pub fn code(self) -> &'static str {
        match self {
            Self::EventMismatch => "event_mismatch",
            Self::SaleNotOpen => "sale_not_open",
            Self::SaleClosed => "sale_closed",
            Self::SoldOut => "sold_out",
            Self::LimitExceeded => "limit_exceeded",
            Self::AmountTooLarge => "amount_too_large",
            Self::NoAdjacentSeats => "no_adjacent_seats",
            Self::NotSeated => "not_seated",
            Self::TooManySeats => "too_many_seats",
        }
    }

    fn parse(code: &str) -> Option<Self> {
        [
            Self::EventMismatch,
            Self::SaleNotOpen,
            Self::SaleClosed,
            Self::SoldOut,
            Self::LimitExceeded,
            Self::AmountTooLarge,
            Self::NoAdjacentSeats,
            Self::NotSeated,
            Self::TooManySeats,
        ]
        .into_iter()
        .find(|refusal| refusal.code() == code)
    }
}

/// Why a reservation is not in a state that allows the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHeldReason {
    /// It was cancelled.
    Cancelled,
    /// It is confirmed.
    Confirmed,
    /// A payment for it is running.
    PaymentInProgress,
}

/// Every way a reservation operation can fail; the HTTP layer maps each to a status.
#[derive(Debug, thiserror::Error)]
pub enum ReservationError {
    /// No such reservation, or someone else's.
    #[error("no such reservation")]
    NotFound,
    /// Not in a state that allows this.
    #[error("the reservation is not held: {0:?}")]
    NotHeld(NotHeldReason),
    /// At or after the hold's deadline.
    #[error("the hold expired")]
    Expired,
    /// The same request (or another payment for the reservation) is still running.
    #[error("a request with this key, or a payment for this reservation, is still running")]
    InProgress,
    /// The Idempotency-Key was used with another request body.
    #[error("the idempotency key was used with another request")]
    KeyReused,
    /// Reserve refused.
    #[error("reserve refused: {}", .0.code())]
    Refused(Refusal),
    /// Named seats are held or sold: these ones (rows in map order, then by number).
    #[error("seats taken: {}", .0.join(", "))]
    SeatTaken(Vec<String>),
    /// Named seats that the category's map does not have.
    #[error("no such seats: {}", .0.join(", "))]
    UnknownSeats(Vec<String>),
    /// The gateway declined the payment; the hold stays.
    #[error("the payment was declined")]
    PaymentDeclined,
    /// The gateway failed or did not answer in time; the hold stays.
    #[error("the payment failed: {0}")]
    PaymentFailed(String),
    /// The category's stock is not in Redis, though the category exists (a flushed
    /// Redis, until `worker reconcile --repair` rebuilds it).
    #[error("stock of category {} is missing from redis", .0.get())]
    StockMissing(CategoryId),
    /// No such ticket category: its stock is missing because it never existed.
    #[error("no such ticket category {}", .0.get())]
    UnknownCategory(CategoryId),
    /// Postgres failed while telling a missing category from missing stock.
    #[error("catalog lookup failed")]
    Catalog(#[source] CatalogError),
    /// The category's stock exists but is not open yet (provisioning in progress).
    #[error("stock of category {} is not open", .0.get())]
    StockNotOpen(CategoryId),
    /// The category's outbox is too far behind; reserve is shed.
    #[error("outbox of category {} is over its backlog bound", .0.get())]
    OutboxBacklog(CategoryId),
    /// Redis failed.
    #[error("redis error")]
    Redis(#[from] redis::RedisError),
    /// A script answered something it never should.
    #[error("unexpected reply from script {script}: {reply}")]
    UnexpectedReply {
        /// The script.
        script: &'static str,
        /// What it returned.
        reply: String,
    },
}

impl ReservationError {
    /// Whether the request named nothing that exists (a 404, or stock that is not there):
    /// its `Idempotency-Key` keeps nothing, neither binding nor outcome, and a repeat runs again.
    pub fn names_nothing(&self) -> bool {
        matches!(self, Self::NotFound | Self::UnknownCategory(_) | Self::StockMissing(_))
    }

    /// Whether the request broke a rule only a script could check (a 422): its answer is
    /// not kept (a repeat runs again and answers the same, the category's event, price and
    /// seat map never change), only the binding that ties its key to its body.
    pub fn breaks_a_fixed_rule(&self) -> bool {
        matches!(
            self,
            Self::UnknownSeats(_)
                | Self::Refused(
                    Refusal::EventMismatch | Refusal::AmountTooLarge | Refusal::NotSeated | Refusal::TooManySeats
                )
        )
    }

    /// The `outcome` label of `reservation_outcomes_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::NotFound | Self::UnknownCategory(_) => "not_found",
            Self::NotHeld(_) => "reservation_not_held",
            Self::Expired => "reservation_expired",
            Self::InProgress => "idempotency_in_progress",
            Self::KeyReused => "idempotency_key_reused",
            Self::Refused(refusal) => refusal.code(),
            Self::SeatTaken(_) => "seat_taken",
            Self::UnknownSeats(_) => "unknown_seats",
            Self::PaymentDeclined => "payment_declined",
            Self::PaymentFailed(_) => "payment_failed",
            Self::OutboxBacklog(_) => "outbox_backlog",
            Self::StockMissing(_) | Self::StockNotOpen(_) | Self::Redis(_) | Self::Catalog(_) => "unavailable",
            Self::UnexpectedReply { .. } => "internal_error",
        }
    }

    /// Tells the two causes of missing stock apart: a category that never existed
    /// becomes [`Self::UnknownCategory`]; a real one stays [`Self::StockMissing`]. Only
    /// this failure path reads Postgres; every other error passes through unchanged.
    pub async fn explain_missing_stock(self, catalog: &Catalog) -> Self {
        let Self::StockMissing(category) = self else { return self };
        match catalog.category_exists(category).await {
            Ok(true) => self,
            Ok(false) => Self::UnknownCategory(category),
            Err(error) => Self::Catalog(error),
        }
    }
}

fn unexpected(script: &'static str, reply: &[Option<String>]) -> ReservationError {
    ReservationError::UnexpectedReply { script, reply: format!("{reply:?}") }
}

fn count_replay(operation: IdempotentOperation) {
    metrics::counter!("idempotent_replays_total", "operation" => operation.as_str()).increment(1);
}

/// Whether a follow-up script's writes must be on a replica before it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acknowledged {
    /// It records a state change the client is told about (a confirm).
    Yes,
    /// It does not.
    No,
}

/// What `begin_payment` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentStart {
    /// The hold is now paying with the attempt; charge it (the record as held).
    Pay(Reservation),
    /// Already confirmed: the confirmed record, nothing to charge.
    Confirmed(Reservation),
}

/// Why a payment is given up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Abandon {
    /// Declined: nothing was charged.
    Declined,
    /// Failed or timed out: the attempt is voided first; `void_pending` when that
    /// failed, so the reaper retries it.
    Failed {
        /// Queue the attempt in the category's `voids` set.
        void_pending: bool,
    },
}

/// What `abandon_payment` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbandonOutcome {
    /// The hold is held again.
    Returned,
    /// The hold is held again but its deadline has passed: the reaper releases it.
    Late,
    /// The hold had already moved on; its stored status now.
    Lost(String),
}

impl AbandonOutcome {
    /// The confirm's answer: 410 once the deadline has passed (the deadline is
    /// absolute, whatever became of the payment), else `otherwise`.
    fn error_or(self, otherwise: ReservationError) -> ReservationError {
        match self {
            Self::Late => ReservationError::Expired,
            Self::Lost(status) if status == "expired" => ReservationError::Expired,
            _ => otherwise,
        }
    }
}

/// Where new reservation ids come from ([`ReservationId::generate`] unless a test pins them).
pub type ReservationIds = Arc<dyn Fn(CategoryId) -> ReservationId + Send + Sync>;

/// Most ids one reserve draws: a script answers `id_taken` when the drawn id names another
/// request's hold, and a fresh draw colliding again is beyond any real chance.
const ID_DRAWS_MAX: usize = 4;

/// The engine. Cheap to clone; every clone shares the Redis connection and gateway.
#[derive(Clone)]
pub struct ReservationEngine {
    redis: RedisConnection,
    keys: Keyspace,
    gateway: Arc<dyn PaymentGateway>,
    options: EngineOptions,
    sold_out: Arc<SoldOutVerdicts>,
    reserves: Arc<GroupCommit>,
    ids: ReservationIds,
}

impl ReservationEngine {
    /// An engine on a Redis connection, keyspace and payment gateway.
    pub fn new(
        redis: RedisConnection,
        keys: Keyspace,
        gateway: Arc<dyn PaymentGateway>,
        options: EngineOptions,
    ) -> Self {
        Self::with_verdicts(redis, keys, gateway, options, SOLD_OUT_VERDICT_TTL_MAX)
    }

    /// The same engine with the sold-out fast path trusting a verdict for `ttl` (at most
    /// 100 ms; zero turns it off), see [`super::sold_out`].
    pub fn with_sold_out_verdict_ttl(self, ttl: Duration) -> Self {
        Self { ids: self.ids.clone(), ..Self::with_verdicts(self.redis, self.keys, self.gateway, self.options, ttl) }
    }

    /// The same engine drawing reservation ids from `ids` (tests pin ids to make them collide).
    pub fn with_reservation_ids(self, ids: ReservationIds) -> Self {
        Self { ids, ..self }
    }

    /// An engine whose sold-out verdicts last `ttl`; the group commit teaches the same verdicts.
    fn with_verdicts(
        redis: RedisConnection,
        keys: Keyspace,
        gateway: Arc<dyn PaymentGateway>,
        options: EngineOptions,
        ttl: Duration,
    ) -> Self {
        let sold_out = Arc::new(SoldOutVerdicts::new(ttl));
        let reserves = Arc::new(GroupCommit::new(redis.clone(), keys.clone(), &options, Arc::clone(&sold_out)));
        Self { redis, keys, gateway, options, sold_out, reserves, ids: Arc::new(ReservationId::generate) }
    }

    /// The key layout.
    pub fn keys(&self) -> &Keyspace {
        &self.keys
    }

    /// The options it runs with.
    pub fn options(&self) -> &EngineOptions {
        &self.options
    }

    /// The payment gateway.
    pub fn gateway(&self) -> &Arc<dyn PaymentGateway> {
        &self.gateway
    }

    /// A handle on the Redis connection.
    pub fn redis(&self) -> RedisConnection {
        self.redis.clone()
    }

    /// Binds `user`'s key to this request's fingerprint for 24 h (see [`super::idempotency`]).
    async fn bind(
        &self,
        operation: IdempotentOperation,
        user: &UserId,
        idempotency: &Idempotency,
    ) -> Result<(), ReservationError> {
        let binding = self.keys.idempotency_binding(operation.as_str(), user, idempotency.key.as_str());
        let previous: Option<String> = redis::cmd("SET")
            .arg(binding)
            .arg(idempotency.fingerprint.as_str())
            .arg("NX")
            .arg("GET")
            .arg("EX")
            .arg(IDEMPOTENCY_TTL_SECONDS)
            .query_async(&mut self.redis.clone())
            .await?;
        match previous {
            Some(previous) if previous != idempotency.fingerprint.as_str() => Err(ReservationError::KeyReused),
            _ => Ok(()),
        }
    }

    /// Holds tickets: one script round trip, plus one for the key binding when the
    /// request carries an `Idempotency-Key`; none when this process knows the category
    /// is sold out (see [`super::sold_out`]). Counted reserves of one category share their
    /// script calls with the others in flight (see [`super::group_commit`]).
    pub async fn reserve(
        &self,
        user: &UserId,
        request: &NewReservation,
        key: Option<IdempotencyKey>,
    ) -> Result<Reservation, ReservationError> {
        let call = Arc::new(self.admit(user, request, key).await?);
        let result = self.decide_reserve(&call).await;
        let idempotency = call.idempotency.as_ref();
        self.forget_unkept(IdempotentOperation::Reserve, user, Some(request.category), idempotency, &result).await;
        result
    }

    async fn decide_reserve(&self, call: &Arc<ReserveCall>) -> Result<Reservation, ReservationError> {
        let reply = match call.request.seats {
            SeatSelection::Any => self.reserves.reserve(Arc::clone(call)).await?,
            SeatSelection::Adjacent | SeatSelection::Named(_) => self.run_reserve_seats(call).await?,
        };
        self.finish_reserve(call, reply).await
    }

    /// Removes what an idempotent request left when its answer is not kept: the key binding
    /// of one that [names nothing](ReservationError::names_nothing), and for a reserve the
    /// refusal its script stored for it or for one that [breaks a fixed
    /// rule](ReservationError::breaks_a_fixed_rule). The binding of the latter stays, so
    /// the key stays tied to its body however requests interleave. A failure here only
    /// leaves them to expire in 24 h.
    async fn forget_unkept(
        &self,
        operation: IdempotentOperation,
        user: &UserId,
        category: Option<CategoryId>,
        idempotency: Option<&Idempotency>,
        result: &Result<Reservation, ReservationError>,
    ) {
        let (Some(idempotency), Err(error)) = (idempotency, result) else { return };
        let mut keys = Vec::new();
        if error.names_nothing() {
            keys.push(self.keys.idempotency_binding(operation.as_str(), user, idempotency.key.as_str()));
        }
        if error.names_nothing() || error.breaks_a_fixed_rule() {
            keys.extend(category.map(|category| outcome_key(&self.keys, category, operation, user, &idempotency.key)));
        }
        // One DEL per key: the binding and the outcome live in different slots.
        for key in keys {
            if let Err(error) = redis::cmd("DEL").arg(key).query_async::<()>(&mut self.redis.clone()).await {
                tracing::debug!(%error, "an idempotency record that is not kept stays until it expires");
            }
        }
    }

    /// Decides counted reserves of one category in ONE `reserve.lua` call, in order, as
    /// [`ReservationEngine::reserve`] decides each (the sold-out fast path and the key
    /// binding first): the batch path without the combiner's timing, for tests and tools.
    ///
    /// # Panics
    /// When the requests are not all counted ([`SeatSelection::Any`]) reserves of one category.
    pub async fn reserve_batch(
        &self,
        requests: Vec<(UserId, NewReservation, Option<IdempotencyKey>)>,
    ) -> Vec<Result<Reservation, ReservationError>> {
        let category = requests.first().map(|(_, request, _)| request.category);
        assert!(
            requests
                .iter()
                .all(|(_, request, _)| Some(request.category) == category && request.seats == SeatSelection::Any),
            "one category, counted reserves only"
        );
        let mut admitted = Vec::with_capacity(requests.len());
        for (user, request, key) in &requests {
            admitted.push(self.admit(user, request, key.clone()).await.map(Arc::new));
        }
        let calls: Vec<Arc<ReserveCall>> = admitted.iter().filter_map(|call| call.as_ref().ok()).cloned().collect();
        let mut replies = match self.reserves.run(&calls).await {
            Ok(replies) => replies.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) => calls.iter().map(|_| Err(error.clone())).collect(),
        }
        .into_iter();
        let mut results = Vec::with_capacity(admitted.len());
        for call in admitted {
            // Only admitted requests went to the script and have a reply.
            let result = match call {
                Ok(call) => {
                    let result = match replies.next() {
                        Some(Ok(reply)) => self.finish_reserve(&call, reply).await,
                        Some(Err(error)) => Err(error.into()),
                        None => Err(unexpected("reserve", &[])),
                    };
                    let (operation, category) = (IdempotentOperation::Reserve, Some(call.request.category));
                    self.forget_unkept(operation, &call.user, category, call.idempotency.as_ref(), &result).await;
                    result
                }
                Err(error) => Err(error),
            };
            results.push(result);
        }
        results
    }

    /// The steps of a reserve before its script: the sold-out fast path, the key binding
    /// and the hold's id.
    async fn admit(
        &self,
        user: &UserId,
        request: &NewReservation,
        key: Option<IdempotencyKey>,
    ) -> Result<ReserveCall, ReservationError> {
        // Named seats always go to the script: an unknown seat is a 422 there, not sold_out.
        let named = matches!(request.seats, SeatSelection::Named(_));
        if key.is_none() && !named && self.sold_out.answers(request, Instant::now()) {
            metrics::counter!("sold_out_fast_answers_total").increment(1);
            return Err(ReservationError::Refused(Refusal::SoldOut));
        }
        let idempotency = key.map(|key| Idempotency { key, fingerprint: Fingerprint::of_reserve(request) });
        if let Some(idempotency) = &idempotency {
            self.bind(IdempotentOperation::Reserve, user, idempotency).await?;
        }
        let id = (self.ids)(request.category);
        let traceparent = TraceParent::current();
        Ok(ReserveCall { user: user.clone(), request: request.clone(), id, idempotency, traceparent })
    }

    /// The answer of a reserve from its script reply; a seated category's `seated` reply
    /// (nothing was written) sends it on to the seat script, which decides. An `id_taken`
    /// reply (the drawn id names a hold that is not this request's: nothing was written)
    /// draws a new id and decides the request again, so a collision of random ids costs a
    /// round trip, never another user's reservation.
    async fn finish_reserve(&self, call: &ReserveCall, reply: ReserveReply) -> Result<Reservation, ReservationError> {
        let mut reply = reply;
        let mut call = call.clone();
        let mut seated = call.request.seats != SeatSelection::Any;
        for draw in 1..=ID_DRAWS_MAX {
            if outcome(&reply) == Some("seated") {
                seated = true;
                reply = self.run_reserve_seats(&call).await?;
            }
            if outcome(&reply) != Some("id_taken") || draw == ID_DRAWS_MAX {
                break;
            }
            metrics::counter!("reservation_id_collisions_total").increment(1);
            call.id = (self.ids)(call.request.category);
            reply = if seated {
                self.run_reserve_seats(&call).await?
            } else {
                self.reserves.reserve(Arc::new(call.clone())).await?
            };
        }
        reserve_reply(&call.user, &call.request, &reply)
    }

    /// One run of `reserve_seats.lua` (a seated category: its extra keys are the seat keys
    /// and its extra arguments the mode and the named seats).
    async fn run_reserve_seats(&self, call: &ReserveCall) -> Result<Vec<Option<String>>, ReservationError> {
        let ReserveCall { user, request, id, idempotency, traceparent } = call;
        let category = request.category;
        let mut invocation = RESERVE_SEATS.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.hold(category, id.uuid()))
            .key(self.keys.deadlines(category))
            .key(self.keys.holders(category))
            .key(self.keys.outbox(category));
        for key in self.keys.seat_keys(category) {
            invocation.key(key);
        }
        if let Some(idempotency) = idempotency {
            invocation.key(outcome_key(&self.keys, category, IdempotentOperation::Reserve, user, &idempotency.key));
        }
        invocation
            .arg(id.to_string())
            .arg(user.as_str())
            .arg(category.get())
            .arg(request.quantity.get())
            .arg(milliseconds::of_duration(self.options.hold_ttl))
            .arg(self.options.outbox_backlog_max)
            .arg(request.event.map(|event| event.get().to_string()).unwrap_or_default())
            .arg(idempotency.as_ref().map_or("", |idempotency| idempotency.fingerprint.as_str()))
            .arg(IDEMPOTENCY_TTL_SECONDS)
            .arg(outbox::event_id(id.uuid(), EventType::Reserved).to_string())
            .arg(request.seats.mode())
            .arg(trace_context::script_argument(traceparent.as_ref()));
        if let SeatSelection::Named(seats) = &request.seats {
            invocation.arg(seats.iter().map(SeatName::as_str).collect::<Vec<_>>());
        }
        let sent_at = Instant::now();
        let reply: Vec<Option<String>> = RESERVE_SEATS.run_acknowledged(&invocation, &mut self.redis.clone()).await?;
        self.sold_out.learn_from_reply(request, sent_at, &reply);
        Ok(reply)
    }

    /// Confirms a hold with a payment (see the module docs for the steps).
    pub async fn confirm(
        &self,
        user: &UserId,
        id: ReservationId,
        request: &Confirmation,
        key: Option<IdempotencyKey>,
    ) -> Result<Reservation, ReservationError> {
        let idempotency = key.map(|key| Idempotency { key, fingerprint: Fingerprint::of_confirm(request) });
        if let Some(idempotency) = &idempotency {
            self.bind(IdempotentOperation::Confirm, user, idempotency).await?;
        }
        let result = self.pay_once(user, id, &request.token, idempotency.as_ref()).await;
        self.forget_unkept(IdempotentOperation::Confirm, user, None, idempotency.as_ref(), &result).await;
        result
    }

    /// Confirm after the key binding: begin the payment, then pay or replay.
    async fn pay_once(
        &self,
        user: &UserId,
        id: ReservationId,
        token: &PaymentToken,
        idempotency: Option<&Idempotency>,
    ) -> Result<Reservation, ReservationError> {
        let attempt = AttemptId::generate();
        let started = match self.begin_payment(user, id, attempt, idempotency).await {
            Err(ReservationError::Redis(error)) => {
                // Nothing is charged unless a replica holds the `paying` state, so a
                // failover can never forget an attempt that took money. The hold goes
                // back to held at once (on this master), so the same request with the
                // same key can run again as soon as the replicas are back.
                let abandon = Abandon::Failed { void_pending: true };
                if let Err(error) = self.abandon_payment(user, id, attempt, abandon, None).await {
                    tracing::debug!(%error, "giving up an unacknowledged payment start failed; the reaper does it");
                }
                return Err(ReservationError::Redis(error));
            }
            started => started?,
        };
        match started {
            PaymentStart::Pay(held) => self.pay(user, id, attempt, &held, token, idempotency).await,
            PaymentStart::Confirmed(confirmed) => {
                if idempotency.is_some() {
                    count_replay(IdempotentOperation::Confirm);
                }
                Ok(confirmed)
            }
        }
    }

    async fn pay(
        &self,
        user: &UserId,
        id: ReservationId,
        attempt: AttemptId,
        held: &Reservation,
        token: &PaymentToken,
        idempotency: Option<&Idempotency>,
    ) -> Result<Reservation, ReservationError> {
        let reference = id.to_string();
        let charge = Charge { attempt, amount: held.amount, currency: &held.currency, token, reference: &reference };
        let timeout = self.options.payment_timeout;
        let charged = tokio::time::timeout(timeout, self.gateway.charge(&charge))
            .await
            .unwrap_or_else(|_| Err(PaymentError::Failed(format!("no answer within {timeout:?}"))));
        match charged {
            Ok(payment_id) => self.finish_payment(user, id, attempt, &payment_id).await,
            Err(PaymentError::Declined) => {
                let abandoned = self.abandon_payment(user, id, attempt, Abandon::Declined, idempotency).await?;
                Err(abandoned.error_or(ReservationError::PaymentDeclined))
            }
            Err(PaymentError::Failed(reason)) => {
                // The outcome is unknown: void before the hold can be paid again, so two
                // charges never stand for one hold.
                let voided = self.void_attempt(attempt).await;
                let abandon = Abandon::Failed { void_pending: !voided };
                let abandoned = self.abandon_payment(user, id, attempt, abandon, idempotency).await?;
                Err(abandoned.error_or(ReservationError::PaymentFailed(reason)))
            }
        }
    }

    /// Voids an attempt at the gateway; `false` (logged) when the gateway failed.
    pub async fn void_attempt(&self, attempt: AttemptId) -> bool {
        match self.gateway.void(attempt).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(%attempt, %error, "voiding a payment attempt failed; the reaper retries it");
                false
            }
        }
    }

    /// Step 1 of confirm: moves the owner's unexpired hold to `paying` with `attempt`.
    pub async fn begin_payment(
        &self,
        user: &UserId,
        id: ReservationId,
        attempt: AttemptId,
        idempotency: Option<&Idempotency>,
    ) -> Result<PaymentStart, ReservationError> {
        let category = id.category();
        let mut invocation = BEGIN_PAYMENT.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.hold(category, id.uuid()))
            .key(self.keys.deadlines(category));
        if let Some(idempotency) = idempotency {
            invocation.key(outcome_key(&self.keys, category, IdempotentOperation::Confirm, user, &idempotency.key));
        }
        invocation
            .arg(id.to_string())
            .arg(user.as_str())
            .arg(attempt.to_string())
            .arg(milliseconds::of_duration(self.options.payment_window))
            .arg(idempotency.map_or("", |idempotency| idempotency.fingerprint.as_str()));
        let reply: Vec<Option<String>> = BEGIN_PAYMENT.run_acknowledged(&invocation, &mut self.redis.clone()).await?;
        let record = |reply: &[Option<String>]| {
            reservation_from_record(id, &reply[1..]).ok_or_else(|| unexpected("begin_payment", reply))
        };
        match outcome(&reply) {
            Some("pay") => Ok(PaymentStart::Pay(record(&reply)?)),
            Some("confirmed") => Ok(PaymentStart::Confirmed(record(&reply)?)),
            Some("declined") => {
                count_replay(IdempotentOperation::Confirm);
                Err(ReservationError::PaymentDeclined)
            }
            Some("key_reused") => Err(ReservationError::KeyReused),
            Some("not_found") => Err(ReservationError::NotFound),
            Some("cancelled") => Err(ReservationError::NotHeld(NotHeldReason::Cancelled)),
            Some("expired") => Err(ReservationError::Expired),
            Some("stock_missing") => Err(ReservationError::StockMissing(category)),
            Some("in_progress") => Err(ReservationError::InProgress),
            // Another payment (no key, or another key) runs: the hold is not held for this one.
            Some("paying") => Err(ReservationError::NotHeld(NotHeldReason::PaymentInProgress)),
            _ => Err(unexpected("begin_payment", &reply)),
        }
    }

    /// Step 3 of confirm: records a successful charge, or voids it when the hold has
    /// moved on. Idempotent, so it is retried on Redis errors.
    pub async fn finish_payment(
        &self,
        user: &UserId,
        id: ReservationId,
        attempt: AttemptId,
        payment_id: &PaymentId,
    ) -> Result<Reservation, ReservationError> {
        let category = id.category();
        let mut invocation = FINISH_PAYMENT.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.hold(category, id.uuid()))
            .key(self.keys.deadlines(category))
            .key(self.keys.outbox(category))
            .key(self.keys.voids(category))
            .key(self.keys.holders(category))
            .arg(id.to_string())
            .arg(attempt.to_string())
            .arg(payment_id.as_str())
            .arg(milliseconds::of_duration(self.options.record_ttl))
            .arg(outbox::event_id(id.uuid(), EventType::Confirmed).to_string())
            .arg(outbox::event_id(id.uuid(), EventType::Expired).to_string())
            .arg(trace_context::script_argument(TraceParent::current().as_ref()));
        let reply = self.run_follow_up(&FINISH_PAYMENT, &invocation, Acknowledged::Yes).await?;
        match outcome(&reply) {
            Some("confirmed") => {
                reservation_from_record(id, &reply[1..]).ok_or_else(|| unexpected("finish_payment", &reply))
            }
            Some("stock_missing") => {
                // Nothing to confirm into: the charge must not stand, and the hold goes
                // back to held (`worker reconcile --repair` rebuilds the stock).
                let voided = self.void_attempt(attempt).await;
                self.abandon_payment(user, id, attempt, Abandon::Failed { void_pending: !voided }, None).await?;
                Err(ReservationError::StockMissing(category))
            }
            Some("lost") => {
                // The hold was released (its deadline passed, here or by the reaper) or
                // taken back while the charge ran; the script queued the attempt for
                // voiding. Void it now; the reaper retries on failure.
                if self.void_attempt(attempt).await {
                    self.forget_void(category, attempt).await;
                }
                match reply.get(1).and_then(Option::as_deref) {
                    Some("expired") => Err(ReservationError::Expired),
                    // Confirmed by a later attempt after this one's window lapsed.
                    Some("confirmed") => self.get(id).await?.ok_or(ReservationError::NotFound),
                    _ => Err(ReservationError::PaymentFailed("the payment window lapsed".to_owned())),
                }
            }
            _ => Err(unexpected("finish_payment", &reply)),
        }
    }

    /// Step 4 of confirm: gives the payment up and returns the hold to `held`; a decline
    /// is stored as the answer to `user`'s key.
    pub async fn abandon_payment(
        &self,
        user: &UserId,
        id: ReservationId,
        attempt: AttemptId,
        abandon: Abandon,
        idempotency: Option<&Idempotency>,
    ) -> Result<AbandonOutcome, ReservationError> {
        let category = id.category();
        let (reason, void_pending) = match abandon {
            Abandon::Declined => ("declined", false),
            Abandon::Failed { void_pending } => ("failed", void_pending),
        };
        let mut invocation = ABANDON_PAYMENT.prepare();
        invocation
            .key(self.keys.hold(category, id.uuid()))
            .key(self.keys.deadlines(category))
            .key(self.keys.voids(category));
        if let Some(idempotency) = idempotency {
            invocation.key(outcome_key(&self.keys, category, IdempotentOperation::Confirm, user, &idempotency.key));
        }
        invocation
            .arg(id.to_string())
            .arg(attempt.to_string())
            .arg(reason)
            .arg(if void_pending { "1" } else { "0" })
            .arg(idempotency.map_or("", |idempotency| idempotency.fingerprint.as_str()))
            .arg(IDEMPOTENCY_TTL_SECONDS);
        // Nothing is acknowledged by giving a payment up: the hold stays held either way.
        let reply = self.run_follow_up(&ABANDON_PAYMENT, &invocation, Acknowledged::No).await?;
        match (outcome(&reply), reply.get(1).and_then(Option::as_deref)) {
            (Some("returned"), Some("late")) => Ok(AbandonOutcome::Late),
            (Some("returned"), _) => Ok(AbandonOutcome::Returned),
            (Some("lost"), Some(status)) => Ok(AbandonOutcome::Lost(status.to_owned())),
            _ => Err(unexpected("abandon_payment", &reply)),
        }
    }

    /// Removes an attempt from the category's `voids` set once the gateway voided it.
    pub async fn forget_void(&self, category: CategoryId, attempt: AttemptId) {
        let removed: Result<i64, _> = redis::cmd("SREM")
            .arg(self.keys.voids(category))
            .arg(attempt.to_string())
            .query_async(&mut self.redis.clone())
            .await;
        if let Err(error) = removed {
            tracing::debug!(%attempt, %error, "could not forget a voided attempt; the reaper voids it again");
        }
    }

    async fn run_follow_up(
        &self,
        script: &LuaScript,
        invocation: &ScriptInvocation<'_>,
        acknowledged: Acknowledged,
    ) -> Result<Vec<Option<String>>, ReservationError> {
        let mut attempt = 1;
        loop {
            let mut redis = self.redis.clone();
            let result = match acknowledged {
                Acknowledged::Yes => script.run_acknowledged(invocation, &mut redis).await,
                Acknowledged::No => script.run(invocation, &mut redis).await,
            };
            match result {
                Ok(reply) => return Ok(reply),
                Err(error) if attempt < FOLLOW_UP_ATTEMPTS => {
                    tracing::warn!(script = script.name(), %error, attempt, "retrying an idempotent script");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Cancels the owner's hold; repeating it answers the same cancelled record.
    pub async fn cancel(&self, user: &UserId, id: ReservationId) -> Result<Reservation, ReservationError> {
        let category = id.category();
        let mut invocation = CANCEL.prepare();
        invocation
            .key(self.keys.stock(category))
            .key(self.keys.hold(category, id.uuid()))
            .key(self.keys.deadlines(category))
            .key(self.keys.holders(category))
            .key(self.keys.outbox(category))
            .arg(id.to_string())
            .arg(user.as_str())
            .arg(milliseconds::of_duration(self.options.record_ttl))
            .arg(outbox::event_id(id.uuid(), EventType::Cancelled).to_string())
            .arg(trace_context::script_argument(TraceParent::current().as_ref()));
        let reply: Vec<Option<String>> = CANCEL.run_acknowledged(&invocation, &mut self.redis.clone()).await?;
        match outcome(&reply) {
            Some("cancelled") => {
                self.sold_out.forget(category);
                reservation_from_record(id, &reply[1..]).ok_or_else(|| unexpected("cancel", &reply))
            }
            Some("not_found") => Err(ReservationError::NotFound),
            Some("confirmed") => Err(ReservationError::NotHeld(NotHeldReason::Confirmed)),
            Some("paying") => Err(ReservationError::NotHeld(NotHeldReason::PaymentInProgress)),
            Some("expired") => Err(ReservationError::Expired),
            Some("stock_missing") => Err(ReservationError::StockMissing(category)),
            _ => Err(unexpected("cancel", &reply)),
        }
    }

    /// The reservation as Redis holds it now, while its record exists.
    pub async fn get(&self, id: ReservationId) -> Result<Option<Reservation>, ReservationError> {
        let fields: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.keys.hold(id.category(), id.uuid()))
            .arg(&RECORD_FIELDS_OF_BOTH_LAYOUTS)
            .query_async(&mut self.redis.clone())
            .await?;
        let fields = either_layout(fields);
        if fields.first().is_none_or(Option::is_none) {
            return Ok(None);
        }
        reservation_from_record(id, &fields).map(Some).ok_or_else(|| unexpected("get", &fields))
    }

    /// Every event in a category's outbox, oldest first (for tests and tools; the
    /// relay reads the stream itself).
    pub async fn outbox_events(&self, category: CategoryId) -> Result<Vec<ReservationEvent>, ReservationError> {
        let stream = self.keys.outbox(category);
        let mut events = Vec::new();
        let mut start = "-".to_owned();
        loop {
            let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(OUTBOX_PAGE_ENTRIES)
                .query_async(&mut self.redis.clone())
                .await?;
            let next = match page.last() {
                Some((last, _)) if page.len() == OUTBOX_PAGE_ENTRIES => Some(format!("({last}")),
                _ => None,
            };
            for (_, flat) in page {
                let event =
                    ReservationEvent::from_fields(&outbox::field_map(flat)).map_err(|MalformedEntry { field }| {
                        ReservationError::UnexpectedReply {
                            script: "outbox",
                            reply: format!("malformed field {field}"),
                        }
                    })?;
                events.push(event);
            }
            match next {
                Some(next) => start = next,
                None => return Ok(events),
            }
        }
    }
}

fn outcome(reply: &[Option<String>]) -> Option<&str> {
    reply.first().and_then(Option::as_deref)
}

fn reserve_reply(
    user: &UserId,
    request: &NewReservation,
    reply: &[Option<String>],
) -> Result<Reservation, ReservationError> {
    if reply.get(1).and_then(Option::as_deref) == Some("1") {
        count_replay(IdempotentOperation::Reserve);
    }
    let category = request.category;
    match outcome(reply) {
        Some("held") => held_reservation(user, request, reply).ok_or_else(|| unexpected("reserve", reply)),
        Some("key_reused") => Err(ReservationError::KeyReused),
        Some("stock_missing") => Err(ReservationError::StockMissing(category)),
        Some("stock_pending") => Err(ReservationError::StockNotOpen(category)),
        Some("outbox_backlog") => Err(ReservationError::OutboxBacklog(category)),
        Some("seat_taken") => Err(ReservationError::SeatTaken(listed_seats(reply))),
        Some("unknown_seats") => Err(ReservationError::UnknownSeats(listed_seats(reply))),
        Some(code) => Err(Refusal::parse(code).map_or_else(|| unexpected("reserve", reply), ReservationError::Refused)),
        None => Err(unexpected("reserve", reply)),
    }
}

/// The seats a refusal lists (`seat_taken`, `unknown_seats`): the reply's third item.
fn listed_seats(reply: &[Option<String>]) -> Vec<String> {
    reply.get(2).and_then(Option::as_deref).and_then(seat_list).unwrap_or_default()
}

/// The 201 body of a hold, built the same way for the first answer and every replay, so
/// a replay is byte for byte the first response. A seated hold's reply ends with its seats.
fn held_reservation(user: &UserId, request: &NewReservation, reply: &[Option<String>]) -> Option<Reservation> {
    let [_, _, Some(id), Some(event_id), Some(amount), Some(currency), Some(created), Some(expires), rest @ ..] = reply
    else {
        return None;
    };
    Some(Reservation {
        id: Uuid::try_parse(id).ok()?,
        status: ReservationStatus::Held,
        event_id: event_id.parse().ok()?,
        category_id: request.category.get(),
        user_id: user.as_str().to_owned(),
        quantity: request.quantity.get(),
        amount: amount.parse().ok()?,
        currency: currency.clone(),
        created_at: milliseconds::to_time(created.parse().ok()?),
        expires_at: milliseconds::to_time(expires.parse().ok()?),
        confirmed_at: None,
        payment_id: None,
        seats: rest.first().and_then(Option::as_deref).and_then(seat_list),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field names of a script's outbox XADD, in order, the optional `traceparent` last
    /// (written as `unpack(...)` of its trace fields).
    fn outbox_fields(script: &str) -> Vec<String> {
        let call = script.split("redis.call('XADD',").nth(1).unwrap().split(")\n").next().unwrap();
        let (fixed, traced) = match call.split_once(", unpack(") {
            Some((fixed, trace)) => (fixed, trace.contains("trace_fields(") || trace.contains("'traceparent'")),
            None => (call, false),
        };
        let arguments: Vec<&str> = fixed.split(',').map(str::trim).skip(2).collect();
        let mut fields: Vec<String> =
            arguments.iter().step_by(2).map(|field| field.trim_matches('\'').to_owned()).collect();
        fields.extend(traced.then(|| "traceparent?".to_owned()));
        fields
    }

    #[test]
    fn the_prelude_gets_the_layout_from_rust() {
        assert!(!PRELUDE.contains("local RECORD_FIELDS"), "the layout has one definition: RECORD_FIELDS in Rust");
        assert!(!PRELUDE.contains("local FIELD "), "the stored names have one definition: record_field in Rust");
        // Pins the stored layout: changing a name strands every record written before.
        assert_eq!(
            record_fields_lua(),
            "local RECORD_FIELDS = {'s', 'u', 'e', 'c', 'q', 'a', 'm', 'tc', 'tx', 'tf', 'p', 'n'}\n\
             local FIELD = {status = 's', user_id = 'u', event_id = 'e', category_id = 'c', quantity = 'q', \
             amount = 'a', currency = 'm', created_at_ms = 'tc', expires_at_ms = 'tx', confirmed_at_ms = 'tf', \
             payment_id = 'p', seats = 'n', attempt = 'pa', paying_until_ms = 'tp', payment_key = 'pk'}\n"
        );
    }

    #[test]
    fn reserve_writes_the_outbox_entry_of_the_prelude() {
        let expected = ["event", "user_id", "payment_id", "seats", "traceparent?"];
        assert_eq!(outbox_fields(PRELUDE), expected);
        assert_eq!(outbox_fields(include_str!("reserve_seats.lua")), expected);
        // A counted hold has no seats: its entry leaves the field out.
        assert_eq!(outbox_fields(include_str!("reserve.lua")), ["event", "user_id", "payment_id", "traceparent?"]);
    }

    #[test]
    fn a_payment_given_up_after_the_deadline_answers_410() {
        let expired = |outcome: AbandonOutcome| {
            matches!(outcome.error_or(ReservationError::PaymentDeclined), ReservationError::Expired)
        };
        assert!(expired(AbandonOutcome::Late));
        assert!(expired(AbandonOutcome::Lost("expired".to_owned())));
        assert!(!expired(AbandonOutcome::Returned));
        assert!(!expired(AbandonOutcome::Lost("confirmed".to_owned())));
    }

    #[test]
    fn refusal_codes_round_trip() {
        use Refusal::{
            AmountTooLarge, EventMismatch, LimitExceeded, NoAdjacentSeats, NotSeated, SaleClosed, SaleNotOpen, SoldOut,
            TooManySeats,
        };
        for refusal in [
            EventMismatch,
            SaleNotOpen,
            SaleClosed,
            SoldOut,
            LimitExceeded,
            AmountTooLarge,
            NoAdjacentSeats,
            NotSeated,
            TooManySeats,
        ] {
            // Stops compiling when a refusal is added: add it to the list above too.
            match refusal {
                EventMismatch | SaleNotOpen | SaleClosed | SoldOut | LimitExceeded | AmountTooLarge
                | NoAdjacentSeats | NotSeated | TooManySeats => {}
            }
            assert_eq!(Refusal::parse(refusal.code()), Some(refusal));
        }
        assert_eq!(Refusal::parse("held"), None);
    }

    #[test]
    fn replies_of_a_hold_render_identically() {
        let user = UserId::parse("alice").unwrap();
        let request = NewReservation::parse(Some(7), Some(2), None).unwrap();
        let id = ReservationId::generate(request.category).to_string();
        let reply = |replayed: &str| -> Vec<Option<String>> {
            ["held", replayed, &id, "3", "2000", "USD", "1700000000000", "1700000001000"]
                .iter()
                .map(|field| Some(field.to_string()))
                .collect()
        };
        let first = reserve_reply(&user, &request, &reply("0")).unwrap();
        let replay = reserve_reply(&user, &request, &reply("1")).unwrap();
        assert_eq!(serde_json::to_vec(&first).unwrap(), serde_json::to_vec(&replay).unwrap());
        assert_eq!((first.event_id, first.category_id, first.amount), (3, 7, 2000));
    }

    #[test]
    fn refusals_and_shedding_are_told_apart() {
        let user = UserId::parse("alice").unwrap();
        let request = NewReservation::parse(Some(7), Some(2), None).unwrap();
        let reply = |code: &str| vec![Some(code.to_owned()), Some("0".to_owned())];
        assert!(matches!(
            reserve_reply(&user, &request, &reply("sold_out")),
            Err(ReservationError::Refused(Refusal::SoldOut))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &reply("outbox_backlog")),
            Err(ReservationError::OutboxBacklog(_))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &reply("stock_missing")),
            Err(ReservationError::StockMissing(_))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &reply("nonsense")),
            Err(ReservationError::UnexpectedReply { .. })
        ));
    }
}
