//! Reserved seating: seated categories, named seats all or nothing, the best-available
//! rule, the seat lifecycle (expiry, cancel, confirm), the per-user cap, idempotent
//! replays, validation, and Postgres agreeing seat by seat after the pipeline drains.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use reqwest::Response;
use serde_json::{Value, json};

use crate::support::harness::{Isolation, TestApp, admin_token, assert_problem, unique_name, user_token, wait_until};
use crate::support::pipeline::{Pipeline, database, relay_flags, shared_brokers, spawn_worker, wait_for_event_rows};
use crate::support::reservation::{
    assert_consistent, cancel_as, confirm_as, id_of, levels, reserve_as, to_legacy_layout, user,
};

/// A seated category with `rows` (name, seats) and `max_per_user`, in its own event.
async fn seated(app: &TestApp, rows: &[(&str, i64)], max_per_user: i64) -> i64 {
    let event = app.create_event().await;
    let seat_map: Vec<Value> = rows.iter().map(|(row, seats)| json!({"row": row, "seats": seats})).collect();
    let body = json!({"name": unique_name("seated"), "price": 500, "seat_map": seat_map, "max_per_user": max_per_user});
    let response = app.post(&format!("/events/{event}/ticket-category"), Some(&admin_token()), &body).await;
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let category: Value = response.json().await.unwrap();
    assert_eq!(category["seat_map"], json!(seat_map));
    assert_eq!(category["quota"], rows.iter().map(|(_, seats)| seats).sum::<i64>());
    category["id"].as_i64().unwrap()
}

async fn reserve(app: &TestApp, user: &str, body: Value) -> Response {
    reserve_as(app, user, &body, None).await
}

/// The seats of a 201, asserting the status.
async fn held_seats(response: Response) -> (String, Vec<String>) {
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    let seats = body["seats"].as_array().unwrap().iter().map(|seat| seat.as_str().unwrap().to_owned()).collect();
    (id_of(&body), seats)
}

/// Taken seats per row, from `GET /categories/{id}/seats`.
async fn taken(app: &TestApp, category: i64) -> BTreeMap<String, Vec<i64>> {
    let response = app.get(&format!("/categories/{category}/seats"), None).await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["category_id"], category);
    let rows = body["rows"].as_array().unwrap();
    rows.iter()
        .map(|row| {
            let numbers = row["taken"].as_array().unwrap().iter().map(|number| number.as_i64().unwrap()).collect();
            (row["row"].as_str().unwrap().to_owned(), numbers)
        })
        .collect()
}

