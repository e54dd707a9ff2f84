//! Reservation ids: a collision of random ids never answers with another request's hold.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stampede::ids::{CategoryId, ReservationId, UserId};
use stampede::reservation::engine::FINAL_RECORD_TTL;
use stampede::reservation::{EngineOptions, NewReservation, ReservationEngine, SeatFields};

use crate::support::harness::{TestApp, admin_token, unique_name};
use crate::support::reservation::{assert_consistent, gateway, levels, sale};

/// The engine on the app's keyspace, handing out the ids queued in `pinned` first.
fn engine_with_pinned_ids(app: &TestApp, pinned: Arc<Mutex<VecDeque<ReservationId>>>) -> ReservationEngine {
    let options = EngineOptions {
        hold_ttl: Duration::from_secs(600),
        outbox_backlog_max: 1_000_000,
        payment_timeout: Duration::from_secs(5),
        payment_window: Duration::from_secs(10),
        record_ttl: FINAL_RECORD_TTL,
        reserve_batch_max: 64,
    };
    let ids = Arc::new(move |category| {
        pinned.lock().unwrap().pop_front().unwrap_or_else(|| ReservationId::generate(category))
    });
    ReservationEngine::new(app.redis.clone(), app.keys(), Arc::new(gateway(app)), options).with_reservation_ids(ids)
}

/// A seated category of one row `A` of 10 seats, in its own event.
async fn seated(app: &TestApp) -> i64 {
    let event = app.create_event().await;
    let body = json!({"name": unique_name("seated"), "price": 1000, "seat_map": [{"row": "A", "seats": 10}],
        "max_per_user": 4});
    let response = app.post(&format!("/events/{event}/ticket-category"), Some(&admin_token()), &body).await;
    assert_eq!(response.status(), 201);
    response.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

/// A reserve of a test: who, what, and whether it resends the first one (same user, same request).
type Step<'a> = (&'a UserId, NewReservation, bool);

fn request(category: i64, quantity: Option<i64>, seats: Option<&[&str]>) -> NewReservation {
    let fields =
        SeatFields { seats: seats.map(|seats| seats.iter().map(|seat| seat.to_string()).collect()), adjacent: None };
    NewReservation::parse_with_seats(Some(category), quantity, None, fields).unwrap()
}

#[tokio::test]
async fn a_colliding_reservation_id_never_answers_another_requests_hold() {
    // Goal: when the id drawn for a reserve names an existing hold of another request (another user, another
    // quantity, other named seats), the caller gets a hold of its own under a fresh id and the existing
    // hold is untouched; a resent call (same user, same request, same id) still answers its own hold; in
    // counted and seated categories alike.
    let app = TestApp::spawn().await;
    let pinned = Arc::new(Mutex::new(VecDeque::new()));
    let engine = engine_with_pinned_ids(&app, Arc::clone(&pinned));
    let (_, counted) = sale(&app, 20, 4).await;
    let seated = seated(&app).await;
    let alice = UserId::parse("alice").unwrap();
    let bob = UserId::parse("bob").unwrap();
    let cases: [(i64, Vec<Step>); 2] = [
        (
            counted,
            vec![
                (&alice, request(counted, Some(1), None), true),
                (&bob, request(counted, Some(1), None), false),
                (&alice, request(counted, Some(2), None), false),
            ],
        ),
        (
            seated,
            vec![
                (&alice, request(seated, None, Some(&["A-1"])), true),
                (&alice, request(seated, None, Some(&["A-2"])), false),
                (&bob, request(seated, None, Some(&["A-3"])), false),
                (&bob, request(seated, Some(1), None), false),
            ],
        ),
    ];
    for (category, steps) in cases {
        let id = ReservationId::generate(CategoryId::new(category).unwrap());
        pinned.lock().unwrap().push_back(id);
        let (owner, first, _) = &steps[0];
        let original = engine.reserve(owner, first, None).await.unwrap();
        assert_eq!(original.id, id.uuid());
        for (user, request, resend) in &steps {
            pinned.lock().unwrap().push_back(id);
            let reservation = engine.reserve(user, request, None).await.unwrap();
            assert_eq!(reservation.user_id, user.as_str());
            if *resend {
                assert_eq!(reservation, original, "a resent call answers its own hold");
            } else {
                assert_ne!(reservation.id, id.uuid(), "{} got another request's reservation id", user.as_str());
            }
        }
        pinned.lock().unwrap().clear();
        let held: i64 = steps.iter().skip(1).map(|(_, request, _)| request.quantity.get()).sum();
        let levels = levels(&app, category).await;
        assert_eq!(levels.held, original.quantity + held, "every new request holds its own tickets");
        assert_consistent(&app, category).await;
    }
    app.stop().await;
}
