//! The OAuth 2.0 login end to end against the sandbox over real HTTP(S): the whole flow and its
//! bookkeeping, TLS with and without the sandbox CA, switching hosts at run time, competing
//! brokerage sessions, and the public-IP lookup. Time moves only through a shared `FixedClock`.

mod common;

use std::time::Duration;

use common::{
    LOCALHOST, T0, TempDir, USER, assert_not_ready, assert_rejected, client, clock, config,
    config_without_public_ip, registration, sandbox, sandbox_with,
};
use ibauth::secrecy::ExposeSecret;
use ibauth::{BearerAuthorizer, ConfigError, Error, Oauth2Client, Step};
use ibauth_sandbox::{Counters, Flags, Lifetimes, Sandbox};

const AUTHENTICATED: Flags = Flags {
    authenticated: true,
    competing: false,
    connected: true,
};

#[tokio::test]
async fn full_flow_connect_status_tickles_logout() {
    let clock = clock();
    // An SSO session shorter than the 24 h the client asks for, so the refinement of the
    // bearer's expiry from `sso/validate` and `tickle` is visible.
    let lifetimes = Lifetimes {
        sso_session: Duration::from_secs(3600),
        ..Lifetimes::default()
    };
    let sandbox = sandbox_with(&clock, lifetimes).await;
    let mut client = client(config(sandbox.base_url()), &clock);

    let connected = client.connect().await.unwrap();

    // ssodh/init
    let status = &connected.status;
    assert!(status.authenticated && status.connected && !status.competing);
    assert_eq!(status.message.as_deref(), Some(""));
    assert_eq!(status.mac.as_deref(), Some("98:F2:B3:23:BF:A0"));
    let server = status.server_info.as_ref().unwrap();
    assert_eq!(server.server_name.as_deref(), Some("ibauth-sandbox"));

    // sso/validate
    let validation = connected
        .validation
        .as_ref()
        .expect("OAuth 2.0 validates as part of its login");
    assert_eq!(validation.user_name.as_deref(), Some(USER));
    assert_eq!(validation.ip.as_deref(), Some("127.0.0.1"));
    assert!(validation.result);
    assert_eq!(validation.expires_ms, Some(3_600_000));
    assert!(validation.expires_ms.unwrap() > 0);
    let user_id = validation.user_id.unwrap();
    assert!(user_id > 0);

    // The tokens the client keeps.
    let access = client.access_token().unwrap();
    assert_eq!(access.token_type, "Bearer");
    assert_eq!(access.scope.as_deref(), Some("sso-sessions.write"));
    assert_eq!(access.obtained_at, T0);
    assert_eq!(access.expires_at, Some(T0 + 86_399));
    let access_token = access.token.expose_secret().to_owned();
    let bearer = client.bearer_token().unwrap();
    assert!(bearer.active);
    assert_eq!(bearer.ip, LOCALHOST);
    assert_eq!(bearer.obtained_at, T0);
    // Requested T0 + 86400, refined by EXPIRES to the sandbox's one hour.
    assert_eq!(bearer.expires_at, T0 + 3600);
    let bearer_token = bearer.token.clone();
    let issued = sandbox.issued_tokens();
    assert_eq!(issued.len(), 2);
    assert!(issued.contains(&access_token));
    assert!(issued.contains(&bearer_token.expose_secret().to_owned()));
    assert_ne!(access_token, bearer_token.expose_secret());
    assert_eq!(
        sandbox.flags_for_bearer(bearer_token.expose_secret()),
        Some(AUTHENTICATED)
    );
    assert!(sandbox.has_brokerage_session(USER));

    // auth/status
    let status = client.auth_status().await.unwrap();
    assert!(status.authenticated && status.connected && !status.competing);

    // Three tickles a minute apart: one session, always authenticated, expiry counting down.
    let mut session = None;
    for i in 1..=3u64 {
        clock.advance(60);
        let tickle = client.tickle().await.unwrap();
        assert!(!tickle.session.is_empty());
        match &session {
            None => session = Some(tickle.session.clone()),
            Some(s) => assert_eq!(&tickle.session, s, "session id changed at tickle {i}"),
        }
        let auth = tickle.auth_status();
        assert!(auth.authenticated && auth.connected && !auth.competing);
        assert!(!tickle.collision);
        assert_eq!(tickle.user_id, Some(user_id));
        assert_eq!(tickle.sso_expires_ms, Some((3600 - 60 * i) * 1000));
        assert_eq!(client.bearer_token().unwrap().expires_at, T0 + 3600);
    }

    assert_eq!(
        sandbox.counters(),
        Counters {
            access_tokens: 1,
            sso_sessions: 1,
            validates: 1,
            inits: 1,
            statuses: 1,
            tickles: 3,
            logouts: 0,
            live_session_tokens: 0,
            request_tokens: 0,
            oauth_access_tokens: 0,
            ws_connections: 0,
            rejections: 0,
            faults_injected: 0,
            api_calls: 0,
            orders_placed: 0,
            pacing_violations: 0,
            penalty_rejections: 0,
            ip_mismatches: 0,
            brokerage_takeovers: 0,
            max_concurrent_ticklers: 1,
        }
    );

    // logout ends the brokerage session and the SSO session; the client forgets the bearer.
    let logout = client.logout().await.unwrap();
    assert!(logout.status);
    assert!(!logout.already_gone);
    assert!(client.bearer_token().is_none());
    assert!(!sandbox.has_brokerage_session(USER));
    assert_eq!(sandbox.flags_for_bearer(bearer_token.expose_secret()), None);

    // Without a bearer the client refuses to call at all.
    assert_not_ready(&client.tickle().await.unwrap_err(), Step::Tickle);
    assert_not_ready(&client.logout().await.unwrap_err(), Step::Logout);
    assert_not_ready(&client.auth_status().await.unwrap_err(), Step::AuthStatus);

    // The old bearer, replayed by hand, is dead: tickle is refused, logout is "already gone".
    let old = BearerAuthorizer::new(&bearer_token).unwrap();
    let err = client.brokerage().tickle(&old).await.unwrap_err();
    let hint = assert_rejected(&err, Step::Tickle, 401, "not authenticated");
    assert!(hint.unwrap().contains("log in again"), "{hint:?}");
    let again = client.brokerage().logout(&old).await.unwrap();
    assert!(again.already_gone);
    assert!(!again.status);

    assert_eq!(
        sandbox.counters(),
        Counters {
            access_tokens: 1,
            sso_sessions: 1,
            validates: 1,
            inits: 1,
            statuses: 1,
            tickles: 3,
            logouts: 1,
            live_session_tokens: 0,
            request_tokens: 0,
            oauth_access_tokens: 0,
            ws_connections: 0,
            rejections: 2,
            faults_injected: 0,
            api_calls: 0,
            orders_placed: 0,
            pacing_violations: 0,
            penalty_rejections: 0,
            ip_mismatches: 0,
            brokerage_takeovers: 0,
            max_concurrent_ticklers: 1,
        }
    );
}

