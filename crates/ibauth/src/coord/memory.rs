//! [`MemoryCoordinator`]: the coordination interface in one process — the reference for what
//! the shared stores do, and a stand-in for a fleet inside one program (several sessions of
//! one identity in one process, tests). It can be switched off to play a store that went
//! away.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::{
    Acquired, CoordError, CoordFuture, Coordinator, Event, Events, Lease, LeaseInfo, MAX_DOC_LEN,
    Member, PaceTxn, SealedDoc, check_name,
};

/// A coordinator in memory; clones share it.
#[derive(Clone, Default)]
pub struct MemoryCoordinator {
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
}

impl std::fmt::Debug for MemoryCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryCoordinator")
    }
}

#[derive(Default)]
struct State {
    leases: HashMap<String, LeaseRow>,
    /// The last generation granted per identity: kept when a lease is released, so a
    /// generation is never granted twice.
    generations: HashMap<String, u64>,
    docs: HashMap<String, SealedDoc>,
    versions: HashMap<String, u64>,
    channels: HashMap<String, broadcast::Sender<Event>>,
    members: HashMap<String, HashMap<String, (Member, Instant, Instant)>>,
    pace: HashMap<String, Vec<u8>>,
    /// The work queue: identity → (due, consumer).
    work: HashMap<String, (Instant, String)>,
    pace_locks: HashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

struct LeaseRow {
    holder: String,
    generation: u64,
    expires: Instant,
}

impl State {
    fn live(&self, identity: &str, now: Instant) -> Option<&LeaseRow> {
        self.leases.get(identity).filter(|l| l.expires > now)
    }

    fn current(&self, lease: &Lease, now: Instant) -> Result<(), CoordError> {
        match self.live(&lease.identity, now) {
            Some(row) if row.generation == lease.generation && row.holder == lease.holder => Ok(()),
            row => Err(CoordError::Fenced {
                identity: lease.identity.clone(),
                generation: lease.generation,
                current: row.map(|r| r.generation),
            }),
        }
    }

    fn notify(&mut self, identity: &str, event: Event) {
        if let Some(tx) = self.channels.get(identity) {
            // Nobody listening is fine.
            let _ = tx.send(event);
        }
    }
}

impl MemoryCoordinator {
    /// An empty coordinator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plays a store that went away (`false`): every call fails with
    /// [`CoordError::Unavailable`] until it is back (`true`). Nothing held is lost.
    pub fn set_available(&self, available: bool) {
        self.down.store(!available, Ordering::SeqCst);
        if available {
            // Like a reconnected listener: subscribers read the state again.
            let mut state = self.lock();
            let ids: Vec<String> = state.channels.keys().cloned().collect();
            for id in ids {
                state.notify(&id, Event::Resync);
            }
        }
    }

    /// Ends the lease on `identity` now, as if its holder had been paused past its ttl: the
    /// holder's next renewal or write is refused, and another process may take the lease.
    pub fn expire(&self, identity: &str) {
        if let Some(row) = self.lock().leases.get_mut(identity) {
            row.expires = Instant::now();
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn up(&self, action: &'static str) -> Result<(), CoordError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(CoordError::Unavailable {
                store: self.describe(),
                action,
                detail: "switched off".into(),
            });
        }
        Ok(())
    }
}

fn ready<'a, T: Send + 'a>(value: Result<T, CoordError>) -> CoordFuture<'a, T> {
    Box::pin(std::future::ready(value))
}

impl Coordinator for MemoryCoordinator {
    fn describe(&self) -> String {
        "memory".into()
    }

