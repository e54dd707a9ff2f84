//! `stampede.v1.Stampede`: buyers and public reads. Each call validates its message at the
//! edge ([`super::convert`]) and makes the same service-layer calls as its HTTP twin, so
//! a reserve over gRPC and one over HTTP meet the same rules and the same tickets.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use super::proto::stampede_server::Stampede;
use super::{Answer, answer, convert, credentials, proto, status};
use crate::reservation::Confirmation;
use crate::service::watch::Next;
use crate::service::{Gate, Service, ServiceError};

/// The buyers' service over the shared service layer.
pub struct StampedeRpc {
    service: Arc<Service>,
}

impl StampedeRpc {
    /// Serves `service`.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

/// The messages of one `WatchAvailability` call.
pub type AvailabilityStream = Pin<Box<dyn Stream<Item = Result<proto::Availability, Status>> + Send>>;

#[tonic::async_trait]
impl Stampede for StampedeRpc {
    type WatchAvailabilityStream = AvailabilityStream;

    async fn get_event(&self, request: Request<proto::GetEventRequest>) -> Answer<proto::Event> {
        let event = convert::event_id(request.get_ref().event_id);
        answer(async { Ok(convert::event(self.service.event(event?).await?)) }.await)
    }

    async fn list_events(&self, request: Request<proto::ListEventsRequest>) -> Answer<proto::ListEventsResponse> {
        answer(
            async {
                let (events, next_after) = self.service.list_events(convert::page(request.get_ref())?).await?;
                Ok(proto::ListEventsResponse { events: events.into_iter().map(convert::event).collect(), next_after })
            }
            .await,
        )
    }

    async fn get_availability(&self, request: Request<proto::GetAvailabilityRequest>) -> Answer<proto::Availability> {
        let event = convert::event_id(request.get_ref().event_id);
        answer(async { Ok(convert::availability(&self.service.availability(event?).await?)) }.await)
    }

    async fn watch_availability(
        &self,
        request: Request<proto::GetAvailabilityRequest>,
    ) -> Answer<Self::WatchAvailabilityStream> {
        let client = credentials(&request).client;
        let opened = async { self.service.watch(convert::event_id(request.get_ref().event_id)?, client).await }.await;
        let watch = opened.map_err(status::status)?;
        // Keep-alives have no message here: HTTP/2 pings keep the connection.
        let messages = futures_util::stream::unfold(watch, |mut watch| async move {
            loop {
                match watch.next(std::future::pending()).await {
                    Next::Snapshot(snapshot) => {
                        return Some((Ok(convert::availability(&snapshot.availability)), watch));
                    }
                    Next::KeepAlive => {}
                    Next::End => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(messages)))
    }

    async fn get_seats(&self, request: Request<proto::GetSeatsRequest>) -> Answer<proto::SeatMap> {
        let category = convert::seated_category_id(request.get_ref().category_id);
        answer(async { Ok(convert::seat_map(self.service.seats(category?).await?)) }.await)
    }

    async fn reserve(&self, request: Request<proto::ReserveRequest>) -> Answer<proto::Reservation> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::Purchase).await?;
                let message = request.into_inner();
                let key = convert::idempotency_key(&message.idempotency_key)?;
                let pass = (!message.queue_pass.is_empty()).then(|| message.queue_pass.clone());
                let new = convert::new_reservation(message)?;
                Ok(convert::reservation(self.service.reserve(admitted, new, key, pass.as_deref()).await?))
            }
            .await,
        )
    }

    async fn confirm(&self, request: Request<proto::ConfirmRequest>) -> Answer<proto::Reservation> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::Purchase).await?;
                let message = request.into_inner();
                let key = convert::idempotency_key(&message.idempotency_key)?;
                let id = (!message.reservation_id.is_empty()).then_some(message.reservation_id.as_str());
                let token = message.payment.as_ref().map(|payment| payment.token.as_str());
                let confirmation = Confirmation::parse(id, token).map_err(ServiceError::Validation)?;
                Ok(convert::reservation(self.service.confirm(admitted, confirmation, key).await?))
            }
            .await,
        )
    }

    async fn cancel(&self, request: Request<proto::CancelRequest>) -> Answer<proto::Reservation> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::Change).await?;
                let id = convert::reservation_id(&request.get_ref().reservation_id)?;
                Ok(convert::reservation(self.service.cancel(&admitted, id).await?))
            }
            .await,
        )
    }

    async fn get_reservation(&self, request: Request<proto::GetReservationRequest>) -> Answer<proto::Reservation> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::Read).await?;
                let id = convert::reservation_id(&request.get_ref().reservation_id)?;
                Ok(convert::reservation(self.service.reservation(&admitted, id).await?))
            }
            .await,
        )
    }

    async fn list_reservations(
        &self,
        request: Request<proto::ListReservationsRequest>,
    ) -> Answer<proto::ListReservationsResponse> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::User).await?;
                let limit = convert::page_limit(request.get_ref().limit)?;
                let reservations = self.service.list_reservations(&admitted, limit).await?;
                Ok(proto::ListReservationsResponse {
                    reservations: reservations.into_iter().map(convert::reservation).collect(),
                })
            }
            .await,
        )
    }

    async fn join_queue(&self, request: Request<proto::QueueRequest>) -> Answer<proto::QueueStatus> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::Join).await?;
                let event = convert::event_id(request.get_ref().event_id)?;
                let status = match self.service.join_queue(&admitted, event).await? {
                    crate::waiting_room::Joined::New(status) | crate::waiting_room::Joined::Existing(status) => status,
                };
                Ok(convert::queue_status(status))
            }
            .await,
        )
    }

    async fn get_queue_status(&self, request: Request<proto::QueueRequest>) -> Answer<proto::QueueStatus> {
        answer(
            async {
                let admitted = self.service.admit(&credentials(&request), Gate::User).await?;
                let event = convert::event_id(request.get_ref().event_id)?;
                Ok(convert::queue_status(self.service.queue_status(&admitted, event).await?))
            }
            .await,
        )
    }
}
