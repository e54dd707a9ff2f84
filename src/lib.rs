//! Stampede: a flash ticket sales backend.
//!
//! Stock lives in Redis and changes only through Lua scripts, which check every
//! rule before their first write and append each state change to a per-category
//! outbox stream in the same script. Postgres holds the catalog and, through the
//! event pipeline, every reservation.
//!
//! # Layout
//! - [`api`]: the `api` process: shared state, start-up and shutdown.
//! - [`auth`]: JWT verification and minting, roles.
//! - [`catalog`]: events and ticket categories, and provisioning their stock.
//! - [`config`]: one clap struct per binary.
//! - [`http`]: the hyper server, router, handlers and the problem+json errors.
//! - [`keyspace`]: the Redis key layout and its hash tags.
//! - [`outbox`]: the outbox stream's entries and the events they become.
//! - [`persistence`]: the Postgres pool and migrations.
//! - [`reservation`]: reservation ids, statuses and the Reservation view.
//! - [`script`]: Lua scripts loaded from files and run by name.
//! - [`shutdown`]: signals to a cancellation token.
//! - [`stock`]: live stock levels and the conservation check.
//! - [`telemetry`]: logging setup.
//! - [`validation`]: field errors for 422 responses.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod http;
pub mod keyspace;
pub mod outbox;
pub mod persistence;
pub mod reservation;
pub mod script;
pub mod shutdown;
pub mod stock;
pub mod telemetry;
pub mod validation;
