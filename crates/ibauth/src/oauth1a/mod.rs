//! OAuth 1.0a (first party): the live session token by Diffie-Hellman, then every request
//! signed with HMAC-SHA256. This module holds the byte-exact primitives; the client that drives
//! them over HTTP builds on top.

mod client;
pub mod config;
mod lst;
mod signing;

pub use client::{
    DEFAULT_REST_URL, DEFAULT_WS_URL, HmacAuthorizer, LiveSessionToken, Oauth1aClient,
    Oauth1aConfig, TEST_CONSUMER,
};

pub use lst::{
    DH_SECRET_BITS, DhGroup, DhSecret, LstError, RFC3526_PRIME_2048, live_session_token,
    lst_matches, lst_signature, prepend,
};
pub use signing::{
    Nonce, Signer, authorization_header, authorize, base_string, oauth_params, percent_encode,
};
