//! Postgres: the connection pool and the migrations every binary runs on start, and
//! the read side of the rows the event pipeline writes ([`reservations`]).

pub mod reservations;

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

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
