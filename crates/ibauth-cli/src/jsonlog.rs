//! `--json` log lines for the gateway, written straight into the line buffer: the same objects
//! as tracing-subscriber's JSON format with flattened fields and no spans (`timestamp`,
//! `level`, the event's fields in order, `target`), for a fraction of its work.
//!
//! The gateway logs a line a request, and the stock formatter was ~5 % of its CPU a request
//! (docs/benchmarks.md): a `String` for the timestamp, the calendar worked out afresh each
//! time, every field through serde. Here the date and time to the second are worked out once
//! a second, numbers are written as they are, and strings are escaped as they are written.
//! A unit test checks the output against the stock formatter's, field types and escapes
//! included.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The event formatter: one JSON object a line.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonLine;

impl<S, N> FormatEvent<S, N> for JsonLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        writer.write_str("{\"timestamp\":\"")?;
        timestamp(&mut writer, SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(meta.level().as_str())?;
        writer.write_char('"')?;
        let mut fields = Fields {
            out: &mut writer,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_str(",\"target\":")?;
        string(&mut writer, meta.target())?;
        writer.write_str("}\n")
    }
}

/// Writes each field as `,"name":value`, as tracing-serde's map visitor serialises it.
struct Fields<'w, W: fmt::Write> {
    out: &'w mut W,
    result: fmt::Result,
}

impl<W: fmt::Write> Fields<'_, W> {
    fn entry(&mut self, field: &Field, value: impl FnOnce(&mut W) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = (|| {
                self.out.write_char(',')?;
                string(self.out, field.name())?;
                self.out.write_char(':')?;
                value(self.out)
            })();
        }
    }
}

impl<W: fmt::Write> Visit for Fields<'_, W> {
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.entry(field, |out| {
            out.write_str(if value { "true" } else { "false" })
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.entry(field, |out| write!(out, "{value}"));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own rendering (`1.0`, not `1`; NaN and infinities as null).
        self.entry(field, |out| {
            write!(out, "{}", serde_json::Value::from(value))
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.entry(field, |out| string(out, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.entry(field, |out| {
            out.write_char('"')?;
            write!(Escaped(out), "{value:?}")?;
            out.write_char('"')
        });
    }
}

/// `s` as a JSON string.
fn string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    Escaped(out).write_str(s)?;
    out.write_char('"')
}

/// Escapes what it is given as serde_json does inside a string: `"`, `\` and the control
/// characters (the usual five by letter, the others as `\u00XX`); everything else as it is.
struct Escaped<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut plain = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0x00..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[plain..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            plain = i + 1;
        }
        self.0.write_str(&s[plain..])
    }
}

thread_local! {
    /// The second last written, and its `YYYY-MM-DDTHH:MM:SS`.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

/// `at` as tracing-subscriber writes it: RFC 3339 in UTC with microseconds.
fn timestamp(out: &mut impl fmt::Write, at: SystemTime) -> fmt::Result {
    let Ok(since) = at.duration_since(UNIX_EPOCH) else {
        // A clock before 1970: rare enough to leave to the stock formatter's arithmetic.
        return write!(out, "{}", civil(at));
    };
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(second, text)| {
        if *second != secs {
            text.clear();
            let full = civil(at);
            // Everything up to the fraction: the first 19 characters for years 0–9999.
            write!(text, "{full}")?;
            match text.find('.') {
                Some(dot) => text.truncate(dot),
                None => return Err(fmt::Error),
            }
            *second = secs;
        }
        out.write_str(text)?;
        write!(out, ".{:06}Z", since.subsec_micros())
    })
}

/// The date and time of `at` in UTC, rendered as tracing-subscriber renders it.
fn civil(at: SystemTime) -> Civil {
    let (secs, negative) = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), false),
        Err(e) => (e.duration().as_secs(), true),
    };
    let micros = match at.duration_since(UNIX_EPOCH) {
        Ok(d) => d.subsec_micros(),
        Err(e) => e.duration().subsec_micros(),
    };
    // Whole seconds before 1970 count down: the last whole second before `at` and the
    // fraction after it.
    let secs = i128::from(secs);
    let (secs, micros) = match (negative, micros) {
        (false, m) => (secs, m),
        (true, 0) => (-secs, 0),
        (true, m) => (-secs - 1, 1_000_000 - m),
    };
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil, on 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i128::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: of_day / 3_600,
        minute: of_day % 3_600 / 60,
        second: of_day % 60,
        micros,
    }
}

struct Civil {
    year: i128,
    month: i128,
    day: i128,
    hour: i128,
    minute: i128,
    second: i128,
    micros: u32,
}

