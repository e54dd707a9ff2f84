//! Hardening of the event pipeline: a replaced broker log, produce requests over the
//! broker's size limit, poison records that Postgres will never accept, and concurrent
//! producers whose batches the broker makes readable out of order.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use stampede::outbox::EventType;
use uuid::Uuid;

use crate::support::harness::{Isolation, SECRET, TestApp, assert_problem, connect_redis, user_token};
use crate::support::pipeline::*;

/// How long any drain may take in these tests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_whose_sub_has_a_control_character_gets_401() {
    // Goal: a validly signed token whose `sub` holds a control character (a NUL that Postgres would never store)
    // is refused at the edge with 401 `unauthorized`, so no such user id ever reaches an event.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let category = app.create_category(event, 10, 2).await;
    for subject in ["bad\u{0}user", "tab\tuser", "line\nuser"] {
        let claims = json!({"sub": subject, "role": "user", "exp": chrono::Utc::now().timestamp() + 600});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let body = json!({"category_id": category, "quantity": 1});
        assert_problem(app.post("/reserve", Some(&token), &body).await, 401, "unauthorized").await;
    }
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.available, 10, "nothing was held");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_dead_lettered_and_the_records_around_them_applied() {
    // Goal: an undecodable record and an event whose user id holds a NUL (produced straight to the topic,
    // bypassing the API) are moved to the dead_letters table with their offset and error, while the good
    // records before, between and after them (some in the same record batch) are applied.
    let isolation = Isolation::new().await;
    let brokers = shared_brokers();
    let good = Synthetic::batch(61, 10);
    let mut poisoned = Synthetic::batch(61, 1).remove(0);
    poisoned.user = "bad\u{0}user".to_owned();
    let reserved = |reservation: &Synthetic| reservation.record(EventType::Reserved);
    let topic = &isolation.kafka_topic;
    produce_directly(&brokers, topic, 0, good[..4].iter().map(reserved).collect()).await;
    let mut undecodable = good[4].record(EventType::Reserved);
    undecodable.value = Some(b"\xff not an event".to_vec());
    let mixed = vec![reserved(&good[4]), undecodable, reserved(&poisoned), reserved(&good[5])];
    produce_directly(&brokers, topic, 0, mixed).await;
    produce_directly(&brokers, topic, 0, good[6..].iter().map(reserved).collect()).await;

    let worker = spawn_worker(&isolation, &brokers, &[]);
    let database = database(&isolation).await;
    wait_for_event_rows(&database, 10, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "both poison records are dead-lettered", || async {
        dead_letter_rows(&database).await.len() == 2
    })
    .await;
    let dead = dead_letter_rows(&database).await;
    assert_eq!((dead[0].0, dead[0].1), (0, 5), "the undecodable record, by position: {dead:?}");
    assert_eq!((dead[1].0, dead[1].1), (0, 6), "the NUL user id, by position: {dead:?}");
    assert!(dead.iter().all(|(_, _, error)| !error.is_empty()), "{dead:?}");
    let rows = reservation_rows(&database).await;
    assert_eq!(rows.len(), 10);
    assert!(good.iter().all(|reservation| rows[&reservation.id].0 == "held"));
    assert!(!rows.contains_key(&poisoned.id));
    let next_offset: i64 = sqlx::query_scalar("SELECT next_offset FROM consumer_offsets WHERE partition = 0")
        .fetch_one(&database)
        .await
        .unwrap();
    assert_eq!(next_offset, 12, "the partition moved past the poison");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_producers_to_one_partition_lose_no_event_at_the_worker() {
    // Goal: while several producers (as two api processes' relays do) write small batches to one partition and
    // the worker reads at the head of it, every event reaches Postgres exactly once and the offset ends right
    // after the last record. tansu counts a produce's offsets before it stores its records, so a fetch can show a
    // hole that fills a moment later; taking the records after it would skip the batch that fills it (the chaos
    // soak's missing `reserved` events). The hole is rare here (a guard, not a reproducer: it passed 8 of 8 runs
    // without the fix); the rule itself is pinned by the consumer's unit tests.
    let isolation = Isolation::new().await;
    let brokers = shared_brokers();
    let (producers, batches, batch_records): (i64, usize, usize) = (4, 500, 2);
    let worker = spawn_worker(&isolation, &brokers, &[("WORKER_PARTITIONS", "0")]);
    let reservations: Vec<Vec<Synthetic>> =
        (0..producers).map(|producer| Synthetic::batch(62 + producer, batches * batch_records)).collect();
    let tasks = reservations.iter().cloned().map(|reservations| {
        let (brokers, topic) = (brokers.clone(), isolation.kafka_topic.clone());
        tokio::spawn(async move {
            let deadline = Duration::from_secs(10);
            let client = stampede::kafka::connect(&brokers, "pipeline-test", deadline).await.unwrap();
            let partitions = TEST_PARTITIONS.parse().unwrap();
            stampede::kafka::ensure_topic(&client, &topic, partitions, deadline).await.unwrap();
            let partition = stampede::kafka::partition_client(&client, &topic, 0, deadline).await.unwrap();
            for batch in reservations.chunks(batch_records) {
                let records = batch.iter().map(|reservation| reservation.record(EventType::Reserved)).collect();
                partition.produce(records, rskafka::client::partition::Compression::NoCompression).await.unwrap();
            }
        })
    });
    for task in tasks.collect::<Vec<_>>() {
        task.await.unwrap();
    }
    let database = database(&isolation).await;
    let expected = i64::try_from(reservations.iter().map(Vec::len).sum::<usize>()).unwrap();
    wait_for_event_rows(&database, expected, DRAIN_TIMEOUT).await;
    let rows = reservation_rows(&database).await;
    assert!(reservations.iter().flatten().all(|reservation| rows[&reservation.id].0 == "held"));
    let next_offset: i64 = sqlx::query_scalar("SELECT next_offset FROM consumer_offsets WHERE partition = 0")
        .fetch_one(&database)
        .await
        .unwrap();
    assert_eq!(next_offset, expected, "the worker stopped right after the last record");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_within_the_client_timeout_loses_no_reserve() {
    // Goal: the broker (memory storage) is killed and restarted on the same port within 3 s while 2,000
    // reserves go on. The relay republishes them into a new log whose offsets restart at 0; the worker, paused
    // meanwhile (SIGSTOP, as a slow worker would be) so that its fetch meets the refilled log, which rskafka
    // reaches by reconnecting inside the call (no error surfaces), must notice the replaced log and start it
    // from the beginning, so every reserve that got 201 reaches Postgres.
    let broker = PrivateBroker::start().await;
    let isolation = Isolation::new().await;
    let app = broker.relaying_app(&isolation).await;
    let event = app.create_event().await;
    let category = app.create_category(event, 5_000, 10).await;
    let worker = spawn_worker(&isolation, &broker.brokers(), &[("KAFKA_TIMEOUT", "30s")]);
    let database = database(&isolation).await;
    let mut reserved = reserve_many(&app, category, "early", 40).await;
    wait_for_reservations(&database, &reserved).await;

    let port = broker.port;
    worker.signal("STOP");
    broker.process.kill().await;
    let restart = async {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        PrivateBroker::start_on(port).await
    };
    let (restarted, late) = tokio::join!(restart, reserve_many(&app, category, "late", 2_000));
    assert!(late.len() >= 1_900, "only {} of 2,000 reserves got 201", late.len());
    let keys = app.keys();
    wait_until(DRAIN_TIMEOUT, "the relay republished the outbox", || async {
        outbox_length(&app.redis, &keys, category).await == 0
    })
    .await;
    worker.signal("CONT");
    reserved.extend(late);
    wait_for_reservations(&database, &reserved).await;
    worker.terminate().await;
    app.stop().await;
    drop(restarted);
}

/// `count` reserves of one ticket by distinct users, 32 at a time; the ids of those that got 201.
async fn reserve_many(app: &TestApp, category: i64, users: &str, count: usize) -> Vec<Uuid> {
    let reserves = futures::stream::iter(0..count).map(|index| async move {
        let token = user_token(&format!("{users}-{index}"));
        let body = json!({"category_id": category, "quantity": 1});
        let response = app.post("/reserve", Some(&token), &body).await;
        if response.status() != StatusCode::CREATED {
            return None;
        }
        let body: Value = response.json().await.unwrap();
        Some(body["id"].as_str().unwrap().parse::<Uuid>().unwrap())
    });
    reserves.buffer_unordered(32).filter_map(std::future::ready).collect().await
}

/// Waits until every one of `reserved` has a reservation row; names the missing ones otherwise.
async fn wait_for_reservations(database: &sqlx::PgPool, reserved: &[Uuid]) {
    let started = std::time::Instant::now();
    loop {
        let rows = reservation_rows(database).await;
        let missing = reserved.iter().filter(|id| !rows.contains_key(id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            started.elapsed() < DRAIN_TIMEOUT,
            "{missing} of {} reserves that got 201 never reached postgres",
            reserved.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_many_categories_drains_in_produce_requests_under_the_byte_cap() {
    // Goal: while the broker is paused (SIGSTOP) 24 categories build a backlog; after SIGCONT the relay, capped at
    // 16 KiB per produce request, splits every round into requests under the cap (never one over it) and every
    // event reaches Postgres once.
    let broker = PrivateBroker::start().await;
    let isolation = Isolation::new().await;
    let redis = connect_redis().await;
    let keys = stampede::keyspace::Keyspace::new(isolation.redis_key_prefix.clone());
    let categories: Vec<i64> = (71..95).collect();
    for category in &categories {
        register_category(&redis, &keys, *category).await;
    }
    let brokers = broker.brokers();
    let relay_env = [
        ("RELAY_ENABLED", "true"),
        ("KAFKA_BROKERS", brokers.as_str()),
        ("KAFKA_PARTITIONS", TEST_PARTITIONS),
        ("RELAY_PRODUCE_BYTES_MAX", "16384"),
        ("RELAY_LEASE_TTL", "3s"),
        ("RELAY_PUBLISH_TIMEOUT", "1s"),
        ("RELAY_BACKOFF_MAX", "500ms"),
    ];
    let api = spawn_api(&isolation, &relay_env);
    let metrics_url = format!("{}/metrics", api.listening_url().await);
    let worker = spawn_worker(&isolation, &brokers, &[]);
    let database = database(&isolation).await;
    let warmup = Synthetic::batch(categories[0], 4);
    append_lifecycles(&redis, &keys, &warmup).await;
    let warmup_events: i64 = warmup.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&database, warmup_events, DRAIN_TIMEOUT).await;

    broker.process.signal("STOP");
    let mut all = warmup;
    for category in &categories {
        let reservations = Synthetic::batch(*category, 60);
        append_lifecycles(&redis, &keys, &reservations).await;
        all.extend(reservations);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    broker.process.signal("CONT");
    let expected: i64 = all.iter().map(|reservation| reservation.event_count() as i64).sum();
    wait_for_event_rows(&database, expected, DRAIN_TIMEOUT).await;
    assert_rows_match(&database, &all).await;

    let metrics = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
    let largest = metrics
        .lines()
        .find_map(|line| line.strip_prefix("relay_produce_bytes{quantile=\"1\"} "))
        .unwrap_or_else(|| panic!("no relay_produce_bytes in\n{metrics}"));
    let largest: f64 = largest.trim().parse().unwrap();
    assert!(largest > 0.0 && largest <= 16_384.0, "largest produce request {largest} bytes");
    worker.terminate().await;
    api.terminate().await;
}
