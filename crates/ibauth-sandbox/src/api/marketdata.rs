//! `GET iserver/marketdata/snapshot?conids=…&fields=…`: one object per contract with the
//! requested fields, deterministic values derived from the conid.

use serde_json::{Map, Value, json};

use super::require_bridge;
use crate::authn::Caller;
use crate::reply::Reject;
use crate::state::State;

/// Longest accepted query string; IBKR's own URLs stay far below.
const MAX_QUERY_LEN: usize = 4096;
/// Most contracts per snapshot (IBKR's documented ceiling is about 100).
const MAX_CONIDS: usize = 100;
/// Most fields per snapshot.
const MAX_FIELDS: usize = 100;
/// Asked for when the request names no fields: the last price.
const DEFAULT_FIELDS: &[u32] = &[31];

/// `GET iserver/marketdata/snapshot`.
pub(crate) fn snapshot(
    state: &mut State,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Value, Reject> {
    require_bridge(state, caller)?;
    let query = query.unwrap_or("");
    if query.len() > MAX_QUERY_LEN {
        return Err(bad_request("query string too long"));
    }
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let conids: Vec<u64> = match param("conids") {
        Some(list) => ids(&list, "conids", MAX_CONIDS)?,
        None => return Err(bad_request("conids is required")),
    };
    let fields: Vec<u32> = match param("fields") {
        Some(list) => ids(&list, "fields", MAX_FIELDS)?,
        None => DEFAULT_FIELDS.to_vec(),
    };
    let updated = state.now().saturating_mul(1000);
    let answer = conids
        .iter()
        .map(|&conid| Value::Object(quote(conid, &fields, updated)))
        .collect();
    state.counters.api_calls += 1;
    Ok(Value::Array(answer))
}

/// One contract's quote with `fields`, as a snapshot row or a streamed `smd` message carries
/// it; `updated` in epoch milliseconds.
pub(crate) fn quote(conid: u64, fields: &[u32], updated: u64) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert("conid".into(), json!(conid));
    object.insert("conidEx".into(), json!(conid.to_string()));
    object.insert("server_id".into(), json!("q0"));
    object.insert("6119".into(), json!("q0"));
    object.insert("6509".into(), json!("RpB"));
    for &field in fields {
        object.insert(field.to_string(), json!(value(conid, field)));
    }
    object.insert("_updated".into(), json!(updated));
    object
}

fn bad_request(why: &str) -> Reject {
    Reject::ibkr(400, format!("Bad Request: {why}"))
}

/// A comma-separated list of positive integers, duplicates dropped, at most `max`.
fn ids<T: std::str::FromStr + PartialEq + Default>(
    list: &str,
    what: &str,
    max: usize,
) -> Result<Vec<T>, Reject> {
    let mut out = Vec::new();
    for part in list.split(',') {
        let id: T = part
            .trim()
            .parse()
            .ok()
            .filter(|id| *id != T::default())
            .ok_or_else(|| bad_request(&format!("{what} must be a comma-separated list of ids")))?;
        if !out.contains(&id) {
            if out.len() == max {
                return Err(bad_request(&format!("at most {max} {what} per request")));
            }
            out.push(id);
        }
    }
    Ok(out)
}

/// The value of `field` for `conid`. Prices are whole cents between 10.00 and 999.99, from the
/// conid reduced first so no client-chosen number can overflow.
fn value(conid: u64, field: u32) -> String {
    let seed = conid % 100_000;
    let last = 1_000 + seed * 37 % 99_000;
    let price = |cents: u64| format!("{}.{:02}", cents / 100, cents % 100);
    match field {
        31 => price(last),
        84 => price(last - 1),
        86 => price(last + 1),
        70 => price(last * 102 / 100),
        71 => price(last * 98 / 100),
        7295 => price(last * 99 / 100),
        85 | 88 => ((seed % 50 + 1) * 100).to_string(),
        7059 => "100".to_owned(),
        55 => format!("SBX{seed}"),
        _ => ((seed * 31 + u64::from(field % 1_000)) % 10_000).to_string(),
    }
}
