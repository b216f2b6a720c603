//! Every error the API answers, in one shape and mapped to status codes in one place:
//! `{"error":{"code":"insufficient_stock","message":"…","details":{…}}}`.
//!
//! Handlers return [`ApiError`]; errors made outside them (no such route, a body over the
//! limit cut off by the limit layer, a timeout) are given the same shape by [`uniform_errors`].

use std::cell::Cell;
use std::time::Duration;

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orderly_core::domain::{
    InventoryRejection, OrderRejection, PaymentRejection, Rejection, Shortage,
};
use orderly_core::engine::{EngineError, ExecuteError};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// Characters of a client's input that an error message repeats: enough for any valid id
/// (at most 64), and a long path or value is not sent back in full.
pub const MAX_ECHO: usize = 64;
const _: () = assert!(MAX_ECHO >= orderly_core::domain::limits::MAX_ID_LEN);

/// `input` as a message quotes it: in JSON quotes (so that spaces and control characters
/// show), cut after [`MAX_ECHO`] characters with "…".
#[must_use]
pub(crate) fn echo(input: &str) -> String {
    Value::from(cut(input, MAX_ECHO)).to_string()
}

/// `text`, or its first `max` characters and "…".
#[must_use]
pub(crate) fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable code to branch on, a message for people, and details.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable snake_case code, part of the API (`insufficient_stock`, `validation_failed`, …).
    #[schema(example = "insufficient_stock")]
    pub code: &'static str,
    /// A sentence for people; may change between versions.
    pub message: String,
    /// Machine-readable particulars (the field that failed, the short SKUs, …); `{}` if none.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    retry_after: Option<Duration>,
}

/// Marks a response as already in the error shape, so [`uniform_errors`] leaves it alone.
#[derive(Clone, Copy, Debug)]
struct Shaped;

impl ApiError {
    /// An error with `status`, `code` and `message` and no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: json!({}), retry_after: None }
    }

    /// The same error with `details`.
    #[must_use]
    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    /// The same error with a `Retry-After` header.
    #[must_use]
    pub fn retry_after(mut self, after: Duration) -> ApiError {
        self.retry_after = Some(after);
        self
    }

    /// `422 validation_failed` naming `field`.
    pub fn validation(field: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed", message)
            .with_details(json!({ "field": field }))
    }

    /// `404 not_found`-like answers for a missing resource with its own code.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A `404` of a read model, with the position it had reached (`details.position`): a
    /// client that just wrote can tell "not there yet" (its command's position is beyond it;
    /// read again with `min_position`) from "not there".
    #[must_use]
    pub fn read_up_to(self, position: u64) -> ApiError {
        self.with_details(json!({ "position": position }))
    }

    /// `401 unauthorized`.
    pub fn unauthorized(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// `503 not_ready`: the node is still recovering.
    pub fn not_ready() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the server is recovering")
            .retry_after(Duration::from_secs(1))
    }

    /// `500 internal`: a failure of the server, never of the request. The cause is logged,
    /// not shown.
    pub fn internal(cause: &dyn std::fmt::Display) -> ApiError {
        tracing::error!(%cause, "internal error");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal server error")
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// `504 outcome_unknown`: the request's command went to the engine, but its answer took
    /// longer than the request may.
    fn outcome_unknown() -> ApiError {
        let message = "the command went to the engine but its answer took too long, so it may \
                       have been recorded: retry it with the same Idempotency-Key to get its \
                       outcome, or read the state before sending it again without one";
        ApiError::new(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", message)
    }

    /// The shape every error shares for a bare `status` made outside a handler.
    fn for_status(status: StatusCode) -> ApiError {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => ("method_not_allowed", "method not allowed here"),
            StatusCode::PAYLOAD_TOO_LARGE => {
                ("payload_too_large", "the request body is over the size limit")
            }
            // The timeout layer answers 503; every other 503 is an ApiError, shaped already.
            // `uniform_errors` answers a timeout after the engine took a command otherwise.
            StatusCode::REQUEST_TIMEOUT
            | StatusCode::GATEWAY_TIMEOUT
            | StatusCode::SERVICE_UNAVAILABLE => {
                let message = "the request took too long and nothing was done; retry it";
                return ApiError::new(status, "request_timeout", message)
                    .retry_after(Duration::from_secs(1));
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported_media_type", "the body must be application/json")
            }
            s if s.is_client_error() => ("bad_request", "bad request"),
            _ => ("internal", "internal server error"),
        };
        ApiError::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail { code: self.code, message: self.message, details: self.details },
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would be accepted.
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = self.retry_after {
            let seconds = after.as_secs().max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response.extensions_mut().insert(Shaped);
        response
    }
}

tokio::task_local! {
    /// Whether the request's command went to the engine (see [`command_taken`]).
    static COMMAND_TAKEN: Cell<bool>;
}

/// Notes that the request at hand hands its command to the engine now: from here on, a
/// timeout cannot say that nothing was done, since the engine decides and records the
/// command whether or not anyone still waits for its answer.
pub(crate) fn command_taken() {
    // Outside a request (a handler called directly) there is nothing to note.
    let _outside = COMMAND_TAKEN.try_with(|taken| taken.set(true));
}

/// Gives errors produced outside handlers (routing, body limit, timeout) the one shape. A
/// timeout after the request's command went to the engine is `504 outcome_unknown`, not `503
/// request_timeout`: the command may well be recorded, and a client told to simply retry would
/// apply a command without an idempotency key twice.
///
/// A request refused before its body was read (`401`, `429`: the caller is checked before the
/// body; `413`) is answered with `Connection: close`: the server closes the connection rather
/// than read a body it does not want, and a client that keeps sending it is told so, instead
/// of finding a broken pipe.
pub async fn uniform_errors(request: Request, next: Next) -> Response {
    let has_body = request.headers().contains_key(header::TRANSFER_ENCODING)
        || request.headers().get(header::CONTENT_LENGTH).is_some_and(|n| n != "0");
    let (response, taken) = COMMAND_TAKEN
        .scope(Cell::new(false), async {
            let response = next.run(request).await;
            (response, COMMAND_TAKEN.with(Cell::get))
        })
        .await;
    let status = response.status();
    let mut response = if (status.is_client_error() || status.is_server_error())
        && response.extensions().get::<Shaped>().is_none()
    {
        if taken && status == StatusCode::SERVICE_UNAVAILABLE {
            return ApiError::outcome_unknown().into_response();
        }
        ApiError::for_status(status).into_response()
    } else {
        response
    };
    let unread =
        [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS, StatusCode::PAYLOAD_TOO_LARGE];
    if has_body && unread.contains(&status) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

impl From<ExecuteError> for ApiError {
    fn from(error: ExecuteError) -> ApiError {
        let message = error.to_string();
        match &error {
            ExecuteError::Rejected(rejection) => rejected(rejection, rejection.to_string()),
            ExecuteError::IdempotencyKeyReused { key } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), message)
                    .with_details(json!({ "idempotency_key": key.as_str() }))
            }
            ExecuteError::IdempotencyKeyReserved { key } => {
                ApiError::new(StatusCode::BAD_REQUEST, error.code(), message)
                    .with_details(json!({ "idempotency_key": key.as_str() }))
            }
            ExecuteError::Engine(EngineError::Overloaded) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.code(), message)
                    .retry_after(Duration::from_secs(1))
            }
            ExecuteError::Engine(EngineError::ShuttingDown) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, error.code(), message)
                    .retry_after(Duration::from_secs(5))
            }
            // The engine reports the failure once, where it learns it; every request after it
            // lands here.
            ExecuteError::Engine(EngineError::Stopped { .. }) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                error.code(),
                "the engine stopped after a storage failure; a command it had taken may or \
                     may not be recorded: once the server is back, retry with the same \
                     Idempotency-Key",
            ),
            // A future engine error is still the server's, never the client's.
            _ => ApiError::internal(&error),
        }
    }
}

