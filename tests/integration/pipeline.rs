//! The event pipeline: outbox relay -> Kafka (tansu) -> worker -> Postgres, through
//! crashes of the worker and the API, a broker outage and a Postgres outage; and
//! `worker reconcile`. Workers and (where a crash is the point) APIs run as separate
//! processes.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::outbox::EventType;
use uuid::Uuid;

use crate::support::harness::{Isolation, TestApp, assert_problem, connect_redis, metric_value, user_token};
use crate::support::pipeline::*;

/// How long any drain may take in these tests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_postgres_once_and_statuses_never_go_backwards() {
    // Goal: every outbox entry becomes one reservation_events row and the right reservation row, also when
    // copies of old events arrive after newer ones, and GET /reservations lists the caller's rows newest first.
    let isolation = Isolation::new().await;
    let app = TestApp::spawn_in(isolation.clone(), &relay_flags()).await;
    let keys = app.keys();
    for category in [11, 12] {
        register_category(&app.redis, &keys, category).await;
    }
    let mut reservations = Synthetic::batch(11, 120);
    reservations.extend(Synthetic::batch(12, 80));
    append_lifecycles(&app.redis, &keys, &reservations).await;
    // Redeliveries after the final event: a stale `reserved` and a second copy of the final event.
    let copies: Vec<(&Synthetic, EventType)> = reservations
        .iter()
        .filter_map(|reservation| reservation.outcome.map(|outcome| (reservation, outcome)))
        .take(30)
        .flat_map(|(reservation, outcome)| [(reservation, EventType::Reserved), (reservation, outcome)])
        .collect();
    append_events(&app.redis, &keys, &copies).await;
    // An entry no script would write (a bug): moved aside, never blocking the stream.
    let outbox = keys.outbox(stampede::ids::CategoryId::new(11).unwrap());
    let _: String = redis::cmd("XADD")
        .arg(&outbox)
        .arg("*")
        .arg("type")
        .arg("reserved")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    let worker = spawn_worker(&isolation, &shared_brokers(), &[]);
    let database = database(&isolation).await;
    let distinct: i64 = reservations.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&database, distinct, DRAIN_TIMEOUT).await;
    let published = distinct + copies.len() as i64;
    wait_until(DRAIN_TIMEOUT, "the worker consumed the copies too", || async {
        let consumed: Option<i64> = sqlx::query_scalar("SELECT sum(next_offset)::int8 FROM consumer_offsets")
            .fetch_one(&database)
            .await
            .unwrap();
        consumed.unwrap_or(0) >= published
    })
    .await;
    assert_rows_match(&database, &reservations).await;
    for category in [11, 12] {
        assert_eq!(outbox_length(&app.redis, &keys, category).await, 0, "published entries are deleted");
    }
    let dead: i64 = redis::cmd("XLEN").arg(format!("{outbox}:dead")).query_async(&mut app.redis.clone()).await.unwrap();
    assert_eq!(dead, 1, "the malformed entry is dead-lettered");

    assert_listing(&app, &reservations).await;

    worker.terminate().await;
    let redis = app.redis.clone();
    app.stop().await;
    for category in [11, 12] {
        let lease = keys.relay_lease(stampede::ids::CategoryId::new(category).unwrap());
        let held: i64 = redis::cmd("EXISTS").arg(lease).query_async(&mut redis.clone()).await.unwrap();
        assert_eq!(held, 0, "a stopped api releases its leases");
    }
}

