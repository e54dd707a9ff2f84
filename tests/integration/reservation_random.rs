//! A randomized run: many users reserve, confirm, cancel and wait at random against a
//! small category with short holds, while conservation and the per-user cap are
//! checked throughout. The seed is printed; `RESERVATION_SEED=<n>` replays a run.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::join_all;
use redis::AsyncCommands;
use serde_json::{Value, json};
use stampede::ids::CategoryId;

use crate::support::harness::{TestApp, user_token, wait_until};
use crate::support::reservation::{
    assert_consistent, cancel_as, confirm_as, final_counts, id_of, levels, read, reserve_as, sale,
};

const USERS: usize = 24;
const STEPS_PER_USER: usize = 14;
const QUOTA: i64 = 30;
const MAX_PER_USER: i64 = 3;

/// Statuses a client may see for each step.
const ALLOWED: &[(&str, &[u16])] =
    &[("reserve", &[201, 409]), ("confirm", &[200, 402, 409, 410, 503]), ("cancel", &[200, 409, 410])];

fn allowed(operation: &str, status: u16) -> bool {
    ALLOWED.iter().any(|(name, statuses)| *name == operation && statuses.contains(&status))
}

/// Asserts conservation and that no user counts more than the cap.
async fn check_invariants(app: &TestApp, category: i64) {
    app.assert_conserved(category).await;
    let mut redis = app.redis.clone();
    let holders: HashMap<String, i64> =
        redis.hgetall(app.keys().holders(CategoryId::new(category).unwrap())).await.unwrap();
    assert!(holders.values().all(|count| (1..=MAX_PER_USER).contains(count)), "per-user counts {holders:?}");
}

async fn one_user(app: &TestApp, category: i64, user: String, seed: u64) -> Vec<String> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut mine: Vec<String> = Vec::new();
    for _ in 0..STEPS_PER_USER {
        let (operation, status) = match rng.u8(0..10) {
            0..=3 => {
                let body = json!({"category_id": category, "quantity": rng.i64(1..=2)});
                let response = reserve_as(app, &user, &body, None).await;
                let status = response.status().as_u16();
                if status == 201 {
                    mine.push(id_of(&response.json::<Value>().await.unwrap()));
                }
                ("reserve", status)
            }
            4..=5 if !mine.is_empty() => {
                let id = &mine[rng.usize(..mine.len())];
                let token = ["tok_ok", "tok_ok", "tok_decline", "tok_fail"][rng.usize(..4)];
                ("confirm", confirm_as(app, &user, id, token, None).await.status().as_u16())
            }
            6..=7 if !mine.is_empty() => {
                let id = &mine[rng.usize(..mine.len())];
                ("cancel", cancel_as(app, &user, id).await.status().as_u16())
            }
            _ => {
                tokio::time::sleep(Duration::from_millis(rng.u64(0..400))).await;
                continue;
            }
        };
        assert!(allowed(operation, status), "{user}: {operation} answered {status}");
        check_invariants(app, category).await;
    }
    mine
}

#[tokio::test]
async fn random_reserve_confirm_cancel_and_wait_keep_every_invariant() {
    // Goal: under random concurrent reserve/confirm/cancel/wait sequences, conservation and the per-user cap hold throughout, and the end state matches the outbox.
    let seed = crate::support::harness::seed("RESERVATION_SEED");
    let app = TestApp::spawn_with(&["--hold-ttl", "1s", "--reaper-interval", "50ms"]).await;
    let (_, category) = sale(&app, QUOTA, MAX_PER_USER).await;
    let users =
        (0..USERS).map(|index| one_user(&app, category, format!("random-{index}"), seed.wrapping_add(index as u64)));
    let holds: Vec<Vec<String>> = join_all(users).await;

    // Every remaining hold lapses (1 s TTL, 50 ms reaper), then everything must have settled.
    wait_until(Duration::from_secs(10), &format!("every hold ended (seed {seed})"), || async {
        levels(&app, category).await.held == 0
    })
    .await;
    let history = assert_consistent(&app, category).await;
    println!("final outcomes: {:?}", final_counts(&history));
    assert_eq!(history.len(), holds.iter().map(Vec::len).sum::<usize>(), "one reserved event per 201 (seed {seed})");
    for (index, ids) in holds.iter().enumerate() {
        for id in ids {
            let body: Value = read(&app, &user_token(&format!("random-{index}")), id).await.json().await.unwrap();
            assert!(["confirmed", "cancelled", "expired"].contains(&body["status"].as_str().unwrap()), "{body}");
        }
    }
    app.stop().await;
}
