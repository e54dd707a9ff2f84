//! `grpc.health.v1`: the whole server (`""`) and each Stampede service are `SERVING`
//! exactly while `GET /ready` would answer 200, and `NOT_SERVING` from the moment the
//! process is told to stop.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use super::admin::StampedeAdminRpc;
use super::proto::stampede_admin_server::StampedeAdminServer;
use super::proto::stampede_server::StampedeServer;
use super::stampede::StampedeRpc;
use crate::service::Service;

/// How often readiness is probed for the health service.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// The names health reports on: the server as a whole and each service.
fn service_names() -> [&'static str; 3] {
    [
        "",
        <StampedeServer<StampedeRpc> as NamedService>::NAME,
        <StampedeAdminServer<StampedeAdminRpc> as NamedService>::NAME,
    ]
}

async fn report(reporter: &HealthReporter, status: ServingStatus) {
    for name in service_names() {
        reporter.set_service_status(name, status).await;
    }
}

/// Reports every name `NOT_SERVING` until the first probe has answered, so a check never
/// finds a service unknown.
pub async fn start_not_serving(reporter: &HealthReporter) {
    report(reporter, ServingStatus::NotServing).await;
}

/// Probes readiness every second and reports it, until `shutdown` fires;
/// turns `NOT_SERVING` at once when the service starts stopping.
pub async fn follow_readiness(reporter: HealthReporter, service: Arc<Service>, shutdown: CancellationToken) {
    loop {
        let status = match service.readiness().await {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        report(&reporter, status).await;
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = service.stopping.cancelled(), if status == ServingStatus::Serving => {}
            _ = tokio::time::sleep(PROBE_INTERVAL) => {}
        }
    }
    report(&reporter, ServingStatus::NotServing).await;
}