/// GET /reservations: the caller's rows, newest first, bounded by `limit`.
async fn assert_listing(app: &TestApp, reservations: &[Synthetic]) {
    let mut mine: Vec<&Synthetic> = reservations.iter().filter(|reservation| reservation.user == "user-0").collect();
    mine.sort_by_key(|reservation| std::cmp::Reverse((reservation.created_at_ms, reservation.id)));
    let response = app.get("/reservations?limit=5", Some(&user_token("user-0"))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let listed: Vec<Uuid> = body["reservations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["id"].as_str().unwrap().parse().unwrap())
        .collect();
    let expected: Vec<Uuid> = mine.iter().take(5).map(|reservation| reservation.id).collect();
    assert_eq!(listed, expected, "the caller's newest five");
    let first = &body["reservations"][0];
    assert_eq!(first["user_id"], "user-0");
    assert_eq!(first["status"], mine[0].final_status());
    let default_page: Value = app.get("/reservations", Some(&user_token("user-0"))).await.json().await.unwrap();
    assert_eq!(default_page["reservations"].as_array().unwrap().len(), mine.len().min(20));
    assert_problem(app.get("/reservations?limit=0", Some(&user_token("user-0"))).await, 422, "validation_failed").await;
    assert_problem(app.get("/reservations", None).await, 401, "unauthorized").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_at_random_moments_loses_and_repeats_nothing() {
    // Goal: SIGKILL of the worker at random moments (5 times) during a sale of > 1,000 events (reserves, confirms,
    // cancels through the API) loses no event and applies none twice, because each batch commits with its offset.
    let small_batches = [("WORKER_FETCH_BYTES_MAX", "1024")];
    let Pipeline { isolation, app, mut worker } = Pipeline::start(&[], &small_batches).await;
    let event = app.create_event().await;
    let category = app.create_category(event, 2_000, 10).await;
    let mut reported = Vec::new();
    let mut rng = fastrand::Rng::with_seed(crate::support::harness::seed("PIPELINE_SEED"));
    for round in 0..10 {
        let sale = sale_round(&app, category, round);
        // Why: the kill's moment is the test's subject (random, from the printed seed), not a wait.
        let kill = tokio::time::sleep(Duration::from_millis(rng.u64(20..250)));
        let (sold, ()) = tokio::join!(sale, kill);
        reported.extend(sold);
        if round % 2 == 1 {
            worker.kill().await;
            worker = spawn_worker(&isolation, &shared_brokers(), &small_batches);
        }
    }
    let events: usize = reported.iter().map(|reservation| 1 + usize::from(reservation.status != "held")).sum();
    assert!(events >= 1_000, "{events} events");
    let database = database(&isolation).await;
    wait_for_agreement(&database, &reported).await;
    wait_for_event_rows(&database, events as i64, DRAIN_TIMEOUT).await;
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.sold, reported_tickets(&reported, category, "confirmed"));
    assert_eq!(levels.held, reported_tickets(&reported, category, "held"));
    worker.terminate().await;
    app.stop().await;
}

/// One round of a sale: 72 users reserve concurrently, then half confirm and a quarter cancel.
async fn sale_round(app: &TestApp, category: i64, round: usize) -> Vec<Reported> {
    let reserves = (0..72).map(|index| async move {
        let user = format!("fan-{round}-{index}");
        reserve_reported(app, &user, category, 1).await
    });
    let mut reported = futures::future::join_all(reserves).await;
    let settle = reported.iter_mut().enumerate().map(|(index, reservation)| async move {
        match index % 4 {
            0 | 2 => {
                assert_eq!(confirm(app, reservation, "tok_ok").await.status(), StatusCode::OK);
                reservation.status = "confirmed";
            }
            1 => {
                assert_eq!(cancel(app, reservation).await.status(), StatusCode::OK);
                reservation.status = "cancelled";
            }
            _ => {}
        }
    });
    futures::future::join_all(settle).await;
    reported
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_killed_mid_relay_loses_no_outbox_entry() {
    // Goal: SIGKILL of the API process that relays a stream leaves the unpublished entries in Redis; another API
    // process takes the lease after it lapses and publishes them, so every event reaches Postgres.
    let isolation = Isolation::new().await;
    let redis = connect_redis().await;
    let keys = stampede::keyspace::Keyspace::new(isolation.redis_key_prefix.clone());
    register_category(&redis, &keys, 31).await;
    let reservations = Synthetic::batch(31, 1_500);
    append_lifecycles(&redis, &keys, &reservations).await;
    let initial = outbox_length(&redis, &keys, 31).await;
    let relay_env = [
        ("RELAY_ENABLED", "true"),
        ("KAFKA_PARTITIONS", TEST_PARTITIONS),
        ("RELAY_BATCH_RECORDS_MAX", "20"),
        ("RELAY_LEASE_TTL", "2s"),
        ("RELAY_PUBLISH_TIMEOUT", "500ms"),
        ("RELAY_BACKOFF_MAX", "500ms"),
    ];
    let api = spawn_api(&isolation, &relay_env);
    wait_until(DRAIN_TIMEOUT, "the first api process relays", || async {
        outbox_length(&redis, &keys, 31).await < initial
    })
    .await;
    api.kill().await;
    let left = outbox_length(&redis, &keys, 31).await;
    assert!(left > 0, "killed mid-relay: entries remain ({left} of {initial})");

    let app = TestApp::spawn_in(isolation.clone(), &relay_flags()).await;
    let worker = spawn_worker(&isolation, &shared_brokers(), &[]);
    let database = database(&isolation).await;
    wait_for_event_rows(&database, initial, DRAIN_TIMEOUT).await;
    assert_rows_match(&database, &reservations).await;
    assert_eq!(outbox_length(&redis, &keys, 31).await, 0);
    worker.terminate().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_delays_events_but_loses_none_and_keeps_their_order() {
    // Goal: while the broker is unreachable (SIGSTOP) the outbox grows and Postgres waits; after SIGCONT the
    // backlog drains with each reservation's events in order. Then the broker dies for real (SIGKILL; memory
    // storage, so the topic is gone) and a new one starts on the same port: the relay recreates the topic,
    // the worker notices the replaced log, and the events written meanwhile still arrive.
    let broker = PrivateBroker::start().await;
    let isolation = Isolation::new().await;
    let app = broker.relaying_app(&isolation).await;
    let keys = app.keys();
    register_category(&app.redis, &keys, 41).await;
    let worker = spawn_worker(&isolation, &broker.brokers(), &[]);
    let database = database(&isolation).await;

    let first = Synthetic::batch(41, 100);
    let reserved: Vec<_> = first.iter().map(|reservation| (reservation, EventType::Reserved)).collect();
    append_events(&app.redis, &keys, &reserved).await;
    wait_for_event_rows(&database, 100, DRAIN_TIMEOUT).await;

    broker.process.signal("STOP");
    let errors_before = relay_publish_errors(&app).await;
    let finals: Vec<_> =
        first.iter().filter_map(|reservation| reservation.outcome.map(|outcome| (reservation, outcome))).collect();
    append_events(&app.redis, &keys, &finals).await;
    let second = Synthetic::batch(41, 100);
    append_lifecycles(&app.redis, &keys, &second).await;
    // Only once the relay has tried the stopped broker and failed do the checks below
    // say that nothing got through.
    wait_for_publish_error(&app, errors_before).await;
    assert!(outbox_length(&app.redis, &keys, 41).await > 0, "the outbox holds the events while the broker is down");
    assert_eq!(event_rows(&database).await, 100, "nothing new reaches postgres meanwhile");
    broker.process.signal("CONT");
    let mut all = first.clone();
    all.extend(second);
    let expected: i64 = all.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&database, expected, DRAIN_TIMEOUT).await;
    assert_rows_match(&database, &all).await;
    assert_order_per_reservation(&broker.brokers(), &isolation.kafka_topic).await;

    let port = broker.port;
    broker.process.kill().await;
    let errors_before = relay_publish_errors(&app).await;
    let third = Synthetic::batch(41, 60);
    append_lifecycles(&app.redis, &keys, &third).await;
    wait_for_publish_error(&app, errors_before).await;
    assert!(outbox_length(&app.redis, &keys, 41).await > 0);
    let restarted = PrivateBroker::start_on(port).await;
    all.extend(third);
    let expected: i64 = all.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&database, expected, DRAIN_TIMEOUT).await;
    assert_rows_match(&database, &all).await;

    worker.terminate().await;
    app.stop().await;
    drop(restarted);
}

/// `relay_publish_errors_total` of this process (every in-process relay counts into it).
async fn relay_publish_errors(app: &TestApp) -> f64 {
    metric_value(&app.get("/metrics", None).await.text().await.unwrap(), "relay_publish_errors_total")
}

/// Waits until a relay of this process has failed a publish since `before` errors.
async fn wait_for_publish_error(app: &TestApp, before: f64) {
    wait_until(DRAIN_TIMEOUT, "the relay fails to publish to the unavailable broker", || async {
        relay_publish_errors(app).await > before
    })
    .await;
}

/// Reads the whole topic back and checks that each reservation's records sit in one
/// partition with its `reserved` event before its final event.
async fn assert_order_per_reservation(brokers: &str, topic: &str) {
    let client = stampede::kafka::connect(brokers, "pipeline-test", Duration::from_secs(5)).await.unwrap();
    let mut seen: HashMap<Uuid, (i32, Vec<EventType>)> = HashMap::new();
    for partition in 0..TEST_PARTITIONS.parse::<i32>().unwrap() {
        let partition_client =
            stampede::kafka::partition_client(&client, topic, partition, Duration::from_secs(5)).await.unwrap();
        let mut offset = 0;
        loop {
            let (records, high_watermark) = partition_client.fetch_records(offset, 1..1_000_000, 100).await.unwrap();
            let from = offset;
            for record in records.iter().filter(|record| record.offset >= from) {
                let event: stampede::outbox::ReservationEvent =
                    serde_json::from_slice(record.record.value.as_deref().unwrap()).unwrap();
                let entry = seen.entry(event.reservation.id).or_insert((partition, Vec::new()));
                assert_eq!(entry.0, partition, "all events of a reservation in one partition");
                entry.1.push(event.event_type);
                offset = record.offset + 1;
            }
            if offset >= high_watermark {
                break;
            }
        }
    }
    for (reservation, (_, types)) in seen {
        let first_final = types.iter().position(|kind| *kind != EventType::Reserved);
        let first_reserved = types.iter().position(|kind| *kind == EventType::Reserved);
        if let Some(first_final) = first_final {
            assert!(first_reserved.is_some_and(|first| first < first_final), "{reservation}: {types:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_catches_up_after_postgres_was_unavailable() {
    // Goal: while the worker's database refuses connections the relay keeps publishing and the worker retries
    // with backoff; once the database is back it applies everything exactly once.
    let Pipeline { isolation, app, worker } = Pipeline::start(&[], &[]).await;
    let keys = app.keys();
    register_category(&app.redis, &keys, 51).await;
    let first = Synthetic::batch(51, 100);
    append_lifecycles(&app.redis, &keys, &first).await;
    let pool = database(&isolation).await;
    let expected_first: i64 = first.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&pool, expected_first, DRAIN_TIMEOUT).await;
    pool.close().await;

    let name = isolation.database_url.rsplit('/').next().unwrap().to_owned();
    let admin =
        sqlx::PgPool::connect(&format!("{}/postgres", crate::support::harness::postgres_server_url())).await.unwrap();
    let set_connections = |allow: bool| format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allow}");
    sqlx::query(sqlx::AssertSqlSafe(set_connections(false))).execute(&admin).await.unwrap();
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&name)
    .execute(&admin)
    .await
    .unwrap();
    let second = Synthetic::batch(51, 100);
    append_lifecycles(&app.redis, &keys, &second).await;
    wait_until(DRAIN_TIMEOUT, "the relay publishes without postgres", || async {
        outbox_length(&app.redis, &keys, 51).await == 0
    })
    .await;
    wait_until(DRAIN_TIMEOUT, "the worker fails to apply a batch and retries", || async {
        worker.log_text().contains("cannot apply batch; retrying")
    })
    .await;
    sqlx::query(sqlx::AssertSqlSafe(set_connections(true))).execute(&admin).await.unwrap();
    admin.close().await;

    let pool = database(&isolation).await;
    let mut all = first;
    all.extend(second);
    let expected: i64 = all.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&pool, expected, DRAIN_TIMEOUT).await;
    assert_rows_match(&pool, &all).await;
    assert!(worker.log_text().contains("retrying"), "the worker retried:\n{}", worker.log_text());
    worker.terminate().await;
    app.stop().await;
}

/// A reservation as the API reported it.
struct Reported {
    id: String,
    token: String,
    category: i64,
    quantity: i64,
    status: &'static str,
}

async fn reserve(app: &TestApp, user: &str, category: i64, quantity: i64) -> reqwest::Response {
    app.post("/reserve", Some(&user_token(user)), &json!({"category_id": category, "quantity": quantity})).await
}

async fn confirm(app: &TestApp, reservation: &Reported, payment_token: &str) -> reqwest::Response {
    let body = json!({"reservation_id": reservation.id, "payment": {"token": payment_token}});
    app.post("/confirm", Some(&reservation.token), &body).await
}

async fn cancel(app: &TestApp, reservation: &Reported) -> reqwest::Response {
    let path = format!("/reservations/{}/cancel", reservation.id);
    app.client.post(app.url(&path)).bearer_auth(&reservation.token).send().await.unwrap()
}

async fn reserve_reported(app: &TestApp, user: &str, category: i64, quantity: i64) -> Reported {
    let response = reserve(app, user, category, quantity).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    Reported {
        id: body["id"].as_str().unwrap().to_owned(),
        token: user_token(user),
        category,
        quantity,
        status: "held",
    }
}

/// Waits until Postgres has a row for each reservation with the API's status and quantity.
async fn wait_for_agreement(database: &sqlx::PgPool, reported: &[Reported]) {
    wait_until(DRAIN_TIMEOUT, "postgres agrees with the api about every reservation", || async {
        let rows = reservation_rows(database).await;
        rows.len() == reported.len()
            && reported.iter().all(|reservation| {
                let id: Uuid = reservation.id.parse().unwrap();
                rows.get(&id)
                    .is_some_and(|(status, quantity)| status == reservation.status && *quantity == reservation.quantity)
            })
    })
    .await;
}

/// Ticket totals of reservations in `status` per category, from what the API reported.
fn reported_tickets(reported: &[Reported], category: i64, status: &str) -> i64 {
    reported
        .iter()
        .filter(|reservation| reservation.category == category && reservation.status == status)
        .map(|reservation| reservation.quantity)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_ends_with_postgres_agreeing_with_the_api_and_no_drift() {
    // Goal: after a sale with reserves, confirms, declined payments, cancels and expiries, every reservation the
    // API reported exists once in Postgres with the API's status and quantity, the sums per category match Redis,
    // and `worker reconcile` reports zero drift.
    // Each hold is confirmed or cancelled right after its reserve, so only one request's time
    // (not the whole sale's, which grows on a loaded machine) runs against the hold's TTL.
    let Pipeline { isolation, app, worker } = Pipeline::start(&["--hold-ttl", "5s"], &[]).await;
    let event = app.create_event().await;
    let categories = [app.create_category(event, 300, 10).await, app.create_category(event, 200, 10).await];
    let mut reported = Vec::new();
    for index in 0..80 {
        let user = format!("buyer-{}", index % 20);
        let mut made = reserve_reported(&app, &user, categories[(index / 2) % 2], 1 + (index % 3) as i64).await;
        let reservation = &mut made;
        match index % 4 {
            0 => {
                assert_eq!(confirm(&app, reservation, "tok_ok").await.status(), StatusCode::OK);
                reservation.status = "confirmed";
            }
            1 => {
                assert_eq!(cancel(&app, reservation).await.status(), StatusCode::OK);
                reservation.status = "cancelled";
            }
            2 => assert_eq!(confirm(&app, reservation, "tok_decline").await.status(), StatusCode::PAYMENT_REQUIRED),
            _ => {}
        }
        reported.push(made);
    }
    for reservation in reported.iter_mut().filter(|reservation| reservation.status == "held") {
        let path = format!("/reservations/{}", reservation.id);
        wait_until(Duration::from_secs(30), "the hold expires", || async {
            let body: Value = app.get(&path, Some(&reservation.token)).await.json().await.unwrap();
            body["status"] == "expired"
        })
        .await;
        reservation.status = "expired";
    }
    let database = database(&isolation).await;
    wait_for_agreement(&database, &reported).await;
    for category in categories {
        let levels = app.assert_conserved(category).await;
        assert_eq!(levels.sold, reported_tickets(&reported, category, "confirmed"));
        assert_eq!(levels.held, 0);
    }
    let (code, output) = reconcile(&isolation, &shared_brokers(), false).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("pipeline: drained"), "{output}");
    let statuses: Vec<&str> = output.lines().skip(2).filter_map(|line| line.split_whitespace().last()).collect();
    assert_eq!(statuses, ["ok", "ok"], "{output}");
    worker.terminate().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_a_flushed_category_without_overselling() {
    // Goal: after every Redis key of a category is flushed mid-sale, `worker reconcile --repair` rebuilds its stock
    // from Postgres (sold = confirmed, held = active holds, available = the rest), restored holds can still be
    // confirmed, confirmed ones replay, and selling out afterwards never passes the quota.
    let Pipeline { isolation, app, worker } = Pipeline::start(&[], &[]).await;
    let event = app.create_event().await;
    let category = app.create_category(event, 30, 4).await;
    let mut reported = Vec::new();
    for index in 0..8 {
        reported.push(reserve_reported(&app, &format!("early-{index}"), category, 2).await);
    }
    for reservation in reported.iter_mut().take(3) {
        assert_eq!(confirm(&app, reservation, "tok_ok").await.status(), StatusCode::OK);
        reservation.status = "confirmed";
    }
    assert_eq!(cancel(&app, &reported[3]).await.status(), StatusCode::OK);
    reported[3].status = "cancelled";
    let database = database(&isolation).await;
    wait_for_agreement(&database, &reported).await;

    flush_category(&app, category).await;
    assert_problem(reserve(&app, "late-0", category, 1).await, 503, "unavailable").await;
    let (code, output) = reconcile(&isolation, &shared_brokers(), false).await;
    assert_eq!(code, 1, "{output}");
    assert!(output.contains("missing"), "{output}");
    let (code, output) = reconcile(&isolation, &shared_brokers(), true).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("repaired"), "{output}");

    let levels = app.assert_conserved(category).await;
    let (sold, held) =
        (reported_tickets(&reported, category, "confirmed"), reported_tickets(&reported, category, "held"));
    assert_eq!((levels.sold, levels.held, levels.available), (sold, held, 30 - sold - held));
    assert_eq!(confirm(&app, &reported[0], "tok_ok").await.status(), StatusCode::OK, "a confirmed one replays");
    assert_eq!(confirm(&app, &reported[4], "tok_ok").await.status(), StatusCode::OK, "a restored hold confirms");
    reported[4].status = "confirmed";
    let limit = reserve(&app, "early-5", category, 3).await;
    assert_problem(limit, 409, "limit_exceeded").await;

    let mut buyer = 0;
    loop {
        let response = reserve(&app, &format!("late-{buyer}"), category, 1).await;
        buyer += 1;
        if response.status() == StatusCode::CONFLICT {
            assert_problem(response, 409, "sold_out").await;
            break;
        }
        assert_eq!(response.status(), StatusCode::CREATED);
        assert!(buyer <= 30, "sold more than the quota");
    }
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.available, 0);
    assert_eq!(buyer - 1, 30 - sold - held, "exactly the tickets repair made available were sold");
    let (code, output) = reconcile(&isolation, &shared_brokers(), false).await;
    assert_eq!(code, 0, "{output}");
    worker.terminate().await;
    app.stop().await;
}