    fn acquire<'a>(
        &'a self,
        identity: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> CoordFuture<'a, Acquired> {
        ready((|| {
            check_name("identity", identity)?;
            check_name("holder", holder)?;
            self.up("taking the lease")?;
            let now = Instant::now();
            let mut state = self.lock();
            if let Some(row) = state.live(identity, now) {
                if row.holder != holder {
                    return Ok(Acquired::Held(LeaseInfo {
                        holder: row.holder.clone(),
                        generation: row.generation,
                        expires_in: row.expires - now,
                    }));
                }
                let generation = row.generation;
                if let Some(row) = state.leases.get_mut(identity) {
                    row.expires = now + ttl;
                }
                return Ok(Acquired::Granted(Lease {
                    identity: identity.to_owned(),
                    holder: holder.to_owned(),
                    generation,
                }));
            }
            let last = state.generations.get(identity).copied().unwrap_or(0);
            let generation = last.saturating_add(1);
            state.generations.insert(identity.to_owned(), generation);
            state.leases.insert(
                identity.to_owned(),
                LeaseRow {
                    holder: holder.to_owned(),
                    generation,
                    expires: now + ttl,
                },
            );
            Ok(Acquired::Granted(Lease {
                identity: identity.to_owned(),
                holder: holder.to_owned(),
                generation,
            }))
        })())
    }

    fn renew<'a>(&'a self, lease: &'a Lease, ttl: Duration) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("renewing the lease")?;
            let now = Instant::now();
            let mut state = self.lock();
            state.current(lease, now)?;
            if let Some(row) = state.leases.get_mut(&lease.identity) {
                row.expires = now + ttl;
            }
            Ok(())
        })())
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("releasing the lease")?;
            let now = Instant::now();
            let mut state = self.lock();
            if state.current(lease, now).is_ok() {
                state.leases.remove(&lease.identity);
                state.notify(&lease.identity, Event::Released);
            }
            Ok(())
        })())
    }

    fn lease_info<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<LeaseInfo>> {
        ready((|| {
            self.up("reading the lease")?;
            let now = Instant::now();
            let state = self.lock();
            Ok(state.leases.get(identity).map(|row| LeaseInfo {
                holder: row.holder.clone(),
                generation: row.generation,
                expires_in: row.expires.saturating_duration_since(now),
            }))
        })())
    }

    fn load<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Option<SealedDoc>> {
        ready((|| {
            self.up("loading the session")?;
            Ok(self.lock().docs.get(identity).cloned())
        })())
    }

    fn store<'a>(&'a self, lease: &'a Lease, doc: &'a SealedDoc) -> CoordFuture<'a, u64> {
        ready((|| {
            if doc.bytes.len() > MAX_DOC_LEN {
                return Err(CoordError::TooLarge {
                    len: doc.bytes.len(),
                });
            }
            check_name("key id", &doc.key_id)?;
            self.up("storing the session")?;
            let now = Instant::now();
            let mut state = self.lock();
            state.current(lease, now)?;
            let version = state
                .versions
                .get(&lease.identity)
                .copied()
                .unwrap_or(0)
                .saturating_add(1);
            state.versions.insert(lease.identity.clone(), version);
            state.docs.insert(
                lease.identity.clone(),
                SealedDoc {
                    key_id: doc.key_id.clone(),
                    bytes: doc.bytes.clone(),
                    version,
                    generation: lease.generation,
                },
            );
            state.notify(&lease.identity, Event::Saved(version));
            Ok(version)
        })())
    }

    fn remove<'a>(&'a self, lease: &'a Lease) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("removing the session")?;
            let now = Instant::now();
            let mut state = self.lock();
            state.current(lease, now)?;
            if state.docs.remove(&lease.identity).is_some() {
                state.notify(&lease.identity, Event::Removed);
            }
            Ok(())
        })())
    }

    fn identities(&self) -> CoordFuture<'_, Vec<String>> {
        ready((|| {
            self.up("listing sessions")?;
            let mut ids: Vec<String> = self.lock().docs.keys().cloned().collect();
            ids.sort();
            Ok(ids)
        })())
    }

    fn subscribe<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Events> {
        ready((|| {
            check_name("identity", identity)?;
            self.up("subscribing")?;
            let mut state = self.lock();
            let tx = state
                .channels
                .entry(identity.to_owned())
                .or_insert_with(|| broadcast::channel(64).0);
            Ok(tx.subscribe())
        })())
    }

    fn request_recovery<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("asking for a recovery")?;
            self.lock().notify(identity, Event::RecoveryRequested);
            Ok(())
        })())
    }

    fn heartbeat<'a>(
        &'a self,
        identity: &'a str,
        member: &'a Member,
        ttl: Duration,
    ) -> CoordFuture<'a, ()> {
        ready((|| {
            check_name("member", &member.id)?;
            self.up("sending a heartbeat")?;
            let now = Instant::now();
            self.lock()
                .members
                .entry(identity.to_owned())
                .or_default()
                .insert(member.id.clone(), (member.clone(), now, now + ttl));
            Ok(())
        })())
    }

    fn leave<'a>(&'a self, identity: &'a str, member_id: &'a str) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("leaving")?;
            if let Some(members) = self.lock().members.get_mut(identity) {
                members.remove(member_id);
            }
            Ok(())
        })())
    }

    fn members<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, Vec<Member>> {
        ready((|| {
            self.up("listing members")?;
            let now = Instant::now();
            let state = self.lock();
            let mut members: Vec<Member> = state
                .members
                .get(identity)
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|(_, _, until)| *until > now)
                .map(|(m, seen, _)| Member {
                    seen_ago: now - *seen,
                    ..m.clone()
                })
                .collect();
            members.sort_by(|a, b| a.id.cmp(&b.id));
            Ok(members)
        })())
    }

    fn pace<'a>(&'a self, account: &'a str) -> CoordFuture<'a, Box<dyn PaceTxn>> {
        Box::pin(async move {
            check_name("account", account)?;
            self.up("pacing")?;
            let lock = self
                .lock()
                .pace_locks
                .entry(account.to_owned())
                .or_default()
                .clone();
            let guard = lock.lock_owned().await;
            let current = self.lock().pace.get(account).cloned();
            Ok(Box::new(MemoryPace {
                owner: self.clone(),
                account: account.to_owned(),
                current,
                _guard: guard,
            }) as Box<dyn PaceTxn>)
        })
    }
}

