//! What one user token can make the service store: the per-user rate limits shared by
//! every api process, and no idempotency record for a request that names nothing that
//! exists or breaks a rule; real outcomes still replay.

use std::time::Instant;

use serde_json::json;

use crate::support::harness::{Isolation, TestApp, assert_problem, connect_redis, keys_matching};
use crate::support::reservation::{cancel_as, confirm_as, id_of, reserve_as, sale};

/// A reservation id that names nothing.
const NO_RESERVATION: &str = "00000000-0000-4000-8000-000000000000";

#[tokio::test]
async fn one_user_is_limited_across_every_api_process() {
    // Goal: RATE_LIMIT_PER_USER_PER_DAY is one budget for a user however the requests spread over api processes:
    // past it the user gets 429 rate_limited with Retry-After on any process, and another user is not affected.
    let isolation = Isolation::new().await;
    let flags = ["--rate-limit-per-user-per-second", "0", "--rate-limit-per-user-per-day", "4"];
    let first = TestApp::spawn_in(isolation.clone(), &flags).await;
    let second = TestApp::spawn_in(isolation, &flags).await;
    for app in [&first, &second, &first, &second] {
        let response = cancel_as(app, "greedy", NO_RESERVATION).await;
        assert_eq!(response.status().as_u16(), 404, "within the budget the request runs");
    }
    for app in [&first, &second] {
        let refused = cancel_as(app, "greedy", NO_RESERVATION).await;
        let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=86_400 / 4).contains(&retry_after), "one request per 6 h comes back: {retry_after}");
        assert_problem(refused, 429, "rate_limited").await;
    }
    let body = json!({"category_id": 1, "quantity": 1});
    assert_problem(reserve_as(&second, "greedy", &body, None).await, 429, "rate_limited").await;
    assert_eq!(cancel_as(&first, "modest", NO_RESERVATION).await.status().as_u16(), 404, "another user");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_burst_past_the_per_second_limit_is_refused() {
    // Goal: RATE_LIMIT_PER_USER_PER_SECOND with its burst refuses a user's rapid requests past the burst with 429.
    let app = TestApp::spawn_with(&["--rate-limit-per-user-per-second", "1", "--rate-limit-per-user-burst", "3"]).await;
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(cancel_as(&app, "hasty", NO_RESERVATION).await.status().as_u16());
    }
    // At 1/s with a burst of 3, ten requests pass only if they took more than 6 s.
    if started.elapsed().as_secs() < 6 {
        assert!(statuses.contains(&429), "{statuses:?}");
        assert!(statuses[..3].iter().all(|status| *status == 404), "the burst passes: {statuses:?}");
    }
    app.stop().await;
}

/// Every idempotency key (binding or outcome record) of the app's keyspace.
async fn idempotency_records(app: &TestApp) -> Vec<String> {
    keys_matching(&format!("{}:*idem*", app.isolation.redis_key_prefix)).await.unwrap()
}

#[tokio::test]
async fn requests_that_name_nothing_or_break_a_rule_leave_no_idempotency_record() {
    // Goal: an idempotent reserve of an unknown category (404) and an idempotent confirm of an unknown
    // reservation (404) leave no binding or outcome in Redis; a reserve of a category of another event (422)
    // keeps only the binding of its key; a real outcome (201, then 409 sold_out) is still kept and replayed.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 1, 1).await;
    let unknown = json!({"category_id": 999_999_999, "quantity": 1});
    assert_problem(reserve_as(&app, "prober", &unknown, Some("k1")).await, 404, "not_found").await;
    let mismatch = json!({"category_id": category, "quantity": 1, "event_id": event + 1000});
    assert_problem(reserve_as(&app, "prober", &mismatch, Some("k2")).await, 422, "validation_failed").await;
    let confirm = confirm_as(&app, "prober", NO_RESERVATION, "tok_ok", Some("k3")).await;
    assert_problem(confirm, 404, "not_found").await;
    let kept = idempotency_records(&app).await;
    assert_eq!(kept.len(), 1, "only the 422's binding: {kept:?}");
    assert!(kept[0].ends_with(":idem:reserve:k2") && kept[0].contains(":{u:"), "{kept:?}");

    let body = json!({"category_id": category, "quantity": 1});
    let held = reserve_as(&app, "buyer", &body, Some("real")).await;
    assert_eq!(held.status().as_u16(), 201);
    let first = held.bytes().await.unwrap();
    assert_problem(reserve_as(&app, "late", &body, Some("real")).await, 409, "sold_out").await;
    assert_eq!(idempotency_records(&app).await.len(), 5, "real outcomes keep a binding and a record each");
    let replay = reserve_as(&app, "buyer", &body, Some("real")).await;
    assert_eq!(replay.bytes().await.unwrap(), first, "the replay promise holds");
    assert_problem(reserve_as(&app, "late", &body, Some("real")).await, 409, "sold_out").await;
    app.stop().await;
}

