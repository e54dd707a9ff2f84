//! The Stampede HTTP API.

use clap::Parser;
use stampede::config::ApiConfig;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = ApiConfig::parse();
    stampede::telemetry::init();
    let shutdown = stampede::shutdown::on_signal();
    match stampede::api::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", stampede::telemetry::error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
