//! IBKR's nightly maintenance on a schedule: every brokerage session dropped (and every
//! session id changed) at a time of day, in a timezone given as a UTC offset — IBKR does it
//! at 01:00 regional time. Off unless asked for, for long-running tests.

use std::str::FromStr;
use std::time::Duration;

use crate::control::Control;
use crate::state::{Shared, lock};

const DAY: i128 = 86_400;
/// Widest UTC offset in use (±18 h, as ISO 8601 and `chrono` allow).
const MAX_OFFSET_MINUTES: i16 = 18 * 60;
/// How often the schedule looks at the sandbox's clock. The clock may be a test's
/// `FixedClock` moved by hand, so it is polled rather than slept on.
const POLL: Duration = Duration::from_millis(200);

/// When the nightly reset happens: a time of day at a fixed UTC offset.
///
/// ```
/// use ibauth_sandbox::NightlyReset;
/// // 01:00 US/Eastern standard time.
/// let reset: NightlyReset = "01:00-05:00".parse()?;
/// assert_eq!(reset, NightlyReset::at(1, 0, -300)?);
/// // 1_700_000_000 is 2023-11-14 22:13:20 UTC; the last 06:00 UTC before it was that morning.
/// assert_eq!(reset.latest_at_or_before(1_700_000_000), 1_699_941_600);
/// # Ok::<(), ibauth_sandbox::NightlyResetError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NightlyReset {
    minute_of_day: u16,
    offset_minutes: i16,
}

/// A nightly-reset time that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid nightly reset time: {0} (expected HH:MM, HH:MMZ or HH:MM±HH:MM)")]
pub struct NightlyResetError(&'static str);

impl NightlyReset {
    /// At `hour:minute` in a zone `offset_minutes` east of UTC (US/Eastern standard time is
    /// −300, CEST +120, HKT +480).
    pub fn at(hour: u8, minute: u8, offset_minutes: i16) -> Result<Self, NightlyResetError> {
        if hour > 23 || minute > 59 {
            return Err(NightlyResetError(
                "the hour must be 0–23 and the minute 0–59",
            ));
        }
        if !(-MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES).contains(&offset_minutes) {
            return Err(NightlyResetError("the UTC offset must be within ±18:00"));
        }
        Ok(Self {
            minute_of_day: u16::from(hour) * 60 + u16::from(minute),
            offset_minutes,
        })
    }

    /// At `hour:minute` UTC.
    pub fn at_utc(hour: u8, minute: u8) -> Result<Self, NightlyResetError> {
        Self::at(hour, minute, 0)
    }

    /// The latest reset time (Unix seconds) at or before `now_unix`.
    pub fn latest_at_or_before(&self, now_unix: u64) -> u64 {
        // i128: no value of u64 or of the offset can overflow it.
        let offset = i128::from(self.offset_minutes) * 60;
        let local = i128::from(now_unix) + offset;
        let mut reset_local = local.div_euclid(DAY) * DAY + i128::from(self.minute_of_day) * 60;
        if reset_local > local {
            reset_local -= DAY;
        }
        u64::try_from(reset_local - offset).unwrap_or(0)
    }
}

impl FromStr for NightlyReset {
    type Err = NightlyResetError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (time, zone) = text
            .split_at_checked(text.len().min(5))
            .ok_or(NightlyResetError("times are written HH:MM"))?;
        let (hour, minute) = hh_mm(time)?;
        let offset = match zone {
            "" | "Z" | "z" => 0,
            _ => {
                let (sign, rest) = match zone.split_at_checked(1) {
                    Some(("+", rest)) => (1, rest),
                    Some(("-", rest)) => (-1, rest),
                    _ => return Err(NightlyResetError("the offset must start with + or -")),
                };
                let (h, m) = hh_mm(rest)?;
                sign * (i16::from(h) * 60 + i16::from(m))
            }
        };
        Self::at(hour, minute, offset)
    }
}

/// `HH:MM` as numbers (range checked by the caller).
fn hh_mm(text: &str) -> Result<(u8, u8), NightlyResetError> {
    let (h, m) = text
        .split_once(':')
        .filter(|(h, m)| h.len() == 2 && m.len() == 2)
        .ok_or(NightlyResetError("times are written HH:MM"))?;
    let number = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse::<u8>().ok())
            .flatten()
            .ok_or(NightlyResetError("HH and MM are two digits each"))
    };
    Ok((number(h)?, number(m)?))
}

/// Runs the schedule until the sandbox stops (the handle is aborted then).
pub(crate) fn spawn(state: Shared, schedule: NightlyReset) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = schedule.latest_at_or_before(lock(&state).now());
        let mut poll = tokio::time::interval(POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            poll.tick().await;
            let latest = schedule.latest_at_or_before(lock(&state).now());
            // A clock moved back (a test's) sets the mark back without a reset.
            if latest > last {
                tracing::info!("sandbox nightly reset: brokerage sessions dropped");
                Control {
                    state: state.clone(),
                }
                .nightly_reset();
            }
            last = latest;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::NightlyReset;

    #[test]
    fn times_and_offsets_parse_and_bad_ones_do_not() {
        let at = |h, m, o| NightlyReset::at(h, m, o).ok();
        assert_eq!("01:00".parse().ok(), at(1, 0, 0));
        assert_eq!("01:00Z".parse().ok(), at(1, 0, 0));
        assert_eq!("01:00+08:00".parse().ok(), at(1, 0, 480));
        assert_eq!("23:59-05:30".parse().ok(), at(23, 59, -330));
        for bad in [
            "",
            "1:00",
            "24:00",
            "01:60",
            "01:00+",
            "01:00+8",
            "01:00+19:00",
            "01:00 UTC",
            "+1:00",
            "01:0a",
            "０1:00",
            "01:00+08:00x",
        ] {
            assert!(bad.parse::<NightlyReset>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_latest_reset_respects_the_offset_and_never_overflows() {
        // 2023-11-14 22:13:20 UTC.
        let now = 1_700_000_000;
        let utc = NightlyReset::at_utc(1, 0).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(utc.latest_at_or_before(now), 1_699_923_600); // 2023-11-14 01:00 UTC
        // 01:00 at UTC−5 is 06:00 UTC.
        let eastern = NightlyReset::at(1, 0, -300).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(eastern.latest_at_or_before(now), 1_699_941_600);
        // 01:00 at UTC+8 is 17:00 UTC the day before: 2023-11-15 01:00 HKT.
        let hkt = NightlyReset::at(1, 0, 480).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hkt.latest_at_or_before(now), 1_699_981_200);
        // Exactly at the reset counts as reached.
        assert_eq!(utc.latest_at_or_before(1_699_923_600), 1_699_923_600);
        assert_eq!(utc.latest_at_or_before(0), 0);
        assert!(utc.latest_at_or_before(u64::MAX) > u64::MAX - 86_400);
        let east = NightlyReset::at(0, 0, 18 * 60).unwrap_or_else(|e| panic!("{e}"));
        assert!(east.latest_at_or_before(u64::MAX) < u64::MAX);
    }
}
