//! Third-party login flows: the browser flow (a local HTTPS callback server with a certificate
//! made on the fly, the system browser opened on the authorisation page, the verifier captured
//! from the redirect) and the manual flow (the URL printed, the redirect or verifier pasted);
//! and [`Interactive`], which picks one when a [`crate::Session`] needs a grant.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use url::Url;

use super::granted::Authorize;
use super::parse_verifier;
use super::third_party::{AccessGrant, RequestToken, ThirdPartyClient, VerifierError};
use crate::client::BoxFuture;
use crate::error::Error;

/// Why a login flow stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoginError {
    /// An exchange with IBKR failed.
    #[error(transparent)]
    Exchange(#[from] Error),
    /// What the user pasted (or the browser brought back) is not a usable verifier.
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    /// The manual flow needs someone to paste, and there is nobody: stdin is closed.
    #[error(
        "no terminal to paste the redirect into (stdin is not a terminal and is closed): run where you can type, pipe the redirect URL in, or use the browser flow"
    )]
    NoTerminal,
    /// Nothing came back in time.
    #[error(
        "no authorisation within {}s; run the login again (and finish it in the browser), or raise the timeout (0 = wait forever)",
        .0.as_secs()
    )]
    Timeout(Duration),
    /// The callback cannot serve the browser flow, or does not match the registered one.
    #[error("callback {callback}: {reason}")]
    Callback {
        /// The callback URL in question.
        callback: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The browser could not be started.
    #[error("cannot open a browser ({0}); open the URL above yourself, or use the manual flow")]
    Browser(std::io::Error),
    /// The local callback server could not start.
    #[error(
        "cannot listen on the callback address {addr} ({source}); is another login running? free the port or register another callback"
    )]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<LoginError> for Error {
    fn from(e: LoginError) -> Self {
        match e {
            LoginError::Exchange(e) => e,
            LoginError::Store(e) => Error::Store(e),
            other => Error::Login(other.to_string()),
        }
    }
}

/// The manual flow: prints the authorisation URL through `say`, then reads one line — the
/// redirect URL the browser ended on, or the bare verifier — from `input`. A closed `input`
/// fails at once ([`LoginError::NoTerminal`]); `timeout` bounds the wait (`None`: forever).
pub async fn manual<R: AsyncBufRead + Unpin>(
    client: &ThirdPartyClient,
    input: &mut R,
    say: &mut (dyn FnMut(&str) + Send),
    timeout: Option<Duration>,
) -> Result<AccessGrant, LoginError> {
    let request = client.request_token().await?;
    let url = client.authorize_url(&request);
    say(&format!(
        "Open this address in a browser, log in and approve:\n\n  {url}\n\nThen paste the address the browser ends on (or the verifier it shows) and press Enter:"
    ));
    let mut line = String::new();
    let read = input.read_line(&mut line);
    let n = match timeout {
        Some(t) => tokio::time::timeout(t, read)
            .await
            .map_err(|_| LoginError::Timeout(t))?,
        None => read.await,
    }
    .map_err(|_| LoginError::NoTerminal)?;
    if n == 0 {
        return Err(LoginError::NoTerminal);
    }
    let verifier = parse_verifier(&line, &request)?;
    Ok(client.access_token(&request, &verifier).await?)
}

/// Where the browser flow listens: the registered callback, which must be `https` on a
/// loopback address with an explicit port.
fn listen_address(callback: &Url) -> Result<(String, u16), LoginError> {
    let bad = |reason: &str| LoginError::Callback {
        callback: callback.to_string(),
        reason: reason.to_owned(),
    };
    if callback.scheme() != "https" {
        return Err(bad(
            "the browser flow serves the callback itself over https; register an https://127.0.0.1:PORT/… callback, or use the manual flow",
        ));
    }
    let host = match callback.host() {
        Some(url::Host::Ipv4(ip)) if ip.is_loopback() => ip.to_string(),
        Some(url::Host::Ipv6(ip)) if ip.is_loopback() => ip.to_string(),
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => "127.0.0.1".into(),
        _ => {
            return Err(bad(
                "not on this machine: the browser flow can only receive a callback on 127.0.0.1 or localhost; use the manual flow",
            ));
        }
    };
    let port = callback.port().ok_or_else(|| {
        bad("no port: register the callback with an explicit port (https://127.0.0.1:8443/…)")
    })?;
    Ok((host, port))
}

