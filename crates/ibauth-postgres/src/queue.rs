//! [`WorkQueue`] on PostgreSQL: `ibauth_work(identity, due_at, consumer)` says when each
//! identity is due and which consumer works it (`''` the default one); who works on it is its
//! lease in `ibauth_leases`, so a claim is a lease like any other (same generation counter,
//! same fenced writes).
//!
//! A claim is one statement: the most overdue rows of `ibauth_work` whose lease is free and
//! whose consumer is one of the claimer's, locked `FOR UPDATE SKIP LOCKED` (concurrent claimers
//! skip each other's rows instead of waiting), and for each an upsert of its lease row that
//! grants the next generation only where the lease is still free — checked on the row's latest
//! version, so a row whose lease another claimer or an `acquire` took after this statement's
//! snapshot is left out. The lease row is what excludes; `SKIP LOCKED` only keeps claimers from
//! queueing behind each other.

use std::time::Duration;

use ibauth::coord::{
    Claimed, CoordError, CoordFuture, Lease, MAX_DOC_LEN, QueueStats, SealedDoc, WorkQueue,
    check_name,
};
use tokio_postgres::types::Type;

use crate::{PgCoordinator, db_generation, duration_from_micros, micros};

/// The most identities one `enroll` statement carries (more are sent in several).
const ENROLL_CHUNK: usize = 1000;

/// The most identities one claim may ask for.
pub const MAX_CLAIM: usize = 10_000;

/// Claims (worker $1, limit $2, hold $3 µs, consumers $5) and reads each claimed identity's
/// document (`CASE`-bounded to $4 bytes, as `load` does) in one statement.
const CLAIM: &str = "WITH due AS (
        SELECT w.identity, w.due_at FROM ibauth_work w
        WHERE w.due_at <= clock_timestamp() AND w.consumer = ANY($5)
            AND NOT EXISTS (SELECT 1 FROM ibauth_leases l
                WHERE l.identity = w.identity AND l.holder IS NOT NULL
                    AND l.expires_at > clock_timestamp())
        ORDER BY w.due_at
        LIMIT $2
        FOR UPDATE OF w SKIP LOCKED),
    taken AS (
        INSERT INTO ibauth_leases AS l (identity, holder, generation, expires_at)
        SELECT identity, $1, 1, clock_timestamp() + $3::float8 * interval '1 microsecond'
        FROM due
        ON CONFLICT (identity) DO UPDATE SET
            holder = EXCLUDED.holder, generation = l.generation + 1,
            expires_at = EXCLUDED.expires_at
        WHERE l.holder IS NULL OR l.expires_at <= clock_timestamp()
        RETURNING l.identity, l.generation)
    SELECT t.identity, t.generation,
        GREATEST(0, (EXTRACT(EPOCH FROM clock_timestamp() - d.due_at) * 1000000)::int8),
        left(s.key_id, 201), CASE WHEN octet_length(s.sealed) <= $4 THEN s.sealed END,
        octet_length(s.sealed), s.version, s.generation
    FROM taken t JOIN due d ON d.identity = t.identity
    LEFT JOIN ibauth_sessions s ON s.identity = t.identity AND s.sealed IS NOT NULL
    ORDER BY d.due_at";

