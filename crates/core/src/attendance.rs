//! Is anybody watching a rollout? A rollout is *attended* while a runner holds its lease, or
//! while evaluations keep coming (a CI job that runs `step` on a timer). A rollout whose
//! canary has traffic and that nobody has seen for longer than its grace period is
//! *unattended*; `max_unattended` in the schedule bounds how long that may last.

use super::rollout::{Phase, Rollout};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// What the rollout's lease says (None fields: no lease, or released).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LeaseFacts {
    pub holder: Option<String>,
    pub renewed_at: Option<DateTime<Utc>>,
    pub duration: Option<Duration>,
}

impl LeaseFacts {
    /// The moment the holder's claim lapses (None: nobody holds it).
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.holder.as_ref()?;
        let renewed = self.renewed_at?;
        let d = chrono::Duration::from_std(self.duration?).ok()?;
        Some(renewed + d)
    }

    /// The holder, if its claim has not lapsed at `now`.
    pub fn live_holder(&self, now: DateTime<Utc>) -> Option<&str> {
        match self.expires_at() {
            Some(exp) if exp > now => self.holder.as_deref(),
            _ => None,
        }
    }
}

/// How a rollout is watched at one moment.
#[derive(Debug, Clone, PartialEq)]
pub enum Attendance {
    /// A runner holds the lease.
    Held { holder: String },
    /// No live lease, but the rollout was evaluated recently (within the grace period).
    Recent,
    /// The canary has traffic and nobody has looked since `last_seen`.
    Unattended { last_seen: DateTime<Utc> },
    /// Nothing to watch: no canary traffic, paused for a human, or finished.
    Idle,
}

/// Phases in which the canary has traffic that only a runner moves on. Paused is excluded:
/// it waits for a human by design.
fn needs_a_runner(r: &Rollout) -> bool {
    matches!(
        r.phase,
        Phase::Progressing | Phase::RollingBack | Phase::Aborting | Phase::Promoting
    ) && r.weight > 0
}

/// The last time anybody acted on the rollout: the lease's renewal, its last evaluation or
/// its last transition.
pub fn last_seen(r: &Rollout, lease: &LeaseFacts) -> DateTime<Utc> {
    [
        lease.renewed_at,
        r.last_evaluation().map(|e| e.at),
        r.history.last().map(|t| t.at),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(r.started_at)
}

/// `grace`: how long after the last sign of life the rollout still counts as watched when no
/// lease is live (the lease duration, or three intervals).
pub fn attendance(
    r: &Rollout,
    lease: &LeaseFacts,
    grace: Duration,
    now: DateTime<Utc>,
) -> Attendance {
    if let Some(h) = lease.live_holder(now) {
        return Attendance::Held { holder: h.into() };
    }
    if !needs_a_runner(r) {
        return Attendance::Idle;
    }
    let seen = last_seen(r, lease);
    let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
    if seen + grace > now {
        Attendance::Recent
    } else {
        Attendance::Unattended { last_seen: seen }
    }
}

/// How long the rollout has gone without anybody, if that exceeds `max` (None: it does not,
/// or the rollout does not need a runner).
pub fn overdue(
    r: &Rollout,
    lease: &LeaseFacts,
    max: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let max = max?;
    if !needs_a_runner(r) || lease.live_holder(now).is_some() {
        return None;
    }
    let alone = (now - last_seen(r, lease)).to_std().unwrap_or_default();
    (alone >= max).then_some(alone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0).unwrap()
    }

    fn rollout(phase: Phase, weight: u32) -> Rollout {
        let mut r: Rollout = serde_json::from_value(serde_json::json!({
            "phase": "progressing", "step": 0, "weight": weight,
            "started_at": at(0), "step_started_at": at(0)
        }))
        .unwrap();
        r.phase = phase;
        r
    }

    fn lease(holder: Option<&str>, renewed: i64, secs: u64) -> LeaseFacts {
        LeaseFacts {
            holder: holder.map(str::to_string),
            renewed_at: Some(at(renewed)),
            duration: Some(Duration::from_secs(secs)),
        }
    }

    #[test]
    fn a_live_lease_is_held_an_expired_one_is_not() {
        let r = rollout(Phase::Progressing, 25);
        let l = lease(Some("a"), 100, 30);
        let grace = Duration::from_secs(30);
        assert_eq!(
            attendance(&r, &l, grace, at(129)),
            Attendance::Held { holder: "a".into() }
        );
        assert_eq!(
            attendance(&r, &l, grace, at(131)),
            Attendance::Unattended { last_seen: at(100) },
            "unattended as soon as the lease lapses"
        );
        assert_eq!(
            attendance(&r, &l, Duration::from_secs(60), at(131)),
            Attendance::Recent,
            "the renewal counts as a sign of life for the grace period"
        );
    }

    #[test]
    fn released_or_missing_lease_counts_only_recent_activity() {
        let r = rollout(Phase::Progressing, 5);
        let none = LeaseFacts::default();
        let grace = Duration::from_secs(90);
        assert_eq!(attendance(&r, &none, grace, at(60)), Attendance::Recent);
        assert_eq!(
            attendance(&r, &none, grace, at(91)),
            Attendance::Unattended { last_seen: at(0) }
        );
        let released = lease(None, 80, 30);
        assert_eq!(
            attendance(&r, &released, grace, at(100)),
            Attendance::Recent
        );
    }

    #[test]
    fn no_traffic_paused_or_finished_is_idle() {
        let grace = Duration::from_secs(1);
        let none = LeaseFacts::default();
        for (phase, weight) in [
            (Phase::Progressing, 0),
            (Phase::Paused, 50),
            (Phase::Promoted, 100),
            (Phase::RolledBack, 0),
            (Phase::Initializing, 0),
        ] {
            let r = rollout(phase, weight);
            assert_eq!(attendance(&r, &none, grace, at(1000)), Attendance::Idle);
            assert_eq!(overdue(&r, &none, Some(grace), at(1000)), None, "{phase}");
        }
    }

    #[test]
    fn overdue_only_past_max_and_without_a_live_holder() {
        let r = rollout(Phase::Progressing, 25);
        let max = Some(Duration::from_secs(600));
        let dead = lease(Some("a"), 100, 30);
        assert_eq!(overdue(&r, &dead, max, at(699)), None);
        assert_eq!(
            overdue(&r, &dead, max, at(700)),
            Some(Duration::from_secs(600))
        );
        assert_eq!(overdue(&r, &dead, None, at(5000)), None, "off by default");
        let live = lease(Some("a"), 4990, 30);
        assert_eq!(overdue(&r, &live, max, at(5000)), None);
    }
}
