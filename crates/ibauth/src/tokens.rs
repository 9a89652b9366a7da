//! The tokens a login yields and when they run out — shared by the clients, the token store and
//! the session, so none of them depends on another for it.

use std::time::Duration;

/// A token the session keeps fresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// OAuth 2.0 access token (opens SSO sessions).
    AccessToken,
    /// OAuth 2.0 SSO bearer token (authorises the brokerage session).
    Bearer,
    /// OAuth 1.0a live session token (keys every request's HMAC).
    LiveSessionToken,
}

impl TokenKind {
    /// Short machine-friendly name (`access_token`, `bearer`, `live_session_token`).
    pub fn name(self) -> &'static str {
        match self {
            TokenKind::AccessToken => "access_token",
            TokenKind::Bearer => "bearer",
            TokenKind::LiveSessionToken => "live_session_token",
        }
    }
}

/// When a held token was obtained and when it expires (Unix seconds, the client's clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenExpiry {
    /// Which token.
    pub kind: TokenKind,
    /// When it was obtained.
    pub obtained_at: u64,
    /// When it expires.
    pub expires_at: u64,
}

impl TokenExpiry {
    /// Whether to renew it now: within `margin` of expiry, where the margin is at most half
    /// the token's lifetime (so a short-lived token is not renewed on every turn).
    pub fn due(&self, now: u64, margin: Duration) -> bool {
        let lifetime = self.expires_at.saturating_sub(self.obtained_at);
        let margin = margin.as_secs().min(lifetime / 2);
        self.expires_at.saturating_sub(now) <= margin
    }
}

/// The shortest lifetime believed from a server. Below it a token could not be renewed before
/// it runs out (the clocks here count whole seconds, and a renewal takes round trips); IBKR's
/// live for about 24 h, the sandbox's test tokens for 3 s and more. What keeps a server that
/// grants absurdly short lifetimes from driving the keep-alive into a loop is the spacing
/// between renewals ([`min_renewal_spacing`]), not this floor.
pub const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(2);

/// The longest lifetime believed from a server: twice IBKR's ~24 h. A longer one (`expires_in`
/// of 2^64 − 1, an LST expiring in the year 3000) is a broken or hostile server; believing it
/// would only stop renewals, and overflow the arithmetic on it.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(48 * 3600);

/// The least time between two renewals by the keep-alive.
pub const MIN_RENEWAL_SPACING: Duration = Duration::from_secs(1);

/// The least time between two renewals for a renewal `margin`: half of it, at least
/// [`MIN_RENEWAL_SPACING`]. A token becomes due `margin` before it expires, so it is still
/// renewed `margin / 2` before then; a server whose fresh tokens are due at once (lifetime 0,
/// an LST already expired, `ssoExpires: 0`) gets one renewal per half margin — every 5 min with
/// the default 10 min margin — instead of one per round trip.
pub fn min_renewal_spacing(margin: Duration) -> Duration {
    (margin / 2).max(MIN_RENEWAL_SPACING)
}

/// A lifetime granted by the server (seconds), within [`MIN_TOKEN_LIFETIME`] and
/// [`MAX_TOKEN_LIFETIME`]; a warning says when it was not.
pub(crate) fn sane_lifetime(kind: TokenKind, field: &'static str, secs: u64) -> u64 {
    let (min, max) = (MIN_TOKEN_LIFETIME.as_secs(), MAX_TOKEN_LIFETIME.as_secs());
    if (min..=max).contains(&secs) {
        return secs;
    }
    let used = secs.clamp(min, max);
    tracing::warn!(
        token = kind.name(),
        field,
        from_server_s = secs,
        used_s = used,
        "implausible token lifetime from the server; clamped"
    );
    used
}

/// Time left on a token as the server reports it later (`EXPIRES`, `ssoExpires`), at most
/// [`MAX_TOKEN_LIFETIME`] (no floor: a token does run out). `warn` says whether to log it when
/// clamped (a tickle repeats the same absurd value every minute).
pub(crate) fn sane_time_left(
    kind: TokenKind,
    field: &'static str,
    left: Duration,
    warn: bool,
) -> u64 {
    let secs = left.as_secs();
    let max = MAX_TOKEN_LIFETIME.as_secs();
    if secs > max && warn {
        tracing::warn!(
            token = kind.name(),
            field,
            from_server_s = secs,
            used_s = max,
            "implausible token expiry from the server; clamped"
        );
    }
    secs.min(max)
}