/// Checks a callback before anything is sent or opened: usable for the browser flow, and
/// exactly the `registered` one when known (scheme, host, port, path and case all count).
pub fn check_callback(callback: &Url, registered: Option<&str>) -> Result<(), LoginError> {
    listen_address(callback)?;
    if let Some(registered) = registered
        && registered != callback.as_str()
    {
        return Err(LoginError::Callback {
            callback: callback.to_string(),
            reason: format!(
                "differs from the registered callback {registered}: IBKR only redirects to the registered one, character for character"
            ),
        });
    }
    Ok(())
}

/// The banner shown before the browser opens: what will happen, and why the browser will warn.
pub fn browser_banner(url: &Url, callback: &Url) -> String {
    format!(
        "Opening your browser on the authorisation page:\n\n  {url}\n\n\
         After you approve, you are sent back to {callback}: a page this program serves with a\n\
         certificate it made a moment ago, so the browser warns that the connection is not\n\
         private. That is expected for this local address only — choose \"Advanced\" and\n\
         \"Proceed to 127.0.0.1\". Nothing leaves this machine.\n"
    )
}

/// The browser flow: serve the registered callback over HTTPS (a certificate made on the fly),
/// announce through `say`, open the authorisation page with `open`, and wait up to `timeout`
/// (`None`: forever) for the redirect with the verifier.
pub async fn browser(
    client: &ThirdPartyClient,
    open: &mut (dyn FnMut(&Url) -> std::io::Result<()> + Send),
    say: &mut (dyn FnMut(&str) + Send),
    timeout: Option<Duration>,
) -> Result<AccessGrant, LoginError> {
    let callback = client
        .config()
        .callback()
        .cloned()
        .ok_or_else(|| LoginError::Callback {
            callback: "(none)".into(),
            reason: "the browser flow needs `oauth1a.callback_url`, the callback registered for the consumer; without one, use the manual flow".into(),
        })?;
    let (host, port) = listen_address(&callback)?;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|source| LoginError::Listen {
            addr: format!("{host}:{port}"),
            source,
        })?;
    let acceptor = acceptor().map_err(|source| LoginError::Listen {
        addr: format!("{host}:{port}"),
        source,
    })?;
    let request = client.request_token().await?;
    let url = client.authorize_url(&request);
    say(&browser_banner(&url, &callback));
    open(&url).map_err(LoginError::Browser)?;
    let wait = receive(&listener, &acceptor, callback.path(), &request);
    let verifier = match timeout {
        Some(t) => tokio::time::timeout(t, wait)
            .await
            .map_err(|_| LoginError::Timeout(t))?,
        None => wait.await,
    }?;
    Ok(client.access_token(&request, &verifier).await?)
}

fn acceptor() -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let io = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| io(&e))?;
    let params = rcgen::CertificateParams::new(vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "::1".to_owned(),
    ])
    .map_err(|e| io(&e))?;
    let cert = params.self_signed(&key).map_err(|e| io(&e))?;
    let der_key = rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| io(&e))?
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], der_key)
    .map_err(|e| io(&e))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves the callback until a request for `path` carries this login's answer.
async fn receive(
    listener: &tokio::net::TcpListener,
    acceptor: &tokio_rustls::TlsAcceptor,
    path: &str,
    request: &RequestToken,
) -> Result<SecretString, LoginError> {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        // A browser that gave up on the certificate, a probe, a half-open connection: none of
        // them stops the wait.
        let Ok(Ok(mut tls)) =
            tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
        else {
            continue;
        };
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tokio::time::timeout(Duration::from_secs(10), tls.read(&mut buf)).await {
                Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&head);
        let target = text
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("");
        let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
        if got_path != path || query.is_empty() {
            let _ = respond(&mut tls, 404, "Not the ibauth callback.").await;
            continue;
        }
        let result = parse_verifier(&format!("?{query}"), request);
        let message = match &result {
            Ok(_) => "ibauth: authorised. You can close this tab and return to the program.",
            Err(VerifierError::Denied) => "ibauth: access was denied. You can close this tab.",
            Err(_) => "ibauth: this page belongs to another login. You can close this tab.",
        };
        let _ = respond(&mut tls, 200, message).await;
        match result {
            // A stale tab from an earlier login: keep waiting for this one.
            Err(VerifierError::OtherToken { .. }) => continue,
            other => return Ok(other?),
        }
    }
}

async fn respond<S: AsyncWriteExt + Unpin>(
    stream: &mut S,
    status: u16,
    text: &str,
) -> std::io::Result<()> {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ibauth</title></head><body style=\"font-family:sans-serif;margin:3em\"><p id=\"result\">{text}</p></body></html>"
    );
    let reason = if status == 200 { "OK" } else { "Not Found" };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// Opens `url` in the user's browser: `$BROWSER` if set, else the platform's opener
