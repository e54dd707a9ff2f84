//! Helpers shared by the integration tests, one file per concern:
//! - [`harness`]: the in-process api on port 0, a test's [`harness::Isolation`] (database,
//!   key prefix, topic) and its cleanup, tokens, polling waits and seeds;
//! - [`reservation`]: sales, reserves, confirms and the outbox consistency check;
//! - [`pipeline`]: worker and api child processes, the api+worker [`pipeline::Pipeline`]
//!   fixture, a private broker, synthetic outbox entries and Postgres probes;
//! - [`engine`]: the engine's outbox read back as typed events;
//! - [`api_process`]: the `api` binary as a child whose stdout the test reads;
//! - [`deployment_files`]: compose and YAML files as data, and the settings clap accepts.

pub mod api_process;
pub mod deployment_files;
pub mod engine;
pub mod harness;
pub mod pipeline;
pub mod reservation;
