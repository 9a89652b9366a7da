//! # ibauth-fleet
//!
//! One IBKR login shared by a fleet of processes on several machines: the store named by a
//! URL (`postgres://…` through [`ibauth_postgres`], `redis://…` through [`ibauth_redis`]) made
//! into an [`ibauth::coord::Coordinator`], and a [`Session`](ibauth::Session) joined to it from
//! the settings (`store`, `store_key_file`, `lease_ttl` — YAML or `IBAUTH_*`). See
//! `docs/fleet.md` for how leaders, followers, fencing and encryption at rest fit together.
//!
//! And the other way round — many logins, one per user, kept alive by a few processes:
//! [`runner::Runner`] (third-party grants in a PostgreSQL work queue; `ibauth fleet`).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use ibauth::policy::Policy;
//! let policy = Policy::load(None)?; // store: postgres://…, store_key_file: …
//! let builder = ibauth::Session::from_config(None, None)?;
//! let session = ibauth_fleet::join(builder, &policy).await?.build()?;
//! let keep = session.keep_alive()?; // leads, or follows the leader
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

pub mod runner;

use std::sync::Arc;

use ibauth::SessionBuilder;
use ibauth::coord::{CoordError, Coordinator, Keyring, StoreUrl};
use ibauth::policy::Policy;

/// Opens the store `url` names as a work queue for a [`runner::Runner`]: PostgreSQL only
/// (Redis keeps no work queue).
pub async fn connect_queue(
    url: &StoreUrl,
) -> Result<Arc<dyn ibauth::coord::WorkQueue>, CoordError> {
    match url.scheme() {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            ibauth_postgres::PgCoordinator::builder(url.as_str())
                .pool_size(8)
                .connect()
                .await?,
        )),
        other => Err(CoordError::Config(format!(
            "{}: a multi-session runner needs a PostgreSQL store (`{other}` keeps no work queue)",
            url.redacted()
        ))),
    }
}

/// Opens the store `url` names.
pub async fn connect(url: &StoreUrl) -> Result<Arc<dyn Coordinator>, CoordError> {
    match url.scheme() {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Arc::new(
            ibauth_postgres::PgCoordinator::connect(url.as_str()).await?,
        )),
        #[cfg(feature = "redis")]
        "redis" | "rediss" => Ok(Arc::new(
            ibauth_redis::RedisCoordinator::connect(url.as_str()).await?,
        )),
        other => Err(CoordError::Config(format!(
            "{}: this build of ibauth has no `{other}` store (features `postgres`, `redis`)",
            url.redacted()
        ))),
    }
}

/// Joins `builder`'s session to the fleet `policy.store` names — the store opened, the keys
/// loaded (`IBAUTH_STORE_KEY_FILE`, `IBAUTH_STORE_KEY` or `policy.store_key_file`; a store
/// without a key is refused), the lease's ttl from `policy.lease_ttl`. Without a store the
/// builder is returned as it was (the token file).
pub async fn join(builder: SessionBuilder, policy: &Policy) -> Result<SessionBuilder, CoordError> {
    let Some(url) = &policy.store else {
        return Ok(builder);
    };
    // The key first: a missing key is a configuration error, whatever the store's state.
    let keyring = Keyring::from_env(policy.store_key_file.as_deref())?;
    let coord = connect(url).await?;
    tracing::info!(store = %url.redacted(), key = keyring.current().id(), "joining the fleet");
    Ok(builder.fleet(coord, keyring).lease_ttl(policy.lease_ttl))
}
