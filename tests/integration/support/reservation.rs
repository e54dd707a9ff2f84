//! Helpers of the reservation tests: requests, the engine and gateway on the test's
//! keyspace, and the end-of-test check that stock, statuses, per-user counts and the
//! outbox all tell the same story.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use reqwest::Response;
use serde_json::{Value, json};
use stampede::contract::ReservationStatus;
use stampede::ids::{CategoryId, ReservationId};
use stampede::outbox::{self, EventType, ReservationEvent};
use stampede::payment::SimulatedGateway;
use stampede::reservation::engine::FINAL_RECORD_TTL;
use stampede::reservation::{
    EngineOptions, LEGACY_RECORD_FIELDS, PAYMENT_FIELDS, RECORD_FIELDS, ReservationEngine, record_field as field,
};
use stampede::stock::Levels;
use uuid::Uuid;

use crate::support::engine::outbox_events;
use crate::support::harness::{TestApp, admin_token, unique_name, user_token, wait_until};

/// Price of every test category (`TestApp::create_category`).
pub const PRICE: i64 = 1000;

/// A category on sale now, in its own event.
pub async fn sale(app: &TestApp, quota: i64, max_per_user: i64) -> (i64, i64) {
    let event = app.create_event().await;
    let category = app.create_category(event, quota, max_per_user).await;
    (event, category)
}

/// An event with a sale window, and one category in it.
pub async fn sale_in_window(app: &TestApp, starts_at: &str, ends_at: &str) -> i64 {
    let body = json!({"name": "Windowed", "venue": "Hall", "starts_at": "2030-01-01T19:00:00Z",
        "sale_starts_at": starts_at, "sale_ends_at": ends_at});
    let response = app.post("/events", Some(&admin_token()), &body).await;
    assert_eq!(response.status(), 201);
    let event = response.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    app.create_category(event, 10, 5).await
}

/// `POST /reserve` as `user`, optionally with an `Idempotency-Key`.
pub async fn reserve_as(app: &TestApp, user: &str, body: &Value, key: Option<&str>) -> Response {
    let mut request = app.client.post(app.url("/reserve")).bearer_auth(user_token(user)).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request sent")
}

/// Reserves `quantity` tickets and returns the 201 body.
pub async fn hold(app: &TestApp, user: &str, category: i64, quantity: i64) -> Value {
    let response = reserve_as(app, user, &json!({"category_id": category, "quantity": quantity}), None).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.unwrap()
}

/// `POST /confirm` as `user` with `token`, optionally with an `Idempotency-Key`.
pub async fn confirm_as(app: &TestApp, user: &str, reservation: &str, token: &str, key: Option<&str>) -> Response {
    let body = json!({"reservation_id": reservation, "payment": {"token": token}});
    let mut request = app.client.post(app.url("/confirm")).bearer_auth(user_token(user)).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    request.send().await.expect("request sent")
}

/// `POST /reservations/{id}/cancel` as `user`.
pub async fn cancel_as(app: &TestApp, user: &str, reservation: &str) -> Response {
    let request =
        app.client.post(app.url(&format!("/reservations/{reservation}/cancel"))).bearer_auth(user_token(user));
    request.send().await.expect("request sent")
}

/// `GET /reservations/{id}` with `token`.
pub async fn read(app: &TestApp, token: &str, reservation: &str) -> Response {
    app.get(&format!("/reservations/{reservation}"), Some(token)).await
}

/// The id of a Reservation body.
pub fn id_of(body: &Value) -> String {
    body["id"].as_str().expect("reservations have an id").to_owned()
}

/// The engine on the app's keyspace (for library-level steps and outbox reads).
pub fn engine(app: &TestApp, payment_window: Duration) -> ReservationEngine {
    let options = EngineOptions {
        hold_ttl: Duration::from_secs(1),
        outbox_backlog_max: 1_000_000,
        payment_timeout: Duration::from_secs(5),
        payment_window,
        record_ttl: FINAL_RECORD_TTL,
        reserve_batch_max: 64,
    };
    ReservationEngine::new(app.redis.clone(), app.keys(), Arc::new(gateway(app)), options)
}

