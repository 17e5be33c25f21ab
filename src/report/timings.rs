//! Rollback timings from the recorded transitions and evaluations (pure).
//!
//! - **Time to detection**: from the first evaluation whose values breached to the rollback
//!   decision. An evaluation breached when it decided `rollback`, or when the policy recorded a
//!   breach it was still confirming: an observation named `breach` or `*_breach` that is not 0
//!   (the shipped policies record `p95_breach` etc. while they count breaches in a row). The
//!   breach is the unbroken run of such evaluations that ends at the decision; the last
//!   evaluation before it is the last clean one, so the breach began between the two.
//! - **Time to recovery**: from the decision to the weight-0 write, and on to the canary's
//!   request rate reaching 0 in Prometheus ([`super::prometheus`]). Without Prometheus the end
//!   of the rollback (`rollback_done`: the canary's pods are gone, so it serves nothing) bounds
//!   it from above.
//! - **Target**: recovery within 2 minutes of detection (seed 000's drill criterion).
//!
//! The state has no timestamp of its own for the weight-0 write: it is taken from the
//! `begin_rollback` transition, which is recorded in the same step as the write.

use super::Point;
use crate::core::decision::{Decision, Evaluation};
use crate::core::rollout::{EventKind, Rollout};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// "Rollback completed within 2 minutes of detection."
pub const RECOVERY_TARGET: Duration = Duration::from_secs(120);

/// What the time to recovery was measured up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecoveryBasis {
    /// The canary's request rate in Prometheus reached 0.
    CanaryTrafficZero,
    /// The rollback finished (canary pods gone): an upper bound.
    CanaryPodsGone,
    /// Neither is known yet (still rolling back, no Prometheus).
    NotMeasured,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollbackTimings {
    /// [`POLICY_ACTOR`](crate::core::rollout::POLICY_ACTOR) or the user who ran `rollback`.
    pub decided_by: String,
    pub reason: String,
    /// The last evaluation before the breach (the breach began after it).
    pub last_clean_evaluation_at: Option<DateTime<Utc>>,
    pub first_breach_at: Option<DateTime<Utc>>,
    pub decision_at: DateTime<Utc>,
    /// Recorded with the `begin_rollback` transition (see the module docs).
    pub weight_zero_at: DateTime<Utc>,
    pub canary_traffic_zero_at: Option<DateTime<Utc>>,
    pub rollback_done_at: Option<DateTime<Utc>>,
    pub time_to_detection_secs: Option<f64>,
    pub decision_to_weight_zero_secs: f64,
    pub weight_zero_to_canary_traffic_zero_secs: Option<f64>,
    /// Decision → end of recovery (see `recovery_basis`).
    pub time_to_recovery_secs: Option<f64>,
    pub recovery_basis: RecoveryBasis,
    pub target_secs: u64,
    /// None: not known (no measurement, or only an upper bound above the target).
    pub target_met: Option<bool>,
}

fn secs(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_milliseconds() as f64 / 1000.0
}

/// True when the evaluation's values breached (see the module docs).
pub fn breached(e: &Evaluation) -> bool {
    matches!(e.decision, Decision::Rollback { .. })
        || e.observations.iter().any(|(name, v)| {
            (name == "breach" || name.ends_with("_breach")) && v.is_some_and(|v| v != 0.0)
        })
}

/// The timings of the rollout's rollback, or None when it was not rolled back.
pub fn rollback_timings(r: &Rollout) -> Option<RollbackTimings> {
    let begin = r
        .history
        .iter()
        .find(|t| t.event == EventKind::BeginRollback)?;
    let done = r
        .history
        .iter()
        .find(|t| t.event == EventKind::RollbackDone && t.at >= begin.at);
    // The evaluations up to the decision (a policy's rollback is recorded at its evaluation's
    // time; a human's comes after the last evaluation).
    let upto = r.evaluations.partition_point(|e| e.at <= begin.at);
    let seen = &r.evaluations[..upto];
    let decision_at = match seen.last() {
        Some(e) if begin.by_policy() && e.at == begin.at => e.at,
        _ => begin.at,
    };
    let run = seen.iter().rev().take_while(|e| breached(e)).count();
    let first_breach_at = (run > 0).then(|| seen[upto - run].at);
    let last_clean_evaluation_at = (run > 0 && upto > run).then(|| seen[upto - run - 1].at);
    let mut t = RollbackTimings {
        decided_by: begin.actor.clone(),
        reason: begin.reason.clone(),
        last_clean_evaluation_at,
        first_breach_at,
        decision_at,
        weight_zero_at: begin.at,
        canary_traffic_zero_at: None,
        rollback_done_at: done.map(|d| d.at),
        time_to_detection_secs: first_breach_at.map(|b| secs(b, decision_at)),
        decision_to_weight_zero_secs: secs(decision_at, begin.at),
        weight_zero_to_canary_traffic_zero_secs: None,
        time_to_recovery_secs: None,
        recovery_basis: RecoveryBasis::NotMeasured,
        target_secs: RECOVERY_TARGET.as_secs(),
        target_met: None,
    };
    t.settle();
    Some(t)
}

