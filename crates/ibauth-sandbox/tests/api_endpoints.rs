//! The non-auth Web API endpoints over real HTTP, logged in by both methods through the real
//! ibauth clients: answer shapes, the same authentication as the brokerage session (bearer or
//! OAuth 1.0a signature over the URL without its query), "no bridge" before `ssodh/init`, and
//! orders recorded exactly once with their body echoed.

mod api_common;
mod common;

use api_common::{Auth, BOTH, Session, no_bridge, not_authenticated, sandbox};
use axum::http::{HeaderValue, Method};
use serde_json::{Value, json};

fn is_account(id: &str) -> bool {
    id.len() == 8 && id.starts_with('U') && id[1..].bytes().all(|b| b.is_ascii_digit())
}

#[tokio::test]
async fn accounts_answer_in_ibkrs_shape_for_both_methods() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        let account = session.expected_account().await;
        assert!(is_account(&account), "{account}");

        let reply = session.get("iserver/accounts").await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        let body = &reply.body;
        assert_eq!(body["accounts"], json!([account]));
        assert_eq!(body["selectedAccount"], json!(account));
        assert_eq!(body["aliases"][&account], json!(account));
        assert_eq!(body["isPaper"], json!(false));
        assert!(body["acctProps"][&account].is_object());
        assert!(body["sessionId"].as_str().is_some_and(|s| !s.is_empty()));

        let reply = session.get("portfolio/accounts").await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        let list = reply.body.as_array().expect("an array");
        assert_eq!(list.len(), 1);
        let entry = &list[0];
        assert_eq!(entry["id"], json!(account));
        assert_eq!(entry["accountId"], json!(account));
        assert_eq!(entry["accountTitle"], json!(session.user()));
        assert_eq!(entry["type"], json!("INDIVIDUAL"));
        assert_eq!(entry["currency"], json!("USD"));

        // Derived from the user alone: a second sandbox gives the same account.
        let again = Session::connect(auth, sandbox().await).await;
        assert_eq!(
            again.get("iserver/accounts").await.body["selectedAccount"],
            json!(account)
        );
        assert_eq!(session.sandbox.counters().api_calls, 2);
        assert_eq!(session.sandbox.counters().rejections, 0);
    }
}

#[tokio::test]
async fn a_snapshot_has_one_object_per_conid_with_the_fields_asked_for() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        let path = "iserver/marketdata/snapshot?conids=265598,8314&fields=31,84,86";
        let reply = session.get(path).await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        let list = reply.body.as_array().expect("an array");
        assert_eq!(list.len(), 2);
        for (entry, conid) in list.iter().zip([265598u64, 8314]) {
            assert_eq!(entry["conid"], json!(conid));
            assert_eq!(entry["conidEx"], json!(conid.to_string()));
            assert!(entry["_updated"].as_u64().is_some_and(|t| t > 0));
            let price = |field: &str| -> f64 {
                entry[field]
                    .as_str()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("field {field} of {entry}"))
            };
            let (last, bid, ask) = (price("31"), price("84"), price("86"));
            assert!(bid < last && last < ask, "{entry}");
            assert!(entry.get("55").is_none(), "only the fields asked for");
        }
        assert_ne!(list[0]["31"], list[1]["31"], "prices differ by contract");
        // Deterministic: the same question, the same prices.
        let again = session.get(path).await;
        for (a, b) in list.iter().zip(again.body.as_array().unwrap()) {
            for field in ["31", "84", "86"] {
                assert_eq!(a[field], b[field]);
            }
        }
        // Duplicates are answered once; no fields means the last price.
        let reply = session
            .get("iserver/marketdata/snapshot?conids=8314,8314")
            .await;
        assert_eq!(reply.status, 200);
        let list = reply.body.as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["31"], again.body[1]["31"]);
        assert_eq!(session.sandbox.counters().api_calls, 3);
    }
}

