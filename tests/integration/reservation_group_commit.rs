//! Group commit of counted reserves: one `reserve.lua` call deciding a batch gives every
//! request the outcome it gets one by one, and concurrent reserves through the API form
//! batches with exact counts. The seed is printed; `RESERVATION_SEED=<n>` replays a run.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use redis::AsyncCommands;
use serde_json::json;
use stampede::contract::Reservation;
use stampede::ids::{CategoryId, UserId};
use stampede::reservation::idempotency::IdempotencyKey;
use stampede::reservation::{EngineOptions, NewReservation, ReservationEngine, ReservationError};
use uuid::Uuid;

use crate::support::api_process::{read_address, spawn_api};
use crate::support::engine::outbox_events;
use crate::support::harness::{TestApp, metric_value, user_token};
use crate::support::reservation::{engine, gateway, levels, sale};

const QUOTA: i64 = 40;
const MAX_PER_USER: i64 = 4;
const USERS: u64 = 16;
const REQUESTS: usize = 120;
const ROUNDS: u64 = 3;

/// One request of the random mix; the category is filled in per run.
#[derive(Debug, Clone)]
struct Draw {
    user: String,
    quantity: i64,
    event: Option<i64>,
    key: Option<String>,
}

/// A seeded mix: several users, quantities up to past the cap, right, wrong and absent
/// event ids, and keys from a small pool, so keys repeat with other bodies; some keyed
/// requests are sent again as they were (a replay).
fn random_mix(seed: u64, event: i64) -> Vec<Draw> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut mix: Vec<Draw> = Vec::with_capacity(REQUESTS);
    while mix.len() < REQUESTS {
        let keyed: Vec<&Draw> = mix.iter().filter(|draw| draw.key.is_some()).collect();
        if !keyed.is_empty() && rng.u8(..8) == 0 {
            mix.push(keyed[rng.usize(..keyed.len())].clone());
            continue;
        }
        mix.push(Draw {
            user: format!("buyer-{}", rng.u64(..USERS)),
            quantity: rng.i64(1..=MAX_PER_USER + 1),
            event: match rng.u8(..10) {
                0 => Some(event + 1_000_000),
                1..=3 => Some(event),
                _ => None,
            },
            key: (rng.u8(..3) == 0).then(|| format!("key-{}", rng.u8(..4))),
        });
    }
    mix
}

/// The requests of a mix for `category`; `run` keeps each run's keys apart (key
/// bindings are per user and key, not per category).
fn requests(mix: &[Draw], category: i64, run: &str) -> Vec<(UserId, NewReservation, Option<IdempotencyKey>)> {
    mix.iter()
        .map(|draw| {
            let request = NewReservation::parse(Some(category), Some(draw.quantity), draw.event).unwrap();
            let key = draw.key.as_ref().map(|key| IdempotencyKey::parse(format!("{run}-{key}").as_bytes()).unwrap());
            (UserId::parse(&draw.user).unwrap(), request, key)
        })
        .collect()
}

/// Each outcome as comparable text: the code, or the hold's quantity, amount, user and
/// the position of the request that created it (a replay names the first one).
fn outcomes(results: &[Result<Reservation, ReservationError>]) -> Vec<String> {
    let mut created: HashMap<Uuid, usize> = HashMap::new();
    results
        .iter()
        .enumerate()
        .map(|(position, result)| match result {
            Ok(hold) => match *created.entry(hold.id).or_insert(position) {
                first if first == position => format!("held {} {} {}", hold.quantity, hold.amount, hold.user_id),
                first => format!("replayed #{first}"),
            },
            Err(error) => error.outcome().to_owned(),
        })
        .collect()
}

/// Everything a category's runs must agree on: levels, per-user counts and the outbox.
async fn end_state(app: &TestApp, engine: &ReservationEngine, category: i64) -> String {
    let stock = levels(app, category).await;
    let id = CategoryId::new(category).unwrap();
    let holders: HashMap<String, i64> = app.redis.clone().hgetall(app.keys().holders(id)).await.unwrap();
    let mut holders: Vec<(String, i64)> = holders.into_iter().collect();
    holders.sort();
    let events: Vec<String> = outbox_events(engine, id)
        .await
        .iter()
        .map(|event| {
            let hold = &event.reservation;
            format!("{:?} {} {} {}", event.event_type, hold.quantity, hold.amount, hold.user_id)
        })
        .collect();
    format!(
        "available {} held {} sold {}; holders {holders:?}; outbox {events:?}",
        stock.available, stock.held, stock.sold
    )
}

