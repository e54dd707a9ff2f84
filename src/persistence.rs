//! Postgres: the read side of the rows the event pipeline writes ([`reservations`]).
//! The pool and the migrations are set up by the `infrastructure` module.

pub mod reservations;
