//! Live availability of an event: the document `GET /events/{id}/availability` returns,
//! and (in [`watcher`]) one watcher per watched event per process that learns about
//! changes once and fans them out to every open stream.

pub mod watcher;

use serde::Serialize;
use utoipa::ToSchema;

use crate::catalog::{Catalog, CatalogError, CategoryId, Event, EventId};
use crate::stock::{Levels, Stock, StockError};

/// Live stock of one category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"category_id": 1, "name": "VIP", "quota": 5000, "available": 4890, "held": 60, "sold": 50}))]
pub struct CategoryAvailability {
    /// Category id.
    pub category_id: i64,
    /// Category name.
    pub name: String,
    /// Tickets for sale in total.
    pub quota: i64,
    /// Reservable now.
    pub available: i64,
    /// In unexpired holds.
    pub held: i64,
    /// Confirmed.
    pub sold: i64,
}

/// Live stock of an event; `available + held + sold == quota` per category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[schema(example = json!({"event_id": 1, "categories": [{"category_id": 1, "name": "VIP", "quota": 5000,
    "available": 4890, "held": 60, "sold": 50}]}))]
pub struct Availability {
    /// Event id.
    pub event_id: i64,
    /// Its categories in id order.
    pub categories: Vec<CategoryAvailability>,
}

impl Availability {
    /// Reads an event from the catalog and its levels from Redis.
    pub async fn read(catalog: &Catalog, stock: &Stock, event: EventId) -> Result<Self, CatalogError> {
        let event = catalog.event(event).await?;
        Ok(Self::of(&event, stock).await?)
    }

    /// The live levels of an already-read event, in one pipelined Redis round trip.
    pub async fn of(event: &Event, stock: &Stock) -> Result<Self, StockError> {
        let ids: Vec<CategoryId> = event
            .categories
            .iter()
            .map(|category| CategoryId::new(category.id).expect("stored ids are valid"))
            .collect();
        let levels = stock.levels(&ids).await?;
        Ok(Self::combine(event, levels))
    }

    /// Pairs each category of `event` with its levels (in the same order).
    pub fn combine(event: &Event, levels: Vec<Levels>) -> Self {
        let categories = event
            .categories
            .iter()
            .zip(levels)
            .map(|(category, levels)| CategoryAvailability {
                category_id: category.id,
                name: category.name.clone(),
                quota: levels.quota,
                available: levels.available,
                held: levels.held,
                sold: levels.sold,
            })
            .collect();
        Self { event_id: event.id, categories }
    }
}
