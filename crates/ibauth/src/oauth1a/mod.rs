//! OAuth 1.0a: the live session token by Diffie-Hellman, then every request signed with
//! HMAC-SHA256 (first party); and the request token → browser authorisation → access token
//! exchange in front of it (third party). The byte-exact primitives are here too.

pub(crate) mod client;
pub mod config;
mod granted;
pub mod login;
mod lst;
mod signing;
pub(crate) mod third_party;

pub use client::{
    DEFAULT_REST_URL, DEFAULT_WS_URL, HmacAuthorizer, LiveSessionToken, Oauth1aClient,
    Oauth1aConfig, TEST_CONSUMER,
};
pub use granted::{Authorize, DEFAULT_GRANT_MAX_AGE, GrantedClient};

pub use lst::{
    DH_SECRET_BITS, DhGroup, DhSecret, LstError, RFC3526_PRIME_2048, live_session_token,
    lst_matches, lst_signature, prepend,
};
pub use signing::{
    Nonce, Signer, authorization_header, authorize, base_string, oauth_params, percent_encode,
};
pub use third_party::{
    AccessGrant, DEFAULT_AUTHORIZE_URL, RequestToken, ThirdPartyClient, ThirdPartyConfig,
    VerifierError, parse_verifier,
};
