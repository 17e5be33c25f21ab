//! One evaluation step, the same for every executor: `step`, `run`, the runners
//! (`crate::cluster::driver`), the simulator (`crate::sim`) and the model checker
//! (`super::model`). The phase checks, the route repair with its fence, the evaluation, its
//! record and the decision's plan happen here, in this order, once.

use super::{World, apply, converge, run};
use crate::controller::Evaluated;
use crate::core::decision::Evaluation;
use crate::core::evaluate::Step;
use crate::core::plan::Effect;
use crate::core::rollout::{Cause, Event, Phase, RouteRepair, Transition};
use crate::error::Result;
use std::future::Future;

/// What the policy makes of the world now (the facts are the executor's: Prometheus and the
/// pods in the cluster, the simulated traffic, a scripted decision in the model).
pub enum Judgement {
    /// The policy's evaluation, not yet recorded or applied, and what the reads behind it
    /// warned of (metrics that came back empty).
    Evaluated {
        evaluated: Box<Evaluated>,
        warnings: Vec<String>,
    },
    /// The rollout cannot go on, outside the policy (the stable Deployment was deleted):
    /// it fails, and the route is left as it is.
    Fail(String),
}

/// Gathers the facts of `w` and runs the policy once.
pub trait Judge<W: World>: Send {
    fn judge(&mut self, w: &mut W) -> impl Future<Output = Result<Judgement>> + Send;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TickOptions {
    /// Evaluate and say what would be done; write nothing.
    pub dry_run: bool,
    /// A promote, rollback or abort committed less than this long ago is left to the
    /// operator finishing it (runners: taking it over at once would fence that operator
    /// out, and two finishers taking over from each other never finish).
    pub leave_recent_finish: Option<std::time::Duration>,
}

/// What one tick did.
#[derive(Debug, Default)]
pub struct Tick {
    /// Why nothing was evaluated, or what was done instead.
    pub note: String,
    /// The canary weight the route sent before the evaluation.
    pub route_weight: Option<u32>,
    pub warnings: Vec<String>,
    /// The policy's decision and the evaluation behind it (recorded unless a dry run).
    pub decided: Option<(Step, Evaluation)>,
    pub transitions: Vec<Transition>,
}

/// Evaluates the rollout once and applies the decision.
///
/// 1. Phases in flight (rollback, abort, promote) are finished, not evaluated; phases that
///    are not evaluated (initializing, paused, ended) say why.
/// 2. The route is repaired toward the state: a weight the state committed but a crash left
///    unwritten is written, through the lifecycle's fence check (never after another
///    operator committed) and never onto a canary without ready pods; a route below the
///    state's weight that the state did not write (a rollback, an edit by hand) is left,
///    and nothing is evaluated.
/// 3. The policy judges; the evaluation is recorded and saved even when its effects fail.
/// 4. The decision's event runs as a plan ([`apply`]).
pub async fn tick<W: World, J: Judge<W>>(
    w: &mut W,
    judge: &mut J,
    opts: TickOptions,
) -> Result<Tick> {
    let mut out = Tick::default();
    let phase = w.rollout().phase;
    match phase {
        Phase::RollingBack | Phase::Aborting | Phase::Promoting => {
            let committed = w.rollout().history.last().map(|t| (t.at, t.actor.clone()));
            if let (Some(grace), Some((at, actor))) = (opts.leave_recent_finish, committed) {
                let until = at + chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::MAX);
                if w.now() < until {
                    out.note = format!(
                        "{phase}: being finished by {actor} (since {}); taken over if still unfinished at {}",
                        at.format("%H:%M:%SZ"),
                        until.format("%H:%M:%SZ")
                    );
                    return Ok(out);
                }
            }
            if opts.dry_run {
                out.note = format!("would finish {phase}");
            } else {
                out.transitions = converge(w).await?;
                out.note = format!("finished {phase}");
            }
            return Ok(out);
        }
        Phase::Initializing => {
            out.note = "canary not ready yet: `kubectl canary start` is waiting for it (re-run start to continue after a crash)".into();
            return Ok(out);
        }
        Phase::Paused => {
            out.note = "paused: `kubectl canary resume` continues".into();
            return Ok(out);
        }
        p if p.is_terminal() => {
            out.note = format!("rollout is {p}");
            return Ok(out);
        }
        _ => {}
    }

    let route = w.route_weight().await?;
    out.route_weight = route;
    match w.rollout().reconcile_route(route) {
        RouteRepair::InSync => {}
        RouteRepair::Write(weight) if !opts.dry_run => {
            let raising = route.is_some_and(|r| r < weight);
            // Finishing an advance: never onto a canary without ready pods (the readiness
            // gate of the evaluation then rolls back instead).
            if raising && w.observe().await?.canary_ready == 0 {
                out.warnings.push(format!(
                    "not raising the route to {weight}%: the canary has no ready pod"
                ));
            } else {
                // As any plan's write: only while the stored state is the one this tick
                // read, and the write carries its fence.
                run(w, vec![Effect::SetWeight { weight }]).await?;
                if raising {
                    // The step's soak starts now, when its traffic really arrives, not
                    // when the advance was saved.
                    let now = w.now();
                    w.rollout_mut().step_started_at = now;
                    w.save().await?;
                }
            }
        }
        RouteRepair::Write(_) => {}
        RouteRepair::Respect => {
            out.note = format!(
                "the route sends {}% to the canary, less than the rollout's {}%: someone moved traffic toward stable (a rollback, or an edit by hand); not raising it. Roll back to end the rollout, or set the route back to continue",
                route.unwrap_or(0),
                w.rollout().weight,
            );
            return Ok(out);
        }
    }

    let evaluated = match judge.judge(w).await? {
        Judgement::Evaluated {
            evaluated,
            warnings,
        } => {
            out.warnings.extend(warnings);
            *evaluated
        }
        Judgement::Fail(reason) => {
            out.note = reason.clone();
            if !opts.dry_run {
                out.transitions =
                    apply(w, Event::Fail, Cause::new("kubectl-canary", reason)).await?;
            }
            return Ok(out);
        }
    };
    let Evaluated {
        step, evaluation, ..
    } = evaluated;
    if opts.dry_run {
        out.note = match &step.event {
            None => "no change".into(),
            Some(e) => format!("would apply {}", e.name()),
        };
        out.decided = Some((step, evaluation));
        return Ok(out);
    }
    let observations = evaluation.observations.clone();
    w.rollout_mut().record_evaluation(evaluation.clone());
    // The evaluation is kept even when its effects fail below.
    w.save().await?;
    let event = step.event.clone();
    let reason = step.decision.reason().to_string();
    out.decided = Some((step, evaluation));
    if let Some(event) = event {
        let cause = Cause::policy(reason).with_observations(observations);
        out.transitions = apply(w, event, cause).await?;
    }
    Ok(out)
}
