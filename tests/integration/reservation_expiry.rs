//! Expiry: the reaper returns stock within 2 s of a deadline, confirm and cancel answer
//! 410 at the deadline whether or not the reaper ran, several reapers never release a
//! hold twice, a payment still running at the deadline never confirms nor keeps the
//! tickets (also when its process dies), and records outlive any reaper outage.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::{Value, json};
use stampede::ids::{CategoryId, ReservationId, UserId};
use stampede::payment::{AttemptId, Charge, PaymentGateway, PaymentToken};
use stampede::reservation::PaymentStart;
use stampede::reservation::ReservationError;
use stampede::reservation::reaper::{Reaper, ReaperOptions};

use crate::support::engine::outbox_events;
use crate::support::harness::{TestApp, assert_problem, user_token, wait_until};
use crate::support::pipeline::{free_port, spawn_api};
use crate::support::reservation::{
    assert_consistent, cancel_as, confirm_as, engine, final_counts, gateway, hold, id_of, levels, paying_attempt, read,
    reserve_as, sale, standing_charges,
};

fn expires_at(body: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

/// Sleeps until `deadline` (host clock; only used to pace the test, never to decide).
// Why: a sleep, since the test needs a moment to have passed (a deadline), not an event.
async fn sleep_until(deadline: DateTime<Utc>) {
    let remaining = (deadline - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(remaining).await;
}

#[tokio::test]
async fn expired_holds_return_their_stock_within_two_seconds() {
    // Goal: with HOLD_TTL=1s the stock is back within 2 s of expires_at (by Redis's clock: the expired event's time), the status reads expired, and confirm and cancel get 410.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let first = hold(&app, "lapser", category, 2).await;
    let second = hold(&app, "lapser", category, 1).await;
    assert_eq!(levels(&app, category).await.available, 7);
    // The wait only bounds a failure; the 2 s promise is judged below on the times Redis
    // stamped, so a slow test process cannot fail it.
    wait_until(Duration::from_secs(30), "the expired holds' stock is back", || async {
        levels(&app, category).await.available == 10
    })
    .await;
    let engine = engine(&app, Duration::from_secs(15));
    let events = outbox_events(&engine, CategoryId::new(category).unwrap()).await;
    for body in [&first, &second] {
        let id = uuid::Uuid::parse_str(&id_of(body)).unwrap();
        let expired = events
            .iter()
            .find(|event| event.reservation.id == id && event.event_type == stampede::outbox::EventType::Expired)
            .expect("an expired event");
        let late = expired.occurred_at - expires_at(body);
        assert!(late <= chrono::Duration::seconds(2), "released {late} after expires_at");
    }
    for body in [&first, &second] {
        let read_back: Value = read(&app, &user_token("lapser"), &id_of(body)).await.json().await.unwrap();
        assert_eq!(read_back["status"], "expired");
        let id = id_of(body);
        assert_problem(confirm_as(&app, "lapser", &id, "tok_ok", None).await, 410, "reservation_expired").await;
        assert_problem(cancel_as(&app, "lapser", &id).await, 410, "reservation_expired").await;
        assert_eq!(standing_charges(&app, &id).await, 0);
    }
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("expired"), Some(&2));
    hold(&app, "lapser", category, 5).await;
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains("reservations_expired_total") && metrics.contains("reaper_release_delay_seconds_bucket"));
    app.stop().await;
}

#[tokio::test]
async fn the_deadline_holds_even_without_a_reaper() {
    // Goal: with the reaper disabled, confirm and cancel at or after expires_at still get 410 and charge nothing.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s", "--reaper-enabled", "false"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let held = hold(&app, "late", category, 2).await;
    sleep_until(expires_at(&held) + chrono::Duration::milliseconds(50)).await;
    let id = id_of(&held);
    assert_problem(confirm_as(&app, "late", &id, "tok_ok", None).await, 410, "reservation_expired").await;
    assert_problem(cancel_as(&app, "late", &id).await, 410, "reservation_expired").await;
    assert_eq!(gateway(&app).charges_of(&id).await.unwrap().len(), 0, "never charged");
    let levels = levels(&app, category).await;
    assert_eq!(levels.held, 2, "nothing released it yet");
    assert_consistent(&app, category).await;

    let reaper =
        Reaper::new(&engine(&app, Duration::from_secs(15)), ReaperOptions { interval: Duration::ZERO, batch_max: 10 });
    let swept = reaper.sweep(CategoryId::new(category).unwrap()).await.unwrap();
    assert_eq!(swept.released, 1);
    assert_eq!(levels_after(&app, category).await, (10, 0));
    app.stop().await;
}