/// The test engine with an outbox backlog bound; every request runs its script (the
/// sold-out fast path would answer some without one).
fn engine_with_backlog(app: &TestApp, outbox_backlog_max: u64) -> ReservationEngine {
    // Holds outlive the test: on a loaded machine a 1 s hold could expire between the two
    // runs and make their end states differ for a reason the test is not about.
    let hold_ttl = Duration::from_secs(600);
    let options = EngineOptions { outbox_backlog_max, hold_ttl, ..*engine(app, Duration::from_secs(5)).options() };
    ReservationEngine::new(app.redis.clone(), app.keys(), Arc::new(gateway(app)), options)
        .with_sold_out_verdict_ttl(Duration::ZERO)
}

#[tokio::test]
async fn a_batch_decides_every_request_as_one_by_one_calls_do() {
    // Goal: random request mixes decided in batches of random sizes give the same outcomes, levels, per-user counts and outbox events as the same mix decided one call per request.
    let seed = crate::support::harness::seed("RESERVATION_SEED");
    let app = TestApp::spawn().await;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut largest_batch = 0;
    let mut seen = HashSet::new();
    for round in 0..ROUNDS {
        let (event, one_by_one) = sale(&app, QUOTA, MAX_PER_USER).await;
        let batched = app.create_category(event, QUOTA, MAX_PER_USER).await;
        let mix = random_mix(seed.wrapping_add(round), event);
        // The last round sheds on a small outbox backlog bound as well.
        let backlog_max = if round + 1 == ROUNDS { 12 } else { 1_000_000 };
        let engine = engine_with_backlog(&app, backlog_max);

        let mut alone = Vec::new();
        for (user, request, key) in requests(&mix, one_by_one, &format!("alone-{round}")) {
            alone.push(engine.reserve(&user, &request, key).await);
        }
        let mut together = Vec::new();
        let mut pending = requests(&mix, batched, &format!("together-{round}"));
        while !pending.is_empty() {
            let size = rng.usize(1..=pending.len().min(24));
            largest_batch = largest_batch.max(size);
            together.extend(engine.reserve_batch(pending.drain(..size).collect()).await);
        }

        assert_eq!(outcomes(&together), outcomes(&alone), "outcomes (seed {seed}, round {round})");
        let expected = end_state(&app, &engine, one_by_one).await;
        assert_eq!(end_state(&app, &engine, batched).await, expected, "end state (seed {seed}, round {round})");
        seen.extend(outcomes(&alone).into_iter().map(|outcome| outcome.split(' ').next().unwrap().to_owned()));
        println!("round {round}: {expected}");
    }
    assert!(largest_batch > 1, "some batch held more than one request (seed {seed})");
    let kinds = [
        "held",
        "replayed",
        "sold_out",
        "limit_exceeded",
        "event_mismatch",
        "idempotency_key_reused",
        "outbox_backlog",
    ];
    for kind in kinds {
        assert!(seen.contains(kind), "the mixes produced no {kind} (seed {seed}): {seen:?}");
    }
    app.stop().await;
}

#[tokio::test]
async fn concurrent_reserves_through_the_api_form_batches_with_exact_counts() {
    // Goal: 3Q concurrent one-ticket reserves of a Q-ticket category through the HTTP API go to Redis in batches of more than one and end with exactly Q held and 2Q sold_out, conserved.
    const TICKETS: i64 = 100;
    let app = TestApp::spawn().await;
    let (_, category) = sale(&app, TICKETS, 1).await;
    // A process of its own, so its /metrics counts only this test's script calls.
    let mut api = spawn_api(&app.isolation, true, &["--reserve-batch-max", "64"]);
    let (address, _) = read_address(&mut api, 0);
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().unwrap();
    let body = json!({"category_id": category, "quantity": 1});
    let reserves = (0..3 * TICKETS).map(|buyer| {
        let request =
            client.post(format!("http://{address}/reserve")).bearer_auth(user_token(&format!("crowd-{buyer}")));
        let request = request.json(&body);
        async move { request.send().await.expect("request sent").status().as_u16() }
    });
    let statuses = join_all(reserves).await;
    let page = client.get(format!("http://{address}/metrics")).send().await.unwrap().text().await.unwrap();
    api.kill().unwrap();
    api.wait().unwrap();

    let count = |status: u16| statuses.iter().filter(|answer| **answer == status).count();
    let stock = levels(&app, category).await;
    assert_eq!((count(201), count(409), stock.held, stock.available), (100, 200, TICKETS, 0), "{statuses:?}");
    let calls = metric_value(&page, "reserve_batch_requests_count");
    let batched = metric_value(&page, "reserve_batch_requests_sum");
    assert!(calls >= 1.0 && batched > calls, "some call carried more than one request: {batched} in {calls} calls");
    println!("{batched} requests in {calls} script calls");
    app.stop().await;
}
