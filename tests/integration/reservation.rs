//! Reserve, confirm, cancel and read: the flash sale, ownership, payments, the per-user
//! cap, the sale window and bad input. Every test ends with the consistency check of
//! `support::reservation` (conservation, one event per state change, in order).

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};

use crate::support::engine::outbox_events;
use crate::support::harness::{TestApp, admin_token, assert_problem, user_token, wait_until};
use crate::support::reservation::{
    PRICE, assert_consistent, cancel_as, confirm_as, engine, final_counts, gateway, hold, id_of, levels, read,
    reserve_as, sale, sale_in_window, standing_charges, to_legacy_layout, user, wait_until_paying,
};

/// Sends one single-ticket reserve per user, all at once, spread over `apps`.
async fn flash_sale(apps: &[&TestApp], category: i64, users: usize) -> Vec<(u16, Value)> {
    let requests = (0..users).map(|index| {
        let app = apps[index % apps.len()];
        async move {
            let response =
                reserve_as(app, &format!("fan-{index}"), &json!({"category_id": category, "quantity": 1}), None).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    join_all(requests).await
}

fn tally(outcomes: &[(u16, Value)]) -> (usize, usize) {
    let held = outcomes.iter().filter(|(status, _)| *status == 201).count();
    let sold_out = outcomes.iter().filter(|(status, body)| *status == 409 && body["code"] == "sold_out").count();
    let errors: Vec<&(u16, Value)> = outcomes.iter().filter(|(status, _)| *status >= 500).collect();
    assert!(errors.is_empty(), "no 5xx: {errors:?}");
    (held, sold_out)
}

#[tokio::test]
async fn a_flash_sale_holds_exactly_the_quota() {
    // Goal: 500 concurrent single-ticket reserves from distinct users against quota 100 give exactly 100 holds and 400 sold_out.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 100, 1).await;
    let outcomes = flash_sale(&[&app], category, 500).await;
    assert_eq!(tally(&outcomes), (100, 400));
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (0, 100, 0));
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("reserved"), Some(&100));
    app.stop().await;
}

#[tokio::test]
async fn a_flash_sale_across_two_processes_holds_exactly_the_quota() {
    // Goal: two API processes on one Redis together hold exactly the quota, never more.
    let first = TestApp::spawn().await;
    let second = TestApp::spawn_in(first.isolation.clone(), &[]).await;
    let (_, category) = sale(&first, 100, 1).await;
    let outcomes = flash_sale(&[&first, &second], category, 500).await;
    assert_eq!(tally(&outcomes), (100, 400));
    let served_by_second = outcomes.iter().skip(1).step_by(2).filter(|(status, _)| *status == 201).count();
    assert!(served_by_second > 0, "both processes sold");
    assert_eq!(levels(&first, category).await.available, 0);
    assert_eq!(assert_consistent(&first, category).await.len(), 100);
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_hold_is_the_contract_reservation_and_readable_at_once() {
    // Goal: 201 carries the contract's Reservation (amount, expires_at = created_at + HOLD_TTL, Location), readable by its owner and admins at once.
    let app = TestApp::spawn_with(&["--hold-ttl", "90s"]).await;
    let (event, category) = sale(&app, 10, 4).await;
    let body = json!({"category_id": category, "quantity": 3, "event_id": event});
    let response = reserve_as(&app, "alice", &body, None).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let held: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/reservations/{}", held["id"].as_str().unwrap()));
    assert_eq!(held["status"], "held");
    assert_eq!((held["event_id"].as_i64(), held["category_id"].as_i64()), (Some(event), Some(category)));
    assert_eq!((held["user_id"].as_str(), held["quantity"].as_i64()), (Some("alice"), Some(3)));
    assert_eq!((held["amount"].as_i64(), held["currency"].as_str()), (Some(3 * PRICE), Some("USD")));
    let created = chrono::DateTime::parse_from_rfc3339(held["created_at"].as_str().unwrap()).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(held["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - created, chrono::Duration::seconds(90));
    assert!(held.get("payment_id").is_none() && held.get("confirmed_at").is_none());

    let own: Value = read(&app, &user_token("alice"), &id_of(&held)).await.json().await.unwrap();
    assert_eq!(own, held);
    let admin = read(&app, &admin_token(), &id_of(&held)).await;
    assert_eq!(admin.status(), 200);
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held), (7, 3));
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn only_the_owner_may_touch_a_reservation() {
    // Goal: anyone but the owner gets 404 on read, confirm and cancel, and nothing changes; unknown ids are 404 too.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10, 2).await;
    let held = hold(&app, "owner", category, 2).await;
    let id = id_of(&held);
    assert_problem(read(&app, &user_token("mallory"), &id).await, 404, "not_found").await;
    assert_problem(confirm_as(&app, "mallory", &id, "tok_ok", None).await, 404, "not_found").await;
    assert_problem(cancel_as(&app, "mallory", &id).await, 404, "not_found").await;
    assert_problem(read(&app, &user_token("owner"), "not-a-uuid").await, 404, "not_found").await;
    let foreign = uuid::Uuid::new_v4().to_string();
    assert_problem(read(&app, &user_token("owner"), &foreign).await, 404, "not_found").await;
    assert_problem(cancel_as(&app, "owner", &foreign).await, 404, "not_found").await;
    assert_problem(confirm_as(&app, "owner", &foreign, "tok_ok", None).await, 404, "not_found").await;
    assert_problem(app.get(&format!("/reservations/{id}"), None).await, 401, "unauthorized").await;

    let unchanged: Value = read(&app, &user_token("owner"), &id).await.json().await.unwrap();
    assert_eq!(unchanged, held);
    assert_eq!(standing_charges(&app, &id).await, 0);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn confirming_charges_once_and_is_final() {
    // Goal: confirm answers 200 confirmed with payment_id; confirming again returns the same body and charges nothing more; cancel after confirm is 409.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10, 4).await;
    let id = id_of(&hold(&app, "buyer", category, 2).await);
    let first = confirm_as(&app, "buyer", &id, "tok_visa", None).await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    let confirmed: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(confirmed["status"], "confirmed");
    assert!(confirmed["payment_id"].as_str().unwrap().starts_with("pay_"));
    assert!(confirmed["confirmed_at"].is_string());

    let again = confirm_as(&app, "buyer", &id, "tok_visa", None).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), first, "the same body");
    assert_eq!(gateway(&app).charges_of(&id).await.unwrap().len(), 1, "charged once");
    assert_eq!(standing_charges(&app, &id).await, 1);

    let problem = assert_problem(cancel_as(&app, "buyer", &id).await, 409, "reservation_not_held").await;
    assert!(problem["detail"].as_str().unwrap().contains("confirmed"));
    let read_back: Value = read(&app, &user_token("buyer"), &id).await.json().await.unwrap();
    assert_eq!(read_back, confirmed);
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (8, 0, 2));
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn declined_and_failed_payments_keep_the_hold() {
    // Goal: tok_decline is 402 and tok_fail is 503 with Retry-After; both keep the hold, leave no charge, and a later good payment confirms.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 10, 4).await;
    let held = hold(&app, "payer", category, 1).await;
    let id = id_of(&held);
    assert_problem(confirm_as(&app, "payer", &id, "tok_decline", None).await, 402, "payment_declined").await;
    let failed = confirm_as(&app, "payer", &id, "tok_fail", None).await;
    assert_eq!(failed.headers()["retry-after"], "1");
    assert_problem(failed, 503, "unavailable").await;
    let still: Value = read(&app, &user_token("payer"), &id).await.json().await.unwrap();
    assert_eq!(still, held, "the hold is kept as it was");
    assert_eq!(levels(&app, category).await.held, 1);
    assert_eq!(standing_charges(&app, &id).await, 0);

    let confirmed = confirm_as(&app, "payer", &id, "tok_ok", None).await;
    assert_eq!(confirmed.status(), 200);
    assert_eq!(standing_charges(&app, &id).await, 1);
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history).get("confirmed"), Some(&1));
    app.stop().await;
}

