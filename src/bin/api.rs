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
            tracing::error!(error = ?anyhow_chain(&error), "api failed to start");
            eprintln!("error: {}", anyhow_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

fn anyhow_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
