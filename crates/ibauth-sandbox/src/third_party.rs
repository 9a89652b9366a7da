//! OAuth 1.0a third party: `oauth/request_token`, the authorisation page at `/authorize`
//! (log in as a sandbox user, approve or deny), the redirect to the consumer's callback with
//! `oauth_token` and `oauth_verifier`, and `oauth/access_token`. Request tokens are single-use
//! and short-lived; signatures are RSA-SHA256 without a prepend, as IBKR checks them.

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ibauth::oauth1a::base_string;
use serde_json::{Value, json};

use crate::oauth1a::{check_common, header, invalid_consumer, issue_access_token};
use crate::reply::Reject;
use crate::state::{RequestGrant, State, random_hex};

/// What the authorisation page decided, for the HTTP layer to render.
pub(crate) enum Decision {
    /// Redirect the browser here.
    Redirect(String),
    /// Show this page (out-of-band verifier, denial, or an error) with this status.
    Page(u16, String),
}

/// The signed parameters of an RSA-SHA256 request, verified against the consumer's key.
fn verified(
    state: &mut State,
    authorization: Option<&str>,
    url: &str,
) -> Result<std::collections::BTreeMap<String, String>, Reject> {
    let header = header(authorization, || {
        Reject::ibkr(401, "OAuth authorization header required")
    })?;
    let checked = check_common(state, &header, "RSA-SHA256")?;
    let consumer = state
        .oauth1a
        .consumers
        .get(checked.consumer_key())
        .ok_or_else(invalid_consumer)?;
    if !consumer.third_party {
        // What IBKR answers a first-party consumer calling request_token.
        return Err(invalid_consumer());
    }
    let signature = STANDARD
        .decode(&checked.signature)
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &consumer.signature_key)
        .verify(
            base_string("POST", url, &checked.params).as_bytes(),
            &signature,
        )
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    Ok(checked.accept(state))
}

/// `POST /v1/api/oauth/request_token`.
pub(crate) fn request_token(
    state: &mut State,
    authorization: Option<&str>,
    url: &str,
) -> Result<Value, Reject> {
    let params = verified(state, authorization, url)?;
    let consumer_key = params
        .get("oauth_consumer_key")
        .cloned()
        .unwrap_or_default();
    let callback = params
        .get("oauth_callback")
        .cloned()
        .unwrap_or_else(|| "oob".into());
    let registered = state
        .oauth1a
        .consumers
        .get(&consumer_key)
        .and_then(|c| c.callback.clone());
    if callback != "oob" && Some(&callback) != registered.as_ref() {
        return Err(Reject::ibkr(
            401,
            format!(
                "oauth_callback does not match the registered callback ({})",
                registered.as_deref().unwrap_or("none registered: use oob")
            ),
        ));
    }
    let token = random_hex(10);
    let expires_at = state.now() + state.lifetimes.request_token.as_secs();
    state.oauth1a.request_tokens.insert(
        token.clone(),
        RequestGrant {
            consumer_key,
            callback,
            expires_at,
            approved: None,
            denied: false,
        },
    );
    state.counters.request_tokens += 1;
    Ok(json!({ "oauth_token": token }))
}

fn live_grant<'a>(state: &'a mut State, token: &str) -> Option<&'a mut RequestGrant> {
    let now = state.now();
    state
        .oauth1a
        .request_tokens
        .get_mut(token)
        .filter(|g| g.expires_at > now)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title} · ibauth sandbox</title></head>\
         <body style=\"font-family:sans-serif;max-width:34em;margin:3em auto\"><h1>{title}</h1>{body}\
         <p><small>ibauth sandbox: a local stand-in for www.interactivebrokers.com/authorize</small></p></body></html>"
    )
}

/// `GET /authorize?oauth_token=…`: the login-and-approve form.
pub(crate) fn authorize_page(state: &mut State, token: &str) -> Decision {
    let consumer = match live_grant(state, token) {
        Some(grant) if grant.approved.is_none() && !grant.denied => grant.consumer_key.clone(),
        _ => {
            return Decision::Page(
                400,
                page(
                    "Request token expired",
                    "<p id=\"error\">This request token is unknown, used or expired. Start the login again.</p>",
                ),
            );
        }
    };
    let token = escape(token);
    Decision::Page(
        200,
        page(
            "Authorise access",
            &format!(
                "<p>Application <b id=\"consumer\">{}</b> asks to trade for you.</p>\
                 <form method=\"post\" action=\"/authorize\">\
                 <input type=\"hidden\" name=\"oauth_token\" value=\"{token}\">\
                 <p><label>Username <input id=\"username\" name=\"username\" autocomplete=\"username\"></label></p>\
                 <p><label>Password <input id=\"password\" name=\"password\" type=\"password\"></label></p>\
                 <p><button id=\"approve\" name=\"action\" value=\"approve\">Approve</button> \
                 <button id=\"deny\" name=\"action\" value=\"deny\">Deny</button></p></form>",
                escape(&consumer)
            ),
        ),
    )
}

