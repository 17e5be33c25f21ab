use super::timings::{
    RECOVERY_TARGET, RecoveryBasis, breached, rollback_timings, traffic_stopped_at,
};
use super::*;
use crate::core::decision::Decision;
use crate::core::rollout::{Cause, Event};
use std::time::Duration;

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

fn at(secs: f64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds((secs * 1000.0) as i64)
}

fn eval(secs: f64, decision: Decision, obs: &[(&str, Option<f64>)]) -> Evaluation {
    Evaluation {
        at: at(secs),
        step: 0,
        weight: 10,
        decision,
        observations: obs.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        queries: Default::default(),
        values: Default::default(),
        canary_ready: None,
        log: vec![],
    }
}

fn rollback(why: &str) -> Decision {
    Decision::Rollback { reason: why.into() }
}

/// A rollout at 10% that evaluates every 2 s from t=2; `evaluations` run in order.
fn progressing(evaluations: Vec<Evaluation>) -> Rollout {
    let mut r = Rollout::new(t0());
    r.apply(
        Event::CanaryReady { weight: 10 },
        at(1.0),
        Cause::new("kubectl-canary", "ready"),
    )
    .unwrap();
    for e in evaluations {
        r.record_evaluation(e);
    }
    r
}

/// The policy's rollback as the driver records it: the transition carries the evaluation's time.
fn policy_rollback(r: &mut Rollout, decided: f64, done: f64) {
    r.apply(
        Event::BeginRollback,
        at(decided),
        Cause::policy("error rate 50% > 5%"),
    )
    .unwrap();
    r.apply(
        Event::RollbackDone,
        at(done),
        Cause::policy("traffic on stable, canary scaled to 0"),
    )
    .unwrap();
}

#[test]
fn detection_runs_from_the_first_breaching_evaluation_to_the_decision() {
    let hold = || Decision::hold("watching");
    let mut r = progressing(vec![
        eval(2.0, hold(), &[("p95_breach", Some(0.0))]),
        eval(4.0, hold(), &[("p95_breach", Some(1.0))]),
        // A breach that cleared: not part of the breach that led to the decision.
        eval(6.0, hold(), &[("p95_breach", Some(0.0))]),
        eval(8.0, hold(), &[("p95_breach", Some(1.0))]),
        eval(10.0, hold(), &[("latency_breach", Some(1.0))]),
        eval(12.0, rollback("p95 4 evaluations in a row"), &[]),
    ]);
    policy_rollback(&mut r, 12.0, 20.5);
    let t = rollback_timings(&r).expect("rolled back");
    assert_eq!(t.decided_by, "policy");
    assert_eq!(t.first_breach_at, Some(at(8.0)));
    assert_eq!(t.last_clean_evaluation_at, Some(at(6.0)));
    assert_eq!(t.decision_at, at(12.0));
    assert_eq!(t.time_to_detection_secs, Some(4.0));
    assert_eq!(t.rollback_done_at, Some(at(20.5)));
    // No Prometheus: the end of the rollback bounds the recovery, which proves the target.
    assert_eq!(t.recovery_basis, RecoveryBasis::CanaryPodsGone);
    assert_eq!(t.time_to_recovery_secs, Some(8.5));
    assert_eq!(t.target_met, Some(true));
}

#[test]
fn an_immediate_rollback_is_detected_at_its_own_evaluation() {
    let mut r = progressing(vec![
        eval(
            2.0,
            Decision::hold("ok"),
            &[("canary_error_rate", Some(0.0))],
        ),
        eval(4.0, rollback("errors"), &[("canary_error_rate", Some(0.5))]),
    ]);
    policy_rollback(&mut r, 4.0, 9.0);
    let t = rollback_timings(&r).unwrap();
    assert_eq!(t.first_breach_at, Some(at(4.0)));
    assert_eq!(t.last_clean_evaluation_at, Some(at(2.0)));
    assert_eq!(t.time_to_detection_secs, Some(0.0));
}