fn names(seats: &[&str]) -> Vec<String> {
    seats.iter().map(|seat| seat.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_buyers_racing_for_one_seat_get_exactly_one_hold() {
    // Goal: 500 concurrent requests for seat A-1 give exactly one 201 and 499 409 seat_taken naming A-1.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 20), ("B", 20)], 4).await;
    let requests = (0..500).map(|index| {
        let app = &app;
        async move {
            let response =
                reserve(app, &format!("racer{index}"), json!({"category_id": category, "seats": ["A-1"]})).await;
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures::future::join_all(requests).await;
    let winners: Vec<&Value> = answers.iter().filter(|(status, _)| *status == 201).map(|(_, body)| body).collect();
    assert_eq!(winners.len(), 1, "exactly one buyer gets the seat");
    assert_eq!(winners[0]["seats"], json!(["A-1"]));
    for (status, body) in answers.iter().filter(|(status, _)| *status != 201) {
        assert_eq!((*status, body["code"].as_str()), (409, Some("seat_taken")), "{body}");
        assert_eq!(body["seats"], json!(["A-1"]));
    }
    assert_eq!(taken(&app, category).await["A"], [1]);
    let levels = levels(&app, category).await;
    assert_eq!((levels.quota, levels.held, levels.available), (40, 1, 39));
    app.stop().await;
}

#[tokio::test]
async fn named_seats_are_all_or_nothing() {
    // Goal: when one of several named seats is taken nothing is held, and 409 seat_taken lists only the taken one.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 10)], 4).await;
    let (_, first) =
        held_seats(reserve(&app, &user("first"), json!({"category_id": category, "seats": ["A-5"]})).await).await;
    assert_eq!(first, ["A-5"]);
    let body = json!({"category_id": category, "seats": ["A-6", "A-5", "A-4"], "quantity": 3});
    let problem = assert_problem(reserve(&app, &user("second"), body).await, 409, "seat_taken").await;
    assert_eq!(problem["seats"], json!(["A-5"]));
    assert_eq!(taken(&app, category).await["A"], [5], "nothing of the refused request is held");
    let levels = levels(&app, category).await;
    assert_eq!((levels.held, levels.available), (1, 9));
    // Seats come back in map order, then by number, whatever the request's order.
    let (_, seats) =
        held_seats(reserve(&app, &user("third"), json!({"category_id": category, "seats": ["A-7", "A-6"]})).await)
            .await;
    assert_eq!(seats, ["A-6", "A-7"]);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn best_available_takes_the_front_row_middle_and_skips_rows_without_a_run() {
    // Goal: adjacent seats follow the contract's rule: first row with a run, run closest to the row's middle,
    // ties to lower numbers, rows without a run skipped; no_adjacent_seats versus sold_out; plain quantity
    // falls back to the first free seats in map order.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 4), ("B", 10), ("C", 9)], 23).await;
    let adjacent = |label: &'static str, quantity: i64| {
        let app = &app;
        async move {
            reserve(app, &user(label), json!({"category_id": category, "quantity": quantity, "adjacent": true})).await
        }
    };
    let expectations: [(&str, i64, &[&str]); 5] = [
        ("front", 2, &["A-2", "A-3"]),
        ("skip", 2, &["B-5", "B-6"]),
        ("tie", 3, &["B-2", "B-3", "B-4"]),
        ("back", 4, &["B-7", "B-8", "B-9", "B-10"]),
        ("third", 2, &["C-4", "C-5"]),
    ];
    for (label, quantity, expected) in expectations {
        let (_, seats) = held_seats(adjacent(label, quantity).await).await;
        assert_eq!(seats, names(expected), "{label}");
    }
    // Free now, B-1, C-1..C-3, C-6..C-9 (10 seats; the longest run is 4).
    assert_problem(adjacent("none", 5).await, 409, "no_adjacent_seats").await;
    assert_problem(adjacent("short", 11).await, 409, "sold_out").await;
    let (_, seats) =
        held_seats(reserve(&app, &user("any"), json!({"category_id": category, "quantity": 5})).await).await;
    assert_eq!(seats, names(&["A-1", "A-4", "B-1", "C-1", "C-2"]), "no run of 5: the first free seats in map order");
    let (_, seats) =
        held_seats(reserve(&app, &user("run"), json!({"category_id": category, "quantity": 3})).await).await;
    assert_eq!(seats, names(&["C-6", "C-7", "C-8"]), "a run exists: the best adjacent seats");
    let levels = levels(&app, category).await;
    assert_eq!((levels.quota, levels.held, levels.available), (23, 21, 2));
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn a_seated_hold_an_earlier_version_wrote_frees_its_seats() {
    // Goal: a seated hold whose record has the long field names of before issue #15 answers its seats and frees
    // exactly them on cancel.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 6)], 6).await;
    let (id, _) =
        held_seats(reserve(&app, "veteran", json!({"category_id": category, "seats": ["A-2", "A-5"]})).await).await;
    held_seats(reserve(&app, "other", json!({"category_id": category, "seats": ["A-3"]})).await).await;
    to_legacy_layout(&app, &id).await;
    let response = cancel_as(&app, "veteran", &id).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["seats"], json!(["A-2", "A-5"]));
    assert_eq!(taken(&app, category).await["A"], [3]);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn cancel_and_expiry_return_exactly_the_held_seats_and_confirm_sells_them() {
    // Goal: a cancel and an expiry free exactly their seats, a confirm keeps its seats taken as sold, and the
    // seats, levels and events agree throughout.
    let app = TestApp::spawn_with(&["--hold-ttl", "1s"]).await;
    let category = seated(&app, &[("A", 6), ("B", 6)], 6).await;
    let (confirmed, _) =
        held_seats(reserve(&app, "buyer", json!({"category_id": category, "seats": ["B-3", "B-4"]})).await).await;
    let response = confirm_as(&app, "buyer", &confirmed, "tok_ok", None).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["seats"], json!(["B-3", "B-4"]));
    let (cancelled, _) =
        held_seats(reserve(&app, "canceller", json!({"category_id": category, "seats": ["A-1", "B-2"]})).await).await;
    let response = cancel_as(&app, "canceller", &cancelled).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.json::<Value>().await.unwrap()["seats"], json!(["A-1", "B-2"]));
    let after_cancel = taken(&app, category).await;
    assert_eq!((after_cancel["A"].clone(), after_cancel["B"].clone()), (vec![], vec![3, 4]));
    let body = json!({"category_id": category, "quantity": 3, "adjacent": true});
    let (_, expiring) = held_seats(reserve(&app, "sleeper", body).await).await;
    assert_eq!(expiring, ["A-2", "A-3", "A-4"]);
    wait_until(Duration::from_secs(10), "the hold expires", || async { taken(&app, category).await["A"].is_empty() })
        .await;
    assert_eq!(taken(&app, category).await["B"], [3, 4], "sold seats stay taken");
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (10, 0, 2));
    let history = assert_consistent(&app, category).await;
    assert_eq!(history.len(), 3);
    // The freed seats can be held again; the sold ones cannot.
    held_seats(reserve(&app, "again", json!({"category_id": category, "seats": ["A-1", "A-3", "B-2"]})).await).await;
    let body = json!({"category_id": category, "seats": ["B-4"]});
    assert_problem(reserve(&app, "late", body).await, 409, "seat_taken").await;
    app.stop().await;
}

#[tokio::test]
async fn the_per_user_cap_counts_seats() {
    // Goal: max_per_user bounds a user's held and sold seats: a request past it is 409 limit_exceeded, and a
    // seat list longer than the cap is 422 before any seat is looked at.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 10)], 3).await;
    held_seats(reserve(&app, "capped", json!({"category_id": category, "seats": ["A-1", "A-2"]})).await).await;
    let body = json!({"category_id": category, "quantity": 2, "adjacent": true});
    assert_problem(reserve(&app, "capped", body).await, 409, "limit_exceeded").await;
    let body = json!({"category_id": category, "seats": ["A-5", "A-6", "A-7", "A-8"]});
    let problem = assert_problem(reserve(&app, "other", body).await, 422, "validation_failed").await;
    assert_eq!(problem["errors"][0]["field"], "seats");
    held_seats(reserve(&app, "capped", json!({"category_id": category, "seats": ["A-10"]})).await).await;
    assert_eq!(taken(&app, category).await["A"], [1, 2, 10]);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn idempotent_replays_return_the_same_seats() {
    // Goal: the same Idempotency-Key and body replays the first answer (same seats, also for seat_taken and for a
    // plain quantity) and holds nothing more.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 10)], 10).await;
    for body in [
        json!({"category_id": category, "quantity": 2, "adjacent": true}),
        json!({"category_id": category, "seats": ["A-1", "A-2"]}),
        json!({"category_id": category, "quantity": 2}),
    ] {
        let key = unique_name("key");
        let first = reserve_as(&app, "replayer", &body, Some(&key)).await;
        assert_eq!(first.status(), 201);
        let first: Value = first.json().await.unwrap();
        let again = reserve_as(&app, "replayer", &body, Some(&key)).await;
        assert_eq!(again.status(), 201);
        assert_eq!(again.json::<Value>().await.unwrap(), first, "{body}");
    }
    assert_eq!(taken(&app, category).await["A"], [1, 2, 3, 4, 5, 6]);
    let body = json!({"category_id": category, "seats": ["A-5", "A-9"]});
    let first = assert_problem(reserve_as(&app, "late", &body, Some("taken-key")).await, 409, "seat_taken").await;
    let again = assert_problem(reserve_as(&app, "late", &body, Some("taken-key")).await, 409, "seat_taken").await;
    assert_eq!((first["seats"].clone(), again), (json!(["A-5"]), first));
    let levels = levels(&app, category).await;
    assert_eq!(levels.held, 6);
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn bad_seat_requests_and_seat_maps_are_422_with_the_field() {
    // Goal: every malformed seat request and seat map is 422 naming its field, and the seat endpoints 404
    // for categories without seats.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 10), ("B", 5)], 4).await;
    let event = app.create_event().await;
    let counted = app.create_category(event, 10, 4).await;
    let wide = seated(&app, &[("A", 1000), ("B", 1000)], 2000).await;
    let cases = [
        (json!({"category_id": category, "seats": ["Z-1"]}), "seats"),
        (json!({"category_id": category, "seats": ["B-6"]}), "seats"),
        (json!({"category_id": category, "seats": ["A-03"]}), "seats[0]"),
        (json!({"category_id": category, "seats": ["A-0"]}), "seats[0]"),
        (json!({"category_id": category, "seats": ["A-1", "A-1"]}), "seats[1]"),
        (json!({"category_id": category, "seats": []}), "seats"),
        (json!({"category_id": category, "seats": ["A-1"], "adjacent": true}), "adjacent"),
        (json!({"category_id": category, "adjacent": true}), "quantity"),
        (json!({"category_id": category, "seats": ["A-1", "A-2"], "quantity": 3}), "quantity"),
        (json!({"category_id": counted, "seats": ["A-1"]}), "seats"),
        (json!({"category_id": counted, "quantity": 1, "adjacent": true}), "seats"),
        // At most 1000 seats in one reservation, whatever max_per_user allows.
        (json!({"category_id": wide, "quantity": 1001, "adjacent": true}), "seats"),
        (json!({"category_id": wide, "quantity": 1001}), "seats"),
    ];
    for (body, field) in cases {
        let problem = assert_problem(reserve(&app, "validator", body.clone()).await, 422, "validation_failed").await;
        let fields: Vec<&str> =
            problem["errors"].as_array().unwrap().iter().map(|e| e["field"].as_str().unwrap()).collect();
        assert!(fields.contains(&field), "{body}: {problem}");
    }
    assert!(taken(&app, category).await.values().all(Vec::is_empty), "nothing was held");
    let maps = [
        (json!([{"row": "A", "seats": 2}, {"row": "A", "seats": 3}]), None, "seat_map[1].row"),
        (json!([{"row": "A", "seats": 1001}]), None, "seat_map[0].seats"),
        (json!([{"row": "A-1", "seats": 2}]), None, "seat_map[0].row"),
        (json!([]), None, "seat_map"),
        (
            json!((0..101).map(|row| json!({"row": format!("R{row}"), "seats": 1000})).collect::<Vec<_>>()),
            None,
            "seat_map",
        ),
        (json!([{"row": "A", "seats": 2}]), Some(2), "quota"),
        (json!([{"row": "A", "seats": 2, "extra": 1}]), None, "seat_map.extra"),
    ];
    for (seat_map, quota, field) in maps {
        let mut body = json!({"name": unique_name("bad"), "price": 1, "seat_map": seat_map});
        if let Some(quota) = quota {
            body["quota"] = json!(quota);
        }
        let response = app.post(&format!("/events/{event}/ticket-category"), Some(&admin_token()), &body).await;
        let problem = assert_problem(response, 422, "validation_failed").await;
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    assert_problem(app.get(&format!("/categories/{counted}/seats"), None).await, 404, "not_found").await;
    assert_problem(app.get("/categories/999999/seats", None).await, 404, "not_found").await;
    app.stop().await;
}

/// Seats per reservation id in `reservation_seats`, and the confirmed ones.
async fn postgres_seats(database: &sqlx::PgPool) -> (BTreeMap<String, Vec<String>>, BTreeSet<String>) {
    let rows: Vec<(uuid::Uuid, String, bool)> = sqlx::query_as(
        "SELECT reservation_id, seat, confirmed FROM reservation_seats ORDER BY reservation_id, position",
    )
    .fetch_all(database)
    .await
    .unwrap();
    let mut seats: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut confirmed = BTreeSet::new();
    for (id, seat, sold) in rows {
        seats.entry(id.to_string()).or_default().push(seat.clone());
        if sold {
            confirmed.insert(seat);
        }
    }
    (seats, confirmed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_agrees_seat_by_seat_after_the_pipeline_drains() {
    // Goal: after relay and worker drain, Postgres holds every reservation's seats, the confirmed seats are
    // exactly the sold ones of the live map, and GET /reservations lists the seats.
    let isolation = Isolation::new().await;
    let app = TestApp::spawn_in(isolation.clone(), &relay_flags()).await;
    let category = seated(&app, &[("A", 8), ("B", 8)], 8).await;
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut sold = BTreeSet::new();
    let mut events = 0;
    for (index, body) in [
        json!({"category_id": category, "seats": ["A-1", "A-2"]}),
        json!({"category_id": category, "quantity": 3, "adjacent": true}),
        json!({"category_id": category, "quantity": 2}),
        json!({"category_id": category, "seats": ["B-8"]}),
    ]
    .into_iter()
    .enumerate()
    {
        let (id, seats) = held_seats(reserve(&app, "pipeline", body).await).await;
        events += 2;
        match index % 2 {
            0 => {
                assert_eq!(confirm_as(&app, "pipeline", &id, "tok_ok", None).await.status(), 200);
                sold.extend(seats.iter().cloned());
            }
            _ => assert_eq!(cancel_as(&app, "pipeline", &id).await.status(), 200),
        }
        expected.insert(id, seats);
    }
    let worker = spawn_worker(&isolation, &shared_brokers(), &[]);
    let database = database(&isolation).await;
    wait_for_event_rows(&database, events, Duration::from_secs(60)).await;
    let (seats, confirmed) = postgres_seats(&database).await;
    assert_eq!(seats, expected, "every reservation's seats, in order");
    assert_eq!(confirmed, sold, "the confirmed seats are the sold ones");
    let live: BTreeSet<String> = taken(&app, category)
        .await
        .into_iter()
        .flat_map(|(row, numbers)| numbers.into_iter().map(move |number| format!("{row}-{number}")))
        .collect();
    assert_eq!(live, sold, "the live map's taken seats are the sold ones");
    let listing = app.get("/reservations", Some(&user_token("pipeline"))).await;
    let listing: Value = listing.json().await.unwrap();
    for reservation in listing["reservations"].as_array().unwrap() {
        let seats: Vec<String> = serde_json::from_value(reservation["seats"].clone()).unwrap();
        assert_eq!(seats, expected[reservation["id"].as_str().unwrap()]);
    }
    worker.terminate().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repair_rebuilds_a_flushed_seated_category_and_never_hands_out_a_sold_seat() {
    // Goal: after every Redis key of a seated category is lost, `worker reconcile --repair` rebuilds its seats
    // from Postgres: sold and held seats stay taken, a restored hold still confirms, and selling out afterwards
    // hands out exactly the other seats.
    let Pipeline { isolation, app, worker } = Pipeline::start(&[], &[]).await;
    let category = seated(&app, &[("A", 4), ("B", 4)], 4).await;
    let (sold, _) =
        held_seats(reserve(&app, "sold", json!({"category_id": category, "seats": ["A-1", "A-2"]})).await).await;
    assert_eq!(confirm_as(&app, "sold", &sold, "tok_ok", None).await.status(), 200);
    let (held, _) = held_seats(reserve(&app, "held", json!({"category_id": category, "seats": ["B-4"]})).await).await;
    let (cancelled, _) =
        held_seats(reserve(&app, "gone", json!({"category_id": category, "seats": ["A-3", "A-4"]})).await).await;
    assert_eq!(cancel_as(&app, "gone", &cancelled).await.status(), 200);
    let database = database(&isolation).await;
    wait_for_event_rows(&database, 5, Duration::from_secs(60)).await;

    crate::support::pipeline::flush_category(&app, category).await;
    let (code, output) = crate::support::pipeline::reconcile(&isolation, &shared_brokers(), true).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("repaired"), "{output}");
    let map = taken(&app, category).await;
    assert_eq!((map["A"].clone(), map["B"].clone()), (vec![1, 2], vec![4]));
    let body = json!({"category_id": category, "seats": ["A-2", "A-3"]});
    let problem = assert_problem(reserve(&app, "late", body).await, 409, "seat_taken").await;
    assert_eq!(problem["seats"], json!(["A-2"]), "a sold seat is never handed out again");
    let response = confirm_as(&app, "held", &held, "tok_ok", None).await;
    assert_eq!(response.status(), 200, "a restored hold confirms");
    assert_eq!(response.json::<Value>().await.unwrap()["seats"], json!(["B-4"]));
    let mut handed_out = BTreeSet::new();
    for buyer in 0.. {
        let response = reserve(&app, &format!("buyer{buyer}"), json!({"category_id": category, "quantity": 1})).await;
        if response.status() == 409 {
            assert_problem(response, 409, "sold_out").await;
            break;
        }
        handed_out.extend(held_seats(response).await.1);
    }
    let expected: BTreeSet<String> = names(&["A-3", "A-4", "B-1", "B-2", "B-3"]).into_iter().collect();
    assert_eq!(handed_out, expected, "exactly the seats that were free");
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held, levels.sold), (0, 5, 3));
    worker.terminate().await;
    app.stop().await;
}

/// The contract's best-available rule, by brute force: the first row (in map order) with
/// a window of `count` free seats, the window whose middle is closest to the row's
/// middle, ties to the lower numbers. Seats are `taken[row][number - 1]`.
fn best_adjacent(taken: &[Vec<bool>], count: usize) -> Option<(usize, usize)> {
    taken.iter().enumerate().find_map(|(row, seats)| {
        let size = seats.len();
        (1..=(size + 1).saturating_sub(count))
            .filter(|&start| seats[start - 1..start - 1 + count].iter().all(|taken| !taken))
            .min_by_key(|&start| ((2 * start + count).abs_diff(size + 2), start))
            .map(|start| (row, start))
    })
}

/// What the contract says a reserve of `count` seats gets: `Ok(seats)` or `Err(code)`.
fn expected_seats(taken: &[Vec<bool>], count: usize, adjacent: bool) -> Result<Vec<(usize, usize)>, &'static str> {
    let free = taken.iter().flatten().filter(|taken| !**taken).count();
    if free < count {
        return Err("sold_out");
    }
    if let Some((row, start)) = best_adjacent(taken, count) {
        return Ok((start..start + count).map(|number| (row, number)).collect());
    }
    if adjacent {
        return Err("no_adjacent_seats");
    }
    let first_free = taken.iter().enumerate().flat_map(|(row, seats)| {
        seats.iter().enumerate().filter(|(_, taken)| !**taken).map(move |(index, _)| (row, index + 1))
    });
    Ok(first_free.take(count).collect())
}

#[tokio::test]
async fn best_available_agrees_with_a_brute_force_model_of_the_rule() {
    // Goal: on a random map, random adjacent and plain reserves (with cancels that fragment the rows) get exactly
    // the seats, or the refusal, that a brute-force reading of the contract's rule gives.
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut random = fastrand::Rng::with_seed(seed);
    let app = TestApp::spawn().await;
    let rows: Vec<(String, usize)> =
        (0..random.usize(2..6)).map(|row| (format!("R{row}"), random.usize(3..60))).collect();
    let map: Vec<(&str, i64)> = rows.iter().map(|(row, seats)| (row.as_str(), *seats as i64)).collect();
    let quota: i64 = map.iter().map(|(_, seats)| seats).sum();
    let category = seated(&app, &map, quota).await;
    let mut model: Vec<Vec<bool>> = rows.iter().map(|(_, seats)| vec![false; *seats]).collect();
    let mut holds: Vec<(String, Vec<(usize, usize)>)> = Vec::new();
    for step in 0..200 {
        if !holds.is_empty() && random.u8(..4) == 0 {
            let (id, seats) = holds.swap_remove(random.usize(..holds.len()));
            assert_eq!(cancel_as(&app, "model", &id).await.status(), 200);
            for (row, number) in seats {
                model[row][number - 1] = false;
            }
            continue;
        }
        let count = random.usize(1..5);
        let adjacent = random.bool();
        let mut body = json!({"category_id": category, "quantity": count});
        if adjacent {
            body["adjacent"] = json!(true);
        }
        let response = reserve(&app, "model", body).await;
        match expected_seats(&model, count, adjacent) {
            Ok(seats) => {
                let (id, got) = held_seats(response).await;
                let want: Vec<String> =
                    seats.iter().map(|(row, number)| format!("{}-{number}", rows[*row].0)).collect();
                assert_eq!(got, want, "step {step}, seed {seed}, {count} adjacent={adjacent}, taken {model:?}");
                for &(row, number) in &seats {
                    model[row][number - 1] = true;
                }
                holds.push((id, seats));
            }
            Err(code) => {
                let problem = assert_problem(response, 409, code).await;
                assert_eq!(problem["code"], code, "step {step}, seed {seed}");
            }
        }
    }
    let live = taken(&app, category).await;
    for (row, (name, _)) in rows.iter().enumerate() {
        let want: Vec<i64> = (1..=model[row].len()).filter(|number| model[row][number - 1]).map(|n| n as i64).collect();
        assert_eq!(live[name], want, "seed {seed}");
    }
    assert_consistent(&app, category).await;
    app.stop().await;
}

#[tokio::test]
async fn named_seats_in_a_nearly_sold_out_category_name_the_taken_ones() {
    // Goal: when fewer seats are free than named and some named seats are taken, the answer is 409
    // seat_taken listing exactly the taken ones (never sold_out), and nothing is held; free named seats
    // still reserve.
    let app = TestApp::spawn().await;
    let category = seated(&app, &[("A", 4)], 4).await;
    held_seats(reserve(&app, "early", json!({"category_id": category, "seats": ["A-1", "A-2", "A-3"]})).await).await;
    let body = json!({"category_id": category, "seats": ["A-2", "A-3", "A-4"]});
    let problem = assert_problem(reserve(&app, "late", body).await, 409, "seat_taken").await;
    assert_eq!(problem["seats"], json!(["A-2", "A-3"]), "{problem}");
    let levels = levels(&app, category).await;
    assert_eq!((levels.available, levels.held), (1, 3), "a refusal holds nothing");
    held_seats(reserve(&app, "late", json!({"category_id": category, "seats": ["A-4"]})).await).await;
    assert_consistent(&app, category).await;
    app.stop().await;
}
