//! Scripted misbehaviour waiting to be applied (the fault-injection middleware consumes it).

use std::collections::VecDeque;
use std::time::Duration;

/// One scripted answer: a status, IBKR's message, and an optional `Retry-After` (seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailWith {
    /// HTTP status.
    pub status: u16,
    /// The `error` message of the body.
    pub message: String,
    /// `Retry-After` header, in seconds.
    pub retry_after: Option<u64>,
}

impl FailWith {
    /// `status` with `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// Faults waiting to be applied.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub fail_next: VecDeque<FailWith>,
    /// Responses to cut off halfway (the connection closes mid-body).
    pub cut_next: u32,
    pub delay: Option<Duration>,
    pub injected: u64,
}
