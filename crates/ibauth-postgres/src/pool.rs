//! A small bounded pool of tokio-postgres connections.
//!
//! At most `size` connections are in use at once (a semaphore); idle ones are kept for the
//! next call. A connection goes back to the pool only when the call that used it finished
//! cleanly ([`Conn::keep`]): one that timed out, broke, or was left inside a transaction is
//! closed instead (the server then rolls back whatever it held), so the pool never hands out
//! a connection in an unknown state. New connections are made on demand, which is also how
//! the pool reconnects after the database comes back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::Client;

use crate::tls::MakeRustls;

pub(crate) struct Pool {
    inner: Arc<Inner>,
}

struct Inner {
    config: tokio_postgres::Config,
    tls: MakeRustls,
    connect_timeout: Duration,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
}

/// Why no connection could be had.
#[derive(Debug)]
pub(crate) enum GetError {
    /// Connecting failed.
    Connect(tokio_postgres::Error),
    /// Connecting took longer than the connect timeout.
    Timeout(Duration),
}

impl std::fmt::Display for GetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GetError::Connect(e) => write!(f, "{e}"),
            GetError::Timeout(t) => write!(f, "could not connect within {t:?}"),
        }
    }
}

impl Pool {
    pub(crate) fn new(
        config: tokio_postgres::Config,
        tls: MakeRustls,
        size: usize,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                tls,
                connect_timeout,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(size.max(1))),
            }),
        }
    }

    /// A connection: an idle one that is still open, or a new one. Waits while `size` are in
    /// use (the caller bounds the wait).
    pub(crate) async fn get(&self) -> Result<Conn, GetError> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            // The semaphore is never closed.
            .map_err(|_| GetError::Timeout(Duration::ZERO))?;
        loop {
            let Some(client) = self.lock_idle().pop() else {
                break;
            };
            if !client.is_closed() {
                return Ok(Conn {
                    client: Some(client),
                    inner: self.inner.clone(),
                    reusable: false,
                    _permit: permit,
                });
            }
        }
        let client = self.inner.connect().await?;
        Ok(Conn {
            client: Some(client),
            inner: self.inner.clone(),
            reusable: false,
            _permit: permit,
        })
    }

    /// A connection outside the pool's count (the listener's).
    pub(crate) async fn connect_raw(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, crate::tls::RustlsStream>,
        ),
        GetError,
    > {
        match tokio::time::timeout(
            self.inner.connect_timeout,
            self.inner.config.connect(self.inner.tls.clone()),
        )
        .await
        {
            Ok(Ok(pair)) => Ok(pair),
            Ok(Err(e)) => Err(GetError::Connect(e)),
            Err(_) => Err(GetError::Timeout(self.inner.connect_timeout)),
        }
    }

    /// Closes every idle connection (after one broke: the others likely did too).
    pub(crate) fn drain_idle(&self) {
        self.lock_idle().clear();
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        self.inner.idle.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    async fn connect(&self) -> Result<Client, GetError> {
        let connecting = self.config.connect(self.tls.clone());
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok((client, connection))) => {
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!("postgres connection ended: {e}");
                    }
                });
                Ok(client)
            }
            Ok(Err(e)) => Err(GetError::Connect(e)),
            Err(_) => Err(GetError::Timeout(self.connect_timeout)),
        }
    }
}

/// A connection taken from the pool; dropped, it goes back only if [`keep`](Self::keep) was
/// called, and is closed otherwise.
pub(crate) struct Conn {
    client: Option<Client>,
    inner: Arc<Inner>,
    reusable: bool,
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    pub(crate) fn client(&self) -> &Client {
        // Only taken out in drop.
        self.client.as_ref().unwrap_or_else(|| unreachable!())
    }

    /// The call finished cleanly, outside any transaction: the connection can be reused.
    pub(crate) fn keep(&mut self) {
        self.reusable = true;
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(client) = self.client.take()
            && self.reusable
            && !client.is_closed()
        {
            self.inner
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(client);
        }
        // Otherwise the client is dropped: its connection task sends Terminate and closes
        // the socket, and the server rolls back anything open.
    }
}
