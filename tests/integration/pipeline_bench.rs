//! Measurements of the event pipeline (ignored by default; they print figures and
//! assert only completeness). Run against release binaries:
//!
//! ```text
//! cargo build --release --bin worker --bin api
//! WORKER_BIN=target/release/worker API_BIN=target/release/api \
//!   cargo test --test integration -- --ignored pipeline_bench --nocapture --test-threads 1
//! ```
//! `BENCH_EVENTS` (default 200,000) sizes the pre-filled topic; `BENCH_RATE` (reserves
//! per second, default 500), `BENCH_SECONDS` (default 20) and `BENCH_FETCH_WAIT` (the
//! worker's `WORKER_FETCH_WAIT`, default 50ms like the worker's) shape the lag run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use rskafka::client::partition::Compression;
use rskafka::record::Record;
use serde_json::{Value, json};
use stampede::contract::{Reservation, ReservationStatus};
use stampede::ids::ReservationId;
use stampede::kafka;
use stampede::outbox::{EventType, ReservationEvent, event_id};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::support::harness::{Isolation, admin_token, user_token};
use crate::support::pipeline::*;

/// When each reservation row was first seen.
type Sightings = Arc<Mutex<Vec<(Uuid, DateTime<Utc>)>>>;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|value| value.parse().ok()).unwrap_or(default)
}

fn event(reservation: Uuid, event_type: EventType, created: DateTime<Utc>) -> ReservationEvent {
    let confirmed = event_type == EventType::Confirmed;
    ReservationEvent {
        id: event_id(reservation, event_type),
        event_type,
        occurred_at: created,
        reservation: Reservation {
            id: reservation,
            status: if confirmed { ReservationStatus::Confirmed } else { ReservationStatus::Held },
            event_id: 1,
            category_id: 1,
            user_id: format!("user-{}", reservation.simple()),
            quantity: 2,
            amount: 2_000,
            currency: "USD".to_owned(),
            created_at: created,
            expires_at: created + chrono::Duration::minutes(10),
            confirmed_at: confirmed.then_some(created),
            payment_id: confirmed.then(|| format!("pay_{}", reservation.simple())),
            seats: None,
        },
    }
}

