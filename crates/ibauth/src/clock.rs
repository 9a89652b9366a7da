//! Time as a dependency, so signed requests reproduce byte for byte and tests never sleep.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current Unix time in seconds.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now_unix(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    }
}

/// A clock that stands still until told to move; share it with [`Arc`] to move it from a test.
///
/// ```
/// use ibauth::{Clock, FixedClock};
/// let clock = FixedClock::new(1_700_000_000);
/// clock.advance(30);
/// assert_eq!(clock.now_unix(), 1_700_000_030);
/// ```
#[derive(Debug, Default)]
pub struct FixedClock(AtomicU64);

impl FixedClock {
    /// A clock showing `unix` seconds.
    pub fn new(unix: u64) -> Self {
        Self(AtomicU64::new(unix))
    }

    /// Sets the time.
    pub fn set(&self, unix: u64) {
        self.0.store(unix, Ordering::SeqCst);
    }

    /// Moves the time forward.
    pub fn advance(&self, secs: u64) {
        self.0.fetch_add(secs, Ordering::SeqCst);
    }
}

impl Clock for FixedClock {
    fn now_unix(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_unix(&self) -> u64 {
        (**self).now_unix()
    }
}
