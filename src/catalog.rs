//! Events and their ticket categories: validated values, the Postgres store, and
//! the provisioning of each category's stock in Redis.
//!
//! # Provisioning survives a crash between Postgres and Redis
//! A category is created in four steps, and a crash between any two leaves it
//! either unsellable-but-recoverable or fully provisioned, never sellable twice over:
//! 1. insert the row with `stock_provisioned_at = NULL`;
//! 2. create its Redis stock in state `pending` (only if absent; never overwritten);
//! 3. set `stock_provisioned_at` in Postgres;
//! 4. flip the stock to `open`; only now can it be reserved, and only now is 201 sent.
//!
//! A row with `stock_provisioned_at IS NULL` has never been sellable (its stock, if
//! any, is still pending), so the recovery sweep may create full stock for it. A
//! provisioned row whose stock is missing was flushed after sales may have happened:
//! the API reports 503 for it and never recreates it (`worker reconcile --repair` does,
//! from Postgres). A provisioned row whose stock is pending crashed between 3 and 4;
//! the sweep opens it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;

use crate::ids::{CategoryId, EventId};
use crate::seating::{SeatMap, SeatRow};
use crate::stock::{SaleWindow, Stock, StockError, StockTerms};
use crate::validation::{FieldError, FieldErrors, plain_text};

pub use crate::stock::QUOTA_MAX;
pub use crate::validation::PAGE_LIMIT_MAX;

/// Default `max_per_user` when the request leaves it out (capped by the quota).
pub const MAX_PER_USER_DEFAULT: i64 = 10;

/// A concert or game whose tickets are sold.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[schema(example = json!({"id": 1, "name": "Stampede Live", "venue": "Main Arena",
    "starts_at": "2027-01-10T19:00:00Z", "sale_starts_at": null, "sale_ends_at": null,
    "created_at": "2026-11-21T10:00:00Z", "categories": []}))]
pub struct Event {
    /// Event id.
    #[schema(value_type = i64)]
    pub id: EventId,
    /// Display name.
    pub name: String,
    /// Where it takes place.
    pub venue: String,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// When tickets go on sale; `null` means already on sale.
    pub sale_starts_at: Option<DateTime<Utc>>,
    /// When the sale closes; `null` means never.
    pub sale_ends_at: Option<DateTime<Utc>>,
    /// When the event was created.
    pub created_at: DateTime<Utc>,
    /// Its ticket categories, in id order.
    pub categories: Vec<Category>,
}

/// A class of tickets of one event, with its price and quota.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
#[schema(example = json!({"id": 1, "event_id": 1, "name": "VIP", "price": 150000,
    "currency": "IDR", "quota": 5000, "max_per_user": 4}))]
pub struct Category {
    /// Category id.
    #[sqlx(try_from = "i64")]
    #[schema(value_type = i64)]
    pub id: CategoryId,
    /// The event it belongs to.
    pub event_id: i64,
    /// Name, unique within the event.
    pub name: String,
    /// Price of one ticket in the currency's minor unit.
    pub price: i64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Tickets for sale in total.
    pub quota: i64,
    /// Most tickets one user may hold and buy in this category.
    pub max_per_user: i64,
    /// A seated category's seat map, as given; absent for counted tickets.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<SeatRow>>)]
    pub seat_map: Option<SeatMap>,
}

impl Category {
    /// The terms this category's stock is created with, under its event's sale window.
    pub fn stock_terms(&self, sale_window: SaleWindow) -> StockTerms {
        StockTerms {
            category_id: self.id,
            event_id: self.event_id,
            quota: self.quota,
            max_per_user: self.max_per_user,
            price: self.price,
            currency: self.currency.clone(),
            sale_window,
            seat_map: self.seat_map.clone(),
        }
    }
}

/// A validated request to create an event.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// 1..200 characters.
    pub name: String,
    /// 1..200 characters.
    pub venue: String,
    /// Start of the event.
    pub starts_at: DateTime<Utc>,
    /// When reservations are accepted.
    pub sale_window: SaleWindow,
}

impl NewEvent {
    /// Validates the raw fields of a create-event request.
    pub fn parse(
        name: Option<String>,
        venue: Option<String>,
        starts_at: Option<DateTime<Utc>>,
        sale_window: SaleWindow,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let name = errors.require("name", name).and_then(|name| errors.check("name", plain_text(&name, 1, 200)));
        let venue = errors.require("venue", venue).and_then(|venue| errors.check("venue", plain_text(&venue, 1, 200)));
        let starts_at = errors.require("starts_at", starts_at);
        if let (Some(opens), Some(closes)) = (sale_window.starts_at, sale_window.ends_at)
            && closes <= opens
        {
            errors.add("sale_ends_at", "must be after sale_starts_at");
        }
        match (name, venue, starts_at) {
            (Some(name), Some(venue), Some(starts_at)) if errors.is_empty() => {
                Ok(Self { name, venue, starts_at, sale_window })
            }
            _ => Err(errors.into_vec()),
        }
    }
}

