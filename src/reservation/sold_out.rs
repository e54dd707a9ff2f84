//! The sold-out fast path: once this process has seen the reserve script refuse a
//! category as `sold_out`, later reserves of that category (for as many tickets or more)
//! are answered `sold_out` at once, without Redis, until the verdict is
//! [`SOLD_OUT_VERDICT_TTL_MAX`] old at most.
//!
//! # How the 100 ms bound is kept
//! A verdict is dated by the moment the request that learned it was *sent*, before its
//! script ran. The script saw the category without enough stock at some moment after
//! that, so a return of stock (a cancel, an expiry, in any process) happened after the
//! verdict's date, and the verdict stops answering `ttl` after its date: no `sold_out`
//! comes from it once stock has been back for `ttl`. A cancel in this process forgets the
//! verdict at once, and a fresh `held` answer forgets any older verdict.
//!
//! # What the fast path never answers
//! A request with an `Idempotency-Key` always runs the script, so its stored outcome and
//! its replays stay exactly as without the fast path. A request naming an `event_id`
//! is answered only by a verdict learned from a request that named the same event
//! (another event is `event_mismatch`, which only the script knows). Replayed answers
//! teach nothing: they are old. Within the bound a closing sale window or an outbox over
//! its backlog bound can still be answered `sold_out` (true, since no stock is left)
//! instead of `sale_closed` or 503.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::NewReservation;
use super::error::Refusal;
use super::reserve_reply::{ReserveOutcome, ReserveReply};
use crate::ids::{CategoryId, EventId};

/// The longest a return of stock may go unseen by a process: the contract's bound, and
/// the largest `SOLD_OUT_VERDICT_TTL` the api accepts.
pub const SOLD_OUT_VERDICT_TTL_MAX: Duration = Duration::from_millis(100);

/// Categories with a verdict at most; past it, stale verdicts are dropped and a new one
/// is not kept while every kept one is fresh.
pub const SOLD_OUT_CATEGORIES_MAX: usize = 10_000;

/// What one script answer taught about a category.
#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// When the request that learned it was sent.
    sent_at: Instant,
    /// The script found fewer tickets than this.
    quantity: i64,
    /// The category's event, when the refused request named it.
    event: Option<EventId>,
}

/// The sold-out verdicts of this process, by category. Shared by every engine clone.
#[derive(Debug)]
pub struct SoldOutVerdicts {
    ttl: Duration,
    verdicts: Mutex<HashMap<CategoryId, Verdict>>,
}

impl SoldOutVerdicts {
    /// Verdicts trusted for `ttl`, at most [`SOLD_OUT_VERDICT_TTL_MAX`]; zero turns the
    /// fast path off.
    pub fn new(ttl: Duration) -> Self {
        Self { ttl: ttl.min(SOLD_OUT_VERDICT_TTL_MAX), verdicts: Mutex::new(HashMap::new()) }
    }

    /// How long a verdict is trusted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether `request`, without an idempotency key, is `sold_out` by a verdict still
    /// fresh at `now`.
    pub fn answers(&self, request: &NewReservation, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        let verdicts = self.verdicts.lock().expect("not poisoned");
        verdicts.get(&request.category).is_some_and(|verdict| {
            now.saturating_duration_since(verdict.sent_at) < self.ttl
                && request.quantity.get() >= verdict.quantity
                && request.event.is_none_or(|event| verdict.event == Some(event))
        })
    }

    /// Learns from a fresh (not replayed) reserve script `outcome` to `request`, which
    /// was sent at `sent_at`.
    pub fn learn(&self, request: &NewReservation, sent_at: Instant, outcome: &ReserveOutcome) {
        if self.ttl.is_zero() {
            return;
        }
        match outcome {
            ReserveOutcome::Refused(Refusal::SoldOut) => self.sold_out(request, sent_at),
            // Stock was there after `sent_at`: an older verdict may be wrong now.
            ReserveOutcome::Held(_) => {
                let mut verdicts = self.verdicts.lock().expect("not poisoned");
                if verdicts.get(&request.category).is_some_and(|verdict| verdict.sent_at <= sent_at) {
                    verdicts.remove(&request.category);
                }
            }
            _ => {}
        }
    }

    /// Learns from a reserve script's `reply` to `request`, sent at `sent_at`; a replayed
    /// answer teaches nothing.
    pub fn learn_from_reply(&self, request: &NewReservation, sent_at: Instant, reply: &ReserveReply) {
        if !reply.replayed {
            self.learn(request, sent_at, &reply.outcome);
        }
    }

    /// Forgets a category's verdict (this process returned stock to it).
    pub fn forget(&self, category: CategoryId) {
        self.verdicts.lock().expect("not poisoned").remove(&category);
    }

