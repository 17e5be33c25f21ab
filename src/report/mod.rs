//! Rollout reports: what happened in one rollout, as a model ([`Report`]) built from the
//! stored rollout (transitions, evaluations, context) and rendered as one self-contained
//! HTML page ([`html`]: inline SVG, a CSP that forbids every fetch).
//!
//! Building the model and computing the rollback timings ([`timings`]) are pure. The metric
//! charts come from the recorded values (what the policy `observe()`d at each evaluation);
//! [`prometheus`] replaces them with range queries at full resolution and measures when the
//! canary stopped serving, the only part that does I/O.

pub mod html;
pub mod prometheus;
pub mod timings;

use crate::cluster::state::RolloutRecord;
use crate::core::decision::{Evaluation, Observations};
use crate::core::facts::Track;
use crate::core::rollout::{EventKind, POLICY_ACTOR, Phase, Rollout, Transition};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
pub use timings::RollbackTimings;

/// One value of a series at a time; `None` is "no data" (a gap, never 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub label: String,
    /// The version the series belongs to (None: a policy observation of neither).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track: Option<Track>,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// A 0..=1 ratio shown as percent.
    Ratio,
    Milliseconds,
    PerSecond,
    Percent,
    /// Whatever the policy observed.
    Number,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chart {
    /// Stable DOM id (`chart-error-rate`), for links and tests.
    pub id: String,
    pub title: String,
    pub unit: Unit,
    pub series: Vec<Series>,
}

impl Chart {
    pub fn has_data(&self) -> bool {
        self.series
            .iter()
            .any(|s| s.points.iter().any(|p| p.value.is_some()))
    }
}

/// Where the canary-vs-stable charts come from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricsOrigin {
    /// The values the policy recorded at each evaluation.
    Recorded,
    /// Range queries over the whole rollout.
    Prometheus {
        url: String,
        step_secs: u64,
        window_secs: u64,
    },
}

/// One evaluation (a decision, holds included) or a human's transition, as a marker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionMark {
    pub at: DateTime<Utc>,
    /// 1-based step.
    pub step: usize,
    pub weight: u32,
    /// `hold`, `advance`, `rollback`, … (for a human: the event, e.g. `begin_rollback`).
    pub action: String,
    pub reason: String,
    /// [`POLICY_ACTOR`] or the user.
    pub by: String,
    pub observations: Observations,
    /// The transition this decision caused, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<EventKind>,
}

/// What the rollout ran with.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Context {
    pub policy: String,
    pub policy_path: String,
    pub policy_sha256: String,
    pub params: Vec<String>,
    pub schedule_overrides: Vec<String>,
    pub steps: Vec<u32>,
    pub images: BTreeMap<String, String>,
    pub previous_images: BTreeMap<String, String>,
    pub provider: String,
    pub route: String,
    pub started_by: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// `namespace/service`, or the scenario for a simulation.
    pub title: String,
    pub simulated: bool,
    pub phase: Phase,
    pub started_at: DateTime<Utc>,
    /// The last recorded activity (or the time the report was made, for a running rollout).
    pub ended_at: DateTime<Utc>,
    pub generated_at: DateTime<Utc>,
    pub context: Context,
    /// The canary weight as a step function (one point per change).
    pub weight: Vec<Point>,
    pub metrics_origin: MetricsOrigin,
    /// Canary vs stable: error rate, p95, p99, request rate.
    pub metrics: Vec<Chart>,
    /// Every other number the policy observed, one chart each.
    pub observations: Vec<Chart>,
    pub decisions: Vec<DecisionMark>,
    pub lifecycle: Vec<Transition>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackTimings>,
    /// What the reader should know about gaps in the data.
    pub notes: Vec<String>,
}

/// A canary-vs-stable chart and the observation names that feed it from the recorded values
/// (first name found wins; the shipped policies record `baseline_*` for stable).
struct TrackChart {
    id: &'static str,
    title: &'static str,
    unit: Unit,
    canary: &'static [&'static str],
    stable: &'static [&'static str],
}

