//! The HELP text of every series the binaries export, described once at start so
//! `/metrics` prints a `# HELP` line for each, and `stampede_build_info`.

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets of observations.
    Histogram,
}

/// One exported metric and its HELP text.
#[derive(Debug, Clone, Copy)]
pub struct MetricDescription {
    /// The series name as exported.
    pub name: &'static str,
    /// Its kind.
    pub kind: MetricKind,
    /// The HELP text.
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> MetricDescription {
    MetricDescription { name, kind: MetricKind::Counter, help }
}

const fn gauge(name: &'static str, help: &'static str) -> MetricDescription {
    MetricDescription { name, kind: MetricKind::Gauge, help }
}

const fn histogram(name: &'static str, help: &'static str) -> MetricDescription {
    MetricDescription { name, kind: MetricKind::Histogram, help }
}

/// The gauge that names the running build: `stampede_build_info{version,commit} 1`.
pub const BUILD_INFO: &str = "stampede_build_info";

/// Every metric the api and the worker export (a test checks that the code uses no other).
pub const METRICS: &[MetricDescription] = &[
    gauge(BUILD_INFO, "Always 1; the labels name the running build (version, commit)."),
    counter("http_requests_total", "HTTP requests answered, by method, route template and status."),
    histogram("http_request_duration_seconds", "Time from an HTTP request to its response."),
    counter(
        "redis_replica_ack_timeouts_total",
        "State changes whose REDIS_REPLICAS_ACK replicas did not acknowledge within REDIS_REPLICAS_ACK_TIMEOUT (answered 503).",
    ),
    histogram("redis_replica_ack_seconds", "Time a state change waited for its replicas to acknowledge it (WAIT)."),
    counter("reservation_id_collisions_total", "Reservation ids drawn again because another hold already had the id."),
    counter("http_connections_timed_out_total", "Connections closed by REQUEST_TIMEOUT, by what was late."),
    counter("requests_shed_total", "503 and 429 answers given to protect the system, by reason."),
    histogram("redis_script_duration_seconds", "One Lua script call to Redis, by script."),
    counter("reservation_outcomes_total", "Results of reservation requests, by operation and outcome."),
    histogram("reserve_batch_requests", "Counted reserves decided by one reserve.lua call (group commit)."),
    counter("idempotent_replays_total", "Answers replayed for a repeated Idempotency-Key, by operation."),
    counter("sold_out_fast_answers_total", "Reserves answered sold_out without Redis by the sold-out fast path."),
    counter("reservations_expired_total", "Holds released by the expiry reaper."),
    histogram("reaper_release_delay_seconds", "Seconds past a hold's deadline when the reaper released it."),
    gauge("stock_tickets", "Live stock of a category, by state (available, held, sold)."),
    gauge("stock_quota_tickets", "The quota of a category."),
    gauge("outbox_backlog_entries", "Events in a category's outbox stream not yet acknowledged by the broker."),
    histogram("relay_batch_records", "Records per relay round."),
    histogram("relay_produce_bytes", "Estimated bytes of each produce request of the relay."),
    histogram("relay_publish_duration_seconds", "One produce round trip of the relay."),
    counter("relay_events_published_total", "Events the broker acknowledged to the relay."),
    counter("relay_publish_errors_total", "Failed publish attempts of the relay (retried)."),
    counter("relay_malformed_entries_total", "Outbox entries that could not be decoded, moved to the dead stream."),
    counter("relay_oversized_records_total", "Records the broker refused as too large, moved to the dead stream."),
    gauge("availability_streams_open", "Open availability streams (SSE and gRPC)."),
    counter("grpc_server_handled_total", "gRPC calls finished, by service, method and status code."),
    histogram("grpc_server_handling_seconds", "Time from a gRPC call's arrival to its status (a stream's whole life)."),
    counter("availability_stream_messages_total", "Messages and keep-alive comments written to availability streams."),
    histogram(
        "availability_stream_delivery_delay_seconds",
        "From a watcher publishing a change to a stream sending it.",
    ),
    gauge("availability_watchers", "Events watched now by this replica."),
    counter("availability_changes_total", "Availability changes the watchers published."),
    gauge("waiting_room_queue_length", "Users waiting in an event's queue."),
    counter("waiting_room_admitted_total", "Users admitted from an event's waiting room."),
    counter("queue_pass_rejections_total", "Reserves refused with 403 queue_pass_required, by reason."),
    histogram("waiting_room_wait_seconds", "Waiting-room join to admission."),
    counter("worker_events_applied_total", "Events the worker applied to Postgres."),
    counter("worker_events_duplicate_total", "Event copies the worker dropped by event id."),
    histogram("worker_batch_records", "Events per worker transaction."),
    histogram("worker_apply_duration_seconds", "One worker batch's Postgres transaction."),
    gauge("worker_partition_lag_records", "High watermark minus the next offset to apply, by partition."),
    histogram("pipeline_lag_seconds", "Now minus an event's occurred_at when the worker applied it."),
    counter("worker_dead_letters_total", "Records the worker moved to the dead_letters table."),
    counter("worker_offset_resets_total", "Offsets reset because a partition's log was replaced or truncated."),
    counter(
        "worker_offset_gaps_waited_total",
        "Holes right after a partition's next offset that the worker waited for.",
    ),
    gauge("worker_partitions_owned", "Partitions whose lease this worker holds (WORKER_PARTITIONS=shared)."),
    counter(
        "worker_partition_leases_lost_total",
        "Partition leases this worker lost to another (paused or cut off past the TTL).",
    ),
    counter("worker_offset_gaps_skipped_total", "Holes in a partition's offsets read past after WORKER_GAP_WAIT."),
];

/// Describes every metric of [`METRICS`] to the installed recorder and sets
/// `stampede_build_info` (commit from `STAMPEDE_COMMIT` at build time, else `unknown`).
pub fn describe_all() {
    // Through the recorder rather than the describe macros: every macro call in src/
    // names its metric literally (tests/integration/deployment.rs reads them).
    metrics::with_recorder(|recorder| {
        for metric in METRICS {
            let (name, help) =
                (metrics::KeyName::from_const_str(metric.name), metrics::SharedString::const_str(metric.help));
            match metric.kind {
                MetricKind::Counter => recorder.describe_counter(name, None, help),
                MetricKind::Gauge => recorder.describe_gauge(name, None, help),
                MetricKind::Histogram => recorder.describe_histogram(name, None, help),
            }
        }
    });
    let commit = option_env!("STAMPEDE_COMMIT").unwrap_or("unknown");
    metrics::gauge!("stampede_build_info", "version" => env!("CARGO_PKG_VERSION"), "commit" => commit).set(1.0);
}