    fn sold_out(&self, request: &NewReservation, sent_at: Instant) {
        let verdict = Verdict { sent_at, quantity: request.quantity.get(), event: request.event };
        let mut verdicts = self.verdicts.lock().expect("not poisoned");
        if let Some(known) = verdicts.get_mut(&request.category) {
            // Answers can arrive out of order; the later-sent request knows better.
            if known.sent_at <= sent_at {
                *known = verdict;
            }
            return;
        }
        if verdicts.len() >= SOLD_OUT_CATEGORIES_MAX {
            verdicts.retain(|_, known| sent_at.saturating_duration_since(known.sent_at) < self.ttl);
            if verdicts.len() >= SOLD_OUT_CATEGORIES_MAX {
                return;
            }
        }
        verdicts.insert(request.category, verdict);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::reserve_reply::Hold;

    fn sold_out() -> ReserveOutcome {
        ReserveOutcome::Refused(Refusal::SoldOut)
    }

    fn held() -> ReserveOutcome {
        let hold = Hold {
            id: uuid::Uuid::nil(),
            event_id: 1,
            amount: 1000,
            currency: "USD".to_owned(),
            created_at_ms: 0,
            expires_at_ms: 1,
            seats: None,
        };
        ReserveOutcome::Held(hold)
    }

    fn request(category: i64, quantity: i64, event: Option<i64>) -> NewReservation {
        NewReservation::parse(Some(category), Some(quantity), event).unwrap()
    }

    #[test]
    fn a_verdict_answers_until_its_ttl_after_the_learning_request_was_sent() {
        // Goal: the fast path answers within the bound and never at or past it.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        assert!(!verdicts.answers(&request(1, 1, None), sent_at));
        verdicts.learn(&request(1, 1, None), sent_at, &sold_out());
        assert!(verdicts.answers(&request(1, 1, None), sent_at + Duration::from_millis(99)));
        assert!(!verdicts.answers(&request(1, 1, None), sent_at + SOLD_OUT_VERDICT_TTL_MAX));
        assert!(!verdicts.answers(&request(2, 1, None), sent_at), "another category has its own verdict");
    }

    #[test]
    fn a_verdict_covers_only_as_many_tickets_or_more() {
        // Goal: "fewer than 3 left" says nothing about a request for 2.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        verdicts.learn(&request(1, 3, None), sent_at, &sold_out());
        assert!(verdicts.answers(&request(1, 3, None), sent_at));
        assert!(verdicts.answers(&request(1, 4, None), sent_at));
        assert!(!verdicts.answers(&request(1, 2, None), sent_at));
    }

    #[test]
    fn a_request_naming_an_event_needs_a_verdict_of_that_event() {
        // Goal: an event mismatch is never hidden behind sold_out.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        verdicts.learn(&request(1, 1, None), sent_at, &sold_out());
        assert!(!verdicts.answers(&request(1, 1, Some(7)), sent_at));
        verdicts.learn(&request(1, 1, Some(7)), sent_at, &sold_out());
        assert!(verdicts.answers(&request(1, 1, Some(7)), sent_at));
        assert!(!verdicts.answers(&request(1, 1, Some(8)), sent_at));
        assert!(verdicts.answers(&request(1, 1, None), sent_at));
    }

    #[test]
    fn a_later_hold_or_a_cancel_ends_a_verdict_and_an_earlier_hold_does_not() {
        // Goal: news of stock is taken at once, unless it is older than the verdict.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        verdicts.learn(&request(1, 1, None), sent_at, &sold_out());
        verdicts.learn(&request(1, 1, None), sent_at - Duration::from_millis(5), &held());
        assert!(verdicts.answers(&request(1, 1, None), sent_at));
        verdicts.learn(&request(1, 1, None), sent_at + Duration::from_millis(1), &held());
        assert!(!verdicts.answers(&request(1, 1, None), sent_at));
        verdicts.learn(&request(1, 1, None), sent_at, &sold_out());
        verdicts.forget(CategoryId::new(1).unwrap());
        assert!(!verdicts.answers(&request(1, 1, None), sent_at));
    }

    #[test]
    fn an_earlier_sent_answer_does_not_replace_a_later_verdict() {
        // Goal: out-of-order answers never push a verdict's date back or forth wrongly.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        verdicts.learn(&request(1, 1, None), sent_at, &sold_out());
        verdicts.learn(&request(1, 5, None), sent_at - Duration::from_millis(50), &sold_out());
        assert!(verdicts.answers(&request(1, 1, None), sent_at + Duration::from_millis(60)));
    }

    #[test]
    fn zero_turns_the_fast_path_off_and_the_ttl_is_capped() {
        // Goal: `SOLD_OUT_VERDICT_TTL=0ms` disables it; nothing exceeds the contract's bound.
        let off = SoldOutVerdicts::new(Duration::ZERO);
        let sent_at = Instant::now();
        off.learn(&request(1, 1, None), sent_at, &sold_out());
        assert!(!off.answers(&request(1, 1, None), sent_at));
        assert_eq!(SoldOutVerdicts::new(Duration::from_secs(5)).ttl(), SOLD_OUT_VERDICT_TTL_MAX);
    }

    #[test]
    fn the_map_stays_bounded() {
        // Goal: a flood of sold-out categories cannot grow the map past its bound.
        let verdicts = SoldOutVerdicts::new(SOLD_OUT_VERDICT_TTL_MAX);
        let sent_at = Instant::now();
        let count = i64::try_from(SOLD_OUT_CATEGORIES_MAX).unwrap() + 10;
        for category in 1..=count {
            verdicts.learn(&request(category, 1, None), sent_at, &sold_out());
        }
        assert_eq!(verdicts.verdicts.lock().unwrap().len(), SOLD_OUT_CATEGORIES_MAX);
        let later = sent_at + SOLD_OUT_VERDICT_TTL_MAX;
        verdicts.learn(&request(count + 1, 1, None), later, &sold_out());
        assert!(verdicts.answers(&request(count + 1, 1, None), later), "stale verdicts make room");
        assert_eq!(verdicts.verdicts.lock().unwrap().len(), 1);
    }
}
