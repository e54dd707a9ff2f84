//! Events, ticket categories, live availability and live seat maps.

use crate::availability::Availability;
use crate::catalog::{Category, Event, NewCategory, NewEvent, PageRequest};
use crate::ids::{CategoryId, EventId};
use crate::seating::{self, LiveSeats};

use super::{Admitted, Service, ServiceError};

/// Default page size of list operations.
pub const PAGE_LIMIT_DEFAULT: i64 = 20;

impl Service {
    /// Creates an event ([`super::Gate::Admin`]).
    pub async fn create_event(&self, _admin: &Admitted, event: &NewEvent) -> Result<Event, ServiceError> {
        Ok(self.catalog.create_event(event).await?)
    }

    /// Adds a category to an event and opens its stock ([`super::Gate::Admin`]).
    pub async fn create_category(
        &self,
        _admin: &Admitted,
        event: EventId,
        category: &NewCategory,
    ) -> Result<Category, ServiceError> {
        Ok(self.catalog.create_category(event, category).await?)
    }

    /// One page of events in ascending id order, and the cursor of the next page.
    pub async fn list_events(&self, page: PageRequest) -> Result<(Vec<Event>, Option<i64>), ServiceError> {
        Ok(self.catalog.list_events(page).await?)
    }

    /// One event with its categories.
    pub async fn event(&self, event: EventId) -> Result<Event, ServiceError> {
        Ok(self.catalog.event(event).await?)
    }

    /// The live stock levels of an event's categories.
    pub async fn availability(&self, event: EventId) -> Result<Availability, ServiceError> {
        Ok(Availability::read(&self.catalog, &self.stock, event).await?)
    }

    /// A seated category's live map; an unknown category and one without seats are not found.
    pub async fn seats(&self, id: CategoryId) -> Result<LiveSeats, ServiceError> {
        const MISSING: ServiceError = ServiceError::NotFound("no such seated category");
        let category = self.catalog.category(id).await?;
        let Some(map) = category.and_then(|category| category.seat_map) else { return Err(MISSING) };
        seating::live_seats(&mut self.redis.clone(), &self.keys, id, &map)
            .await
            .map_err(|error| ServiceError::unavailable(format!("redis: {error}")))?
            .ok_or_else(|| ServiceError::unavailable(format!("seats of category {} are missing from redis", id.get())))
    }
}
