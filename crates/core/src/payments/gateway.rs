//! The gateway trait: what orderly asks of a payment service provider.

use std::future::Future;
use std::pin::Pin;

use crate::domain::{GatewayId, Money, OrderId, TenantId};

/// A boxed future, so that gateways can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A request to reserve an amount on the customer's account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizeRequest {
    /// Same key, same outcome: the gateway never authorizes twice for one key.
    pub idempotency_key: String,
    /// The tenant the order belongs to.
    pub tenant: TenantId,
    /// The order paid for.
    pub order: OrderId,
    /// The order's total.
    pub amount: Money,
}

/// A request to capture, void or refund (part of) an authorization made by this gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoneyRequest {
    /// Same key, same outcome: the gateway never moves money twice for one key.
    pub idempotency_key: String,
    /// The gateway's reference of the authorization, as returned by `authorize`.
    pub reference: String,
    /// The amount (for a void: the authorized amount).
    pub amount: Money,
}

/// The gateway's answer to an authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// The amount is reserved; `reference` names the authorization at the gateway.
    Approved {
        /// The gateway's reference for later capture, void or refund.
        reference: String,
    },
    /// The customer's bank refused. Final for this payment: retrying elsewhere would not help.
    Declined,
}

/// Why a gateway call did not get an answer. Unlike a decline, these say nothing about the
/// customer: the call may be retried with the same key, here or (for an authorization)
/// elsewhere.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The gateway is down or refused the connection.
    #[error("gateway unavailable: {0}")]
    Unavailable(String),
    /// No answer in time; the outcome at the gateway is unknown until retried with the same key.
    #[error("gateway timed out")]
    Timeout,
    /// The circuit breaker in front of the gateway is open; the call was not made.
    #[error("circuit breaker open")]
    BreakerOpen,
    /// The gateway answered but refused the request as invalid: an unknown reference, an
    /// amount above what is left to capture or refund, a currency mismatch, or an idempotency
    /// key reused for a different request. A bug in the caller, so retrying, here or
    /// elsewhere, gives the same answer.
    #[error("gateway rejected the request: {0}")]
    Rejected(String),
}

/// A payment service provider. Implementations must honour idempotency keys: the same key
/// returns the same outcome and moves money at most once, for as long as a call under it may
/// be repeated (a retry after a timeout or a restart: minutes to hours).
///
/// The log records an authorization with the gateway's reference (when it fits
/// [`GatewayReference`](crate::domain::GatewayReference); otherwise a warning is logged), and
/// its capture, void or refund, days later, quotes it. Only an authorization recorded without
/// one (in logs written before schema version 2) is asked for again under its key to learn it;
/// a provider that has forgotten the key by then would reserve the amount again.
pub trait PaymentGateway: Send + Sync + std::fmt::Debug {
    /// The gateway's id, recorded on payments it handles.
    fn id(&self) -> &GatewayId;
    /// Reserves `request.amount`.
    fn authorize<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>>;
    /// Takes (part of) an authorized amount.
    fn capture<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>>;
    /// Gives up an authorization that was not captured.
    fn void<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>>;
    /// Gives back (part of) a captured amount.
    fn refund<'a>(&'a self, request: &'a MoneyRequest) -> BoxFuture<'a, Result<(), GatewayError>>;
    /// Gives up whatever an authorization under `request.idempotency_key` reserved, without
    /// its reference (a "technical cancel"): for a call whose answer never arrived. `Ok` when
    /// the key reserved nothing or its reservation was already given up; from then on, an
    /// authorization under the key (a call still on its way) reserves nothing. A captured
    /// authorization is [`GatewayError::Rejected`].
    fn cancel_authorization<'a>(
        &'a self,
        request: &'a AuthorizeRequest,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}
