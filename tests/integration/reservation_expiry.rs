//! Expiry: the reaper returns stock within 2 s of a deadline, confirm and cancel answer
//! 410 at the deadline whether or not the reaper ran, several reapers never release a
//! hold twice, and a slow payment racing the reaper never both sells and releases.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};
use stampede::auth::UserId;
use stampede::catalog::CategoryId;
use stampede::payment::{AttemptId, Charge, PaymentGateway, PaymentToken};
use stampede::reservation::engine::PaymentStart;
use stampede::reservation::reaper::{Reaper, ReaperOptions};
use stampede::reservation::{ReservationError, ReservationId};

use crate::harness::{TestApp, assert_problem, user_token, wait_until};
use crate::reservation_support::{
    assert_consistent, cancel_as, confirm_as, engine, final_counts, gateway, hold, id_of, levels, read, reserve_as,
    sale, standing_charges,
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
    // Goal: with HOLD_TTL=1s the stock is back within 2 s of expires_at, the status reads expired, and confirm and cancel get 410.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let first = hold(&app, "lapser", category, 2).await;
    let second = hold(&app, "lapser", category, 1).await;
    assert_eq!(levels(&app, category).await.available, 7);
    let deadline = expires_at(&second) + chrono::Duration::seconds(2);
    loop {
        if levels(&app, category).await.available == 10 {
            break;
        }
        assert!(Utc::now() < deadline, "stock did not return within 2 s of expires_at");
        tokio::time::sleep(Duration::from_millis(50)).await;
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
async fn a_slow_payment_that_outlives_the_hold_is_confirmed_and_not_released() {
    // Goal: a charge slower than the hold's remaining time still confirms (the paying state keeps the reaper off) and nothing is released.
    let app =
        TestApp::spawn_with(&["--hold-ttl", "1s", "--payment-latency", "1500ms", "--reaper-interval", "20ms"]).await;
    let (_, category) = sale(&app, 5, 5).await;
    let id = id_of(&hold(&app, "patient", category, 2).await);
    let response = confirm_as(&app, "patient", &id, "tok_ok", None).await;
    assert_eq!(response.status(), 200);
    let confirmed: Value = response.json().await.unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    // Instead of watching the reaper for a while: a confirmed hold has left the deadlines
    // the reaper reads, so no later round can release it.
    let reservation = ReservationId::parse(&id).unwrap();
    let deadlines = app.keys().deadlines(reservation.category());
    let lapsing: Option<f64> = app.redis.clone().zscore(&deadlines, reservation.uuid().to_string()).await.unwrap();
    assert_eq!(lapsing, None, "the confirmed hold is off the reaper's deadlines");
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (3, 0, 2));
    assert_eq!(standing_charges(&app, &id).await, 1);
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("confirmed"), Some(&1), "confirmed, never expired");
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
    let finished = engine.finish_payment(*early_id, *early_attempt, &early_payment).await;
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
    assert_problem(confirm_as(&app, "retrier", &id.to_string(), "tok_ok", None).await, 409, "idempotency_in_progress")
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
