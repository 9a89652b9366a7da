//! A limit as data, and its text form (`50/s`, `1/5s`, `1/15min`, `5 concurrent`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A limit: at most `count` requests in any window of `per`, or at most `n` in flight.
///
/// The text form round-trips:
///
/// ```
/// use std::time::Duration;
/// use ibauth::pacing::Limit;
///
/// let limit: Limit = "1 / 5s".parse()?;
/// assert_eq!(limit, Limit::Rate { count: 1, per: Duration::from_secs(5) });
/// assert_eq!(limit.to_string(), "1/5s");
/// assert_eq!("5 concurrent".parse::<Limit>()?, Limit::Concurrent(5));
/// assert_eq!("1/15min".parse::<Limit>()?.to_string(), "1/15min");
/// # Ok::<(), ibauth::pacing::ParseLimitError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// At most `count` requests in any window of length `per` (plus the rules' margin).
    ///
    /// Pacing works in whole milliseconds: a `per` with a fraction of a millisecond is rounded
    /// up, and a zero `count` or `per` is treated as 1 (the parser refuses both).
    Rate {
        /// Requests allowed in a window.
        count: u32,
        /// The window.
        per: Duration,
    },
    /// At most this many requests in flight at once (held by the [`Permit`](super::Permit)
    /// until it is dropped). Counted within one process only: the ledger shares rates, not
    /// in-flight requests, because a crashed process could never give its slots back.
    Concurrent(u32),
}

/// Text that is not a [`Limit`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent{}", reason.map(|r| format!(" ({r})")).unwrap_or_default())]
pub struct ParseLimitError {
    /// The text, as given.
    pub input: String,
    /// What in particular is wrong, when it is more than the syntax.
    pub reason: Option<&'static str>,
}

const MINUTE_MS: u128 = 60_000;
const SECOND_MS: u128 = 1_000;

impl Limit {
    /// The window in whole milliseconds (rounded up, at least 1).
    pub(crate) fn per_ms(per: Duration) -> u64 {
        let ms = per.as_nanos().div_ceil(1_000_000).max(1);
        u64::try_from(ms).unwrap_or(u64::MAX)
    }
}

/// Parses `<amount><unit>` (amount optional: `min` is one minute). `bare` is the unit of a
/// number given without one (`None`: a unit is required).
pub(crate) fn parse_span(text: &str, bare: Option<Duration>) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let amount: u64 = if digits.is_empty() {
        1
    } else {
        digits.parse().ok()?
    };
    let unit = match unit.trim() {
        "" if digits.is_empty() => return None,
        "" => bare?,
        "ms" | "msec" | "millisecond" | "milliseconds" => Duration::from_millis(1),
        "s" | "sec" | "secs" | "second" | "seconds" => Duration::from_secs(1),
        "m" | "min" | "mins" | "minute" | "minutes" => Duration::from_secs(60),
        "h" | "hr" | "hour" | "hours" => Duration::from_secs(3600),
        _ => return None,
    };
    unit.checked_mul(u32::try_from(amount).ok()?)
}