impl RollbackTimings {
    /// Adds the time Prometheus saw the canary's traffic reach 0 (never before the weight-0
    /// write: traffic that had stopped earlier was not stopped by the rollback).
    pub fn with_canary_traffic_zero(mut self, at: DateTime<Utc>) -> Self {
        self.canary_traffic_zero_at = Some(at.max(self.weight_zero_at));
        self.settle();
        self
    }

    fn settle(&mut self) {
        let target = RECOVERY_TARGET.as_secs_f64();
        if let Some(zero) = self.canary_traffic_zero_at {
            self.weight_zero_to_canary_traffic_zero_secs = Some(secs(self.weight_zero_at, zero));
            let total = secs(self.decision_at, zero);
            self.time_to_recovery_secs = Some(total);
            self.recovery_basis = RecoveryBasis::CanaryTrafficZero;
            self.target_met = Some(total <= target);
        } else if let Some(done) = self.rollback_done_at {
            let bound = secs(self.decision_at, done);
            self.time_to_recovery_secs = Some(bound);
            self.recovery_basis = RecoveryBasis::CanaryPodsGone;
            // An upper bound proves the target, it cannot disprove it.
            self.target_met = (bound <= target).then_some(true);
        }
    }

    /// One line for `status`.
    pub fn summary(&self) -> String {
        let detection = match (self.time_to_detection_secs, self.first_breach_at) {
            (Some(d), Some(b)) => format!(
                "detected {} after the first breaching evaluation ({})",
                fmt_secs(d),
                b.format("%H:%M:%S")
            ),
            _ => "no evaluation recorded a breach".to_string(),
        };
        let recovery = match (self.recovery_basis, self.time_to_recovery_secs) {
            (RecoveryBasis::CanaryTrafficZero, Some(r)) => format!(
                "recovered {} after the decision (weight 0 {}, canary traffic 0 in Prometheus {} later)",
                fmt_secs(r),
                fmt_secs(self.decision_to_weight_zero_secs),
                fmt_secs(self.weight_zero_to_canary_traffic_zero_secs.unwrap_or(0.0))
            ),
            (RecoveryBasis::CanaryPodsGone, Some(r)) => format!(
                "recovered within {} of the decision (canary pods gone; Prometheus not consulted)",
                fmt_secs(r)
            ),
            _ => "recovery not measured yet".to_string(),
        };
        let target = match self.target_met {
            Some(true) => "2-minute target met",
            Some(false) => "2-minute target MISSED",
            None => "2-minute target not verified",
        };
        format!("{detection}; {recovery}; {target}")
    }
}

/// "0.4s", "12.0s", "2m05s".
pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1}s")
    } else {
        let whole = s.round() as u64;
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

/// When the canary stopped serving, from a range query of its requests per interval (the
/// increase over the last two scrapes, one point per `step`) that ran up to `end`: the grid
/// point after the last interval with a request, never before `from`. Absent points count
/// as no traffic (the canary's series go stale when its pods are gone). None when the series
/// shows no traffic at all (no data cannot prove recovery) or still shows traffic at `end`.
pub fn traffic_stopped_at(
    requests: &[Point],
    from: DateTime<Utc>,
    end: DateTime<Utc>,
    step: Duration,
) -> Option<DateTime<Utc>> {
    // At least one request: `increase()` extrapolates, so an idle interval can read as a
    // small fraction.
    let last_busy = requests
        .iter()
        .rfind(|p| p.value.is_some_and(|v| v >= 0.5))?;
    let stopped = last_busy.at + chrono::Duration::from_std(step).ok()?;
    (stopped <= end).then(|| stopped.max(from))
}
