//! `login`, `status`, `tickle`, `token`, `logout` and `api`: each a few calls on a
//! [`Session`], rendered. The session does the rest — stored tokens reused while valid, a login
//! only when none is, under the store's lock, adopting what another process stored.

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ibauth::session::Source;
use ibauth::session::{Connection, FleetStatus};
use ibauth::{AuthStatus, Error, Method, Session, Tickle};
use serde_json::json;

use crate::open::{Flags, Opened, open};
use crate::render::{Out, code, fail, flags, flags_json, not_authenticated, not_logged_in};

#[derive(Debug, Clone)]
pub enum Action {
    Login {
        force: bool,
    },
    Status,
    Tickle,
    Token {
        method: String,
        path: String,
        curl: bool,
    },
    Logout,
    Api {
        method: String,
        path: String,
        query: Vec<String>,
        data: Option<String>,
    },
}

/// How a command ended, besides an error.
enum Outcome {
    Done,
    /// The brokerage session's flags: exit 6 unless authenticated.
    Flags(AuthStatus),
    /// No usable stored session (for `status`, which never logs in): exit 6 with this.
    NotLoggedIn(&'static str),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Login { .. } => "login",
            Action::Status => "status",
            Action::Tickle => "tickle",
            Action::Token { .. } => "token",
            Action::Logout => "logout",
            Action::Api { .. } => "api",
        }
    }
}

pub async fn run(out: Out, flags: Flags<'_>, action: Action) -> ExitCode {
    let Opened { session, asked } = match open(out, &flags).await {
        Ok(opened) => opened,
        Err(e) => return fail(out, &e),
    };
    out.heading(&format!(
        "ibauth {} ({}) at {}",
        action.name(),
        session.method().label(),
        session.api_base()
    ));
    if flags.third_party.is_some() {
        // The grant first, reported before the command's own output: asked for (a browser or a
        // pasted redirect) or reused. `status` and `logout` never ask: they only look.
        let started = Instant::now();
        let ready = match action {
            Action::Status | Action::Logout => session.restore().await.map(|s| s.is_some()),
            _ => session.connect().await.map(|_| true),
        };
        let fresh = asked.load(Ordering::SeqCst);
        match ready {
            Ok(true) => out.step(
                "authorization",
                started.elapsed(),
                if fresh {
                    "authorised in the browser; grant and live session token stored"
                } else {
                    "reused the stored grant"
                },
                json!({ "fresh": fresh }),
            ),
            Ok(false) => {}
            Err(e) => return fail(out, &e),
        }
    }
    let result = match action {
        Action::Login { force } => login(out, &session, force).await,
        Action::Status => status(out, &session).await,
        Action::Tickle => tickle(out, &session).await,
        Action::Token { method, path, curl } => token(out, &session, &method, &path, curl)
            .await
            .map(|()| Outcome::Done),
        Action::Logout => logout(out, &session).await.map(|()| Outcome::Done),
        Action::Api {
            method,
            path,
            query,
            data,
        } => return api(out, &session, &method, &path, &query, data.as_deref()).await,
    };
    match result {
        Ok(Outcome::Flags(status)) if !status.authenticated => not_authenticated(out, &status),
        Ok(Outcome::NotLoggedIn(message)) => not_logged_in(out, message),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => fail(out, &e),
    }
}

/// Connects (stored tokens, another process's, or a login), reporting where the tokens came
/// from when no login was needed.
async fn connect(out: Out, session: &Session) -> Result<Connection, Error> {
    out.progress("logging in (or waiting for another ibauth process that is)");
    let t = Instant::now();
    let connection = session.connect().await?;
    if matches!(connection.source, Source::Stored | Source::Adopted) {
        report_tokens(out, session, &connection, t.elapsed());
    }
    out.clear_progress();
    Ok(connection)
}

