//! What tests and the CLI hand the sandbox to register: OAuth 2.0 clients and OAuth 1.0a
//! consumers.

use std::collections::{HashMap, HashSet};

use ibauth::SigningKey;
use ibauth::oauth1a::DhGroup;

use crate::state::{RegisteredClient, RegisteredConsumer};

/// A client to register: id, public keys by `kid`, and the credentials (usernames) it serves.
#[derive(Debug, Clone)]
pub struct ClientRegistration(pub(crate) RegisteredClient);

impl ClientRegistration {
    /// A client with no keys and no users yet.
    pub fn new(client_id: impl Into<String>) -> Self {
        Self(RegisteredClient {
            client_id: client_id.into(),
            keys: HashMap::new(),
            credentials: HashSet::new(),
        })
    }

    /// Registers the public half of `key` under `kid`.
    pub fn key(mut self, kid: impl Into<String>, key: &SigningKey) -> Self {
        self.0.keys.insert(kid.into(), key.public_key_der());
        self
    }

    /// Allows sessions for `credential` (an IBKR username).
    pub fn credential(mut self, credential: impl Into<String>) -> Self {
        self.0.credentials.insert(credential.into());
        self
    }
}

/// An OAuth 1.0a consumer to register: key, realm, and the public halves of its signature and
/// encryption keys.
#[derive(Debug, Clone)]
pub struct ConsumerRegistration(pub(crate) RegisteredConsumer);

impl ConsumerRegistration {
    /// A consumer with the realm IBKR expects for it (`test_realm` for `TESTCONS`, otherwise
    /// `limited_poa`) and, unless [`ConsumerRegistration::dh_group`] says otherwise, RFC 3526's
    /// 2048-bit group ([`RFC3526_PRIME_2048`](crate::RFC3526_PRIME_2048), generator 2). IBKR
    /// gives every consumer its own prime; [`CredentialSet`](crate::CredentialSet) registers
    /// one of [`SANDBOX_DH_PRIMES`](crate::SANDBOX_DH_PRIMES), so a client that assumes RFC
    /// 3526 fails there as it would against IBKR.
    pub fn new(
        consumer_key: impl Into<String>,
        signature_key: &SigningKey,
        encryption_key: &SigningKey,
    ) -> Self {
        let consumer_key = consumer_key.into();
        let test_consumer = consumer_key_is_test(&consumer_key);
        let realm = if consumer_key == ibauth::oauth1a::TEST_CONSUMER {
            "test_realm"
        } else {
            "limited_poa"
        };
        Self(RegisteredConsumer {
            consumer_key,
            realm: realm.to_owned(),
            signature_key: signature_key.public_key_der(),
            encryption_key: encryption_key.public_key_der(),
            third_party: test_consumer,
            callback: None,
            dh: crate::dh_primes::rfc3526_group(),
        })
    }

    /// The consumer's Diffie-Hellman group (its `dhparam.pem`): the live session token is
    /// agreed in it, so a client using another group gets a validation mismatch.
    pub fn dh_group(mut self, group: DhGroup) -> Self {
        self.0.dh = group;
        self
    }

    /// Allows the third-party flow (`request_token` → `/authorize` → `access_token`), with
    /// `callback` as the registered callback URL (`None`: out-of-band only). `TESTCONS` has
    /// it by default.
    pub fn third_party(mut self, callback: Option<&str>) -> Self {
        self.0.third_party = true;
        self.0.callback = callback.map(str::to_owned);
        self
    }
}

fn consumer_key_is_test(consumer_key: &str) -> bool {
    consumer_key == ibauth::oauth1a::TEST_CONSUMER
}
