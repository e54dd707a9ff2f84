//! The reserve path: the sold-out fast path and the key binding before the script, the
//! script call (counted reserves through the group commit, seated ones through
//! `reserve_seats.lua`), a new id on a collision, and the reply parsed into the answer.

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use super::NewReservation;
use super::engine::{ReservationEngine, count_replay, unexpected};
use super::error::{Refusal, ReservationError};
use super::group_commit::{RESERVE_PRELUDE, ReserveCall};
use super::idempotency::{
    IDEMPOTENCY_TTL_SECONDS, Idempotency, IdempotencyKey, IdempotentOperation, RequestFingerprint, outcome_key,
};
use super::record::with_prelude;
use super::reserve_reply::{Hold, ReserveOutcome, ReserveReply};
use crate::contract::{Reservation, ReservationStatus};
use crate::ids::UserId;
use crate::milliseconds;
use crate::outbox::{self, EventType};
use crate::script::LuaScript;
use crate::seating::{SEATS_PER_REQUEST_MAX, SeatName, SeatSelection};
use crate::telemetry::trace_context::{self, TraceParent};

/// `reserve_seats.lua` after the reserve prelude and its limit, which has one definition:
/// [`SEATS_PER_REQUEST_MAX`].
static RESERVE_SEATS: LazyLock<LuaScript> = LazyLock::new(|| {
    let limit = format!("local SEATS_PER_REQUEST_MAX = {SEATS_PER_REQUEST_MAX}\n");
    with_prelude("reserve_seats", &format!("{RESERVE_PRELUDE}\n{limit}{}", include_str!("reserve_seats.lua")))
});

/// Most ids one reserve draws: a script answers `id_taken` when the drawn id names another
/// request's hold, and a fresh draw colliding again is beyond any real chance.
const ID_DRAWS_MAX: usize = 4;

impl ReservationEngine {
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
        let call = Arc::new(self.before_script(user, request, key).await?);
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
        let mut prepared = Vec::with_capacity(requests.len());
        for (user, request, key) in &requests {
            prepared.push(self.before_script(user, request, key.clone()).await.map(Arc::new));
        }
        let calls: Vec<Arc<ReserveCall>> = prepared.iter().filter_map(|call| call.as_ref().ok()).cloned().collect();
        let mut replies = match self.reserves.run(&calls).await {
            Ok(replies) => replies.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(error) => calls.iter().map(|_| Err(error.clone())).collect(),
        }
        .into_iter();
        let mut results = Vec::with_capacity(prepared.len());
        for call in prepared {
            // Only prepared requests went to the script and have a reply.
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
    async fn before_script(
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
        let idempotency = key.map(|key| Idempotency { key, fingerprint: RequestFingerprint::of_reserve(request) });
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
            if reply.outcome == ReserveOutcome::Seated {
                seated = true;
                reply = self.run_reserve_seats(&call).await?;
            }
            if reply.outcome != ReserveOutcome::IdTaken || draw == ID_DRAWS_MAX {
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
    async fn run_reserve_seats(&self, call: &ReserveCall) -> Result<ReserveReply, ReservationError> {
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
        let reply = ReserveReply::parse(&reply);
        self.sold_out.learn_from_reply(request, sent_at, &reply);
        Ok(reply)
    }
}

/// The answer to a reserve from its parsed reply.
fn reserve_reply(
    user: &UserId,
    request: &NewReservation,
    reply: &ReserveReply,
) -> Result<Reservation, ReservationError> {
    if reply.replayed {
        count_replay(IdempotentOperation::Reserve);
    }
    let category = request.category;
    match &reply.outcome {
        ReserveOutcome::Held(hold) => Ok(held_reservation(user, request, hold)),
        ReserveOutcome::KeyReused => Err(ReservationError::KeyReused),
        ReserveOutcome::StockMissing => Err(ReservationError::StockMissing(category)),
        ReserveOutcome::StockPending => Err(ReservationError::StockNotOpen(category)),
        ReserveOutcome::OutboxBacklog => Err(ReservationError::OutboxBacklog(category)),
        ReserveOutcome::SeatTaken(seats) => Err(ReservationError::SeatTaken(seats.clone())),
        ReserveOutcome::UnknownSeats(seats) => Err(ReservationError::UnknownSeats(seats.clone())),
        ReserveOutcome::Refused(refusal) => Err(ReservationError::Refused(*refusal)),
        ReserveOutcome::Seated | ReserveOutcome::IdTaken => {
            Err(ReservationError::UnexpectedReply { script: "reserve", reply: format!("{:?}", reply.outcome) })
        }
        ReserveOutcome::Unexpected(text) => {
            Err(ReservationError::UnexpectedReply { script: "reserve", reply: text.clone() })
        }
    }
}

/// The 201 body of a hold, built the same way for the first answer and every replay, so
/// a replay is byte for byte the first response.
fn held_reservation(user: &UserId, request: &NewReservation, hold: &Hold) -> Reservation {
    Reservation {
        id: hold.id,
        status: ReservationStatus::Held,
        event_id: hold.event_id,
        category_id: request.category.get(),
        user_id: user.as_str().to_owned(),
        quantity: request.quantity.get(),
        amount: hold.amount,
        currency: hold.currency.clone(),
        created_at: milliseconds::to_time(hold.created_at_ms),
        expires_at: milliseconds::to_time(hold.expires_at_ms),
        confirmed_at: None,
        payment_id: None,
        seats: hold.seats.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ReservationId;

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
        let first = reserve_reply(&user, &request, &ReserveReply::parse(&reply("0"))).unwrap();
        let replay = reserve_reply(&user, &request, &ReserveReply::parse(&reply("1"))).unwrap();
        assert_eq!(serde_json::to_vec(&first).unwrap(), serde_json::to_vec(&replay).unwrap());
        assert_eq!((first.event_id, first.category_id, first.amount), (3, 7, 2000));
    }

    #[test]
    fn refusals_and_shedding_are_told_apart() {
        let user = UserId::parse("alice").unwrap();
        let request = NewReservation::parse(Some(7), Some(2), None).unwrap();
        let reply = |code: &str| vec![Some(code.to_owned()), Some("0".to_owned())];
        assert!(matches!(
            reserve_reply(&user, &request, &ReserveReply::parse(&reply("sold_out"))),
            Err(ReservationError::Refused(Refusal::SoldOut))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &ReserveReply::parse(&reply("outbox_backlog"))),
            Err(ReservationError::OutboxBacklog(_))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &ReserveReply::parse(&reply("stock_missing"))),
            Err(ReservationError::StockMissing(_))
        ));
        assert!(matches!(
            reserve_reply(&user, &request, &ReserveReply::parse(&reply("nonsense"))),
            Err(ReservationError::UnexpectedReply { .. })
        ));
    }
}
