//! Sessions as members of one fleet (one process here, through the in-memory coordinator —
//! the PostgreSQL and Redis stores and separate hosts are tested in their crates and in the
//! CLI's fleet tests), against the sandbox over real HTTP: one login and one tickler for the
//! whole fleet, followers that adopt the leader's tokens and ask it to recover, a takeover
//! with the stored tokens when the leader goes, a leader fenced when its lease ran out, tokens
//! sealed at rest, OAuth 2.0's IP binding refused with a reason, a store that went away, and
//! budgets shared by every member.

mod api_common;
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use api_common::{Auth, BOTH, CONSUMER, OAUTH1A_USER};
use ibauth::coord::{Coordinator, Keyring, MemoryCoordinator, StoreKey};
use ibauth::oauth1a::{DhGroup, Oauth1aConfig};
use ibauth::pacing::{PacingRules, Rule};
use ibauth::policy::Policy;
use ibauth::secrecy::SecretString;
use ibauth::session::{KeepAlive, Role};
use ibauth::{AuthConfig, DecryptionKey, Error, Method, Session};
use ibauth_sandbox::{RFC3526_PRIME_2048, Sandbox};
use serde_json::Value;

const TTL: Duration = Duration::from_millis(900);

fn keyring() -> Keyring {
    static KEY: std::sync::OnceLock<StoreKey> = std::sync::OnceLock::new();
    let key = KEY
        .get_or_init(|| StoreKey::generate().expect("key"))
        .clone();
    Keyring::new(vec![key]).expect("keyring")
}

fn config(auth: Auth, sandbox: &Sandbox, public_ip: std::net::Ipv4Addr) -> AuthConfig {
    match auth {
        Auth::Oauth2 => common::config_without_public_ip(sandbox.base_url())
            .public_ip(public_ip)
            .timeout(Duration::from_secs(5))
            .build()
            .expect("config builds")
            .into(),
        Auth::Oauth1a => {
            let (signature, encryption) = api_common::consumer_key_pair();
            let (token, secret) = sandbox
                .issue_access_token(CONSUMER, OAUTH1A_USER)
                .expect("consumer registered");
            Oauth1aConfig::new(
                CONSUMER,
                token,
                SecretString::from(secret),
                signature,
                DecryptionKey::from_pem(&encryption.to_pkcs8_pem()).expect("key"),
                DhGroup::from_hex(RFC3526_PRIME_2048, 2).expect("DH group"),
            )
            .rest_url(&format!("{}/v1/api/", sandbox.base_url()))
            .expect("rest url")
            .ws_url(&format!(
                "{}/v1/api/ws",
                sandbox.base_url().replacen("http", "ws", 1)
            ))
            .expect("ws url")
            .timeout(Duration::from_secs(5))
            .into()
        }
    }
}

fn policy(pacing: PacingRules) -> Policy {
    Policy {
        tickle_interval: Duration::from_millis(250),
        jitter: Duration::ZERO,
        min_backoff: Duration::from_millis(100),
        pacing,
        ..Policy::default()
    }
}

/// A member of the fleet `coord` (same identity as every other member built from `config`).
fn member(config: AuthConfig, coord: &MemoryCoordinator, keyring: Keyring) -> Session {
    member_with_ttl(config, coord, keyring, TTL)
}

fn member_with_ttl(
    config: AuthConfig,
    coord: &MemoryCoordinator,
    keyring: Keyring,
    ttl: Duration,
) -> Session {
    Session::builder(config)
        .policy(policy(PacingRules::unlimited()))
        .fleet(Arc::new(coord.clone()), keyring)
        .lease_ttl(ttl)
        .follower_wait(Duration::from_secs(5))
        .build()
        .expect("session builds")
}

/// The OAuth 1.0a members must share one access token (one identity): the config is built
/// once and cloned.
fn members(auth: Auth, sandbox: &Sandbox, coord: &MemoryCoordinator, n: usize) -> Vec<Session> {
    let config = config(auth, sandbox, common::LOCALHOST);
    (0..n)
        .map(|_| member(config.clone(), coord, keyring()))
        .collect()
}

fn logins(sandbox: &Sandbox, auth: Auth) -> u64 {
    let c = sandbox.counters();
    match auth {
        Auth::Oauth2 => c.access_tokens,
        Auth::Oauth1a => c.live_session_tokens,
    }
}

async fn accounts_ok(session: &Session) {
    let accounts: Value = session
        .get("iserver/accounts")
        .await
        .expect("iserver/accounts")
        .json()
        .expect("JSON");
    assert!(accounts["selectedAccount"].is_string(), "{accounts}");
}

