//! The lease that makes one process the only relay of a category's outbox: a Redis
//! key holding the relay's token with a TTL (`SET NX PX`), renewed while it works and
//! deleted on shutdown.
//!
//! The lease keeps duplicates rare; it is not what keeps data correct. A relay that
//! stalls past its lease and then publishes anyway only adds copies with the same
//! event ids, which the worker drops, and it only deletes stream entries that the
//! broker acknowledged to it.

use std::time::Duration;

use crate::infrastructure::RedisConnection;

use crate::lua_script;

lua_script!(RENEW_LEASE, "renew_lease", "renew_lease.lua");
lua_script!(RELEASE_LEASE, "release_lease", "release_lease.lua");

/// One process's claim on one category's outbox.
#[derive(Debug, Clone)]
pub struct Lease {
    key: String,
    token: String,
    ttl: Duration,
}

impl Lease {
    /// A lease on `key` for the process identified by `token`, lasting `ttl` per renewal.
    pub fn new(key: String, token: String, ttl: Duration) -> Self {
        Self { key, token, ttl }
    }

    fn ttl_millis(&self) -> u64 {
        crate::milliseconds::of_duration(self.ttl).max(1)
    }

    /// Takes the lease if nobody holds it; `true` when this process holds it now.
    pub async fn acquire(&self, redis: &mut RedisConnection) -> redis::RedisResult<bool> {
        let reply: Option<String> = redis::cmd("SET")
            .arg(&self.key)
            .arg(&self.token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_millis())
            .query_async(redis)
            .await?;
        Ok(reply.is_some())
    }

    /// Extends the lease (or takes it back after it lapsed unclaimed); `false` when
    /// another process holds it, and this one must stop relaying.
    pub async fn renew(&self, redis: &mut RedisConnection) -> redis::RedisResult<bool> {
        let mut invocation = RENEW_LEASE.prepare();
        invocation.key(&self.key).arg(&self.token).arg(self.ttl_millis());
        let held: i64 = RENEW_LEASE.run(&invocation, redis).await?;
        Ok(held == 1)
    }

    /// Deletes the lease if it is still this process's.
    pub async fn release(&self, redis: &mut RedisConnection) -> redis::RedisResult<()> {
        let mut invocation = RELEASE_LEASE.prepare();
        invocation.key(&self.key).arg(&self.token);
        let _: i64 = RELEASE_LEASE.run(&invocation, redis).await?;
        Ok(())
    }

    /// How often to renew: a third of the TTL, so two renewals can fail before it lapses.
    pub fn renew_interval(&self) -> Duration {
        self.ttl / 3
    }
}
