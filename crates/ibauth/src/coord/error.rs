//! What can go wrong between a process and its fleet's store.

use std::time::Duration;

use super::KeyringError;

/// A coordinator call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The store cannot be reached or did not answer in time (it may be restarting): nothing
    /// was changed; try again.
    #[error("shared store {store}: unavailable while {action}: {detail}")]
    Unavailable {
        /// The store ([`super::Coordinator::describe`]).
        store: String,
        /// What was being done.
        action: &'static str,
        /// What the driver said (never a credential).
        detail: String,
    },
    /// The lease this write was made under is no longer current (it expired, or another
    /// process took it): the write was refused and this process must step down.
    #[error(
        "shared store: the lease on {identity} (generation {generation}) is no longer held; another process leads now{}",
        .current.map(|c| format!(" (generation {c})")).unwrap_or_default()
    )]
    Fenced {
        /// The identity.
        identity: String,
        /// The generation the write was made under.
        generation: u64,
        /// The current generation, when known.
        current: Option<u64>,
    },
    /// The store's schema was written by a newer ibauth.
    #[error(
        "shared store {store}: schema version {found} is newer than this ibauth understands ({supported}); upgrade ibauth on every host of the fleet"
    )]
    Schema {
        /// The store.
        store: String,
        /// The version found.
        found: i64,
        /// The newest this build understands.
        supported: i64,
    },
    /// What the store holds makes no sense (damaged, or written by something else).
    #[error("shared store {store}: {detail}")]
    Corrupt {
        /// The store.
        store: String,
        /// What is wrong.
        detail: String,
    },
    /// An identity, holder or account name is empty, too long or holds control characters.
    #[error(
        "shared store: {what} of {len} bytes refused (1 to {} printable bytes)",
        super::MAX_NAME_LEN
    )]
    BadName {
        /// Which name.
        what: &'static str,
        /// Its length.
        len: usize,
    },
    /// A document larger than [`super::MAX_DOC_LEN`].
    #[error(
        "shared store: a document of {len} bytes is larger than the {} allowed",
        super::MAX_DOC_LEN
    )]
    TooLarge {
        /// Its length.
        len: usize,
    },
    /// Sealing or opening a document failed (no key, an unknown key id, a wrong key).
    #[error(transparent)]
    Key(#[from] KeyringError),
    /// The store's address or options are wrong.
    #[error("shared store: {0}")]
    Config(String),
    /// A fleet member waited for its leader longer than allowed.
    #[error(
        "shared store: no tokens from the fleet's leader of {identity} within {waited:?}; is a leader running (`ibauth keepalive --store …` or `ibauth gateway --store …`), and can it log in?"
    )]
    NoLeader {
        /// The identity.
        identity: String,
        /// How long it waited.
        waited: Duration,
    },
}

impl CoordError {
    /// Whether trying again later may succeed (the store was unavailable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            CoordError::Unavailable { .. } | CoordError::NoLeader { .. }
        )
    }
}
