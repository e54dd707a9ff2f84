//! The Stampede worker: consumes reservation events into Postgres, or with
//! `reconcile [--repair]` compares Redis with Postgres (exit 0: no drift, 1: drift,
//! 2: could not run), or with `migrate` applies the database migrations and exits.

use std::process::ExitCode;

use clap::Parser;
use stampede::config::{WorkerCommand, WorkerConfig};

// mimalloc, as in the api: decoding and applying batches allocates many small
// short-lived objects (records, events, bind arguments). Only the api was profiled.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = WorkerConfig::parse();
    let traces = match stampede::telemetry::init(&config.shared, "stampede-worker") {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {}", stampede::telemetry::error_chain(&error));
            return ExitCode::FAILURE;
        }
    };
    let flush_deadline = config.shared.shutdown_timeout;
    let code = run(config).await;
    traces.shutdown(flush_deadline).await;
    code
}

/// Runs the command the configuration names.
async fn run(config: WorkerConfig) -> ExitCode {
    match config.command.clone() {
        Some(WorkerCommand::Reconcile(args)) => match stampede::worker::reconcile::run(&config, &args).await {
            Ok(report) => {
                print!("{report}");
                if report.has_drift() { ExitCode::from(1) } else { ExitCode::SUCCESS }
            }
            Err(error) => {
                eprintln!("error: {}", stampede::telemetry::error_chain(&error));
                ExitCode::from(2)
            }
        },
        Some(WorkerCommand::Migrate) => match stampede::worker::migrate(&config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("error: {}", stampede::telemetry::error_chain(&error));
                ExitCode::FAILURE
            }
        },
        None => {
            let shutdown = stampede::shutdown::on_signal();
            match stampede::worker::run(config, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("error: {}", stampede::telemetry::error_chain(&error));
                    ExitCode::FAILURE
                }
            }
        }
    }
}
