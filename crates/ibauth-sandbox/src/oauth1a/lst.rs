//! `POST /v1/api/oauth/live_session_token`: RSA-SHA256 over the prepend and the base string,
//! then Diffie-Hellman in the consumer's own group, in three steps so the exchange runs
//! without the sandbox's lock: [`verify`], [`agree`], [`record`].

use std::net::IpAddr;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ibauth::oauth1a::{DhGroup, DhSecret, base_string, live_session_token, lst_signature};
use ibauth::secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use crate::reply::Reject;
use crate::state::{LstGrant, SsoSession, State, random_hex, session_key};

use super::check::{check_common, header};
use super::hex;

fn no_secret() -> Reject {
    Reject::ibkr(401, "LST failed, error: No access secret key found")
}

/// A live-session-token request whose signature verified, waiting for its Diffie-Hellman
/// exchange. The exchange (two 2048-bit modular exponentiations, the costly part of a login)
/// needs nothing of the sandbox's state, so it runs without the lock: a storm of logins does
/// not hold up every other request.
pub(crate) struct Verified {
    dh: DhGroup,
    challenge: String,
    prepend: String,
    consumer_key: String,
    token: String,
    credential: String,
    paper: bool,
}

/// The exchange done: what the sandbox records and answers.
pub(crate) struct Agreed {
    verified: Verified,
    key: Vec<u8>,
    lst: String,
    lst_sig: String,
    response: String,
}

/// `POST …/oauth/live_session_token`, first step (under the lock): the header, the grant, the
/// RSA-SHA256 signature over the prepend and the base string, and the challenge's range.
pub(crate) fn verify(
    state: &mut State,
    authorization: Option<&str>,
    url: &str,
) -> Result<Verified, Reject> {
    let header = header(authorization, || {
        Reject::ibkr(401, "OAuth authorization header required")
    })?;
    let checked = check_common(state, &header, "RSA-SHA256")?;
    let token = checked
        .params
        .get("oauth_token")
        .cloned()
        .unwrap_or_default();
    let consumer_key = checked.consumer_key().to_owned();
    let grant = state
        .oauth1a
        .tokens
        .get(&token)
        .filter(|g| g.consumer_key == consumer_key)
        .ok_or_else(no_secret)?;
    let consumer = state
        .oauth1a
        .consumers
        .get(&consumer_key)
        .ok_or_else(no_secret)?;
    let prepend = hex(&grant.secret);
    let message = format!("{prepend}{}", base_string("POST", url, &checked.params));
    let signature = STANDARD
        .decode(&checked.signature)
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &consumer.signature_key)
        .verify(message.as_bytes(), &signature)
        .map_err(|_| Reject::ibkr(401, "invalid signature"))?;
    let challenge = checked
        .params
        .get("diffie_hellman_challenge")
        .cloned()
        .ok_or_else(|| Reject::ibkr(400, "diffie_hellman_challenge missing"))?;
    // The consumer's own group: a client that assumes another prime derives another LST.
    let dh = consumer.dh.clone();
    // A challenge `A` outside `[2, p − 2]` is refused, as IBKR must: `0`, `1`, `p − 1` or a
    // value `≥ p` pins the shared secret to one anyone can compute.
    dh.check_peer_value(&challenge)
        .map_err(|why| Reject::ibkr(400, format!("bad diffie_hellman_challenge: {why}")))?;
    let (credential, paper) = (grant.credential.clone(), grant.paper);
    checked.accept(state);
    Ok(Verified {
        dh,
        challenge,
        prepend,
        consumer_key,
        token,
        credential,
        paper,
    })
}

/// Second step (no lock): the Diffie-Hellman exchange and the live session token.
pub(crate) fn agree(verified: Verified) -> Result<Agreed, Reject> {
    let failed = || Reject::ibkr(500, "LST derivation failed");
    let b = DhSecret::random();
    let k = verified
        .dh
        .shared_secret(&verified.challenge, &b)
        .map_err(|e| Reject::ibkr(400, format!("bad diffie_hellman_challenge: {e}")))?;
    let prepend_secret = SecretString::from(verified.prepend.clone());
    let lst = live_session_token(&k, &prepend_secret).ok_or_else(failed)?;
    let lst_sig = lst_signature(&lst, &verified.consumer_key).ok_or_else(failed)?;
    let key = STANDARD.decode(lst.expose_secret()).map_err(|_| failed())?;
    let response = verified.dh.challenge(&b);
    Ok(Agreed {
        verified,
        key,
        lst: lst.expose_secret().to_owned(),
        lst_sig,
        response,
    })
}

/// Last step (under the lock): records the live session token and its SSO session.
pub(crate) fn record(state: &mut State, agreed: Agreed, peer: IpAddr) -> Result<Value, Reject> {
    let Agreed {
        verified,
        key,
        lst,
        lst_sig,
        response,
    } = agreed;
    let Verified {
        consumer_key,
        token,
        credential,
        paper,
        ..
    } = verified;
    let now = state.now();
    let expires_at = now.saturating_add(state.lifetimes.sso_session.as_secs());
    state.issued.push(lst);
    state
        .oauth1a
        .lsts
        .insert(token.clone(), LstGrant { key, expires_at });
    let ip = match peer {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(std::net::Ipv4Addr::LOCALHOST),
    };
    let session = session_key(&token);
    state.sso.insert(
        session.clone(),
        SsoSession {
            client_id: consumer_key,
            credential: credential.clone(),
            ip,
            session_id: random_hex(16),
            created_at: now,
            expires_at,
            paper,
        },
    );
    state.counters.live_session_tokens += 1;
    state.note_session_opened(&credential, &session);
    state.activity.user(&credential).logins_oauth1a += 1;
    Ok(json!({
        "diffie_hellman_response": response,
        "live_session_token_signature": lst_sig,
        "live_session_token_expiration": expires_at.saturating_mul(1000),
    }))
}