#[tokio::test]
async fn https_with_the_sandbox_ca_in_a_ca_file() {
    let sandbox = Sandbox::builder()
        .tls(true)
        .register(registration())
        .start()
        .await
        .unwrap();
    assert!(sandbox.base_url().starts_with("https://127.0.0.1:"));
    let ca = sandbox.ca_pem().unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
    let dir = TempDir::new("https-ca-file");
    let ca_file = dir.write("ca.pem", ca);

    let config = config(sandbox.base_url())
        .ca_file(&ca_file)
        .build()
        .unwrap();
    assert_eq!(config.ca_pem(), Some(ca.as_bytes()));
    let mut client = Oauth2Client::new(config).unwrap();
    let connected = client.connect().await.unwrap();
    assert!(connected.status.authenticated);
    assert_eq!(
        connected.validation.as_ref().and_then(|v| v.ip.as_deref()),
        Some("127.0.0.1")
    );
    let tickle = client.tickle().await.unwrap();
    assert!(tickle.auth_status().authenticated);
    assert!(client.logout().await.unwrap().status);

    let counters = sandbox.counters();
    assert_eq!(counters.access_tokens, 1);
    assert_eq!(counters.tickles, 1);
    assert_eq!(counters.logouts, 1);
    assert_eq!(counters.rejections, 0);
}

