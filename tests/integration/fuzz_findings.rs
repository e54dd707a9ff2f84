//! Regressions for what `scripts/fuzz` (schemathesis against `/openapi.json`) found:
//! each input here once made the API answer 5xx.

use serde_json::{Value, json};

use crate::support::harness::{TestApp, admin_token, assert_problem};

#[tokio::test]
async fn availability_of_an_event_without_categories_is_an_empty_list() {
    // Goal: an event with no categories yet has availability `[]`, not a 503 from an empty Redis pipeline.
    let app = TestApp::spawn().await;
    let event = app.create_event().await;
    let response = app.get(&format!("/events/{event}/availability"), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"event_id": event, "categories": []}));
    app.stop().await;
}

#[tokio::test]
async fn names_with_control_characters_are_422_and_create_nothing() {
    // Goal: a NUL (or any control character) in a name or venue is a 422 naming the field,
    // not a 503 from Postgres, and creates nothing.
    let app = TestApp::spawn().await;
    let admin = admin_token();
    let body = json!({"name": "Fest\u{0}", "venue": "Hall\u{7}", "starts_at": "2030-01-01T19:00:00Z"});
    let problem = assert_problem(app.post("/events", Some(&admin), &body).await, 422, "validation_failed").await;
    let fields: Vec<&str> =
        problem["errors"].as_array().unwrap().iter().map(|error| error["field"].as_str().unwrap()).collect();
    assert_eq!(fields, ["name", "venue"]);
    let list: Value = app.get("/events", None).await.json().await.unwrap();
    assert_eq!(list["events"], json!([]), "the bad event was not created");

    let event = app.create_event().await;
    let body = json!({"name": "VIP\u{0}", "price": 100, "quota": 10});
    let path = format!("/events/{event}/ticket-category");
    let problem = assert_problem(app.post(&path, Some(&admin), &body).await, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "name");
    let fetched: Value = app.get(&format!("/events/{event}"), None).await.json().await.unwrap();
    assert_eq!(fetched["categories"], json!([]), "the bad category was not created");
    app.stop().await;
}
