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
///
/// Only a redirect to the callback's path that carries this login's request token
/// (`oauth_token`) ends the wait: with `oauth_verifier`, or `denied`. Anything else — another
/// login's redirect, a probe, a request without the token — is answered and ignored.
/// Connections are served concurrently, each within [`CONNECTION_DEADLINE`] and
/// [`MAX_REQUEST_HEAD`], so idle or slow clients cannot keep the real redirect out.
///
/// `open` is handed the authorisation URL, which names the request token; to keep it off
/// command lines other users can read, [`open_in_browser`] hands the browser a private file
/// instead ([`LaunchPage`]).
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
    let (acceptor, _) = acceptor().map_err(|source| LoginError::Listen {
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

/// The callback server's certificate, made for this login only; also returned (DER) so tests
/// can trust exactly it.
fn acceptor() -> std::io::Result<(
    tokio_rustls::TlsAcceptor,
    rustls_pki_types::CertificateDer<'static>,
)> {
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
    Ok((
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        cert.der().clone(),
    ))
}

/// How long one connection to the callback may take, from accepting it to the end of its
/// request head (TLS handshake included). A whole-request deadline, not one per read: a client
/// sending a byte a second is cut off as surely as one sending nothing.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);

/// The longest request head (request line and headers) the callback reads; a browser's
/// redirect is well under 4 KiB.
pub const MAX_REQUEST_HEAD: usize = 16 * 1024;

/// Connections served at once; more are closed on arrival (each costs a task and a TLS
/// session, and a browser needs one or two).
const MAX_CONNECTIONS: usize = 256;

/// What one connection brought: the verifier of this login, or its refusal in the browser.
type Answer = Result<SecretString, VerifierError>;

/// Serves the callback until a request for `path` carries this login's answer. Each connection
/// is served by its own task, so none can hold up another; the first answer wins, and the
/// other connections are dropped with the tasks when this returns.
async fn receive(
    listener: &tokio::net::TcpListener,
    acceptor: &tokio_rustls::TlsAcceptor,
    path: &str,
    request: &RequestToken,
) -> Result<SecretString, LoginError> {
    let (answered, mut answers) = tokio::sync::mpsc::channel::<Answer>(1);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    // Out of descriptors, a connection reset before it was accepted: wait a
                    // moment rather than spin, and keep serving.
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if connections.len() >= MAX_CONNECTIONS {
                    continue;
                }
                connections.spawn(serve(
                    tcp,
                    acceptor.clone(),
                    path.to_owned(),
                    request.clone(),
                    answered.clone(),
                ));
            }
            Some(answer) = answers.recv() => return Ok(answer?),
            // Reap finished connections so the count above stays true.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// One connection: the TLS handshake and the request head within [`CONNECTION_DEADLINE`], an
/// answer page, and this login's answer (if the request carries one) sent to `answered`.
async fn serve(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    path: String,
    request: RequestToken,
    answered: tokio::sync::mpsc::Sender<Answer>,
) {
    let deadline = tokio::time::Instant::now() + CONNECTION_DEADLINE;
    let read = async {
        // A browser that gave up on the certificate, a probe, a half-open connection: each
        // ends here, alone.
        let mut tls = acceptor.accept(tcp).await.ok()?;
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        loop {
            if head.windows(4).any(|w| w == b"\r\n\r\n") {
                return Some((tls, Some(head)));
            }
            if head.len() > MAX_REQUEST_HEAD {
                return Some((tls, None));
            }
            match tls.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
    };
    let Ok(Some((mut tls, head))) = tokio::time::timeout_at(deadline, read).await else {
        return;
    };
    let write = |tls, status, text| async move {
        let mut tls = tls;
        // Bounded too: a client that does not read cannot hold the task.
        let _ = tokio::time::timeout(Duration::from_secs(5), respond(&mut tls, status, text)).await;
    };
    let Some(head) = head else {
        write(tls, 431, "Request header fields too large.").await;
        return;
    };
    let text = String::from_utf8_lossy(&head);
    let target = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("");
    let (got_path, query) = target.split_once('?').unwrap_or((target, ""));
    if got_path != path {
        write(tls, 404, "Not the ibauth callback.").await;
        return;
    }
    let Some(answer) = answer(query, &request) else {
        write(
            tls,
            200,
            "ibauth: this page belongs to another login (or is not an authorisation). You can close this tab.",
        )
        .await;
        return;
    };
    let message = match &answer {
        Ok(_) => "ibauth: authorised. You can close this tab and return to the program.",
        Err(_) => "ibauth: access was denied. You can close this tab.",
    };
    // The page first, then the answer: once the answer is in, the server stops (and this task
    // with it), and the browser should still see where it stands.
    let _ = tokio::time::timeout(Duration::from_secs(5), respond(&mut tls, 200, message)).await;
    let _ = answered.send(answer).await;
}

/// This login's answer in a callback query: `Some` only when `oauth_token` is this login's
/// request token and the query carries a verifier or a refusal. A redirect of another login, a
/// request without the token, or one with the token but nothing else is `None`: ignored, so no
/// one who does not know the token can end (or spoil) the wait.
pub(crate) fn answer(query: &str, request: &RequestToken) -> Option<Answer> {
    let token = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "oauth_token")
        .map(|(_, v)| v.into_owned())?;
    // Constant time: a local client cannot learn the token a character at a time.
    aws_lc_rs::constant_time::verify_slices_are_equal(token.as_bytes(), request.token.as_bytes())
        .ok()?;
    match parse_verifier(&format!("?{query}"), request) {
        Ok(verifier) => Some(Ok(verifier)),
        Err(VerifierError::Denied) => Some(Err(VerifierError::Denied)),
        Err(_) => None,
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
    let reason = match status {
        200 => "OK",
        431 => "Request Header Fields Too Large",
        _ => "Not Found",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// A page that sends the browser on to the authorisation URL, in a private folder (0700, the
/// page 0600) until dropped.
///
/// The authorisation URL names the request token (`oauth_token=…`). Handed to the browser as
/// an argument it would sit in the opener's command line, which every local user can read
/// (`/proc/*/cmdline`, `ps`); the page's path names nothing secret. (A browser confined to its
/// own `/tmp`, such as a snap, cannot open the page: the banner shows the URL to open by hand.)
#[derive(Debug)]
pub struct LaunchPage {
    folder: std::path::PathBuf,
    page: std::path::PathBuf,
}

impl LaunchPage {
    /// Writes the page for `url` in a new private folder under the temporary folder.
    pub fn new(url: &Url) -> std::io::Result<Self> {
        Self::new_in(&std::env::temp_dir(), url)
    }

    /// Writes the page for `url` in a new private folder under `parent`.
    pub fn new_in(parent: &std::path::Path, url: &Url) -> std::io::Result<Self> {
        // A fresh name, created (not reused) with mode 0700: a folder another user made in the
        // shared temporary folder beforehand is never used, whatever it holds.
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        let mut tries = 0;
        let folder = loop {
            let mut bytes = [0u8; 8];
            aws_lc_rs::rand::fill(&mut bytes)
                .map_err(|_| std::io::Error::other("no randomness"))?;
            let name: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let folder = parent.join(format!("ibauth-login-{name}"));
            match builder.create(&folder) {
                Ok(()) => break folder,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
                Err(e) => return Err(e),
            }
        };
        let page = folder.join("authorize.html");
        let written = (|| {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&page)?;
            std::io::Write::write_all(&mut file, redirect_page(url).as_bytes())
        })();
        let launch = Self { folder, page };
        written.map(|()| launch)
    }

    /// The page to open.
    pub fn path(&self) -> &std::path::Path {
        &self.page
    }
}

impl Drop for LaunchPage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.page);
        let _ = std::fs::remove_dir(&self.folder);
    }
}

/// The page: a script that replaces itself with `url` (no history entry to come back to), a
/// meta refresh where scripts are off, and a link where both are.
fn redirect_page(url: &Url) -> String {
    let attribute = html_escape(url.as_str());
    // JSON is a JavaScript string literal; `<` escaped so nothing can close the script.
    let script = serde_json::Value::String(url.as_str().to_owned())
        .to_string()
        .replace('<', "\\u003c");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta http-equiv=\"refresh\" content=\"0;url={attribute}\">\n\
         <title>ibauth: opening the authorisation page</title>\n\
         <script>location.replace({script});</script></head>\n\
         <body><p>Opening the <a href=\"{attribute}\">IBKR authorisation page</a>…</p></body></html>\n"
    )
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Opens `url` in the user's browser through a [`LaunchPage`] (so the URL is on no command
/// line): `$BROWSER` if set, else the platform's opener (`xdg-open`, `open`, `start`), is
/// started on the page's path. Keep the page until the login ends; dropping it removes it.
pub fn open_in_browser(url: &Url) -> std::io::Result<LaunchPage> {
    let page = LaunchPage::new(url)?;
    open_path(page.path())?;
    Ok(page)
}

fn open_path(path: &std::path::Path) -> std::io::Result<()> {
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
        .arg(path)
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
            let in_browser = match self.flow {
                Flow::Manual => false,
                Flow::Browser => true,
                Flow::Auto => can_open_browser() && client.config().callback().is_some(),
            };
            if !in_browser {
                return manual(client, &mut self.input, say, self.timeout).await;
            }
            // The page is kept until the login ends (the browser may read it late), then
            // removed with its folder.
            let mut page = None;
            let mut open = |url: &Url| {
                page = Some(open_in_browser(url)?);
                Ok(())
            };
            let result = browser(client, &mut open, say, self.timeout).await;
            drop(page);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::time::Instant;

    const TOKEN: &str = "25ebcc75204da80b73f4";

    /// A callback server on a free loopback port, waiting for `TOKEN`'s answer; its port, the
    /// certificate it serves (to trust exactly that), and the wait.
    async fn waiting() -> (
        u16,
        rustls_pki_types::CertificateDer<'static>,
        tokio::task::JoinHandle<Result<SecretString, LoginError>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (acceptor, cert) = acceptor().unwrap();
        let request = RequestToken {
            token: TOKEN.into(),
            callback: format!("https://127.0.0.1:{port}/ibauth/callback"),
        };
        let wait = tokio::spawn(async move {
            receive(&listener, &acceptor, "/ibauth/callback", &request).await
        });
        (port, cert, wait)
    }

    /// A real HTTPS client that trusts the callback's certificate and nothing else.
    fn client(cert: &rustls_pki_types::CertificateDer<'static>) -> reqwest::Client {
        reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_der(cert).unwrap()])
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap()
    }

    /// A TLS connection to the callback, handshake done.
    async fn tls(
        port: u16,
        cert: &rustls_pki_types::CertificateDer<'static>,
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    async fn get(client: &reqwest::Client, port: u16, target: &str) -> (u16, String) {
        let reply = client
            .get(format!("https://127.0.0.1:{port}{target}"))
            .send()
            .await
            .unwrap();
        (reply.status().as_u16(), reply.text().await.unwrap())
    }

    /// The wait is still on a moment later.
    async fn still_waiting(wait: &tokio::task::JoinHandle<Result<SecretString, LoginError>>) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!wait.is_finished(), "the wait ended");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn idle_and_slow_connections_do_not_keep_the_redirect_out() {
        let (port, cert, wait) = waiting().await;
        // Opened first, before the browser comes back: connections that say nothing (TCP
        // only, and after the TLS handshake) and ones that send a byte a second.
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap(),
            );
        }
        let mut quiet = Vec::new();
        for _ in 0..5 {
            quiet.push(tls(port, &cert).await);
        }
        let mut slow = Vec::new();
        for _ in 0..3 {
            let mut stream = tls(port, &cert).await;
            slow.push(tokio::spawn(async move {
                for byte in b"GET /ibauth/callback?oauth_token=".iter().cycle() {
                    if stream.write_all(&[*byte]).await.is_err() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let (status, page) = get(
            &client(&cert),
            port,
            &format!("/ibauth/callback?oauth_token={TOKEN}&oauth_verifier=61c1"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("authorised"), "{page}");
        let verifier = tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .expect("the redirect ended the wait")
            .unwrap()
            .unwrap();
        assert_eq!(verifier.expose_secret(), "61c1");
        // Served at once, not after the others' 10 s deadlines.
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        for task in slow {
            task.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_slow_client_is_cut_off_at_the_deadline() {
        let (port, cert, wait) = waiting().await;
        let mut stream = tls(port, &cert).await;
        let started = Instant::now();
        // A byte a second: each read is quick, the request never ends; the deadline is for the
        // whole head, so the server hangs up after CONNECTION_DEADLINE.
        let closed = async {
            for byte in b"GET /ibauth/callback HTTP/1.1\r\nX: ".iter().cycle() {
                if stream.write_all(&[*byte]).await.is_err() || stream.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        };
        tokio::time::timeout(CONNECTION_DEADLINE + Duration::from_secs(5), closed)
            .await
            .expect("the server hung up on the slow client");
        let took = started.elapsed();
        assert!(
            took >= CONNECTION_DEADLINE - Duration::from_secs(1),
            "{took:?}"
        );
        still_waiting(&wait).await;
        wait.abort();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn requests_without_this_logins_token_are_ignored() {
        let (port, cert, wait) = waiting().await;
        let http = client(&cert);
        for target in [
            "/ibauth/callback",
            "/ibauth/callback?foo=1",
            "/ibauth/callback?denied=1",
            "/ibauth/callback?error=access_denied",
            "/ibauth/callback?oauth_verifier=stolen",
            // Another login's redirect (an old tab): approved or denied, not this one's.
            "/ibauth/callback?oauth_token=ffffffffffffffffffff&oauth_verifier=1",
            "/ibauth/callback?oauth_token=ffffffffffffffffffff&denied=true",
            // This token, but nothing to act on.
            "/ibauth/callback?oauth_token=25ebcc75204da80b73f4",
            // This token at another path.
            "/elsewhere?oauth_token=25ebcc75204da80b73f4&oauth_verifier=1",
            // A prefix of the token, the token with a tail.
            "/ibauth/callback?oauth_token=25ebcc75204da80b73f&oauth_verifier=1",
            "/ibauth/callback?oauth_token=25ebcc75204da80b73f4x&oauth_verifier=1",
        ] {
            let (status, page) = get(&http, port, target).await;
            assert!(
                !page.contains("authorised") && !page.contains("denied"),
                "{target}: {status} {page}"
            );
            still_waiting(&wait).await;
        }
        // A request head too long to be a redirect: refused, the wait goes on.
        let mut stream = tls(port, &cert).await;
        let huge = format!(
            "GET /ibauth/callback?{} HTTP/1.1\r\n",
            "a".repeat(MAX_REQUEST_HEAD + 10)
        );
        stream.write_all(huge.as_bytes()).await.unwrap();
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply)).await;
        assert!(
            String::from_utf8_lossy(&reply).starts_with("HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        still_waiting(&wait).await;
        // And the real redirect still gets through.
        let (_, page) = get(
            &http,
            port,
            &format!("/ibauth/callback?oauth_token={TOKEN}&oauth_verifier=ab12"),
        )
        .await;
        assert!(page.contains("authorised"), "{page}");
        let verifier = wait.await.unwrap().unwrap();
        assert_eq!(verifier.expose_secret(), "ab12");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_denial_with_this_logins_token_ends_the_wait() {
        let (port, cert, wait) = waiting().await;
        let (status, page) = get(
            &client(&cert),
            port,
            &format!("/ibauth/callback?oauth_token={TOKEN}&denied=true"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(page.contains("denied"), "{page}");
        let err = wait.await.unwrap().unwrap_err();
        assert!(
            matches!(err, LoginError::Verifier(VerifierError::Denied)),
            "{err}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_launch_page_is_private_redirects_and_goes_away() {
        use std::os::unix::fs::PermissionsExt;
        let url = Url::parse(&format!(
            "https://example.com/authorize?oauth_token={TOKEN}&x=\"</script><b>'"
        ))
        .unwrap();
        let page = LaunchPage::new(&url).unwrap();
        let path = page.path().to_owned();
        let folder = path.parent().unwrap().to_owned();
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert!(!path.to_string_lossy().contains(TOKEN));
        let html = std::fs::read_to_string(&path).unwrap();
        // The serialised URL (quotes and brackets percent-encoded by the URL parser) in the
        // script, the refresh and the link; nothing that could end the script or attribute.
        let serialised = url.as_str();
        assert!(
            html.contains(&format!("location.replace(\"{serialised}\")")),
            "{html}"
        );
        assert!(html.contains(&format!("content=\"0;url={}\"", html_escape(serialised))));
        assert_eq!(html.matches("</script>").count(), 1, "{html}");
        drop(page);
        assert!(!path.exists() && !folder.exists());
    }

    #[test]
    fn page_text_is_escaped_for_html_and_script() {
        assert_eq!(html_escape("a&b\"c'<d>"), "a&amp;b&quot;c&#39;&lt;d&gt;");
        // A URL whose path keeps `'` and `<`-free but quotes (paths do not encode `'`).
        let url = Url::parse("https://h/it's/a?b=1").unwrap();
        let html = redirect_page(&url);
        assert!(html.contains("url=https://h/it&#39;s/a?b=1\""), "{html}");
        assert!(
            html.contains("location.replace(\"https://h/it's/a?b=1\")"),
            "{html}"
        );
    }

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
