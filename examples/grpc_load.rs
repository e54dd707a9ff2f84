//! Load client of the gRPC step of the benchmark (`scripts/bench --only grpc`): for
//! `--seconds`, `--concurrency` closed loops send `stampede.v1.Stampede/Reserve` of one
//! ticket of `--category` over `--connections` HTTP/2 connections, each loop sending its
//! next call as soon as the previous one is answered, with the tokens of `--tokens` (one
//! user JWT per line) rotating.
//!
//! Prints one line `GRPC_JSON {...}`: calls answered per second, latency percentiles (from
//! each call's start to its answer) and the count of each outcome (`OK`, or the status
//! code's name with the `ErrorInfo` reason).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use stampede::grpc::proto::ReserveRequest;
use stampede::grpc::proto::stampede_client::StampedeClient;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

#[derive(Debug, Parser)]
struct Args {
    /// The api's gRPC address.
    #[arg(long)]
    addr: SocketAddr,
    /// File with one user JWT per line, used in turn.
    #[arg(long)]
    tokens: PathBuf,
    /// The category every reserve asks for.
    #[arg(long)]
    category: i64,
    /// How long to send.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Calls in flight at once (spread over the connections).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// What one loop saw.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
}

async fn connect(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .expect("a valid address")
        .tcp_nodelay(true)
        .connect()
        .await
        .expect("the api's gRPC port answers")
}

async fn run_loop(
    mut client: StampedeClient<Channel>,
    tokens: Arc<Vec<MetadataValue<tonic::metadata::Ascii>>>,
    next: Arc<AtomicUsize>,
    category: i64,
    until: Instant,
) -> Tally {
    let mut tally = Tally::default();
    while Instant::now() < until {
        let token = tokens[next.fetch_add(1, Ordering::Relaxed) % tokens.len()].clone();
        let mut request =
            tonic::Request::new(ReserveRequest { category_id: category, quantity: 1, ..Default::default() });
        request.metadata_mut().insert("authorization", token);
        let started = Instant::now();
        let outcome = match client.reserve(request).await {
            Ok(_) => "OK".to_owned(),
            Err(status) => {
                let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
                format!("{:?} {reason}", status.code())
            }
        };
        tally.latencies_us.push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        *tally.outcomes.entry(outcome).or_default() += 1;
    }
    tally
}

/// The value at `per_mille` thousandths of the sorted latencies (nearest rank).
fn percentile(sorted: &[u64], per_mille: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (sorted.len() * per_mille).div_ceil(1000);
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.tokens).expect("the tokens file is readable");
    let tokens: Vec<MetadataValue<_>> = text
        .lines()
        .filter(|line| !line.is_empty())
        .map(|token| format!("Bearer {token}").parse().expect("a token is ASCII"))
        .collect();
    assert!(!tokens.is_empty(), "no tokens");
    let (tokens, next) = (Arc::new(tokens), Arc::new(AtomicUsize::new(0)));
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        channels.push(connect(args.addr).await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let loops: Vec<_> = (0..args.concurrency.max(1))
        .map(|index| {
            let client = StampedeClient::new(channels[index % channels.len()].clone());
            tokio::spawn(run_loop(client, tokens.clone(), next.clone(), args.category, until))
        })
        .collect();
    let mut all = Tally::default();
    for handle in loops {
        let tally = handle.await.expect("a loop finishes");
        all.latencies_us.extend(tally.latencies_us);
        for (outcome, count) in tally.outcomes {
            *all.outcomes.entry(outcome).or_default() += count;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let answers = all.latencies_us.len();
    let report = serde_json::json!({
        "answers": answers,
        "seconds": elapsed,
        "rps": answers as f64 / elapsed,
        "latency_us": {
            "p50": percentile(&all.latencies_us, 500),
            "p99": percentile(&all.latencies_us, 990),
            "max": all.latencies_us.last().copied().unwrap_or(0),
        },
        "outcomes": all.outcomes,
    });
    println!("GRPC_JSON {report}");
}
