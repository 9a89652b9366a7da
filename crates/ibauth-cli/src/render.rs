//! Output (text or JSON lines) and exit codes.
//!
//! Every line for people passes through [`terminal_safe`] here: session ids, IBKR's messages
//! and error details come from the server, and a server (or anything between) must not be
//! able to drive the user's terminal with escape sequences. JSON lines pass through
//! [`json_line`], which keeps them valid JSON with the same values.

use std::borrow::Cow;
use std::io::IsTerminal;
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
            println!("{}", json_line(&fields));
        } else {
            self.clear_progress();
            println!(
                "  {}  {name:<18} {ms:>8.1} ms  {}",
                self.paint("ok", GREEN),
                terminal_safe(text)
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
            eprint!("\r\x1b[K  …   {}", terminal_safe(text));
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
            println!("{}", terminal_safe(text));
        }
    }

    /// A final object (JSON) or line (text).
    pub fn result(&self, text: &str, fields: Value) {
        self.clear_progress();
        if self.json {
            println!("{}", json_line(&fields));
        } else {
            println!("{}", terminal_safe(text));
        }
    }

    /// A command's answer as received (`api`'s body, `ws`'s messages), for programs: as is
    /// when piped, made [`terminal_safe`] when stdout is a terminal.
    pub fn answer(&self, text: &str) {
        if std::io::stdout().is_terminal() {
            println!("{}", terminal_safe(text));
        } else {
            println!("{text}");
        }
    }

    /// An error line on stderr (text mode), made [`terminal_safe`].
    pub fn error_line(&self, text: &str) {
        self.clear_progress();
        crate::logbuf::flush();
        eprintln!("{}: {}", self.paint("error", RED), terminal_safe(text));
    }
}

/// `text` with every character that could drive a terminal shown as an escape instead
/// (`\u{1b}`): C0 controls but newline and tab (ESC starts colour, cursor, title and
/// hyperlink sequences; CR overwrites the line), DEL, C1 controls (U+009B is a one-character
/// CSI to some terminals), and the bidirectional overrides and isolates (they reorder what is
/// shown). Newlines stay: multi-line messages are laid out by this program.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_for_terminal) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_for_terminal(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn unsafe_for_terminal(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `value` as one line of JSON. serde_json already writes C0 controls as escapes; DEL, C1 and
/// the bidirectional controls it writes raw, so they are escaped here too (`\u009b`). Outside
/// strings JSON text is ASCII, so only string contents change, and only in form: the line
/// parses to the same value.
pub fn json_line(value: &Value) -> String {
    let line = value.to_string();
    if !line.chars().any(unsafe_for_terminal) {
        return line;
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        if unsafe_for_terminal(c) {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
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
        // A fleet without its key, a store URL or schema this build cannot use, an OAuth 2.0
        // session bound to another host's address: the deployment needs fixing.
        Error::IpBound { .. }
        | Error::Fleet(
            ibauth::coord::CoordError::Key(_)
            | ibauth::coord::CoordError::Config(_)
            | ibauth::coord::CoordError::Schema { .. },
        ) => code::CONFIG,
        Error::Fleet(ibauth::coord::CoordError::Unavailable { .. }) => code::NETWORK,
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
            json_line(&json!({
                "error": err.to_string(),
                "step": err.step().map(|s| s.name()),
                "status": err.status(),
                "exit_code": code,
            }))
        );
    } else {
        out.error_line(&err.to_string());
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
            json_line(&json!({ "error": message, "exit_code": code::NOT_AUTHENTICATED }))
        );
    } else {
        crate::logbuf::flush();
        eprintln!("error: {}", terminal_safe(&message));
    }
    ExitCode::from(code::NOT_AUTHENTICATED)
}

/// No usable session where a command will not log in (`status`): exit 6 with what to run.
pub fn not_logged_in(out: Out, message: &str) -> ExitCode {
    if out.json {
        println!(
            "{}",
            json_line(
                &json!({ "error": message, "logged_in": false, "exit_code": code::NOT_AUTHENTICATED })
            )
        );
    } else {
        out.error_line(message);
    }
    ExitCode::from(code::NOT_AUTHENTICATED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_are_shown_not_sent() {
        let hostile = "s\u{1b}[31mred\u{1b}]0;title\u{7}\r\u{9b}2J\u{7f}\u{202e}txt\u{0}";
        let safe = terminal_safe(hostile);
        assert!(
            !safe
                .chars()
                .any(|c| c.is_control() || ('\u{202a}'..='\u{202e}').contains(&c)),
            "{safe:?}"
        );
        assert_eq!(
            safe,
            "s\\u{1b}[31mred\\u{1b}]0;title\\u{7}\\u{d}\\u{9b}2J\\u{7f}\\u{202e}txt\\u{0}"
        );
        // Layout this program makes stays; plain text is not copied.
        assert_eq!(terminal_safe("a\n\tb"), "a\n\tb");
        assert!(matches!(terminal_safe("plain ünïcode"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_lines_stay_valid_and_equal_with_no_raw_control_left() {
        let value = json!({
            "session": "s\u{1b}[31mred\u{9b}\u{7f}\u{202e}\u{0}\n",
            "nested": ["\u{2066}x", {"k\u{1b}": 1}],
        });
        let line = json_line(&value);
        assert!(!line.chars().any(unsafe_for_terminal), "{line}");
        assert!(!line.contains('\n'), "one line: {line}");
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
        assert!(
            line.contains("\\u009b") && line.contains("\\u001b"),
            "{line}"
        );
    }
}
