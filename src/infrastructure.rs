//! Connection set-up shared by the binaries: the Redis connection (one node or a Redis
//! Cluster) and the Postgres pool (with the migrations every binary runs on start). The
//! Kafka client is set up by the `kafka` module.

pub mod replication;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr};
use redis::{Arg, Cmd, Pipeline, RedisFuture, ScriptInvocation, Value};

use replication::{ReplicaAckOptions, Replication};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::task::JoinSet;

/// Longest wait for one connection attempt to a Redis node.
const REDIS_CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a starting process waits for Redis to finish loading its data set.
const REDIS_LOADING_WAIT_MAX: Duration = Duration::from_secs(60);

/// How often a starting process asks whether Redis has finished loading.
const REDIS_LOADING_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Longest wait for a Redis reply (on a cluster: for one attempt of a request).
const REDIS_RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Longest a cluster request may take, retries and redirections included, so a request
/// for a slot whose master is failing over fails (503) within it rather than hanging.
/// Longer than one attempt: a slow reply under load is retried once before it fails.
const CLUSTER_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Retries of one cluster request (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, a dropped
/// connection) within [`CLUSTER_REQUEST_TIMEOUT`].
const CLUSTER_RETRIES: u32 = 8;

/// Shortest and longest pause between two cluster retries, in ms.
const CLUSTER_RETRY_WAIT_MIN_MS: u64 = 25;
const CLUSTER_RETRY_WAIT_MAX_MS: u64 = 400;

/// The one Redis connection type of the crate: one node, or a Redis Cluster
/// (`REDIS_CLUSTER=true`), with its replica-acknowledgment policy (see
/// [`replication`]). Cheap to clone; every clone shares the connection and the policy.
///
/// On a cluster, every command and script goes to the master of its key's slot
/// (redirections and failovers are followed by the client); a non-atomic pipeline whose
/// commands name keys of several slots is split by slot, the parts sent concurrently
/// and the replies put back in order. A transaction (`MULTI`) must stay on one slot.
#[derive(Clone)]
pub struct RedisConnection {
    link: Link,
    replication: Arc<Replication>,
}

/// The connection itself.
#[derive(Clone)]
enum Link {
    /// One Redis server, reconnected by the connection manager.
    Single(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.link {
            Link::Single(connection) => connection.req_packed_command(cmd),
            Link::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.link {
            Link::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Link::Cluster(connection) => {
                if pipeline.is_transaction() {
                    connection.req_packed_commands(pipeline, offset, count)
                } else {
                    Box::pin(split_by_slot(connection.clone(), pipeline))
                }
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(connection) => connection.get_db(),
            Link::Cluster(connection) => connection.get_db(),
        }
    }
}

impl RedisConnection {
    fn new(link: Link) -> Self {
        Self { link, replication: Arc::new(Replication::new(ReplicaAckOptions::OFF)) }
    }

    /// The same connection acknowledging writes as `options` say (see [`replication`]);
    /// learns the masters' replicas before it returns.
    pub async fn with_replica_ack(self, options: ReplicaAckOptions) -> Self {
        let connection = Self { link: self.link, replication: Arc::new(Replication::new(options)) };
        if options.replicas > 0 {
            let _ = connection.replication.wanted(None);
            connection.learn_replicas().await;
        }
        connection
    }

    /// The replica-acknowledgment options it runs with.
    pub fn replica_ack(&self) -> ReplicaAckOptions {
        self.replication.options()
    }

    /// Learns how many replicas each master has (see [`replication`]); a failure keeps
    /// what was known.
    async fn learn_replicas(&self) {
        let mut connection = self.clone();
        match &mut connection.link {
            Link::Single(single) => {
                let role: Option<Value> = redis::cmd("ROLE").query_async(single).await.ok();
                self.replication.learnt(role.as_ref().and_then(replication::replicas_in_role), None);
            }
            Link::Cluster(cluster) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random);
                let slots = cluster.route_command(redis::cmd("CLUSTER").arg("SLOTS").clone(), routing).await.ok();
                self.replication.learnt(None, slots.as_ref().and_then(replication::replicas_in_cluster_slots));
            }
        }
    }

    /// How many replicas a write to `slot` must reach; when the count is due, it is learnt
    /// again in a task of its own (a request that goes away must not leave the refresh
    /// half done), and this write goes by what is known.
    fn replicas_wanted(&self, slot: Option<u16>) -> u32 {
        let (wanted, stale) = self.replication.wanted(slot);
        if stale {
            let connection = self.clone();
            tokio::spawn(async move { connection.learn_replicas().await });
        }
        wanted
    }

    /// Runs `pipeline` (its first command names a key of `slot`) on the master of that slot
    /// as one unit, then checks the `WAIT` that [`Replication::with_wait`] appended.
    async fn run_on_master(&self, pipeline: Pipeline, slot: Option<u16>) -> redis::RedisResult<Vec<Value>> {
        let count = pipeline.len();
        let mut connection = self.clone();
        match (&mut connection.link, slot) {
            (Link::Cluster(cluster), Some(slot)) => {
                let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                cluster.route_pipeline(pipeline, 0, count, route).await
            }
            (Link::Single(single), _) => single.req_packed_commands(&pipeline, 0, count).await,
            (Link::Cluster(_), None) => {
                Err(redis::RedisError::from((redis::ErrorKind::Client, "an acknowledged write needs a key")))
            }
        }
    }

    /// Runs a script and answers its reply once the replicas the policy asks for hold
    /// its writes: the script, a marker write and a `WAIT` in one pipeline on its slot's
    /// master (the marker makes the wait cover every earlier write to that node, so a
    /// replay of an outcome another process wrote is acknowledged only once a replica
    /// holds that too). Without replicas to wait for, a plain script call. Not
    /// acknowledged in time: an error (the write may stand; the caller answers 503).
    pub async fn invoke_acknowledged(&mut self, invocation: &ScriptInvocation<'_>) -> redis::RedisResult<Value> {
        let call = redis::pipe().invoke_script(invocation).clone();
        // EVALSHA sha numkeys key...: the first key is the fourth argument.
        let first_key = call.cmd_iter().next().and_then(|cmd| match cmd.args_iter().nth(3) {
            Some(Arg::Simple(key)) => Some(key.to_vec()),
            _ => None,
        });
        let Some(first_key) = first_key else { return invocation.invoke_async(self).await };
        let slot = replication::key_slot(&first_key);
        let wanted = self.replicas_wanted(self.slot_number(Some(slot)));
        if wanted == 0 {
            return invocation.invoke_async(self).await;
        }
        let started = Instant::now();
        let replication = Arc::clone(&self.replication);
        let with_marker = |call: Pipeline| {
            let mut pipeline = call;
            pipeline.add_command(replication::marker_write(&first_key));
            replication.with_wait(pipeline, wanted)
        };
        let mut replies = self.run_on_master(with_marker(call.clone()), Some(slot)).await?;
        if matches!(replies.first(), Some(Value::ServerError(error)) if error.kind() == Some(redis::ServerErrorKind::NoScript))
        {
            invocation.load_async(self).await?;
            replies = self.run_on_master(with_marker(call), Some(slot)).await?;
        }
        let wait = replies.pop().unwrap_or(Value::Nil);
        let reply = replies.into_iter().next().unwrap_or(Value::Nil).extract_error()?;
        Replication::check_wait(&wait, wanted)?;
        replication::count_wait(started);
        Ok(reply)
    }

    /// Returns once the replicas the policy asks for hold every write that the master of
    /// `key`'s slot took before this call, whoever made it: a marker write then a `WAIT`,
    /// on that master.
    pub async fn wait_behind(&mut self, key: &str) -> redis::RedisResult<()> {
        let slot = replication::key_slot(key.as_bytes());
        let wanted = self.replicas_wanted(self.slot_number(Some(slot)));
        if wanted == 0 {
            return Ok(());
        }
        let mut marker = redis::pipe();
        marker.add_command(replication::marker_write(key.as_bytes()));
        let replies = self.run_on_master(self.replication.with_wait(marker, wanted), Some(slot)).await?;
        let wait = replies.last().cloned().unwrap_or(Value::Nil);
        Replication::check_wait(&wait, wanted)
    }

    /// The slot the policy looks up: `None` on one Redis.
    fn slot_number(&self, slot: Option<u16>) -> Option<u16> {
        match self.link {
            Link::Single(_) => None,
            Link::Cluster(_) => slot,
        }
    }
}

/// The slot of a command's first key (the argument after the command name), if any.
fn command_slot(cmd: &Cmd) -> Option<Slot> {
    match cmd.args_iter().nth(1) {
        Some(Arg::Simple(key)) => Some(Slot::for_key(key)),
        _ => None,
    }
}

/// Runs a non-atomic pipeline on a cluster one slot at a time, concurrently, and answers
/// the replies in the pipeline's order (a pipeline on one slot goes as it is).
async fn split_by_slot(connection: ClusterConnection, pipeline: &Pipeline) -> redis::RedisResult<Vec<Value>> {
    let mut parts: HashMap<Option<Slot>, (Pipeline, Vec<usize>)> = HashMap::new();
    for (index, cmd) in pipeline.cmd_iter().enumerate() {
        let (part, indices) = parts.entry(command_slot(cmd)).or_insert_with(|| (redis::pipe(), Vec::new()));
        part.add_command(cmd.clone());
        indices.push(index);
    }
    if parts.len() <= 1 {
        let mut connection = connection;
        return connection.req_packed_commands(pipeline, 0, pipeline.len()).await;
    }
    let mut requests = JoinSet::new();
    for (part, indices) in parts.into_values() {
        let mut connection = connection.clone();
        requests.spawn(async move {
            let replies = connection.req_packed_commands(&part, 0, part.len()).await;
            replies.map(|replies| (indices, replies))
        });
    }
    let mut replies = vec![Value::Nil; pipeline.len()];
    while let Some(joined) = requests.join_next().await {
        let (indices, values) = joined.map_err(|error| {
            redis::RedisError::from((redis::ErrorKind::Client, "a pipeline part failed", error.to_string()))
        })??;
        for (index, value) in indices.into_iter().zip(values) {
            replies[index] = value;
        }
    }
    Ok(replies)
}

/// Opens the Redis connection with bounded timeouts and retries: to the one server at
/// `url`, or with `cluster`, to the Redis Cluster whose seed nodes `url` lists
/// (comma-separated).
pub async fn connect_redis(url: &str, cluster: bool) -> Result<RedisConnection, redis::RedisError> {
    if cluster {
        let seeds: Vec<&str> = url.split(',').map(str::trim).filter(|seed| !seed.is_empty()).collect();
        let client = ClusterClientBuilder::new(seeds)
            .connection_timeout(REDIS_CONNECTION_TIMEOUT)
            .response_timeout(REDIS_RESPONSE_TIMEOUT)
            .overall_response_timeout(Some(CLUSTER_REQUEST_TIMEOUT))
            .retries(CLUSTER_RETRIES)
            .min_retry_wait(CLUSTER_RETRY_WAIT_MIN_MS)
            .max_retry_wait(CLUSTER_RETRY_WAIT_MAX_MS)
            .build()?;
        let mut connection = RedisConnection::new(Link::Cluster(client.get_async_connection().await?));
        wait_until_loaded(&mut connection).await?;
        return Ok(connection);
    }
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(REDIS_CONNECTION_TIMEOUT))
        .set_response_timeout(Some(REDIS_RESPONSE_TIMEOUT))
        .set_number_of_retries(3);
    let mut connection = RedisConnection::new(Link::Single(client.get_connection_manager_with_config(config).await?));
    wait_until_loaded(&mut connection).await?;
    Ok(connection)
}

