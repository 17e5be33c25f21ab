//! What happens after a decision, as an ordered list of effects. Pure: the planner sees the
//! rollout and what was last observed of the world, and returns the effects in the one order
//! that keeps traffic safe. The cluster and the simulator execute the same plans (see
//! `crate::lifecycle`), so every ordering rule lives here.
//!
//! The rules:
//! - a rollback claims stable (no promote that lost the race may change it afterwards) and is
//!   saved; then traffic leaves the canary first, and after a scale-down delay (proxies
//!   converge on the new route) the canary is scaled down;
//! - the canary has capacity for a weight before it receives that weight;
//! - an advance is saved (compare-and-swap) before its weight is written, so only the writer
//!   that won the save moves traffic;
//! - promote: the canary carries everything while stable takes its template, stable is
//!   re-pinned to its new pods before it takes the traffic back;
//! - a rollback that finds stable on the canary's template (promote got that far) restores
//!   stable's previous template and waits for it before traffic returns to stable.

use super::rollout::{Cause, Event, Phase};
use std::time::Duration;

/// One step of a plan. Executors make each idempotent, so a plan re-run after a crash converges.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Set up the split with the canary at weight 0: pins, subsets, header route, canary
    /// Ingress or backend, whatever the provider needs.
    Prepare,
    /// Scale the canary up to at least `replicas` (never down) and wait until that many are
    /// ready. It also claims the canary for this generation: a stale writer's scale-down or
    /// removal is refused afterwards, so traffic is never raised onto a canary being removed.
    EnsureCanaryCapacity {
        replicas: u32,
    },
    /// Route `weight`% to the canary. A write that raises the canary's share is fenced: it is
    /// refused when a newer state generation already wrote the route.
    SetWeight {
        weight: u32,
    },
    /// Weight 0; a route that was never prepared or is gone already sends nothing to the canary.
    RouteToStable,
    /// Apply the event to the rollout and save it (compare-and-swap), then announce it.
    Commit {
        event: Event,
        cause: Cause,
    },
    /// Wait for the data plane to converge on the last route write before the canary shrinks.
    ScaleDownDelay(Duration),
    ScaleCanaryToZero,
    /// Delete our canary Deployment (a canary the user keeps goes to 0 replicas instead).
    RemoveCanary,
    /// Wait (bounded) until no canary pod is left, so none is still an endpoint when our pins go.
    WaitCanaryGone,
    /// Stamp this generation on the stable Deployment, so a promote that lost the race can no
    /// longer change stable's template (its write checks the stamp).
    ClaimStable,
    /// Stable takes the canary's pod template.
    PromoteStable,
    /// Stable takes back the template it had when the rollout started.
    RestoreStable,
    WaitStableRolledOut,
    /// Pin the stable route/subset to the pods of stable's current template.
    RepinStable,
    /// Remove everything of ours from the user's objects (pins, subsets, header route).
    Cleanup,
}

impl Effect {
    /// Short name for timelines and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Effect::Prepare => "prepare",
            Effect::EnsureCanaryCapacity { .. } => "ensure_canary_capacity",
            Effect::SetWeight { .. } => "set_weight",
            Effect::RouteToStable => "route_to_stable",
            Effect::Commit { .. } => "commit",
            Effect::ScaleDownDelay(_) => "scale_down_delay",
            Effect::ScaleCanaryToZero => "scale_canary_to_zero",
            Effect::RemoveCanary => "remove_canary",
            Effect::WaitCanaryGone => "wait_canary_gone",
            Effect::ClaimStable => "claim_stable",
            Effect::PromoteStable => "promote_stable",
            Effect::RestoreStable => "restore_stable",
            Effect::WaitStableRolledOut => "wait_stable_rolled_out",
            Effect::RepinStable => "repin_stable",
            Effect::Cleanup => "cleanup",
        }
    }
}