#[tokio::test]
async fn garbled_snapshot_queries_are_refused() {
    let session = Session::connect(Auth::Oauth2, sandbox().await).await;
    let hundred: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let hundred_and_one: Vec<String> = (1..=101).map(|i| i.to_string()).collect();
    let long = format!("conids=1&fields={}", "1,".repeat(2100));
    for query in [
        "",
        "fields=31",
        "conids=",
        "conids=abc",
        "conids=1,,2",
        "conids=0",
        "conids=-5",
        "conids=99999999999999999999999",
        "conids=1&fields=x",
        &format!("conids={}", hundred_and_one.join(",")),
        &long,
    ] {
        let reply = session
            .get(&format!("iserver/marketdata/snapshot?{query}"))
            .await;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let message = reply.body["error"].as_str().unwrap_or_default();
        assert!(message.starts_with("Bad Request: "), "{query}: {reply:?}");
        assert_eq!(reply.body["statusCode"], json!(400));
    }
    let reply = session
        .get(&format!(
            "iserver/marketdata/snapshot?conids={}",
            hundred.join(",")
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.as_array().unwrap().len(), 100);
    // Percent-encoded commas are the same list.
    let reply = session
        .get("iserver/marketdata/snapshot?conids=265598%2C8314&fields=31")
        .await;
    assert_eq!(reply.body.as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn the_query_is_not_signed_but_the_path_and_method_are() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        let with_query = session.url("iserver/marketdata/snapshot?conids=265598&fields=31");
        let without_query = session.url("iserver/marketdata/snapshot");
        // Signed over the URL without its query, as ibind signs, and sent with it.
        let header = session.authorization(&Method::GET, &without_query);
        let reply = session
            .send(Method::GET, &with_query, Some(header), None)
            .await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        assert_eq!(reply.body[0]["conid"], json!(265598));

        if auth == Auth::Oauth1a {
            // A signature made for another path or another method does not verify.
            let other_path = session.url("portfolio/accounts");
            let header = session.authorization(&Method::GET, &other_path);
            let reply = session
                .send(Method::GET, &with_query, Some(header), None)
                .await;
            assert_eq!(reply.status, 401, "{reply:?}");
            assert_eq!(reply.body["error"], json!("invalid signature"));
            let header = session.authorization(&Method::POST, &without_query);
            let reply = session
                .send(Method::GET, &with_query, Some(header), None)
                .await;
            assert_eq!(reply.status, 401, "{reply:?}");
            assert_eq!(reply.body["error"], json!("invalid signature"));
        }

        // A tampered signature (or bearer) is refused.
        let header = session.authorization(&Method::GET, &with_query);
        let tampered = tamper(&header);
        let reply = session
            .send(Method::GET, &with_query, Some(tampered), None)
            .await;
        assert_eq!(reply.status, 401, "{auth:?}: {reply:?}");
        let expected = match auth {
            Auth::Oauth2 => not_authenticated(),
            Auth::Oauth1a => json!({"error": "invalid signature", "statusCode": 401}),
        };
        assert_eq!(reply.body, expected);
        assert_eq!(session.sandbox.counters().api_calls, 1);
    }
}

/// `header` with one character of the signature (OAuth 1.0a) or the bearer (OAuth 2.0) changed.
fn tamper(header: &HeaderValue) -> HeaderValue {
    let text = header.to_str().unwrap();
    let at = match text.find("oauth_signature=\"") {
        Some(i) => i + "oauth_signature=\"".len(),
        None => "Bearer ".len(),
    };
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
    HeaderValue::from_bytes(&bytes).unwrap()
}

#[tokio::test]
async fn unauthenticated_calls_get_401() {
    let session = Session::connect(Auth::Oauth2, sandbox().await).await;
    let account = session.expected_account().await;
    let order_path = format!("iserver/account/{account}/orders");
    for (method, path) in [
        (Method::GET, "iserver/accounts"),
        (Method::GET, "portfolio/accounts"),
        (Method::GET, "iserver/marketdata/snapshot?conids=8314"),
        (Method::GET, "iserver/account/orders"),
        (Method::POST, order_path.as_str()),
    ] {
        let url = session.url(path);
        let body = Some(br#"{"orders":[{"conid":8314}]}"#.to_vec());
        let reply = session.send(method.clone(), &url, None, body.clone()).await;
        assert_eq!((reply.status, &reply.body), (401, &not_authenticated()));
        let bogus = HeaderValue::from_static("Bearer 0123456789abcdef");
        let reply = session.send(method, &url, Some(bogus), body).await;
        assert_eq!((reply.status, &reply.body), (401, &not_authenticated()));
    }
    let counters = session.sandbox.counters();
    assert_eq!((counters.api_calls, counters.orders_placed), (0, 0));
    assert_eq!(counters.rejections, 10);
    assert!(session.sandbox.orders().is_empty());
}

#[tokio::test]
async fn iserver_needs_the_brokerage_session_portfolio_does_not() {
    for auth in BOTH {
        let mut session = Session::without_bridge(auth, sandbox().await).await;
        let account = session.expected_account().await;
        let order = json!({"orders": [{"conid": 8314, "side": "BUY", "quantity": 1}]});
        let order_path = format!("iserver/account/{account}/orders");
        let iserver_calls = async |session: &Session| {
            vec![
                session.get("iserver/accounts").await,
                session
                    .get("iserver/marketdata/snapshot?conids=8314&fields=31")
                    .await,
                session.get("iserver/account/orders").await,
                session.call(Method::POST, &order_path, Some(&order)).await,
            ]
        };
        for reply in iserver_calls(&session).await {
            assert_eq!((reply.status, &reply.body), (400, &no_bridge()), "{auth:?}");
        }
        let reply = session.get("portfolio/accounts").await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        assert!(session.sandbox.orders().is_empty());

        session.init().await;
        for reply in iserver_calls(&session).await {
            assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        }
        // A dropped brokerage session is no bridge again, until the next init.
        session.sandbox.drop_session(session.user());
        let reply = session.get("iserver/accounts").await;
        assert_eq!((reply.status, &reply.body), (400, &no_bridge()));
        assert_eq!(session.get("portfolio/accounts").await.status, 200);
        let counters = session.sandbox.counters();
        assert_eq!(counters.api_calls, 6, "{auth:?}");
        assert_eq!(counters.orders_placed, 1);
    }
}

#[tokio::test]
async fn orders_are_recorded_once_and_echoed_back() {
    for auth in BOTH {
        let session = Session::connect(auth, sandbox().await).await;
        let account = session.expected_account().await;
        let path = format!("iserver/account/{account}/orders");
        let first = json!({
            "acctId": account, "conid": 265598, "cOID": "my-order-1", "orderType": "LMT",
            "price": 185.5, "side": "BUY", "tif": "DAY", "quantity": 10,
            "extra": {"nested": [1, 2, 3]}
        });
        let second = json!({"conid": 8314, "orderType": "MKT", "side": "SELL", "quantity": 3});
        let request = json!({"orders": [first, second]});
        let reply = session.call(Method::POST, &path, Some(&request)).await;
        assert_eq!(reply.status, 200, "{auth:?}: {reply:?}");
        let replies = reply.body.as_array().expect("an array");
        assert_eq!(replies.len(), 2);
        assert_eq!(replies[0]["order"], first, "the order echoed as sent");
        assert_eq!(replies[1]["order"], second);
        assert_eq!(replies[0]["cOID"], json!("my-order-1"));
        assert!(replies[1].get("cOID").is_none());
        for r in replies {
            assert_eq!(r["order_status"], json!("Submitted"));
            assert_eq!(r["encrypt_message"], json!("1"));
        }
        let ids: Vec<&str> = replies
            .iter()
            .map(|r| r["order_id"].as_str().expect("order_id"))
            .collect();
        assert_ne!(ids[0], ids[1]);

        let placed = session.sandbox.orders();
        assert_eq!(placed.len(), 2);
        assert_eq!(
            placed
                .iter()
                .map(|o| o.order_id.as_str())
                .collect::<Vec<_>>(),
            ids
        );
        assert_eq!(placed[0].order, first);
        assert_eq!(placed[1].order, second);
        assert!(placed.iter().all(|o| o.account == account));
        assert!(placed.iter().all(|o| o.credential == session.user()));

        // A retry with the same cOID is refused and places nothing.
        let retry = json!({"orders": [first]});
        let reply = session.call(Method::POST, &path, Some(&retry)).await;
        assert_eq!(reply.status, 400, "{reply:?}");
        assert_eq!(
            reply.body["error"],
            json!("Local order ID=my-order-1 is already registered.")
        );
        assert_eq!(session.sandbox.orders().len(), 2);

        let reply = session.get("iserver/account/orders").await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body["snapshot"], json!(true));
        let listed = reply.body["orders"].as_array().expect("orders");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["orderId"], json!(ids[0].parse::<u64>().unwrap()));
        assert_eq!(listed[0]["cOID"], json!("my-order-1"));
        assert_eq!(listed[0]["status"], json!("Submitted"));
        assert_eq!(listed[0]["conid"], json!(265598));
        assert_eq!(listed[0]["side"], json!("BUY"));
        assert_eq!(listed[0]["totalSize"], json!(10));
        assert_eq!(listed[0]["acct"], json!(account));
        assert_eq!(listed[1]["orderId"], json!(ids[1].parse::<u64>().unwrap()));
        assert!(listed[1].get("cOID").is_none());

        // The same list for a test in another process.
        let url = format!("{}/__sandbox/orders", session.sandbox.base_url());
        let admin: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(admin[0]["order_id"], json!(ids[0]));
        assert_eq!(admin[1]["order"], second);

        let counters = session.sandbox.counters();
        assert_eq!(counters.orders_placed, 2, "{auth:?}");
        assert_eq!(counters.api_calls, 2);
        assert_eq!(counters.rejections, 1);
    }
}

