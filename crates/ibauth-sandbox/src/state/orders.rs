//! Orders placed through `iserver/account/{accountId}/orders`, kept so tests can prove what a
//! client sent and that nothing was placed twice.

use std::collections::VecDeque;

use serde_json::Value;

/// At most this many orders are kept (the oldest go first); `Counters::orders_placed` still
/// counts every one.
const MAX_KEPT: usize = 10_000;
/// …and at most this many bytes of order JSON, so a long-running sandbox stays small.
const MAX_KEPT_BYTES: usize = 16 * 1024 * 1024;
/// Order ids count up from here, like IBKR's ten-digit ids.
const FIRST_ORDER_ID: u64 = 1_000_000_001;

/// An order the sandbox accepted.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[non_exhaustive]
pub struct PlacedOrder {
    /// The id the sandbox gave it (`order_id` in the reply, `orderId` in the order list).
    pub order_id: String,
    /// The account it was placed for.
    pub account: String,
    /// The user who placed it.
    pub credential: String,
    /// The order object exactly as the client sent it.
    pub order: Value,
}

/// The orders placed so far, oldest first.
pub(crate) struct OrderBook {
    orders: VecDeque<(PlacedOrder, usize)>,
    bytes: usize,
    next_id: u64,
}

impl Default for OrderBook {
    fn default() -> Self {
        Self {
            orders: VecDeque::new(),
            bytes: 0,
            next_id: FIRST_ORDER_ID,
        }
    }
}

impl OrderBook {
    /// Records `order` and returns its new id.
    pub fn place(&mut self, account: &str, credential: &str, order: Value) -> String {
        let order_id = self.next_id.to_string();
        self.next_id = self.next_id.saturating_add(1);
        let size = order.to_string().len();
        self.orders.push_back((
            PlacedOrder {
                order_id: order_id.clone(),
                account: account.to_owned(),
                credential: credential.to_owned(),
                order,
            },
            size,
        ));
        self.bytes = self.bytes.saturating_add(size);
        while self.orders.len() > MAX_KEPT || self.bytes > MAX_KEPT_BYTES {
            let Some((_, size)) = self.orders.pop_front() else {
                break;
            };
            self.bytes = self.bytes.saturating_sub(size);
        }
        order_id
    }

    /// Every kept order, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &PlacedOrder> {
        self.orders.iter().map(|(order, _)| order)
    }
}