/// Waits, for at most [`REDIS_LOADING_WAIT_MAX`], until Redis answers data commands.
/// Right after a restart Redis loads its AOF or RDB and answers every data command with
/// `LOADING` meanwhile; a process that starts then must wait for it, not exit. (On a
/// cluster this asks the master of one slot.)
async fn wait_until_loaded(redis: &mut RedisConnection) -> Result<(), redis::RedisError> {
    let started = tokio::time::Instant::now();
    let mut logged = false;
    loop {
        let probe: Result<i64, redis::RedisError> =
            redis::cmd("EXISTS").arg("stampede-loading-probe").query_async(redis).await;
        match probe {
            Err(error) if is_loading(&error) && started.elapsed() < REDIS_LOADING_WAIT_MAX => {
                if !logged {
                    tracing::info!("redis is loading its data set; waiting before starting");
                    logged = true;
                }
                tokio::time::sleep(REDIS_LOADING_POLL_INTERVAL).await;
            }
            result => return result.map(drop),
        }
    }
}

/// Whether `error` is Redis's `LOADING` answer.
fn is_loading(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
}

/// Why Postgres could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PersistenceError {
    /// Could not connect.
    #[error("cannot connect to postgres")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("cannot migrate postgres")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Opens a pool of at most `connections_max` connections and runs the migrations
/// (idempotent; concurrent starts serialize on the migrator's lock).
pub async fn connect_and_migrate(url: &str, connections_max: u32) -> Result<PgPool, PersistenceError> {
    let pool = PgPoolOptions::new()
        .max_connections(connections_max)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(PersistenceError::Connect)?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_grouped_by_the_slot_of_their_first_key() {
        let stock = redis::cmd("HMGET").arg("p:{c:1}:stock").arg("available").clone();
        let outbox = redis::cmd("XLEN").arg("p:{c:1}:outbox").clone();
        let other = redis::cmd("XLEN").arg("p:{c:2}:outbox").clone();
        assert_eq!(command_slot(&stock), command_slot(&outbox), "one category, one slot");
        assert_ne!(command_slot(&stock), command_slot(&other));
        assert_eq!(command_slot(&redis::cmd("PING")), None);
    }
}
