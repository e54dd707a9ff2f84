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
    stampede::telemetry::init(config.shared.log_format);
    let shutdown = stampede::shutdown::on_signal();
    match stampede::api::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", stampede::telemetry::error_chain(&error));
            std::process::ExitCode::FAILURE
        }
    }
}