/// What the planner needs to know of the world, read just before planning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Observed {
    pub canary_exists: bool,
    pub canary_desired: u32,
    pub canary_ready: u32,
    /// Stable's replica count now (an HPA may change it during the rollout).
    pub stable_replicas: u32,
    /// Stable no longer runs the template it had when the rollout started (promote began).
    pub stable_changed: bool,
}

/// The rollout's settings that shape plans (from the schedule and the record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub canary_replicas: u32,
    pub max_canary_replicas: Option<u32>,
    pub scale_down_delay: Duration,
    pub delete_on_rollback: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            canary_replicas: 1,
            max_canary_replicas: None,
            scale_down_delay: Duration::from_secs(30),
            delete_on_rollback: false,
        }
    }
}

impl Settings {
    /// Canary pods needed to carry `weight`% of stable's traffic: ceil(weight × stable's
    /// replicas), never below `canary_replicas`, never above `max_canary_replicas`.
    pub fn capacity(&self, weight: u32, stable_replicas: u32) -> u32 {
        let needed = (u64::from(weight.min(100)) * u64::from(stable_replicas)).div_ceil(100) as u32;
        let floor = self.canary_replicas.max(1);
        let ceiling = self.max_canary_replicas.unwrap_or(u32::MAX).max(floor);
        needed.clamp(floor, ceiling)
    }
}