/// `POST /authorize`: approve (with a sandbox user's password) or deny.
pub(crate) fn authorize_submit(state: &mut State, form: &[(String, String)]) -> Decision {
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let token = field("oauth_token").to_owned();
    let (username, password, action) = (field("username"), field("password"), field("action"));
    let password_ok = state.users.get(username).is_some_and(|p| p == password);
    let Some(grant) = live_grant(state, &token).filter(|g| g.approved.is_none() && !g.denied)
    else {
        return Decision::Page(
            400,
            page(
                "Request token expired",
                "<p id=\"error\">This request token is unknown, used or expired. Start the login again.</p>",
            ),
        );
    };
    let callback = grant.callback.clone();
    let separator = if callback.contains('?') { '&' } else { '?' };
    if action == "deny" {
        grant.denied = true;
        return if callback == "oob" {
            Decision::Page(
                200,
                page(
                    "Access denied",
                    "<p id=\"denied\">You denied access. You can close this page.</p>",
                ),
            )
        } else {
            Decision::Redirect(format!(
                "{callback}{separator}oauth_token={token}&denied=true"
            ))
        };
    }
    if !password_ok {
        return Decision::Page(
            401,
            page(
                "Login failed",
                &format!(
                    "<p id=\"error\">Wrong username or password.</p><p><a href=\"/authorize?oauth_token={}\">Try again</a></p>",
                    escape(&token)
                ),
            ),
        );
    }
    let verifier = random_hex(10);
    grant.approved = Some((verifier.clone(), username.to_owned()));
    if callback == "oob" {
        Decision::Page(
            200,
            page(
                "Access granted",
                &format!(
                    "<p>Paste this verifier into the application:</p><p><code id=\"verifier\">{verifier}</code></p>"
                ),
            ),
        )
    } else {
        Decision::Redirect(format!(
            "{callback}{separator}oauth_token={token}&oauth_verifier={verifier}"
        ))
    }
}

/// `POST /v1/api/oauth/access_token`: the approved request token and its verifier for an access
/// token and its secret (encrypted to the consumer's encryption key). Single use.
pub(crate) fn access_token(
    state: &mut State,
    authorization: Option<&str>,
    url: &str,
) -> Result<Value, Reject> {
    let params = verified(state, authorization, url)?;
    let token = params.get("oauth_token").cloned().unwrap_or_default();
    let verifier = params.get("oauth_verifier").cloned().unwrap_or_default();
    let consumer_key = params
        .get("oauth_consumer_key")
        .cloned()
        .unwrap_or_default();
    let grant = live_grant(state, &token)
        .filter(|g| g.consumer_key == consumer_key)
        .ok_or_else(|| Reject::ibkr(401, "request token expired or unknown"))?;
    if grant.denied {
        state.oauth1a.request_tokens.remove(&token);
        return Err(Reject::ibkr(401, "the user denied access"));
    }
    let Some((expected, credential)) = grant.approved.clone() else {
        return Err(Reject::ibkr(401, "request token not authorized yet"));
    };
    let matches =
        aws_lc_rs::constant_time::verify_slices_are_equal(expected.as_bytes(), verifier.as_bytes())
            .is_ok();
    if !matches {
        return Err(Reject::ibkr(401, "invalid oauth_verifier"));
    }
    state.oauth1a.request_tokens.remove(&token);
    let (access, secret) = issue_access_token(state, &consumer_key, &credential)
        .ok_or_else(|| Reject::ibkr(500, "cannot issue the access token"))?;
    state.counters.oauth_access_tokens += 1;
    let paper = state.oauth1a.tokens.get(&access).is_some_and(|g| g.paper);
    Ok(json!({
        "is_paper": paper,
        "oauth_token": access,
        "oauth_token_secret": secret,
    }))
}