/// Redis bytes (MEMORY USAGE) of the app's keys that outlive a relayed request: all but
/// the outbox streams, which the relay trims once their entries are in Kafka.
async fn kept_bytes(app: &TestApp) -> u64 {
    let mut redis = connect_redis().await;
    let mut bytes = 0;
    for key in keys_matching(&format!("{}:*", app.isolation.redis_key_prefix)).await.unwrap() {
        if key.ends_with(":outbox") {
            continue;
        }
        let usage: Option<u64> = redis::cmd("MEMORY").arg("USAGE").arg(&key).query_async(&mut redis).await.unwrap();
        bytes += usage.unwrap_or(0);
    }
    bytes
}

#[tokio::test]
#[ignore = "a measurement: scripts/test measure_the_redis_bytes -- --ignored --nocapture"]
async fn measure_the_redis_bytes_one_token_can_occupy() {
    // Goal: prints the Redis bytes one user's requests leave for a day (reserve with a fresh Idempotency-Key,
    // then cancel), and so what one token can occupy per hour without the per-user limits (one connection's
    // sequential rate on this machine) and at most with the default limits.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10_000_000, 10).await;
    let before = kept_bytes(&app).await;
    let probes = 500u32;
    for probe in 0..probes {
        let body = json!({"category_id": 999_999_999, "quantity": 1});
        let response = reserve_as(&app, "attacker", &body, Some(&format!("probe-{probe}"))).await;
        assert_eq!(response.status().as_u16(), 404);
    }
    let probed = kept_bytes(&app).await;
    println!("Redis bytes kept per 404 reserve with a fresh key: {:.0}", (probed - before) as f64 / f64::from(probes));
    let before = probed;
    let cycles = 500u32;
    let started = Instant::now();
    for cycle in 0..cycles {
        let body = json!({"category_id": category, "quantity": 1});
        let held = reserve_as(&app, "attacker", &body, Some(&format!("key-{cycle}"))).await;
        assert_eq!(held.status().as_u16(), 201);
        let reservation = id_of(&held.json().await.unwrap());
        assert_eq!(cancel_as(&app, "attacker", &reservation).await.status().as_u16(), 200);
    }
    let requests = f64::from(cycles * 2);
    let elapsed = started.elapsed().as_secs_f64();
    let per_request = (kept_bytes(&app).await - before) as f64 / requests;
    let unlimited_per_hour = requests / elapsed * 3600.0;
    let limited_per_hour = (5.0 * 3600.0 + 20.0_f64).min(2000.0);
    println!("Redis bytes kept per request (for 24 h): {per_request:.0}");
    println!(
        "without per-user limits: {unlimited_per_hour:.0} requests/h on one sequential connection = {:.1} MB/h per token",
        unlimited_per_hour * per_request / 1e6
    );
    println!(
        "with the defaults (5/s, burst 20, 2000 per 24 h): at most {limited_per_hour:.0} requests in any hour = {:.2} MB/h, and {:.2} MB in any 24 h, per token",
        limited_per_hour * per_request / 1e6,
        2000.0 * per_request / 1e6
    );
    app.stop().await;
}