#[tokio::test]
async fn bad_order_requests_are_refused_and_place_nothing() {
    let session = Session::connect(Auth::Oauth1a, sandbox().await).await;
    let account = session.expected_account().await;
    let path = format!("iserver/account/{account}/orders");
    let url = session.url(&path);
    let post = async |body: Vec<u8>| {
        let header = session.authorization(&Method::POST, &url);
        session
            .send(Method::POST, &url, Some(header), Some(body))
            .await
    };
    for (body, message) in [
        (b"not json".to_vec(), "Bad Request: body is not JSON"),
        (b"".to_vec(), "Bad Request: body is not JSON"),
        (
            br#"{"order":[{"conid":1}]}"#.to_vec(),
            "Bad Request: `orders` must be a non-empty array",
        ),
        (
            br#"{"orders":[]}"#.to_vec(),
            "Bad Request: `orders` must be a non-empty array",
        ),
        (
            br#"{"orders":[{"conid":1}, 7]}"#.to_vec(),
            "Bad Request: every order must be an object",
        ),
        (
            br#"{"orders":[{"conid":1,"acctId":"U0000001"}]}"#.to_vec(),
            "Bad Request: acctId does not match the account of the path",
        ),
        (
            br#"{"orders":[{"cOID":"x"},{"cOID":"x"}]}"#.to_vec(),
            "Local order ID=x is already registered.",
        ),
    ] {
        let reply = post(body).await;
        assert_eq!(reply.status, 400, "{message}: {reply:?}");
        assert_eq!(reply.body["error"], json!(message));
    }
    // Over 64 KiB.
    let big = format!(
        r#"{{"orders":[{{"conid":1,"note":"{}"}}]}}"#,
        "x".repeat(70_000)
    );
    let reply = post(big.into_bytes()).await;
    assert_eq!(reply.status, 413, "{reply:?}");
    assert_eq!(reply.body["statusCode"], json!(413));

    // Another user's account.
    let other = session.url("iserver/account/U1234567/orders");
    let header = session.authorization(&Method::POST, &other);
    let body = br#"{"orders":[{"conid":1}]}"#.to_vec();
    let reply = session
        .send(Method::POST, &other, Some(header), Some(body))
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Forbidden")
    );

    assert!(session.sandbox.orders().is_empty());
    let counters = session.sandbox.counters();
    assert_eq!((counters.orders_placed, counters.api_calls), (0, 0));
    let reply = session.get("iserver/account/orders").await;
    assert_eq!(reply.body["orders"], json!([]));
}

