//! Workers that share a topic's partitions by themselves (`WORKER_PARTITIONS=shared`).
//!
//! Each worker heartbeats a member row in Postgres every third of `WORKER_LEASE_TTL`;
//! the live members, in a fixed order, split the partitions round-robin
//! ([`assignment`]), so every worker computes the same split. A worker consumes a
//! partition only under its lease (a `partition_leases` row with an owner, an epoch and
//! an expiry): it takes a partition assigned to it once the lease is free, expired or
//! its own (a takeover raises the epoch), renews the leases it holds, and hands back the
//! ones assigned elsewhere after their consumer stopped. So a dead worker's partitions
//! move within a lease TTL plus a heartbeat, and a new or departed worker rebalances.
//!
//! Fencing: a batch's offset moves only while its (owner, epoch) still holds the lease,
//! checked in the statement that moves the offset, inside the batch's transaction, with
//! the lease row share-locked until commit (`advance_offset.sql`). A worker that lost a
//! partition (paused past its lease, cut off from Postgres) can never commit for it; its
//! consumer stops at the first refused batch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A held lease: what a batch must still hold to move its partition's offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// This worker's member id.
    pub owner: Arc<str>,
    /// The lease's epoch when this worker took it.
    pub epoch: i64,
    /// How long Postgres lets a batch transaction sit idle (a paused worker) before ending it.
    pub idle_transaction_timeout: Duration,
}

/// How a sharing worker runs.
#[derive(Debug, Clone)]
pub struct LeaseOptions {
    /// The topic.
    pub topic: String,
    /// Its partition count.
    pub partition_count: i32,
    /// How long a lease and a heartbeat last without renewal.
    pub ttl: Duration,
    /// How long a consumer that is handed over may take to finish its batch.
    pub stop_timeout: Duration,
}

/// The partitions `member` consumes when `members` (sorted) are alive: partition `p`
/// goes to member `p mod N`.
pub fn assignment(members: &[String], member: &str, partition_count: i32) -> BTreeSet<i32> {
    let Some(index) = members.iter().position(|candidate| candidate == member) else { return BTreeSet::new() };
    let count = i32::try_from(members.len()).unwrap_or(i32::MAX);
    (0..partition_count).filter(|partition| partition % count == i32::try_from(index).unwrap_or(i32::MAX)).collect()
}

/// Whether `fence` still holds `partition`'s lease.
pub async fn holds(database: &PgPool, topic: &str, partition: i32, fence: &Fence) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(include_str!("lease/holds.sql"))
        .bind(topic)
        .bind(partition)
        .bind(fence.owner.as_ref())
        .bind(fence.epoch)
        .fetch_one(database)
        .await
}

struct Held {
    fence: Fence,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One sharing worker: its member id and the partitions it holds.
pub struct Leases {
    database: PgPool,
    options: LeaseOptions,
    member: Arc<str>,
    held: BTreeMap<i32, Held>,
}

impl Leases {
    /// A new member of the topic's workers (a random id per process).
    pub fn new(database: PgPool, options: LeaseOptions) -> Self {
        let member: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        Self { database, options, member, held: BTreeMap::new() }
    }

    /// Heartbeats and rebalances every third of the TTL until `shutdown`; `start` spawns the
    /// consumer of a partition this worker took, which must stop when its token fires. On
    /// shutdown every consumer stops, then the leases are handed back and the member leaves.
    pub async fn run<F>(mut self, mut start: F, shutdown: CancellationToken)
    where
        F: FnMut(i32, Fence, CancellationToken) -> JoinHandle<()>,
    {
        tracing::info!(member = %self.member, "sharing the topic's partitions with the other workers");
        let mut ticker = tokio::time::interval(self.options.ttl / 3);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if let Err(error) = self.round(&mut start).await {
                tracing::warn!(%error, "partition lease round failed; retrying");
            }
            metrics::gauge!("worker_partitions_owned").set(self.held.len() as f64);
        }
        self.leave().await;
    }

