//! Test-only reads of what the engine wrote (moved out of the engine, which has no use for
//! them): every event in a category's outbox.

use stampede::ids::CategoryId;
use stampede::outbox::{self, ReservationEvent};
use stampede::reservation::ReservationEngine;

/// Outbox entries read per round trip.
const OUTBOX_PAGE_ENTRIES: usize = 1000;

/// Every event in a category's outbox, oldest first (the relay reads the stream itself).
pub async fn outbox_events(engine: &ReservationEngine, category: CategoryId) -> Vec<ReservationEvent> {
    let stream = engine.keys().outbox(category);
    let mut events = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let page: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(OUTBOX_PAGE_ENTRIES)
            .query_async(&mut engine.redis())
            .await
            .unwrap();
        let next = match page.last() {
            Some((last, _)) if page.len() == OUTBOX_PAGE_ENTRIES => Some(format!("({last}")),
            _ => None,
        };
        for (_, flat) in page {
            let event = ReservationEvent::from_fields(&outbox::field_map(flat));
            events.push(event.unwrap_or_else(|error| panic!("{error}")));
        }
        match next {
            Some(next) => start = next,
            None => return events,
        }
    }
}