#[tokio::test]
async fn https_without_the_sandbox_ca_fails_certificate_verification() {
    let sandbox = Sandbox::builder()
        .tls(true)
        .register(registration())
        .start()
        .await
        .unwrap();
    // Another sandbox's CA is no better than none.
    let stranger = Sandbox::builder().tls(true).start().await.unwrap();

    for ca in [None, stranger.ca_pem()] {
        let mut builder = config(sandbox.base_url());
        if let Some(ca) = ca {
            builder = builder.ca_pem(ca);
        }
        let mut client = Oauth2Client::new(builder.build().unwrap()).unwrap();
        let err = client.connect().await.unwrap_err();
        match &err {
            Error::Network {
                step, host, detail, ..
            } => {
                assert_eq!(*step, Step::AccessToken);
                assert_eq!(*host, format!("127.0.0.1:{}", sandbox.addr().port()));
                assert!(
                    detail.to_ascii_lowercase().contains("certificate"),
                    "detail should name the certificate problem: {detail}"
                );
                assert!(detail.contains("set `ca_file`"), "{detail}");
            }
            other => panic!("expected Error::Network, got {other:?}"),
        }
        assert_eq!(err.step(), Some(Step::AccessToken));
        // A certificate that does not verify is a misconfiguration: retrying will not help.
        assert!(!err.is_transient(), "{err}");
        assert!(client.access_token().is_none());
    }
    // Nothing got through the TLS handshake.
    assert_eq!(sandbox.counters(), Counters::default());
}

#[tokio::test]
async fn host_switch_at_run_time_sends_every_later_call_to_the_new_host() {
    let clock = clock();
    let a = sandbox(&clock).await;
    let b = sandbox(&clock).await;
    let mut client = client(config(a.base_url()), &clock);

    assert!(client.connect().await.unwrap().status.authenticated);
    let a_after_connect = a.counters();
    assert_eq!(a_after_connect.access_tokens, 1);
    assert_eq!(a_after_connect.inits, 1);
    assert_eq!(b.counters(), Counters::default());

    client.set_base_url(b.base_url()).unwrap();
    assert_eq!(client.api_base().as_str(), format!("{}/", b.base_url()));
    assert_eq!(
        client.brokerage().rest_base().as_str(),
        format!("{}/v1/api/", b.base_url())
    );
    // The tokens are kept, but B never issued A's bearer: the tickle goes to B and B refuses.
    assert!(client.bearer_token().is_some());
    let err = client.tickle().await.unwrap_err();
    assert_rejected(&err, Step::Tickle, 401, "not authenticated");
    assert_eq!(b.counters().rejections, 1);

    let connected = client.connect().await.unwrap();
    assert!(connected.status.authenticated);
    assert!(client.tickle().await.unwrap().auth_status().authenticated);
    assert_eq!(
        b.counters(),
        Counters {
            access_tokens: 1,
            sso_sessions: 1,
            validates: 1,
            inits: 1,
            statuses: 0,
            tickles: 1,
            logouts: 0,
            live_session_tokens: 0,
            request_tokens: 0,
            oauth_access_tokens: 0,
            ws_connections: 0,
            rejections: 1,
            faults_injected: 0,
            api_calls: 0,
            orders_placed: 0,
            pacing_violations: 0,
            penalty_rejections: 0,
            ip_mismatches: 0,
            brokerage_takeovers: 0,
            max_concurrent_ticklers: 1,
        }
    );
    assert_eq!(
        a.counters(),
        a_after_connect,
        "A must not hear from the client"
    );
    // A still holds the first brokerage session, B the second.
    assert!(a.has_brokerage_session(USER));
    assert!(b.has_brokerage_session(USER));
}

#[tokio::test]
async fn set_domain_switches_to_a_numbered_host_and_refuses_paths() {
    let mut client = client(config("http://127.0.0.1:1"), &clock());
    assert_eq!(client.api_base().as_str(), "http://127.0.0.1:1/");

    client.set_domain("5.api.ibkr.com").unwrap();
    assert_eq!(client.api_base().as_str(), "https://5.api.ibkr.com/");
    assert_eq!(
        client.brokerage().rest_base().as_str(),
        "https://5.api.ibkr.com/v1/api/"
    );
    client.set_domain("  api.ibkr.com ").unwrap();
    assert_eq!(client.api_base().as_str(), "https://api.ibkr.com/");

    for bad in ["5.api.ibkr.com/v1", "https://5.api.ibkr.com", "", "   "] {
        match client.set_domain(bad) {
            Err(ConfigError::Invalid { key, reason }) => {
                assert_eq!(key, "domain", "for {bad:?}");
                assert!(reason.contains("host name"), "{reason}");
            }
            other => panic!("set_domain({bad:?}) should be refused, got {other:?}"),
        }
    }
    // Plain http is refused off loopback.
    let err = client.set_base_url("http://api.ibkr.com").unwrap_err();
    assert!(err.to_string().contains("plain http is refused"), "{err}");
    // Refusals leave the host as it was.
    assert_eq!(client.api_base().as_str(), "https://api.ibkr.com/");
    assert_eq!(
        client.brokerage().rest_base().as_str(),
        "https://api.ibkr.com/v1/api/"
    );
}

