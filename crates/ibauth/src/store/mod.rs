//! Tokens that outlive the process: a [`TokenStore`] trait (load / save / lock) with a file
//! store (the default: atomic, private, locked) and an in-memory store, and the documents they
//! keep — one per identity (auth method + credentials), only tokens IBKR issued, never a
//! private key.
//!
//! ```
//! # fn main() -> Result<(), ibauth::store::StoreError> {
//! use ibauth::store::{FileStore, TokenStore};
//! let dir = std::env::temp_dir().join(format!("ibauth-doc-{}", std::process::id()));
//! let store = FileStore::new(dir.join("tokens.json"));
//! assert!(store.load("some-identity")?.is_none()); // nothing stored yet
//! let _guard = store.lock()?;       // other processes wait here while this one logs in
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(()) }
//! ```

mod file;
mod session;

pub use file::{FileStore, default_token_file};
pub(crate) use session::fingerprint;
pub use session::{StoredBearer, StoredGrant, StoredLst, StoredToken, StoredTokens};

use std::sync::{Arc, Condvar, Mutex};

/// The version of the stored document this build writes; it reads this and older ones.
pub const SCHEMA_VERSION: u32 = 2;

/// Where tokens are kept between runs.
///
/// A store keeps one document per identity ([`StoredTokens::identity`]: the auth method and a
/// fingerprint of the credentials), so logins of different accounts or methods never
/// overwrite each other. Implementations must make `save` atomic (a reader sees the old or the
/// new document, never part of one) and `lock` exclusive across every process that shares the
/// store; callers hold the lock around `save` and `clear`.
pub trait TokenStore: Send + Sync {
    /// The tokens stored for `identity`, if any.
    fn load(&self, identity: &str) -> Result<Option<StoredTokens>, StoreError>;
    /// Every stored document.
    fn load_all(&self) -> Result<Vec<StoredTokens>, StoreError>;
    /// Replaces the document of `tokens.identity`.
    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError>;
    /// Removes the document of `identity` (after a logout).
    fn clear(&self, identity: &str) -> Result<(), StoreError>;
    /// Takes the store's exclusive lock, waiting for it; held until the guard is dropped. Take
    /// it around a refresh, then `load` again: another process may have refreshed meanwhile.
    fn lock(&self) -> Result<StoreLock, StoreError>;
}

/// Holds a store's lock until dropped.
#[must_use = "the lock is released when the guard is dropped"]
pub struct StoreLock(#[allow(dead_code)] Box<dyn Send>);

impl StoreLock {
    /// A guard that releases whatever `held` holds when dropped.
    pub fn new(held: impl Send + 'static) -> Self {
        Self(Box::new(held))
    }
}

impl std::fmt::Debug for StoreLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreLock")
    }
}

pub use crate::error::StoreError;

/// Tokens kept in memory: shared by clones, gone when the process ends. For tests, and for
/// programs that keep tokens elsewhere and only want the locking discipline.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    tokens: Arc<Mutex<std::collections::BTreeMap<String, StoredTokens>>>,
    held: Arc<(Mutex<bool>, Condvar)>,
}

/// Releases a [`MemoryStore`]'s lock.
struct MemoryLock(Arc<(Mutex<bool>, Condvar)>);

impl Drop for MemoryLock {
    fn drop(&mut self) {
        let (held, freed) = &*self.0;
        *held.lock().unwrap_or_else(|p| p.into_inner()) = false;
        freed.notify_one();
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl MemoryStore {
    fn entries(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, StoredTokens>> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl TokenStore for MemoryStore {
    fn load(&self, identity: &str) -> Result<Option<StoredTokens>, StoreError> {
        Ok(self.entries().get(identity).cloned())
    }

    fn load_all(&self) -> Result<Vec<StoredTokens>, StoreError> {
        Ok(self.entries().values().cloned().collect())
    }

    fn save(&self, tokens: &StoredTokens) -> Result<(), StoreError> {
        self.entries()
            .insert(tokens.identity.clone(), tokens.clone());
        Ok(())
    }

    fn clear(&self, identity: &str) -> Result<(), StoreError> {
        self.entries().remove(identity);
        Ok(())
    }

    fn lock(&self) -> Result<StoreLock, StoreError> {
        let (held, freed) = &*self.held;
        let mut taken = held.lock().unwrap_or_else(|p| p.into_inner());
        while *taken {
            taken = freed.wait(taken).unwrap_or_else(|p| p.into_inner());
        }
        *taken = true;
        Ok(StoreLock::new(MemoryLock(self.held.clone())))
    }
}
