//! The integration suite: the real app against real Postgres, Redis and (where a test
//! needs it) the Kafka-compatible broker. Each test gets its own database, Redis key
//! prefix and topic, so tests run in parallel.

mod harness;

mod catalog;
mod operations;
