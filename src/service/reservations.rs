//! Reserve, confirm, cancel, read and list reservations.
//!
//! No Postgres on the reserve, confirm and cancel paths except on their failure paths (an
//! unknown category, a record gone after 24 h). Reserve and confirm run their engine call
//! in a task of its own: once a request reaches Redis it is decided and counted, even when
//! its client hangs up or its deadline passes meanwhile.

use tracing::Instrument;

use crate::auth::Role;
use crate::contract::{Reservation, ReservationStatus};
use crate::ids::{ReservationId, UserId};
use crate::persistence::reservations as archive;
use crate::reservation::idempotency::IdempotencyKey;
use crate::reservation::{Confirmation, NewReservation, NotHeldReason, ReservationError};

use super::{Admitted, Service, ServiceError};

fn record_outcome(operation: &'static str, result: &Result<Reservation, ReservationError>, success: &'static str) {
    let outcome = match result {
        Ok(_) => success,
        Err(error) => error.outcome(),
    };
    metrics::counter!("reservation_outcomes_total", "operation" => operation, "outcome" => outcome).increment(1);
}

impl Service {
    /// Holds tickets for an admitted caller ([`super::Gate::Purchase`]); in an event whose
    /// waiting room is on, `queue_pass` must be the caller's valid pass for it.
    pub async fn reserve(
        &self,
        mut admitted: Admitted,
        new: NewReservation,
        key: Option<IdempotencyKey>,
        queue_pass: Option<&str>,
    ) -> Result<Reservation, ServiceError> {
        self.require_pass(queue_pass, &admitted.caller.user_id, new.category).await?;
        let engine = self.reservations.clone();
        let permit = admitted.take_permit();
        let user = admitted.caller.user_id;
        // The task stays in the request's span: its log lines and its trace are the request's.
        let reserve = tokio::spawn(
            async move {
                let result = engine.reserve(&user, &new, key).await;
                drop(permit);
                record_outcome("reserve", &result, "held");
                result
            }
            .in_current_span(),
        );
        match reserve.await.map_err(ServiceError::internal)? {
            Ok(reservation) => Ok(reservation),
            Err(error) => Err(self.explain_missing_stock(error).await),
        }
    }

    /// Tells the two causes of a reserve's missing stock apart: a category that never
    /// existed is not found; a real one's missing stock is unavailable (until `worker
    /// reconcile --repair` rebuilds it). Only this failure path reads Postgres.
    async fn explain_missing_stock(&self, error: ReservationError) -> ServiceError {
        let ReservationError::StockMissing(category) = error else { return error.into() };
        match self.catalog.category_exists(category).await {
            Ok(true) => error.into(),
            Ok(false) => ReservationError::UnknownCategory(category).into(),
            Err(cause) => ServiceError::unavailable(format!("postgres: {cause:?}")),
        }
    }

    /// Charges the payment and confirms the caller's hold ([`super::Gate::Purchase`]).
    pub async fn confirm(
        &self,
        mut admitted: Admitted,
        confirmation: Confirmation,
        key: Option<IdempotencyKey>,
    ) -> Result<Reservation, ServiceError> {
        let id = ReservationId::from_uuid(confirmation.reservation_id)
            .ok_or(ServiceError::NotFound("no such reservation"))?;
        // The payment runs in its own task: a client that hangs up must not cut it between
        // the charge and recording it. The permit stays with it until it ends. It stays in the
        // request's span: its log lines and its trace are the request's.
        let engine = self.reservations.clone();
        let permit = admitted.take_permit();
        let user = admitted.caller.user_id.clone();
        let payment = tokio::spawn(
            async move {
                let result = engine.confirm(&user, id, &confirmation, key).await;
                drop(permit);
                result
            }
            .in_current_span(),
        );
        let result = payment.await.map_err(ServiceError::internal)?;
        let result = self.or_archived(&admitted.caller.user_id, id, ReservationStatus::Confirmed, result).await?;
        record_outcome("confirm", &result, "confirmed");
        Ok(result?)
    }

    /// Releases the caller's hold at once ([`super::Gate::Change`]).
    pub async fn cancel(&self, admitted: &Admitted, id: ReservationId) -> Result<Reservation, ServiceError> {
        let user = &admitted.caller.user_id;
        let result = self.reservations.cancel(user, id).await;
        let result = self.or_archived(user, id, ReservationStatus::Cancelled, result).await?;
        record_outcome("cancel", &result, "cancelled");
        Ok(result?)
    }

    /// One reservation, for its owner or an admin ([`super::Gate::Read`]); anyone else
    /// learns only that there is no such reservation.
    pub async fn reservation(&self, admitted: &Admitted, id: ReservationId) -> Result<Reservation, ServiceError> {
        let reservation = match self.reservations.get(id).await? {
            Some(reservation) => Some(reservation),
            None => self.archived(id).await?,
        };
        let caller = &admitted.caller;
        match reservation {
            Some(reservation) if caller.role == Role::Admin || reservation.user_id == caller.user_id.as_str() => {
                Ok(reservation)
            }
            _ => Err(ServiceError::NotFound("no such reservation")),
        }
    }

    /// The caller's reservations from Postgres, newest first ([`super::Gate::User`]);
    /// `limit` is 1..=100.
    pub async fn list_reservations(&self, admitted: &Admitted, limit: i64) -> Result<Vec<Reservation>, ServiceError> {
        archive::list_reservations(&self.database, &admitted.caller.user_id, limit)
            .await
            .map_err(|error| ServiceError::unavailable(format!("postgres: {error}")))
    }

    /// A confirm or cancel that found no Redis record: once a reservation has ended, its
    /// record is kept 24 h, so a repeat after that answers from the pipeline's Postgres copy
    /// what it answered then (the same body when the status is the one `done` leads to,
    /// else the same refusal). Only this failure path reads Postgres.
    async fn or_archived(
        &self,
        user: &UserId,
        id: ReservationId,
        done: ReservationStatus,
        result: Result<Reservation, ReservationError>,
    ) -> Result<Result<Reservation, ReservationError>, ServiceError> {
        if !matches!(result, Err(ReservationError::NotFound)) {
            return Ok(result);
        }
        let Some(archived) = self.archived(id).await?.filter(|archived| archived.user_id == user.as_str()) else {
            return Ok(result);
        };
        Ok(match archived.status {
            status if status == done => Ok(archived),
            ReservationStatus::Confirmed => Err(ReservationError::NotHeld(NotHeldReason::Confirmed)),
            ReservationStatus::Cancelled => Err(ReservationError::NotHeld(NotHeldReason::Cancelled)),
            ReservationStatus::Expired => Err(ReservationError::Expired),
            // Postgres says held but Redis has no record: Redis lost it (see `worker reconcile`).
            ReservationStatus::Held => {
                return Err(ServiceError::unavailable("the reservation's live record is missing"));
            }
        })
    }

    /// Where a reservation is read once its Redis record is gone (24 h after it ended):
    /// the pipeline's Postgres copy.
    async fn archived(&self, id: ReservationId) -> Result<Option<Reservation>, ServiceError> {
        archive::find_reservation(&self.database, id.uuid())
            .await
            .map_err(|error| ServiceError::unavailable(format!("postgres: {error}")))
    }
}
