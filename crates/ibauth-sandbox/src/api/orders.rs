//! `POST iserver/account/{accountId}/orders` (place; each order is recorded and echoed back)
//! and `GET iserver/account/orders` (the caller's placed orders).

use serde_json::{Map, Value, json};

use super::require_bridge;
use crate::authn::Caller;
use crate::reply::Reject;
use crate::state::State;

/// Most orders in one request (IBKR's brackets and OCA groups are a handful).
const MAX_ORDERS_PER_REQUEST: usize = 50;

/// `POST iserver/account/{accountId}/orders` with `{"orders":[{…}, …]}`. All or nothing: one
/// bad order refuses the request and places none.
pub(crate) fn place_orders(
    state: &mut State,
    caller: &Caller,
    account: &str,
    body: &[u8],
) -> Result<Value, Reject> {
    require_bridge(state, caller)?;
    let own = state.account_id(&caller.credential);
    if account != own {
        return Err(Reject::ibkr(
            403,
            "Forbidden: the account is not an account of this user",
        ));
    }
    let request: Value = serde_json::from_slice(body)
        .map_err(|_| Reject::ibkr(400, "Bad Request: body is not JSON"))?;
    let orders = request
        .get("orders")
        .and_then(Value::as_array)
        .filter(|orders| !orders.is_empty())
        .ok_or_else(|| Reject::ibkr(400, "Bad Request: `orders` must be a non-empty array"))?;
    if orders.len() > MAX_ORDERS_PER_REQUEST {
        return Err(Reject::ibkr(
            400,
            format!("Bad Request: at most {MAX_ORDERS_PER_REQUEST} orders per request"),
        ));
    }
    let mut coids: Vec<&str> = Vec::new();
    for order in orders {
        let object = order
            .as_object()
            .ok_or_else(|| Reject::ibkr(400, "Bad Request: every order must be an object"))?;
        if let Some(acct) = object.get("acctId")
            && acct.as_str() != Some(own.as_str())
        {
            return Err(Reject::ibkr(
                400,
                "Bad Request: acctId does not match the account of the path",
            ));
        }
        // IBKR refuses a reused local order id: what stops a retried request from
        // placing the same order twice.
        if let Some(coid) = object.get("cOID").and_then(Value::as_str) {
            let known = state
                .orders
                .all()
                .any(|placed| placed.account == own && coid_of(&placed.order) == Some(coid));
            if known || coids.contains(&coid) {
                return Err(Reject::ibkr(
                    400,
                    format!("Local order ID={coid} is already registered."),
                ));
            }
            coids.push(coid);
        }
    }
    let replies: Vec<Value> = orders
        .iter()
        .map(|order| {
            let order_id = state.orders.place(&own, &caller.credential, order.clone());
            let mut reply = Map::new();
            reply.insert("order_id".into(), json!(order_id));
            reply.insert("order_status".into(), json!("Submitted"));
            reply.insert("encrypt_message".into(), json!("1"));
            if let Some(coid) = order.get("cOID") {
                reply.insert("cOID".into(), coid.clone());
            }
            reply.insert("order".into(), order.clone());
            Value::Object(reply)
        })
        .collect();
    state.counters.orders_placed += replies.len() as u64;
    state.counters.api_calls += 1;
    Ok(Value::Array(replies))
}

/// `GET iserver/account/orders`: the caller's orders, oldest first.
pub(crate) fn live_orders(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    require_bridge(state, caller)?;
    let orders: Vec<Value> = state
        .orders
        .all()
        .filter(|placed| placed.credential == caller.credential)
        .map(|placed| {
            let order = &placed.order;
            let mut entry = Map::new();
            entry.insert("acct".into(), json!(placed.account));
            entry.insert("account".into(), json!(placed.account));
            let id = placed
                .order_id
                .parse::<u64>()
                .map_or(Value::Null, |n| json!(n));
            entry.insert("orderId".into(), id);
            entry.insert("status".into(), json!("Submitted"));
            entry.insert("order_ccp_status".into(), json!("Submitted"));
            entry.insert("filledQuantity".into(), json!(0));
            for (from, to) in [
                ("cOID", "cOID"),
                ("cOID", "order_ref"),
                ("conid", "conid"),
                ("ticker", "ticker"),
                ("side", "side"),
                ("orderType", "orderType"),
                ("quantity", "totalSize"),
                ("quantity", "remainingQuantity"),
                ("price", "price"),
                ("tif", "timeInForce"),
            ] {
                if let Some(value) = order.get(from) {
                    entry.insert(to.into(), value.clone());
                }
            }
            if let Some(conid) = order.get("conid") {
                let text = conid
                    .as_str()
                    .map_or_else(|| conid.to_string(), str::to_owned);
                entry.insert("conidex".into(), json!(text));
            }
            Value::Object(entry)
        })
        .collect();
    state.counters.api_calls += 1;
    Ok(json!({ "orders": orders, "snapshot": true }))
}

fn coid_of(order: &Value) -> Option<&str> {
    order.get("cOID").and_then(Value::as_str)
}