async fn eventually(what: &str, within: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn leaders(keeps: &[&KeepAlive]) -> Vec<usize> {
    keeps
        .iter()
        .enumerate()
        .filter(|(_, k)| matches!(k.session().role(), Some(Role::Leader { .. })))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_log_in_once_tickle_from_one_and_hand_over_without_a_new_login() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let coord = MemoryCoordinator::new();
        let fleet = members(auth, &sandbox, &coord, 3);

        // All three call at once: one logs in, the others wait for its tokens.
        futures_util::future::join_all(fleet.iter().map(accounts_ok)).await;
        assert_eq!(
            logins(&sandbox, auth),
            1,
            "{auth:?}: one login for the fleet"
        );

        let keeps: Vec<KeepAlive> = fleet
            .iter()
            .map(|s| s.keep_alive().expect("keep-alive"))
            .collect();
        let refs: Vec<&KeepAlive> = keeps.iter().collect();
        eventually("one leader", Duration::from_secs(3), || {
            leaders(&refs).len() == 1
        })
        .await;
        let before = sandbox.counters().tickles;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            sandbox.counters().tickles >= before + 2,
            "{auth:?}: the leader tickles"
        );
        let leader = leaders(&refs)[0];
        for (i, k) in keeps.iter().enumerate() {
            let tickles = k.session().status().tickles;
            if i == leader {
                assert!(tickles > 0, "{auth:?}: the leader tickled");
            } else {
                assert_eq!(tickles, 0, "{auth:?}: follower {i} never tickles");
                assert_eq!(k.session().role(), Some(Role::Follower));
            }
        }
        let Some(Role::Leader { generation: first }) = keeps[leader].session().role() else {
            panic!("leader");
        };

        // The leader stops: it hands over (no logout), a follower takes the lease at once and
        // goes on with the stored tokens.
        let mut keeps = keeps;
        let stopped = keeps.remove(leader);
        let status = stopped.shutdown().await.expect("status");
        assert_eq!(
            sandbox.counters().logouts,
            0,
            "{auth:?}: handed over: {status:?}"
        );
        let refs: Vec<&KeepAlive> = keeps.iter().collect();
        eventually("a new leader", TTL * 2, || leaders(&refs).len() == 1).await;
        let new = leaders(&refs)[0];
        let Some(Role::Leader { generation: second }) = keeps[new].session().role() else {
            panic!("leader");
        };
        assert!(second > first, "{auth:?}: generation {first} then {second}");
        let before = sandbox.counters().tickles;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(
            sandbox.counters().tickles > before,
            "{auth:?}: tickles go on"
        );
        for k in &keeps {
            accounts_ok(k.session()).await;
        }
        assert_eq!(
            logins(&sandbox, auth),
            1,
            "{auth:?}: no new login after the takeover"
        );

        // The last two stop: the last member out logs out, once.
        for k in keeps {
            k.shutdown().await;
        }
        assert_eq!(sandbox.counters().logouts, 1, "{auth:?}: one logout in all");
        let identity = fleet[0].identity().to_owned();
        assert_eq!(
            coord.load(&identity).await.expect("load"),
            None,
            "forgotten"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_ran_out_is_fenced_and_follows() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let coord = MemoryCoordinator::new();
        let fleet = members(auth, &sandbox, &coord, 2);
        let a = fleet[0].keep_alive().expect("keep-alive");
        eventually("a leads", Duration::from_secs(3), || {
            matches!(a.session().role(), Some(Role::Leader { .. }))
                && a.session().status().tickles > 0
        })
        .await;
        let b = fleet[1].keep_alive().expect("keep-alive");
        eventually("b follows with tokens", Duration::from_secs(3), || {
            b.session().status().state == ibauth::session::SessionState::Authenticated
        })
        .await;
        let Some(Role::Leader { generation }) = a.session().role() else {
            panic!("a leads");
        };

        // A is "paused" past its lease: B takes over, A's next renewal is refused.
        coord.expire(fleet[0].identity());
        eventually(
            "b leads",
            TTL * 3,
            || matches!(b.session().role(), Some(Role::Leader { generation: g }) if g > generation),
        )
        .await;
        eventually("a follows", TTL * 3, || {
            a.session().role() == Some(Role::Follower)
        })
        .await;
        let stored = coord
            .load(fleet[0].identity())
            .await
            .expect("load")
            .expect("doc");
        assert!(stored.generation <= generation + 1);
        accounts_ok(a.session()).await;
        accounts_ok(b.session()).await;
        assert_eq!(
            logins(&sandbox, auth),
            1,
            "{auth:?}: B went on with A's tokens"
        );
        // Only B tickles now.
        let a_tickles = a.session().status().tickles;
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            a.session().status().tickles,
            a_tickles,
            "{auth:?}: A stopped tickling"
        );
        a.shutdown().await;
        b.shutdown().await;
    }
}