/// Waits until reservation `id` is `paying`: a confirm has begun and waits for the gateway.
pub async fn wait_until_paying(app: &TestApp, id: &str) {
    let id = ReservationId::parse(id).expect("a reservation id");
    let key = app.keys().hold(id.category(), id.uuid());
    wait_until(Duration::from_secs(10), "the confirm is paying", || async {
        let status: Option<String> = app.redis.clone().hget(&key, field::STATUS).await.unwrap();
        status.as_deref() == Some("paying")
    })
    .await;
}

/// The simulated gateway's ledger on the app's keyspace.
pub fn gateway(app: &TestApp) -> SimulatedGateway {
    SimulatedGateway::new(app.redis.clone(), &app.keys(), Duration::ZERO)
}

/// Charges that stand (not voided or refunded) for a reservation.
pub async fn standing_charges(app: &TestApp, reservation: &str) -> usize {
    let charges = gateway(app).charges_of(reservation).await.unwrap();
    charges.iter().filter(|entry| entry.state == "charged").count()
}

/// Current stock levels (conservation asserted).
pub async fn levels(app: &TestApp, category: i64) -> Levels {
    app.assert_conserved(category).await
}

/// Event types per reservation, as the outbox holds them.
pub type History = BTreeMap<Uuid, Vec<EventType>>;

struct Snapshot {
    levels: Levels,
    events: Vec<ReservationEvent>,
    statuses: HashMap<Uuid, (ReservationStatus, String, i64)>,
    holders: HashMap<String, i64>,
}

async fn snapshot(app: &TestApp, category: i64) -> Snapshot {
    let engine = engine(app, Duration::from_secs(1));
    let category_id = CategoryId::new(category).unwrap();
    let events = outbox_events(&engine, category_id).await;
    let mut statuses = HashMap::new();
    for id in events.iter().map(|event| event.reservation.id).collect::<HashSet<_>>() {
        let reservation = engine.get(ReservationId::from_uuid(id).unwrap()).await.unwrap().expect("record exists");
        statuses.insert(id, (reservation.status, reservation.user_id, reservation.quantity));
    }
    let mut redis = app.redis.clone();
    let holders: HashMap<String, i64> = redis.hgetall(app.keys().holders(category_id)).await.unwrap();
    Snapshot { levels: levels(app, category).await, events, statuses, holders }
}

fn status_of(event_type: EventType) -> ReservationStatus {
    match event_type {
        EventType::Reserved => ReservationStatus::Held,
        EventType::Confirmed => ReservationStatus::Confirmed,
        EventType::Cancelled => ReservationStatus::Cancelled,
        EventType::Expired => ReservationStatus::Expired,
    }
}

/// Checks one snapshot; `Err` says what disagrees.
fn check(snapshot: &Snapshot) -> Result<History, String> {
    let mut history = History::new();
    let mut seen = HashSet::new();
    let mut last: HashMap<Uuid, &ReservationEvent> = HashMap::new();
    for event in &snapshot.events {
        let id = event.reservation.id;
        if !seen.insert(event.id) || event.id != outbox::event_id(id, event.event_type) {
            return Err(format!("event id {} duplicated or not derived from {id}", event.id));
        }
        if event.reservation.status != status_of(event.event_type) {
            return Err(format!("event {:?} carries status {:?}", event.event_type, event.reservation.status));
        }
        if last.get(&id).is_some_and(|previous| previous.occurred_at > event.occurred_at) {
            return Err(format!("events of {id} out of order"));
        }
        history.entry(id).or_default().push(event.event_type);
        last.insert(id, event);
    }
    let (mut held, mut sold) = (0, 0);
    let mut per_user: HashMap<String, i64> = HashMap::new();
    for (id, types) in &history {
        use EventType::*;
        if !matches!(types.as_slice(), [Reserved] | [Reserved, Confirmed | Cancelled | Expired]) {
            return Err(format!("{id} has events {types:?}"));
        }
        let (status, user, quantity) = &snapshot.statuses[id];
        let last_type = *types.last().unwrap();
        if *status != status_of(last_type) {
            return Err(format!("{id} reads {status:?} but its last event is {last_type:?}"));
        }
        match last_type {
            Reserved => held += quantity,
            Confirmed => sold += quantity,
            _ => continue,
        }
        *per_user.entry(user.clone()).or_default() += quantity;
    }
    if (snapshot.levels.held, snapshot.levels.sold) != (held, sold) {
        return Err(format!("levels {:?} but events say held {held}, sold {sold}", snapshot.levels));
    }
    if per_user != snapshot.holders {
        return Err(format!("per-user counts {:?} but holds say {per_user:?}", snapshot.holders));
    }
    Ok(history)
}