/// (`xdg-open`, `open`, `start`).
pub fn open_in_browser(url: &Url) -> std::io::Result<()> {
    use std::process::{Command, Stdio};
    let mut command = match std::env::var("BROWSER")
        .ok()
        .filter(|b| !b.trim().is_empty())
    {
        Some(browser) => {
            let mut parts = browser.split_whitespace();
            let mut c = Command::new(parts.next().unwrap_or("xdg-open"));
            c.args(parts);
            c
        }
        None if cfg!(target_os = "macos") => Command::new("open"),
        None if cfg!(windows) => {
            let mut c = Command::new("cmd");
            c.args(["/C", "start", ""]);
            c
        }
        None => Command::new("xdg-open"),
    };
    command
        .arg(url.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(|_| ())
}

/// Whether a browser can be opened here: `$BROWSER` is set, or a desktop (macOS, Windows, or a
/// Linux display).
pub fn can_open_browser() -> bool {
    let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    set("BROWSER")
        || cfg!(target_os = "macos")
        || cfg!(windows)
        || set("DISPLAY")
        || set("WAYLAND_DISPLAY")
}

/// Which flow [`Interactive`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// The browser flow where a browser can be opened and a callback is registered, else manual.
    Auto,
    /// Always the browser flow.
    Browser,
    /// Always the manual flow.
    Manual,
}

/// The command line's way to ask for an authorisation: the browser flow or the manual one,
/// as `flow` says, reading pasted redirects from `input` and speaking through `say`.
pub struct Interactive {
    flow: Flow,
    timeout: Option<Duration>,
    input: Box<dyn AsyncBufRead + Send + Unpin>,
    say: Box<dyn FnMut(&str) + Send>,
    asked: Arc<std::sync::atomic::AtomicBool>,
}

impl Interactive {
    /// Asks with `flow`, waiting up to `timeout` (`None`: forever) for the user.
    pub fn new(
        flow: Flow,
        timeout: Option<Duration>,
        input: Box<dyn AsyncBufRead + Send + Unpin>,
        say: Box<dyn FnMut(&str) + Send>,
    ) -> Self {
        Self {
            flow,
            timeout,
            input,
            say,
            asked: Arc::default(),
        }
    }

    /// Set once the user has been asked (a fresh authorisation, not a stored grant).
    pub fn asked(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.asked.clone()
    }
}

impl std::fmt::Debug for Interactive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interactive")
            .field("flow", &self.flow)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Authorize for Interactive {
    fn authorize<'a>(
        &'a mut self,
        client: &'a ThirdPartyClient,
    ) -> BoxFuture<'a, Result<AccessGrant, LoginError>> {
        Box::pin(async move {
            self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
            let say = &mut *self.say;
            match self.flow {
                Flow::Manual => manual(client, &mut self.input, say, self.timeout).await,
                Flow::Browser => browser(client, &mut open_in_browser, say, self.timeout).await,
                Flow::Auto if can_open_browser() && client.config().callback().is_some() => {
                    browser(client, &mut open_in_browser, say, self.timeout).await
                }
                Flow::Auto => manual(client, &mut self.input, say, self.timeout).await,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_browser_flow_needs_an_https_loopback_callback_with_a_port() {
        let ok = Url::parse("https://127.0.0.1:8443/ibauth/callback").unwrap();
        assert_eq!(listen_address(&ok).unwrap(), ("127.0.0.1".into(), 8443));
        let localhost = Url::parse("https://localhost:9000/cb").unwrap();
        assert_eq!(listen_address(&localhost).unwrap().1, 9000);
        for (bad, says) in [
            ("http://127.0.0.1:8443/cb", "https"),
            ("https://example.com:8443/cb", "not on this machine"),
            ("https://127.0.0.1/cb", "explicit port"),
        ] {
            let err = listen_address(&Url::parse(bad).unwrap()).unwrap_err();
            assert!(err.to_string().contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn a_callback_must_match_the_registered_one_exactly() {
        let ours = Url::parse("https://127.0.0.1:8443/ibauth/callback").unwrap();
        assert!(check_callback(&ours, Some("https://127.0.0.1:8443/ibauth/callback")).is_ok());
        for registered in [
            "https://127.0.0.1:8443/ibauth/Callback",
            "https://127.0.0.1:8444/ibauth/callback",
            "https://localhost:8443/ibauth/callback",
        ] {
            let err = check_callback(&ours, Some(registered)).unwrap_err();
            assert!(err.to_string().contains("character for character"), "{err}");
        }
    }
}
