//! The client against servers that are not the sandbox: tiny raw TCP servers on 127.0.0.1:0
//! that answer garbage, an error in an HTTP 200, nothing at all, or hang up. Each failure must
//! be the right `ibauth::Error` variant at the step that was running.

mod common;

use std::time::{Duration, Instant};

use common::{assert_rejected, client, clock, config};
use ibauth::{Error, Step};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// What a raw server does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Reads the request, answers `HTTP/1.1 200 OK` with this body, and closes.
    Answer200(&'static str),
    /// Keeps the connection open and never says a word.
    Silent,
    /// Reads the request and closes the connection without answering.
    HangUp,
}

/// Starts a raw server; returns its base URL. It stops with the test's runtime.
async fn raw_server(behaviour: Behaviour) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            match behaviour {
                Behaviour::Silent => held.push(stream),
                Behaviour::HangUp => {
                    tokio::spawn(async move {
                        read_request(&mut stream).await;
                        drop(stream);
                    });
                }
                Behaviour::Answer200(body) => {
                    tokio::spawn(async move {
                        read_request(&mut stream).await;
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        }
    });
    format!("http://{addr}")
}

/// Reads one HTTP/1.1 request: the head, then `Content-Length` bytes of body.
async fn read_request(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[tokio::test]
async fn html_instead_of_json_is_a_protocol_error_at_access_token() {
    let base = raw_server(Behaviour::Answer200("<html>not json</html>")).await;
    let mut client = client(config(&base), &clock());

    let err = client.connect().await.unwrap_err();
    match &err {
        Error::Protocol {
            step,
            status,
            detail,
        } => {
            assert_eq!(*step, Step::AccessToken);
            assert_eq!(*status, 200);
            assert!(detail.contains("cannot parse the JSON answer"), "{detail}");
        }
        other => panic!("expected Error::Protocol, got {other:?}"),
    }
    assert_eq!(err.step(), Some(Step::AccessToken));
    assert_eq!(err.status(), Some(200));
    assert!(!err.is_transient());
    assert!(client.access_token().is_none());
}

#[tokio::test]
async fn an_error_field_in_an_http_200_is_a_rejection() {
    let base = raw_server(Behaviour::Answer200(r#"{"error":"boom"}"#)).await;
    let mut client = client(config(&base), &clock());

    let err = client.connect().await.unwrap_err();
    let hint = assert_rejected(&err, Step::AccessToken, 200, "boom");
    assert_eq!(hint, None);
    assert!(client.access_token().is_none());
}

#[tokio::test]
async fn json_without_an_access_token_is_a_protocol_error() {
    let base = raw_server(Behaviour::Answer200(r#"{"token_type":"Bearer"}"#)).await;
    let mut client = client(config(&base), &clock());

    let err = client.connect().await.unwrap_err();
    match &err {
        Error::Protocol {
            step: Step::AccessToken,
            status: 200,
            detail,
        } => assert_eq!(detail, "no access_token in the answer"),
        other => panic!("expected Error::Protocol at AccessToken, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_times_out_at_access_token() {
    let base = raw_server(Behaviour::Silent).await;
    let timeout = Duration::from_millis(300);
    let mut client = client(config(&base).timeout(timeout), &clock());

    let started = Instant::now();
    let err = client.connect().await.unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        Error::Timeout {
            step,
            timeout: reported,
        } => {
            assert_eq!(*step, Step::AccessToken);
            assert_eq!(*reported, timeout);
        }
        other => panic!("expected Error::Timeout, got {other:?}"),
    }
    assert!(err.is_transient());
    assert!(err.to_string().contains("no answer within 0.3s"), "{err}");
    assert!(elapsed >= timeout, "gave up after {elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
}

#[tokio::test]
async fn a_server_that_hangs_up_is_a_network_error() {
    let base = raw_server(Behaviour::HangUp).await;
    let mut client = client(config(&base), &clock());

    let err = client.connect().await.unwrap_err();
    match &err {
        Error::Network { step, host, .. } => {
            assert_eq!(*step, Step::AccessToken);
            assert_eq!(format!("http://{host}"), base);
        }
        other => panic!("expected Error::Network, got {other:?}"),
    }
    assert!(err.is_transient());
}

#[tokio::test]
async fn nothing_listening_is_a_network_error() {
    // Bind, learn the port, and close: nothing listens there any more.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut client = client(config(&format!("http://{addr}")), &clock());

    let err = client.request_access_token().await.unwrap_err();
    match &err {
        Error::Network {
            step, host, detail, ..
        } => {
            assert_eq!(*step, Step::AccessToken);
            assert_eq!(*host, addr.to_string());
            assert!(!detail.is_empty());
        }
        other => panic!("expected Error::Network, got {other:?}"),
    }
}
