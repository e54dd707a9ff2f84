//! Waiting rooms: their settings, joining and polling a queue, and the pass check of reserve.

use crate::ids::{CategoryId, EventId, UserId};
use crate::stock::SaleWindow;
use crate::waiting_room::{Joined, QueueStatus, Room, RoomChange};

use super::{Admitted, Service, ServiceError};

impl Service {
    async fn sale_window(&self, event: EventId) -> Result<SaleWindow, ServiceError> {
        let event = self.catalog.event(event).await?;
        Ok(SaleWindow { starts_at: event.sale_starts_at, ends_at: event.sale_ends_at })
    }

    /// The sale window for a script that only uses it to create a room: a room that is on
    /// already exists in Redis with its window, so the busy paths skip the catalog; otherwise
    /// the catalog read also answers not found for an unknown event.
    async fn window_unless_on(&self, event: EventId) -> Result<SaleWindow, ServiceError> {
        if self.waiting_rooms.is_on(event) { Ok(SaleWindow::default()) } else { self.sale_window(event).await }
    }

    /// Changes an event's room ([`super::Gate::Admin`]).
    pub async fn configure_waiting_room(
        &self,
        _admin: &Admitted,
        event: EventId,
        change: RoomChange,
    ) -> Result<Room, ServiceError> {
        let window = self.sale_window(event).await?;
        Ok(self.waiting_rooms.configure(event, window, change).await?)
    }

    /// An event's room as it is now.
    pub async fn waiting_room(&self, event: EventId) -> Result<Room, ServiceError> {
        let window = self.window_unless_on(event).await?;
        Ok(self.waiting_rooms.room(event, window).await?)
    }

    /// Joins the caller to an event's queue ([`super::Gate::Join`]), or keeps its place.
    pub async fn join_queue(&self, admitted: &Admitted, event: EventId) -> Result<Joined, ServiceError> {
        let window = self.window_unless_on(event).await?;
        Ok(self.waiting_rooms.join(&admitted.caller.user_id, event, window).await?)
    }

    /// The caller's place in an event's queue ([`super::Gate::User`]).
    pub async fn queue_status(&self, admitted: &Admitted, event: EventId) -> Result<QueueStatus, ServiceError> {
        Ok(self.waiting_rooms.poll(&admitted.caller.user_id, event).await?)
    }

    /// The reserve path's check: when `category`'s event has its room on (per this process's
    /// directory, confirmed in Redis before a refusal), the request needs a valid pass of
    /// `user` for that event.
    pub(super) async fn require_pass(
        &self,
        pass: Option<&str>,
        user: &UserId,
        category: CategoryId,
    ) -> Result<(), ServiceError> {
        let Some(event) = self.waiting_rooms.guard(category).await? else { return Ok(()) };
        match self.waiting_rooms.check_pass(pass, user, event).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(ServiceError::QueuePassRequired),
        }
    }
}
