//! Live availability of an event: the document `GET /events/{id}/availability` returns,
//! and (in [`watcher`]) one watcher per watched event per process that learns about
//! changes once and fans them out to every open stream.

pub mod watcher;

use serde::Serialize;
use utoipa::ToSchema;

use crate::catalog::{Catalog, CatalogError, Event};
use crate::ids::{CategoryId, EventId};
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
        let ids: Vec<CategoryId> = event.categories.iter().map(|category| category.id).collect();
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
                category_id: category.id.get(),
                name: category.name.clone(),
                quota: levels.quota,
                available: levels.available,
                held: levels.held,
                sold: levels.sold,
            })
            .collect();
        Self { event_id: event.id.get(), categories }
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::catalog::Category;

    #[test]
    fn combine_pairs_each_category_with_its_levels_in_order() {
        let category = |id: i64, name: &str| Category {
            id: CategoryId::new(id).unwrap(),
            event_id: 7,
            name: name.to_owned(),
            price: 100,
            currency: "USD".to_owned(),
            quota: 10,
            max_per_user: 2,
            seat_map: None,
        };
        let event = Event {
            id: EventId::new(7).unwrap(),
            name: "e".to_owned(),
            venue: "v".to_owned(),
            starts_at: Utc::now(),
            sale_starts_at: None,
            sale_ends_at: None,
            created_at: Utc::now(),
            categories: vec![category(1, "VIP"), category(2, "Floor")],
        };
        let levels = vec![
            Levels { quota: 10, available: 7, held: 2, sold: 1 },
            Levels { quota: 10, available: 10, held: 0, sold: 0 },
        ];
        let availability = Availability::combine(&event, levels);
        assert_eq!(availability.event_id, 7);
        assert_eq!(availability.categories[0].name, "VIP");
        assert_eq!((availability.categories[0].available, availability.categories[0].held), (7, 2));
        assert_eq!(availability.categories[1].category_id, 2);
    }
}
