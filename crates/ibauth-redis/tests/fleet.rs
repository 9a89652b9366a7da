//! Several coordinators on one real redis-server, and that server going away: fencing across
//! processes, notifications across processes, restarts with and without persistence, a store
//! that hangs, a crashed pacing holder, passwords, TLS.

use std::time::{Duration, Instant};

use ibauth::coord::{Acquired, CoordError, Coordinator, Event, Events, Lease, Member, SealedDoc};
use ibauth_redis::RedisCoordinator;
use ibauth_testsupport::redis::{RedisServer, TlsFiles};

/// Short timeouts, so "fails fast" is measurable.
const TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a call may take while the store is away (connect + response timeout, and
/// slack for a loaded machine).
const FAIL_FAST: Duration = Duration::from_millis(3000);

async fn coordinator(url: &str) -> RedisCoordinator {
    RedisCoordinator::builder(url)
        .connect_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect("connect")
}

fn doc(bytes: &[u8]) -> SealedDoc {
    SealedDoc {
        key_id: "k1".into(),
        bytes: bytes.to_vec(),
        version: 0,
        generation: 0,
    }
}

async fn lead(coord: &RedisCoordinator, id: &str, holder: &str, ttl: Duration) -> Lease {
    match coord.acquire(id, holder, ttl).await.expect("acquire") {
        Acquired::Granted(lease) => lease,
        Acquired::Held(info) => panic!("{id} held by {info:?}"),
    }
}

async fn next_event(events: &mut Events, what: &str) -> Event {
    match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
        Ok(Ok(event)) => event,
        Ok(Err(e)) => panic!("{what}: feed error {e}"),
        Err(_) => panic!("{what}: no event within 10 s"),
    }
}

/// Waits for `want`, skipping other events.
async fn wait_for(events: &mut Events, want: Event, what: &str) {
    loop {
        if next_event(events, what).await == want {
            return;
        }
    }
}

/// Retries `f` until it succeeds (the store coming back), at most 10 s.
async fn eventually<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, CoordError>>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{what}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{what}: still failing after 10 s: {e}"),
        }
    }
}

/// Every call fails quickly with a transient error.
async fn assert_fails_fast(coord: &RedisCoordinator, lease: &Lease) {
    let calls: Vec<(&str, Result<(), CoordError>)> = vec![
        ("load", timed(coord.load(&lease.identity)).await),
        ("store", timed(coord.store(lease, &doc(b"x"))).await),
        ("renew", timed(coord.renew(lease, TIMEOUT)).await),
        (
            "acquire",
            timed(coord.acquire(&lease.identity, "other", TIMEOUT)).await,
        ),
        ("lease_info", timed(coord.lease_info(&lease.identity)).await),
        ("members", timed(coord.members(&lease.identity)).await),
        ("identities", timed(coord.identities()).await),
        ("pace", timed(coord.pace("acct")).await),
    ];
    for (name, result) in calls {
        let err = result.expect_err(name);
        assert!(
            matches!(err, CoordError::Unavailable { .. }),
            "{name}: {err}"
        );
    }
}

