//! Budgets per key and per team: a USD amount per UTC calendar period, enforced by
//! reserving each request's worst-case cost before it is forwarded. The reservation is
//! settled by the request's ledger row, in the same transaction that records it.

mod alert;
mod check;
mod reserve;
mod trouble;

// What a cap is lives with the key and team records that carry it; enforcing it is
// this module's.
use crate::auth::budget::PICO_PER_MICRO;
pub use crate::auth::budget::{Budget, parse_usd};
pub use crate::clock::Period;
pub use alert::Alerts;
pub use reserve::{Budgets, Downgrade, Reservation, Standing};