/// A validated request to create a ticket category.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCategory {
    /// 1..100 characters, unique within the event.
    pub name: String,
    /// At least 0, in minor units.
    pub price: i64,
    /// Three uppercase letters.
    pub currency: String,
    /// 1..=10,000,000.
    pub quota: i64,
    /// 1..=quota.
    pub max_per_user: i64,
    /// The seat map of a seated category (then `quota` is its number of seats).
    pub seat_map: Option<SeatMap>,
}

/// The raw fields of a create-category request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CategoryFields {
    /// `name`.
    pub name: Option<String>,
    /// `price`.
    pub price: Option<i64>,
    /// `currency`.
    pub currency: Option<String>,
    /// `quota`.
    pub quota: Option<i64>,
    /// `max_per_user`.
    pub max_per_user: Option<i64>,
    /// `seat_map`, each row's `row` and `seats`.
    pub seat_map: Option<Vec<(Option<String>, Option<i64>)>>,
}

impl NewCategory {
    /// Validates the raw fields of a create-category request. A seated category gives a
    /// `seat_map` instead of a `quota`; its quota is its number of seats.
    pub fn parse_fields(fields: CategoryFields) -> Result<Self, Vec<FieldError>> {
        let CategoryFields { name, price, currency, quota, max_per_user, seat_map } = fields;
        let Some(rows) = seat_map else { return Self::parse(name, price, currency, quota, max_per_user) };
        let mut errors = Vec::new();
        if quota.is_some() {
            errors
                .push(FieldError { field: "quota".to_owned(), message: "must be left out with a seat_map".to_owned() });
        }
        let map = SeatMap::parse(rows).map_err(|more| errors.extend(more)).ok();
        let seats = map.as_ref().map(SeatMap::seat_count).unwrap_or(1);
        match Self::parse(name, price, currency, Some(seats), max_per_user) {
            Ok(category) if errors.is_empty() => Ok(Self { seat_map: map, ..category }),
            Ok(_) => Err(errors),
            Err(more) => {
                errors.extend(more);
                Err(errors)
            }
        }
    }

    /// Validates the raw fields of a counted category's create request.
    pub fn parse(
        name: Option<String>,
        price: Option<i64>,
        currency: Option<String>,
        quota: Option<i64>,
        max_per_user: Option<i64>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = FieldErrors::new();
        let name = errors.require("name", name).and_then(|name| errors.check("name", plain_text(&name, 1, 100)));
        let price = errors.require("price", price).and_then(|price| {
            errors.check("price", if price >= 0 { Ok(price) } else { Err("must be at least 0".into()) })
        });
        let currency = errors.check("currency", parse_currency(currency.as_deref().unwrap_or("USD")));
        let quota = errors.require("quota", quota).and_then(|quota| {
            let valid = (1..=QUOTA_MAX).contains(&quota);
            errors.check("quota", if valid { Ok(quota) } else { Err(format!("must be 1 to {QUOTA_MAX}")) })
        });
        let max_per_user = match (max_per_user, quota) {
            (Some(max), Some(quota)) if !(1..=quota).contains(&max) => {
                errors.add("max_per_user", format!("must be 1 to the quota ({quota})"));
                None
            }
            (Some(max), _) if max < 1 => {
                errors.add("max_per_user", "must be at least 1");
                None
            }
            (Some(max), _) => Some(max),
            (None, quota) => quota.map(|quota| quota.min(MAX_PER_USER_DEFAULT)),
        };
        match (name, price, currency, quota, max_per_user) {
            (Some(name), Some(price), Some(currency), Some(quota), Some(max_per_user)) if errors.is_empty() => {
                Ok(Self { name, price, currency, quota, max_per_user, seat_map: None })
            }
            _ => Err(errors.into_vec()),
        }
    }
}

fn parse_currency(code: &str) -> Result<String, String> {
    if code.len() == 3 && code.bytes().all(|byte| byte.is_ascii_uppercase()) {
        Ok(code.to_owned())
    } else {
        Err("must be three uppercase letters (ISO 4217)".to_owned())
    }
}

/// A validated page request: `limit` 1..=100 after an optional id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Page size.
    pub limit: i64,
    /// Return ids strictly greater than this.
    pub after: i64,
}

/// Why a catalog operation failed.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The event does not exist.
    #[error("event not found")]
    EventNotFound,
    /// The event already has a category with this name.
    #[error("a category with this name already exists in the event")]
    DuplicateCategory,
    /// Postgres failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Redis failed or the stock is missing.
    #[error(transparent)]
    Stock(#[from] StockError),
}

