//! What handlers take from a request, each turning bad input into the right [`ApiError`]:
//! the calling tenant (bearer token, rate limit), JSON bodies (400 for broken JSON, 422 naming
//! the field for wrong data, 413 over the limit), query strings and the idempotency key.

use std::fmt;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use orderly_core::domain::{IdempotencyKey, TenantId};
use orderly_core::process::RESERVED_KEY_PREFIX;
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::json;

use crate::app::{Shared, Slot};
use crate::error::{ApiError, MAX_ECHO, cut};

/// The tenant the request's bearer token belongs to (`Authorization: Bearer <token>`, the
/// scheme in any case), within its rate limit, and the tenant's place among its requests in
/// progress, held while the handler runs (so that it is taken before the body is read).
#[derive(Debug)]
pub struct Caller(pub TenantId, pub Slot);

impl FromRequestParts<Shared> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Shared) -> Result<Caller, ApiError> {
        let token = bearer_token(&parts.headers)?;
        let tenant = app
            .tenants()
            .authenticate(token)
            .ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        app.check_rate(&tenant)?;
        let slot = app.take_request(&tenant)?;
        Ok(Caller(tenant, slot))
    }
}

/// The bearer token of a request's `Authorization` header (for a stream, which checks now and
/// then that its token was not revoked meanwhile).
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let mut all = headers.get_all(header::AUTHORIZATION).iter();
    let header = all.next().ok_or_else(|| {
        ApiError::unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
    })?;
    // Which of several a proxy or a server would take differs: none is taken.
    if all.next().is_some() {
        return Err(ApiError::unauthorized("send one Authorization header, not several"));
    }
    // RFC 7235: the scheme is case-insensitive (`bearer` is as good as `Bearer`).
    header
        .to_str()
        .ok()
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("Bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::unauthorized("the Authorization header is not `Bearer <token>`"))
}

/// The path's one parameter (an order id, a SKU) as text. A parameter that is not UTF-8 once
/// percent-decoded is no valid id either: it comes as U+FFFD, so that the handler refuses it as
/// it refuses any other malformed id (`404 unknown_order`, `422` naming the SKU), not with a
/// bare `400`.
#[derive(Debug)]
pub struct PathText(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathText, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => Ok(PathText(text)),
            Err(PathRejection::FailedToDeserializePathParams(e))
                if matches!(e.kind(), ErrorKind::InvalidUtf8InPathParam { .. }) =>
            {
                Ok(PathText(char::REPLACEMENT_CHARACTER.to_string()))
            }
            // The routes name their parameter: anything else is the server's bug.
            Err(other) => Err(ApiError::internal(&other)),
        }
    }
}

/// A JSON request body of type `T`.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Shared> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Shared) -> Result<JsonBody<T>, ApiError> {
        refuse_unless_json(&request)?;
        parse_json(&read_body(request, app).await?).map(JsonBody)
    }
}

/// The body of a command that takes none (ship, deliver, cancel): none, `{}` or `null`.
/// Anything else is refused, so that a field a client meant (a cancel's reason) is not
/// silently dropped.
#[derive(Debug)]
pub struct NoBody;

impl FromRequest<Shared> for NoBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, app: &Shared) -> Result<NoBody, ApiError> {
        let sent_json = refuse_unless_json(&request);
        let bytes = read_body(request, app).await?;
        let body = bytes.trim_ascii();
        if body.is_empty() {
            return Ok(NoBody);
        }
        sent_json?;
        if body == b"null" {
            return Ok(NoBody);
        }
        /// An object with no fields.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Nothing {}
        parse_json::<Nothing>(&bytes).map(|Nothing {}| NoBody)
    }
}

/// `415 unsupported_media_type` unless the request says its body is JSON.
fn refuse_unless_json(request: &Request) -> Result<(), ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if is_json {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "send the body as JSON with `Content-Type: application/json`",
    ))
}

/// The request's body, read to its end: `413 payload_too_large` past the limit,
/// `400 invalid_body` if it breaks off.
async fn read_body(request: Request, app: &Shared) -> Result<Bytes, ApiError> {
    // The body-limit layer has refused a declared length over the limit already; this
    // stops reading an undeclared (chunked) one as soon as it passes the limit.
    Bytes::from_request(request, app).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("the request body is over the limit of {} bytes", app.body_limit()),
            )
        } else {
            // The cause (a connection that broke mid-body) is the server's business.
            tracing::debug!(cause = %rejection.body_text(), "request body unreadable");
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body could not be read to its end",
            )
        }
    })
}

/// Parses `bytes` as a `T`, which must come as a JSON object: broken JSON is
/// `400 invalid_json`, JSON of the wrong shape (an array or a scalar for the body, too) is
/// `422 validation_failed` with the path of the field (`lines[0].quantity`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case parses once, without tracking paths; only a failure parses again to name
    // the field.
    if let Ok(Object(value)) = serde_json::from_slice(bytes) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let Object(value) = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let field = field_of(error.path(), &error.inner().to_string());
        let inner = error.into_inner();
        // A body of the wrong shape is refused before it is read to its end (an array where an
        // object belongs), so broken JSON of that shape would pass for a shape error: any JSON
        // is read first, and only well-formed JSON is a shape error.
        if let Err(syntax) = serde_json::from_slice::<serde::de::IgnoredAny>(bytes) {
            return invalid_json(&syntax);
        }
        match inner.classify() {
            serde_json::error::Category::Data => {
                ApiError::validation(&field, format!("{field}: {}", serde_message(&inner)))
            }
            _ => invalid_json(&inner),
        }
    })?;
    // Trailing bytes after the value are broken JSON too.
    deserializer.end().map_err(|e| invalid_json(&e))?;
    Ok(value)
}

