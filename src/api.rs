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

use crate::auth::claims::RoleClaimError;
use crate::auth::{Authenticator, ClaimRules, Jwt, KeySet, KeySetError, Role};
use crate::availability::watcher::{WatcherOptions, Watchers};
use crate::catalog::Catalog;
use crate::config::{ApiConfig, DEV_JWT_SECRET, JwtSecretError, Secret};
use crate::http;
use crate::http::availability_stream::{StreamOptions, Streams};
use crate::http::state::AppState;
use crate::ids::UserId;
use crate::infrastructure::replication::ReplicaAckOptions;
use crate::infrastructure::{self, RedisTarget, connect_redis_to};
use crate::kafka::KafkaSecurity;
use crate::keyspace::Keyspace;
use crate::payment::SimulatedGateway;
use crate::rate_limit::{UserRateLimit, UserRateOptions};
use crate::relay::publisher::PublisherOptions;
use crate::relay::{self, RelayOptions};
use crate::reservation::PAYMENT_WINDOW_MARGIN;
use crate::reservation::admission::Admission;
use crate::reservation::reaper::{Reaper, ReaperOptions};
use crate::reservation::{EngineOptions, ReservationEngine};
use crate::server::ServerOptions;
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
    /// `JWT_SECRET` is missing, too short or public.
    #[error(transparent)]
    JwtSecret(#[from] JwtSecretError),
    /// Only a key set verifies tokens, and nothing signs queue passes.
    #[error("QUEUE_PASS_KEYS is required when JWT_SECRET is not set (queue passes are signed with it)")]
    MissingPassKeys,
    /// A JWT claim setting is unusable.
    #[error(transparent)]
    RoleClaim(#[from] RoleClaimError),
    /// The identity provider's key set could not be loaded.
    #[error("cannot load JWT_JWKS_URL")]
    KeySet(#[from] KeySetError),
    /// A Redis TLS setting cannot be honoured.
    #[error(transparent)]
    RedisTls(#[from] infrastructure::RedisTlsError),
    /// A Kafka TLS or SASL setting cannot be honoured.
    #[error(transparent)]
    KafkaSecurity(#[from] crate::kafka::KafkaSecurityError),
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
/// `stop` fires; then `GET /ready` answers 503 at once, everything else is served for
/// `SHUTDOWN_READINESS_DELAY` more, and then the server stops accepting and drains.
pub async fn start(config: ApiConfig, stop: CancellationToken) -> Result<RunningApi, StartError> {
    // Every task watches `shutdown`, which fires once the readiness delay is over.
    let shutdown = CancellationToken::new();
    let secret = config.effective_jwt_secret()?;
    let pass_keys = match (&config.queue_pass_keys, &secret) {
        (Some(keys), _) => PassKeys::parse(keys)?,
        (None, Some(secret)) => PassKeys::derived_from(secret),
        (None, None) => return Err(StartError::MissingPassKeys),
    };
    let jwt = authenticator(&config, secret.as_ref()).await?;
    let kafka_security = KafkaSecurity::from_config(&config.shared)?;
    let relay_options = config.relay_enabled.then(|| relay_options(&config, kafka_security)).transpose()?;
    let redis_target = RedisTarget::from_config(&config.shared)?;
    let database =
        infrastructure::connect_and_migrate(&config.shared.database_url, config.database_connections_max).await?;
    let replica_ack =
        ReplicaAckOptions { replicas: config.redis_replicas_ack, timeout: config.redis_replicas_ack_timeout };
    let redis = connect_redis_to(&redis_target).await?.with_replica_ack(replica_ack).await;
    // The relay's large stream reads get a connection of their own, so parsing them
    // never holds up the replies of the request path.
    let relay = match relay_options {
        Some(options) => Some((connect_redis_to(&redis_target).await?.with_replica_ack(replica_ack).await, options)),
        None => None,
    };
    let keys = Keyspace::new(config.shared.redis_key_prefix.clone());
    let stock = Stock::new(redis.clone(), keys.clone());
    let catalog = Catalog::new(database.clone(), stock.clone());
    let listener = TcpListener::bind(config.listen_addr)
        .await
        .map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| StartError::Bind { addr: config.listen_addr, source })?;
    let dev_tokens = config.prints_dev_tokens().then(dev_tokens);
    let metrics = telemetry::install_metrics();
    let reservations = reservation_engine(&config, redis.clone(), keys.clone());
    let reaper_options = ReaperOptions { interval: config.reaper_interval, batch_max: config.reaper_batch_max };
    let reaper = config.reaper_enabled.then(|| Reaper::new(&reservations, reaper_options));
    let admission = Admission::new(config.reserve_in_flight_max, config.rate_limit_per_ip_per_second);
    let user_rate_limit = user_rate_limit(&config, redis.clone(), keys.clone());
    let hold_ttl = config.hold_ttl;
    let watcher_options = WatcherOptions { poll_interval: config.availability_poll_interval };
    let availability = Watchers::new(catalog.clone(), stock.clone(), watcher_options, shutdown.clone());
    let streams = streams(&config, shutdown.clone());
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
        stopping: stop.clone(),
        user_rate_limit,
        trusted_proxies: config.trusted_proxies.clone(),
    });
    tokio::spawn(shut_down_after_readiness_delay(stop, config.shutdown_readiness_delay, shutdown.clone()));
    let task = tokio::spawn(serve_until_shutdown(state, listener, server_options(&config), relay, reaper, shutdown));
    Ok(RunningApi { local_addr, dev_tokens, task })
}

/// The per-user rate limit of the configuration.
fn user_rate_limit(config: &ApiConfig, redis: RedisConnection, keys: Keyspace) -> UserRateLimit {
    let options = UserRateOptions {
        per_second: config.rate_limit_per_user_per_second,
        burst: config.rate_limit_per_user_burst,
        per_day: config.rate_limit_per_user_per_day,
    };
    UserRateLimit::new(redis, keys, options)
}

/// The availability streams and their bounds.
fn streams(config: &ApiConfig, shutdown: CancellationToken) -> Streams {
    let options = StreamOptions {
        streams_max: config.streams_max as usize,
        streams_per_client_max: config.streams_per_client_max as usize,
        keep_alive_interval: config.stream_keep_alive_interval,
    };
    Streams::new(options, shutdown)
}

/// The HTTP server's limits.
fn server_options(config: &ApiConfig) -> ServerOptions {
    ServerOptions {
        connections_max: config.connections_max,
        request_timeout: config.request_timeout,
        shutdown_timeout: config.shared.shutdown_timeout,
    }
}

/// Once `stop` fires (readiness is already off), waits `delay` and then fires `shutdown`.
async fn shut_down_after_readiness_delay(stop: CancellationToken, delay: Duration, shutdown: CancellationToken) {
    stop.cancelled().await;
    if !delay.is_zero() {
        tracing::info!(delay = ?delay, "not ready; still serving during the readiness delay");
        tokio::time::sleep(delay).await;
    }
    shutdown.cancel();
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
    background.spawn(crate::stock::sampler::run(
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

/// The token verifier: HS256 under `secret` (when set) and the key set's tokens (when
/// `JWT_JWKS_URL` is set, fetched now).
async fn authenticator(config: &ApiConfig, secret: Option<&Secret>) -> Result<Authenticator, StartError> {
    let rules = ClaimRules::new(config.jwt_issuer.clone(), config.jwt_audience.clone(), &config.jwt_role_claim)?;
    let key_set = match &config.jwt_jwks_url {
        Some(url) => Some(KeySet::fetch(url).await?),
        None => None,
    };
    Ok(Authenticator::new(secret, key_set, rules))
}

/// An admin and a user token signed with the public development secret.
fn dev_tokens() -> (String, String) {
    let jwt = Jwt::new(&Secret::new(DEV_JWT_SECRET));
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

/// The relay's options from the API configuration, checked by [`RelayOptions::validated`].
fn relay_options(config: &ApiConfig, security: KafkaSecurity) -> Result<RelayOptions, relay::RelayConfigError> {
    RelayOptions {
        publisher: PublisherOptions {
            brokers: config.shared.kafka_brokers.clone(),
            security,
            topic: config.shared.kafka_topic.clone(),
            partitions: config.shared.kafka_partitions,
            timeout: config.relay_publish_timeout,
            produce_bytes_max: config.relay_produce_bytes_max as usize,
        },
        batch_records_max: config.relay_batch_records_max,
        linger: config.relay_linger,
        idle_interval: config.relay_idle_interval.max(config.relay_linger),
        lease_ttl: config.relay_lease_ttl,
        backoff_max: config.relay_backoff_max,
    }
    .validated()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_lease_must_outlive_the_slowest_round() {
        let config = ApiConfig::parse_from(["api"]);
        assert!(relay_options(&config, KafkaSecurity::plain()).is_ok());
        let config = ApiConfig::parse_from(["api", "--relay-lease-ttl", "5s", "--relay-publish-timeout", "5s"]);
        assert!(relay_options(&config, KafkaSecurity::plain()).is_err());
    }
}