#[test]
fn a_human_rollback_without_a_recorded_breach_has_no_detection_time() {
    let mut r = progressing(vec![eval(2.0, Decision::hold("ok"), &[])]);
    r.apply(
        Event::BeginRollback,
        at(3.5),
        Cause::new("alice", "drill: rolled back by hand"),
    )
    .unwrap();
    let t = rollback_timings(&r).unwrap();
    assert_eq!(t.decided_by, "alice");
    assert_eq!(t.decision_at, at(3.5));
    assert_eq!(t.weight_zero_at, at(3.5));
    assert_eq!(t.first_breach_at, None);
    assert_eq!(t.time_to_detection_secs, None);
    // Still rolling back, no Prometheus: nothing measured, nothing claimed.
    assert_eq!(t.recovery_basis, RecoveryBasis::NotMeasured);
    assert_eq!(t.target_met, None);
    assert!(t.summary().contains("no evaluation recorded a breach"));
    assert!(t.summary().contains("not verified"));
}

#[test]
fn prometheus_recovery_decides_the_target_both_ways() {
    let mut r = progressing(vec![eval(4.0, rollback("errors"), &[])]);
    policy_rollback(&mut r, 4.0, 200.0);
    let t = rollback_timings(&r).unwrap();
    // The upper bound (196 s) is above the target: it proves nothing either way.
    assert_eq!(t.target_met, None);
    let fast = t.clone().with_canary_traffic_zero(at(7.5));
    assert_eq!(fast.recovery_basis, RecoveryBasis::CanaryTrafficZero);
    assert_eq!(fast.time_to_recovery_secs, Some(3.5));
    assert_eq!(fast.weight_zero_to_canary_traffic_zero_secs, Some(3.5));
    assert_eq!(fast.target_met, Some(true));
    let slow_end = 4.0 + RECOVERY_TARGET.as_secs_f64() + 1.0;
    let slow = t.clone().with_canary_traffic_zero(at(slow_end));
    assert_eq!(slow.target_met, Some(false));
    assert!(slow.summary().contains("MISSED"));
    // Traffic that had stopped before the weight-0 write was not stopped by the rollback.
    let early = t.with_canary_traffic_zero(at(1.0));
    assert_eq!(early.canary_traffic_zero_at, Some(at(4.0)));
    assert_eq!(early.time_to_recovery_secs, Some(0.0));
}

#[test]
fn no_rollback_no_timings() {
    let r = progressing(vec![eval(2.0, Decision::hold("ok"), &[])]);
    assert!(rollback_timings(&r).is_none());
}

#[test]
fn breach_signals() {
    let hold = Decision::hold("x");
    assert!(breached(&eval(0.0, rollback("r"), &[])));
    assert!(breached(&eval(0.0, hold.clone(), &[("breach", Some(1.0))])));
    assert!(breached(&eval(
        0.0,
        hold.clone(),
        &[("p99_breach", Some(1.0))]
    )));
    assert!(!breached(&eval(
        0.0,
        hold.clone(),
        &[("p99_breach", Some(0.0))]
    )));
    assert!(!breached(&eval(0.0, hold.clone(), &[("p99_breach", None)])));
    assert!(!breached(&eval(0.0, hold, &[("breaches_seen", Some(3.0))])));
}

fn points(values: &[(f64, Option<f64>)]) -> Vec<Point> {
    values
        .iter()
        .map(|(s, v)| Point {
            at: at(*s),
            value: *v,
        })
        .collect()
}

#[test]
fn canary_traffic_stops_after_its_last_busy_interval() {
    let step = Duration::from_secs(1);
    let series = points(&[
        (10.0, Some(12.0)),
        (11.0, Some(11.0)),
        (12.0, Some(3.0)),
        (13.0, Some(0.2)), // extrapolation noise, not a request
        (14.0, Some(0.0)),
    ]);
    assert_eq!(
        traffic_stopped_at(&series, at(11.5), at(20.0), step),
        Some(at(13.0))
    );
    // Series that go stale (pods gone) end without zeros: the range end decides.
    let stale = points(&[(10.0, Some(12.0)), (11.0, Some(9.0))]);
    assert_eq!(
        traffic_stopped_at(&stale, at(10.5), at(15.0), step),
        Some(at(12.0))
    );
    // Still serving at the end of the range: not recovered.
    assert_eq!(traffic_stopped_at(&stale, at(10.5), at(11.5), step), None);
    // Never any traffic (or no data at all): nothing proves recovery.
    let idle = points(&[(10.0, Some(0.0)), (11.0, None)]);
    assert_eq!(traffic_stopped_at(&idle, at(10.5), at(15.0), step), None);
    assert_eq!(traffic_stopped_at(&[], at(10.5), at(15.0), step), None);
    // Stopped before the weight-0 write: clamped to it.
    assert_eq!(
        traffic_stopped_at(&stale, at(14.0), at(20.0), step),
        Some(at(14.0))
    );
}

