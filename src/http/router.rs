//! The route table: each path pattern with its methods and operations. Patterns are
//! kept as written so they can label metrics.

use hyper::Method;

use super::error::ApiError;

/// Every operation the API serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `POST /events`.
    CreateEvent,
    /// `GET /events`.
    ListEvents,
    /// `GET /events/{id}`.
    GetEvent,
    /// `POST /events/{id}/ticket-category`.
    CreateCategory,
    /// `GET /events/{id}/availability`.
    Availability,
    /// `GET /events/{id}/availability/stream`.
    AvailabilityStream,
    /// `GET /categories/{id}/seats`.
    CategorySeats,
    /// `POST /reserve`.
    Reserve,
    /// `POST /confirm`.
    Confirm,
    /// `POST /reservations/{id}/cancel`.
    CancelReservation,
    /// `GET /reservations/{id}`.
    GetReservation,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApiDocument,
    /// `GET /swagger-ui`: redirects to `/swagger-ui/`.
    SwaggerUiRedirect,
    /// `GET /swagger-ui/`.
    SwaggerUiIndex,
    /// `GET /swagger-ui/{*file}`.
    SwaggerUiFile,
    /// `GET /reservations`.
    ListReservations,
    /// `PUT /events/{id}/waiting-room`.
    ConfigureWaitingRoom,
    /// `GET /events/{id}/waiting-room`.
    GetWaitingRoom,
    /// `POST /events/{id}/queue`.
    JoinQueue,
    /// `GET /events/{id}/queue`.
    GetQueueStatus,
    /// `GET /app`: redirects to `/app/`.
    AppRedirect,
    /// `GET /app/`: the web app.
    AppIndex,
    /// `GET /app/{*file}`: the web app's assets.
    AppFile,
}

/// One path pattern and what each method does there.
pub struct Route {
    /// The matchit pattern, also the metric label.
    pub pattern: &'static str,
    /// Allowed methods.
    pub methods: &'static [(Method, Operation)],
}

/// The whole API.
pub const ROUTES: &[Route] = &[
    Route { pattern: "/health", methods: &[(Method::GET, Operation::Health)] },
    Route { pattern: "/ready", methods: &[(Method::GET, Operation::Ready)] },
    Route {
        pattern: "/events",
        methods: &[(Method::GET, Operation::ListEvents), (Method::POST, Operation::CreateEvent)],
    },
    Route { pattern: "/events/{id}", methods: &[(Method::GET, Operation::GetEvent)] },
    Route { pattern: "/events/{id}/ticket-category", methods: &[(Method::POST, Operation::CreateCategory)] },
    Route { pattern: "/events/{id}/availability", methods: &[(Method::GET, Operation::Availability)] },
    Route { pattern: "/events/{id}/availability/stream", methods: &[(Method::GET, Operation::AvailabilityStream)] },
    Route { pattern: "/categories/{id}/seats", methods: &[(Method::GET, Operation::CategorySeats)] },
    Route { pattern: "/reserve", methods: &[(Method::POST, Operation::Reserve)] },
    Route { pattern: "/confirm", methods: &[(Method::POST, Operation::Confirm)] },
    Route { pattern: "/reservations/{id}/cancel", methods: &[(Method::POST, Operation::CancelReservation)] },
    Route { pattern: "/reservations/{id}", methods: &[(Method::GET, Operation::GetReservation)] },
    Route { pattern: "/metrics", methods: &[(Method::GET, Operation::Metrics)] },
    Route { pattern: "/openapi.json", methods: &[(Method::GET, Operation::OpenApiDocument)] },
    Route { pattern: "/swagger-ui", methods: &[(Method::GET, Operation::SwaggerUiRedirect)] },
    // matchit's catch-all needs at least one character, so the index is its own route.
    Route { pattern: "/swagger-ui/", methods: &[(Method::GET, Operation::SwaggerUiIndex)] },
    Route { pattern: "/swagger-ui/{*file}", methods: &[(Method::GET, Operation::SwaggerUiFile)] },
    Route { pattern: "/reservations", methods: &[(Method::GET, Operation::ListReservations)] },
    Route {
        pattern: "/events/{id}/waiting-room",
        methods: &[(Method::GET, Operation::GetWaitingRoom), (Method::PUT, Operation::ConfigureWaitingRoom)],
    },
    Route {
        pattern: "/events/{id}/queue",
        methods: &[(Method::GET, Operation::GetQueueStatus), (Method::POST, Operation::JoinQueue)],
    },
    Route { pattern: "/app", methods: &[(Method::GET, Operation::AppRedirect)] },
    Route { pattern: "/app/", methods: &[(Method::GET, Operation::AppIndex)] },
    Route { pattern: "/app/{*file}", methods: &[(Method::GET, Operation::AppFile)] },
];

/// A matched request: the operation, its pattern and path parameters.
#[derive(Debug)]
pub struct Matched {
    /// What to run.
    pub operation: Operation,
    /// The route pattern.
    pub pattern: &'static str,
    /// Path parameters by name.
    pub params: Vec<(String, String)>,
}

/// Matches paths against [`ROUTES`].
pub struct Router {
    inner: matchit::Router<usize>,
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// Builds the router; panics on a malformed table, which tests catch.
    pub fn new() -> Self {
        let mut inner = matchit::Router::new();
        for (index, route) in ROUTES.iter().enumerate() {
            inner.insert(route.pattern, index).expect("route patterns are valid and distinct");
        }
        Self { inner }
    }

    /// Finds the operation for a method and path, or the 404 / 405 error.
    pub fn route(&self, method: &Method, path: &str) -> Result<Matched, (ApiError, &'static str)> {
        let found = self.inner.at(path).map_err(|_| (ApiError::NotFound("no such route"), "unmatched"))?;
        let route = &ROUTES[*found.value];
        let effective = if method == Method::HEAD { &Method::GET } else { method };
        match route.methods.iter().find(|(allowed, _)| allowed == effective) {
            Some((_, operation)) => Ok(Matched {
                operation: *operation,
                pattern: route.pattern,
                params: found.params.iter().map(|(key, value)| (key.to_owned(), value.to_owned())).collect(),
            }),
            None => {
                let allow: Vec<&str> = route.methods.iter().map(|(method, _)| method.as_str()).collect();
                Err((ApiError::MethodNotAllowed(allow.join(", ")), route.pattern))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_keep_their_pattern_and_params() {
        let matched = Router::new().route(&Method::GET, "/events/7/availability").unwrap();
        assert_eq!(matched.operation, Operation::Availability);
        assert_eq!(matched.pattern, "/events/{id}/availability");
        assert_eq!(matched.params, [("id".to_owned(), "7".to_owned())]);
    }

    #[test]
    fn unknown_paths_and_methods_are_refused() {
        let router = Router::new();
        assert!(matches!(router.route(&Method::GET, "/nope"), Err((ApiError::NotFound(_), _))));
        let Err((ApiError::MethodNotAllowed(allow), _)) = router.route(&Method::DELETE, "/events") else {
            panic!("expected 405");
        };
        assert_eq!(allow, "GET, POST");
    }
}
