//! `ibauth-gateway` against the sandbox over real HTTP: clients without credentials reach any
//! Web API endpoint through it; what must not reach IBKR is answered locally; the access list
//! refuses as IBKR's gateway does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ibauth::SigningKey;
use ibauth::policy::Policy;
use ibauth_gateway::{AccessList, Gateway, GatewayOptions, LOGIN_SUCCEEDS, LogoutMode, Running};
use ibauth_sandbox::{ClientRegistration, Sandbox};
use serde_json::Value;

const USER: &str = "gwuser";

fn key() -> SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate().expect("key"))
        .clone()
}

async fn sandbox() -> Arc<Sandbox> {
    Arc::new(
        Sandbox::builder()
            .register(
                ClientRegistration::new("GWCLIENT")
                    .key("k", &key())
                    .credential(USER),
            )
            .start()
            .await
            .expect("sandbox"),
    )
}

fn session(sandbox: &Sandbox) -> ibauth::Session {
    let config = ibauth::Config::builder()
        .client_id("GWCLIENT")
        .client_key_id("k")
        .credential(USER)
        .private_key(key())
        .base_url(sandbox.base_url())
        .public_ip(Ipv4Addr::LOCALHOST)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("config");
    ibauth::Session::builder(config)
        .policy(Policy {
            tickle_interval: Duration::from_millis(200),
            jitter: Duration::ZERO,
            ..Policy::default()
        })
        .no_store()
        .build()
        .expect("session")
}

fn options() -> GatewayOptions {
    GatewayOptions {
        listen: vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))],
        health: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
        ..GatewayOptions::default()
    }
}

async fn ready(running: &Running) {
    let http = reqwest::Client::new();
    let url = format!("http://{}/readyz", running.health_addr().expect("health"));
    for _ in 0..100 {
        if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the gateway never became ready");
}

fn base(running: &Running) -> String {
    format!("http://{}", running.addrs()[0])
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_without_credentials_use_the_session_through_the_gateway() {
    let sandbox = sandbox().await;
    let running = Gateway::new(session(&sandbox), options())
        .start()
        .await
        .expect("gateway");
    ready(&running).await;
    let http = reqwest::Client::new();
    let base = base(&running);
    for prefix in ["/v1/api", "/v1/portal"] {
        let accounts: Value = http
            .get(format!("{base}{prefix}/iserver/accounts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(accounts["accounts"].is_array(), "{prefix}: {accounts}");
        let quotes: Value = http
            .get(format!(
                "{base}{prefix}/iserver/marketdata/snapshot?conids=265598&fields=31"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(quotes[0]["conid"], 265598, "{prefix}: {quotes}");
    }
    // A client's own Authorization never reaches IBKR (the session's does).
    let reply = http
        .get(format!("{base}/v1/api/iserver/accounts"))
        .header("authorization", "Bearer nonsense")
        .header("cookie", "api=stolen")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    // An order, with its JSON body passed on.
    let account = {
        let a: Value = http
            .get(format!("{base}/v1/api/iserver/accounts"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        a["selectedAccount"].as_str().unwrap().to_owned()
    };
    let placed: Value = http
        .post(format!("{base}/v1/api/iserver/account/{account}/orders"))
        .json(
            &serde_json::json!({ "orders": [{ "conid": 1, "side": "BUY", "quantity": 1,
            "orderType": "MKT", "tif": "DAY", "cOID": "through-the-gateway" }] }),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(placed[0]["cOID"], "through-the-gateway", "{placed}");
    assert_eq!(sandbox.counters().orders_placed, 1);
    // Tickles answered from the keep-alive's; a re-authentication is the session's own.
    let tickles = sandbox.counters().tickles;
    for _ in 0..5 {
        let tickle: Value = http
            .post(format!("{base}/v1/api/tickle"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tickle["iserver"]["authStatus"]["authenticated"], true);
    }
    assert!(
        sandbox.counters().tickles <= tickles + 2,
        "client tickles do not multiply upstream"
    );
    let reauth: Value = http
        .post(format!(
            "{base}/v1/portal/iserver/reauthenticate?force=true"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(reauth["message"], "triggered");
    // A client's logout leaves the shared session alone.
    let logouts = sandbox.counters().logouts;
    let out: Value = http
        .post(format!("{base}/v1/api/logout"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(out["status"], true);
    assert_eq!(sandbox.counters().logouts, logouts);
    assert!(sandbox.has_brokerage_session(USER));
    // The status page IBeam and clients look for.
    let page = http
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(LOGIN_SUCCEEDS), "{page}");
    // Not a Web API path.
    let reply = http.get(format!("{base}/nothing")).send().await.unwrap();
    assert_eq!(reply.status(), 404);
    assert_eq!(
        sandbox.counters().access_tokens,
        1,
        "one login for all of it"
    );
    running.shutdown().await;
    assert_eq!(
        sandbox.counters().logouts,
        logouts + 1,
        "one logout at the end"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_not_allowed_gets_access_denied() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox),
        GatewayOptions {
            access: AccessList::new(&["127.0.0.1"], &["127.0.0.3"]).unwrap(),
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let from = |ip: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(IpAddr::from(ip))
            .build()
            .unwrap()
    };
    let base = base(&running);
    let allowed = from([127, 0, 0, 1])
        .get(format!("{base}/v1/api/iserver/accounts"))
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    for ip in [[127, 0, 0, 2], [127, 0, 0, 3]] {
        let refused = from(ip)
            .get(format!("{base}/v1/api/iserver/accounts"))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 404, "{ip:?}");
        assert_eq!(refused.text().await.unwrap(), "Access Denied");
    }
    let calls = sandbox.counters().api_calls;
    assert_eq!(calls, 1, "refused requests never reach IBKR");
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_pass_ends_the_session() {
    let sandbox = sandbox().await;
    let running = Gateway::new(
        session(&sandbox),
        GatewayOptions {
            logout: LogoutMode::Pass,
            ..options()
        },
    )
    .start()
    .await
    .expect("gateway");
    ready(&running).await;
    let reply = reqwest::Client::new()
        .post(format!("{}/v1/api/logout", base(&running)))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    assert_eq!(sandbox.counters().logouts, 1);
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_lets_a_request_in_flight_finish_then_logs_out_once() {
    let sandbox = sandbox().await;
    let running = Gateway::new(session(&sandbox), options())
        .start()
        .await
        .expect("gateway");
    ready(&running).await;
    let base = base(&running);
    sandbox.delay_responses(Some(Duration::from_millis(1000)));
    let logouts = sandbox.counters().logouts;
    let url = format!("{base}/v1/api/iserver/accounts");
    let in_flight = tokio::spawn(async move {
        let reply = reqwest::get(url).await?;
        let status = reply.status();
        Ok::<_, reqwest::Error>((status, reply.text().await?))
    });
    // On its way (the sandbox holds it 1 s) when the shutdown begins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!in_flight.is_finished());
    running.shutdown().await;
    // Drained: answered in full, not cut off by the shutdown.
    let (status, body) = in_flight.await.unwrap().expect("answered");
    assert_eq!(status, 200, "{body}");
    let accounts: Value = serde_json::from_str(&body).unwrap();
    assert!(accounts["accounts"].is_array(), "{accounts}");
    assert_eq!(
        sandbox.counters().logouts,
        logouts + 1,
        "one logout, after the drain"
    );
    // No longer listening.
    let refused = reqwest::get(format!("{base}/v1/api/iserver/accounts")).await;
    assert!(refused.is_err(), "{refused:?}");
}
