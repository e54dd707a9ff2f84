//! Confirm with a payment: four steps, each but the charge one Lua script on the
//! category's hash tag.
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

use std::time::Duration;

use redis::ScriptInvocation;

use super::Confirmation;
use super::engine::{ReservationEngine, count_replay, outcome, unexpected};
use super::error::{NotHeldReason, ReservationError};
use super::idempotency::{
    IDEMPOTENCY_TTL_SECONDS, Idempotency, IdempotencyKey, IdempotentOperation, RequestFingerprint, outcome_key,
};
use super::record::{reservation_from_record, with_prelude};
use crate::contract::Reservation;
use crate::ids::{CategoryId, ReservationId, UserId};
use crate::milliseconds;
use crate::outbox::{self, EventType};
use crate::payment::{AttemptId, Charge, PaymentError, PaymentId, PaymentToken};
use crate::script::LuaScript;
use crate::telemetry::trace_context::{self, TraceParent};
use std::sync::LazyLock;

static BEGIN_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("begin_payment", include_str!("begin_payment.lua")));
static FINISH_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("finish_payment", include_str!("finish_payment.lua")));
static ABANDON_PAYMENT: LazyLock<LuaScript> =
    LazyLock::new(|| with_prelude("abandon_payment", include_str!("abandon_payment.lua")));

/// Attempts of an idempotent follow-up script (finish, abandon) on a Redis error.
const FOLLOW_UP_ATTEMPTS: u32 = 3;

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

impl ReservationEngine {
    /// Confirms a hold with a payment (see the module docs for the steps).
    pub async fn confirm(
        &self,
        user: &UserId,
        id: ReservationId,
        request: &Confirmation,
        key: Option<IdempotencyKey>,
    ) -> Result<Reservation, ReservationError> {
        let idempotency = key.map(|key| Idempotency { key, fingerprint: RequestFingerprint::of_confirm(request) });
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
            .key(&self.keys.seat_keys(category))
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