impl fmt::Display for Civil {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.year > 9999 {
            write!(f, "+{}", self.year)?;
        } else if self.year < 0 {
            write!(f, "{:05}", self.year)?;
        } else {
            write!(f, "{:04}", self.year)?;
        }
        write!(
            f,
            "-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            self.month, self.day, self.hour, self.minute, self.second, self.micros
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt as _;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
        type Writer = Lines;
        fn make_writer(&'a self) -> Lines {
            self.clone()
        }
    }

    fn events() {
        tracing::info!(
            target: "ibauth_gateway::access",
            method = %"GET",
            path = "/v1/api/iserver/accounts",
            status = 200u16,
            ms = 3u64,
            upstream_ms = Some(2u64),
            waited_ms = None::<u64>,
            "request"
        );
        tracing::warn!(
            ip = %std::net::Ipv4Addr::new(10, 0, 0, 1),
            allowed = ?["127.0.0.1", "10.*"],
            "refused {}: say \"no\"\\ \n\r\t\u{8}\u{c}\u{1}\u{1f}\u{7f} é ✓",
            "10.0.0.1"
        );
        tracing::error!(
            negative = -7i64,
            big = u64::MAX,
            yes = true,
            no = false,
            ratio = 1.0f64,
            half = 0.5f64,
            nan = f64::NAN,
            huge = 1e300f64,
            wide = 170141183460469231731687303715884105727i128,
            error = &std::io::Error::other("disk \"full\"") as &dyn std::error::Error,
            "a message"
        );
        tracing::debug!(r#type = "raw", empty = "", "");
    }

    /// The same events through the stock JSON format and through [`JsonLine`]: the same
    /// lines, apart from the time each was written.
    #[test]
    fn lines_match_the_stock_json_format() {
        let layer = |lines: &Lines, ours: bool| {
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(lines.clone());
            if ours {
                layer.event_format(JsonLine).boxed()
            } else {
                layer.boxed()
            }
        };
        let stock = Lines::default();
        let ours = Lines::default();
        use tracing_subscriber::Layer as _;
        // No filter: every level is written.
        let subscriber =
            tracing_subscriber::registry().with(vec![layer(&stock, false), layer(&ours, true)]);
        tracing::subscriber::with_default(subscriber, events);
        let read = |lines: &Lines| String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let (stock, ours) = (read(&stock), read(&ours));
        assert_eq!(stock.lines().count(), 4, "{stock}");
        let untimed = |text: &str| -> Vec<serde_json::Value> {
            text.lines()
                .map(|line| {
                    let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
                    let t = v["timestamp"].as_str().unwrap().to_owned();
                    // RFC 3339, UTC, microseconds.
                    assert_eq!(t.len(), 27, "{t}");
                    assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
                    v["timestamp"] = serde_json::Value::Null;
                    v
                })
                .collect()
        };
        assert_eq!(untimed(&stock), untimed(&ours));
        // Byte for byte too (key order and escapes), timestamps aside.
        let strip = |text: &str| -> Vec<String> {
            text.lines()
                .map(|line| line[..14].to_owned() + &line[41..])
                .collect()
        };
        assert_eq!(strip(&stock), strip(&ours));
        assert!(
            ours.contains(r#""message":"refused 10.0.0.1: say \"no\"\\ \n\r\t\b\f\u0001\u001f"#)
        );
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let at =
            |secs: u64, micros: u64| UNIX_EPOCH + Duration::from_micros(secs * 1_000_000 + micros);
        let text = |t: SystemTime| {
            let mut s = String::new();
            timestamp(&mut s, t).unwrap();
            s
        };
        assert_eq!(text(at(0, 0)), "1970-01-01T00:00:00.000000Z");
        assert_eq!(text(at(951_782_400, 7)), "2000-02-29T00:00:00.000007Z");
        assert_eq!(
            text(at(4_107_542_399, 999_999)),
            "2100-02-28T23:59:59.999999Z"
        );
        assert_eq!(text(at(4_107_542_400, 0)), "2100-03-01T00:00:00.000000Z");
        // The cached second is not reused across seconds, and is reused within one.
        assert_eq!(text(at(1_796_146_083, 5)), "2026-12-01T17:28:03.000005Z");
        assert_eq!(text(at(1_796_146_083, 6)), "2026-12-01T17:28:03.000006Z");
        assert_eq!(text(at(1_796_146_084, 0)), "2026-12-01T17:28:04.000000Z");
        assert_eq!(text(at(253_402_300_799, 0)), "9999-12-31T23:59:59.000000Z");
        assert_eq!(
            text(at(253_402_300_800, 0)),
            "+10000-01-01T00:00:00.000000Z"
        );
        assert_eq!(
            text(UNIX_EPOCH - Duration::from_micros(1)),
            "1969-12-31T23:59:59.999999Z"
        );
        assert_eq!(
            text(UNIX_EPOCH - Duration::from_secs(86_400 * 365)),
            "1969-01-01T00:00:00.000000Z"
        );
    }
}
