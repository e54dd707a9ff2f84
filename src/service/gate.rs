//! The checks before an operation, in one order for every front: the per-address rate,
//! the in-flight bound, the token, its role, and the per-user rate. A front runs its
//! operation's [`Gate`] before it parses the request, so a caller without a valid token
//! learns only that, and shed load costs no parsing.

use tokio::sync::OwnedSemaphorePermit;

use super::{Credentials, Service, ServiceError};
use crate::auth::Caller;

/// Which checks an operation passes before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Reserve and confirm: the per-address rate, the in-flight bound
    /// (`RESERVE_IN_FLIGHT_MAX`), the token and the per-user rate.
    Purchase,
    /// Cancel: the per-address rate, the token and the per-user rate.
    Change,
    /// Reading one reservation: the per-address rate and the token.
    Read,
    /// Joining a queue: the token and the per-user rate.
    Join,
    /// Reads of the caller's own state: the token.
    User,
    /// Organisers' operations: an admin token.
    Admin,
}

/// A caller that passed a [`Gate`]; it holds the in-flight permit (if the gate takes one)
/// until the operation ends.
pub struct Admitted {
    /// Who is calling.
    pub caller: Caller,
    permit: Option<OwnedSemaphorePermit>,
}

impl Admitted {
    /// Takes the in-flight permit, for work that must outlive the caller's request.
    pub(super) fn take_permit(&mut self) -> Option<OwnedSemaphorePermit> {
        self.permit.take()
    }
}

impl Service {
    /// Runs `gate`'s checks, in order, for a caller with `credentials`.
    pub async fn admit(&self, credentials: &Credentials<'_>, gate: Gate) -> Result<Admitted, ServiceError> {
        if matches!(gate, Gate::Purchase | Gate::Change | Gate::Read) {
            self.admission.check_rate(credentials.client)?;
        }
        let permit = match gate {
            Gate::Purchase => Some(self.admission.enter()?),
            _ => None,
        };
        let caller = self.jwt.authenticate(credentials.authorization).await?;
        let caller = if gate == Gate::Admin { caller.require_admin()? } else { caller };
        if matches!(gate, Gate::Purchase | Gate::Change | Gate::Join) {
            self.user_rate_limit.check(&caller.user_id).await?;
        }
        Ok(Admitted { caller, permit })
    }
}
