//! Load client of the availability-stream benchmark (`scripts/bench`, step `streams`).
//!
//! Opens `--streams` connections to `GET /events/{id}/availability/stream`, waits until
//! each has its first message and prints `READY <streams>`. Then, every
//! `--probe-interval` until its standard input closes, it reserves one ticket of the
//! probe category (the event's category named `probe`) and notes when the request was
//! sent. Every stream notes when the probe category's `available` first shows each new
//! value, so each (stream, probe) pair gives one delivery delay: the moment the stream
//! saw the change minus the moment the reserve that made it was sent (an upper bound of
//! the delay from the change itself). Prints one line `STREAMS_JSON {...}` at the end.
//!
//! Raw tokio sockets, one small task per stream, so one process on 2 cores can hold
//! 10,000 streams while the api under test keeps most of the CPU.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What marks the probe category in a message.
const PROBE_MARKER: &[u8] = br#""name":"probe","#;
const AVAILABLE_FIELD: &[u8] = br#""available":"#;

#[derive(Debug, Parser)]
struct Args {
    /// The api's address.
    #[arg(long)]
    addr: SocketAddr,
    /// The watched event.
    #[arg(long)]
    event: i64,
    /// Streams to hold.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// The event's category named `probe`.
    #[arg(long)]
    probe_category: i64,
    /// A user token for the probe reserves.
    #[arg(long, env = "BENCH_PROBE_TOKEN", hide_env_values = true)]
    probe_token: String,
    /// Time between two probe reserves.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    probe_interval: Duration,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
}

/// One stream's observations: (probe `available`, when first seen).
type Seen = Vec<(i64, Instant)>;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let stop = CancellationToken::new();
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(Semaphore::new(args.connect_concurrency));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.streams);
    for _ in 0..args.streams {
        let (stop, ready, failed, connecting) = (stop.clone(), ready.clone(), failed.clone(), connecting.clone());
        let (addr, event) = (args.addr, args.event);
        tasks.push(tokio::spawn(async move {
            let result = hold_stream(addr, event, &connecting, &ready, &stop).await;
            if let Err(error) = &result
                && failed.fetch_add(1, Ordering::Relaxed) < 5
            {
                eprintln!("stream failed: {error}");
            }
            result.unwrap_or_default()
        }));
    }
    while ready.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) < args.streams {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_seconds = started.elapsed().as_secs_f64();
    println!("READY {}", ready.load(Ordering::Relaxed));
    let sent = probe_until_stdin_closes(&args).await;
    // Let the last probe reach every stream.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let mut seen = Vec::with_capacity(tasks.len());
    for task in tasks {
        seen.push(task.await.unwrap_or_default());
    }
    report(&args, &sent, &seen, ready.load(Ordering::Relaxed), failed.load(Ordering::Relaxed), open_seconds);
}

/// Opens one stream and records the probe values it sees until `stop`.
async fn hold_stream(
    addr: SocketAddr,
    event: i64,
    connecting: &Semaphore,
    ready: &AtomicUsize,
    stop: &CancellationToken,
) -> Result<Seen, String> {
    let mut permit = Some(connecting.acquire().await.expect("never closed"));
    let mut socket = TcpStream::connect(addr).await.map_err(|error| format!("connect: {error}"))?;
    let request =
        format!("GET /events/{event}/availability/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    socket.write_all(request.as_bytes()).await.map_err(|error| format!("write: {error}"))?;
    let mut buffer = Vec::with_capacity(2048);
    let mut chunk = [0u8; 2048];
    let mut seen: Seen = Vec::new();
    let mut head_done = false;
    loop {
        let read = tokio::select! {
            _ = stop.cancelled() => return Ok(seen),
            read = socket.read(&mut chunk) => read.map_err(|error| format!("read: {error}"))?,
        };
        if read == 0 {
            return if stop.is_cancelled() { Ok(seen) } else { Err("the server closed the stream".to_owned()) };
        }
        let now = Instant::now();
        buffer.extend_from_slice(&chunk[..read]);
        if !head_done {
            let Some(end) = find(&buffer, b"\r\n\r\n") else { continue };
            if !buffer.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&buffer[..end]).into_owned());
            }
            buffer.drain(..end + 4);
            head_done = true;
        }
        // Only whole messages (ended by a blank line) are read; the rest waits for more bytes.
        let Some(end) = rfind(&buffer, b"\n\n") else { continue };
        for value in probe_values(&buffer[..end]) {
            if seen.last().is_none_or(|(last, _)| *last != value) {
                seen.push((value, now));
            }
        }
        buffer.drain(..end + 2);
        if !seen.is_empty() && permit.take().is_some() {
            ready.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The probe category's `available` in each message of `bytes`, in order.
fn probe_values(bytes: &[u8]) -> Vec<i64> {
    let mut values = Vec::new();
    let mut rest = bytes;
    while let Some(at) = find(rest, PROBE_MARKER) {
        rest = &rest[at + PROBE_MARKER.len()..];
        let Some(field) = find(rest, AVAILABLE_FIELD) else { break };
        let digits = &rest[field + AVAILABLE_FIELD.len()..];
        let length = digits.iter().take_while(|byte| byte.is_ascii_digit()).count();
        if let Ok(value) = std::str::from_utf8(&digits[..length]).unwrap_or("").parse::<i64>() {
            values.push(value);
        }
    }
    values
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|window| window == needle)
}