fn record(r: Rollout) -> RolloutRecord {
    serde_json::from_value(serde_json::json!({
        "namespace": "shop",
        "service": "web",
        "images": {"app": "demo:2.0"},
        "previous_images": {"app": "demo:1.0"},
        "provider": "istio",
        "route": "web",
        "policy": {"name": "default", "path": "default.rhai", "sha256": "ab12", "source": ""},
        "params": ["min_judge=20"],
        "schedule_overrides": ["interval=2s"],
        "canary_replicas": 1,
        "started_by": "e2e",
        "rollout": r,
    }))
    .unwrap()
}

fn drill() -> Rollout {
    let mut r = progressing(vec![
        eval(
            2.0,
            Decision::hold("waiting"),
            &[
                ("canary_error_rate", Some(0.0)),
                ("baseline_error_rate", Some(0.001)),
                ("canary_p99_ms", Some(20.0)),
                ("canary_requests", Some(40.0)),
            ],
        ),
        eval(
            4.0,
            Decision::hold("waiting <script>alert(1)</script>"),
            &[("canary_error_rate", None), ("canary_requests", Some(80.0))],
        ),
        eval(
            6.0,
            rollback("canary error rate 100% > 5%"),
            &[
                ("canary_error_rate", Some(1.0)),
                ("canary_requests", Some(120.0)),
            ],
        ),
    ]);
    policy_rollback(&mut r, 6.0, 14.0);
    r
}

#[test]
fn a_record_becomes_a_report() {
    let rec = record(drill());
    let report = Report::of_record(&rec, vec![10, 100], at(100.0));
    assert_eq!(report.title, "shop/web");
    assert_eq!(report.phase, Phase::RolledBack);
    assert_eq!(
        report.ended_at,
        at(14.0),
        "a finished rollout ends at its last transition"
    );
    assert_eq!(report.context.policy_sha256, "ab12");
    assert_eq!(report.context.params, ["min_judge=20"]);
    // Weight: 0 until ready, 10% until the rollback, then 0.
    let weights: Vec<_> = report.weight.iter().map(|p| p.value.unwrap()).collect();
    assert_eq!(weights, [0.0, 10.0, 0.0, 0.0, 0.0]);
    // Canary vs stable from what the policy recorded; "no data" stays a gap.
    let errors = report
        .metrics
        .iter()
        .find(|c| c.id == "chart-error-rate")
        .unwrap();
    let canary = &errors.series[0];
    assert_eq!(canary.track, Some(Track::Canary));
    assert_eq!(
        canary.points.iter().map(|p| p.value).collect::<Vec<_>>(),
        [Some(0.0), None, Some(1.0)]
    );
    assert_eq!(errors.series[1].label, "stable");
    let ids: Vec<_> = report.metrics.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, track_chart_ids().collect::<Vec<_>>());
    // Observations not drawn as canary/stable get a chart each.
    let obs: Vec<_> = report
        .observations
        .iter()
        .map(|c| c.title.as_str())
        .collect();
    assert_eq!(obs, ["canary_requests"]);
    // Decisions: every evaluation; the effect rollback_done is a transition, not a decision.
    let actions: Vec<_> = report.decisions.iter().map(|d| d.action.as_str()).collect();
    assert_eq!(actions, ["hold", "hold", "rollback"]);
    assert_eq!(
        report.decisions[2].transition,
        Some(EventKind::BeginRollback)
    );
    assert_eq!(report.lifecycle.len(), 3);
    let rb = report.rollback.as_ref().unwrap();
    assert_eq!(rb.time_to_detection_secs, Some(0.0));
    assert_eq!(rb.time_to_recovery_secs, Some(8.0));
}