impl WorkQueue for PgCoordinator {
    fn enroll<'a>(
        &'a self,
        identities: &'a [String],
        consumer: &'a str,
        due_in: Duration,
    ) -> CoordFuture<'a, u64> {
        Box::pin(async move {
            for identity in identities {
                check_name("identity", identity)?;
            }
            let due_us = micros(due_in);
            let mut added = 0u64;
            for chunk in identities.chunks(ENROLL_CHUNK) {
                let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
                let rows = self
                    .inner
                    .rows(
                        "enrolling",
                        // Queued already: the due time is kept, the consumer taken (only
                        // rewritten where it differs); `xmax = 0` tells the inserted rows.
                        "WITH added AS (
                            INSERT INTO ibauth_work AS w (identity, due_at, consumer)
                            SELECT DISTINCT i, clock_timestamp() + $2::float8 * interval '1 microsecond', $3
                            FROM unnest($1::text[]) AS i
                            ON CONFLICT (identity) DO UPDATE SET consumer = EXCLUDED.consumer
                            WHERE w.consumer <> EXCLUDED.consumer
                            RETURNING (w.xmax = 0) AS inserted)
                        SELECT count(*) FILTER (WHERE inserted) FROM added",
                        &[
                            (&ids, Type::TEXT_ARRAY),
                            (&due_us, Type::INT8),
                            (&consumer, Type::TEXT),
                        ],
                    )
                    .await?;
                let row = rows
                    .first()
                    .ok_or_else(|| self.inner.corrupt("enrolling answered no row".into()))?;
                let n: i64 = self.inner.col(row, 0, "enrolled")?;
                added += u64::try_from(n).unwrap_or(0);
            }
            Ok(added)
        })
    }

    fn retire<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()> {
        Box::pin(async move {
            check_name("identity", identity)?;
            self.inner
                .rows(
                    "retiring",
                    "DELETE FROM ibauth_work WHERE identity = $1",
                    &[(&identity, Type::TEXT)],
                )
                .await?;
            Ok(())
        })
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        consumers: &'a [String],
        limit: usize,
        hold: Duration,
    ) -> CoordFuture<'a, Vec<Claimed>> {
        Box::pin(async move {
            let claimed = self.claim_with_docs(worker, consumers, limit, hold).await?;
            Ok(claimed.into_iter().map(|(c, _)| c).collect())
        })
    }

    fn claim_with_docs<'a>(
        &'a self,
        worker: &'a str,
        consumers: &'a [String],
        limit: usize,
        hold: Duration,
    ) -> CoordFuture<'a, Vec<(Claimed, Option<SealedDoc>)>> {
        Box::pin(async move {
            check_name("worker", worker)?;
            let inner = &self.inner;
            let limit = limit.min(MAX_CLAIM) as i64;
            if limit == 0 || consumers.is_empty() {
                return Ok(Vec::new());
            }
            let hold_us = micros(hold);
            let max = MAX_DOC_LEN as i32;
            let rows = inner
                .rows(
                    "claiming due work",
                    CLAIM,
                    &[
                        (&worker, Type::TEXT),
                        (&limit, Type::INT8),
                        (&hold_us, Type::INT8),
                        (&max, Type::INT4),
                        (&consumers, Type::TEXT_ARRAY),
                    ],
                )
                .await?;
            rows.iter()
                .map(|row| {
                    let identity = inner.col::<String>(row, 0, "ibauth_work.identity")?;
                    let generation = inner.col::<i64>(row, 1, "ibauth_leases.generation")?;
                    let late = inner.col::<i64>(row, 2, "ibauth_work.due_at")?;
                    let claimed = Claimed {
                        lease: Lease {
                            identity: inner.name(identity, "identity")?,
                            holder: worker.to_owned(),
                            generation: inner.generation(generation, "ibauth_leases.generation")?,
                        },
                        late: duration_from_micros(late),
                    };
                    // A damaged document is reported and left out (the identity comes back
                    // without one), so one bad row cannot stop every claim that includes it.
                    let doc = match read_doc(inner, row) {
                        Ok(doc) => doc,
                        Err(e) => {
                            tracing::warn!(identity = %claimed.lease.identity, "{e}");
                            None
                        }
                    };
                    Ok((claimed, doc))
                })
                .collect()
        })
    }

    fn reschedule<'a>(&'a self, done: &'a [(Lease, Duration)]) -> CoordFuture<'a, u64> {
        Box::pin(async move {
            if done.is_empty() {
                return Ok(0);
            }
            let inner = &self.inner;
            let ids: Vec<&str> = done.iter().map(|(l, _)| l.identity.as_str()).collect();
            let holders: Vec<&str> = done.iter().map(|(l, _)| l.holder.as_str()).collect();
            let generations: Vec<i64> = done.iter().map(|(l, _)| db_generation(l)).collect();
            let waits: Vec<i64> = done.iter().map(|(_, w)| micros(*w)).collect();
            // Only where the lease is still the caller's, live: its row is locked for the
            // statement, the due time moved and the lease released together. No notification:
            // nobody follows queued work, and thousands of them would flood the listeners.
            let rows = inner
                .rows(
                    "rescheduling",
                    "WITH input AS (
                        SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::int8[])
                            AS i(identity, holder, generation, wait_us)),
                    live AS (
                        SELECT l.identity, i.wait_us FROM ibauth_leases l
                        JOIN input i ON l.identity = i.identity AND l.holder = i.holder
                            AND l.generation = i.generation
                        WHERE l.expires_at > clock_timestamp()
                        FOR UPDATE OF l),
                    moved AS (
                        UPDATE ibauth_work w
                        SET due_at = clock_timestamp() + live.wait_us * interval '1 microsecond'
                        FROM live WHERE w.identity = live.identity
                        RETURNING 1),
                    released AS (
                        UPDATE ibauth_leases l SET holder = NULL, expires_at = clock_timestamp()
                        FROM live WHERE l.identity = live.identity
                        RETURNING 1)
                    SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM released)",
                    &[
                        (&ids, Type::TEXT_ARRAY),
                        (&holders, Type::TEXT_ARRAY),
                        (&generations, Type::INT8_ARRAY),
                        (&waits, Type::INT8_ARRAY),
                    ],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("rescheduling answered no row".into()))?;
            let moved: i64 = inner.col(row, 0, "rescheduled")?;
            Ok(u64::try_from(moved).unwrap_or(0))
        })
    }

    fn queue_stats(&self) -> CoordFuture<'_, QueueStats> {
        Box::pin(async move {
            let inner = &self.inner;
            let rows = inner
                .rows(
                    "counting the queue",
                    "WITH w AS (
                        SELECT w.due_at, (l.holder IS NOT NULL
                            AND l.expires_at > clock_timestamp()) AS held
                        FROM ibauth_work w LEFT JOIN ibauth_leases l ON l.identity = w.identity)
                    SELECT count(*),
                        count(*) FILTER (WHERE NOT held AND due_at <= clock_timestamp()),
                        count(*) FILTER (WHERE held),
                        COALESCE(GREATEST(0, (EXTRACT(EPOCH FROM clock_timestamp()
                            - min(due_at) FILTER (WHERE NOT held))) * 1000000)::int8, 0)
                    FROM w",
                    &[],
                )
                .await?;
            let row = rows
                .first()
                .ok_or_else(|| inner.corrupt("counting answered no row".into()))?;
            let count = |i: usize, what: &str| -> Result<u64, CoordError> {
                let n: i64 = inner.col(row, i, what)?;
                Ok(u64::try_from(n).unwrap_or(0))
            };
            Ok(QueueStats {
                queued: count(0, "queued")?,
                due: count(1, "due")?,
                claimed: count(2, "claimed")?,
                most_late: duration_from_micros(inner.col(row, 3, "most late")?),
            })
        })
    }
}

/// The document columns (3–7) of a claim's row.
fn read_doc(
    inner: &crate::Inner,
    row: &tokio_postgres::Row,
) -> Result<Option<SealedDoc>, CoordError> {
    let Some(key_id) = inner.col::<Option<String>>(row, 3, "ibauth_sessions.key_id")? else {
        return Ok(None);
    };
    let bytes = inner
        .bounded_doc(row, 4, "the session document")?
        .ok_or_else(|| inner.corrupt("a session without its document".into()))?;
    let version = inner.col::<i64>(row, 6, "ibauth_sessions.version")?;
    let written = inner.col::<i64>(row, 7, "ibauth_sessions.generation")?;
    Ok(Some(SealedDoc {
        key_id: inner.name(key_id, "key id")?,
        bytes,
        version: inner.generation(version, "ibauth_sessions.version")?,
        generation: inner.generation(written, "ibauth_sessions.generation")?,
    }))
}
