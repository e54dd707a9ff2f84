//! Events, categories, availability, and every error they can produce.

use redis::AsyncCommands;
use serde_json::{Value, json};
use stampede::ids::CategoryId;

use crate::support::harness::{TestApp, admin_token, assert_problem, user_token};

fn event_body() -> Value {
    json!({"name": "Stampede Live", "venue": "Main Arena", "starts_at": "2030-01-10T19:00:00Z",
        "sale_starts_at": "2029-12-01T10:00:00Z", "sale_ends_at": "2030-01-10T18:00:00Z"})
}

#[tokio::test]
async fn admins_create_events_and_anyone_reads_them() {
    // Goal: POST /events answers 201 with Location and the contract's Event, readable by id.
    let app = TestApp::spawn().await;
    let response = app.post("/events", Some(&admin_token()), &event_body()).await;
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let created: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/events/{}", created["id"]));
    assert_eq!(created["name"], "Stampede Live");
    assert_eq!(created["sale_starts_at"], "2029-12-01T10:00:00Z");
    assert_eq!(created["categories"], json!([]));
    assert!(created["created_at"].is_string());
    let fetched: Value = app.get(&location, None).await.json().await.unwrap();
    assert_eq!(fetched, created);
    app.stop().await;
}

#[tokio::test]
async fn auth_errors_are_401_and_403() {
    // Goal: a missing or bad token is 401, a user token on an admin endpoint is 403, and nothing is created.
    let app = TestApp::spawn().await;
    assert_problem(app.post("/events", None, &event_body()).await, 401, "unauthorized").await;
    assert_problem(app.post("/events", Some("garbage"), &event_body()).await, 401, "unauthorized").await;
    let other_secret = stampede::auth::Jwt::new(&stampede::config::Secret::new("other")).mint(
        &stampede::ids::UserId::parse("x").unwrap(),
        stampede::auth::Role::Admin,
        std::time::Duration::from_secs(60),
    );
    assert_problem(app.post("/events", Some(&other_secret), &event_body()).await, 401, "unauthorized").await;
    assert_problem(app.post("/events", Some(&user_token("u1")), &event_body()).await, 403, "forbidden").await;
    let list: Value = app.get("/events", None).await.json().await.unwrap();
    assert_eq!(list["events"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn bad_bodies_get_400_413_415_and_422_with_field_errors() {
    // Goal: each kind of bad input gets its own problem+json and changes nothing.
    let app = TestApp::spawn().await;
    let admin = admin_token();
    let url = app.url("/events");
    let send = |body: Vec<u8>, content_type: &'static str| {
        app.client.post(&url).bearer_auth(&admin).header("content-type", content_type).body(body).send()
    };
    assert_problem(send(b"{not json".to_vec(), "application/json").await.unwrap(), 400, "invalid_json").await;
    assert_problem(send(br#"{"name": 5}"#.to_vec(), "application/json").await.unwrap(), 400, "invalid_json").await;
    assert_problem(send(b"{}".to_vec(), "text/plain").await.unwrap(), 415, "unsupported_media_type").await;
    let huge = format!(r#"{{"name": "{}"}}"#, "x".repeat(70 * 1024));
    assert_problem(send(huge.into_bytes(), "application/json").await.unwrap(), 413, "payload_too_large").await;

    let body = json!({"name": "", "venue": "V", "starts_at": "later", "colour": "red"});
    let problem = assert_problem(app.post("/events", Some(&admin), &body).await, 422, "validation_failed").await;
    assert_eq!(problem["errors"], json!([{"field": "colour", "message": "unknown field"}]));
    let body = json!({"name": "", "venue": "V", "starts_at": "later",
        "sale_starts_at": "2030-01-02T00:00:00Z", "sale_ends_at": "2030-01-01T00:00:00Z"});
    let problem = assert_problem(app.post("/events", Some(&admin), &body).await, 422, "validation_failed").await;
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["starts_at", "name", "sale_ends_at"]);

    let list: Value = app.get("/events", None).await.json().await.unwrap();
    assert_eq!(list["events"], json!([]), "bad input created nothing");
    app.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_with_allow() {
    // Goal: routing failures are problem+json, and 405 lists the allowed methods.
    let app = TestApp::spawn().await;
    assert_problem(app.get("/nope", None).await, 404, "not_found").await;
    assert_problem(app.get("/events/abc", None).await, 404, "not_found").await;
    assert_problem(app.get("/events/999", None).await, 404, "not_found").await;
    let response = app.client.delete(app.url("/events")).send().await.unwrap();
    assert_eq!(response.headers()["allow"], "GET, POST");
    assert_problem(response, 405, "method_not_allowed").await;
    app.stop().await;
}

#[tokio::test]
async fn keyset_pagination_walks_every_page_once() {
    // Goal: limit/after pages through 7 events in id order over 4 pages, with next_after only on full pages.
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(app.create_event().await);
    }
    let mut seen = Vec::new();
    let mut after: Option<i64> = None;
    let mut pages = 0;
    loop {
        let path = match after {
            Some(after) => format!("/events?limit=2&after={after}"),
            None => "/events?limit=2".to_owned(),
        };
        let page: Value = app.get(&path, None).await.json().await.unwrap();
        pages += 1;
        seen.extend(page["events"].as_array().unwrap().iter().map(|event| event["id"].as_i64().unwrap()));
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, created);
    assert_eq!(pages, 4);
    let problem = assert_problem(app.get("/events?limit=0", None).await, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "limit");
    assert_problem(app.get("/events?limit=101", None).await, 422, "validation_failed").await;
    app.stop().await;
}

#[tokio::test]
async fn categories_are_created_once_per_name_and_are_available_at_once() {
    // Goal: a category is 201 with its defaults, reservable stock exists at once, and a duplicate name is 409.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let path = format!("/events/{event}/ticket-category");
    let body = json!({"name": "VIP", "price": 150000, "currency": "IDR", "quota": 5});
    let response = app.post(&path, Some(&admin_token()), &body).await;
    assert_eq!(response.status(), 201);
    let category: Value = response.json().await.unwrap();
    assert_eq!(category["max_per_user"], 5);
    assert_eq!(category["event_id"], event);
    let duplicate = app.post(&path, Some(&admin_token()), &body).await;
    assert_problem(duplicate, 409, "already_exists").await;

    let availability: Value = app.get(&format!("/events/{event}/availability"), None).await.json().await.unwrap();
    assert_eq!(
        availability,
        json!({"event_id": event, "categories": [{"category_id": category["id"], "name": "VIP",
            "quota": 5, "available": 5, "held": 0, "sold": 0}]})
    );
    let levels = app.assert_conserved(category["id"].as_i64().unwrap()).await;
    assert_eq!(levels.available, 5);
    let event_view: Value = app.get(&format!("/events/{event}"), None).await.json().await.unwrap();
    assert_eq!(event_view["categories"][0], category);
    app.stop().await;
}

#[tokio::test]
async fn category_validation_and_missing_events() {
    // Goal: category rules give 422 per field, and an unknown event is 404; nothing is created.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let body = json!({"name": "A", "price": -1, "currency": "usd", "quota": 0, "max_per_user": 0});
    let problem = assert_problem(
        app.post(&format!("/events/{event}/ticket-category"), Some(&admin_token()), &body).await,
        422,
        "validation_failed",
    )
    .await;
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["price", "currency", "quota", "max_per_user"]);
    let body = json!({"name": "A", "price": 1, "quota": 3});
    assert_problem(app.post("/events/424242/ticket-category", Some(&admin_token()), &body).await, 404, "not_found")
        .await;
    let event_view: Value = app.get(&format!("/events/{event}"), None).await.json().await.unwrap();
    assert_eq!(event_view["categories"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn missing_stock_is_503_and_never_recreated() {
    // Goal: when a category's Redis stock vanishes, availability and reserve are 503 (a category that never existed
    // is 404) and the recovery sweep does not refill it.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let category = app.create_category(event, 10, 2).await;
    let key = app.keys().stock(CategoryId::new(category).unwrap());
    let mut redis = app.redis.clone();
    let _: i64 = redis.del(&key).await.unwrap();
    let response = app.get(&format!("/events/{event}/availability"), None).await;
    assert!(response.headers().contains_key("retry-after"));
    assert_problem(response, 503, "unavailable").await;
    let token = user_token("flushed");
    for (category, status, code) in [(category, 503, "unavailable"), (category + 1000, 404, "not_found")] {
        let body = json!({"category_id": category, "quantity": 1});
        assert_problem(app.post("/reserve", Some(&token), &body).await, status, code).await;
    }

    let database = sqlx::PgPool::connect(&app.isolation.database_url).await.unwrap();
    let stock = app.stock();
    let catalog = stampede::catalog::Catalog::new(database, stock);
    catalog.recover_provisioning().await.unwrap();
    let exists: bool = redis.exists(&key).await.unwrap();
    assert!(!exists, "a provisioned category's stock must never be recreated");
    app.stop().await;
}

#[tokio::test]
async fn provisioning_interrupted_by_a_crash_is_finished_safely() {
    // Goal: a row left unprovisioned (crash after step 1) gets full stock, and a pending stock (crash after step 3) is opened.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let database = sqlx::PgPool::connect(&app.isolation.database_url).await.unwrap();
    let crashed_early: i64 = sqlx::query_scalar(
        "INSERT INTO ticket_categories (event_id, name, price, currency, quota, max_per_user) \
         VALUES ($1, 'early', 1, 'USD', 4, 2) RETURNING id",
    )
    .bind(event)
    .fetch_one(&database)
    .await
    .unwrap();
    let crashed_late = app.create_category(event, 3, 1).await;
    let late_key = app.keys().stock(CategoryId::new(crashed_late).unwrap());
    let mut redis = app.redis.clone();
    let _: i64 = redis.hset(&late_key, "state", "pending").await.unwrap();

    let catalog = stampede::catalog::Catalog::new(database.clone(), app.stock());
    assert_eq!(catalog.recover_provisioning().await.unwrap(), 2);
    assert_eq!(catalog.recover_provisioning().await.unwrap(), 0, "recovery is idempotent");
    for category in [crashed_early, crashed_late] {
        let key = app.keys().stock(CategoryId::new(category).unwrap());
        let state: String = redis.hget(&key, "state").await.unwrap();
        assert_eq!(state, "open");
        app.assert_conserved(category).await;
    }
    let unprovisioned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM ticket_categories WHERE stock_provisioned_at IS NULL")
            .fetch_one(&database)
            .await
            .unwrap();
    assert_eq!(unprovisioned, 0);
    app.stop().await;
}
