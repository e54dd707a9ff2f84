//! The state shared by every handler.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;

use crate::client_address::TrustedProxies;
use crate::service::Service;

/// Everything a handler needs, shared by all requests.
pub struct AppState {
    /// The operations and their rules, shared with the gRPC front.
    pub service: Arc<Service>,
    /// Renders `GET /metrics`.
    pub metrics: PrometheusHandle,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}