const TRACK_CHARTS: [TrackChart; 4] = [
    TrackChart {
        id: "chart-error-rate",
        title: "Error rate",
        unit: Unit::Ratio,
        canary: &["canary_error_rate"],
        stable: &["stable_error_rate", "baseline_error_rate"],
    },
    TrackChart {
        id: "chart-p95",
        title: "Latency p95",
        unit: Unit::Milliseconds,
        canary: &["canary_p95_ms"],
        stable: &["stable_p95_ms", "baseline_p95_ms"],
    },
    TrackChart {
        id: "chart-p99",
        title: "Latency p99",
        unit: Unit::Milliseconds,
        canary: &["canary_p99_ms"],
        stable: &["stable_p99_ms", "baseline_p99_ms"],
    },
    TrackChart {
        id: "chart-request-rate",
        title: "Request rate",
        unit: Unit::PerSecond,
        canary: &["canary_request_rate"],
        stable: &["stable_request_rate"],
    },
];

/// The ids of the canary-vs-stable charts, in page order.
pub fn track_chart_ids() -> impl Iterator<Item = &'static str> {
    TRACK_CHARTS.iter().map(|c| c.id)
}

impl Context {
    pub fn of_record(rec: &RolloutRecord, steps: Vec<u32>) -> Self {
        Context {
            policy: rec.policy.name.clone(),
            policy_path: rec.policy.path.clone(),
            policy_sha256: rec.policy.sha256.clone(),
            params: rec.params.clone(),
            schedule_overrides: rec.schedule_overrides.clone(),
            steps,
            images: rec.images.clone(),
            previous_images: rec.previous_images.clone(),
            provider: rec.provider.clone(),
            route: rec.route.clone(),
            started_by: rec.started_by.clone(),
        }
    }
}

/// When the rollout last did something (its end, for a finished one).
pub fn last_activity(r: &Rollout) -> DateTime<Utc> {
    let t = r.history.last().map(|t| t.at);
    let e = r.evaluations.last().map(|e| e.at);
    t.into_iter()
        .chain(e)
        .max()
        .unwrap_or(r.started_at)
        .max(r.started_at)
}

impl Report {
    /// The report of a stored rollout, with the charts from the recorded values.
    pub fn of_record(rec: &RolloutRecord, steps: Vec<u32>, now: DateTime<Utc>) -> Self {
        Self::build(
            format!("{}/{}", rec.namespace, rec.service),
            false,
            Context::of_record(rec, steps),
            &rec.rollout,
            now,
        )
    }

    /// The report of a simulated rollout (virtual clock).
    pub fn of_simulation(title: String, context: Context, rollout: &Rollout) -> Self {
        let end = last_activity(rollout);
        Self::build(title, true, context, rollout, end)
    }

    fn build(
        title: String,
        simulated: bool,
        context: Context,
        r: &Rollout,
        now: DateTime<Utc>,
    ) -> Self {
        let ended_at = if r.phase.is_terminal() {
            last_activity(r)
        } else {
            now.max(last_activity(r))
        };
        let mut notes = Vec::new();
        if r.evaluations_thinned > 0 {
            notes.push(format!(
                "{} older evaluations were thinned out of the state to keep it small: the charts show every evaluation that changed something and a sample of the holds.",
                r.evaluations_thinned
            ));
        }
        let rollback = timings::rollback_timings(r);
        Report {
            title,
            simulated,
            phase: r.phase,
            started_at: r.started_at,
            ended_at,
            generated_at: now,
            weight: weight_steps(r, ended_at),
            metrics_origin: MetricsOrigin::Recorded,
            metrics: recorded_track_charts(&r.evaluations),
            observations: observation_charts(&r.evaluations),
            decisions: decisions(r),
            lifecycle: r.history.clone(),
            rollback,
            notes,
            context,
        }
    }
}