async fn levels_after(app: &TestApp, category: i64) -> (i64, i64) {
    let levels = levels(app, category).await;
    (levels.available, levels.held)
}

#[tokio::test]
async fn many_reapers_never_release_a_hold_twice() {
    // Goal: two API processes' reapers plus many concurrent sweeps release each of 200 holds exactly once.
    let first =
        TestApp::spawn_with(&["--hold-ttl", "1s", "--reaper-interval", "10ms", "--reaper-batch-max", "7"]).await;
    let second = TestApp::spawn_in(
        first.isolation.clone(),
        &["--hold-ttl", "1s", "--reaper-interval", "10ms", "--reaper-batch-max", "7"],
    )
    .await;
    let (_, category) = sale(&first, 200, 1).await;
    let requests = (0..200).map(|index| {
        let app = if index % 2 == 0 { &first } else { &second };
        async move {
            let body = json!({"category_id": category, "quantity": 1});
            reserve_as(app, &format!("holder-{index}"), &body, None).await.status().as_u16()
        }
    });
    assert!(join_all(requests).await.iter().all(|status| *status == 201));
    let engine = engine(&first, Duration::from_secs(15));
    let category_id = CategoryId::new(category).unwrap();
    let sweeps = (0..8).map(|_| {
        let reaper = Reaper::new(&engine, ReaperOptions { interval: Duration::ZERO, batch_max: 13 });
        async move {
            let mut released = 0;
            for _ in 0..40 {
                released += reaper.sweep(category_id).await.unwrap().released;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            released
        }
    });
    let by_test: usize = join_all(sweeps).await.into_iter().sum();
    assert_eq!(levels_after(&first, category).await, (200, 0));
    assert!(by_test <= 200);
    let history = assert_consistent(&first, category).await;
    assert_eq!(history.len(), 200);
    assert_eq!(final_counts(&history).get("expired"), Some(&200), "exactly one expired event per hold");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_payment_still_running_at_the_deadline_does_not_confirm() {
    // Goal: with HOLD_TTL=3s and PAYMENT_LATENCY=5s, a confirm started at ~1 s answers 410, its attempt is voided in the gateway ledger, and the tickets are back within expires_at + 2 s while the charge still runs.
    let app = TestApp::spawn_with(&["--hold-ttl", "3s", "--payment-latency", "5s", "--reaper-interval", "50ms"]).await;
    let (_, category) = sale(&app, 5, 5).await;
    let held = hold(&app, "slow-payer", category, 2).await;
    let id = id_of(&held);
    sleep_until(created_at(&held) + chrono::Duration::seconds(1)).await;
    let answered = AtomicBool::new(false);
    let (confirmed, attempt) = tokio::join!(
        async {
            let response = confirm_as(&app, "slow-payer", &id, "tok_ok", None).await;
            answered.store(true, Ordering::SeqCst);
            response
        },
        async {
            let attempt = paying_attempt(&app, &id).await;
            wait_for_release(&app, category, 5, expires_at(&held)).await;
            assert!(!answered.load(Ordering::SeqCst), "the tickets came back while the charge still ran");
            attempt
        }
    );
    assert_problem(confirmed, 410, "reservation_expired").await;
    let entry = gateway(&app).entry(&attempt).await.unwrap().expect("the attempt is in the ledger");
    assert!(matches!(entry.state.as_str(), "voided" | "refunded"), "{entry:?}");
    assert_eq!(standing_charges(&app, &id).await, 0);
    let read_back: Value = read(&app, &user_token("slow-payer"), &id).await.json().await.unwrap();
    assert_eq!(read_back["status"], "expired");
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (5, 0, 0));
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("expired"), Some(&1), "expired, never confirmed");
    app.stop().await;
}