#[tokio::test]
async fn cancel_releases_at_once_and_repeats_as_a_no_op() {
    // Goal: cancel returns the tickets at once; a second cancel answers the same 200; confirm after cancel is 409 reservation_not_held.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 5, 5).await;
    let id = id_of(&hold(&app, "canceller", category, 3).await);
    let first = cancel_as(&app, "canceller", &id).await;
    assert_eq!(first.status(), 200);
    let first = first.bytes().await.unwrap();
    let cancelled: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    let levels_after = levels(&app, category).await;
    assert_eq!((levels_after.available, levels_after.held), (5, 0));

    let again = cancel_as(&app, "canceller", &id).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.bytes().await.unwrap(), first);
    let problem =
        assert_problem(confirm_as(&app, "canceller", &id, "tok_ok", None).await, 409, "reservation_not_held").await;
    assert!(problem["detail"].as_str().unwrap().contains("cancelled"));
    assert_eq!(standing_charges(&app, &id).await, 0);
    let history = assert_consistent(&app, category).await;
    assert_eq!(history.values().next().unwrap().len(), 2, "reserved, cancelled: one event each");
    app.stop().await;
}

#[tokio::test]
async fn the_per_user_cap_counts_held_and_confirmed_tickets() {
    // Goal: max_per_user caps held + confirmed tickets per user and category; only cancelled or expired tickets free the cap.
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, 100, 3).await;
    let buyer = user("capped");
    let body = |quantity: i64| json!({"category_id": category, "quantity": quantity});
    assert_problem(reserve_as(&app, &buyer, &body(4), None).await, 409, "limit_exceeded").await;
    let first = id_of(&hold(&app, &buyer, category, 2).await);
    assert_problem(reserve_as(&app, &buyer, &body(2), None).await, 409, "limit_exceeded").await;
    let second = id_of(&hold(&app, &buyer, category, 1).await);
    assert_eq!(confirm_as(&app, &buyer, &first, "tok_ok", None).await.status(), 200);
    assert_problem(reserve_as(&app, &buyer, &body(1), None).await, 409, "limit_exceeded").await;
    assert_eq!(cancel_as(&app, &buyer, &second).await.status(), 200);
    hold(&app, &buyer, category, 1).await;
    assert_problem(reserve_as(&app, &buyer, &body(1), None).await, 409, "limit_exceeded").await;
    hold(&app, &user("other"), category, 3).await;
    let levels = levels(&app, category).await;
    assert_eq!((levels.held, levels.sold), (4, 2));
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn reserve_respects_the_sale_window() {
    // Goal: before the window is 409 sale_not_open, after it 409 sale_closed, and neither holds anything.
    let app = TestApp::spawn().await;
    let not_open = sale_in_window(&app, "2099-01-01T00:00:00Z", "2099-02-01T00:00:00Z").await;
    let closed = sale_in_window(&app, "2020-01-01T00:00:00Z", "2020-02-01T00:00:00Z").await;
    let open = sale_in_window(&app, "2020-01-01T00:00:00Z", "2099-02-01T00:00:00Z").await;
    let body = |category: i64| json!({"category_id": category, "quantity": 1});
    assert_problem(reserve_as(&app, "early", &body(not_open), None).await, 409, "sale_not_open").await;
    assert_problem(reserve_as(&app, "late", &body(closed), None).await, 409, "sale_closed").await;
    assert_eq!(reserve_as(&app, "on-time", &body(open), None).await.status(), 201);
    for category in [not_open, closed] {
        assert_eq!(levels(&app, category).await.available, 10);
        assert!(assert_consistent(&app, category).await.is_empty());
    }
    assert_consistent(&app, open).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_reserve_and_confirm_requests_change_nothing() {
    // Goal: bad quantities, ids, bodies, keys and tokens each get their problem+json, and nothing is held or charged.
    let app = TestApp::spawn().await;
    let (event, category) = sale(&app, 10, 10).await;
    let app_ref = &app;
    let reserve = |body: Value| async move { reserve_as(app_ref, "tester", &body, None).await };
    for (body, field) in [
        (json!({"category_id": category, "quantity": 0}), "quantity"),
        (json!({"category_id": category, "quantity": -1}), "quantity"),
        (json!({"category_id": category, "quantity": 10_000_001}), "quantity"),
        (json!({"category_id": category}), "quantity"),
        (json!({"quantity": 1}), "category_id"),
        (json!({"category_id": 0, "quantity": 1}), "category_id"),
        (json!({"category_id": category, "quantity": 1, "event_id": 0}), "event_id"),
        (json!({"category_id": category, "quantity": 1, "event_id": event + 1000}), "event_id"),
        (json!({"category_id": category, "quantity": 1, "colour": "red"}), "colour"),
    ] {
        let problem = assert_problem(reserve(body.clone()).await, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    assert_problem(reserve(json!({"category_id": category, "quantity": "2"})).await, 400, "invalid_json").await;
    assert_problem(reserve(json!({"category_id": category, "quantity": 1.5})).await, 400, "invalid_json").await;
    assert_problem(reserve(json!({"category_id": 999_999, "quantity": 1})).await, 404, "not_found").await;
    let long_key = "k".repeat(256);
    let body = json!({"category_id": category, "quantity": 1});
    let problem =
        assert_problem(reserve_as(&app, "tester", &body, Some(&long_key)).await, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "Idempotency-Key");
    assert_problem(app.post("/reserve", None, &body).await, 401, "unauthorized").await;
    let plain = app.client.post(app.url("/reserve")).bearer_auth(user_token("tester")).body("{}").send().await.unwrap();
    assert_problem(plain, 415, "unsupported_media_type").await;

    let id = id_of(&hold(&app, "tester", category, 1).await);
    let token = user_token("tester");
    let confirm = |body: Value| {
        let token = token.clone();
        async move { app_ref.post("/confirm", Some(&token), &body).await }
    };
    for (body, field) in [
        (json!({"reservation_id": "123", "payment": {"token": "tok_ok"}}), "reservation_id"),
        (json!({"reservation_id": id, "payment": {"token": ""}}), "payment.token"),
        (json!({"reservation_id": id}), "payment.token"),
        (json!({"reservation_id": id, "payment": {"token": "t", "cvv": "1"}}), "payment.cvv"),
    ] {
        let problem = assert_problem(confirm(body.clone()).await, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{body}");
    }
    assert_problem(confirm(json!({"reservation_id": id, "payment": {"token": 5}})).await, 400, "invalid_json").await;
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (9, 1, 0));
    assert_eq!(standing_charges(&app, &id).await, 0);
    assert_eq!(assert_consistent(&app, category).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn overload_and_rate_limits_answer_at_once_with_retry_after() {
    // Goal: past RESERVE_IN_FLIGHT_MAX reserve/confirm get 503 with Retry-After at once, and RATE_LIMIT_PER_IP_PER_SECOND gives 429.
    let app = TestApp::spawn_with(&["--reserve-in-flight-max", "1", "--payment-latency", "1s"]).await;
    let (_, category) = sale(&app, 10, 10).await;
    let id = id_of(&hold(&app, "slow", category, 1).await);
    let (paid, shed) = tokio::join!(confirm_as(&app, "slow", &id, "tok_ok", None), async {
        wait_until_paying(&app, &id).await;
        reserve_as(&app, "other", &json!({"category_id": category, "quantity": 1}), None).await
    });
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_problem(shed, 503, "unavailable").await;
    assert_eq!(paid.status(), 200);
    assert_consistent(&app, category).await;
    app.stop().await;

    let limited = TestApp::spawn_with(&["--rate-limit-per-ip-per-second", "2"]).await;
    let (_, category) = sale(&limited, 10, 10).await;
    let body = json!({"category_id": category, "quantity": 1});
    let mut statuses = Vec::new();
    for index in 0..4 {
        let response = reserve_as(&limited, &format!("ip-{index}"), &body, None).await;
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            assert_problem(response, 429, "rate_limited").await;
        }
    }
    assert_eq!(statuses.iter().filter(|status| **status == 201).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|status| **status == 429).count(), 2, "{statuses:?}");
    assert_eq!(assert_consistent(&limited, category).await.len(), 2);
    limited.stop().await;
}

#[tokio::test]
async fn reserve_is_shed_while_the_outbox_is_too_far_behind() {
    // Goal: past OUTBOX_BACKLOG_MAX unrelayed events reserve answers 503 and holds nothing; once the relay drains the stream, the same keyed request holds.
    let app = TestApp::spawn_with(&["--outbox-backlog-max", "2"]).await;
    let (_, category) = sale(&app, 10, 10).await;
    hold(&app, "early", category, 1).await;
    hold(&app, "early", category, 1).await;
    let body = json!({"category_id": category, "quantity": 1});
    let shed = reserve_as(&app, "late", &body, Some("late-1")).await;
    assert_eq!(shed.headers()["retry-after"], "1");
    assert_problem(shed, 503, "unavailable").await;
    assert_eq!(levels(&app, category).await.held, 2);
    assert_eq!(assert_consistent(&app, category).await.len(), 2);

    // Stand in for the relay: it deletes entries once the broker has them.
    let outbox = app.keys().outbox(stampede::ids::CategoryId::new(category).unwrap());
    let mut redis = app.redis.clone();
    let _: i64 = redis::cmd("XTRIM").arg(&outbox).arg("MAXLEN").arg(0).query_async(&mut redis).await.unwrap();
    assert_eq!(reserve_as(&app, "late", &body, Some("late-1")).await.status(), 201, "the 503 was not stored");
    assert_eq!(levels(&app, category).await.held, 3);
    let metrics = app.get("/metrics", None).await.text().await.unwrap();
    assert!(metrics.contains(r#"requests_shed_total{reason="outbox_backlog"}"#), "{metrics}");
    assert!(metrics.contains(r#"reservation_outcomes_total{operation="reserve",outcome="held"}"#));
    app.stop().await;
}

#[tokio::test]
async fn reservations_read_from_postgres_once_redis_forgot_them() {
    // Goal: after the Redis record is garbage-collected, GET /reservations/{id} answers the owner and admins from Postgres, and others still get 404.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let category = app.create_category(event, 5, 5).await;
    let id = stampede::ids::ReservationId::generate(stampede::ids::CategoryId::new(category).unwrap());
    let database = sqlx::PgPool::connect(&app.isolation.database_url).await.unwrap();
    sqlx::query(
        "INSERT INTO reservations (id, user_id, event_id, category_id, quantity, amount, currency, status, \
         created_at, expires_at, confirmed_at, payment_id, last_event_id, last_event_at) \
         VALUES ($1, 'archived-owner', $2, $3, 2, 2000, 'USD', 'confirmed', now() - interval '2 days', \
         now() - interval '2 days' + interval '10 minutes', now() - interval '2 days', 'pay_old', $1, now())",
    )
    .bind(id.uuid())
    .bind(event)
    .bind(category)
    .execute(&database)
    .await
    .unwrap();
    let path = format!("/reservations/{id}");
    let owner = app.get(&path, Some(&user_token("archived-owner"))).await;
    assert_eq!(owner.status(), 200);
    let body: Value = owner.json().await.unwrap();
    assert_eq!((body["status"].as_str(), body["payment_id"].as_str()), (Some("confirmed"), Some("pay_old")));
    assert_eq!(app.get(&path, Some(&admin_token())).await.status(), 200);
    assert_problem(app.get(&path, Some(&user_token("someone-else"))).await, 404, "not_found").await;
    app.stop().await;
}

#[tokio::test]
async fn hold_records_have_the_layout_rust_defines() {
    // Goal: the scripts in Redis use the hold-record layout of `reservation::RECORD_FIELDS`: the prelude's table is
    // that list, and the records reserve.lua and finish_payment.lua write have exactly those fields.
    use redis::AsyncCommands;
    use stampede::ids::CategoryId;
    use stampede::reservation::{RECORD_FIELDS, record_field as field, record_layout};
    let app = TestApp::spawn().await;
    let mut redis = app.redis.clone();
    assert_eq!(record_layout(&mut redis).await.unwrap(), RECORD_FIELDS);
    let (_, category) = sale(&app, 5, 2).await;
    let id = id_of(&hold(&app, "layout", category, 1).await);
    let key = app.keys().hold(CategoryId::new(category).unwrap(), uuid::Uuid::parse_str(&id).unwrap());
    let fields = |names: Vec<String>| -> Vec<String> {
        let mut names = names;
        names.sort();
        names
    };
    // A counted hold has no seats; the seated scripts write `seats` too (tests/integration/seating.rs).
    let mut unset = vec![field::CONFIRMED_AT_MS.to_owned(), field::PAYMENT_ID.to_owned(), field::SEATS.to_owned()];
    let expected = |unset: &[String]| {
        fields(RECORD_FIELDS.iter().map(|name| name.to_string()).filter(|name| !unset.contains(name)).collect())
    };
    let held: Vec<String> = redis.hkeys(&key).await.unwrap();
    assert_eq!(fields(held.clone()), expected(&unset));
    // Pins the stored names: a change strands every record written before it.
    assert_eq!(fields(held), ["a", "c", "e", "m", "q", "s", "tc", "tx", "u"]);
    assert_eq!(confirm_as(&app, "layout", &id, "tok_ok", None).await.status(), 200);
    unset = vec![field::SEATS.to_owned()];
    let confirmed: Vec<String> = redis.hkeys(&key).await.unwrap();
    let confirmed: Vec<String> = confirmed.into_iter().filter(|name| name != field::ATTEMPT).collect();
    assert_eq!(fields(confirmed), expected(&unset));
    app.stop().await;
}

#[tokio::test]
async fn records_an_earlier_version_wrote_still_work() {
    // Goal: holds whose records have the long field names of before issue #15 read, confirm, cancel and expire as
    // before, with the same event contents, and are in today's layout once a script touched them.
    use redis::AsyncCommands;
    use stampede::ids::{CategoryId, ReservationId};
    use stampede::outbox::EventType;
    let app = TestApp::spawn_with(&["--hold-ttl", "3s"]).await;
    let (_, category) = sale(&app, 10, 5).await;
    let mut bodies = Vec::new();
    for quantity in [2, 1, 1] {
        let body = hold(&app, "veteran", category, quantity).await;
        to_legacy_layout(&app, &id_of(&body)).await;
        bodies.push(body);
    }
    let ids: Vec<String> = bodies.iter().map(id_of).collect();
    let read_back: Value = read(&app, &user_token("veteran"), &ids[0]).await.json().await.unwrap();
    assert_eq!(read_back, bodies[0], "GET reads a legacy record");
    assert_eq!(confirm_as(&app, "veteran", &ids[0], "tok_ok", None).await.status(), 200);
    assert_eq!(cancel_as(&app, "veteran", &ids[1]).await.status(), 200);
    wait_until(Duration::from_secs(10), "the reaper expires the legacy hold", || async {
        let body: Value = read(&app, &user_token("veteran"), &ids[2]).await.json().await.unwrap();
        body["status"] == "expired"
    })
    .await;
    let history = assert_consistent(&app, category).await;
    assert_eq!(final_counts(&history), HashMap::from([("confirmed", 1), ("cancelled", 1), ("expired", 1)]));
    let category_id = CategoryId::new(category).unwrap();
    let events = outbox_events(&engine(&app, Duration::from_secs(1)), category_id).await;
    // What no transition changes: every event of a hold carries it as reserve answered it.
    let unchanged = |json: &Value| {
        ["event_id", "category_id", "user_id", "quantity", "amount", "currency", "created_at", "expires_at"]
            .map(|name| json[name].clone())
    };
    let unchanged_in =
        |event: &stampede::outbox::ReservationEvent| unchanged(&serde_json::to_value(&event.reservation).unwrap());
    for (body, id) in bodies.iter().zip(&ids) {
        let mine: Vec<_> = events.iter().filter(|event| event.reservation.id.to_string() == *id).collect();
        assert_eq!((mine.len(), mine[0].event_type), (2, EventType::Reserved));
        assert_eq!((unchanged_in(mine[0]), unchanged_in(mine[1])), (unchanged(body), unchanged(body)));
        let key = app.keys().hold(category_id, ReservationId::parse(id).unwrap().uuid());
        let mut redis = app.redis.clone();
        let names: Vec<String> = redis.hkeys(&key).await.unwrap();
        assert!(names.contains(&"s".to_owned()) && !names.contains(&"status".to_owned()), "{names:?}");
    }
    app.stop().await;
}
