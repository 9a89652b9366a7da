//! Public-IP lookup: the answer is trimmed and validated, and a change between logins is warned
//! about (IBKR binds the SSO session to it). The lookup service is a tiny local HTTP server.

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use ibauth::{Config, Oauth2Client, SigningKey};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers each connection with the next body, then closes it.
async fn ip_service(bodies: Vec<&'static str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ip", listener.local_addr().unwrap());
    tokio::spawn(async move {
        for body in bodies {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 2048];
            let _ = socket.read(&mut buf).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
        }
    });
    url
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn client(lookup: String) -> Oauth2Client {
    let config = Config::builder()
        .client_id("C")
        .client_key_id("k")
        .credential("user")
        .private_key(SigningKey::generate().unwrap())
        .ip_lookup_urls([lookup])
        .build()
        .unwrap();
    Oauth2Client::new(config).unwrap()
}

#[tokio::test]
async fn a_changed_public_ip_is_warned_about() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let url = ip_service(vec!["203.0.113.1\n", " 203.0.113.1 ", "203.0.113.2"]).await;
    let mut client = client(url);
    assert_eq!(
        client.public_ip().await.unwrap(),
        Ipv4Addr::new(203, 0, 113, 1)
    );
    assert_eq!(
        client.public_ip().await.unwrap(),
        Ipv4Addr::new(203, 0, 113, 1)
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("public IP changed"), "{text}");

    assert_eq!(
        client.public_ip().await.unwrap(),
        Ipv4Addr::new(203, 0, 113, 2)
    );
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("WARN"), "{text}");
    assert!(text.contains("public IP changed"), "{text}");
    assert!(text.contains("previous=203.0.113.1") && text.contains("current=203.0.113.2"));
}

#[tokio::test]
async fn a_non_ipv4_answer_is_refused() {
    let url = ip_service(vec!["2001:db8::1"]).await;
    let err = client(url).public_ip().await.unwrap_err();
    assert!(matches!(err, ibauth::Error::PublicIp { .. }), "{err:?}");
    assert!(err.to_string().contains("not an IPv4 address"), "{err}");
    assert!(err.to_string().contains("set `public_ip`"), "{err}");
}
