//! Stampede: a flash ticket sales backend.
//!
//! Stock lives in Redis and changes only through Lua scripts, which check every
//! rule before their first write and append each state change to a per-category
//! outbox stream in the same script. Postgres holds the catalog and, through the
//! event pipeline, every reservation.
//!
//! # Layout
//! - [`api`]: the `api` process: start-up, background tasks and shutdown.
//! - [`availability`]: live availability of an event and the per-event watchers that feed its streams.
//! - [`auth`]: JWT verification (HS256, and RS256/ES256 from an identity provider's key set) and minting, claim rules, roles.
//! - [`catalog`]: events and ticket categories, and provisioning their stock.
//! - [`client_address`]: which address a request counts under behind proxies, and limits per client address.
//! - [`config`]: one clap struct per binary.
//! - [`contract`]: the contract's view of a reservation and its status.
//! - [`grpc`]: the gRPC front (tonic): `stampede.v1.Stampede` and `StampedeAdmin` over the service layer, health, reflection, its bounds and metrics.
//! - [`http`]: the HTTP front: router, shared state, handlers, problem+json errors, the OpenAPI document, the web app (`/app/`, its files from `web/` compiled in).
//! - [`ids`]: event, category, user and reservation ids (a leaf: it uses nothing of the crate).
//! - [`infrastructure`]: connection set-up: the Redis connection (one node or a Redis Cluster, plain or TLS), the Postgres pool and migrations, TLS client settings.
//! - [`kafka`]: broker connections (TLS, SASL), topic creation and the key-to-partition rule.
//! - [`keyspace`]: the Redis key layout and its hash tags.
//! - [`milliseconds`]: Unix milliseconds, as times and durations cross into scripts and the outbox.
//! - [`outbox`]: the outbox stream's entries and the events they become.
//! - [`payment`]: the payment gateway boundary and the simulated gateway.
//! - [`persistence`]: the read side of the rows the worker writes to Postgres.
//! - [`rate_limit`]: per-user rate limits shared by every api process (GCRA in Redis).
//! - [`relay`]: the outbox relay: Redis streams to Kafka under a per-category lease.
//! - [`reservation`]: holds in Redis: reserve, confirm, cancel, the expiry reaper, idempotency, backpressure.
//! - [`retry`]: capped exponential backoff for loops that retry a dependency.
//! - [`script`]: Lua scripts loaded from files and run by name.
//! - [`seating`]: reserved seating: seat maps, seat names, the Redis seat layout and the live map.
//! - [`server`]: the accept loop of every HTTP endpoint (API and worker metrics), its connection limits and per-connection deadlines.
//! - [`service`]: the transport-neutral service layer both fronts call: admission, authentication, idempotency keys, queue passes, the confirm task, the archive fallback, outcome metrics, stream bounds, readiness, and one error enum.
//! - [`shutdown`]: signals to a cancellation token.
//! - [`stock`]: live stock levels, the conservation check and the gauge sampler. The stock hash is written by Lua scripts of three modules: `stock` (create, open), `reservation` (reserve, confirm, release) and `worker` (reconcile's repair and restore).
//! - [`telemetry`]: logging (text or JSON lines), the Prometheus recorder with every series described, its upkeep, and OpenTelemetry traces (OTLP export, W3C trace context through the outbox and Kafka).
//! - [`validation`]: field errors for 422 responses.
//! - [`waiting_room`]: per-event virtual waiting rooms: the fair queue in Redis and signed queue passes.
//! - [`worker`]: the Kafka-to-Postgres consumer with exactly-once effect, partition leases shared by the workers, migrate and reconcile.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod auth;
pub mod availability;
pub mod catalog;
pub mod client_address;
pub mod config;
pub mod contract;
pub mod grpc;
pub mod http;
pub mod ids;
pub mod infrastructure;
pub mod kafka;
pub mod keyspace;
pub mod milliseconds;
pub mod outbox;
pub mod payment;
pub mod persistence;
pub mod rate_limit;
pub mod relay;
pub mod reservation;
pub mod retry;
pub mod script;
pub mod seating;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod stock;
pub mod telemetry;
pub mod validation;
pub mod waiting_room;
pub mod worker;