fn report_tokens(out: Out, session: &Session, connection: &Connection, took: Duration) {
    let now = now();
    let age = connection
        .stored
        .as_ref()
        .map(|s| s.token_age(now).as_secs());
    let left = connection
        .stored
        .as_ref()
        .and_then(|s| s.session_token_expiry())
        .map(|e| e.saturating_sub(now));
    let what = match connection.source {
        Source::Stored | Source::Held => "reused stored tokens",
        Source::Adopted => "took the tokens another process just stored",
        Source::Refreshed => "logged in",
    };
    out.step(
        "tokens",
        took,
        &format!(
            "{what}: login {} ago, expire in {}",
            age.map_or("?".into(), human),
            left.map_or("?".into(), human)
        ),
        json!({
            "source": match connection.source {
                Source::Stored | Source::Held => "stored",
                Source::Adopted => "adopted",
                Source::Refreshed => "login",
            },
            "method": session.method().name(),
            "token_age_s": age,
            "expires_in_s": left,
        }),
    );
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

async fn login(out: Out, session: &Session, force: bool) -> Result<Outcome, Error> {
    out.progress("logging in (or waiting for another ibauth process that is)");
    let t = Instant::now();
    let connection = session.login(force).await?;
    if matches!(connection.source, Source::Stored | Source::Adopted) {
        report_tokens(out, session, &connection, t.elapsed());
    }
    let status = match connection.initialised {
        Some(status) => status,
        None => session.init().await?,
    };
    out.result(&format!("  {}", flags(&status)), flags_json(&status));
    Ok(Outcome::Flags(status))
}

/// Read-only: the stored session as it is, never a login.
async fn status(out: Out, session: &Session) -> Result<Outcome, Error> {
    let t = Instant::now();
    let fleet = session.fleet_status().await?;
    if let Some(fleet) = &fleet {
        report_fleet(out, fleet, t.elapsed());
    }
    let t = Instant::now();
    let Some(stored) = session.restore().await? else {
        return Ok(Outcome::NotLoggedIn(
            "no valid stored session: run `ibauth login` (status never logs in)",
        ));
    };
    let connection = Connection {
        source: Source::Stored,
        stored: Some(stored),
        initialised: None,
    };
    report_tokens(out, session, &connection, t.elapsed());
    if fleet.is_some() {
        // The fleet's leader is the one tickler IBKR should see: a tickle from this host would
        // count as a second one. `auth/status` reads the same flags without keeping anything
        // alive.
        let t = Instant::now();
        let status = match session.auth_status().await {
            Err(e) if e.status() == Some(401) => {
                return Ok(Outcome::NotLoggedIn(
                    "IBKR refused the fleet's stored tokens (401): the leader recovers the session; check `ibauth keepalive` runs somewhere (status never logs in)",
                ));
            }
            other => other?,
        };
        out.step(
            "auth status",
            t.elapsed(),
            &format!("POST /v1/api/iserver/auth/status, {}", flags(&status)),
            flags_json(&status),
        );
        summary(out, session);
        return Ok(Outcome::Flags(status));
    }
    let tickle = match session.tickle().await {
        Err(e) if e.status() == Some(401) => {
            return Ok(Outcome::NotLoggedIn(
                "IBKR refused the stored tokens (401): run `ibauth login` (status never logs in)",
            ));
        }
        other => report_tickle(out, other, Instant::now())?,
    };
    summary(out, session);
    Ok(Outcome::Flags(tickle.auth_status().clone()))
}

/// Who leads the fleet (lease holder and generation), who follows, and the stored document's
/// key — as the shared store sees them.
fn report_fleet(out: Out, fleet: &FleetStatus, took: Duration) {
    let safe = crate::render::terminal_safe;
    let leader = fleet.lease.as_ref().map(|l| &l.holder);
    let about = |id: &str| {
        fleet
            .members
            .iter()
            .find(|m| m.id == id)
            .map(|m| format!(" ({})", safe(&m.about)))
            .unwrap_or_default()
    };
    let followers: Vec<_> = fleet
        .members
        .iter()
        .filter(|m| Some(&m.id) != leader)
        .collect();
    let lead_text = match &fleet.lease {
        Some(l) => format!(
            "leader {}{} — lease generation {}, {} left",
            safe(&l.holder),
            about(&l.holder),
            l.generation,
            human(l.expires_in.as_secs())
        ),
        None => "no leader (no live lease: nobody keeps the session alive)".into(),
    };
    let follow_text = if followers.is_empty() {
        "no followers".to_owned()
    } else {
        format!(
            "followers: {}",
            followers
                .iter()
                .map(|m| format!(
                    "{} ({}, seen {} ago)",
                    safe(&m.id),
                    safe(&m.about),
                    human(m.seen_ago.as_secs())
                ))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let doc_text = match &fleet.document {
        Some(d) => format!(
            "document v{} (generation {}) sealed with key {}{}",
            d.version,
            d.generation,
            safe(&d.key_id),
            if d.current_key {
                " (the current key)"
            } else {
                " (an older key: the leader seals it again with the current one at its next save)"
            }
        ),
        None => "no stored document".into(),
    };
    out.step(
        "fleet",
        took,
        &format!(
            "{}: {lead_text}; {follow_text}; {doc_text}",
            safe(&fleet.store)
        ),
        json!({
            "store": fleet.store,
            "identity": fleet.identity,
            "leader": fleet.lease.as_ref().map(|l| json!({
                "holder": l.holder,
                "generation": l.generation,
                "expires_in_ms": u64::try_from(l.expires_in.as_millis()).unwrap_or(u64::MAX),
            })),
            "followers": followers.iter().map(|m| m.id.clone()).collect::<Vec<_>>(),
            "members": fleet.members.iter().map(|m| json!({
                "id": m.id,
                "leader": Some(&m.id) == leader,
                "about": m.about,
                "seen_ago_ms": u64::try_from(m.seen_ago.as_millis()).unwrap_or(u64::MAX),
            })).collect::<Vec<_>>(),
            "document": fleet.document.as_ref().map(|d| json!({
                "version": d.version,
                "generation": d.generation,
                "key_id": d.key_id,
                "current_key": d.current_key,
            })),
        }),
    );
}

/// A tickle that logs in when needed and initialises the brokerage session when it is not.
async fn tickle(out: Out, session: &Session) -> Result<Outcome, Error> {
    connect(out, session).await?;
    let t = Instant::now();
    let tickle = report_tickle(out, session.tickle_and_init().await, t)?;
    summary(out, session);
    Ok(Outcome::Flags(tickle.auth_status().clone()))
}

fn report_tickle(out: Out, tickle: Result<Tickle, Error>, t: Instant) -> Result<Tickle, Error> {
    let tickle = tickle?;
    crate::render::tickle(out, &tickle, t.elapsed(), None);
    Ok(tickle)
}

/// Token ages and expiries, and the API host.
fn summary(out: Out, session: &Session) {
    let now = now();
    let tokens = session.tokens();
    let listed: Vec<_> = tokens
        .iter()
        .map(|t| {
            json!({
                "kind": t.kind.name(),
                "age_s": now.saturating_sub(t.obtained_at),
                "expires_in_s": t.expires_at.saturating_sub(now),
            })
        })
        .collect();
    let text = tokens
        .iter()
        .map(|t| {
            format!(
                "{} expires in {}",
                t.kind.name(),
                human(t.expires_at.saturating_sub(now))
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let login_age = session.stored().map(|s| s.token_age(now).as_secs());
    let api_base = session.api_base().to_string();
    out.result(
        &format!(
            "  api {api_base}; {text}{}",
            login_age.map_or(String::new(), |a| format!("; logged in {} ago", human(a)))
        ),
        json!({
            "method": session.method().name(),
            "api_base": api_base,
            "tokens": listed,
            "token_age_s": login_age,
        }),
    );
}

async fn token(
    out: Out,
    session: &Session,
    method: &str,
    path: &str,
    curl: bool,
) -> Result<(), Error> {
    connect(out, session).await?;
    let method = parse_method(method)?;
    let url = session.url(path)?;
    let header = session.authorization(&method, &url).await?;
    let value = header
        .to_str()
        .map_err(|_| bad_request("token", "is not printable"))?
        .to_owned();
    let text = if curl {
        let post = if method == Method::GET {
            String::new()
        } else {
            format!(" -X {method}")
        };
        // Single-quoted for the shell, a `'` in the path (URLs keep it) included: the line is
        // meant to be pasted, and must run exactly this request.
        let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
        format!(
            "curl{post} -H {} {}",
            quote(&format!("Authorization: {value}")),
            quote(url.as_str())
        )
    } else {
        value.clone()
    };
    out.result(
        &text,
        json!({ "authorization": value, "method": method.as_str(), "url": url.as_str(), "curl": curl.then_some(&text) }),
    );
    Ok(())
}

async fn logout(out: Out, session: &Session) -> Result<(), Error> {
    let t = Instant::now();
    match session.logout().await? {
        None => out.result(
            "  nothing to log out: no valid stored tokens",
            json!({ "step": "logout", "nothing_stored": true }),
        ),
        Some(logout) => out.step(
            "logout",
            t.elapsed(),
            if logout.already_gone {
                "POST /v1/api/logout, session was already gone"
            } else {
                "POST /v1/api/logout"
            },
            json!({ "status": logout.status, "already_gone": logout.already_gone }),
        ),
    }
    Ok(())
}

/// `ibauth api`: stdout is the answer (pretty JSON on a terminal), so it pipes into `jq`.
async fn api(
    out: Out,
    session: &Session,
    method: &str,
    path: &str,
    query: &[String],
    data: Option<&str>,
) -> ExitCode {
    let request = async {
        let method = parse_method(method)?;
        let mut pairs = Vec::new();
        for item in query {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| bad_request("--query", "must be KEY=VALUE"))?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
        let mut request = session.request(method, path).query(&pairs);
        if let Some(data) = data {
            request = request.json_text(&read_data(data)?);
        }
        connect(out, session).await?;
        request.send().await
    };
    let reply = match request.await {
        Ok(reply) => reply,
        Err(e) => return fail(out, &e),
    };
    let body = reply.text();
    let shown = match serde_json::from_slice::<serde_json::Value>(reply.bytes()) {
        Ok(value) if out.pretty => serde_json::to_string_pretty(&value).unwrap_or(body.into()),
        Ok(value) => value.to_string(),
        Err(_) => body.into_owned(),
    };
    out.answer(&shown);
    if reply.is_success() {
        return ExitCode::SUCCESS;
    }
    match reply.error_for_status() {
        Err(e) => {
            if !out.json {
                out.error_line(&e.to_string());
            }
            ExitCode::from(code::REJECTED)
        }
        Ok(_) => ExitCode::SUCCESS,
    }
}

/// `--data`: JSON text, `@FILE`, or `@-` for stdin; bounded, since it is sent whole.
fn read_data(data: &str) -> Result<String, Error> {
    const MAX: u64 = 4 * 1024 * 1024;
    let Some(file) = data.strip_prefix('@') else {
        return Ok(data.to_owned());
    };
    let read = |reader: &mut dyn std::io::Read| {
        use std::io::Read as _;
        let mut text = String::new();
        reader.take(MAX + 1).read_to_string(&mut text).map(|_| text)
    };
    let text = if file == "-" {
        read(&mut std::io::stdin())
    } else {
        std::fs::File::open(file).and_then(|mut f| read(&mut f))
    }
    .map_err(|e| bad_request("--data", &format!("cannot read {file}: {e}")))?;
    if text.len() as u64 > MAX {
        return Err(bad_request("--data", "is larger than 4 MiB"));
    }
    Ok(text)
}

fn parse_method(method: &str) -> Result<Method, Error> {
    Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| bad_request("method", "is not an HTTP method"))
}

fn bad_request(key: &str, reason: &str) -> Error {
    Error::Config(ibauth::ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

/// `90 s`, `12 min`, `5 h`, `3 d`.
fn human(secs: u64) -> String {
    match secs {
        0..120 => format!("{secs} s"),
        120..7200 => format!("{} min", secs / 60),
        7200..172_800 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::human;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(5), "5 s");
        assert_eq!(human(600), "10 min");
        assert_eq!(human(86_399), "23 h");
        assert_eq!(human(3 * 86_400), "3 d");
    }
}