/// The member that restored the fleet's tokens before its keep-alive started may be the one
/// to take the lease: it checks them with a tickle, it does not log in over them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_restored_the_tokens_leads_without_a_new_login() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let coord = MemoryCoordinator::new();
        let fleet = members(auth, &sandbox, &coord, 2);
        accounts_ok(&fleet[0]).await;
        // The first member logged in and gave the lease back (no keep-alive); the second
        // restores what it stored.
        accounts_ok(&fleet[1]).await;
        assert_eq!(logins(&sandbox, auth), 1, "{auth:?}");
        let keep = fleet[1].keep_alive().expect("keep-alive");
        eventually("it leads and tickles", Duration::from_secs(3), || {
            matches!(keep.session().role(), Some(Role::Leader { .. }))
                && keep.session().status().tickles > 0
        })
        .await;
        assert_eq!(
            keep.session().status().state,
            ibauth::session::SessionState::Authenticated
        );
        assert_eq!(
            logins(&sandbox, auth),
            1,
            "{auth:?}: no login over the stored tokens"
        );
        keep.shutdown().await;
        assert_eq!(
            sandbox.counters().logouts,
            1,
            "{auth:?}: the only member logs out"
        );
    }
}

/// A follower stopping when no other member is left — its leader gone without handing over
/// (a crash: the lease runs out, the member list forgets it), or handing over a moment before
/// the follower's lease keeper took the lease — is the last member out: it logs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_member_out_logs_out_even_if_it_never_led() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let coord = MemoryCoordinator::new();
        let config = config(auth, &sandbox, common::LOCALHOST);
        let first = member(config.clone(), &coord, keyring());
        accounts_ok(&first).await;
        let identity = first.identity().to_owned();
        // A leader of another process, not on the member list: the follower follows it.
        let gone = coord
            .acquire(&identity, "a process that crashed", Duration::from_secs(60))
            .await
            .expect("acquire");
        assert!(matches!(gone, ibauth::coord::Acquired::Granted(_)));
        // A long lease: its keeper looks for a free lease every 2 s, so it cannot take the
        // lease between its expiry and the stop below.
        let follower = member_with_ttl(config, &coord, keyring(), Duration::from_secs(6));
        let keep = follower.keep_alive().expect("keep-alive");
        eventually("it follows", Duration::from_secs(3), || {
            keep.session().role() == Some(Role::Follower)
                && keep.session().status().state == ibauth::session::SessionState::Authenticated
        })
        .await;
        coord.expire(&identity);
        let status = keep.shutdown().await.expect("status");
        assert_eq!(status.tickles, 0, "{auth:?}: it never led");
        assert_eq!(
            sandbox.counters().logouts,
            1,
            "{auth:?}: the last member out logs out: {status:?}"
        );
        assert_eq!(
            coord.load(&identity).await.expect("load"),
            None,
            "forgotten"
        );
        assert_eq!(logins(&sandbox, auth), 1, "{auth:?}");
    }
}