/// The field an error is about. Serde reports a missing or a duplicate field at the object
/// that should hold it once, so its name is taken from the message: `customer_id`, not `.`;
/// `lines[0].quantity`, not `lines[0]`. An unknown field is named as sent, so the path is cut
/// like any echo.
fn field_of(path: &serde_path_to_error::Path, message: &str) -> String {
    let missing = ["missing field `", "duplicate field `"]
        .iter()
        .find_map(|prefix| message.strip_prefix(prefix))
        .and_then(|rest| rest.split('`').next());
    let path = path.to_string();
    let field = match missing {
        Some(name) if path == "." => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path,
    };
    cut(&field, MAX_ECHO)
}

/// Integer types as serde names them, and the range a client reads instead: a number too big
/// for a `u64` (`18446744073709551616`) reaches serde as a float, and "invalid type: floating
/// point, expected u64" does not tell why.
const INTEGER_RANGES: [(&str, &str); 3] = [
    ("expected u64", "expected a whole number from 0 to 18446744073709551615"),
    ("expected i64", "expected a whole number from -9223372036854775808 to 9223372036854775807"),
    ("expected u32", "expected a whole number from 0 to 4294967295"),
];

/// Serde's message, integer types said as ranges, with the input it quotes (an unknown field
/// in backticks, a string in double quotes) cut after [`MAX_ECHO`] characters each, like any
/// echo.
fn serde_message(error: &impl std::fmt::Display) -> String {
    let mut message = error.to_string();
    for (serde_says, range) in INTEGER_RANGES {
        // Where serde says what it expected: last, or before where in the input.
        let at = message.rfind(serde_says).filter(|&at| {
            let after = &message[at + serde_says.len()..];
            after.is_empty() || after.starts_with(" at line ")
        });
        if let Some(at) = at {
            message.replace_range(at..at + serde_says.len(), range);
        }
    }
    let mut shown = String::with_capacity(message.len().min(3 * MAX_ECHO));
    // The quote mark of the quoted text being read, and how many characters it has so far.
    let mut open: Option<(char, usize)> = None;
    let mut escaped = false;
    for c in message.chars() {
        match open {
            None => {
                if c == '`' || c == '"' {
                    open = Some((c, 0));
                }
                shown.push(c);
            }
            // Serde escapes quote marks inside a string (`\"`), never inside backticks.
            Some((mark, count)) if c == mark && !escaped => {
                if count > MAX_ECHO {
                    shown.push('…');
                }
                shown.push(c);
                open = None;
            }
            Some((mark, count)) => {
                escaped = mark == '"' && c == '\\' && !escaped;
                if count < MAX_ECHO {
                    shown.push(c);
                }
                open = Some((mark, count + 1));
            }
        }
    }
    if open.is_some_and(|(_, count)| count > MAX_ECHO) {
        shown.push('…');
    }
    // A backtick inside a field's name ends its quote early; the whole is cut all the same.
    cut(&shown, 3 * MAX_ECHO)
}

/// A `T` taken from a JSON object only. Serde's derived `Deserialize` also builds a struct
/// from an array of its fields in order (`["o-1","c-1","EUR",[]]`), a shape the API does not
/// describe and clients should not come to rely on.
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Object<T>, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData)).map(Object)
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

/// Deserializes a list whose items must each be a JSON object (see [`parse_json`]), for a
/// body's nested lists: `#[serde(deserialize_with = "crate::extract::objects")]`.
pub fn objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Vec<T>, D::Error> {
    let items = Vec::<Object<T>>::deserialize(deserializer)?;
    Ok(items.into_iter().map(|Object(item)| item).collect())
}

fn invalid_json(error: &serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", error.to_string())
        .with_details(json!({ "line": error.line(), "column": error.column() }))
}

/// A query string of type `T`; a bad one is `422 validation_failed` naming the parameter.
#[derive(Debug)]
pub struct QueryOf<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<QueryOf<T>, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer = serde_urlencoded_deserializer(query);
        serde_path_to_error::deserialize(deserializer).map(QueryOf).map_err(|error| {
            let field = field_of(error.path(), &error.inner().to_string());
            let message = serde_message(error.inner());
            ApiError::validation(&field, format!("query parameter {field}: {message}"))
        })
    }
}

fn serde_urlencoded_deserializer(query: &str) -> serde_urlencoded::Deserializer<'_> {
    serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()))
}

/// The `Idempotency-Key` header, if sent.
#[derive(Clone, Debug)]
pub struct IdempotencyKeyHeader(pub Option<IdempotencyKey>);

/// The header carrying a command's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _: &S,
    ) -> Result<IdempotencyKeyHeader, ApiError> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(IdempotencyKeyHeader(None));
        };
        // Two keys (a proxy or a library adding its own) would make one of them count and a
        // retry under the other run the command again.
        if values.next().is_some() {
            return Err(ApiError::validation(
                "Idempotency-Key",
                "send one Idempotency-Key header, not several",
            ));
        }
        let text = value
            .to_str()
            .map_err(|_| ApiError::validation("Idempotency-Key", "the key must be ASCII text"))?;
        let key = IdempotencyKey::new(text)
            .map_err(|e| ApiError::validation("Idempotency-Key", e.to_string()))?;
        if text.starts_with(RESERVED_KEY_PREFIX) {
            return Err(ApiError::validation(
                "Idempotency-Key",
                format!("keys starting with `{RESERVED_KEY_PREFIX}` are reserved for the engine"),
            ));
        }
        Ok(IdempotencyKeyHeader(Some(key)))
    }
}