#[tokio::test]
async fn competing_sessions_compete_false_waits_compete_true_takes_over() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;

    let mut a = client(config(sandbox.base_url()), &clock);
    let status = a.connect().await.unwrap().status;
    assert!(status.authenticated && !status.competing);
    let a_bearer = a.bearer_token().unwrap().token.expose_secret().to_owned();

    // B, same user, does not compete: it gets an SSO session but not the brokerage session.
    let mut b = client(config(sandbox.base_url()).compete(false), &clock);
    let status = b.connect().await.unwrap().status;
    assert!(!status.authenticated, "{status:?}");
    assert!(status.competing, "{status:?}");
    assert!(status.connected);
    assert_eq!(status.message.as_deref(), Some("competing session exists"));
    let b_tickle = b.tickle().await.unwrap();
    assert!(b_tickle.collision);
    assert!(!b_tickle.auth_status().authenticated && b_tickle.auth_status().competing);

    // A keeps it.
    let tickle = a.tickle().await.unwrap();
    assert!(tickle.auth_status().authenticated && !tickle.auth_status().competing);
    assert!(!tickle.collision);
    assert_eq!(sandbox.flags_for_bearer(&a_bearer), Some(AUTHENTICATED));

    // C, same user, competes and takes the session over.
    let mut c = client(config(sandbox.base_url()).compete(true), &clock);
    let status = c.connect().await.unwrap().status;
    assert!(status.authenticated && !status.competing);
    assert_eq!(status.message.as_deref(), Some(""));

    let tickle = a.tickle().await.unwrap();
    let flags = tickle.auth_status();
    assert!(!flags.authenticated, "A lost the session: {flags:?}");
    assert!(flags.competing);
    assert!(tickle.collision);
    assert_eq!(
        sandbox.flags_for_bearer(&a_bearer),
        Some(Flags {
            authenticated: false,
            competing: true,
            connected: true,
        })
    );
    let status = a.auth_status().await.unwrap();
    assert!(!status.authenticated && status.competing);
    assert!(c.tickle().await.unwrap().auth_status().authenticated);

    // A's logout leaves C's brokerage session alone.
    assert!(a.logout().await.unwrap().status);
    assert!(sandbox.has_brokerage_session(USER));
    assert!(c.auth_status().await.unwrap().authenticated);
    assert_eq!(sandbox.counters().inits, 3);
    assert_eq!(sandbox.counters().rejections, 0);
}

#[tokio::test]
async fn public_ip_lookup_falls_back_to_the_next_url() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let config = config_without_public_ip(sandbox.base_url())
        .ip_lookup_urls(["http://127.0.0.1:1/nothing", &sandbox.ip_lookup_url()]);
    let mut client = client(config, &clock);
    assert_eq!(client.config().public_ip(), None);

    assert_eq!(client.public_ip().await.unwrap(), LOCALHOST);
    let connected = client.connect().await.unwrap();
    assert!(connected.status.authenticated);
    assert_eq!(client.bearer_token().unwrap().ip, LOCALHOST);
    assert_eq!(
        connected.validation.as_ref().and_then(|v| v.ip.as_deref()),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn public_ip_lookup_failing_everywhere_says_to_set_public_ip() {
    let clock = clock();
    let sandbox = sandbox(&clock).await;
    let refused = "http://127.0.0.1:1/nothing";
    // The sandbox answers 401 here, not an address.
    let not_an_ip = format!("{}/v1/api/tickle", sandbox.base_url());
    let config =
        config_without_public_ip(sandbox.base_url()).ip_lookup_urls([refused, not_an_ip.as_str()]);
    let mut client = client(config, &clock);

    let err = client.connect().await.unwrap_err();
    match &err {
        Error::PublicIp { detail } => {
            assert!(detail.contains("127.0.0.1:1/nothing"), "{detail}");
            assert!(
                detail.contains(&format!("{not_an_ip}: HTTP 401")),
                "{detail}"
            );
        }
        other => panic!("expected Error::PublicIp, got {other:?}"),
    }
    assert_eq!(err.step(), Some(Step::PublicIp));
    let text = err.to_string();
    assert!(text.contains("set `public_ip`"), "{text}");
    assert!(text.contains("IBAUTH_PUBLIC_IP"), "{text}");
    // The access token was obtained; no SSO session was attempted.
    let counters = sandbox.counters();
    assert_eq!(counters.access_tokens, 1);
    assert_eq!(counters.sso_sessions, 0);
    assert!(client.bearer_token().is_none());
}
