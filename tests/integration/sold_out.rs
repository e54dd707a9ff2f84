//! The sold-out fast path (`src/reservation/sold_out.rs`): a process that saw a category
//! sell out answers `sold_out` without Redis for at most 100 ms, never hides another
//! refusal, and never keeps answering `sold_out` once stock has been back longer.

use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use stampede::reservation::sold_out::SOLD_OUT_VERDICT_TTL_MAX;

use crate::support::harness::{TestApp, assert_problem, metric_value, wait_until};
use crate::support::reservation::{assert_consistent, cancel_as, hold, id_of, levels, reserve_as, sale};

/// One single-ticket reserve per user, all at once; the (status, code) of each answer.
async fn stampede(app: &TestApp, category: i64, users: std::ops::Range<usize>) -> Vec<(u16, String)> {
    let requests = users.map(|index| async move {
        let response =
            reserve_as(app, &format!("buyer-{index}"), &json!({"category_id": category, "quantity": 1}), None).await;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        (status, body["code"].as_str().unwrap_or_default().to_owned())
    });
    join_all(requests).await
}

async fn fast_answers(app: &TestApp) -> f64 {
    let page = app.get("/metrics", None).await.text().await.unwrap();
    metric_value(&page, "sold_out_fast_answers_total")
}

/// Reserves one ticket as `user` and asserts the answer is 409 `sold_out`.
async fn assert_sold_out(app: &TestApp, user: &str, category: i64) {
    let response = reserve_as(app, user, &json!({"category_id": category, "quantity": 1}), None).await;
    assert_problem(response, 409, "sold_out").await;
}

#[tokio::test]
async fn a_stampede_holds_exactly_the_quota_and_the_rest_hear_sold_out_without_redis() {
    // Goal: 300 buyers for 20 seats give exactly 20 holds and 280 sold_out, later buyers are answered by the fast path, and the stock stays conserved.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 20, 1).await;
    let outcomes = stampede(&app, category, 0..300).await;
    let held = outcomes.iter().filter(|(status, _)| *status == 201).count();
    let sold_out = outcomes.iter().filter(|(status, code)| *status == 409 && code == "sold_out").count();
    assert_eq!((held, sold_out), (20, 280), "{outcomes:?}");
    let before = fast_answers(&app).await;
    let mut next = 300;
    // One buyer after another: each comes within the verdict's 100 ms of the previous
    // refusal on any machine, where a concurrent crowd may all reach Redis before the
    // first refusal is known (group commit sends them together) when the machine is slow.
    wait_until(Duration::from_secs(60), "a sold-out reserve is answered by the fast path", || {
        let batch = next..next + 20;
        next += 20;
        let app = &app;
        async move {
            for buyer in batch {
                assert_sold_out(app, &format!("buyer-{buyer}"), category).await;
            }
            fast_answers(app).await > before
        }
    })
    .await;
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (0, 20, 0));
    assert_eq!(assert_consistent(&app, category).await.len(), 20);
    app.stop().await;
}

#[tokio::test]
async fn stock_cancelled_in_another_process_is_sold_again_within_the_bound() {
    // Goal: after another process cancels the last hold, a keyed reserve gets it at once and an unkeyed one gets it once 100 ms have passed.
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_in(first.isolation.clone(), &[]).await;
    let (_, category) = sale(&first, 1, 1).await;
    let taken = hold(&second, "early", category, 1).await;
    assert_sold_out(&first, "late", category).await;
    assert_eq!(cancel_as(&second, "early", &id_of(&taken)).await.status(), 200);
    // A keyed request always runs the script, so its stored outcome is never a stale verdict.
    let body = json!({"category_id": category, "quantity": 1});
    let keyed = reserve_as(&first, "keyed", &body, Some("k-1")).await;
    assert_eq!(keyed.status(), 201, "{:?}", keyed.text().await);
    let keyed: Value = keyed.json().await.unwrap();
    assert_sold_out(&first, "late", category).await;
    assert_eq!(cancel_as(&second, "keyed", &id_of(&keyed)).await.status(), 200);
    // The contract's bound: stock back for this long is never answered sold_out.
    tokio::time::sleep(SOLD_OUT_VERDICT_TTL_MAX).await;
    hold(&first, "late", category, 1).await;
    assert_eq!(levels(&first, category).await.held, 1);
    assert_eq!(assert_consistent(&first, category).await.len(), 3);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn stock_expired_by_another_process_is_sold_again_within_the_bound() {
    // Goal: a hold released by another process's reaper is reservable here once 100 ms have passed since its release.
    let first = TestApp::spawn_with(&["--hold-ttl", "1s", "--reaper-enabled", "false"]).await;
    let second = TestApp::spawn_in(first.isolation.clone(), &["--reaper-interval", "50ms"]).await;
    let (_, category) = sale(&first, 1, 1).await;
    hold(&first, "early", category, 1).await;
    assert_sold_out(&first, "late", category).await;
    wait_until(Duration::from_secs(30), "the other process's reaper released the hold", || async {
        first.assert_conserved(category).await.available == 1
    })
    .await;
    tokio::time::sleep(SOLD_OUT_VERDICT_TTL_MAX).await;
    hold(&first, "late", category, 1).await;
    assert_eq!(assert_consistent(&first, category).await.len(), 2);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_cancel_in_this_process_ends_the_verdict_at_once() {
    // Goal: the process that returns stock itself never answers sold_out for it afterwards.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 1, 1).await;
    let taken = hold(&app, "early", category, 1).await;
    assert_sold_out(&app, "late", category).await;
    assert_eq!(cancel_as(&app, "early", &id_of(&taken)).await.status(), 200);
    hold(&app, "late", category, 1).await;
    assert_eq!(assert_consistent(&app, category).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn the_fast_path_never_hides_an_event_mismatch_or_a_smaller_request() {
    // Goal: a verdict about one ticket count and no event answers neither another event (422) nor fewer tickets (held).
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 3, 3).await;
    hold(&app, "early", category, 2).await;
    let two = reserve_as(&app, "late", &json!({"category_id": category, "quantity": 2}), None).await;
    assert_problem(two, 409, "sold_out").await;
    let other_event = json!({"category_id": category, "quantity": 2, "event_id": event + 1000});
    let mismatch = reserve_as(&app, "late", &other_event, None).await;
    assert_problem(mismatch, 422, "validation_failed").await;
    hold(&app, "late", category, 1).await;
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held), (0, 3));
    app.stop().await;
}