/// A domain rejection: `404` for an order that does not exist, `422` with its code otherwise.
fn rejected(rejection: &Rejection, message: String) -> ApiError {
    let code = rejection.code();
    let status = match rejection {
        Rejection::Order { rejection: OrderRejection::UnknownOrder, .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, code, message).with_details(rejection_details(rejection))
}

/// The particulars of a rejection a client may act on.
fn rejection_details(rejection: &Rejection) -> Value {
    let shortages = |shortages: &[Shortage]| -> Value {
        shortages
            .iter()
            .map(|s| json!({ "sku": s.sku.as_str(), "requested": s.requested, "available": s.available }))
            .collect()
    };
    match rejection {
        Rejection::Order { order, rejection } => {
            let mut details = json!({ "order_id": order.as_str() });
            let extra = match rejection {
                OrderRejection::InsufficientStock { shortages: short } => {
                    json!({ "sku": short.first().map(|s| s.sku.as_str()), "shortages": shortages(short) })
                }
                OrderRejection::UnknownSku { skus } => {
                    json!({ "skus": skus.iter().map(|s| s.as_str()).collect::<Vec<_>>() })
                }
                OrderRejection::DuplicateSku { sku }
                | OrderRejection::InvalidUnitPrice { sku, .. } => {
                    json!({ "sku": sku.as_str() })
                }
                OrderRejection::InvalidTransition { status, command } => {
                    json!({ "status": status.as_str(), "command": command })
                }
                OrderRejection::RefundExceedsCaptured { requested, refundable } => {
                    json!({ "requested": requested, "refundable": refundable })
                }
                _ => json!({}),
            };
            merge(&mut details, extra);
            details
        }
        Rejection::Inventory { sku, rejection } => {
            let mut details = json!({ "sku": sku.as_str() });
            let extra = match rejection {
                InventoryRejection::InsufficientStock { requested, available } => {
                    json!({ "requested": requested, "available": available })
                }
                InventoryRejection::AdjustmentBelowReserved { delta, on_hand, reserved } => {
                    json!({ "delta": delta, "on_hand": on_hand, "reserved": reserved })
                }
                _ => json!({}),
            };
            merge(&mut details, extra);
            details
        }
        Rejection::Payment { payment, rejection } => {
            let mut details = json!({ "payment_id": payment.as_str() });
            if let PaymentRejection::InvalidTransition { status, command } = rejection {
                merge(&mut details, json!({ "status": status.as_str(), "command": command }));
            }
            details
        }
    }
}

fn merge(into: &mut Value, extra: Value) {
    if let (Value::Object(into), Value::Object(extra)) = (into, extra) {
        into.extend(extra);
    }
}
