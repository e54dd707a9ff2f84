//! The `api` process: state shared by handlers, start-up, background tasks, and the
//! one shutdown path.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::infrastructure::RedisConnection;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Jwt, Role};
use crate::availability::watcher::{WatcherOptions, Watchers};
use crate::catalog::Catalog;
use crate::config::ApiConfig;
use crate::http::availability_stream::{StreamOptions, Streams};
use crate::http::state::AppState;
use crate::http::{self, ServerOptions};
use crate::ids::UserId;
use crate::infrastructure::replication::ReplicaAckOptions;
use crate::infrastructure::{self, connect_redis};
use crate::keyspace::Keyspace;
use crate::payment::SimulatedGateway;
use crate::relay::{self, RelayOptions};
use crate::reservation::admission::Admission;
use crate::reservation::engine::PAYMENT_WINDOW_MARGIN;
use crate::reservation::reaper::{Reaper, ReaperOptions};
use crate::reservation::{EngineOptions, ReservationEngine};
use crate::stock::Stock;
use crate::telemetry;
use crate::waiting_room::pass::{PassKeys, PassKeysError};
use crate::waiting_room::{WaitingRoomOptions, WaitingRooms};

/// How often provisioning interrupted by a crash is finished.
const PROVISIONING_RECOVERY_INTERVAL: Duration = Duration::from_secs(30);
/// How long dev-mode tokens stay valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why the API could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No `JWT_SECRET` and no `--dev`.
    #[error(
        "JWT_SECRET is required (or pass the --dev flag to use a development secret; no environment variable turns on dev mode)"
    )]
    MissingJwtSecret,
    /// Postgres could not be reached or migrated.
    #[error(transparent)]
    Persistence(#[from] infrastructure::PersistenceError),
    /// The waiting-room directory could not be loaded.
    #[error("cannot load the waiting rooms")]
    WaitingRooms(#[from] crate::waiting_room::WaitingRoomError),
    /// `QUEUE_PASS_KEYS` is malformed.
    #[error(transparent)]
    PassKeys(#[from] PassKeysError),
    /// The relay settings contradict each other.
    #[error(transparent)]
    RelayConfig(#[from] relay::RelayConfigError),
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

/// Starts the API: connects, migrates, recovers provisioning, binds and serves until
/// `shutdown` fires.
pub async fn start(config: ApiConfig, shutdown: CancellationToken) -> Result<RunningApi, StartError> {
    let secret = config.effective_jwt_secret().ok_or(StartError::MissingJwtSecret)?;
    let jwt = Jwt::new(&secret);
    let pass_keys = match &config.queue_pass_keys {
        Some(keys) => PassKeys::parse(keys)?,
        None => PassKeys::derived_from(&secret),
    };
    let relay_options = config.relay_enabled.then(|| RelayOptions::from_config(&config)).transpose()?;
    let database =
        infrastructure::connect_and_migrate(&config.shared.database_url, config.database_connections_max).await?;
    let replica_ack =
        ReplicaAckOptions { replicas: config.redis_replicas_ack, timeout: config.redis_replicas_ack_timeout };
    let redis = connect_redis(&config.shared.redis_url, config.shared.redis_cluster).await?;
    let redis = redis.with_replica_ack(replica_ack).await;
    // The relay's large stream reads get a connection of their own, so parsing them
    // never holds up the replies of the request path.
    let relay = match relay_options {
        Some(options) => {
            let relay_redis = connect_redis(&config.shared.redis_url, config.shared.redis_cluster).await?;
            Some((relay_redis.with_replica_ack(replica_ack).await, options))
        }
        None => None,
    };
    let keys = Keyspace::new(config.shared.redis_key_prefix.clone());
    let stock = Stock::new(redis.clone(), keys.clone());
    let catalog = Catalog::new(database.clone(), stock.clone());
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let dev_tokens = config.dev.then(|| dev_tokens(&jwt));
    let metrics = telemetry::install_metrics();
    let reservations = reservation_engine(&config, redis.clone(), keys.clone());
    let reaper_options = ReaperOptions { interval: config.reaper_interval, batch_max: config.reaper_batch_max };
    let reaper = config.reaper_enabled.then(|| Reaper::new(&reservations, reaper_options));
    let admission = Admission::new(config.reserve_in_flight_max, config.rate_limit_per_ip_per_second);
    let hold_ttl = config.hold_ttl;
    let watcher_options = WatcherOptions { poll_interval: config.availability_poll_interval };
    let availability = Watchers::new(catalog.clone(), stock.clone(), watcher_options, shutdown.clone());
    let stream_options = StreamOptions {
        streams_max: config.streams_max as usize,
        keep_alive_interval: config.stream_keep_alive_interval,
    };
    let streams = Streams::new(stream_options, shutdown.clone());
    let room_options = WaitingRoomOptions { pass_keys, refresh_interval: config.waiting_room_refresh_interval };
    let waiting_rooms = WaitingRooms::new(redis.clone(), keys.clone(), database.clone(), stock.clone(), room_options);
    // The directory is loaded before the first request, so a restart never serves a guarded
    // category without the pass check.
    waiting_rooms.load_scripts().await?;
    waiting_rooms.refresh().await?;
    let state = Arc::new(AppState {
        jwt,
        database,
        redis,
        keys,
        catalog,
        stock,
        hold_ttl,
        metrics,
        reservations,
        admission,
        availability,
        streams,
        waiting_rooms,
    });
    let options = ServerOptions {
        connections_max: config.connections_max,
        request_timeout: config.request_timeout,
        shutdown_timeout: config.shared.shutdown_timeout,
    };
    let task = tokio::spawn(serve_until_shutdown(state, listener, options, relay, reaper, shutdown));
    Ok(RunningApi { local_addr, dev_tokens, task })
}

async fn serve_until_shutdown(
    state: Arc<AppState>,
    listener: TcpListener,
    options: ServerOptions,
    relay: Option<(RedisConnection, RelayOptions)>,
    reaper: Option<Reaper>,
    shutdown: CancellationToken,
) {
    let background = TaskTracker::new();
    if let Some(reaper) = reaper {
        background.spawn(reaper.run(shutdown.clone()));
    }
    // The relay stops after the HTTP server has drained, so it flushes the events of
    // the last requests; anything it cannot flush stays in the outbox for the next relay.
    let relay_stop = CancellationToken::new();
    if let Some((redis, relay)) = relay {
        background.spawn(relay::run(redis, state.keys.clone(), relay, relay_stop.clone()));
    }
    background.spawn(recover_provisioning(state.catalog.clone(), shutdown.clone()));
    background.spawn(state.waiting_rooms.clone().run_refresher(shutdown.clone()));
    background.spawn(telemetry::sampler::run(
        state.redis.clone(),
        state.keys.clone(),
        state.metrics.clone(),
        shutdown.clone(),
    ));
    http::serve(listener, state.clone(), options, shutdown.clone()).await;
    relay_stop.cancel();
    background.close();
    if tokio::time::timeout(options.shutdown_timeout, background.wait()).await.is_err() {
        tracing::warn!("background tasks did not stop before the shutdown deadline");
    }
    state.database.close().await;
    tracing::info!("api stopped");
}

/// The reservation engine with the simulated payment gateway. The payment window is
/// the payment timeout plus a margin, so a charge that answers in time is always
/// recorded before the reaper may take the hold back.
fn reservation_engine(config: &ApiConfig, redis: RedisConnection, keys: Keyspace) -> ReservationEngine {
    let gateway = Arc::new(SimulatedGateway::new(redis.clone(), &keys, config.payment_latency));
    let options = EngineOptions {
        hold_ttl: config.hold_ttl,
        outbox_backlog_max: config.outbox_backlog_max,
        payment_timeout: config.payment_timeout,
        payment_window: config.payment_timeout + PAYMENT_WINDOW_MARGIN,
        record_ttl: config.record_ttl,
        reserve_batch_max: config.reserve_batch_max,
    };
    ReservationEngine::new(redis, keys, gateway, options).with_sold_out_verdict_ttl(config.sold_out_verdict_ttl)
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