/// Why no plan could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the canary has no ready pod; {what} would send traffic to nothing")]
    NoReadyCanary { what: &'static str },
    #[error("{0} is not planned here")]
    NotPlanned(&'static str),
}

/// The effects of applying `event` (a policy's decision or a human's command) to a rollout
/// in `phase`. In-flight phases it leads to (RollingBack, Aborting, Promoting) are finished
/// by [`finish`], planned again from a fresh observation.
pub fn begin(
    event: Event,
    cause: Cause,
    weight_now: u32,
    obs: &Observed,
    settings: &Settings,
) -> Result<Vec<Effect>, Refusal> {
    use Effect::*;
    let commit = |event| Commit { event, cause };
    Ok(match event {
        Event::Advance { weight, .. } => vec![
            EnsureCanaryCapacity {
                replicas: settings.capacity(weight, obs.stable_replicas),
            },
            commit(event),
            SetWeight { weight },
        ],
        Event::Resume => {
            // Resume re-applies the weight: never to a canary that lost its pods meanwhile.
            if weight_now > 0 && !obs.canary_exists {
                return Err(Refusal::NoReadyCanary { what: "resume" });
            }
            vec![
                EnsureCanaryCapacity {
                    replicas: settings.capacity(weight_now, obs.stable_replicas),
                },
                commit(event),
                SetWeight { weight: weight_now },
            ]
        }
        // Stable is claimed first, so no promote that lost the race can change its template
        // afterwards; `finish` then sees stable as it stays, and routes to it first thing
        // (or restores it first, if a promote got that far).
        Event::BeginRollback | Event::Abort => vec![ClaimStable, commit(event)],
        Event::BeginPromote | Event::Pause | Event::Fail => vec![commit(event)],
        Event::CanaryReady { weight } => vec![Prepare, SetWeight { weight }, commit(event)],
        Event::PromoteDone => return Err(Refusal::NotPlanned("promote_done")),
        Event::RollbackDone => return Err(Refusal::NotPlanned("rollback_done")),
    })
}

/// The effects that finish an in-flight phase; empty for other phases. `actor` and the
/// reasons go into the final commit.
pub fn finish(phase: Phase, actor: &str, obs: &Observed, settings: &Settings) -> Vec<Effect> {
    use Effect::*;
    let mut plan = Vec::new();
    // Proxies still send to the canary until they see the last route write.
    let drain = |plan: &mut Vec<Effect>| {
        if obs.canary_desired > 0 || obs.canary_ready > 0 {
            plan.push(ScaleDownDelay(settings.scale_down_delay));
        }
    };
    match phase {
        Phase::RollingBack | Phase::Aborting => {
            if obs.stable_changed {
                if obs.canary_ready > 0 {
                    // Stable's pinned pods go while it rolls back: the canary carries the
                    // traffic meanwhile.
                    plan.extend([
                        EnsureCanaryCapacity {
                            replicas: settings.capacity(100, obs.stable_replicas),
                        },
                        SetWeight { weight: 100 },
                    ]);
                } else {
                    // Nothing else can carry it: unpin, so the user's own selectors follow
                    // stable's rolling update (which keeps pods available).
                    plan.push(Cleanup);
                }
                plan.extend([RestoreStable, WaitStableRolledOut, RepinStable]);
            }
            plan.push(RouteToStable);
            drain(&mut plan);
            let how = if settings.delete_on_rollback {
                plan.push(RemoveCanary);
                "canary deleted"
            } else {
                plan.push(ScaleCanaryToZero);
                "canary scaled to 0"
            };
            plan.extend([WaitCanaryGone, Cleanup]);
            let restored = if obs.stable_changed {
                ", stable's previous template restored"
            } else {
                ""
            };
            plan.push(Commit {
                event: Event::RollbackDone,
                cause: Cause::new(actor, format!("traffic on stable, {how}{restored}")),
            });
        }
        Phase::Promoting => {
            if !obs.stable_changed {
                if !obs.canary_exists || obs.canary_ready == 0 {
                    // Nothing to promote from: back to stable, which still runs its template.
                    return vec![
                        RouteToStable,
                        Commit {
                            event: Event::BeginRollback,
                            cause: Cause::new(
                                "kubectl-canary",
                                "the canary has no ready pod to promote from",
                            ),
                        },
                    ];
                }
                // Stable's pods are pinned by their template hash, which the new template
                // changes: the canary serves everything while stable rolls out.
                plan.extend([
                    EnsureCanaryCapacity {
                        replicas: settings.capacity(100, obs.stable_replicas),
                    },
                    SetWeight { weight: 100 },
                    PromoteStable,
                ]);
            }
            plan.extend([WaitStableRolledOut, RepinStable, SetWeight { weight: 0 }]);
            drain(&mut plan);
            plan.extend([
                RemoveCanary,
                WaitCanaryGone,
                Cleanup,
                Commit {
                    event: Event::PromoteDone,
                    cause: Cause::new(actor, "stable runs the new pod template; canary removed"),
                },
            ]);
        }
        _ => {}
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::*;

    fn names(plan: &[Effect]) -> Vec<String> {
        plan.iter()
            .map(|e| match e {
                Commit { event, .. } => format!("commit {}", event.name()),
                SetWeight { weight } => format!("weight {weight}"),
                EnsureCanaryCapacity { replicas } => format!("capacity {replicas}"),
                ScaleDownDelay(d) => format!("delay {}s", d.as_secs()),
                other => other.name().to_string(),
            })
            .collect()
    }

    fn obs(canary_ready: u32, stable_changed: bool) -> Observed {
        Observed {
            canary_exists: true,
            canary_desired: canary_ready.max(1),
            canary_ready,
            stable_replicas: 3,
            stable_changed,
        }
    }

    #[test]
    fn capacity_follows_the_weight() {
        let s = Settings::default();
        let table = [
            (5, 3, 1),
            (25, 3, 1),
            (50, 3, 2),
            (100, 3, 3),
            (10, 20, 2),
            (0, 3, 1),
        ];
        for (weight, stable, want) in table {
            assert_eq!(s.capacity(weight, stable), want, "{weight}% of {stable}");
        }
        let floor = Settings {
            canary_replicas: 2,
            ..s
        };
        assert_eq!(floor.capacity(5, 3), 2, "never below canary_replicas");
        let capped = Settings {
            max_canary_replicas: Some(2),
            ..s
        };
        assert_eq!(
            capped.capacity(100, 10),
            2,
            "max_canary_replicas is a ceiling"
        );
        // An HPA that scaled stable to 8: the canary follows stable's current replicas.
        assert_eq!(s.capacity(50, 8), 4);
    }

    #[test]
    fn plans_in_their_safe_order() {
        let s = Settings::default();
        let c = || Cause::new("alice", "x");
        let advance = Event::Advance {
            step: 2,
            weight: 50,
        };
        let table: Vec<(Vec<Effect>, Vec<&str>)> = vec![
            (
                begin(advance, c(), 25, &obs(1, false), &s).unwrap(),
                vec!["capacity 2", "commit advance", "weight 50"],
            ),
            (
                begin(Event::BeginRollback, c(), 25, &obs(1, false), &s).unwrap(),
                vec!["claim_stable", "commit begin_rollback"],
            ),
            (
                begin(Event::BeginRollback, c(), 100, &obs(3, true), &s).unwrap(),
                vec!["claim_stable", "commit begin_rollback"],
            ),
            (
                begin(Event::Resume, c(), 25, &obs(1, false), &s).unwrap(),
                vec!["capacity 1", "commit resume", "weight 25"],
            ),
            (
                finish(Phase::RollingBack, "alice", &obs(1, false), &s),
                vec![
                    "route_to_stable",
                    "delay 30s",
                    "scale_canary_to_zero",
                    "wait_canary_gone",
                    "cleanup",
                    "commit rollback_done",
                ],
            ),
            // Re-run after a crash that came after the scale-down: no second delay.
            (
                finish(
                    Phase::Aborting,
                    "alice",
                    &Observed {
                        canary_desired: 0,
                        canary_ready: 0,
                        ..obs(0, false)
                    },
                    &s,
                ),
                vec![
                    "route_to_stable",
                    "scale_canary_to_zero",
                    "wait_canary_gone",
                    "cleanup",
                    "commit rollback_done",
                ],
            ),
            // Rollback during promote, stable already on the canary's template.
            (
                finish(Phase::RollingBack, "alice", &obs(3, true), &s),
                vec![
                    "capacity 3",
                    "weight 100",
                    "restore_stable",
                    "wait_stable_rolled_out",
                    "repin_stable",
                    "route_to_stable",
                    "delay 30s",
                    "scale_canary_to_zero",
                    "wait_canary_gone",
                    "cleanup",
                    "commit rollback_done",
                ],
            ),
            (
                finish(Phase::Promoting, "alice", &obs(1, false), &s),
                vec![
                    "capacity 3",
                    "weight 100",
                    "promote_stable",
                    "wait_stable_rolled_out",
                    "repin_stable",
                    "weight 0",
                    "delay 30s",
                    "remove_canary",
                    "wait_canary_gone",
                    "cleanup",
                    "commit promote_done",
                ],
            ),
            (
                finish(Phase::Promoting, "alice", &obs(0, false), &s),
                vec!["route_to_stable", "commit begin_rollback"],
            ),
        ];
        for (plan, want) in table {
            assert_eq!(names(&plan), want);
        }
        assert_eq!(
            begin(
                Event::Resume,
                c(),
                25,
                &Observed {
                    canary_exists: false,
                    ..obs(0, false)
                },
                &s
            ),
            Err(Refusal::NoReadyCanary { what: "resume" })
        );
        assert!(finish(Phase::Progressing, "alice", &obs(1, false), &s).is_empty());
    }

    #[test]
    fn a_rollback_without_a_canary_to_carry_traffic_unpins_before_restoring_stable() {
        let plan = finish(
            Phase::RollingBack,
            "bob",
            &obs(0, true),
            &Settings::default(),
        );
        let n = names(&plan);
        assert_eq!(
            &n[..4],
            [
                "cleanup",
                "restore_stable",
                "wait_stable_rolled_out",
                "repin_stable"
            ]
        );
    }
}