/// The catalog service: Postgres rows plus Redis stock provisioning.
#[derive(Clone)]
pub struct Catalog {
    database: PgPool,
    stock: Stock,
}

mod store;

impl Catalog {
    /// A catalog over a Postgres pool and the stock store.
    pub fn new(database: PgPool, stock: Stock) -> Self {
        Self { database, stock }
    }

    /// Creates an event.
    pub async fn create_event(&self, event: &NewEvent) -> Result<Event, CatalogError> {
        Ok(store::insert_event(&self.database, event).await?)
    }

    /// Lists events in id order, with their categories; returns the next cursor for a full page.
    pub async fn list_events(&self, page: PageRequest) -> Result<(Vec<Event>, Option<i64>), CatalogError> {
        let events = store::list_events(&self.database, page).await?;
        let next_after = (i64::try_from(events.len()) == Ok(page.limit))
            .then(|| events.last().map(|event| event.id.get()))
            .flatten();
        Ok((events, next_after))
    }

    /// One event with its categories.
    pub async fn event(&self, id: EventId) -> Result<Event, CatalogError> {
        store::event(&self.database, id).await?.ok_or(CatalogError::EventNotFound)
    }

    /// Creates a category and provisions its stock; it is reservable when this returns.
    pub async fn create_category(&self, event: EventId, category: &NewCategory) -> Result<Category, CatalogError> {
        let (created, window) = store::insert_category(&self.database, event, category).await?;
        self.provision(&created, window).await?;
        Ok(created)
    }

    /// Steps 2 to 4 of provisioning (see the module docs); each is idempotent.
    async fn provision(&self, category: &Category, window: SaleWindow) -> Result<(), CatalogError> {
        let id = category.id;
        self.stock.create_pending(&category.stock_terms(window)).await?;
        store::mark_provisioned(&self.database, id).await?;
        self.stock.open(id).await?;
        Ok(())
    }

    /// One category, if it exists.
    pub async fn category(&self, category: CategoryId) -> Result<Option<Category>, CatalogError> {
        Ok(store::category(&self.database, category).await?)
    }

    /// Whether the category exists in Postgres.
    pub async fn category_exists(&self, category: CategoryId) -> Result<bool, CatalogError> {
        Ok(store::category_exists(&self.database, category).await?)
    }

    /// Finishes provisioning interrupted by a crash, and lists every provisioned category
    /// in the registry again; run at start and periodically.
    /// Returns how many categories it provisioned or opened.
    pub async fn recover_provisioning(&self) -> Result<usize, CatalogError> {
        let mut repaired = 0;
        for (category, window) in store::unprovisioned_categories(&self.database).await? {
            self.provision(&category, window).await?;
            repaired += 1;
        }
        let provisioned = store::provisioned_category_ids(&self.database).await?;
        self.stock.register(&provisioned).await?;
        repaired += self.stock.open_pending(&provisioned).await?;
        Ok(repaired)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_need_names_venues_and_an_ordered_window() {
        let now = Utc::now();
        let window = SaleWindow { starts_at: Some(now), ends_at: Some(now) };
        let errors = NewEvent::parse(Some(String::new()), None, None, window).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["name", "venue", "starts_at", "sale_ends_at"]);
        let ok = NewEvent::parse(Some("A".into()), Some("B".into()), Some(now), SaleWindow::default());
        assert!(ok.is_ok());
        assert!(NewEvent::parse(Some("x".repeat(201)), Some("B".into()), Some(now), SaleWindow::default()).is_err());
    }

    #[test]
    fn categories_default_currency_and_cap() {
        let category = NewCategory::parse(Some("VIP".into()), Some(0), None, Some(4), None).unwrap();
        assert_eq!((category.currency.as_str(), category.max_per_user), ("USD", 4));
        let category = NewCategory::parse(Some("VIP".into()), Some(1), None, Some(100), None).unwrap();
        assert_eq!(category.max_per_user, 10);
    }

    #[test]
    fn categories_reject_bad_numbers_and_currency() {
        let errors = NewCategory::parse(Some("".into()), Some(-1), Some("usd".into()), Some(0), Some(0)).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|error| error.field.as_str()).collect();
        assert_eq!(fields, ["name", "price", "currency", "quota", "max_per_user"]);
        let errors = NewCategory::parse(Some("A".into()), Some(1), None, Some(5), Some(6)).unwrap_err();
        assert_eq!(errors[0].field, "max_per_user");
        assert!(NewCategory::parse(Some("A".into()), Some(1), None, Some(QUOTA_MAX + 1), None).is_err());
    }
}
