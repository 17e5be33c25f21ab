//! Turns what a policy asked for into what happens: the schedule's gates (minimum time and
//! requests per step), the deadline and the error policy are enforced here, so no policy
//! can promote on missing data or skip a gate.

use super::decision::{Decision, PolicyFailure};
use super::facts::Facts;
use super::rollout::{Event, Phase, Rollout};
use super::schedule::{OnError, Schedule};
use chrono::{DateTime, Utc};

/// The effective outcome of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// What will be done (may differ from what the policy asked, see `requested`).
    pub decision: Decision,
    /// The policy's own decision when a gate changed it.
    pub requested: Option<Decision>,
    /// The state-machine event to apply, if any.
    pub event: Option<Event>,
}

fn gate_advance(
    rollout: &Rollout,
    schedule: &Schedule,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Option<String> {
    let in_step = rollout.time_in_step(now);
    if in_step < schedule.min_step_time {
        return Some(format!(
            "waiting: {} of {} at {}%",
            humantime::format_duration(std::time::Duration::from_secs(in_step.as_secs())),
            humantime::format_duration(schedule.min_step_time),
            rollout.weight
        ));
    }
    if schedule.min_requests > 0 {
        match facts.canary.requests.filter(|r| r.is_finite()) {
            None => return Some("inconclusive: no data for canary request count".into()),
            Some(n) if n < schedule.min_requests as f64 => {
                return Some(format!(
                    "waiting: {:.0}/{} canary requests at {}%",
                    n, schedule.min_requests, rollout.weight
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// When the canary's pods were last seen going to 0 ready: the earliest of the latest
/// evaluations in a row that found none at a weight above 0.
fn unready_since(rollout: &Rollout) -> Option<DateTime<Utc>> {
    rollout
        .evaluations
        .iter()
        .rev()
        .take_while(|e| e.canary_ready == Some(0) && e.weight > 0)
        .last()
        .map(|e| e.at)
}

/// Decides the effective step for a rollout in `Progressing` given the policy's result.
pub fn decide(
    rollout: &Rollout,
    schedule: &Schedule,
    policy: Result<Decision, PolicyFailure>,
    facts: &Facts,
    now: DateTime<Utc>,
) -> Step {
    let plain = |decision: Decision| Step {
        event: event_for(rollout, schedule, &decision),
        decision,
        requested: None,
    };
    if rollout.phase != Phase::Progressing {
        return plain(Decision::hold(format!(
            "rollout is {}, not evaluating",
            rollout.phase
        )));
    }
    // The readiness gate, before anything the policy says: a canary that receives traffic
    // but has no ready pod answers every request it gets with an error (no upstream), and
    // its metrics read as "no data", which would only hold. Losing its pods (eviction, a bad
    // image, a manual scale to 0) or crash-looping rolls back.
    let pods = &facts.canary_pods;
    if rollout.weight > 0 && (pods.ready == 0 || pods.crash_looping) {
        let why = if pods.crash_looping {
            format!(
                "canary pods are crash-looping ({} restarts, {}/{} ready) at {}% of traffic",
                pods.restarts, pods.ready, pods.desired, rollout.weight
            )
        } else {
            // A pod restarting or being rescheduled is not a verdict yet: roll back once no
            // pod has been ready for the grace (measured from the recorded evaluations).
            let since = unready_since(rollout).unwrap_or(now);
            let deadline = since
                + chrono::Duration::from_std(schedule.readiness_grace)
                    .unwrap_or(chrono::Duration::MAX);
            if now < deadline {
                return plain(Decision::hold(format!(
                    "canary has no ready pod (0/{}) at {}% of traffic since {}: rolling back at {} unless one becomes ready",
                    pods.desired,
                    rollout.weight,
                    since.format("%H:%M:%SZ"),
                    deadline.format("%H:%M:%SZ")
                )));
            }
            format!(
                "canary has had no ready pod (0/{}) at {}% of traffic since {} (readiness grace {}): its share has no upstream",
                pods.desired,
                rollout.weight,
                since.format("%H:%M:%SZ"),
                humantime::format_duration(schedule.readiness_grace)
            )
        };
        return plain(Decision::Rollback { reason: why });
    }
    if let Some(max) = schedule.max_duration
        && rollout.elapsed(now) > max
    {
        // No verdict in time is not evidence against the canary: a human decides.
        return plain(Decision::Pause {
            reason: format!(
                "deadline: no verdict after {}",
                humantime::format_duration(max)
            ),
        });
    }
    let asked = match policy {
        Ok(d) => d,
        Err(PolicyFailure::NoData(what)) => {
            return plain(Decision::hold(format!("inconclusive: no data: {what}")));
        }
        Err(PolicyFailure::Error(msg)) => {
            let reason = format!("policy error: {msg}");
            return plain(match schedule.on_error {
                OnError::Hold => Decision::Hold { reason },
                OnError::Pause => Decision::Pause { reason },
                OnError::Rollback => Decision::Rollback { reason },
            });
        }
    };
    let asked = match asked {
        Decision::Advance {
            to_weight: Some(w), ..
        } if w <= rollout.weight => {
            let reason = format!(
                "policy error: advance_to({w}) is not above the current weight {}%",
                rollout.weight
            );
            return plain(Decision::Hold { reason });
        }
        // Advancing past the last step is promotion.
        Decision::Advance { reason, .. } if schedule.is_last(rollout.step) => {
            Decision::Promote { reason }
        }
        d => d,
    };
    if matches!(asked, Decision::Advance { .. } | Decision::Promote { .. })
        && let Some(wait) = gate_advance(rollout, schedule, facts, now)
    {
        return Step {
            event: None,
            decision: Decision::hold(wait),
            requested: Some(asked),
        };
    }
    plain(asked)
}

fn event_for(rollout: &Rollout, schedule: &Schedule, decision: &Decision) -> Option<Event> {
    if rollout.phase != Phase::Progressing {
        return None;
    }
    match decision {
        Decision::Hold { .. } => None,
        Decision::Pause { .. } => Some(Event::Pause),
        Decision::Rollback { .. } => Some(Event::BeginRollback),
        Decision::Promote { .. } => Some(Event::BeginPromote),
        Decision::Advance { to_weight, .. } => {
            let next = rollout.step + 1;
            Some(match to_weight {
                None => Event::Advance {
                    step: next,
                    weight: schedule.weight_at(next),
                },
                Some(w) => {
                    let step = schedule
                        .steps
                        .iter()
                        .position(|s| s >= w)
                        .unwrap_or(schedule.steps.len() - 1)
                        .max(next);
                    Event::Advance { step, weight: *w }
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Cause;
    use std::time::Duration;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn progressing(step: usize, schedule: &Schedule) -> Rollout {
        let mut r = Rollout::new(t(0));
        r.apply(
            Event::CanaryReady {
                weight: schedule.steps[0],
            },
            t(0),
            Cause::default(),
        )
        .unwrap();
        for s in 1..=step {
            r.apply(
                Event::Advance {
                    step: s,
                    weight: schedule.steps[s],
                },
                t(0),
                Cause::default(),
            )
            .unwrap();
        }
        r
    }

    fn facts(canary_requests: Option<f64>) -> Facts {
        let mut f = Facts::default();
        f.canary.requests = canary_requests;
        f.canary_pods.desired = 1;
        f.canary_pods.ready = 1;
        f
    }

    fn advance() -> Result<Decision, PolicyFailure> {
        Ok(Decision::Advance {
            to_weight: None,
            reason: "ok".into(),
        })
    }

    fn schedule() -> Schedule {
        Schedule {
            min_step_time: Duration::from_secs(300),
            min_requests: 1000,
            ..Schedule::default()
        }
    }

    struct Case {
        name: &'static str,
        step: usize,
        now: i64,
        policy: Result<Decision, PolicyFailure>,
        requests: Option<f64>,
        on_error: OnError,
        action: &'static str,
        event: Option<Event>,
    }

    #[test]
    fn table() {
        let cases = [
            Case {
                name: "advance when gates met",
                step: 0,
                now: 301,
                policy: advance(),
                requests: Some(1000.0),
                on_error: OnError::Hold,
                action: "advance",
                event: Some(Event::Advance {
                    step: 1,
                    weight: 25,
                }),
            },
            Case {
                name: "too early",
                step: 0,
                now: 100,
                policy: advance(),
                requests: Some(5000.0),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "too few requests",
                step: 0,
                now: 400,
                policy: advance(),
                requests: Some(999.0),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "no request data never advances",
                step: 0,
                now: 400,
                policy: advance(),
                requests: None,
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "NaN request count never advances",
                step: 0,
                now: 400,
                policy: advance(),
                requests: Some(f64::NAN),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "advance at last step promotes",
                step: 3,
                now: 400,
                policy: advance(),
                requests: Some(2000.0),
                on_error: OnError::Hold,
                action: "promote",
                event: Some(Event::BeginPromote),
            },
            Case {
                name: "promote is gated too",
                step: 1,
                now: 10,
                policy: Ok(Decision::Promote { reason: "x".into() }),
                requests: Some(2000.0),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "rollback is never gated",
                step: 0,
                now: 1,
                policy: Ok(Decision::Rollback {
                    reason: "bad".into(),
                }),
                requests: None,
                on_error: OnError::Hold,
                action: "rollback",
                event: Some(Event::BeginRollback),
            },
            Case {
                name: "pause",
                step: 1,
                now: 1,
                policy: Ok(Decision::Pause {
                    reason: "review".into(),
                }),
                requests: None,
                on_error: OnError::Hold,
                action: "pause",
                event: Some(Event::Pause),
            },
            Case {
                name: "no data holds even with on_error rollback",
                step: 1,
                now: 400,
                policy: Err(PolicyFailure::NoData("canary.error_rate".into())),
                requests: Some(5000.0),
                on_error: OnError::Rollback,
                action: "hold",
                event: None,
            },
            Case {
                name: "error holds",
                step: 1,
                now: 400,
                policy: Err(PolicyFailure::Error("p.rhai:3:4: boom".into())),
                requests: Some(5000.0),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
            Case {
                name: "error pauses",
                step: 1,
                now: 400,
                policy: Err(PolicyFailure::Error("boom".into())),
                requests: Some(5000.0),
                on_error: OnError::Pause,
                action: "pause",
                event: Some(Event::Pause),
            },
            Case {
                name: "error rolls back",
                step: 1,
                now: 400,
                policy: Err(PolicyFailure::Error("boom".into())),
                requests: Some(5000.0),
                on_error: OnError::Rollback,
                action: "rollback",
                event: Some(Event::BeginRollback),
            },
            Case {
                name: "advance_to jumps",
                step: 0,
                now: 400,
                policy: Ok(Decision::Advance {
                    to_weight: Some(50),
                    reason: "fast".into(),
                }),
                requests: Some(5000.0),
                on_error: OnError::Hold,
                action: "advance",
                event: Some(Event::Advance {
                    step: 2,
                    weight: 50,
                }),
            },
            Case {
                name: "advance_to between steps",
                step: 0,
                now: 400,
                policy: Ok(Decision::Advance {
                    to_weight: Some(10),
                    reason: "x".into(),
                }),
                requests: Some(5000.0),
                on_error: OnError::Hold,
                action: "advance",
                event: Some(Event::Advance {
                    step: 1,
                    weight: 10,
                }),
            },
            Case {
                name: "advance_to backwards is refused",
                step: 2,
                now: 400,
                policy: Ok(Decision::Advance {
                    to_weight: Some(25),
                    reason: "x".into(),
                }),
                requests: Some(5000.0),
                on_error: OnError::Hold,
                action: "hold",
                event: None,
            },
        ];
        for c in cases {
            let mut s = schedule();
            s.on_error = c.on_error;
            let r = progressing(c.step, &s);
            let step = decide(&r, &s, c.policy, &facts(c.requests), t(c.now));
            assert_eq!(
                step.decision.action(),
                c.action,
                "{}: {:?}",
                c.name,
                step.decision
            );
            assert_eq!(step.event, c.event, "{}", c.name);
            if let Some(ev) = step.event {
                let mut r = r.clone();
                r.apply(ev, t(c.now), Cause::default())
                    .unwrap_or_else(|e| panic!("{}: event must be legal: {e}", c.name));
            }
        }
    }

    #[test]
    fn canary_without_ready_pods_at_weight_rolls_back_whatever_the_policy_says() {
        let s = schedule();
        let r = progressing(1, &s);
        assert!(r.weight > 0);
        let mut f = facts(Some(1000.0));
        f.canary_pods = crate::facts::PodFacts {
            desired: 0,
            ready: 0,
            restarts: 0,
            crash_looping: false,
        };
        // First seen without ready pods: held for the readiness grace (a pod restarting).
        let st = decide(&r, &s, advance(), &f, t(10_000));
        assert!(
            matches!(st.decision, Decision::Hold { ref reason } if reason.contains("unless one becomes ready")),
            "{st:?}"
        );
        assert_eq!(st.event, None);
        // Recorded evaluations remember since when: past the grace, it rolls back.
        let mut r = r;
        let seen = |at: i64, ready: u32| crate::decision::Evaluation {
            at: t(at),
            step: 1,
            weight: 25,
            decision: Decision::hold("x"),
            observations: Default::default(),
            queries: Default::default(),
            values: Default::default(),
            canary_ready: Some(ready),
            log: vec![],
        };
        r.record_evaluation(seen(10_000 - 40, 1));
        r.record_evaluation(seen(10_000 - 20, 0));
        let st = decide(&r, &s, advance(), &f, t(10_000));
        assert!(
            matches!(st.decision, Decision::Hold { .. }),
            "20 s < 30 s grace: {st:?}"
        );
        let st = decide(&r, &s, advance(), &f, t(10_000 + 15));
        assert!(matches!(st.decision, Decision::Rollback { .. }), "{st:?}");
        assert_eq!(st.event, Some(Event::BeginRollback));
        // A ready pod in between starts the grace again.
        r.record_evaluation(seen(10_000 + 5, 1));
        let st = decide(&r, &s, advance(), &f, t(10_000 + 15));
        assert!(matches!(st.decision, Decision::Hold { .. }), "{st:?}");
        r.record_evaluation(seen(10_000 - 40, 0));
        r.record_evaluation(seen(10_000 - 20, 0));
        // Also when the policy only has no data, and when the pods crash-loop (at once).
        let st = decide(
            &r,
            &s,
            Err(PolicyFailure::NoData("canary.p95".into())),
            &f,
            t(10_000 + 40),
        );
        assert!(matches!(st.decision, Decision::Rollback { .. }), "{st:?}");
        f.canary_pods = crate::facts::PodFacts {
            desired: 1,
            ready: 1,
            restarts: 4,
            crash_looping: true,
        };
        let st = decide(&r, &s, advance(), &f, t(10_000));
        assert!(
            matches!(st.decision, Decision::Rollback { ref reason } if reason.contains("crash")),
            "{st:?}"
        );
        // Ready pods: the policy decides.
        f.canary_pods = crate::facts::PodFacts {
            desired: 1,
            ready: 1,
            restarts: 0,
            crash_looping: false,
        };
        let st = decide(&r, &s, advance(), &f, t(10_000));
        assert!(!matches!(st.decision, Decision::Rollback { .. }), "{st:?}");
    }

    #[test]
    fn deadline_pauses_for_a_human() {
        let mut s = schedule();
        s.max_duration = Some(Duration::from_secs(600));
        let r = progressing(1, &s);
        let step = decide(&r, &s, advance(), &facts(Some(1e6)), t(601));
        assert_eq!(step.event, Some(Event::Pause));
        assert!(step.decision.reason().contains("deadline"));
    }

    #[test]
    fn paused_rollout_is_not_evaluated() {
        let s = schedule();
        let mut r = progressing(1, &s);
        r.apply(Event::Pause, t(1), Cause::default()).unwrap();
        let step = decide(&r, &s, advance(), &facts(Some(1e6)), t(1000));
        assert_eq!(step.event, None);
        assert_eq!(step.decision.action(), "hold");
    }
}
