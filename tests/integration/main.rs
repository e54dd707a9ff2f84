//! The integration suite: the real app against real Postgres, Redis and (where a test
//! needs it) the Kafka-compatible broker. Each test gets its own database, Redis key
//! prefix and topic, so tests run in parallel.

#![allow(clippy::unwrap_used)]

mod support;

mod alerts;
mod availability_stream;
mod catalog;
mod client_address;
mod client_hang_up;
mod cluster_failover;
mod deployment;
mod deployment_hardening;
mod documentation;
mod durability;
mod fuzz_findings;
mod grpc;
mod identity_provider;
mod kubernetes;
mod observability;
mod operations;
mod partition_leases;
mod pipeline;
mod pipeline_bench;
mod pipeline_hardening;
mod reservation;
mod reservation_expiry;
mod reservation_group_commit;
mod reservation_idempotency;
mod reservation_ids;
mod reservation_random;
mod reservation_recovery;
mod seating;
mod secrets;
mod security;
mod slow_clients;
mod sold_out;
mod tls;
mod traces;
mod user_limits;
mod waiting_room;
mod web_app;
