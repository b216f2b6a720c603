//! Orders by customer: an index of every order a customer placed, per tenant, by placing time.
//!
//! Table `orders_by_customer`: key `(tenant, customer, placed_at, order)` (redb tuple of two
//! strings, the admission time of `OrderPlaced` in milliseconds, and the order id), value `()`:
//! the key is the whole row. Ordered by tenant, then customer, then placing time, then order
//! id, so one customer's orders are one contiguous range. Maintained from `OrderPlaced` alone
//! (an order's customer and placing time never change, and orders are never deleted).
//!
//! [`orders_of_customer`] pages through a customer's orders **newest first** (latest
//! `placed_at` first; orders placed in the same millisecond by descending order id), with a
//! [`CustomerCursor`] naming the last order of the previous page.

use std::fmt;

use redb::{Database, TableDefinition};

use super::pending::read_table;
use super::{Projection, ProjectionError, Rows, Stage, inconsistent};
use crate::domain::{CustomerId, Event, OrderEvent, OrderId, TenantId, Timestamp};
use crate::engine::CommittedEvent;

/// The orders-by-customer index: (tenant, customer, placed at in ms, order) → nothing.
pub const ORDERS_BY_CUSTOMER: TableDefinition<'static, (&str, &str, u64, &str), ()> =
    TableDefinition::new("orders_by_customer");

/// Where a page of [`orders_of_customer`] ended: the last order returned and when it was
/// placed. The next page starts just after it (older orders).
///
/// As text (for an API's `?after=`) it is `{placed_at}.{order}`, see [`CustomerCursor::parse`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CustomerCursor {
    /// When the order was placed (admission time).
    pub placed_at: Timestamp,
    /// The order.
    pub order: OrderId,
}

impl CustomerCursor {
    /// Reads the text form written by `Display` (`{placed_at}.{order}`); `None` if it is not
    /// one.
    #[must_use]
    pub fn parse(text: &str) -> Option<CustomerCursor> {
        let (placed_at, order) = text.split_once('.')?;
        if placed_at.is_empty() || !placed_at.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(CustomerCursor {
            placed_at: Timestamp(placed_at.parse().ok()?),
            order: OrderId::new(order).ok()?,
        })
    }
}

impl fmt::Display for CustomerCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.placed_at.0, self.order)
    }
}

/// Maintains the [`ORDERS_BY_CUSTOMER`] table. Checkpoint name `orders_by_customer`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CustomersProjection;

impl Projection for CustomersProjection {
    type Tables<'s> = Rows<'s, (&'static str, &'static str, u64, &'static str), ()>;

    fn name(&self) -> &str {
        "orders_by_customer"
    }

    fn tables(&self) -> Vec<String> {
        vec![redb::TableHandle::name(&ORDERS_BY_CUSTOMER).to_owned()]
    }

    fn open<'s>(&self, stage: &'s Stage<'_>) -> Result<Self::Tables<'s>, ProjectionError> {
        stage.table(ORDERS_BY_CUSTOMER)
    }

    fn apply(
        &self,
        table: &mut Self::Tables<'_>,
        events: &[CommittedEvent],
    ) -> Result<(), ProjectionError> {
        for committed in events {
            let Event::Order { order, event: OrderEvent::OrderPlaced { customer, .. } } =
                &committed.event
            else {
                continue;
            };
            let key = (
                committed.tenant.as_str(),
                customer.as_str(),
                committed.recorded_at.0,
                order.as_str(),
            );
            // One already in redb is refused when the batch is committed.
            if !table.insert_new(key, (), committed.position.0) {
                return Err(inconsistent(committed, format!("order {order}: placed twice")));
            }
        }
        Ok(())
    }
}

/// One page of the orders `customer` placed at `tenant`, **newest first**, as far as the
/// projection has come: at most `limit` orders (a `limit` of 0 is taken as 1) after the cursor
/// `after` (from the start when `None`), and the cursor of the next page: `Some` exactly when
/// older orders remain, `None` on the last page. Orders placed later than `after` (new ones)
/// appear on a fresh first page, never in the middle of a walk.
pub fn orders_of_customer(
    db: &Database,
    tenant: &TenantId,
    customer: &CustomerId,
    after: Option<&CustomerCursor>,
    limit: usize,
) -> Result<(Vec<OrderId>, Option<CustomerCursor>), ProjectionError> {
    let table = read_table(db, ORDERS_BY_CUSTOMER)?;
    let (tenant, customer) = (tenant.as_str(), customer.as_str());
    let start = (tenant, customer, 0, "");
    let rows = match after {
        Some(cursor) => {
            table.range(start..(tenant, customer, cursor.placed_at.0, cursor.order.as_str()))?
        }
        None => {
            // Every key of this customer is below the key of the customer id followed by NUL,
            // and every key of a greater customer id is at or above it.
            let next = format!("{customer}\0");
            table.range(start..(tenant, next.as_str(), 0, ""))?
        }
    };
    let limit = limit.max(1);
    let mut page = Vec::with_capacity(limit.min(1024));
    let mut last = None;
    for row in rows.rev() {
        let key = row?.0;
        let (_, _, placed_at, order) = key.value();
        if page.len() == limit {
            // One more row exists: the page has a successor.
            return Ok((page, last));
        }
        let order = OrderId::new(order)
            .map_err(|e| ProjectionError::Corrupt(format!("order id {order:?}: {e}")))?;
        last = Some(CustomerCursor { placed_at: Timestamp(placed_at), order: order.clone() });
        page.push(order);
    }
    Ok((page, None))
}