/// A whole, non-negative number from a JSON answer, leniently: `86399`, `"86399"`, `86399.0`
/// or `8.6e4`. Negative, infinite or non-numeric values are `None`; values beyond
/// `u64` saturate (no cast that wraps, nothing that panics).
pub(crate) fn lenient_u64(value: &serde_json::Value) -> Option<u64> {
    let from_f64 = |f: f64| {
        // `as` saturates at u64::MAX, so only the sign and finiteness need checking.
        (f.is_finite() && f >= 0.0).then_some(f as u64)
    };
    match value {
        serde_json::Value::Number(n) => n.as_u64().or_else(|| n.as_f64().and_then(from_f64)),
        serde_json::Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(from_f64))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_within_the_margin_capped_at_half_the_lifetime() {
        let day = TokenExpiry {
            kind: TokenKind::Bearer,
            obtained_at: 1_000,
            expires_at: 1_000 + 86_400,
        };
        let margin = Duration::from_secs(600);
        assert!(!day.due(1_000, margin));
        assert!(!day.due(day.expires_at - 601, margin));
        assert!(day.due(day.expires_at - 600, margin));
        assert!(day.due(day.expires_at + 5, margin), "already expired");
        let short = TokenExpiry {
            kind: TokenKind::LiveSessionToken,
            obtained_at: 1_000,
            expires_at: 1_004,
        };
        assert!(!short.due(1_000, margin), "not renewed right after login");
        assert!(!short.due(1_001, margin));
        assert!(short.due(1_002, margin), "half its lifetime left");
    }

    #[test]
    fn lifetimes_are_clamped_and_numbers_parsed_without_overflow() {
        let kind = TokenKind::AccessToken;
        assert_eq!(sane_lifetime(kind, "expires_in", 86_399), 86_399);
        assert_eq!(sane_lifetime(kind, "expires_in", 0), 2);
        assert_eq!(sane_lifetime(kind, "expires_in", 1), 2);
        assert_eq!(sane_lifetime(kind, "expires_in", u64::MAX), 48 * 3600);
        let left = |ms| sane_time_left(kind, "EXPIRES", Duration::from_millis(ms), true);
        assert_eq!(left(0), 0, "running out now is believed");
        assert_eq!(left(90_000), 90);
        assert_eq!(left(u64::MAX), 48 * 3600);

        use serde_json::json;
        assert_eq!(lenient_u64(&json!(86_399)), Some(86_399));
        assert_eq!(lenient_u64(&json!("86399")), Some(86_399));
        assert_eq!(lenient_u64(&json!(" 86399.9 ")), Some(86_399));
        assert_eq!(lenient_u64(&json!(8.6e4)), Some(86_000));
        assert_eq!(lenient_u64(&json!(u64::MAX)), Some(u64::MAX));
        assert_eq!(lenient_u64(&json!(1e300)), Some(u64::MAX), "saturates");
        assert_eq!(lenient_u64(&json!("1e300")), Some(u64::MAX));
        assert_eq!(lenient_u64(&json!(-1)), None);
        assert_eq!(lenient_u64(&json!(-0.5)), None);
        assert_eq!(lenient_u64(&json!("-5")), None);
        assert_eq!(lenient_u64(&json!("NaN")), None);
        assert_eq!(lenient_u64(&json!("inf")), None);
        assert_eq!(lenient_u64(&json!(null)), None);
        assert_eq!(lenient_u64(&json!([1])), None);
    }

    #[test]
    fn renewals_are_spaced_by_half_the_margin() {
        assert_eq!(
            min_renewal_spacing(Duration::from_secs(600)),
            Duration::from_secs(300)
        );
        assert_eq!(
            min_renewal_spacing(Duration::from_secs(2)),
            Duration::from_secs(1)
        );
        assert_eq!(min_renewal_spacing(Duration::ZERO), MIN_RENEWAL_SPACING);
    }
}
