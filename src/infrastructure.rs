//! Connection set-up shared by the binaries: the Redis connection and the Postgres pool
//! (with the migrations every binary runs on start). The Kafka client is set up by the
//! `kafka` module.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Opens the Redis connection with bounded timeouts and retries.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3);
    client.get_connection_manager_with_config(config).await
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
