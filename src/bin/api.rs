//! The Stampede HTTP API.

use clap::Parser;
use stampede::config::ApiConfig;

// mimalloc: the request path allocates many small short-lived objects, where glibc's
// malloc showed up at ~12% of the api's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = ApiConfig::parse();
    let traces = match stampede::telemetry::init(&config.shared, "stampede-api") {
        Ok(traces) => traces,
        Err(error) => {
            eprintln!("error: {}", stampede::telemetry::error_chain(&error));
            return std::process::ExitCode::FAILURE;
        }
    };
    let flush_deadline = config.shared.shutdown_timeout;
    let shutdown = stampede::shutdown::on_signal();
    let code = match stampede::api::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", stampede::telemetry::error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    };
    traces.shutdown(flush_deadline).await;
    code
}