/// Reserves one probe ticket per interval until stdin closes; returns when each
/// successful probe was sent (the k-th lowers `available` by k).
async fn probe_until_stdin_closes(args: &Args) -> Vec<Instant> {
    let stdin_closed = CancellationToken::new();
    let closer = stdin_closed.clone();
    // tokio's stdin needs a feature the crate does not enable; a thread waits instead.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        closer.cancel();
    });
    let mut sent = Vec::new();
    let mut ticker = tokio::time::interval(args.probe_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = stdin_closed.cancelled() => return sent,
            _ = ticker.tick() => {}
        }
        let at = Instant::now();
        match reserve_probe(args).await {
            Ok(()) => sent.push(at),
            Err(error) => eprintln!("probe reserve failed: {error}"),
        }
    }
}

/// One `POST /reserve` of one probe ticket on a fresh connection.
async fn reserve_probe(args: &Args) -> Result<(), String> {
    let body = format!(r#"{{"category_id":{},"quantity":1}}"#, args.probe_category);
    let request = format!(
        "POST /reserve HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.probe_token,
        body.len()
    );
    let mut socket = TcpStream::connect(args.addr).await.map_err(|error| error.to_string())?;
    socket.write_all(request.as_bytes()).await.map_err(|error| error.to_string())?;
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.map_err(|error| error.to_string())?;
    if response.starts_with(b"HTTP/1.1 201") { Ok(()) } else { Err(String::from_utf8_lossy(&response).into_owned()) }
}

/// Prints `STREAMS_JSON` with the delivery delays of every (stream, probe) pair.
fn report(args: &Args, sent: &[Instant], seen: &[Seen], ready: usize, failed: usize, open_seconds: f64) {
    let mut delays_ms = Vec::new();
    let mut missing = 0usize;
    for stream in seen {
        let Some(&(initial, _)) = stream.first() else { continue };
        for (index, sent_at) in sent.iter().enumerate() {
            let expected = initial - (index as i64 + 1);
            match stream.iter().find(|(value, _)| *value == expected) {
                Some((_, seen_at)) => delays_ms.push(seen_at.saturating_duration_since(*sent_at).as_secs_f64() * 1e3),
                None => missing += 1,
            }
        }
    }
    delays_ms.sort_by(f64::total_cmp);
    let quantile = |q: f64| -> Option<f64> {
        (!delays_ms.is_empty()).then(|| delays_ms[((delays_ms.len() - 1) as f64 * q).round() as usize])
    };
    let json = serde_json::json!({
        "streams": args.streams, "ready": ready, "failed": failed, "open_seconds": open_seconds,
        "probes": sent.len(), "samples": delays_ms.len(), "missing": missing,
        "delay_ms": {"p50": quantile(0.5), "p90": quantile(0.9), "p99": quantile(0.99), "max": quantile(1.0)},
    });
    println!("STREAMS_JSON {json}");
}
