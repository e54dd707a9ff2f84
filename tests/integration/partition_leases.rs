//! Workers that share the topic's partitions by themselves (`WORKER_PARTITIONS=shared`):
//! every partition owned once, a dead worker's partitions taken over within 10 s, a new
//! worker rebalancing, and a worker that lost a partition never committing for it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use stampede::worker::apply::{self, Applied, Batch, Position};
use stampede::worker::lease::Fence;

use crate::support::harness::{Isolation, TestApp, user_token, wait_until};
use crate::support::pipeline::{
    ChildProcess, database, event_rows, reconcile, relay_flags_with_partitions, shared_brokers, spawn_worker,
    wait_for_event_rows,
};

const PARTITIONS: &str = "8";

/// The live leases: partition to owner.
async fn leases(database: &PgPool, topic: &str) -> BTreeMap<i32, String> {
    let rows: Vec<(i32, String)> = sqlx::query_as(
        "SELECT partition, owner FROM partition_leases WHERE topic = $1 AND expires_at > clock_timestamp()",
    )
    .bind(topic)
    .fetch_all(database)
    .await
    .unwrap_or_default();
    rows.into_iter().collect()
}

/// Partitions held per owner, when all 8 are held by exactly `owners` workers in a fair split.
async fn split_among(database: &PgPool, topic: &str, owners: usize) -> Option<BTreeMap<String, usize>> {
    let leases = leases(database, topic).await;
    let mut held: BTreeMap<String, usize> = BTreeMap::new();
    for owner in leases.values() {
        *held.entry(owner.clone()).or_default() += 1;
    }
    let fair = held.values().all(|count| (8 / owners..=8usize.div_ceil(owners)).contains(count));
    (leases.len() == 8 && held.len() == owners && fair).then_some(held)
}

fn spawn_sharing_worker(isolation: &Isolation) -> ChildProcess {
    spawn_worker(isolation, &shared_brokers(), &[("KAFKA_PARTITIONS", PARTITIONS), ("WORKER_PARTITIONS", "shared")])
}

