//! The read side of reservations: rows the worker wrote from the event pipeline.
//! They trail the API by the pipeline's delay.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::contract::{Reservation, ReservationStatus};
use crate::ids::{CategoryId, UserId};
use crate::validation::PAGE_LIMIT_MAX;

#[derive(sqlx::FromRow)]
struct ReservationRow {
    id: Uuid,
    status: String,
    event_id: i64,
    category_id: i64,
    user_id: String,
    quantity: i64,
    amount: i64,
    currency: String,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    confirmed_at: Option<DateTime<Utc>>,
    payment_id: Option<String>,
    seats: Option<Vec<String>>,
}

impl ReservationRow {
    fn into_reservation(self) -> Result<Reservation, sqlx::Error> {
        let status = ReservationStatus::parse(&self.status)
            .ok_or_else(|| sqlx::Error::Decode(format!("unknown reservation status {:?}", self.status).into()))?;
        Ok(Reservation {
            id: self.id,
            status,
            event_id: self.event_id,
            category_id: self.category_id,
            user_id: self.user_id,
            quantity: self.quantity,
            amount: self.amount,
            currency: self.currency,
            created_at: self.created_at,
            expires_at: self.expires_at,
            confirmed_at: self.confirmed_at,
            payment_id: self.payment_id,
            seats: self.seats,
        })
    }
}

/// The newest `limit` (1..=[`PAGE_LIMIT_MAX`]) reservations of `user`, newest first.
pub async fn list_reservations(database: &PgPool, user: &UserId, limit: i64) -> Result<Vec<Reservation>, sqlx::Error> {
    let rows: Vec<ReservationRow> = sqlx::query_as(include_str!("list_reservations.sql"))
        .bind(user.as_str())
        .bind(limit.clamp(1, PAGE_LIMIT_MAX))
        .fetch_all(database)
        .await?;
    rows.into_iter().map(ReservationRow::into_reservation).collect()
}

/// One reservation by id, as the pipeline last recorded it.
pub async fn find_reservation(database: &PgPool, id: Uuid) -> Result<Option<Reservation>, sqlx::Error> {
    let row: Option<ReservationRow> =
        sqlx::query_as(include_str!("select_reservation.sql")).bind(id).fetch_optional(database).await?;
    row.map(ReservationRow::into_reservation).transpose()
}

/// The held and confirmed reservations of a category, oldest id first: what a rebuilt
/// stock must account for (`worker reconcile --repair`).
pub async fn open_reservations(database: &PgPool, category: CategoryId) -> Result<Vec<Reservation>, sqlx::Error> {
    let rows: Vec<ReservationRow> =
        sqlx::query_as(include_str!("open_reservations.sql")).bind(category.get()).fetch_all(database).await?;
    rows.into_iter().map(ReservationRow::into_reservation).collect()
}