/// Waits until `category` has `quota` tickets available again; panics if that takes
/// past `expires_at + 2 s` (the contract's bound).
async fn wait_for_release(app: &TestApp, category: i64, quota: i64, expires_at: DateTime<Utc>) {
    let bound = expires_at + chrono::Duration::seconds(2);
    while levels(app, category).await.available != quota {
        assert!(Utc::now() < bound, "the tickets were not back within expires_at + 2 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn created_at(body: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(body["created_at"].as_str().unwrap()).unwrap().with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_of_a_killed_api_never_stands_and_its_hold_is_released() {
    // Goal: an API process SIGKILLed mid-charge (HOLD_TTL=3s, PAYMENT_LATENCY=5s) leaves a paying hold; another process's reaper releases it within expires_at + 2 s and voids its attempt, so no charge for it can ever stand.
    let app = TestApp::spawn_with(&["--hold-ttl", "3s", "--reaper-interval", "50ms"]).await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let child = spawn_api(
        &app.isolation,
        &[("LISTEN_ADDR", &listen), ("HOLD_TTL", "3s"), ("PAYMENT_LATENCY", "5s"), ("REAPER_ENABLED", "false")],
    );
    let child_url = format!("http://{listen}");
    wait_until(Duration::from_secs(30), "the child api answers", || async {
        app.client.get(format!("{child_url}/health")).send().await.is_ok_and(|response| response.status() == 200)
    })
    .await;
    let (_, category) = sale(&app, 4, 4).await;
    let held = hold(&app, "killed-payer", category, 3).await;
    let id = id_of(&held);
    sleep_until(created_at(&held) + chrono::Duration::seconds(1)).await;
    let request = app
        .client
        .post(format!("{child_url}/confirm"))
        .bearer_auth(user_token("killed-payer"))
        .json(&json!({"reservation_id": id, "payment": {"token": "tok_ok"}}))
        .send();
    let confirming = tokio::spawn(request);
    let attempt = paying_attempt(&app, &id).await;
    child.kill().await;
    assert!(confirming.await.unwrap().is_err(), "the killed process never answered");
    wait_for_release(&app, category, 4, expires_at(&held)).await;
    // The reaper that expired the paying hold voids its attempt after its script returns
    // (and, on a cluster, after a replica holds the release): voiding is final, so a charge
    // the dead process had sent can never land or stand.
    wait_until(Duration::from_secs(30), "the reaper voided the attempt", || async {
        gateway(&app).entry(&attempt).await.unwrap().is_some_and(|entry| entry.state == "voided")
    })
    .await;
    let attempt = AttemptId::parse(&attempt).unwrap();
    let token = PaymentToken::parse("tok_ok").unwrap();
    let charge = Charge { attempt, amount: 3000, currency: "USD", token: &token, reference: &id };
    assert!(gateway(&app).charge(&charge).await.is_err(), "the dead process's charge is refused");
    assert_eq!(standing_charges(&app, &id).await, 0);
    let read_back: Value = read(&app, &user_token("killed-payer"), &id).await.json().await.unwrap();
    assert_eq!(read_back["status"], "expired");
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("expired"), Some(&1));
    app.stop().await;
}

#[tokio::test]
async fn a_hold_outlives_a_reaper_outage_longer_than_the_record_lifetime() {
    // Goal: with no reaper running for longer than records live (test-only RECORD_TTL=1s), held and paying records still exist; a reaper that comes back returns their tickets, the user's count and their expired events.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s", "--record-ttl", "1s", "--reaper-enabled", "false"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let held = hold(&app, "forgotten", category, 2).await;
    let paying = hold(&app, "forgotten", category, 1).await;
    let paying_id = ReservationId::parse(&id_of(&paying)).unwrap();
    let user = UserId::parse("forgotten").unwrap();
    let payer = engine(&app, Duration::from_millis(300));
    let start = payer.begin_payment(&user, paying_id, AttemptId::generate(), None).await.unwrap();
    assert!(matches!(start, PaymentStart::Pay(_)));
    sleep_until(expires_at(&paying) + chrono::Duration::milliseconds(2500)).await;
    let reaper =
        Reaper::new(&engine(&app, Duration::from_secs(15)), ReaperOptions { interval: Duration::ZERO, batch_max: 10 });
    let swept = reaper.sweep(CategoryId::new(category).unwrap()).await.unwrap();
    assert_eq!((swept.released, swept.missing), (2, 0), "{swept:?}");
    assert_eq!(levels_after(&app, category).await, (10, 0));
    for body in [&held, &paying] {
        let read_back: Value = read(&app, &user_token("forgotten"), &id_of(body)).await.json().await.unwrap();
        assert_eq!(read_back["status"], "expired");
    }
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("expired"), Some(&2));
    app.stop().await;
}