/// `count` single-ticket holds spread over `categories`; returns how many were made.
async fn reserve_holds(app: &TestApp, categories: &[i64], label: &str, count: usize) -> i64 {
    for index in 0..count {
        let body = json!({"category_id": categories[index % categories.len()], "quantity": 1});
        let response = app.post("/reserve", Some(&user_token(&format!("{label}-{index}"))), &body).await;
        assert_eq!(response.status(), 201, "{:?}", response.text().await);
    }
    count as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_share_partitions_take_over_a_dead_ones_and_rebalance() {
    // Goal: 3 workers without WORKER_PARTITIONS own each of 8 partitions once; a SIGKILLed worker's partitions are taken over within 10 s with nothing lost or applied twice; a 4th worker gets its share; a SIGSTOPped worker past its lease resumes without committing, and reconcile finds no drift.
    let isolation = Isolation::new().await;
    let flags = relay_flags_with_partitions(PARTITIONS);
    let app = TestApp::spawn_in(isolation.clone(), &flags).await;
    let topic = isolation.kafka_topic.clone();
    let database = database(&isolation).await;
    let mut workers: Vec<ChildProcess> = (0..3).map(|_| spawn_sharing_worker(&isolation)).collect();
    wait_until(Duration::from_secs(30), "3 workers split 8 partitions", || async {
        split_among(&database, &topic, 3).await.is_some()
    })
    .await;
    let event = app.create_event().await;
    let mut categories = Vec::new();
    for _ in 0..8 {
        categories.push(app.create_category(event, 100, 100).await);
    }
    let mut holds = reserve_holds(&app, &categories, "before", 40).await;
    wait_for_event_rows(&database, holds, Duration::from_secs(30)).await;

    let before = leases(&database, &topic).await;
    workers.remove(0).kill().await;
    holds += reserve_holds(&app, &categories, "orphaned", 40).await;
    let killed_at = std::time::Instant::now();
    wait_until(Duration::from_secs(10), "the dead worker's partitions are taken over", || async {
        split_among(&database, &topic, 2).await.is_some()
    })
    .await;
    let takeover = killed_at.elapsed();
    assert_ne!(leases(&database, &topic).await, before);
    wait_for_event_rows(&database, holds, Duration::from_secs(30)).await;

    workers.push(spawn_sharing_worker(&isolation));
    wait_until(Duration::from_secs(30), "a 4th worker (3 alive) gets its share", || async {
        split_among(&database, &topic, 3).await.is_some()
    })
    .await;
    holds += reserve_holds(&app, &categories, "rebalanced", 24).await;
    wait_for_event_rows(&database, holds, Duration::from_secs(30)).await;

    let paused = &workers[0];
    paused.signal("STOP");
    wait_until(Duration::from_secs(30), "the paused worker's partitions are taken over", || async {
        split_among(&database, &topic, 2).await.is_some()
    })
    .await;
    holds += reserve_holds(&app, &categories, "paused", 24).await;
    wait_for_event_rows(&database, holds, Duration::from_secs(30)).await;
    paused.signal("CONT");
    wait_until(Duration::from_secs(30), "the resumed worker rejoins", || async {
        split_among(&database, &topic, 3).await.is_some()
    })
    .await;
    holds += reserve_holds(&app, &categories, "resumed", 24).await;
    wait_for_event_rows(&database, holds, Duration::from_secs(30)).await;
    assert_eq!(event_rows(&database).await, holds, "every hold applied exactly once");
    let (code, output) = reconcile(&isolation, &shared_brokers(), false).await;
    assert_eq!(code, 0, "{output}");
    println!("takeover after SIGKILL: {takeover:?}");
    for worker in workers {
        worker.terminate().await;
    }
    app.stop().await;
}

#[tokio::test]
async fn a_batch_under_a_lost_lease_cannot_move_the_offset() {
    // Goal: once another worker has taken a partition's lease (a higher epoch), a batch of the previous owner is refused in its transaction: nothing is written and the offset stays.
    let isolation = Isolation::new().await;
    let pool = stampede::infrastructure::connect_and_migrate(&isolation.database_url, 2).await.unwrap();
    let topic = isolation.kafka_topic.as_str();
    let acquire = include_str!("../../src/worker/lease/acquire.sql");
    let first: i64 =
        sqlx::query_scalar(acquire).bind(topic).bind(0).bind("old").bind(3_000_i64).fetch_one(&pool).await.unwrap();
    apply::load_position(&pool, topic, 0).await.unwrap();
    let stale = Fence { owner: "old".into(), epoch: first, idle_transaction_timeout: Duration::from_secs(3) };
    let batch = |fence: &Fence| Batch {
        partition: 0,
        from_offset: 0,
        next: Position::unchecked(5),
        events: Vec::new(),
        rejected: Vec::new(),
        fence: Some(fence.clone()),
    };
    // The lease runs out (as while the old owner was paused) and another worker takes it.
    sqlx::query("UPDATE partition_leases SET expires_at = clock_timestamp() - interval '1 second'")
        .execute(&pool)
        .await
        .unwrap();
    let second: i64 =
        sqlx::query_scalar(acquire).bind(topic).bind(0).bind("new").bind(3_000_i64).fetch_one(&pool).await.unwrap();
    assert_eq!(second, first + 1);
    let refused = apply::apply(&pool, topic, &batch(&stale)).await.unwrap();
    assert_eq!(refused, Applied::Fenced { stored: Position::unchecked(0) });
    let current = Fence { owner: "new".into(), epoch: second, idle_transaction_timeout: Duration::from_secs(3) };
    assert!(matches!(apply::apply(&pool, topic, &batch(&current)).await.unwrap(), Applied::Committed { .. }));
    let stored = apply::load_position(&pool, topic, 0).await.unwrap();
    assert_eq!(stored.next_offset, 5);
    let owners: BTreeSet<String> = leases(&pool, topic).await.into_values().collect();
    assert_eq!(owners, BTreeSet::from(["new".to_owned()]));
    pool.close().await;
}