/// Leader and follower stopping at the same moment: whichever decides last finds nobody to
/// hand over to, and the session is logged out once — never twice, never left logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_members_stopping_together_log_out_once() {
    for auth in BOTH {
        for round in 0..3 {
            let sandbox = api_common::sandbox().await;
            let coord = MemoryCoordinator::new();
            let fleet = members(auth, &sandbox, &coord, 2);
            let keeps: Vec<KeepAlive> = fleet
                .iter()
                .map(|s| s.keep_alive().expect("keep-alive"))
                .collect();
            let refs: Vec<&KeepAlive> = keeps.iter().collect();
            eventually("a leader that tickles", Duration::from_secs(3), || {
                leaders(&refs).len() == 1 && sandbox.counters().tickles > 0
            })
            .await;
            eventually("a follower with its tokens", Duration::from_secs(3), || {
                keeps.iter().all(|k| {
                    k.session().status().state == ibauth::session::SessionState::Authenticated
                })
            })
            .await;
            // Either one's shutdown first in line.
            let mut keeps = keeps;
            if round % 2 == 1 {
                keeps.reverse();
            }
            futures_util::future::join_all(keeps.into_iter().map(KeepAlive::shutdown)).await;
            assert_eq!(
                sandbox.counters().logouts,
                1,
                "{auth:?}, round {round}: one logout"
            );
            assert_eq!(
                coord.load(fleet[0].identity()).await.expect("load"),
                None,
                "{auth:?}, round {round}: forgotten"
            );
            assert_eq!(logins(&sandbox, auth), 1, "{auth:?}, round {round}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_followers_refused_call_is_recovered_by_the_leader() {
    for auth in BOTH {
        let sandbox = api_common::sandbox().await;
        let coord = MemoryCoordinator::new();
        let fleet = members(auth, &sandbox, &coord, 2);
        let leader = fleet[0].keep_alive().expect("keep-alive");
        eventually("a leads", Duration::from_secs(3), || {
            leader.session().status().tickles > 0
        })
        .await;
        let follower = fleet[1].clone();
        accounts_ok(&follower).await;
        assert_eq!(follower.role(), Some(Role::Follower));

        // IBKR drops the brokerage session: the follower's call is refused, the leader
        // re-initialises, the follower's call goes through — no new login.
        let user = match auth {
            Auth::Oauth2 => common::USER,
            Auth::Oauth1a => OAUTH1A_USER,
        };
        sandbox.drop_session(user);
        accounts_ok(&follower).await;
        assert_eq!(logins(&sandbox, auth), 1, "{auth:?}");

        // Every token revoked: the leader logs in again, the follower adopts the new tokens.
        sandbox.expire_tokens_now();
        accounts_ok(&follower).await;
        assert_eq!(
            logins(&sandbox, auth),
            2,
            "{auth:?}: one new login, by the leader"
        );
        assert_eq!(
            follower.status().tickles,
            0,
            "{auth:?}: the follower never tickled"
        );
        leader.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sealed_at_rest_and_a_member_without_the_key_is_told_why() {
    let sandbox = api_common::sandbox().await;
    let coord = MemoryCoordinator::new();
    let config = config(Auth::Oauth2, &sandbox, common::LOCALHOST);
    let first = member(config.clone(), &coord, keyring());
    accounts_ok(&first).await;
    let sealed = coord
        .load(first.identity())
        .await
        .expect("load")
        .expect("doc");
    for token in sandbox.issued_tokens() {
        assert!(
            !sealed
                .bytes
                .windows(token.len())
                .any(|w| w == token.as_bytes()),
            "a token is stored in clear"
        );
    }
    let stranger = member(
        config,
        &coord,
        Keyring::new(vec![StoreKey::generate().expect("key")]).expect("ring"),
    );
    let err = stranger.get("iserver/accounts").await.expect_err("no key");
    let text = err.to_string();
    assert!(text.contains(&sealed.key_id), "{text}");
    assert!(text.contains("same key file"), "{text}");
    assert_eq!(
        logins(&sandbox, Auth::Oauth2),
        1,
        "the stranger did not log in over the fleet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oauth2_follower_on_another_public_ip_is_refused_with_the_reason() {
    let sandbox = api_common::sandbox().await;
    let coord = MemoryCoordinator::new();
    let here = member(
        config(Auth::Oauth2, &sandbox, common::LOCALHOST),
        &coord,
        keyring(),
    );
    accounts_ok(&here).await;
    let elsewhere = member(
        config(Auth::Oauth2, &sandbox, "203.0.113.7".parse().expect("ip")),
        &coord,
        keyring(),
    );
    assert_eq!(elsewhere.identity(), here.identity(), "one identity");
    let err = elsewhere.get("iserver/accounts").await.expect_err("bound");
    assert!(matches!(err, Error::IpBound { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("127.0.0.1") && text.contains("203.0.113.7"),
        "{text}"
    );
    assert!(text.contains("OAuth 1.0a"), "says what works: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_go_on_while_the_store_is_away_and_nothing_is_lost() {
    let sandbox = api_common::sandbox().await;
    let coord = MemoryCoordinator::new();
    let fleet = members(Auth::Oauth1a, &sandbox, &coord, 2);
    let a = fleet[0].keep_alive().expect("keep-alive");
    let b = fleet[1].keep_alive().expect("keep-alive");
    eventually("authenticated", Duration::from_secs(3), || {
        a.session().status().tickles > 0 || b.session().status().tickles > 0
    })
    .await;
    accounts_ok(b.session()).await;
    accounts_ok(a.session()).await;
    let identity = fleet[0].identity().to_owned();
    let before = coord.load(&identity).await.expect("load").expect("doc");

    coord.set_available(false);
    for _ in 0..5 {
        accounts_ok(a.session()).await;
        accounts_ok(b.session()).await;
        tokio::time::sleep(TTL / 2).await;
    }
    coord.set_available(true);
    let refs = [&a, &b];
    eventually("a leader again", TTL * 3, || leaders(&refs).len() == 1).await;
    accounts_ok(a.session()).await;
    accounts_ok(b.session()).await;
    let after = coord.load(&identity).await.expect("load").expect("doc");
    assert_eq!(after.key_id, before.key_id);
    assert_eq!(
        logins(&sandbox, Auth::Oauth1a),
        1,
        "no login because of the outage"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_one_pacing_budget() {
    let sandbox = api_common::sandbox().await;
    let coord = MemoryCoordinator::new();
    let rules = PacingRules::unlimited().with_endpoint(Rule::new(
        Some(Method::GET),
        "/portfolio/accounts",
        "1/5s".parse().expect("limit"),
    ));
    let rules = PacingRules {
        max_wait: Duration::from_millis(500),
        ..rules
    };
    let config = config(Auth::Oauth1a, &sandbox, common::LOCALHOST);
    let paced = |keyring: Keyring| {
        Session::builder(config.clone())
            .policy(policy(rules.clone()))
            .fleet(Arc::new(coord.clone()), keyring)
            .lease_ttl(TTL)
            .build()
            .expect("session")
    };
    let a = paced(keyring());
    let b = paced(keyring());
    a.get("portfolio/accounts").await.expect("first call");
    let err = b
        .get("portfolio/accounts")
        .await
        .expect_err("the fleet's budget is spent for 5 s");
    assert!(matches!(err, Error::Paced { .. }), "{err:?}");
    assert_eq!(sandbox.counters().pacing_violations, 0);
}

/// `Session::fleet_status` (what `ibauth status` shows): the leader and its generation, every
/// member, and the document's key — the current one, or an older one after a rotation.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fleet_status_names_the_leader_the_members_and_the_documents_key() {
    let sandbox = api_common::sandbox().await;
    let coord = MemoryCoordinator::new();
    // One access token, so one identity, for every session here.
    let config = config(Auth::Oauth1a, &sandbox, common::LOCALHOST);
    let fleet: Vec<Session> = (0..2)
        .map(|_| member(config.clone(), &coord, keyring()))
        .collect();
    accounts_ok(&fleet[0]).await;
    let keeps: Vec<KeepAlive> = fleet
        .iter()
        .map(|s| s.keep_alive().expect("keep-alive"))
        .collect();
    let refs: Vec<&KeepAlive> = keeps.iter().collect();
    eventually("one leader", Duration::from_secs(3), || {
        leaders(&refs).len() == 1
    })
    .await;
    let leader = leaders(&refs)[0];
    let Some(Role::Leader { generation }) = keeps[leader].session().role() else {
        panic!("leader");
    };
    tokio::time::sleep(TTL / 2).await;
    let status = fleet[1 - leader]
        .fleet_status()
        .await
        .expect("status")
        .expect("a fleet");
    let lease = status.lease.as_ref().expect("a live lease");
    assert_eq!(lease.generation, generation);
    assert_eq!(status.members.len(), 2, "{status:?}");
    let leading: Vec<_> = status.members.iter().filter(|m| m.leader).collect();
    assert_eq!(leading.len(), 1, "{status:?}");
    assert_eq!(leading[0].id, lease.holder);
    let doc = status.document.as_ref().expect("a stored document");
    assert!(doc.current_key, "{doc:?}");
    assert_eq!(doc.key_id, keyring().current().id());
    assert!(
        !format!("{status:?}").contains("secret"),
        "no content shown"
    );

    // Rotated: a member with a new key first still reads the fleet, and sees the document
    // sealed with the older key.
    let newer = StoreKey::generate().expect("key");
    let rotated = Keyring::new(vec![newer, keyring().current().clone()]).expect("ring");
    let outsider = member(config.clone(), &coord, rotated);
    let status = outsider
        .fleet_status()
        .await
        .expect("status")
        .expect("a fleet");
    let doc = status.document.expect("a stored document");
    assert!(!doc.current_key, "{doc:?}");
    assert_eq!(doc.key_id, keyring().current().id());

    // Outside a fleet there is nothing to show.
    let alone = Session::builder(config)
        .no_store()
        .build()
        .expect("session");
    assert!(alone.fleet_status().await.expect("status").is_none());
    for k in keeps {
        let _ = k.shutdown().await;
    }
}
