//! `Idempotency-Key` on reserve and confirm: byte-identical replays, another body is
//! 422, a concurrent duplicate never creates a second hold or charge, keys are scoped
//! per user, and 5xx answers are not stored.

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::harness::{TestApp, assert_problem};
use crate::support::reservation::{
    assert_consistent, cancel_as, confirm_as, final_counts, gateway, hold, id_of, levels, reserve_as, sale,
    standing_charges, wait_until_paying,
};

/// Status, Location and raw body of a response.
async fn parts(response: reqwest::Response) -> (u16, Option<String>, bytes::Bytes) {
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|value| value.to_str().unwrap().to_owned());
    (status, location, response.bytes().await.unwrap())
}

#[tokio::test]
async fn a_replayed_reserve_returns_the_first_response_byte_for_byte() {
    // Goal: the same key and body from the same user returns the first 201 again, however the JSON is spelled, and holds nothing more.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 10, 5).await;
    let body = json!({"category_id": category, "quantity": 2});
    let first = parts(reserve_as(&app, "retrier", &body, Some("order-1")).await).await;
    assert_eq!(first.0, 201);
    let again = parts(reserve_as(&app, "retrier", &body, Some("order-1")).await).await;
    assert_eq!(again, first);
    let respelled = format!(r#"{{ "quantity" : 2 ,"category_id":{category}, "event_id": null }}"#);
    let response = app
        .client
        .post(app.url("/reserve"))
        .bearer_auth(crate::support::harness::user_token("retrier"))
        .header("content-type", "application/json")
        .header("Idempotency-Key", "order-1")
        .body(respelled)
        .send()
        .await
        .unwrap();
    assert_eq!(parts(response).await, first);
    let with_event = json!({"category_id": category, "quantity": 2, "event_id": event});
    assert_problem(reserve_as(&app, "retrier", &with_event, Some("order-1")).await, 422, "idempotency_key_reused")
        .await;
    assert_eq!(levels(&app, category).await.held, 2);
    assert_eq!(assert_consistent(&app, category).await.len(), 1);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"idempotent_replays_total{operation="reserve"}"#), "{metrics}");
    app.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_another_body_is_422_and_changes_nothing() {
    // Goal: the same key with another quantity or another category is 422 idempotency_key_reused and holds nothing.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10, 5).await;
    let (_, other) = sale(&app, 10, 5).await;
    let body = |category: i64, quantity: i64| json!({"category_id": category, "quantity": quantity});
    assert_eq!(reserve_as(&app, "mixer", &body(category, 1), Some("k")).await.status(), 201);
    assert_problem(reserve_as(&app, "mixer", &body(category, 2), Some("k")).await, 422, "idempotency_key_reused").await;
    assert_problem(reserve_as(&app, "mixer", &body(other, 1), Some("k")).await, 422, "idempotency_key_reused").await;
    assert_eq!(levels(&app, category).await.held, 1);
    assert_eq!(levels(&app, other).await.held, 0);
    assert_consistent(&app, category).await;
    assert!(assert_consistent(&app, other).await.is_empty());
    app.stop().await;
}

#[tokio::test]
async fn keys_are_scoped_per_user() {
    // Goal: two users sending the same key get independent holds.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10, 5).await;
    let body = json!({"category_id": category, "quantity": 1});
    let alice: Value = reserve_as(&app, "alice", &body, Some("shared")).await.json().await.unwrap();
    let bob: Value = reserve_as(&app, "bob", &body, Some("shared")).await.json().await.unwrap();
    assert_ne!(alice["id"], bob["id"]);
    assert_eq!((alice["user_id"].as_str(), bob["user_id"].as_str()), (Some("alice"), Some("bob")));
    assert_eq!(assert_consistent(&app, category).await.len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn concurrent_duplicates_create_one_hold() {
    // Goal: 30 concurrent copies of one keyed reserve create exactly one hold; each answer is that hold's 201 or 409 idempotency_in_progress.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 100, 5).await;
    let body = json!({"category_id": category, "quantity": 1});
    let answers =
        join_all((0..30).map(|_| async { parts(reserve_as(&app, "eager", &body, Some("burst")).await).await })).await;
    let created: Vec<_> = answers.iter().filter(|answer| answer.0 == 201).collect();
    assert!(!created.is_empty());
    assert!(created.iter().all(|answer| **answer == *created[0]), "every 201 is the same hold");
    for (status, _, body) in &answers {
        if *status != 201 {
            let problem: Value = serde_json::from_slice(body).unwrap();
            assert_eq!((*status, problem["code"].as_str()), (409, Some("idempotency_in_progress")));
        }
    }
    assert_eq!(levels(&app, category).await.held, 1);
    assert_eq!(assert_consistent(&app, category).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn stored_refusals_are_replayed_and_5xx_is_not_stored() {
    // Goal: a keyed 409 sold_out is replayed even after stock frees up, while a fresh key holds; a 503 is not stored, so its retry runs again.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 1, 1).await;
    let first = id_of(&hold(&app, "first", category, 1).await);
    let body = json!({"category_id": category, "quantity": 1});
    let refused = parts(reserve_as(&app, "second", &body, Some("try")).await).await;
    assert_eq!(refused.0, 409);
    assert_eq!(cancel_as(&app, "first", &first).await.status(), 200);
    assert_eq!(parts(reserve_as(&app, "second", &body, Some("try")).await).await, refused, "replayed");
    let held: Value = reserve_as(&app, "second", &body, Some("try-again")).await.json().await.unwrap();

    let id = id_of(&held);
    assert_problem(confirm_as(&app, "second", &id, "tok_fail", Some("pay")).await, 503, "unavailable").await;
    assert_problem(confirm_as(&app, "second", &id, "tok_fail", Some("pay")).await, 503, "unavailable").await;
    let attempts = gateway(&app).charges_of(&id).await.unwrap();
    assert!(attempts.is_empty(), "failed charges never stand: {attempts:?}");
    assert_eq!(levels(&app, category).await.held, 1, "the hold is kept");
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn keyed_confirms_replay_and_run_once() {
    // Goal: a duplicate keyed confirm during the payment is 409 idempotency_in_progress; replays return the same 200 or 402 without charging again; another token is 422.
    let app = TestApp::spawn_with(&["--payment-latency", "500ms"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let id = id_of(&hold(&app, "payer", category, 1).await);
    let (first, duplicate) = tokio::join!(confirm_as(&app, "payer", &id, "tok_ok", Some("pay-1")), async {
        wait_until_paying(&app, &id).await;
        confirm_as(&app, "payer", &id, "tok_ok", Some("pay-1")).await
    });
    assert_problem(duplicate, 409, "idempotency_in_progress").await;
    let first = parts(first).await;
    assert_eq!(first.0, 200);
    assert_eq!(parts(confirm_as(&app, "payer", &id, "tok_ok", Some("pay-1")).await).await, first);
    assert_problem(confirm_as(&app, "payer", &id, "tok_other", Some("pay-1")).await, 422, "idempotency_key_reused")
        .await;
    assert_eq!(standing_charges(&app, &id).await, 1);

    let declined_id = id_of(&hold(&app, "payer", category, 1).await);
    let declined = parts(confirm_as(&app, "payer", &declined_id, "tok_decline", Some("pay-2")).await).await;
    assert_eq!(declined.0, 402);
    assert_eq!(parts(confirm_as(&app, "payer", &declined_id, "tok_decline", Some("pay-2")).await).await, declined);
    assert_eq!(confirm_as(&app, "payer", &declined_id, "tok_ok", None).await.status(), 200);
    assert_eq!(parts(confirm_as(&app, "payer", &declined_id, "tok_decline", Some("pay-2")).await).await, declined);
    assert_eq!(standing_charges(&app, &declined_id).await, 1);
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("confirmed"), Some(&2));
    app.stop().await;
}

#[tokio::test]
async fn a_second_confirm_without_a_key_during_a_payment_is_not_held() {
    // Goal: two overlapping confirms of one hold without an Idempotency-Key (PAYMENT_LATENCY=1s), the later ones sent once the first is paying: one 200, the other 409 reservation_not_held (not idempotency_in_progress), and one charge stands; with another key the answer is the same.
    let app = TestApp::spawn_with(&["--payment-latency", "1s"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let id = id_of(&hold(&app, "double-clicker", category, 2).await);
    let later = |key: Option<&'static str>| {
        let id = id.clone();
        let app = &app;
        async move {
            // The first confirm's payment is under way (the hold reads `paying`), whatever its head start.
            wait_until_paying(app, &id).await;
            confirm_as(app, "double-clicker", &id, "tok_ok", key).await
        }
    };
    let (first, second, keyed) =
        tokio::join!(confirm_as(&app, "double-clicker", &id, "tok_ok", None), later(None), later(Some("another-key")));
    assert_problem(second, 409, "reservation_not_held").await;
    assert_problem(keyed, 409, "reservation_not_held").await;
    assert_eq!(first.status(), 200);
    assert_eq!(standing_charges(&app, &id).await, 1);
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (8, 0, 2));
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("confirmed"), Some(&1));
    app.stop().await;
}
