//! Output (text or JSON lines) and exit codes.

use std::process::ExitCode;
use std::time::Duration;

use ibauth::{AuthStatus, Error, Tickle};
use serde_json::{Value, json};

/// Exit codes, documented in `--help`.
pub mod code {
    pub const OTHER: u8 = 1;
    pub const CONFIG: u8 = 3;
    pub const REJECTED: u8 = 4;
    pub const NETWORK: u8 = 5;
    pub const NOT_AUTHENTICATED: u8 = 6;
}

pub const GREEN: &str = "32";
pub const YELLOW: &str = "33";
pub const RED: &str = "31";

/// Where results go: text for people, JSON lines for programs.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    pub json: bool,
    /// Text mode only: report steps and headings (off for `token`, whose stdout is the value).
    pub steps: bool,
    /// Colour the status tags.
    pub color: bool,
    /// Show what a slow step is waiting for (stderr is a terminal).
    pub progress: bool,
    /// Indent JSON answers for people (stdout is a terminal, not JSON mode).
    pub pretty: bool,
    /// Stdout carries only the command's own output (`api`, `ws`, `keepalive`): no step lines.
    pub answer_only: bool,
}

impl Out {
    /// One step's result: a text line, or a JSON object with `step` and `ms`.
    pub fn step(&self, name: &str, took: Duration, text: &str, mut fields: Value) {
        let ms = took.as_secs_f64() * 1000.0;
        if self.answer_only || !self.json && !self.steps {
            return;
        }
        if self.json {
            if let Value::Object(map) = &mut fields {
                map.insert("step".into(), json!(name));
                map.insert("ms".into(), json!((ms * 1000.0).round() / 1000.0));
            }
            println!("{fields}");
        } else {
            self.clear_progress();
            println!(
                "  {}  {name:<18} {ms:>8.1} ms  {text}",
                self.paint("ok", GREEN)
            );
        }
    }

    /// `text` in `colour` when colour is on.
    pub fn paint(&self, text: &str, colour: &str) -> String {
        if self.color {
            format!("\x1b[{colour}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// "… what is happening" on the terminal until the next line replaces it; nothing when
    /// piped or in JSON mode.
    pub fn progress(&self, text: &str) {
        if self.progress {
            eprint!("\r\x1b[K  …   {text}");
            let _ = std::io::Write::flush(&mut std::io::stderr());
        }
    }

    pub fn clear_progress(&self) {
        if self.progress {
            eprint!("\r\x1b[K");
        }
    }

    /// A heading (text mode only).
    pub fn heading(&self, text: &str) {
        if !self.json && self.steps {
            println!("{text}");
        }
    }

    /// A final object (JSON) or line (text).
    pub fn result(&self, text: &str, fields: Value) {
        self.clear_progress();
        if self.json {
            println!("{fields}");
        } else {
            println!("{text}");
        }
    }
}

/// One tickle's step: the flags and the start of the session id (`nth`: "tickle 2/3").
pub fn tickle(out: Out, tickle: &Tickle, took: Duration, nth: Option<(u32, u32)>) {
    let status = tickle.auth_status();
    let mut fields = flags_json(status);
    fields["session"] = json!(tickle.session_short());
    fields["sso_expires_in"] = json!(tickle.sso_expires_in().map(|d| d.as_secs()));
    let label = match nth {
        Some((n, of)) => {
            fields["n"] = json!(n);
            format!("tickle {n}/{of}")
        }
        None => "tickle".to_owned(),
    };
    out.step(
        if out.json { "tickle" } else { &label },
        took,
        &format!(
            "POST /v1/api/tickle, session {}, {}",
            tickle.session_short(),
            flags(status)
        ),
        fields,
    );
}

pub fn flags(status: &AuthStatus) -> String {
    format!(
        "authenticated={} competing={} connected={}",
        status.authenticated, status.competing, status.connected
    )
}

pub fn flags_json(status: &AuthStatus) -> Value {
    json!({
        "authenticated": status.authenticated,
        "competing": status.competing,
        "connected": status.connected,
    })
}

/// Prints an error to stderr (or as JSON on stdout) and picks the exit code.
pub fn fail(out: Out, err: &Error) -> ExitCode {
    let code = match err {
        // A token file that is exposed or from a newer ibauth needs the user's hand, like a config.
        Error::Config(_) | Error::Store(_) => code::CONFIG,
        Error::Rejected { .. } => code::REJECTED,
        // A turn too far away under the pacing limits is a wait that did not fit, like a timeout.
        Error::Timeout { .. }
        | Error::Network { .. }
        | Error::PublicIp { .. }
        | Error::Paced { .. } => code::NETWORK,
        Error::Protocol { .. } | Error::NotReady { .. } => code::OTHER,
        _ => code::OTHER,
    };
    if out.json {
        println!(
            "{}",
            json!({
                "error": err.to_string(),
                "step": err.step().map(|s| s.name()),
                "status": err.status(),
                "exit_code": code,
            })
        );
    } else {
        out.clear_progress();
        eprintln!("{}: {err}", out.paint("error", RED));
    }
    ExitCode::from(code)
}

pub fn not_authenticated(out: Out, status: &AuthStatus) -> ExitCode {
    let message = format!(
        "the brokerage session is not authenticated ({}){}",
        flags(status),
        if status.competing {
            "; another login holds it: set `compete: true` to take it over"
        } else {
            ""
        }
    );
    if out.json {
        println!(
            "{}",
            json!({ "error": message, "exit_code": code::NOT_AUTHENTICATED })
        );
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::from(code::NOT_AUTHENTICATED)
}

/// No usable session where a command will not log in (`status`): exit 6 with what to run.
pub fn not_logged_in(out: Out, message: &str) -> ExitCode {
    if out.json {
        println!(
            "{}",
            json!({ "error": message, "logged_in": false, "exit_code": code::NOT_AUTHENTICATED })
        );
    } else {
        out.clear_progress();
        eprintln!("{}: {message}", out.paint("error", RED));
    }
    ExitCode::from(code::NOT_AUTHENTICATED)
}
