//! Due work for many sessions at once (a platform acting for thousands of users): each
//! identity has a next due time; workers claim due identities in batches and hand them back
//! with their next due time. A claim *is* the identity's lease — same fencing generation, same
//! compare-and-set writes — so one session is never handled by two workers at once, and a
//! worker that stalled past its claim cannot overwrite the one that took over.
//!
//! Each identity is queued under the name of the consumer that works it (a runner's named
//! consumers; [`DEFAULT_CONSUMER`] for its default one), and a claim names the consumers the
//! claiming worker has: it only ever gets identities it can work, so a worker without a
//! consumer never takes (and starves) the work of one that has it.

use std::time::Duration;

use super::{CoordFuture, Coordinator, Lease, SealedDoc};

/// The consumer name of identities queued without one (a runner's default consumer, and
/// every identity queued before consumers were recorded).
pub const DEFAULT_CONSUMER: &str = "";

/// An identity claimed from the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    /// Its lease, held by the claiming worker for the claim's hold.
    pub lease: Lease,
    /// How long past its due time it was claimed.
    pub late: Duration,
}

/// The queue's state, for status and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Identities in the queue.
    pub queued: u64,
    /// Of them, due now and not claimed.
    pub due: u64,
    /// Of them, claimed by a worker now.
    pub claimed: u64,
    /// How late the most overdue unclaimed identity is.
    pub most_late: Duration,
}

/// A [`Coordinator`] that also keeps the due times of many identities: workers claim due
/// identities in batches — a claim is the identity's lease, fenced like any other — and hand
/// them back with their next due time. The PostgreSQL store claims with `FOR UPDATE SKIP
/// LOCKED`; the in-memory one under its lock.
pub trait WorkQueue: Coordinator {
    /// Adds `identities`, worked by `consumer` ([`DEFAULT_CONSUMER`] for the default one),
    /// due after `due_in`; those queued already keep their due time (and take `consumer`).
    /// Returns how many were added.
    fn enroll<'a>(
        &'a self,
        identities: &'a [String],
        consumer: &'a str,
        due_in: Duration,
    ) -> CoordFuture<'a, u64>;

    /// Takes `identity` out of the queue.
    fn retire<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()>;

    /// Claims up to `limit` due identities whose lease is free and whose consumer is one of
    /// `consumers` — the most overdue first — as `worker` for `hold` (each comes back as its
    /// lease, with a new generation). Identities another worker holds are skipped, never
    /// waited for; those of other consumers are never returned.
    fn claim<'a>(
        &'a self,
        worker: &'a str,
        consumers: &'a [String],
        limit: usize,
        hold: Duration,
    ) -> CoordFuture<'a, Vec<Claimed>>;

    /// Claims as [`claim`](Self::claim) does, each identity with its stored document (as
    /// [`Coordinator::load`] reads it). The PostgreSQL store reads them in the claiming
    /// statement; the default loads them one by one.
    fn claim_with_docs<'a>(
        &'a self,
        worker: &'a str,
        consumers: &'a [String],
        limit: usize,
        hold: Duration,
    ) -> CoordFuture<'a, Vec<(Claimed, Option<SealedDoc>)>> {
        Box::pin(async move {
            let claimed = self.claim(worker, consumers, limit, hold).await?;
            let mut out = Vec::with_capacity(claimed.len());
            for c in claimed {
                let doc = self.load(&c.lease.identity).await?;
                out.push((c, doc));
            }
            Ok(out)
        })
    }

    /// Hands claimed work back: each identity is due again after its wait and its lease is
    /// released — only where the lease is still current (work whose claim ran out and was
    /// taken by another worker is left to that worker). Returns how many were rescheduled.
    fn reschedule<'a>(&'a self, done: &'a [(Lease, Duration)]) -> CoordFuture<'a, u64>;

    /// The queue's counts.
    fn queue_stats(&self) -> CoordFuture<'_, QueueStats>;
}
