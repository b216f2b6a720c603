//! Payments through gateways: the [`PaymentGateway`] trait, a seeded [`SimulatedGateway`], and
//! a [`Router`] that picks a gateway per payment by rules, each gateway behind a
//! [`CircuitBreaker`].
//!
//! Gateway calls are IO: they run on the async runtime, never on the engine's decision thread.
//! Every call carries an idempotency key, so a retried call (after a timeout or a restart)
//! returns the first outcome instead of charging again.

mod breaker;
mod gateway;
mod journal;
mod router;
mod simulated;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use gateway::{
    Authorization, AuthorizeRequest, BoxFuture, GatewayError, MoneyRequest, PaymentGateway,
};
pub use router::{Fee, Route, Routed, Router, RouterConfig};
pub use simulated::{Outage, SimulatedGateway, SimulatedGatewayConfig};
