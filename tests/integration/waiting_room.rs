//! The waiting room: queue passes on `POST /reserve`, fair admission across API
//! processes, the pre-opening shuffle, sold out and back, and pass expiry.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Response;
use serde_json::{Value, json};
use stampede::ids::EventId;

use crate::support::harness::{Isolation, TestApp, admin_token, assert_problem, unique_name, user_token, wait_until};

/// `PUT /events/{event}/waiting-room` as admin; returns the WaitingRoom.
async fn put_room(app: &TestApp, event: i64, body: Value) -> Value {
    let response = app
        .client
        .put(app.url(&format!("/events/{event}/waiting-room")))
        .bearer_auth(admin_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    response.json().await.unwrap()
}

/// `GET /events/{event}/waiting-room`.
async fn get_room(app: &TestApp, event: i64) -> Value {
    let response = app.get(&format!("/events/{event}/waiting-room"), None).await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A user's answer from the queue: HTTP status, `Retry-After`, and the QueueStatus.
struct Answer {
    code: u16,
    retry_after: Option<u64>,
    body: Value,
}

impl Answer {
    async fn read(response: Response) -> Self {
        let code = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").map(|value| value.to_str().unwrap().parse().unwrap());
        Self { code, retry_after, body: response.json().await.unwrap() }
    }

    fn status(&self) -> &str {
        self.body["status"].as_str().unwrap()
    }

    fn position(&self) -> Option<i64> {
        self.body["position"].as_i64()
    }

    fn pass(&self) -> &str {
        self.body["pass"].as_str().expect("admitted users have a pass")
    }
}

async fn join(app: &TestApp, user: &str, event: i64) -> Answer {
    let response =
        app.client.post(app.url(&format!("/events/{event}/queue"))).bearer_auth(user_token(user)).send().await.unwrap();
    Answer::read(response).await
}

async fn poll(app: &TestApp, user: &str, event: i64) -> Answer {
    let response = app.get(&format!("/events/{event}/queue"), Some(&user_token(user))).await;
    assert_eq!(response.status(), 200);
    Answer::read(response).await
}

/// Polls `user` until `done` holds (at most 20 s).
async fn poll_until(app: &TestApp, user: &str, event: i64, done: impl Fn(&Answer) -> bool) -> Answer {
    for _ in 0..400 {
        let answer = poll(app, user, event).await;
        if done(&answer) {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{user} never reached the awaited status");
}

/// Reserve one ticket of `category` as `user` with an optional `Queue-Pass`.
async fn reserve_with_pass(app: &TestApp, user: &str, category: i64, pass: Option<&str>) -> Response {
    let mut request = app
        .client
        .post(app.url("/reserve"))
        .bearer_auth(user_token(user))
        .json(&json!({"category_id": category, "quantity": 1}));
    if let Some(pass) = pass {
        request = request.header("Queue-Pass", pass);
    }
    request.send().await.unwrap()
}

/// An event whose sale opens at `sale_starts_at` (None: now), with one category of `quota`.
async fn event_with(app: &TestApp, sale_starts_at: Option<DateTime<Utc>>, quota: i64) -> (i64, i64) {
    let body = json!({"name": unique_name("room"), "venue": "Hall", "starts_at": "2031-01-01T19:00:00Z",
        "sale_starts_at": sale_starts_at.map(|time| time.to_rfc3339()), "sale_ends_at": null});
    let response = app.post("/events", Some(&admin_token()), &body).await;
    assert_eq!(response.status(), 201);
    let event = response.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    (event, app.create_category(event, quota, quota.min(4)).await)
}

/// Redis server time, the clock admission runs on.
async fn redis_now(app: &TestApp) -> DateTime<Utc> {
    let (seconds, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut app.redis.clone()).await.unwrap();
    DateTime::from_timestamp_micros(seconds * 1_000_000 + micros).unwrap()
}

#[tokio::test]
async fn reserve_needs_a_valid_pass_of_the_caller_for_the_event() {
    // Goal: with the room on, a reserve without a pass, or with a forged, altered, another user's or another
    // event's pass is 403 queue_pass_required and holds nothing; the caller's own pass reserves; turning the
    // room off lifts the requirement at once in every process, also one whose directory still shows it on.
    let isolation = Isolation::new().await;
    let app = TestApp::spawn_in(isolation.clone(), &[]).await;
    let other = TestApp::spawn_in(isolation, &[]).await;
    let (event, category) = event_with(&app, None, 100).await;
    let (other_event, other_category) = event_with(&app, None, 100).await;
    for id in [event, other_event] {
        let room = put_room(&app, id, json!({"enabled": true, "admit_per_second": 1000})).await;
        assert_eq!((room["enabled"].as_bool(), room["pass_ttl_seconds"].as_i64()), (Some(true), Some(600)));
    }
    let alice = join(&app, "alice", event).await;
    assert_eq!((alice.code, alice.status()), (201, "admitted"), "{}", alice.body);
    let pass = alice.pass().to_owned();
    let bob_elsewhere = join(&app, "bob", other_event).await;
    assert_eq!(bob_elsewhere.status(), "admitted");
    // The other process learns that the rooms are on at its next directory refresh.
    let mut probes = 0;
    while reserve_with_pass(&other, "probe", other_category, None).await.status() != 403 {
        probes += 1;
        assert!(probes < 100, "the other process never required a pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (key_id, rest) = pass.split_once('.').unwrap();
    let (expires, mac) = rest.split_once('.').unwrap();
    let later: i64 = expires.parse::<i64>().unwrap() + 3_600_000;
    let altered = format!("{key_id}.{later}.{mac}");
    let forged = format!("{key_id}.{expires}.{}", "0".repeat(64));
    let refused: [(&str, i64, Option<&str>); 6] = [
        ("alice", category, None),
        ("alice", category, Some(&forged)),
        ("alice", category, Some(&altered)),
        ("alice", category, Some("not-a-pass")),
        ("mallory", category, Some(&pass)),
        ("alice", other_category, Some(&pass)),
    ];
    for (user, category, pass) in refused {
        for api in [&app, &other] {
            assert_problem(reserve_with_pass(api, user, category, pass).await, 403, "queue_pass_required").await;
        }
    }
    assert_eq!(app.assert_conserved(category).await.held, 0, "a refused reserve holds nothing");
    for api in [&app, &other] {
        assert_eq!(reserve_with_pass(api, "alice", category, Some(&pass)).await.status(), 201, "a pass is reusable");
    }

    put_room(&app, event, json!({"enabled": false})).await;
    assert_eq!(reserve_with_pass(&app, "carol", category, None).await.status(), 201, "off at once here");
    assert_eq!(reserve_with_pass(&other, "dave", category, None).await.status(), 201, "and at once in the other");
    let levels = app.assert_conserved(category).await;
    assert_eq!(levels.held, 4);
    let still = reserve_with_pass(&app, "erin", other_category, None).await;
    assert_problem(still, 403, "queue_pass_required").await;
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn admission_is_fifo_and_paced_across_two_processes() {
    // Goal: users joining through two API processes are admitted in exact join order (nobody while someone
    // ahead still waits), positions agree between the processes, and admissions never pass
    // admit_per_second × (T + 1) since the opening, while keeping that pace.
    let isolation = Isolation::new().await;
    let first = TestApp::spawn_in(isolation.clone(), &[]).await;
    let second = TestApp::spawn_in(isolation, &[]).await;
    let apis = [&first, &second];
    let (event, _) = event_with(&first, None, 1000).await;
    let rate = 5;
    let room = put_room(&first, event, json!({"enabled": true, "admit_per_second": rate})).await;
    let opens_at: DateTime<Utc> = room["opens_at"].as_str().unwrap().parse().unwrap();
    let users: Vec<String> = (0..30).map(|index| format!("fifo-{index:02}")).collect();
    for (index, user) in users.iter().enumerate() {
        let answer = join(apis[index % 2], user, event).await;
        assert_eq!(answer.code, 201);
    }
    let again = join(&second, &users[20], event).await;
    assert_eq!(again.code, 200, "joining again keeps the place");
    loop {
        let before = redis_now(&first).await;
        // Polled from the back of the queue to the front: admission only moves forward, so a user
        // seen admitted means everyone ahead, polled after, must read admitted too.
        let mut seen_admitted = false;
        let mut last_position = i64::MAX;
        for (index, user) in users.iter().enumerate().rev() {
            let answer = poll(apis[index % 2], user, event).await;
            let twin = poll(apis[(index + 1) % 2], user, event).await;
            match answer.status() {
                "admitted" => seen_admitted = true,
                "waiting" => {
                    assert!(!seen_admitted, "{user} waits while someone behind was admitted");
                    let position = answer.position().unwrap();
                    assert!(position < last_position, "positions follow queue order");
                    assert!(twin.position().unwrap_or(0) <= position, "the other process agrees");
                    assert!(answer.retry_after.is_some(), "a waiting answer carries Retry-After");
                    last_position = position;
                }
                other => panic!("unexpected status {other}"),
            }
        }
        let admitted = get_room(&second, event).await["admitted"].as_i64().unwrap();
        let after = redis_now(&first).await;
        let allowed = rate * ((after - opens_at).num_milliseconds() + 1000) / 1000;
        assert!(admitted <= allowed.min(30), "{admitted} admitted, at most {allowed} allowed");
        let due = (rate * ((before - opens_at).num_milliseconds() / 1000)).min(30);
        assert!(admitted >= due, "admission keeps the pace: {admitted} admitted, {due} due");
        if admitted == 30 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn pre_opening_joiners_are_shuffled_uniformly() {
    // Goal: the order of users who join before the queue opens is a uniformly random permutation: over 300
    // queues of three users (joined in the same order every time), each of the 6 orders appears about 50
    // times (chi-square with 5 degrees of freedom below 20.5, p = 0.001), and joining twice keeps one place.
    let app = TestApp::spawn().await;
    let opening = Utc::now() + chrono::Duration::days(365);
    let trials = 300;
    let mut counts: HashMap<Vec<String>, u32> = HashMap::new();
    let keys = app.keys();
    for _ in 0..trials {
        let (event, _) = event_with(&app, Some(opening), 10).await;
        put_room(&app, event, json!({"enabled": true})).await;
        for user in ["a", "b", "c"] {
            let answer = join(&app, user, event).await;
            assert_eq!((answer.status(), answer.position()), ("waiting", None), "no position before the opening");
            let retry_after = answer.retry_after.unwrap();
            assert!(retry_after > 364 * 86_400, "Retry-After points at the opening: {retry_after}");
        }
        // The place each user will have at the opening is already drawn; read it from the queue itself.
        let queue = keys.waiting_queue(EventId::new(event).unwrap());
        let order: Vec<String> =
            redis::cmd("ZRANGE").arg(&queue).arg(0).arg(-1).query_async(&mut app.redis.clone()).await.unwrap();
        assert_eq!(join(&app, "b", event).await.code, 200);
        let again: Vec<String> =
            redis::cmd("ZRANGE").arg(&queue).arg(0).arg(-1).query_async(&mut app.redis.clone()).await.unwrap();
        assert_eq!(order, again, "joining twice keeps one place");
        *counts.entry(order).or_default() += 1;
    }
    assert_eq!(counts.len(), 6, "every order occurs: {counts:?}");
    let expected = f64::from(trials) / 6.0;
    let chi_square: f64 = counts.values().map(|&count| (f64::from(count) - expected).powi(2) / expected).sum();
    assert!(chi_square < 20.5, "chi-square {chi_square:.1} over {counts:?}");
    app.stop().await;
}

#[tokio::test]
async fn after_the_opening_the_queue_is_first_come_first_served() {
    // Goal: users who joined before the opening stand ahead of everyone who joins after it, and later
    // joiners keep their join order; a rejoin keeps the place and answers 200 with the same status.
    let app = TestApp::spawn().await;
    let opening = Utc::now() + chrono::Duration::seconds(3);
    let (event, _) = event_with(&app, Some(opening), 10).await;
    put_room(&app, event, json!({"enabled": true, "admit_per_second": 1})).await;
    let early = ["early-1", "early-2", "early-3", "early-4"];
    for user in early {
        let answer = join(&app, user, event).await;
        assert_eq!((answer.code, answer.position()), (201, None));
        assert!((1..=8).contains(&answer.retry_after.unwrap()), "Retry-After points at the opening");
    }
    poll_until(&app, early[0], event, |answer| answer.position().is_some() || answer.status() == "admitted").await;
    let late = ["late-1", "late-2", "late-3"];
    let mut late_positions = Vec::new();
    for user in late {
        let answer = join(&app, user, event).await;
        assert_eq!((answer.code, answer.status()), (201, "waiting"));
        late_positions.push(answer.position().unwrap());
    }
    let rejoin = join(&app, late[1], event).await;
    let polled = poll(&app, late[1], event).await;
    assert_eq!(rejoin.code, 200);
    assert_eq!(
        (rejoin.status(), rejoin.body["joined_at"].clone()),
        (polled.status(), polled.body["joined_at"].clone())
    );
    assert!(polled.position().unwrap() <= rejoin.position().unwrap());
    // Everyone who joined early is admitted or ahead of every late joiner.
    let late_first = poll(&app, late[0], event).await.position().unwrap();
    for user in early {
        let answer = poll(&app, user, event).await;
        if answer.status() == "waiting" {
            assert!(answer.position().unwrap() < late_first, "{user} joined before the opening");
        }
    }
    let positions: Vec<i64> = {
        let mut positions = Vec::new();
        for user in late.iter().rev() {
            positions.push(poll(&app, user, event).await.position().unwrap());
        }
        positions.reverse();
        positions
    };
    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "late joiners in join order: {positions:?}");
    app.stop().await;
}

#[tokio::test]
async fn waiting_users_read_sold_out_until_tickets_come_back() {
    // Goal: while every category of the event has nothing available, waiting users read sold_out; when
    // tickets come back they wait again (in their place); an admitted user keeps the pass.
    let app = TestApp::spawn().await;
    let (event, category) = event_with(&app, None, 1).await;
    put_room(&app, event, json!({"enabled": true, "admit_per_second": 1})).await;
    let buyer = join(&app, "buyer", event).await;
    assert_eq!(buyer.status(), "admitted");
    for user in ["second", "third"] {
        assert_eq!(join(&app, user, event).await.status(), "waiting");
    }
    let held = reserve_with_pass(&app, "buyer", category, Some(buyer.pass())).await;
    assert_eq!(held.status(), 201);
    let reservation = held.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();
    let sold_out = poll_until(&app, "third", event, |answer| answer.status() == "sold_out").await;
    assert!(sold_out.retry_after.is_some());
    assert_eq!(poll(&app, "buyer", event).await.status(), "admitted", "an admitted user keeps the pass");
    let cancel = app
        .client
        .post(app.url(&format!("/reservations/{reservation}/cancel")))
        .bearer_auth(user_token("buyer"))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let back = poll_until(&app, "third", event, |answer| answer.status() != "sold_out").await;
    assert_eq!(back.status(), "waiting");
    assert!(back.position().is_some());
    let levels = app.assert_conserved(category).await;
    assert_eq!((levels.available, levels.held), (1, 0));
    app.stop().await;
}

#[tokio::test]
async fn an_expired_pass_is_refused_and_its_user_rejoins_at_the_back() {
    // Goal: at pass_expires_at the pass stops working (403) and the status reads expired; joining again is
    // a new place (201) behind everyone still waiting.
    let app = TestApp::spawn().await;
    let (event, category) = event_with(&app, None, 100).await;
    put_room(&app, event, json!({"enabled": true, "admit_per_second": 1, "pass_ttl_seconds": 5})).await;
    let first = join(&app, "first", event).await;
    assert_eq!(first.status(), "admitted");
    let pass = first.pass().to_owned();
    let expires_at: DateTime<Utc> = first.body["pass_expires_at"].as_str().unwrap().parse().unwrap();
    for index in 0..20 {
        join(&app, &format!("crowd-{index:02}"), event).await;
    }
    let expired = poll_until(&app, "first", event, |answer| answer.status() == "expired").await;
    assert_eq!(expired.body["pass"], Value::Null);
    assert!(redis_now(&app).await >= expires_at);
    // The api checks a pass on its process clock, which is this process's (the app runs in it).
    wait_until(Duration::from_secs(10), "the api's clock is past pass_expires_at", || async {
        Utc::now() > expires_at
    })
    .await;
    assert_problem(reserve_with_pass(&app, "first", category, Some(&pass)).await, 403, "queue_pass_required").await;
    let rejoined = join(&app, "first", event).await;
    assert_eq!((rejoined.code, rejoined.status()), (201, "waiting"));
    let waiting = get_room(&app, event).await["waiting"].as_i64().unwrap();
    assert_eq!(rejoined.position(), Some(waiting), "the rejoiner stands at the back");
    let last = poll(&app, "crowd-19", event).await;
    assert!(last.position().unwrap() < rejoined.position().unwrap());
    app.stop().await;
}

#[tokio::test]
async fn a_room_that_is_off_admits_at_once_and_bad_requests_change_nothing() {
    // Goal: an event never configured reads enabled false with the defaults; joining it admits at once with a
    // pass; polling without joining is 404, an unknown event 404, joining after the sale window 409
    // sale_closed; a user may not configure a room (403) and out-of-range settings are 422.
    let app = TestApp::spawn().await;
    let (event, _) = event_with(&app, None, 10).await;
    let room = get_room(&app, event).await;
    assert_eq!(
        (room["enabled"].as_bool(), room["admit_per_second"].as_i64(), room["pass_ttl_seconds"].as_i64()),
        (Some(false), Some(100), Some(600))
    );
    let joined = join(&app, "walk-in", event).await;
    assert_eq!((joined.code, joined.status(), joined.retry_after), (201, "admitted", None));
    assert!(!joined.pass().is_empty());
    assert_problem(app.get(&format!("/events/{event}/queue"), Some(&user_token("stranger"))).await, 404, "not_found")
        .await;
    let unknown = app.client.post(app.url("/events/999999/queue")).bearer_auth(user_token("u")).send().await.unwrap();
    assert_problem(unknown, 404, "not_found").await;
    let body = json!({"name": "Past", "venue": "Hall", "starts_at": "2031-01-01T19:00:00Z",
        "sale_starts_at": "2025-01-01T00:00:00Z", "sale_ends_at": "2025-02-01T00:00:00Z"});
    let response = app.post("/events", Some(&admin_token()), &body).await;
    let past = response.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let late = app.client.post(app.url(&format!("/events/{past}/queue"))).bearer_auth(user_token("u")).send();
    assert_problem(late.await.unwrap(), 409, "sale_closed").await;
    let url = app.url(&format!("/events/{event}/waiting-room"));
    let by_user = app.client.put(&url).bearer_auth(user_token("u")).json(&json!({"enabled": true})).send();
    assert_problem(by_user.await.unwrap(), 403, "forbidden").await;
    let bad = app.client.put(&url).bearer_auth(admin_token()).json(&json!({"admit_per_second": 0})).send();
    assert_problem(bad.await.unwrap(), 422, "validation_failed").await;
    assert_eq!(get_room(&app, event).await["enabled"], false, "a refused change changes nothing");
    app.stop().await;
}

#[tokio::test]
async fn a_quiet_spell_never_admits_a_burst() {
    // Goal: after a spell in which users waited but nobody called (so admission was not brought up to
    // date), the next call admits at most admit_per_second users at once, as "at most admit_per_second ×
    // (T + 1) in any window of T seconds" requires for a window of length 0; the pace then resumes.
    let app = TestApp::spawn().await;
    let (event, _) = event_with(&app, None, 100).await;
    let rate = 2;
    put_room(&app, event, json!({"enabled": true, "admit_per_second": rate})).await;
    for index in 0..12 {
        join(&app, &format!("quiet-{index:02}"), event).await;
    }
    let before = get_room(&app, event).await["admitted"].as_i64().unwrap();
    // The quiet spell: no call of any kind reaches the room for 3 s (6 tokens' worth).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = get_room(&app, event).await["admitted"].as_i64().unwrap();
    assert!(after - before <= rate, "one call admitted {} users after a quiet spell, at most {rate}", after - before);
    let next = poll_until(&app, "quiet-11", event, |answer| answer.status() == "admitted").await;
    assert_eq!(next.status(), "admitted", "admission goes on at the pace");
    app.stop().await;
}

/// Waits until `api` refuses a reserve of `category` without a pass (its directory shows the room on).
async fn until_guarded(api: &TestApp, category: i64) {
    let mut probes = 0;
    while reserve_with_pass(api, "probe", category, None).await.status() != 403 {
        probes += 1;
        assert!(probes < 100, "the process never required a pass");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The scores of an event's queue, by user.
async fn queue_scores(app: &TestApp, event: i64) -> HashMap<String, f64> {
    let queue = app.keys().waiting_queue(EventId::new(event).unwrap());
    let scores: Vec<(String, f64)> = redis::cmd("ZRANGE")
        .arg(&queue)
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut app.redis.clone())
        .await
        .unwrap();
    scores.into_iter().collect()
}

#[tokio::test]
async fn the_pre_opening_shuffle_survives_a_room_that_was_off() {
    // Goal: users who join an on room before its opening get random places (below 2^52) whatever happened
    // while the room was off: a join before the admin's first PUT, a PUT without `enabled` followed by a
    // join, or an on→off→on toggle with a join in between; the users admitted while it was off must join
    // again.
    let app = TestApp::spawn().await;
    let opening = Utc::now() + chrono::Duration::days(365);
    for scenario in 0..3 {
        let (event, _) = event_with(&app, Some(opening), 10).await;
        match scenario {
            0 => {}
            1 => drop(put_room(&app, event, json!({"admit_per_second": 50})).await),
            _ => {
                put_room(&app, event, json!({"enabled": true})).await;
                put_room(&app, event, json!({"enabled": false})).await;
            }
        }
        let walk_in = join(&app, "walk-in", event).await;
        assert_eq!(walk_in.status(), "admitted", "scenario {scenario}: an off room admits at once");
        put_room(&app, event, json!({"enabled": true})).await;
        let again = app.get(&format!("/events/{event}/queue"), Some(&user_token("walk-in"))).await;
        assert_problem(again, 404, "not_found").await;
        for user in ["a", "b", "c", "walk-in"] {
            let answer = join(&app, user, event).await;
            assert_eq!((answer.code, answer.status(), answer.position()), (201, "waiting", None), "{user}");
        }
        let scores = queue_scores(&app, event).await;
        assert_eq!(scores.len(), 4);
        for (user, score) in &scores {
            assert!(*score < 4_503_599_627_370_496.0, "scenario {scenario}: {user} got a FIFO place {score}");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn turning_the_room_on_voids_every_earlier_pass() {
    // Goal: a pass given while the room was off, or before an off→on toggle, is 403 queue_pass_required
    // in every process once the room is (again) on, and holds nothing; its holder joins again and reserves
    // with the new pass.
    let isolation = Isolation::new().await;
    let app = TestApp::spawn_in(isolation.clone(), &[]).await;
    let other = TestApp::spawn_in(isolation, &[]).await;
    let (event, category) = event_with(&app, None, 100).await;
    let probed = app.create_category(event, 1000, 1000).await;
    let off_pass = join(&app, "alice", event).await.pass().to_owned();
    put_room(&app, event, json!({"enabled": true, "admit_per_second": 1000})).await;
    until_guarded(&other, probed).await;
    for api in [&app, &other] {
        assert_problem(reserve_with_pass(api, "alice", category, Some(&off_pass)).await, 403, "queue_pass_required")
            .await;
    }
    assert_eq!(app.assert_conserved(category).await.held, 0, "a voided pass holds nothing");
    let rejoined = join(&app, "alice", event).await;
    assert_eq!((rejoined.code, rejoined.status()), (201, "admitted"));
    let on_pass = rejoined.pass().to_owned();
    assert_ne!(on_pass, off_pass);
    assert_eq!(reserve_with_pass(&other, "alice", category, Some(&on_pass)).await.status(), 201);
    put_room(&app, event, json!({"enabled": false})).await;
    put_room(&app, event, json!({"enabled": true})).await;
    until_guarded(&other, probed).await;
    for api in [&app, &other] {
        assert_problem(reserve_with_pass(api, "alice", category, Some(&on_pass)).await, 403, "queue_pass_required")
            .await;
    }
    assert_eq!(app.assert_conserved(category).await.held, 1);
    other.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_category_created_in_a_guarded_event_needs_a_pass_at_once() {
    // Goal: a category created in an event whose room is on needs a pass in every process at once, also in
    // one whose directory has not refreshed since (here: never again within the test).
    let isolation = Isolation::new().await;
    let app = TestApp::spawn_in(isolation.clone(), &[]).await;
    let stale = TestApp::spawn_in(isolation, &["--waiting-room-refresh-interval", "1h"]).await;
    let (event, _) = event_with(&app, None, 100).await;
    // Turned on through the stale process, which refreshes its directory then, and not again.
    put_room(&stale, event, json!({"enabled": true, "admit_per_second": 1000})).await;
    let added = app.create_category(event, 10, 2).await;
    assert_problem(reserve_with_pass(&stale, "mallory", added, None).await, 403, "queue_pass_required").await;
    assert_eq!(app.assert_conserved(added).await.held, 0);
    let pass = join(&app, "alice", event).await.pass().to_owned();
    assert_eq!(reserve_with_pass(&stale, "alice", added, Some(&pass)).await.status(), 201);
    stale.stop().await;
    app.stop().await;
}