/// The end-of-test check: conservation holds; the outbox holds exactly one event per
/// state change, in order, with derived ids; every reservation's status, the stock's
/// held and sold, and each user's counted tickets agree with those events. Retries a
/// few times if the reaper changes something while it reads.
pub async fn assert_consistent(app: &TestApp, category: i64) -> History {
    let mut last_error = String::new();
    for _ in 0..20 {
        let snapshot = snapshot(app, category).await;
        let after = levels(app, category).await;
        if after != snapshot.levels {
            continue;
        }
        match check(&snapshot) {
            Ok(history) => return history,
            Err(error) => last_error = error,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("reservation state is inconsistent: {last_error}");
}

/// How many reservations of the history ended with each event type (by type name).
pub fn final_counts(history: &History) -> HashMap<&'static str, usize> {
    let mut counts = HashMap::new();
    for types in history.values() {
        *counts.entry(types.last().unwrap().as_str()).or_default() += 1;
    }
    counts
}

/// A user name unique to this test run.
pub fn user(label: &str) -> String {
    unique_name(label)
}

/// A field of a reservation's Redis record (`None` when absent).
pub async fn record_field(app: &TestApp, reservation: &str, field: &str) -> Option<String> {
    let id = ReservationId::parse(reservation).unwrap();
    let mut redis = app.redis.clone();
    redis.hget(app.keys().hold(id.category(), id.uuid()), field).await.unwrap()
}

/// Rewrites a reservation's Redis record in the layout before issue #15 (the long field
/// names of `LEGACY_RECORD_FIELDS`), as an earlier version of the api left it.
pub async fn to_legacy_layout(app: &TestApp, reservation: &str) {
    let id = ReservationId::parse(reservation).unwrap();
    let key = app.keys().hold(id.category(), id.uuid());
    let mut redis = app.redis.clone();
    let record: Vec<(String, String)> = redis.hgetall(&key).await.unwrap();
    let stored: Vec<&str> = RECORD_FIELDS.iter().chain(&PAYMENT_FIELDS).copied().collect();
    let legacy: Vec<(&str, String)> = record
        .into_iter()
        .map(|(name, value)| {
            let position = stored.iter().position(|field| *field == name).expect("a known field");
            (LEGACY_RECORD_FIELDS[position], value)
        })
        .collect();
    let () =
        redis::pipe().atomic().del(&key).ignore().hset_multiple(&key, &legacy).query_async(&mut redis).await.unwrap();
}

/// Polls the record until its status is `paying` and returns the payment attempt's id.
pub async fn paying_attempt(app: &TestApp, reservation: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        if record_field(app, reservation, field::STATUS).await.as_deref() == Some("paying") {
            return record_field(app, reservation, field::ATTEMPT).await.expect("a paying record names its attempt");
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the hold never started paying");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every key of a category and its dumped value (stock, holds, deadlines, holders,
/// outbox...), to show that an operation wrote nothing.
pub async fn category_dump(app: &TestApp, category: i64) -> BTreeMap<String, Vec<u8>> {
    let pattern = format!("{}:{{c:{category}}}:*", app.isolation.redis_key_prefix);
    let mut redis = app.redis.clone();
    let keys = crate::support::harness::keys_matching(&pattern).await.unwrap();
    let mut dump = BTreeMap::new();
    for key in keys {
        let value: Vec<u8> = redis::cmd("DUMP").arg(&key).query_async(&mut redis).await.unwrap();
        dump.insert(key, value);
    }
    dump
}
