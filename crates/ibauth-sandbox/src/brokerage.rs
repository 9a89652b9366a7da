//! The brokerage session on `/v1/api`: validate, `ssodh/init`, status, tickle, logout.
//! One brokerage session per user; `compete` takes it from another SSO session.

use std::time::Instant;

use serde_json::{Value, json};

use crate::authn::Caller;
use crate::reply::Reject;
use crate::ssodh::InitParams;
use crate::state::{Brokerage, Flags, State, random_hex, user_id};

const MAC: &str = "98:F2:B3:23:BF:A0";

fn status_json(flags: Flags, message: &str) -> Value {
    json!({
        "authenticated": flags.authenticated,
        "competing": flags.competing,
        "connected": flags.connected,
        "message": message,
        // IBKR's reason when authentication failed; empty when all is well.
        "fail": "",
        "MAC": MAC,
        "serverInfo": { "serverName": "ibauth-sandbox", "serverVersion": env!("CARGO_PKG_VERSION") },
    })
}

pub(crate) fn validate(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    let token = caller.session.as_str();
    let now = state.now();
    let session = state.sso.get(token).ok_or_else(Reject::unauthenticated)?;
    let left_ms = session.expires_at.saturating_sub(now).saturating_mul(1000);
    let body = json!({
        "USER_NAME": session.credential,
        "USER_ID": user_id(&session.credential),
        "EXPIRES": left_ms,
        "RESULT": true,
        "IP": session.ip.to_string(),
        "AUTH_TIME": session.created_at * 1000,
        "CREDENTIAL": session.credential,
        "PAPER_USER_NAME": session.credential,
        "IS_PENDING_APPLICANT": false,
        "SF_ENABLED": false,
        "HARDWARE_INFO": "0|0",
        "UNIQUE_LOGIN_ID": session.session_id,
        "SF_CONFIG": "",
        "CREDENTIAL_TYPE": 1,
        "IS_FREE_TRIAL": false,
        "LOGIN_TYPE": 2,
        "LANDING_APP": "UNIVERSAL",
        "COUNTERPARTY": "ibauth-sandbox",
        "TOKEN": random_hex(16),
        "took": 1,
        "IS_MASTER": false,
        "features": {
            "env": "PROD", "wlms": true, "realtime": true, "bond": true,
            "optionChains": true, "calendar": true, "newMf": true
        },
        "region": "NJ",
        "client_id": session.client_id,
    });
    state.counters.validates += 1;
    Ok(body)
}

pub(crate) fn init(
    state: &mut State,
    caller: &Caller,
    params: InitParams,
) -> Result<Value, Reject> {
    let (token, credential) = (caller.session.as_str(), caller.credential.as_str());
    let compete = params.compete.unwrap_or(false);
    let held_by_other = state
        .brokerage
        .get(credential)
        .is_some_and(|b| b.owner_bearer != token && b.authenticated);
    state.counters.inits += 1;
    state.activity.user(credential).inits += 1;
    if held_by_other && !compete {
        return Ok(status_json(
            state.flags(token, credential),
            "competing session exists",
        ));
    }
    if held_by_other {
        state.counters.brokerage_takeovers += 1;
        state.activity.user(credential).takeovers += 1;
    }
    state.brokerage.insert(
        credential.to_owned(),
        Brokerage {
            owner_bearer: token.to_owned(),
            authenticated: true,
            connected: true,
        },
    );
    Ok(status_json(state.flags(token, credential), ""))
}

pub(crate) fn status(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    let (token, credential) = (caller.session.as_str(), caller.credential.as_str());
    if !state.brokerage.contains_key(credential) {
        return Err(Reject::ibkr(400, "Bad Request: no bridge"));
    }
    state.counters.statuses += 1;
    Ok(status_json(state.flags(token, credential), ""))
}

/// `tickle`; `arrival` is when the request reached the sandbox (for the tickler window).
pub(crate) fn tickle(
    state: &mut State,
    caller: &Caller,
    arrival: Instant,
) -> Result<Value, Reject> {
    let (token, credential) = (caller.session.as_str(), caller.credential.as_str());
    let now = state.now();
    let session = state.sso.get(token).ok_or_else(Reject::unauthenticated)?;
    let flags = state.flags(token, credential);
    let body = json!({
        "session": session.session_id,
        "ssoExpires": session.expires_at.saturating_sub(now).saturating_mul(1000),
        "collission": flags.competing,
        "userId": user_id(credential),
        "hmds": { "error": "no bridge" },
        "iserver": { "authStatus": status_json(flags, ""), "tickle": true },
    });
    state.counters.tickles += 1;
    state.note_tickle(credential, caller.peer, arrival);
    Ok(body)
}

pub(crate) fn logout(state: &mut State, caller: &Caller) -> Result<Value, Reject> {
    let (token, credential) = (caller.session.as_str(), caller.credential.as_str());
    if state.has_bridge(token, credential) {
        state.brokerage.remove(credential);
    }
    // An OAuth 2.0 logout ends the SSO session (its bearer is dead); an OAuth 1.0a live
    // session token outlives the brokerage session (about 24 h), so logging out twice is fine.
    if !token.starts_with("oauth1a:") {
        state.sso.remove(token);
    }
    state.counters.logouts += 1;
    Ok(json!({ "status": true }))
}
