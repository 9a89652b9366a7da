//! Non-auth Web API endpoints a client library calls once logged in — accounts, a market-data
//! snapshot, orders — so those calls can be tested for real. They sit behind exactly the same
//! authentication as the brokerage session (see `authn`); `iserver/*` additionally needs the
//! caller's live brokerage session, `portfolio/*` only authentication. Answers are
//! deterministic and shaped like IBKR's.

mod accounts;
mod marketdata;
mod orders;

pub(crate) use accounts::{iserver_accounts, portfolio_accounts};
pub(crate) use marketdata::{quote, snapshot};
pub(crate) use orders::{live_orders, place_orders};

use crate::authn::Caller;
use crate::reply::Reject;
use crate::state::State;

/// `iserver/*` is served by the brokerage backend: without this SSO session's own, live
/// brokerage session IBKR answers "no bridge".
fn require_bridge(state: &State, caller: &Caller) -> Result<(), Reject> {
    if state.has_live_bridge(&caller.session, &caller.credential) {
        Ok(())
    } else {
        Err(Reject::ibkr(400, "Bad Request: no bridge"))
    }
}
