//! Postgres statements of the catalog.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::{CatalogError, Category, Event, NewCategory, NewEvent, PageRequest};
use crate::ids::{CategoryId, EventId};
use crate::seating::SeatMap;
use crate::stock::SaleWindow;

#[derive(sqlx::FromRow)]
struct EventRow {
    #[sqlx(try_from = "i64")]
    id: EventId,
    name: String,
    venue: String,
    starts_at: DateTime<Utc>,
    sale_starts_at: Option<DateTime<Utc>>,
    sale_ends_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

impl EventRow {
    fn into_event(self, categories: Vec<Category>) -> Event {
        Event {
            id: self.id,
            name: self.name,
            venue: self.venue,
            starts_at: self.starts_at,
            sale_starts_at: self.sale_starts_at,
            sale_ends_at: self.sale_ends_at,
            created_at: self.created_at,
            categories,
        }
    }
}

#[derive(sqlx::FromRow)]
struct CategoryWithWindowRow {
    #[sqlx(flatten)]
    category: Category,
    sale_starts_at: Option<DateTime<Utc>>,
    sale_ends_at: Option<DateTime<Utc>>,
}

impl CategoryWithWindowRow {
    fn split(self) -> (Category, SaleWindow) {
        (self.category, SaleWindow { starts_at: self.sale_starts_at, ends_at: self.sale_ends_at })
    }
}

pub(super) async fn insert_event(database: &PgPool, event: &NewEvent) -> Result<Event, sqlx::Error> {
    let row: EventRow = sqlx::query_as(include_str!("insert_event.sql"))
        .bind(&event.name)
        .bind(&event.venue)
        .bind(event.starts_at)
        .bind(event.sale_window.starts_at)
        .bind(event.sale_window.ends_at)
        .fetch_one(database)
        .await?;
    Ok(row.into_event(Vec::new()))
}

pub(super) async fn list_events(database: &PgPool, page: PageRequest) -> Result<Vec<Event>, sqlx::Error> {
    let rows: Vec<EventRow> =
        sqlx::query_as(include_str!("list_events.sql")).bind(page.after).bind(page.limit).fetch_all(database).await?;
    with_categories(database, rows).await
}

pub(super) async fn event(database: &PgPool, id: EventId) -> Result<Option<Event>, sqlx::Error> {
    let row: Option<EventRow> =
        sqlx::query_as(include_str!("select_event.sql")).bind(id.get()).fetch_optional(database).await?;
    match row {
        Some(row) => Ok(with_categories(database, vec![row]).await?.pop()),
        None => Ok(None),
    }
}

async fn with_categories(database: &PgPool, rows: Vec<EventRow>) -> Result<Vec<Event>, sqlx::Error> {
    let ids: Vec<i64> = rows.iter().map(|row| row.id.get()).collect();
    let mut categories: Vec<Category> =
        sqlx::query_as(include_str!("categories_of_events.sql")).bind(&ids).fetch_all(database).await?;
    let mut events = Vec::with_capacity(rows.len());
    for row in rows {
        let split = categories.partition_point(|category| category.event_id == row.id.get());
        let rest = categories.split_off(split);
        let own = std::mem::replace(&mut categories, rest);
        events.push(row.into_event(own));
    }
    Ok(events)
}

pub(super) async fn insert_category(
    database: &PgPool,
    event: EventId,
    category: &NewCategory,
) -> Result<(Category, SaleWindow), CatalogError> {
    let row: CategoryWithWindowRow = sqlx::query_as(include_str!("insert_category.sql"))
        .bind(event.get())
        .bind(&category.name)
        .bind(category.price)
        .bind(&category.currency)
        .bind(category.quota)
        .bind(category.max_per_user)
        .bind(category.seat_map.as_ref().map(SeatMap::to_json))
        .fetch_one(database)
        .await
        .map_err(|error| match error.as_database_error().and_then(|error| error.code()).as_deref() {
            Some("23503") => CatalogError::EventNotFound,
            Some("23505") => CatalogError::DuplicateCategory,
            _ => CatalogError::Database(error),
        })?;
    Ok(row.split())
}

pub(super) async fn mark_provisioned(database: &PgPool, category: CategoryId) -> Result<(), sqlx::Error> {
    sqlx::query(include_str!("mark_provisioned.sql")).bind(category.get()).execute(database).await?;
    Ok(())
}

pub(super) async fn unprovisioned_categories(database: &PgPool) -> Result<Vec<(Category, SaleWindow)>, sqlx::Error> {
    let rows: Vec<CategoryWithWindowRow> =
        sqlx::query_as(include_str!("unprovisioned_categories.sql")).fetch_all(database).await?;
    Ok(rows.into_iter().map(CategoryWithWindowRow::split).collect())
}

pub(super) async fn provisioned_category_ids(database: &PgPool) -> Result<Vec<CategoryId>, sqlx::Error> {
    let ids: Vec<i64> = sqlx::query_scalar(include_str!("provisioned_category_ids.sql")).fetch_all(database).await?;
    Ok(ids.into_iter().filter_map(CategoryId::new).collect())
}

pub(super) async fn category(database: &PgPool, category: CategoryId) -> Result<Option<Category>, sqlx::Error> {
    sqlx::query_as(include_str!("select_category.sql")).bind(category.get()).fetch_optional(database).await
}

pub(super) async fn category_exists(database: &PgPool, category: CategoryId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(include_str!("category_exists.sql")).bind(category.get()).fetch_one(database).await
}