    /// One heartbeat: renew or hand back what is held, take what is assigned and free.
    async fn round<F>(&mut self, start: &mut F) -> Result<(), sqlx::Error>
    where
        F: FnMut(i32, Fence, CancellationToken) -> JoinHandle<()>,
    {
        let ttl_ms = i64::try_from(self.options.ttl.as_millis()).unwrap_or(i64::MAX);
        let members: Vec<String> = sqlx::query_scalar(include_str!("lease/heartbeat.sql"))
            .bind(&self.options.topic)
            .bind(self.member.as_ref())
            .bind(ttl_ms)
            .fetch_all(&self.database)
            .await?;
        let assigned = assignment(&members, &self.member, self.options.partition_count);
        let partitions: Vec<i32> = self.held.keys().copied().collect();
        for partition in partitions {
            self.keep_or_hand_back(partition, assigned.contains(&partition), ttl_ms).await?;
        }
        let free: Vec<i32> = assigned.into_iter().filter(|partition| !self.held.contains_key(partition)).collect();
        for partition in free {
            let epoch: Option<i64> = sqlx::query_scalar(include_str!("lease/acquire.sql"))
                .bind(&self.options.topic)
                .bind(partition)
                .bind(self.member.as_ref())
                .bind(ttl_ms)
                .fetch_optional(&self.database)
                .await?;
            let Some(epoch) = epoch else { continue };
            tracing::info!(partition, epoch, "took the partition's lease");
            let fence = Fence { owner: self.member.clone(), epoch, idle_transaction_timeout: self.options.ttl };
            let stop = CancellationToken::new();
            let task = start(partition, fence.clone(), stop.clone());
            self.held.insert(partition, Held { fence, stop, task });
        }
        Ok(())
    }

    /// Renews a held partition that stays here; stops and hands back one assigned
    /// elsewhere, or whose consumer ended; forgets one whose lease was lost.
    async fn keep_or_hand_back(&mut self, partition: i32, assigned: bool, ttl_ms: i64) -> Result<(), sqlx::Error> {
        let held = &self.held[&partition];
        if assigned && !held.task.is_finished() {
            let renewed = sqlx::query(include_str!("lease/renew.sql"))
                .bind(&self.options.topic)
                .bind(partition)
                .bind(held.fence.owner.as_ref())
                .bind(held.fence.epoch)
                .bind(ttl_ms)
                .execute(&self.database)
                .await?;
            if renewed.rows_affected() == 1 {
                return Ok(());
            }
            tracing::warn!(partition, "lost the partition's lease; stopping its consumer");
            metrics::counter!("worker_partition_leases_lost_total").increment(1);
            let held = self.held.remove(&partition).expect("held");
            held.stop.cancel();
            return Ok(());
        }
        let held = self.held.remove(&partition).expect("held");
        held.stop.cancel();
        if tokio::time::timeout(self.options.stop_timeout, held.task).await.is_err() {
            tracing::warn!(partition, "the consumer did not stop in time; its lease expires by itself");
            return Ok(());
        }
        self.release(partition, &held.fence).await?;
        tracing::info!(partition, "handed the partition's lease back");
        Ok(())
    }

    async fn release(&self, partition: i32, fence: &Fence) -> Result<(), sqlx::Error> {
        sqlx::query(include_str!("lease/release.sql"))
            .bind(&self.options.topic)
            .bind(partition)
            .bind(fence.owner.as_ref())
            .bind(fence.epoch)
            .execute(&self.database)
            .await
            .map(|_| ())
    }

    /// Shutdown: stop every consumer (each commits its batch), hand the leases back, leave.
    async fn leave(mut self) {
        let held = std::mem::take(&mut self.held);
        for entry in held.values() {
            entry.stop.cancel();
        }
        for (partition, entry) in held {
            if tokio::time::timeout(self.options.stop_timeout, entry.task).await.is_ok()
                && let Err(error) = self.release(partition, &entry.fence).await
            {
                tracing::warn!(partition, %error, "cannot hand the lease back; it expires by itself");
            }
        }
        let left = sqlx::query(include_str!("lease/leave.sql"))
            .bind(&self.options.topic)
            .bind(self.member.as_ref())
            .execute(&self.database)
            .await;
        if let Err(error) = left {
            tracing::warn!(%error, "cannot leave the member list; the heartbeat expires by itself");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(count: usize) -> Vec<String> {
        (0..count).map(|index| format!("m{index}")).collect()
    }

    #[test]
    fn every_partition_goes_to_exactly_one_live_member() {
        for count in 1..=5 {
            let members = members(count);
            let mut owned = Vec::new();
            for member in &members {
                owned.extend(assignment(&members, member, 8));
            }
            owned.sort_unstable();
            assert_eq!(owned, (0..8).collect::<Vec<_>>(), "{count} members");
        }
        assert_eq!(assignment(&members(3), "m0", 8), BTreeSet::from([0, 3, 6]));
        assert!(assignment(&members(3), "gone", 8).is_empty(), "a member not in the list takes nothing");
    }
}
