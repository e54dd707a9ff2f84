//! `stampede.v1.StampedeAdmin`: organisers' calls, each behind [`Gate::Admin`].

use std::sync::Arc;

use tonic::Request;

use super::proto::stampede_admin_server::StampedeAdmin;
use super::{Answer, answer, convert, credentials, proto};
use crate::catalog::NewCategory;
use crate::service::{Gate, Service, ServiceError};
use crate::waiting_room::RoomChange;

/// The organisers' service over the shared service layer.
pub struct StampedeAdminRpc {
    service: Arc<Service>,
}

impl StampedeAdminRpc {
    /// Serves `service`.
    pub fn new(service: Arc<Service>) -> Self {
        Self { service }
    }
}

#[tonic::async_trait]
impl StampedeAdmin for StampedeAdminRpc {
    async fn create_event(&self, request: Request<proto::CreateEventRequest>) -> Answer<proto::Event> {
        answer(
            async {
                let admin = self.service.admit(&credentials(&request), Gate::Admin).await?;
                let event = convert::new_event(request.into_inner())?;
                Ok(convert::event(self.service.create_event(&admin, &event).await?))
            }
            .await,
        )
    }

    async fn create_category(&self, request: Request<proto::CreateCategoryRequest>) -> Answer<proto::Category> {
        answer(
            async {
                let admin = self.service.admit(&credentials(&request), Gate::Admin).await?;
                let message = request.into_inner();
                let event = convert::event_id(message.event_id)?;
                let category =
                    NewCategory::parse_fields(convert::category_fields(message)).map_err(ServiceError::Validation)?;
                Ok(convert::category(self.service.create_category(&admin, event, &category).await?))
            }
            .await,
        )
    }

    async fn set_waiting_room(&self, request: Request<proto::SetWaitingRoomRequest>) -> Answer<proto::WaitingRoom> {
        answer(
            async {
                let admin = self.service.admit(&credentials(&request), Gate::Admin).await?;
                let message = request.into_inner();
                let event = convert::event_id(message.event_id)?;
                let rate = message.admit_per_second.map(i64::from);
                let ttl = message.pass_ttl_seconds.map(i64::from);
                let change = RoomChange::parse(message.enabled, rate, ttl).map_err(ServiceError::Validation)?;
                Ok(convert::room(self.service.configure_waiting_room(&admin, event, change).await?))
            }
            .await,
        )
    }
}