/// Produces `total` events (a `reserved` and a `confirmed` per reservation) the way
/// the relay does: keyed by reservation, LZ4 batches of up to 500 per partition.
async fn prefill(brokers: &str, topic: &str, total: usize) {
    let timeout = Duration::from_secs(10);
    let client = kafka::connect(brokers, "bench-prefill", timeout).await.unwrap();
    let partitions = kafka::ensure_topic(&client, topic, TEST_PARTITIONS.parse().unwrap(), timeout).await.unwrap();
    let mut clients = Vec::new();
    for partition in 0..partitions {
        clients.push(kafka::partition_client(&client, topic, partition, timeout).await.unwrap());
    }
    let category = stampede::ids::CategoryId::new(1).unwrap();
    let mut pending: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for _ in 0..total / 2 {
        let id = ReservationId::generate(category).uuid();
        let key = id.to_string().into_bytes();
        let partition = kafka::partition_for_key(&key, partitions);
        for event_type in [EventType::Reserved, EventType::Confirmed] {
            let value = serde_json::to_vec(&event(id, event_type, Utc::now())).unwrap();
            let record =
                Record { key: Some(key.clone()), value: Some(value), headers: BTreeMap::new(), timestamp: Utc::now() };
            let batch = pending.entry(partition).or_default();
            batch.push(record);
            if batch.len() == 500 {
                clients[usize::try_from(partition).unwrap()]
                    .produce(std::mem::take(batch), Compression::Lz4)
                    .await
                    .unwrap();
            }
        }
    }
    for (partition, batch) in pending {
        clients[usize::try_from(partition).unwrap()].produce(batch, Compression::Lz4).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; see the module docs"]
async fn pipeline_bench_worker_drains_a_prefilled_topic() {
    // Goal: measure the worker's throughput in events/s draining a topic pre-filled with BENCH_EVENTS events.
    let total = usize::try_from(setting("BENCH_EVENTS", 200_000)).unwrap();
    let isolation = Isolation::new().await;
    let prefill_started = Instant::now();
    prefill(&shared_brokers(), &isolation.kafka_topic, total).await;
    println!("prefilled {total} events in {:.1?}", prefill_started.elapsed());
    let database = database(&isolation).await;
    let started = Instant::now();
    let worker = spawn_worker(&isolation, &shared_brokers(), &[]);
    wait_until(Duration::from_secs(60), "the first rows appear", || async { event_rows(&database).await > 0 }).await;
    let first_rows = Instant::now();
    wait_for_event_rows(&database, total as i64, Duration::from_secs(900)).await;
    let (whole, draining) = (started.elapsed(), first_rows.elapsed());
    println!(
        "worker drained {total} events in {whole:.2?} ({:.0} events/s including start-up; {:.0} events/s from the first row)",
        total as f64 / whole.as_secs_f64(),
        total as f64 / draining.as_secs_f64()
    );
    worker.terminate().await;
}

/// Reads the api child's address from its log.
async fn api_address(api: &ChildProcess) -> String {
    let mut address = String::new();
    wait_until(Duration::from_secs(30), "the api listens", || {
        let log = api.log_text();
        let found = log.lines().find_map(|line| line.strip_prefix("listening on ").map(str::to_owned));
        if let Some(found) = found {
            address = found;
        }
        std::future::ready(!address.is_empty())
    })
    .await;
    address
}

/// Creates an event with one large category through the api; returns the category id.
async fn create_category(client: &reqwest::Client, base: &str) -> i64 {
    let body = json!({"name": "Bench", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z"});
    let created: Value = client
        .post(format!("{base}/events"))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let body = json!({"name": "GA", "price": 1000, "quota": 10_000_000, "max_per_user": 10});
    let path = format!("{base}/events/{}/ticket-category", created["id"]);
    let category: Value =
        client.post(path).bearer_auth(admin_token()).json(&body).send().await.unwrap().json().await.unwrap();
    category["id"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; see the module docs"]
async fn pipeline_bench_lag_from_reserve_to_postgres_row() {
    // Goal: measure the lag from a reserve (its created_at, Redis time) to its row being visible in Postgres, at
    // BENCH_RATE reserves/s for BENCH_SECONDS, through a separate api process (relay) and worker process.
    let (rate, seconds) = (setting("BENCH_RATE", 500), setting("BENCH_SECONDS", 20));
    let isolation = Isolation::new().await;
    let api = spawn_api(
        &isolation,
        &[("RELAY_ENABLED", "true"), ("KAFKA_PARTITIONS", TEST_PARTITIONS), ("RATE_LIMIT_PER_IP_PER_SECOND", "0")],
    );
    let base = api_address(&api).await;
    let fetch_wait = std::env::var("BENCH_FETCH_WAIT").unwrap_or_else(|_| "50ms".to_owned());
    let worker = spawn_worker(&isolation, &shared_brokers(), &[("WORKER_FETCH_WAIT", &fetch_wait)]);
    let client = reqwest::Client::new();
    let category = create_category(&client, &base).await;

    let database = database(&isolation).await;
    // Warm-up: the relay finds a new category within a second; measure the steady state.
    let body = json!({"category_id": category, "quantity": 1});
    let warm_up =
        client.post(format!("{base}/reserve")).bearer_auth(user_token("warm-up")).json(&body).send().await.unwrap();
    assert_eq!(warm_up.status(), StatusCode::CREATED);
    wait_until(Duration::from_secs(30), "the warm-up row appears", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM reservations").fetch_one(&database).await.unwrap_or(0) == 1
    })
    .await;
    let seen: Sightings = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let poller = tokio::spawn(poll_rows(database.clone(), seen.clone(), stop.clone()));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
    let mut requests = tokio::task::JoinSet::new();
    let sent = rate * seconds;
    for index in 0..sent {
        ticker.tick().await;
        let (client, base) = (client.clone(), base.clone());
        requests.spawn(async move {
            let body = json!({"category_id": category, "quantity": 1});
            let response = client
                .post(format!("{base}/reserve"))
                .bearer_auth(user_token(&format!("fan-{index}")))
                .json(&body)
                .send()
                .await
                .unwrap();
            response.status() == StatusCode::CREATED
        });
    }
    let mut held = 0;
    while let Some(done) = requests.join_next().await {
        held += u64::from(done.unwrap());
    }
    wait_until(Duration::from_secs(60), "every hold has its row", || async { seen.lock().await.len() as u64 >= held })
        .await;
    stop.cancel();
    poller.await.unwrap();
    let lags = lags(&database, &seen.lock().await).await;
    let percentile = |p: f64| {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rank in 0..=len")]
        let rank = (lags.len() as f64 * p).ceil() as usize;
        lags[rank.clamp(1, lags.len()) - 1]
    };
    println!(
        "{held} of {sent} reserves held at {rate}/s; reserve -> postgres row lag: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(0.50),
        percentile(0.90),
        percentile(0.99),
        lags[lags.len() - 1]
    );
    worker.terminate().await;
    api.terminate().await;
}

/// Notes when each reservation row first becomes visible (polled every 5 ms).
async fn poll_rows(database: sqlx::PgPool, seen: Sightings, stop: tokio_util::sync::CancellationToken) {
    let mut known = HashSet::new();
    let start = Utc::now();
    let mut since = start;
    while !stop.is_cancelled() {
        let rows: Vec<(Uuid, DateTime<Utc>)> =
            sqlx::query_as("SELECT id, updated_at FROM reservations WHERE updated_at >= $1")
                .bind(since)
                .fetch_all(&database)
                .await
                .unwrap_or_default();
        let observed = Utc::now();
        let mut fresh = seen.lock().await;
        for (id, updated_at) in rows {
            since = since.max(updated_at - chrono::Duration::seconds(2)).max(start);
            if known.insert(id) {
                fresh.push((id, observed));
            }
        }
        drop(fresh);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Milliseconds from each reservation's created_at to when its row was seen, sorted.
async fn lags(database: &sqlx::PgPool, seen: &[(Uuid, DateTime<Utc>)]) -> Vec<f64> {
    let created: Vec<(Uuid, DateTime<Utc>)> =
        sqlx::query_as("SELECT id, created_at FROM reservations WHERE user_id <> 'warm-up'")
            .fetch_all(database)
            .await
            .unwrap();
    let created: std::collections::HashMap<Uuid, DateTime<Utc>> = created.into_iter().collect();
    let mut lags: Vec<f64> = seen
        .iter()
        .filter_map(|(id, observed)| created.get(id).map(|created| (*observed - *created).as_seconds_f64() * 1000.0))
        .collect();
    lags.sort_by(f64::total_cmp);
    lags
}
