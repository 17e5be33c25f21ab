//! The API server's clock (issue 10 F8). Operators on different machines continue the same
//! rollout, so every time this process stores (a step's start, transitions, lease renewals)
//! or compares with a stored time must come from one clock they share: the API server's.
//! Each process measures its offset to the server from the `Date` header of a `/version`
//! request when it connects (runners again every few minutes) and [`now`] applies it. An
//! operator whose clock is ten minutes behind therefore neither skips a step's soak for the
//! next operator nor makes a live runner's lease look lapsed to another.

use chrono::{DateTime, TimeDelta, Utc};
use kube::Client;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

/// Offsets smaller than this are left at 0: the `Date` header has whole seconds, so a
/// smaller measured offset is within the measurement's own error, and a host clock kept by
/// NTP is more precise than that.
const NEGLIGIBLE: TimeDelta = TimeDelta::seconds(1);
/// A sync that takes longer is not waited for (the command's own requests report an
/// unreachable cluster in their words).
const SYNC_TIMEOUT: Duration = Duration::from_secs(5);
/// Environment variable that shifts this process's own clock, so the tests can run
/// operators whose clocks are wrong ("-10m", "90s"). Never needed in production.
pub const TEST_SKEW_ENV: &str = "KUBECTL_CANARY_TEST_CLOCK_SKEW";

static OFFSET_MS: AtomicI64 = AtomicI64::new(0);

/// The current time on the API server's clock (as far as this process measured it).
pub fn now() -> DateTime<Utc> {
    local_now() + TimeDelta::milliseconds(OFFSET_MS.load(Ordering::Relaxed))
}

/// This host's clock, shifted by the test skew if one is set.
fn local_now() -> DateTime<Utc> {
    Utc::now() + injected_skew()
}

fn injected_skew() -> TimeDelta {
    static SKEW: OnceLock<TimeDelta> = OnceLock::new();
    *SKEW.get_or_init(|| {
        std::env::var(TEST_SKEW_ENV)
            .ok()
            .and_then(|s| parse_signed(&s))
            .unwrap_or_default()
    })
}

/// "-10m" → −600 s, "90s" or "+90s" → 90 s; None when not a duration.
fn parse_signed(text: &str) -> Option<TimeDelta> {
    let t = text.trim();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1, r),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let d = humantime::parse_duration(rest.trim()).ok()?;
    TimeDelta::from_std(d).ok().map(|d| d * sign)
}

/// The offset from a `Date` header's `server` time (whole seconds, truncated) seen between
/// `sent` and `received` on this host: the server's time when it answered was in
/// [server, server + 1 s), and the answer was made about half way through the round trip.
pub fn offset_from(
    server: DateTime<Utc>,
    sent: DateTime<Utc>,
    received: DateTime<Utc>,
) -> TimeDelta {
    let server_mid = server + TimeDelta::milliseconds(500);
    let local_mid = sent + (received - sent) / 2;
    let off = server_mid - local_mid;
    if off.abs() < NEGLIGIBLE {
        TimeDelta::zero()
    } else {
        off
    }
}

/// Measures the offset to the API server and applies it to [`now`]. Returns it, or why it
/// could not be measured (then the last offset stays in use).
pub async fn sync(client: &Client) -> Result<TimeDelta, String> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::from(Vec::<u8>::new()))
        .map_err(|e| e.to_string())?;
    let sent = local_now();
    let response = tokio::time::timeout(SYNC_TIMEOUT, client.send(request))
        .await
        .map_err(|_| format!("no answer from the API server in {SYNC_TIMEOUT:?}"))?
        .map_err(|e| e.to_string())?;
    let received = local_now();
    let date = response
        .headers()
        .get(http::header::DATE)
        .ok_or("the API server's answer has no Date header")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let server: DateTime<Utc> = httpdate::parse_http_date(date)
        .map_err(|e| format!("Date header {date:?}: {e}"))?
        .into();
    let off = offset_from(server, sent, received);
    OFFSET_MS.store(off.num_milliseconds(), Ordering::Relaxed);
    Ok(off)
}

/// For processes that run for hours (`run`): measures the offset again every few minutes,
/// so a host clock that drifts or is stepped later is followed.
pub async fn keep_synced(client: Client) {
    const EVERY: Duration = Duration::from_secs(300);
    loop {
        tokio::time::sleep(EVERY).await;
        let _ = sync(&client).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64, ms: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap() + TimeDelta::milliseconds(ms)
    }

    #[test]
    fn offset_of_a_clock_ten_minutes_behind() {
        // Server says 1000 s; this host sent at 399.9 s and got the answer at 400.1 s.
        let off = offset_from(t(1000, 0), t(400, -100), t(400, 100));
        assert_eq!(off, TimeDelta::milliseconds(600_500));
    }

    #[test]
    fn offset_of_a_clock_ahead_is_negative() {
        let off = offset_from(t(1000, 0), t(1300, 0), t(1300, 200));
        assert_eq!(off, TimeDelta::milliseconds(-299_600));
    }

    #[test]
    fn offsets_within_the_headers_precision_are_ignored() {
        assert_eq!(
            offset_from(t(1000, 0), t(1000, 100), t(1000, 300)),
            TimeDelta::zero()
        );
        assert_eq!(
            offset_from(t(1000, 0), t(999, 800), t(1000, 200)),
            TimeDelta::zero()
        );
    }

    #[test]
    fn signed_skews() {
        assert_eq!(parse_signed("-10m"), Some(TimeDelta::seconds(-600)));
        assert_eq!(parse_signed("90s"), Some(TimeDelta::seconds(90)));
        assert_eq!(parse_signed("+1h"), Some(TimeDelta::seconds(3600)));
        assert_eq!(parse_signed("soon"), None);
    }
}