/// 40 single-ticket holds, alternately through `first` and `second`, over `categories`.
async fn reserve_from_both(first: &TestApp, second: &TestApp, categories: &[i64], label: &str) -> Vec<Reported> {
    let mut reported = Vec::new();
    for index in 0..40 {
        let app = if index % 2 == 0 { first } else { second };
        let user = format!("{label}-{}", index % 10);
        reported.push(reserve_reported(app, &user, categories[index % categories.len()], 1).await);
    }
    reported
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_apis_and_two_workers_share_a_sale_and_a_dead_workers_partitions_are_taken_over() {
    // Goal: two api processes and two workers over disjoint partitions deliver every hold to Postgres once; after one
    // worker is SIGKILLed, a worker started with its partitions resumes from the stored offsets and nothing is lost or
    // applied twice, and reconcile reports no drift.
    let isolation = Isolation::new().await;
    let first = TestApp::spawn_in(isolation.clone(), &relay_flags()).await;
    let second = TestApp::spawn_in(isolation.clone(), &relay_flags()).await;
    let brokers = shared_brokers();
    let worker_a = spawn_worker(&isolation, &brokers, &[("WORKER_PARTITIONS", "0,2")]);
    let worker_b = spawn_worker(&isolation, &brokers, &[("WORKER_PARTITIONS", "1,3")]);
    let event = first.create_event().await;
    let mut categories = Vec::new();
    for _ in 0..4 {
        categories.push(first.create_category(event, 200, 40).await);
    }
    let database = database(&isolation).await;
    let mut reported = reserve_from_both(&first, &second, &categories, "early").await;
    wait_for_agreement(&database, &reported).await;
    worker_a.kill().await;
    reported.extend(reserve_from_both(&first, &second, &categories, "late").await);
    // Worker A's partitions now wait in the topic; its replacement resumes from their stored offsets.
    let worker_c = spawn_worker(&isolation, &brokers, &[("WORKER_PARTITIONS", "0,2")]);
    wait_for_agreement(&database, &reported).await;
    let offsets: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, next_offset FROM consumer_offsets ORDER BY partition")
            .fetch_all(&database)
            .await
            .unwrap();
    assert_eq!(offsets.iter().filter(|(_, next)| *next > 0).count(), 4, "every partition carried holds: {offsets:?}");
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM reservation_events").fetch_one(&database).await.unwrap();
    assert_eq!(events, 80, "each `reserved` event applied once");
    for &category in &categories {
        assert_eq!(first.assert_conserved(category).await.held, reported_tickets(&reported, category, "held"));
    }
    let (code, output) = reconcile(&isolation, &brokers, false).await;
    assert_eq!(code, 0, "{output}");
    worker_c.terminate().await;
    worker_b.terminate().await;
    second.stop().await;
    first.stop().await;
}
