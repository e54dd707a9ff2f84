//! The `api` process: state shared by handlers, start-up, background tasks, and the
//! one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Jwt, Role, UserId};
use crate::catalog::Catalog;
use crate::config::ApiConfig;
use crate::http::{self, ServerOptions};
use crate::keyspace::Keyspace;
use crate::persistence;
use crate::stock::Stock;

/// How often provisioning interrupted by a crash is finished.
const PROVISIONING_RECOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How long dev-mode tokens stay valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No `JWT_SECRET` and no `--dev`.
    #[error("JWT_SECRET is required (or pass --dev to use a development secret)")]
    MissingJwtSecret,
    /// Postgres could not be reached or migrated.
    #[error(transparent)]
    Persistence(#[from] persistence::PersistenceError),
    /// Redis could not be reached.
    #[error("cannot connect to redis")]
    Redis(#[from] redis::RedisError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    /// Verifies bearer tokens.
    pub jwt: Jwt,
    /// Postgres pool.
    pub database: PgPool,
    /// Multiplexed Redis connection.
    pub redis: ConnectionManager,
    /// Redis key layout.
    pub keys: Keyspace,
    /// Events and categories.
    pub catalog: Catalog,
    /// Stock levels.
    pub stock: Stock,
    /// How long a hold lasts.
    pub hold_ttl: Duration,
}

/// A started API.
pub struct RunningApi {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// In `--dev` mode: an admin and a user token.
    pub dev_tokens: Option<(String, String)>,
    task: JoinHandle<()>,
}

impl RunningApi {
    /// Waits until the API has shut down (after the shutdown token fires).
    pub async fn wait(self) {
        if let Err(error) = self.task.await {
            tracing::error!(%error, "api task panicked");
        }
    }
}

/// Opens the Redis connection with bounded timeouts and retries.
pub async fn connect_redis(url: &str) -> Result<ConnectionManager, redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(3);
    client.get_connection_manager_with_config(config).await
}

/// Starts the API: connects, migrates, recovers provisioning, binds and serves until
/// `shutdown` fires.
pub async fn start(config: ApiConfig, shutdown: CancellationToken) -> Result<RunningApi, StartError> {
    let secret = config.effective_jwt_secret().ok_or(StartError::MissingJwtSecret)?;
    let jwt = Jwt::new(&secret);
    let database = persistence::connect_and_migrate(&config.database_url, config.database_connections_max).await?;
    let redis = connect_redis(&config.redis_url).await?;
    let keys = Keyspace::new(config.redis_key_prefix.clone());
    let stock = Stock::new(redis.clone(), keys.clone());
    let catalog = Catalog::new(database.clone(), stock.clone());
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let dev_tokens = config.dev.then(|| dev_tokens(&jwt));
    let state = Arc::new(AppState { jwt, database, redis, keys, catalog, stock, hold_ttl: config.hold_ttl });
    let options = ServerOptions {
        connections_max: config.connections_max,
        header_read_timeout: config.header_read_timeout,
        shutdown_timeout: config.shutdown_timeout,
    };
    let task = tokio::spawn(serve_until_shutdown(state, listener, options, shutdown));
    Ok(RunningApi { local_addr, dev_tokens, task })
}

async fn serve_until_shutdown(
    state: Arc<AppState>,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
) {
    let background = TaskTracker::new();
    background.spawn(recover_provisioning(state.catalog.clone(), shutdown.clone()));
    http::serve(listener, state.clone(), options, shutdown.clone()).await;
    background.close();
    if tokio::time::timeout(options.shutdown_timeout, background.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop before the shutdown deadline");
    }
    state.database.close().await;
    tracing::info!("api stopped");
}

async fn recover_provisioning(catalog: Catalog, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(PROVISIONING_RECOVERY_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match catalog.recover_provisioning().await {
            Ok(0) => {}
            Ok(count) => tracing::info!(count, "finished interrupted category provisioning"),
            Err(error) => tracing::warn!(?error, "provisioning recovery failed; will retry"),
        }
    }
}

fn dev_tokens(jwt: &Jwt) -> (String, String) {
    let admin = jwt.mint(&UserId::parse("dev-admin").expect("valid"), Role::Admin, DEV_TOKEN_TTL);
    let user = jwt.mint(&UserId::parse("dev-user").expect("valid"), Role::User, DEV_TOKEN_TTL);
    (admin, user)
}

/// Runs the API until `shutdown` fires; prints the address (and dev tokens) on start.
pub async fn run(config: ApiConfig, shutdown: CancellationToken) -> Result<(), StartError> {
    let running = start(config, shutdown).await?;
    tracing::info!(addr = %running.local_addr, "api listening");
    println!("listening on http://{}", running.local_addr);
    if let Some((admin, user)) = &running.dev_tokens {
        println!("dev mode: tokens valid for 24 h");
        println!("ADMIN_TOKEN={admin}");
        println!("USER_TOKEN={user}");
    }
    running.wait().await;
    Ok(())
}