/// Runs a call, asserts it took at most [`FAIL_FAST`], and keeps only its error.
async fn timed<T>(call: impl Future<Output = Result<T, CoordError>>) -> Result<(), CoordError> {
    let started = Instant::now();
    let result = call.await;
    assert!(
        started.elapsed() <= FAIL_FAST,
        "a call took {:?} while the store was away",
        started.elapsed()
    );
    result.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_is_fenced_by_another_process() {
    let server = RedisServer::start();
    let a = coordinator(&server.url()).await;
    let b = coordinator(&server.url()).await;
    let id = "oauth2:fencing";
    let old = lead(&a, id, "host-a:1:aa", Duration::from_millis(300)).await;
    let v1 = a.store(&old, &doc(b"from a")).await.expect("store");
    // A pauses past its lease (a GC pause, a frozen VM); B takes over.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let new = lead(&b, id, "host-b:2:bb", Duration::from_secs(30)).await;
    assert!(new.generation > old.generation, "{new:?} after {old:?}");
    // A wakes up and writes: refused, with the generation that leads now.
    let err = a.store(&old, &doc(b"stale")).await.expect_err("fenced");
    let CoordError::Fenced {
        generation,
        current,
        ..
    } = err
    else {
        panic!("fenced, got {err}");
    };
    assert_eq!(
        (generation, current),
        (old.generation, Some(new.generation))
    );
    assert!(matches!(
        a.renew(&old, TIMEOUT).await,
        Err(CoordError::Fenced { .. })
    ));
    assert!(matches!(
        a.remove(&old).await,
        Err(CoordError::Fenced { .. })
    ));
    a.release(&old).await.expect("a stale release is a no-op");
    let held = b.lease_info(id).await.expect("info").expect("held");
    assert_eq!(
        (held.holder.as_str(), held.generation),
        ("host-b:2:bb", new.generation)
    );
    let stored = b.load(id).await.expect("load").expect("doc");
    assert_eq!(
        (stored.bytes.as_slice(), stored.version, stored.generation),
        (&b"from a"[..], v1, old.generation),
        "the stale write changed nothing"
    );
    let v2 = b.store(&new, &doc(b"from b")).await.expect("store");
    assert!(v2 > v1);
    // The same holder name with a forged generation does not pass either.
    let forged = Lease {
        holder: new.holder.clone(),
        generation: new.generation + 1,
        ..new.clone()
    };
    assert!(matches!(
        a.store(&forged, &doc(b"forged")).await,
        Err(CoordError::Fenced { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_other_processes() {
    let server = RedisServer::start();
    let leader = coordinator(&server.url()).await;
    let follower = coordinator(&server.url()).await;
    let id = "oauth2:events";
    let mut events = follower.subscribe(id).await.expect("subscribe");
    let mut other = follower
        .subscribe("oauth2:unrelated")
        .await
        .expect("subscribe");
    let lease = lead(&leader, id, "leader", Duration::from_secs(30)).await;
    let v = leader.store(&lease, &doc(b"tokens")).await.expect("store");
    assert_eq!(next_event(&mut events, "save").await, Event::Saved(v));
    follower.request_recovery(id).await.expect("request");
    assert_eq!(
        next_event(&mut events, "recovery").await,
        Event::RecoveryRequested
    );
    leader.remove(&lease).await.expect("remove");
    assert_eq!(next_event(&mut events, "removal").await, Event::Removed);
    leader.release(&lease).await.expect("release");
    assert_eq!(next_event(&mut events, "release").await, Event::Released);
    // Released: the follower takes over, and its lease is newer.
    let taken = lead(&follower, id, "follower", Duration::from_secs(30)).await;
    assert!(taken.generation > lease.generation);
    assert!(other.try_recv().is_err(), "nothing for another identity");
    // A second coordinator dropped: its listener stops, the others keep theirs.
    drop(follower);
    let mut again = leader.subscribe(id).await.expect("subscribe");
    leader.request_recovery(id).await.expect("request");
    assert_eq!(
        next_event(&mut again, "own event").await,
        Event::RecoveryRequested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_without_persistence_loses_the_state_but_never_a_generation() {
    let mut server = RedisServer::start();
    let coord = coordinator(&server.url()).await;
    let id = "oauth2:volatile";
    let old = lead(&coord, id, "leader-1", Duration::from_secs(30)).await;
    let v1 = coord.store(&old, &doc(b"before")).await.expect("store");
    let mut events = coord.subscribe(id).await.expect("subscribe");

    server.stop();
    assert_fails_fast(&coord, &old).await;
    let err = coord.subscribe(id).await.expect_err("no feed while away");
    assert!(err.is_transient(), "{err}");
    server.start_again();

    // Back: subscribers are told to read again, and nothing is left (documented).
    wait_for(&mut events, Event::Resync, "resync after the restart").await;
    let info = eventually("lease_info", || coord.lease_info(id)).await;
    assert_eq!(info, None, "no persistence: the lease is gone");
    assert_eq!(coord.load(id).await.expect("load"), None);
    // The old leader's lease is gone with it: fenced, it steps down.
    assert!(matches!(
        coord.renew(&old, TIMEOUT).await,
        Err(CoordError::Fenced { current: None, .. })
    ));
    assert!(matches!(
        coord.store(&old, &doc(b"stale")).await,
        Err(CoordError::Fenced { .. })
    ));
    // The next lease and the next version are still above every earlier one.
    let new = lead(&coord, id, "leader-2", Duration::from_secs(30)).await;
    assert!(
        new.generation > old.generation,
        "{new:?} after {old:?} across a data loss"
    );
    let v2 = coord.store(&new, &doc(b"after")).await.expect("store");
    assert!(v2 > v1, "version {v2} after {v1} across a data loss");
    // And the feed works again.
    wait_for(&mut events, Event::Saved(v2), "save after the restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_with_persistence_keeps_leases_documents_and_counters() {
    let mut server = RedisServer::builder().persistent(true).start();
    let coord = coordinator(&server.url()).await;
    let follower = coordinator(&server.url()).await;
    let id = "oauth2:durable";
    let lease = lead(&coord, id, "leader", Duration::from_secs(30)).await;
    let v1 = coord.store(&lease, &doc(b"kept")).await.expect("store");
    let member = Member {
        id: "leader".into(),
        leader: true,
        about: "host-1 pid 7".into(),
        seen_ago: Duration::ZERO,
    };
    coord
        .heartbeat(id, &member, Duration::from_secs(30))
        .await
        .expect("heartbeat");
    let txn = coord.pace("U1234").await.expect("pace");
    txn.commit(b"budget".to_vec()).await.expect("commit");
    let mut events = follower.subscribe(id).await.expect("subscribe");

    server.kill();
    assert_fails_fast(&coord, &lease).await;
    server.start_again();

    wait_for(&mut events, Event::Resync, "resync after the crash").await;
    let stored = eventually("load", || coord.load(id))
        .await
        .expect("doc kept");
    assert_eq!(
        (stored.bytes.as_slice(), stored.version, stored.generation),
        (&b"kept"[..], v1, lease.generation)
    );
    let info = follower.lease_info(id).await.expect("info").expect("held");
    assert_eq!(
        (info.holder.as_str(), info.generation),
        ("leader", lease.generation)
    );
    assert!(info.expires_in > Duration::from_secs(20), "{info:?}");
    // The leader carries on under the same lease.
    coord
        .renew(&lease, Duration::from_secs(30))
        .await
        .expect("renew");
    let v2 = coord.store(&lease, &doc(b"next")).await.expect("store");
    assert!(v2 > v1);
    wait_for(&mut events, Event::Saved(v2), "save after the crash").await;
    assert_eq!(follower.members(id).await.expect("members").len(), 1);
    let txn = follower.pace("U1234").await.expect("pace");
    assert_eq!(txn.current(), Some(&b"budget"[..]));
    drop(txn);
    // The generation counter survived too.
    coord.release(&lease).await.expect("release");
    let next = lead(&follower, id, "follower", Duration::from_secs(30)).await;
    assert!(next.generation > lease.generation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_times_out_and_is_used_again_when_it_answers() {
    let mut server = RedisServer::start();
    let coord = coordinator(&server.url()).await;
    let id = "oauth2:hung";
    let lease = lead(&coord, id, "leader", Duration::from_secs(60)).await;
    coord.store(&lease, &doc(b"one")).await.expect("store");
    let mut events = coord.subscribe(id).await.expect("subscribe");

    // Connections stay open, nothing answers: every call gives up within its timeouts.
    server.pause();
    assert_fails_fast(&coord, &lease).await;
    server.resume();

    let two = doc(b"two");
    let v = eventually("store", || coord.store(&lease, &two)).await;
    assert_eq!(
        coord.load(id).await.expect("load").expect("doc").bytes,
        b"two"
    );
    wait_for(&mut events, Event::Saved(v), "the feed still delivers").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_feed_is_noticed_by_its_ping_and_resynced() {
    let mut server = RedisServer::start();
    let coord = coordinator(&server.url()).await;
    let id = "oauth2:silent";
    let mut events = coord.subscribe(id).await.expect("subscribe");
    // Frozen longer than the feed's ping interval plus its timeout: the listener gives up on
    // the connection and reconnects once the server answers again.
    server.pause();
    tokio::time::sleep(Duration::from_secs(6) + 2 * TIMEOUT).await;
    server.resume();
    wait_for(&mut events, Event::Resync, "resync after a silent feed").await;
    let lease = lead(&coord, id, "leader", Duration::from_secs(30)).await;
    let v = coord.store(&lease, &doc(b"x")).await.expect("store");
    wait_for(&mut events, Event::Saved(v), "events after the resync").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_pacing_holder_blocks_others_only_until_its_lock_expires() {
    let server = RedisServer::start();
    let fleet = |ttl: Duration| {
        RedisCoordinator::builder(&server.url())
            .connect_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .pace_lock_ttl(ttl)
            .pace_wait(Duration::from_secs(5))
            .connect()
    };
    let crashed = fleet(Duration::from_secs(1)).await.expect("connect");
    let other = fleet(Duration::from_secs(1)).await.expect("connect");
    let first = crashed.pace("U1").await.expect("pace");
    first.commit(b"v1".to_vec()).await.expect("commit");
    // Taken, then the process dies: nothing releases the lock.
    let txn = crashed.pace("U1").await.expect("pace");
    std::mem::forget(txn);
    let started = Instant::now();
    let txn = other.pace("U1").await.expect("pace after the lock expired");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(4000),
        "waited {waited:?} for a 1 s lock"
    );
    assert_eq!(txn.current(), Some(&b"v1"[..]));
    txn.commit(b"v2".to_vec()).await.expect("commit");

    // A holder slower than its lock loses its commit; the one that took over wins.
    let slow = crashed.pace("U2").await.expect("pace");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let fast = other.pace("U2").await.expect("pace");
    let err = slow
        .commit(b"slow".to_vec())
        .await
        .expect_err("the lock expired");
    assert!(err.is_transient(), "{err}");
    fast.commit(b"fast".to_vec()).await.expect("commit");
    let check = other.pace("U2").await.expect("pace");
    assert_eq!(check.current(), Some(&b"fast"[..]));
    drop(check);

    // A holder that never lets go makes the others give up, with a clear error.
    let hog = fleet(Duration::from_secs(30)).await.expect("connect");
    let held = hog.pace("U3").await.expect("pace");
    let impatient = RedisCoordinator::builder(&server.url())
        .pace_wait(Duration::from_millis(300))
        .connect()
        .await
        .expect("connect");
    let started = Instant::now();
    let err = impatient.pace("U3").await.err().expect("gives up");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&err, CoordError::Unavailable { detail, .. } if detail.contains("pacing lock of account U3")),
        "{err}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_used_and_never_shown() {
    let server = RedisServer::builder().password("hunter2-s3cret").start();
    let url = server.url();
    assert!(url.contains("hunter2-s3cret"));
    let coord = coordinator(&url).await;
    assert_eq!(
        coord.describe(),
        format!("redis://127.0.0.1:{}/0", server.port())
    );
    assert!(!format!("{coord:?}").contains("s3cret"));
    let lease = lead(&coord, "oauth2:pw", "h", Duration::from_secs(5)).await;
    coord.store(&lease, &doc(b"x")).await.expect("store");

    let wrong = url.replace("hunter2-s3cret", "wrong-s3cret");
    let err = RedisCoordinator::connect(&wrong)
        .await
        .expect_err("refused");
    let shown = err.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(matches!(err, CoordError::Config(_)), "{shown}");
    let none = url.replace(":hunter2-s3cret@", "");
    let err = RedisCoordinator::connect(&none).await.expect_err("refused");
    assert!(matches!(err, CoordError::Config(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_fails_at_connect_quickly() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let started = Instant::now();
    let err = RedisCoordinator::builder(&url)
        .connect_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect_err("nothing listens");
    assert!(started.elapsed() < FAIL_FAST, "{:?}", started.elapsed());
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("127.0.0.1:{}", server.port()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_or_oversized_values_are_refused_not_read() {
    let server = RedisServer::start();
    let coord = coordinator(&server.url()).await;
    let client = redis::Client::open(server.url()).expect("client");
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection");
    let set = |args: Vec<Vec<u8>>| {
        let mut cmd = redis::cmd(std::str::from_utf8(&args[0]).expect("utf-8"));
        for a in &args[1..] {
            cmd.arg(a.as_slice());
        }
        cmd
    };
    // A document larger than allowed, written behind ibauth's back.
    let big = vec![7u8; ibauth::coord::MAX_DOC_LEN + 1];
    set(vec![
        b"HSET".to_vec(),
        b"ibauth:{oauth2:big}:doc".to_vec(),
        b"key_id".to_vec(),
        b"k1".to_vec(),
        b"bytes".to_vec(),
        big,
        b"version".to_vec(),
        b"1".to_vec(),
        b"generation".to_vec(),
        b"1".to_vec(),
    ])
    .exec_async(&mut raw)
    .await
    .expect("hset");
    let err = coord.load("oauth2:big").await.expect_err("too large");
    assert!(matches!(err, CoordError::Corrupt { .. }), "{err}");
    // A lease key of the wrong type, and one without a generation.
    set(vec![
        b"LPUSH".to_vec(),
        b"ibauth:{oauth2:list}:lease".to_vec(),
        b"x".to_vec(),
    ])
    .exec_async(&mut raw)
    .await
    .expect("lpush");
    let err = coord
        .acquire("oauth2:list", "h", TIMEOUT)
        .await
        .expect_err("wrong type");
    assert!(matches!(err, CoordError::Corrupt { .. }), "{err}");
    set(vec![
        b"SET".to_vec(),
        b"ibauth:{oauth2:odd}:lease".to_vec(),
        b"nogeneration".to_vec(),
    ])
    .exec_async(&mut raw)
    .await
    .expect("set");
    let err = coord
        .acquire("oauth2:odd", "h", TIMEOUT)
        .await
        .expect_err("no generation");
    assert!(matches!(err, CoordError::Corrupt { .. }), "{err}");
    // A foreign message on the channel is ignored; the feed goes on.
    let mut events = coord.subscribe("oauth2:feed").await.expect("subscribe");
    for junk in [&b"saved x\noauth2:feed"[..], b"\xff\xfe", b"hello"] {
        redis::cmd("PUBLISH")
            .arg("ibauth:events")
            .arg(junk)
            .exec_async(&mut raw)
            .await
            .expect("publish");
    }
    coord
        .request_recovery("oauth2:feed")
        .await
        .expect("request");
    assert_eq!(
        next_event(&mut events, "after junk").await,
        Event::RecoveryRequested
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_keep_fleets_apart() {
    let server = RedisServer::start();
    let blue = RedisCoordinator::builder(&server.url())
        .key_prefix("blue:")
        .connect()
        .await
        .expect("connect");
    let green = RedisCoordinator::builder(&server.url())
        .key_prefix("green:")
        .connect()
        .await
        .expect("connect");
    let mut green_events = green.subscribe("oauth2:same").await.expect("subscribe");
    let a = lead(&blue, "oauth2:same", "blue-leader", Duration::from_secs(30)).await;
    let b = lead(
        &green,
        "oauth2:same",
        "green-leader",
        Duration::from_secs(30),
    )
    .await;
    blue.store(&a, &doc(b"blue")).await.expect("store");
    assert_eq!(green.load("oauth2:same").await.expect("load"), None);
    let v = green.store(&b, &doc(b"green")).await.expect("store");
    assert_eq!(
        next_event(&mut green_events, "own fleet").await,
        Event::Saved(v)
    );
    assert_eq!(blue.identities().await.expect("ids"), ["oauth2:same"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    let material = tls_files();
    let server = RedisServer::builder().tls(material.files.clone()).start();
    let url = server.url().replace("127.0.0.1", "localhost");
    assert!(url.starts_with("rediss://"));
    let coord = RedisCoordinator::builder(&url)
        .tls_root_certificates(material.ca_pem.clone().into_bytes())
        .connect_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect("connect over TLS");
    assert!(coord.describe().starts_with("rediss://localhost:"));
    let id = "oauth2:tls";
    let mut events = coord.subscribe(id).await.expect("subscribe");
    let lease = lead(&coord, id, "leader", Duration::from_secs(30)).await;
    let v = coord.store(&lease, &doc(b"over tls")).await.expect("store");
    assert_eq!(
        next_event(&mut events, "save over TLS").await,
        Event::Saved(v)
    );
    assert_eq!(
        coord.load(id).await.expect("load").expect("doc").bytes,
        b"over tls"
    );
    // Without the CA (the system's roots only), the server is not trusted.
    let err = RedisCoordinator::builder(&url)
        .connect_timeout(TIMEOUT)
        .response_timeout(TIMEOUT)
        .connect()
        .await
        .expect_err("untrusted");
    assert!(!err.to_string().is_empty());
    let err = RedisCoordinator::connect(&format!("{url}#insecure"))
        .await
        .expect_err("insecure refused");
    assert!(matches!(err, CoordError::Config(_)), "{err}");
}

struct Material {
    files: TlsFiles,
    ca_pem: String,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throw-away CA and a certificate for localhost, as files redis-server reads.
fn tls_files() -> Material {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().expect("key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let dir = std::env::temp_dir().join(format!(
        "ibauth-redis-tls-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    Material {
        files: TlsFiles {
            cert: write("server.pem", &cert.pem()),
            key: write("server.key", &key.serialize_pem()),
            ca: write("ca.pem", &ca.pem()),
        },
        ca_pem: ca.pem(),
        _dir: TempDir(dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unix_socket_works_too() {
    let socket = std::env::temp_dir().join(format!("ibauth-redis-{}.sock", std::process::id()));
    let server = RedisServer::builder()
        .arg("--unixsocket")
        .arg(&socket.to_string_lossy())
        .arg("--unixsocketperm")
        .arg("700")
        .start();
    let url = format!("redis+unix://{}", socket.display());
    let coord = coordinator(&url).await;
    assert_eq!(coord.describe(), url);
    let id = "oauth2:socket";
    let mut events = coord.subscribe(id).await.expect("subscribe");
    let lease = lead(&coord, id, "leader", Duration::from_secs(30)).await;
    let v = coord.store(&lease, &doc(b"local")).await.expect("store");
    assert_eq!(next_event(&mut events, "save").await, Event::Saved(v));
    drop(server);
    let _ = std::fs::remove_file(&socket);
}