impl super::WorkQueue for MemoryCoordinator {
    fn enroll<'a>(
        &'a self,
        identities: &'a [String],
        consumer: &'a str,
        due_in: Duration,
    ) -> CoordFuture<'a, u64> {
        ready((|| {
            for identity in identities {
                check_name("identity", identity)?;
            }
            self.up("enrolling")?;
            let due = Instant::now() + due_in;
            let mut state = self.lock();
            let mut added = 0;
            for identity in identities {
                match state.work.get_mut(identity) {
                    Some((_, c)) => consumer.clone_into(c),
                    None => {
                        state
                            .work
                            .insert(identity.clone(), (due, consumer.to_owned()));
                        added += 1;
                    }
                }
            }
            Ok(added)
        })())
    }

    fn retire<'a>(&'a self, identity: &'a str) -> CoordFuture<'a, ()> {
        ready((|| {
            self.up("retiring")?;
            self.lock().work.remove(identity);
            Ok(())
        })())
    }

    fn claim<'a>(
        &'a self,
        worker: &'a str,
        consumers: &'a [String],
        limit: usize,
        hold: Duration,
    ) -> CoordFuture<'a, Vec<super::Claimed>> {
        ready((|| {
            check_name("worker", worker)?;
            self.up("claiming")?;
            let now = Instant::now();
            let mut state = self.lock();
            let mut due: Vec<(Instant, String)> = state
                .work
                .iter()
                .filter(|(id, (at, consumer))| {
                    *at <= now && consumers.contains(consumer) && state.live(id, now).is_none()
                })
                .map(|(id, (at, _))| (*at, id.clone()))
                .collect();
            due.sort();
            due.truncate(limit);
            let mut claimed = Vec::with_capacity(due.len());
            for (at, identity) in due {
                let generation = state
                    .generations
                    .get(&identity)
                    .copied()
                    .unwrap_or(0)
                    .saturating_add(1);
                state.generations.insert(identity.clone(), generation);
                state.leases.insert(
                    identity.clone(),
                    LeaseRow {
                        holder: worker.to_owned(),
                        generation,
                        expires: now + hold,
                    },
                );
                claimed.push(super::Claimed {
                    lease: Lease {
                        identity,
                        holder: worker.to_owned(),
                        generation,
                    },
                    late: now - at,
                });
            }
            Ok(claimed)
        })())
    }

    fn reschedule<'a>(&'a self, done: &'a [(Lease, Duration)]) -> CoordFuture<'a, u64> {
        ready((|| {
            self.up("rescheduling")?;
            let now = Instant::now();
            let mut state = self.lock();
            let mut n = 0;
            for (lease, wait) in done {
                if state.current(lease, now).is_err() {
                    continue;
                }
                state.leases.remove(&lease.identity);
                if let Some((due, _)) = state.work.get_mut(&lease.identity) {
                    *due = now + *wait;
                    n += 1;
                }
            }
            Ok(n)
        })())
    }

    fn queue_stats(&self) -> CoordFuture<'_, super::QueueStats> {
        ready((|| {
            self.up("counting")?;
            let now = Instant::now();
            let state = self.lock();
            let mut stats = super::QueueStats {
                queued: state.work.len() as u64,
                ..Default::default()
            };
            for (id, (at, _)) in &state.work {
                if state.live(id, now).is_some() {
                    stats.claimed += 1;
                } else if *at <= now {
                    stats.due += 1;
                    stats.most_late = stats.most_late.max(now - *at);
                }
            }
            Ok(stats)
        })())
    }
}

struct MemoryPace {
    owner: MemoryCoordinator,
    account: String,
    current: Option<Vec<u8>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl PaceTxn for MemoryPace {
    fn current(&self) -> Option<&[u8]> {
        self.current.as_deref()
    }

    fn commit(self: Box<Self>, bytes: Vec<u8>) -> CoordFuture<'static, ()> {
        Box::pin(async move {
            if bytes.len() > MAX_DOC_LEN {
                return Err(CoordError::TooLarge { len: bytes.len() });
            }
            self.owner.up("pacing")?;
            self.owner.lock().pace.insert(self.account.clone(), bytes);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_memory_coordinator_passes_the_conformance_suite() {
        let coord = MemoryCoordinator::new();
        super::super::conformance::run_all(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
        super::super::conformance::run_queue(&coord, &|d| Box::pin(tokio::time::sleep(d))).await;
    }

    #[tokio::test]
    async fn a_store_switched_off_refuses_everything_and_loses_nothing() {
        let coord = MemoryCoordinator::new();
        let Acquired::Granted(lease) = coord
            .acquire("id", "h", Duration::from_secs(10))
            .await
            .unwrap()
        else {
            panic!("free lease");
        };
        let doc = SealedDoc {
            key_id: "k".into(),
            bytes: vec![1, 2, 3],
            version: 0,
            generation: 0,
        };
        coord.store(&lease, &doc).await.unwrap();
        coord.set_available(false);
        let err = coord.load("id").await.unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(coord.store(&lease, &doc).await.is_err());
        coord.set_available(true);
        assert_eq!(
            coord.load("id").await.unwrap().unwrap().bytes,
            vec![1, 2, 3]
        );
    }
}
