//! Keeping a brokerage session alive: the [`Policy`] (what the keep-alive does and how often,
//! from code, the config file, `IBAUTH_*` and ibind's `IBIND_*` switches) and
//! [`SessionManager`], which runs a [`Session`]'s keep-alive over a client you built yourself.
//! With a configuration, [`Session::keep_alive`] does the same.
//!
//! The keep-alive tickles with jitter; renews tokens a margin before they expire; recovers when
//! the session drops (status → re-init → full re-login, each only if the previous did not
//! help); backs off with jitter on transient errors, honouring `Retry-After`; moves to another
//! host after `410 Gone`; caps rejected logins; and logs out once on shutdown, on a signal, or
//! when dropped. Its state is watchable, and every transition and recovery action is a
//! `tracing` event with its reason.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth::manager::{Policy, SessionManager, SessionState};
//! let client = ibauth::Oauth2Client::new(ibauth::Config::load(None)?)?;
//! let manager = SessionManager::new(client, Policy::load(None)?);
//! let mut state = manager.watch();
//! let running = manager.spawn()?;
//! state.wait_for(|s| s.state == SessionState::Authenticated).await?;
//! let accounts = running.session().get("portfolio/accounts").await?;
//! running.shutdown_on_signal().await; // SIGINT/SIGTERM: stop, and log out once
//! # Ok(()) }
//! ```

pub use crate::client::Client;
pub use crate::policy::Policy;
pub use crate::session::{FailReason, KeepAlive, SessionState, Status};
pub use crate::tokens::{TokenExpiry, TokenKind};

use std::sync::Arc;

use tokio::sync::watch;

use crate::error::Error;
use crate::session::{Session, SessionBuilder};
use crate::store::TokenStore;

/// The running keep-alive (the name this module had for it).
pub type Running = KeepAlive;

/// Keeps one brokerage session alive over a client built by hand; a thin shell over
/// [`Session`] and its [`KeepAlive`]. Without a store, tokens live as long as the process.
pub struct SessionManager {
    builder: SessionBuilder,
    status: watch::Sender<Status>,
}

impl std::fmt::Debug for SessionManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionManager")
            .field("status", &*self.status.borrow())
            .finish_non_exhaustive()
    }
}

impl SessionManager {
    /// A manager for `client` (not started).
    pub fn new(client: impl Client + 'static, policy: Policy) -> Self {
        let status = Status::new(client.tokens(), client.api_base().to_string());
        let (status, _) = watch::channel(status);
        let builder = Session::from_client(client).policy(policy).no_store();
        Self { builder, status }
    }

    /// Keeps tokens in `store`: valid stored tokens are used instead of a first login, every
    /// login and renewal is saved, a refresh takes the store's lock and adopts what another
    /// process refreshed meanwhile, and the logout on shutdown clears them.
    pub fn with_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.builder = self.builder.store(store);
        self
    }

    /// A receiver of every status change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Runs the keep-alive on the runtime until shut down (or failed).
    pub fn spawn(mut self) -> Result<KeepAlive, Error> {
        self.builder.status = Some(self.status);
        self.builder.build()?.keep_alive()
    }
}