#[test]
fn a_human_decision_is_a_marker() {
    let mut r = progressing(vec![eval(2.0, Decision::hold("ok"), &[])]);
    r.apply(Event::Pause, at(3.0), Cause::new("bob", "batch job"))
        .unwrap();
    r.apply(Event::Resume, at(5.0), Cause::new("bob", "done"))
        .unwrap();
    let report = Report::of_record(&record(r), vec![], at(6.0));
    let marks: Vec<_> = report
        .decisions
        .iter()
        .map(|d| (d.action.as_str(), d.by.as_str()))
        .collect();
    assert_eq!(
        marks,
        [("hold", "policy"), ("pause", "bob"), ("resume", "bob")]
    );
    assert_eq!(report.ended_at, at(6.0), "a running rollout ends now");
    assert!(report.rollback.is_none());
}

#[test]
fn the_page_is_self_contained_and_escaped() {
    let report = Report::of_record(&record(drill()), vec![10, 100], at(100.0));
    let page = html::render(&report);
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.contains(&format!(
        r#"<meta http-equiv="Content-Security-Policy" content="{}">"#,
        html::CONTENT_SECURITY_POLICY
    )));
    assert!(html::CONTENT_SECURITY_POLICY.starts_with("default-src 'none'"));
    // Nothing to fetch: no script, no external reference of any kind.
    for needle in [
        "<script", "src=", "href=", "url(", "@import", "http://", "https://",
    ] {
        assert!(!page.contains(needle), "page contains {needle:?}");
    }
    assert!(page.contains("waiting &lt;script&gt;alert(1)&lt;/script&gt;"));
    for id in [
        "chart-weight",
        "chart-error-rate",
        "chart-p99",
        "rollback",
        "time-to-detection",
        "time-to-recovery",
        "recovery-target",
        "decisions",
        "lifecycle",
        "context",
    ] {
        assert!(page.contains(&format!(r#"id="{id}""#)), "no #{id}");
    }
    assert!(page.contains(r#"data-seconds="8.000""#), "recovery shown");
    assert!(page.contains(r#"data-target-met="met""#));
    // Three decision markers on the weight chart, the rollback among them.
    assert_eq!(page.matches(r#"<g class="decision "#).count(), 3);
    assert!(page.contains(r#"data-action="rollback""#));
    // A chart without recorded data says so instead of drawing an empty frame.
    assert!(page.contains("No data: the policy did not record this value"));
}

#[test]
fn a_report_of_a_simulation() {
    let report = Report::of_simulation("sim".into(), Context::default(), &drill());
    assert!(report.simulated);
    assert_eq!(report.generated_at, at(14.0), "virtual clock");
    assert!(html::render(&report).contains("simulated (virtual clock)"));
}

#[test]
fn ticks_and_values() {
    assert_eq!(html::fmt_value(0.05, Unit::Ratio), "5%");
    assert_eq!(html::fmt_value(0.6, Unit::Ratio), "60%");
    assert_eq!(html::fmt_value(0.0025, Unit::Ratio), "0.25%");
    assert_eq!(html::fmt_value(150.0, Unit::Milliseconds), "150 ms");
    assert_eq!(html::fmt_value(2.5, Unit::PerSecond), "2.5/s");
    assert_eq!(timings::fmt_secs(4.26), "4.3s");
    assert_eq!(timings::fmt_secs(125.0), "2m05s");
}

#[test]
fn a_report_says_when_early_evaluations_are_gone() {
    let evals = (0..20)
        .map(|i| eval(2.0 + i as f64, Decision::hold("ok"), &[]))
        .collect();
    let mut rollout = progressing(evals);
    let quiet = Report::of_record(&record(rollout.clone()), vec![], at(500.0));
    assert!(quiet.notes.is_empty(), "{:?}", quiet.notes);
    rollout.evaluations_thinned = 380;
    let report = Report::of_record(&record(rollout), vec![], at(500.0));
    assert_eq!(report.decisions.len(), 20);
    assert!(
        report.notes[0].contains("380 older evaluations were thinned"),
        "{:?}",
        report.notes
    );
}