impl FromStr for Limit {
    type Err = ParseLimitError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| ParseLimitError {
            input: input.to_owned(),
            reason,
        };
        let text = input.trim();
        if let Some(n) = text.strip_suffix("concurrent") {
            let n: u32 = n.trim().parse().map_err(|_| fail(None))?;
            if n == 0 {
                return Err(fail(Some("at least 1 must be allowed in flight")));
            }
            return Ok(Limit::Concurrent(n));
        }
        let (count, per) = text.split_once('/').ok_or_else(|| fail(None))?;
        let count: u32 = count.trim().parse().map_err(|_| fail(None))?;
        if count == 0 {
            return Err(fail(Some("the count must be at least 1")));
        }
        let per = parse_span(per, None).ok_or_else(|| fail(None))?;
        if per.is_zero() {
            return Err(fail(Some("the window must be longer than zero")));
        }
        Ok(Limit::Rate { count, per })
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Limit::Concurrent(n) => write!(f, "{n} concurrent"),
            Limit::Rate { count, per } => {
                // Largest unit that divides the window exactly, so the text parses back to
                // the same value.
                let ms = per.as_nanos().div_ceil(1_000_000);
                let (amount, unit) = if ms > 0 && ms % MINUTE_MS == 0 {
                    (ms / MINUTE_MS, "min")
                } else if ms > 0 && ms % SECOND_MS == 0 {
                    (ms / SECOND_MS, "s")
                } else {
                    (ms, "ms")
                };
                if amount == 1 {
                    write!(f, "{count}/{unit}")
                } else {
                    write!(f, "{count}/{amount}{unit}")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(count: u32, ms: u64) -> Limit {
        Limit::Rate {
            count,
            per: Duration::from_millis(ms),
        }
    }

    #[test]
    fn parses_the_published_forms() {
        let cases = [
            ("50/s", rate(50, 1000)),
            ("10/s", rate(10, 1000)),
            ("1/5s", rate(1, 5000)),
            ("1/min", rate(1, 60_000)),
            ("1/15min", rate(1, 900_000)),
            (" 1 / 15 min ", rate(1, 900_000)),
            ("3/250ms", rate(3, 250)),
            ("2/h", rate(2, 3_600_000)),
            ("1/2 seconds", rate(1, 2000)),
            ("5 concurrent", Limit::Concurrent(5)),
            ("  7concurrent ", Limit::Concurrent(7)),
        ];
        for (text, want) in cases {
            assert_eq!(text.parse::<Limit>(), Ok(want), "{text}");
        }
    }

    #[test]
    fn prints_the_shortest_form() {
        assert_eq!(rate(50, 1000).to_string(), "50/s");
        assert_eq!(rate(1, 5000).to_string(), "1/5s");
        assert_eq!(rate(1, 60_000).to_string(), "1/min");
        assert_eq!(rate(1, 900_000).to_string(), "1/15min");
        assert_eq!(rate(1, 90_000).to_string(), "1/90s");
        assert_eq!(rate(4, 1500).to_string(), "4/1500ms");
        assert_eq!(rate(4, 1).to_string(), "4/ms");
        assert_eq!(Limit::Concurrent(5).to_string(), "5 concurrent");
    }

    #[test]
    fn text_round_trips_for_many_values() {
        // A small deterministic spread of counts and windows, including unit boundaries.
        let windows = [
            1, 2, 999, 1000, 1001, 59_999, 60_000, 61_000, 120_000, 3_600_000,
        ];
        for count in [1, 2, 49, 50, u32::MAX] {
            for ms in windows {
                let limit = rate(count, ms);
                let text = limit.to_string();
                assert_eq!(text.parse::<Limit>(), Ok(limit), "{text}");
            }
            let limit = Limit::Concurrent(count);
            assert_eq!(limit.to_string().parse::<Limit>(), Ok(limit));
        }
    }

    #[test]
    fn errors_quote_the_text_and_show_the_forms() {
        for bad in [
            "10/x", "", "/s", "ten/s", "10", "10/", "1/5", "-1/s", "1/0s", "0/s", "1/s/s",
        ] {
            let err = bad.parse::<Limit>().unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("`{bad}` is not a limit")),
                "{text}"
            );
            assert!(text.contains("10/s, 1/5s, 1/min or 5 concurrent"), "{text}");
        }
        assert_eq!(
            "10/x".parse::<Limit>().unwrap_err().to_string(),
            "`10/x` is not a limit such as 10/s, 1/5s, 1/min or 5 concurrent"
        );
        assert!(
            "0/s"
                .parse::<Limit>()
                .unwrap_err()
                .to_string()
                .ends_with("(the count must be at least 1)")
        );
        assert!("0 concurrent".parse::<Limit>().is_err());
        // A window too long for a Duration is refused, not wrapped.
        assert!("1/99999999999999h".parse::<Limit>().is_err());
    }

    #[test]
    fn windows_round_up_to_whole_milliseconds() {
        assert_eq!(Limit::per_ms(Duration::from_micros(1500)), 2);
        assert_eq!(Limit::per_ms(Duration::ZERO), 1);
        assert_eq!(Limit::per_ms(Duration::MAX), u64::MAX);
    }
}
