//! The reservation engine: its Redis connection, keyspace, gateway and options, shared by
//! the transitions (reserve in [`super::reserve`], confirm in [`super::confirm`]; cancel
//! and read here), each transition one Lua script on the category's hash tag.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use crate::infrastructure::RedisConnection;

use super::error::{NotHeldReason, ReservationError};
use super::group_commit::GroupCommit;
use super::idempotency::{IDEMPOTENCY_TTL_SECONDS, Idempotency, IdempotentOperation, outcome_key};
use super::record::{RECORD_FIELDS_OF_BOTH_LAYOUTS, either_layout, reservation_from_record, with_prelude};
use super::sold_out::{SOLD_OUT_VERDICT_TTL_MAX, SoldOutVerdicts};
use crate::contract::Reservation;
use crate::ids::{CategoryId, ReservationId, UserId};
use crate::keyspace::Keyspace;
use crate::milliseconds;
use crate::outbox::{self, EventType};
use crate::payment::PaymentGateway;
use crate::script::LuaScript;
use crate::telemetry::trace_context::{self, TraceParent};

static CANCEL: LazyLock<LuaScript> = LazyLock::new(|| with_prelude("cancel", include_str!("cancel.lua")));

/// How long a finished (confirmed, cancelled, expired) record stays readable in Redis;
/// later reads and repeated confirms and cancels answer from Postgres. A held or paying
/// record has no TTL at all.
pub const FINAL_RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// Added to the payment timeout to get the payment window: time to record the outcome
/// of a charge that answered just before its timeout.
pub const PAYMENT_WINDOW_MARGIN: Duration = Duration::from_secs(5);

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

pub(super) fn unexpected(script: &'static str, reply: &[Option<String>]) -> ReservationError {
    ReservationError::UnexpectedReply { script, reply: format!("{reply:?}") }
}

pub(super) fn count_replay(operation: IdempotentOperation) {
    metrics::counter!("idempotent_replays_total", "operation" => operation.as_str()).increment(1);
}

/// Where new reservation ids come from ([`ReservationId::generate`] unless a test pins them).
pub type ReservationIds = Arc<dyn Fn(CategoryId) -> ReservationId + Send + Sync>;

/// The engine. Cheap to clone; every clone shares the Redis connection and gateway.
#[derive(Clone)]
pub struct ReservationEngine {
    pub(super) redis: RedisConnection,
    pub(super) keys: Keyspace,
    pub(super) gateway: Arc<dyn PaymentGateway>,
    pub(super) options: EngineOptions,
    pub(super) sold_out: Arc<SoldOutVerdicts>,
    pub(super) reserves: Arc<GroupCommit>,
    pub(super) ids: ReservationIds,
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
    pub(super) async fn bind(
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

    /// Removes what an idempotent request left when its answer is not kept: the key binding
    /// of one that [names nothing](ReservationError::names_nothing), and for a reserve the
    /// refusal its script stored for it or for one that [breaks a fixed
    /// rule](ReservationError::breaks_a_fixed_rule). The binding of the latter stays, so
    /// the key stays tied to its body however requests interleave. A failure here only
    /// leaves them to expire in 24 h.
    pub(super) async fn forget_unkept(
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
            .key(&self.keys.seat_keys(category))
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
}

/// The first item of a script reply: its outcome.
pub(super) fn outcome(reply: &[Option<String>]) -> Option<&str> {
    reply.first().and_then(Option::as_deref)
}