/// The canary weight over time: 0 until the first transition, then each transition's weight.
fn weight_steps(r: &Rollout, end: DateTime<Utc>) -> Vec<Point> {
    let mut points = vec![Point {
        at: r.started_at,
        value: Some(0.0),
    }];
    for t in &r.history {
        points.push(Point {
            at: t.at,
            value: Some(f64::from(t.weight)),
        });
    }
    let last = points.last().and_then(|p| p.value);
    points.push(Point {
        at: end,
        value: last,
    });
    points
}

fn observed(evaluations: &[Evaluation], names: &[&str]) -> Option<Vec<Point>> {
    let name = names
        .iter()
        .find(|n| evaluations.iter().any(|e| e.observations.contains_key(**n)))?;
    Some(
        evaluations
            .iter()
            .map(|e| Point {
                at: e.at,
                value: e.observations.get(*name).copied().flatten(),
            })
            .collect(),
    )
}

fn recorded_track_charts(evaluations: &[Evaluation]) -> Vec<Chart> {
    TRACK_CHARTS
        .iter()
        .map(|c| {
            let mut series = Vec::new();
            for (track, names) in [(Track::Canary, c.canary), (Track::Stable, c.stable)] {
                if let Some(points) = observed(evaluations, names) {
                    series.push(Series {
                        label: track.as_str().to_string(),
                        track: Some(track),
                        points,
                    });
                }
            }
            Chart {
                id: c.id.to_string(),
                title: c.title.to_string(),
                unit: c.unit,
                series,
            }
        })
        .collect()
}

/// One chart per observation name not already drawn in a canary-vs-stable chart.
fn observation_charts(evaluations: &[Evaluation]) -> Vec<Chart> {
    let drawn: Vec<&str> = TRACK_CHARTS
        .iter()
        .flat_map(|c| c.canary.iter().chain(c.stable))
        .copied()
        .collect();
    let mut names: Vec<&String> = evaluations
        .iter()
        .flat_map(|e| e.observations.keys())
        .filter(|n| !drawn.contains(&n.as_str()))
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| Chart {
            id: format!("obs-{}", dom_id(name)),
            title: name.clone(),
            unit: Unit::Number,
            series: vec![Series {
                label: name.clone(),
                track: None,
                points: evaluations
                    .iter()
                    .map(|e| Point {
                        at: e.at,
                        value: e.observations.get(name).copied().flatten(),
                    })
                    .collect(),
            }],
        })
        .collect()
}

/// `[a-z0-9-]` only, so the id is safe in HTML and CSS selectors.
fn dom_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A transition someone asked for with a command (the effects that follow, such as
/// `rollback_done`, carry the same actor but are not decisions).
fn is_human_decision(t: &Transition) -> bool {
    !t.by_policy()
        && matches!(
            t.event,
            EventKind::BeginRollback
                | EventKind::Abort
                | EventKind::Pause
                | EventKind::Resume
                | EventKind::BeginPromote
        )
}

/// Every stored evaluation, plus the decisions of humans (they have no evaluation).
fn decisions(r: &Rollout) -> Vec<DecisionMark> {
    let mut out: Vec<DecisionMark> = r
        .evaluations
        .iter()
        .map(|e| DecisionMark {
            at: e.at,
            step: e.step + 1,
            weight: e.weight,
            action: e.decision.action().to_string(),
            reason: e.decision.reason().to_string(),
            by: POLICY_ACTOR.into(),
            observations: e.observations.clone(),
            transition: r
                .history
                .iter()
                .find(|t| t.at == e.at && t.by_policy())
                .map(|t| t.event),
        })
        .collect();
    for t in r.history.iter().filter(|t| is_human_decision(t)) {
        out.push(DecisionMark {
            at: t.at,
            step: t.step + 1,
            weight: t.weight,
            action: t.event.name().to_string(),
            reason: t.reason.clone(),
            by: t.actor.clone(),
            observations: t.observations.clone(),
            transition: Some(t.event),
        });
    }
    out.sort_by_key(|d| d.at);
    out
}

#[cfg(test)]
mod tests;
