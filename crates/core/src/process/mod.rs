//! Process managers: long-running flows that react to committed events by calling the outside
//! world and sending commands back through the engine.

mod payments;
mod settled;

pub use crate::domain::RESERVED_KEY_PREFIX;
pub use payments::{MoneyNotMoved, PaymentProcess, payment_id_for};