#[tokio::test]
async fn one_user_never_sees_or_trades_anothers_orders() {
    let sandbox = sandbox().await;
    let alice = Session::connect(Auth::Oauth2, sandbox.clone()).await;
    let bob = Session::connect(Auth::Oauth1a, sandbox.clone()).await;
    let (alice_account, bob_account) =
        (alice.expected_account().await, bob.expected_account().await);
    assert_ne!(alice_account, bob_account);
    let order = json!({"orders": [{"conid": 8314, "cOID": "same-id"}]});
    let alice_path = format!("iserver/account/{alice_account}/orders");
    let bob_path = format!("iserver/account/{bob_account}/orders");
    assert_eq!(
        alice
            .call(Method::POST, &alice_path, Some(&order))
            .await
            .status,
        200
    );

    let reply = bob.call(Method::POST, &alice_path, Some(&order)).await;
    assert_eq!(reply.status, 403, "{reply:?}");
    let reply = bob.get("iserver/account/orders").await;
    assert_eq!(reply.body["orders"], json!([]));
    // Local order ids are per account.
    assert_eq!(
        bob.call(Method::POST, &bob_path, Some(&order)).await.status,
        200
    );

    for (session, account) in [(&alice, &alice_account), (&bob, &bob_account)] {
        let listed = session.get("iserver/account/orders").await.body["orders"].clone();
        assert_eq!(listed.as_array().map(Vec::len), Some(1));
        assert_eq!(listed[0]["acct"], json!(account));
    }
    let placed = sandbox.orders();
    assert_eq!(placed.len(), 2);
    assert_eq!(
        (placed[0].credential.as_str(), placed[1].credential.as_str()),
        (common::USER, api_common::OAUTH1A_USER)
    );
    assert_eq!(sandbox.counters().orders_placed, 2);
}
