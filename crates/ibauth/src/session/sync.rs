//! Tokens shared by several processes through one store: reuse while valid, refresh under the
//! lock, and adopt what another process refreshed instead of logging in again (IBKR
//! rate-limits logins, and a second live session token replaces the first).

use std::sync::Arc;

use crate::client::{BoxFuture, Client};
use crate::error::Error;
use crate::store::{StoreError, StoreLock, StoredTokens, TokenStore};

/// Where the client's tokens came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The tokens the client already held.
    Held,
    /// The store's tokens, still valid.
    Stored,
    /// The store's tokens, refreshed meanwhile by another process.
    Adopted,
    /// A fresh login or renewal by this process, now stored.
    Refreshed,
}

async fn blocking<T: Send + 'static>(
    store: &Arc<dyn TokenStore>,
    f: impl FnOnce(&dyn TokenStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Error> {
    let store = store.clone();
    // Waiting for the lock can take as long as another process's login: off the runtime.
    tokio::task::spawn_blocking(move || f(store.as_ref()))
        .await
        .map_err(|e| StoreError::Other(format!("store task failed: {e}")))?
        .map_err(Error::from)
}

async fn lock(store: &Arc<dyn TokenStore>) -> Result<StoreLock, Error> {
    blocking(store, |s| s.lock()).await
}

async fn load(store: &Arc<dyn TokenStore>, identity: &str) -> Result<Option<StoredTokens>, Error> {
    let identity = identity.to_owned();
    blocking(store, move |s| s.load(&identity)).await
}

/// Whether `stored` can serve `client` now: its credentials, and no token due for renewal
/// within `margin`.
fn fits<C: Client + ?Sized>(
    client: &C,
    stored: &StoredTokens,
    margin: std::time::Duration,
) -> bool {
    let now = client.now_unix();
    stored.identity == client.identity()
        && stored.usable(now, 0)
        && !stored.expiries().iter().any(|t| t.due(now, margin))
}

/// Loads the stored tokens into `client` if they are its own and valid beyond `margin`;
/// returns them (so callers can show their age), or `None` if there are none to reuse.
pub async fn restore<C: Client + ?Sized>(
    client: &mut C,
    store: &Arc<dyn TokenStore>,
    margin: std::time::Duration,
) -> Result<Option<StoredTokens>, Error> {
    let stored = load(store, &client.identity()).await?;
    if let Some(stored) = &stored {
        client.adopt_credentials(stored);
    }
    match stored {
        Some(stored) if fits(client, &stored, margin) && client.restore_tokens(&stored) => {
            tracing::debug!(
                age_s = stored.token_age(client.now_unix()).as_secs(),
                "reusing stored tokens"
            );
            Ok(Some(stored))
        }
        _ => Ok(None),
    }
}

/// Refreshes `client`'s tokens in step with other processes. Under the store's lock, the
/// store is read again: if it holds valid tokens other than the client's (another process
/// refreshed them), they are adopted; otherwise `refresh` runs (a login or a renewal) and its
/// tokens are saved. `fresh_login` starts a new token age; a renewal keeps the stored one.
/// What `refresh` returned comes back with them (`None` when the tokens were adopted).
pub async fn refresh<C, T, F>(
    client: &mut C,
    store: &Arc<dyn TokenStore>,
    margin: std::time::Duration,
    fresh_login: bool,
    refresh: F,
) -> Result<(Source, StoredTokens, Option<T>), Error>
where
    C: Client + ?Sized,
    F: for<'a> FnOnce(&'a mut C) -> BoxFuture<'a, Result<T, Error>>,
{
    let _guard = lock(store).await?;
    let stored = load(store, &client.identity()).await?;
    if let Some(stored) = &stored {
        client.adopt_credentials(stored);
    }
    let ours = client.stored_tokens(client.now_unix());
    if let Some(stored) = &stored {
        let replaced = ours.as_ref().is_none_or(|o| !o.same_session_token(stored));
        if replaced && fits(client, stored, margin) && client.restore_tokens(stored) {
            tracing::info!("adopted tokens another process refreshed");
            return Ok((Source::Adopted, stored.clone(), None));
        }
    }
    let value = refresh(client).await?;
    let now = client.now_unix();
    let Some(mut doc) = client.stored_tokens(now) else {
        return Err(StoreError::Other("the refresh left the client without tokens".into()).into());
    };
    if !fresh_login && let Some(stored) = stored.filter(|s| s.identity == doc.identity) {
        doc.created_at = stored.created_at;
        doc.session_id = stored.session_id;
    }
    let saved = doc.clone();
    blocking(store, move |s| s.save(&doc)).await?;
    Ok((Source::Refreshed, saved, Some(value)))
}

/// Logs in afresh under the store's lock and saves the new tokens, whatever is stored (a
/// forced login: `ibauth login --force`).
pub async fn replace<C, T, F>(
    client: &mut C,
    store: &Arc<dyn TokenStore>,
    login: F,
) -> Result<(StoredTokens, T), Error>
where
    C: Client + ?Sized,
    F: for<'a> FnOnce(&'a mut C) -> BoxFuture<'a, Result<T, Error>>,
{
    let _guard = lock(store).await?;
    let value = login(client).await?;
    let Some(doc) = client.stored_tokens(client.now_unix()) else {
        return Err(StoreError::Other("the login left the client without tokens".into()).into());
    };
    let saved = doc.clone();
    blocking(store, move |s| s.save(&doc)).await?;
    Ok((saved, value))
}

/// Saves `doc` (a client's [`stored_tokens`](Client::stored_tokens)), keeping the stored
/// login time if the stored document is the same login — and leaving the store alone if
/// another process stored newer tokens meanwhile.
pub async fn save(store: &Arc<dyn TokenStore>, mut doc: StoredTokens) -> Result<(), Error> {
    let _guard = lock(store).await?;
    if let Some(stored) = load(store, &doc.identity).await? {
        if !stored.same_session_token(&doc) {
            // Another process refreshed since: its tokens win; ours are found stale later.
            return Ok(());
        }
        doc.created_at = stored.created_at;
        doc.grant = stored.grant;
    }
    blocking(store, move |s| s.save(&doc)).await
}

/// Removes the stored tokens after a logout — unless they are no longer the ones `client`
/// logged out with (another process logged in since). A third-party grant stays: the user's
/// authorisation outlives the session, and the next login needs only it, not the browser.
pub async fn forget(store: &Arc<dyn TokenStore>, logged_out: &StoredTokens) -> Result<(), Error> {
    let _guard = lock(store).await?;
    match load(store, &logged_out.identity).await? {
        Some(stored) if stored.same_session_token(logged_out) && stored.grant.is_some() => {
            let mut kept = stored;
            kept.access_token = None;
            kept.bearer = None;
            kept.live_session_token = None;
            kept.session_id = None;
            blocking(store, move |s| s.save(&kept)).await
        }
        Some(stored) if stored.same_session_token(logged_out) => {
            let identity = logged_out.identity.clone();
            blocking(store, move |s| s.clear(&identity)).await
        }
        _ => Ok(()),
    }
}