#[tokio::test]
async fn a_payment_that_times_out_is_voided_and_the_hold_released() {
    // Goal: a charge that outlives PAYMENT_TIMEOUT answers 503, leaves no charge, and the hold is released at its deadline.
    let app = TestApp::spawn_with(&[
        "--hold-ttl",
        "1s",
        "--payment-latency",
        "1500ms",
        "--payment-timeout",
        "400ms",
        "--reaper-interval",
        "20ms",
    ])
    .await;
    let (_, category) = sale(&app, 5, 5).await;
    let held = hold(&app, "timed-out", category, 1).await;
    let id = id_of(&held);
    assert_problem(confirm_as(&app, "timed-out", &id, "tok_ok", None).await, 503, "unavailable").await;
    wait_until(Duration::from_secs(10), "the reaper released the hold", || async {
        levels_after(&app, category).await == (5, 0)
    })
    .await;
    let read_back: Value = read(&app, &user_token("timed-out"), &id).await.json().await.unwrap();
    assert_eq!(read_back["status"], "expired");
    assert_eq!(standing_charges(&app, &id).await, 0);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn a_charge_that_outlives_the_payment_window_never_stands() {
    // Goal: when a process stalls past the payment window, the reaper releases the hold and voids the attempt: a charge that landed is refunded, a later one is refused.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s", "--reaper-interval", "20ms"]).await;
    let (_, category) = sale(&app, 5, 5).await;
    // An engine with a short payment window stands in for a process that stalls mid-payment.
    let engine = engine(&app, Duration::from_millis(400));
    let user = UserId::parse("stalled").unwrap();
    let token = PaymentToken::parse("tok_ok").unwrap();
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let held = hold(&app, "stalled", category, 1).await;
        let id = ReservationId::parse(&id_of(&held)).unwrap();
        let attempt = AttemptId::generate();
        let start = engine.begin_payment(&user, id, attempt, None).await.unwrap();
        let PaymentStart::Pay(paying) = start else { panic!("expected to pay, got {start:?}") };
        attempts.push((id, attempt, paying));
    }
    // The first charge lands before the reaper acts; the second only after it.
    let (early_id, early_attempt, early) = &attempts[0];
    let early_reference = early_id.to_string();
    let charge = Charge {
        attempt: *early_attempt,
        amount: early.amount,
        currency: &early.currency,
        token: &token,
        reference: &early_reference,
    };
    let early_payment = gateway(&app).charge(&charge).await.expect("charged before the reaper acted");
    wait_until(Duration::from_secs(10), "the reaper released both lapsed payments and refunded the charge", || async {
        levels_after(&app, category).await == (5, 0) && standing_charges(&app, &early_reference).await == 0
    })
    .await;
    let finished = engine.finish_payment(&user, *early_id, *early_attempt, &early_payment).await;
    assert!(matches!(finished, Err(ReservationError::Expired)), "{finished:?}");

    let (late_id, late_attempt, late) = &attempts[1];
    let late_reference = late_id.to_string();
    let charge = Charge {
        attempt: *late_attempt,
        amount: late.amount,
        currency: &late.currency,
        token: &token,
        reference: &late_reference,
    };
    assert!(gateway(&app).charge(&charge).await.is_err(), "a voided attempt is never charged");
    for (id, _, _) in &attempts {
        let read_back: Value = read(&app, &user_token("stalled"), &id.to_string()).await.json().await.unwrap();
        assert_eq!(read_back["status"], "expired");
        assert_eq!(standing_charges(&app, &id.to_string()).await, 0);
    }
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("expired"), Some(&2));
    app.stop().await;
}

#[tokio::test]
async fn a_lapsed_payment_before_the_deadline_returns_the_hold() {
    // Goal: a payment whose window lapses while the hold is still valid is voided by the reaper and the hold is held again, confirmable later.
    let app = TestApp::spawn_with(&["--hold-ttl", "30s", "--reaper-interval", "20ms"]).await;
    let (_, category) = sale(&app, 5, 5).await;
    let held = hold(&app, "retrier", category, 1).await;
    let id = ReservationId::parse(&id_of(&held)).unwrap();
    let engine = engine(&app, Duration::from_millis(800));
    let user = UserId::parse("retrier").unwrap();
    let attempt = AttemptId::generate();
    assert!(matches!(engine.begin_payment(&user, id, attempt, None).await.unwrap(), PaymentStart::Pay(_)));
    assert_problem(confirm_as(&app, "retrier", &id.to_string(), "tok_ok", None).await, 409, "reservation_not_held")
        .await;
    // The window lapses after 800 ms; the reaper then voids the attempt and returns the hold.
    let deadline = std::time::Instant::now() + Duration::from_secs(4);
    while gateway(&app).entry(&attempt.to_string()).await.unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the reaper voided the attempt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gateway(&app).entry(&attempt.to_string()).await.unwrap().unwrap().state, "voided");
    let read_back: Value = read(&app, &user_token("retrier"), &id.to_string()).await.json().await.unwrap();
    assert_eq!(read_back, held, "held again, as it was");
    let confirmed = confirm_as(&app, "retrier", &id.to_string(), "tok_ok", None).await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(standing_charges(&app, &id.to_string()).await, 1);
    assert_consistent(&app, category).await;
    app.stop().await;
}
