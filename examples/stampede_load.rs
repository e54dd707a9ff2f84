//! Load client of the stampede benchmark (`scripts/bench`, steps `stampede` and
//! `memory`): every token of `--tokens` (one user JWT per line) sends exactly one
//! `POST /reserve` of `--quantity` tickets of `--category`, over `--connections`
//! keep-alive connections, each sending its next request as soon as the previous one
//! is answered (a closed loop: as fast as the client and the server go).
//!
//! Prints one line `STAMPEDE_JSON {...}`: the time from the first request sent to the
//! last answer read, answers per second, latency percentiles (from each request's
//! write to the end of its answer) and the count of each outcome: `held` for a 201,
//! the problem's `code` for a 409, `status_NNN` for anything else, `transport` for a
//! request that got no answer.
//!
//! Raw tokio sockets and a hand-written HTTP/1.1 exchange, so the client costs far less
//! CPU than the server it measures (k6 would not keep up on 2 shared cores).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CODE_FIELD: &[u8] = br#""code":""#;

#[derive(Debug, Parser)]
struct Args {
    /// The api's address.
    #[arg(long)]
    addr: SocketAddr,
    /// File with one user JWT per line; each sends one reserve.
    #[arg(long)]
    tokens: PathBuf,
    /// The category every reserve asks for.
    #[arg(long)]
    category: i64,
    /// Tickets per reserve.
    #[arg(long, default_value_t = 1)]
    quantity: i64,
    /// Keep-alive connections sending at once.
    #[arg(long, default_value_t = 256)]
    connections: usize,
}

/// What one connection saw.
#[derive(Default)]
struct Tally {
    outcomes: BTreeMap<String, u64>,
    latencies_us: Vec<u64>,
    first_sent: Option<Instant>,
    last_answered: Option<Instant>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.tokens).expect("the tokens file is readable");
    let tokens: Arc<Vec<String>> =
        Arc::new(text.lines().map(str::trim).filter(|line| !line.is_empty()).map(str::to_owned).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (tokens, next) = (tokens.clone(), next.clone());
        let (addr, category, quantity) = (args.addr, args.category, args.quantity);
        tasks.push(tokio::spawn(async move { connection(addr, category, quantity, &tokens, &next).await }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("a connection task never panics");
        for (outcome, count) in tally.outcomes {
            *total.outcomes.entry(outcome).or_default() += count;
        }
        total.latencies_us.extend(tally.latencies_us);
        total.first_sent = earliest(total.first_sent, tally.first_sent);
        total.last_answered = latest(total.last_answered, tally.last_answered);
    }
    report(&args, tokens.len(), total);
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Sends the next unsent token's reserve until none is left, reconnecting when the
/// server closes the connection.
async fn connection(addr: SocketAddr, category: i64, quantity: i64, tokens: &[String], next: &AtomicUsize) -> Tally {
    let mut tally = Tally::default();
    let body = format!(r#"{{"category_id":{category},"quantity":{quantity}}}"#);
    let mut socket: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let Some(token) = tokens.get(index) else { return tally };
        let request = format!(
            "POST /reserve HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let sent = Instant::now();
        tally.first_sent = earliest(tally.first_sent, Some(sent));
        let outcome = match exchange(&mut socket, addr, request.as_bytes(), &mut buffer).await {
            Ok(outcome) => outcome,
            Err(error) => {
                socket = None;
                eprintln!("reserve failed: {error}");
                "transport".to_owned()
            }
        };
        let answered = Instant::now();
        tally.last_answered = Some(answered);
        tally.latencies_us.push(u64::try_from(answered.duration_since(sent).as_micros()).unwrap_or(u64::MAX));
        *tally.outcomes.entry(outcome).or_default() += 1;
    }
}

/// One request and its answer on the connection (opened when there is none); the outcome.
async fn exchange(
    socket: &mut Option<TcpStream>,
    addr: SocketAddr,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<String, String> {
    if socket.is_none() {
        let stream = TcpStream::connect(addr).await.map_err(|error| format!("connect: {error}"))?;
        stream.set_nodelay(true).map_err(|error| format!("nodelay: {error}"))?;
        *socket = Some(stream);
    }
    let stream = socket.as_mut().ok_or("no connection")?;
    stream.write_all(request).await.map_err(|error| format!("write: {error}"))?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some((head_end, status, length)) = head(buffer)?
            && buffer.len() >= head_end + length
        {
            let body = &buffer[head_end..head_end + length];
            let closes = find(&buffer[..head_end], b"connection: close").is_some();
            let outcome = outcome(status, body);
            if closes {
                *socket = None;
            }
            return Ok(outcome);
        }
        let read = stream.read(&mut chunk).await.map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("the server closed the connection".to_owned());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

/// (end of the head, status, content length) once the whole head has arrived.
fn head(buffer: &[u8]) -> Result<Option<(usize, u16, usize)>, String> {
    let Some(end) = find(buffer, b"\r\n\r\n") else { return Ok(None) };
    let text = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
    let status = text.get(9..12).and_then(|code| code.parse().ok()).ok_or_else(|| format!("bad status: {text}"))?;
    let length = text
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| format!("no content-length: {text}"))?;
    Ok(Some((end + 4, status, length)))
}

fn outcome(status: u16, body: &[u8]) -> String {
    match status {
        201 => "held".to_owned(),
        409 => find(body, CODE_FIELD)
            .map(|at| {
                let code = &body[at + CODE_FIELD.len()..];
                let length = code.iter().take_while(|byte| **byte != b'"').count();
                String::from_utf8_lossy(&code[..length]).into_owned()
            })
            .unwrap_or_else(|| "status_409".to_owned()),
        status => format!("status_{status}"),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Prints `STAMPEDE_JSON`.
fn report(args: &Args, tokens: usize, mut total: Tally) {
    total.latencies_us.sort_unstable();
    let latencies = &total.latencies_us;
    let quantile_ms = |q: f64| -> Option<f64> {
        #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rank in 0..len")]
        let rank = ((latencies.len().max(1) - 1) as f64 * q).round() as usize;
        #[expect(clippy::cast_precision_loss, reason = "microseconds far below 2^52")]
        latencies.get(rank).map(|micros| *micros as f64 / 1e3)
    };
    let elapsed = match (total.first_sent, total.last_answered) {
        (Some(first), Some(last)) => last.saturating_duration_since(first),
        _ => Duration::ZERO,
    };
    #[expect(clippy::cast_precision_loss, reason = "answer counts far below 2^52")]
    let answers_per_second = latencies.len() as f64 / elapsed.as_secs_f64().max(1e-9);
    let json = serde_json::json!({
        "tokens": tokens, "connections": args.connections, "category": args.category,
        "answers": latencies.len(), "seconds": elapsed.as_secs_f64(), "answers_per_second": answers_per_second,
        "latency_ms": {"p50": quantile_ms(0.5), "p90": quantile_ms(0.9), "p99": quantile_ms(0.99),
                       "p999": quantile_ms(0.999), "max": quantile_ms(1.0)},
        "outcomes": total.outcomes,
    });
    println!("STAMPEDE_JSON {json}");
}
