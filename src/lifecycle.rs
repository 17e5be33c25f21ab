//! Runs the core's plans ([`crate::core::plan`]) against a [`World`]: the cluster
//! (`crate::cluster::world`), the simulator (`crate::sim`) or the fakes of the exhaustive
//! crash and race tests below. The lifecycle after a decision exists once, here, and so
//! does one evaluation step ([`tick`]).

use crate::core::plan::{self, Effect, Observed, Settings};
use crate::core::rollout::{Cause, Event, Fence, POLICY_ACTOR, Phase, Rollout, Transition};
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use std::future::Future;

/// Where plans run. Every effect is idempotent, so a plan re-run after a crash converges.
pub trait World: Send {
    fn now(&self) -> DateTime<Utc>;
    fn settings(&self) -> Settings;
    /// The rollout as this operator knows it (loaded, plus what it committed since).
    fn rollout(&self) -> &Rollout;
    fn rollout_mut(&mut self) -> &mut Rollout;
    /// Reads the stored rollout again (what another operator committed) as this operator's.
    fn reload(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// Compare-and-swap save of [`World::rollout`] over the version last loaded or saved;
    /// [`Error::Conflict`] when another operator saved in between.
    fn save(&mut self) -> impl Future<Output = Result<()>> + Send;
    /// The fence of the stored rollout now (another operator may have moved it on, or
    /// started a new rollout).
    fn stored_fence(&mut self) -> impl Future<Output = Result<Fence>> + Send;
    /// Tells people (Kubernetes Events, notifications, the simulator's timeline).
    fn announce(&mut self, transition: &Transition) -> impl Future<Output = ()> + Send;
    fn observe(&mut self) -> impl Future<Output = Result<Observed>> + Send;
    /// The canary weight the route sends now (None: the route is not set up).
    fn route_weight(&mut self) -> impl Future<Output = Result<Option<u32>>> + Send;
    fn execute(&mut self, effect: &Effect, fence: Fence)
    -> impl Future<Output = Result<()>> + Send;
}

/// Effects that change the workloads or raise traffic: run only while the stored state is
/// still the one this operator planned from. Writes toward stable always run.
fn needs_current_state(e: &Effect) -> bool {
    matches!(
        e,
        Effect::Prepare
            | Effect::EnsureCanaryCapacity { .. }
            | Effect::SetWeight { .. }
            | Effect::PromoteStable
            | Effect::RestoreStable
            | Effect::RepinStable
            | Effect::ScaleCanaryToZero
            | Effect::RemoveCanary
    )
}

/// Runs `plan` in order; stops at the first failure (what was committed stays committed).
pub async fn run<W: World>(w: &mut W, plan: Vec<Effect>) -> Result<Vec<Transition>> {
    let mut done = Vec::new();
    for effect in plan {
        match effect {
            Effect::Commit { event, cause } => {
                let now = w.now();
                let before = w.rollout().clone();
                let t = w
                    .rollout_mut()
                    .apply(event, now, cause)
                    .cloned()
                    .map_err(|e| Error::Refused(format!("cannot do that now: {e}")))?;
                if let Err(e) = w.save().await {
                    // Not committed: this operator's view stays what is stored.
                    *w.rollout_mut() = before;
                    return Err(e);
                }
                w.announce(&t).await;
                done.push(t);
            }
            // Traffic to stable and the claim on stable take the next generation: they
            // precede (or repeat) the commit of a rollback, and no older writer may write
            // the route or stable's template after them.
            Effect::RouteToStable | Effect::ClaimStable => {
                let r = w.rollout();
                let fence = if r.fence().rank == 1 {
                    r.fence()
                } else {
                    r.fence().claim_next()
                };
                w.execute(&effect, fence).await?;
            }
            other => {
                // Traffic only ever goes to ready pods, whatever was observed when planning.
                if let Effect::SetWeight { weight } = other
                    && weight > 0
                    && w.observe().await?.canary_ready == 0
                {
                    return Err(plan::Refusal::NoReadyCanary {
                        what: "raising its weight",
                    }
                    .into());
                }
                if needs_current_state(&other) {
                    let stored = w.stored_fence().await?;
                    if stored != w.rollout().fence() {
                        return Err(superseded(w.rollout(), stored));
                    }
                }
                let fence = w.rollout().fence();
                w.execute(&other, fence).await?;
            }
        }
    }
    Ok(done)
}

fn superseded(r: &Rollout, stored: Fence) -> Error {
    Error::Superseded {
        ours: r.generation,
        theirs: stored.generation,
    }
}

/// Applies `event` with its effects, then finishes the phase it leads to.
pub async fn apply<W: World>(w: &mut W, event: Event, cause: Cause) -> Result<Vec<Transition>> {
    let obs = w.observe().await?;
    let weight = w.rollout().weight;
    let plan = plan::begin(event, cause, weight, &obs, &w.settings())?;
    let mut done = run(w, plan).await?;
    done.extend(converge(w).await?);
    Ok(done)
}

/// A human's promote/rollback/abort/pause/resume: re-running a command that already took
/// effect converges instead of failing.
pub async fn command<W: World>(
    w: &mut W,
    event: Event,
    cause: Cause,
    rollout_name: &str,
) -> Result<Vec<Transition>> {
    // A rollback or abort is never lost to a race: it continues from what the other
    // operator committed.
    let retries = if matches!(event, Event::BeginRollback | Event::Abort) {
        3
    } else {
        0
    };
    let mut attempt = 0;
    loop {
        let phase = w.rollout().phase;
        if let Err(e) = w.rollout().next_phase(&event) {
            let already = matches!(
                (&event, phase),
                (Event::BeginRollback, Phase::RollingBack | Phase::RolledBack)
                    | (Event::Abort, Phase::Aborting | Phase::Aborted)
                    | (Event::BeginPromote, Phase::Promoting | Phase::Promoted)
                    | (Event::Pause, Phase::Paused)
                    | (Event::Resume, Phase::Progressing)
            );
            if already {
                return converge(w).await;
            }
            return Err(Error::Refused(format!(
                "cannot {} rollout {rollout_name}: it is {phase} ({e})",
                event.name()
            )));
        }
        match apply(w, event.clone(), cause.clone()).await {
            Err(Error::Conflict { .. } | Error::Superseded { .. } | Error::Provider(_))
                if attempt < retries =>
            {
                attempt += 1;
                w.reload().await?;
            }
            other => return other,
        }
    }
}

/// Routes the first weight of a rollout whose canary is ready. When that fails, nothing is
/// left routed: a rollout still Initializing is rolled back (the canary never got traffic);
/// one another operator ended meanwhile loses only the pieces this start added.
pub async fn start_traffic<W: World>(w: &mut W, weight: u32, cause: Cause) -> Result<()> {
    let Err(e) = apply(w, Event::CanaryReady { weight }, cause.clone()).await else {
        return Ok(());
    };
    w.reload().await?;
    match w.rollout().phase {
        Phase::Initializing => {
            let why = Cause::new(cause.actor, format!("traffic setup failed: {e}"));
            apply(w, Event::BeginRollback, why).await?;
        }
        // Another operator is ending it: finish with them (every effect is idempotent).
        // Losing the race for the final commit to them is fine.
        Phase::RollingBack | Phase::Aborting => {
            let _ = converge(w).await;
            w.reload().await?;
        }
        _ => {}
    }
    // Its cleanup may have run before this start's prepare.
    sweep(w).await?;
    Err(e)
}

/// On a finished rollout, undoes whatever a stale writer (a start or step that lost a race)
/// did after the end: traffic back to stable first, then the canary down again and our pins
/// and route entries removed. Idempotent; a failed rollout (stable gone) is left alone.
pub async fn sweep<W: World>(w: &mut W) -> Result<()> {
    let down = match w.rollout().phase {
        Phase::RolledBack | Phase::Aborted if !w.settings().delete_on_rollback => {
            Effect::ScaleCanaryToZero
        }
        Phase::RolledBack | Phase::Aborted | Phase::Promoted => Effect::RemoveCanary,
        _ => return Ok(()),
    };
    let fence = w.rollout().fence();
    for effect in [Effect::RouteToStable, down, Effect::Cleanup] {
        w.execute(&effect, fence).await?;
    }
    Ok(())
}

/// Finishes in-flight phases (RollingBack, Aborting, Promoting), planning again from a fresh
/// observation after each plan; returns the transitions made.
pub async fn converge<W: World>(w: &mut W) -> Result<Vec<Transition>> {
    let mut done = Vec::new();
    let mut replans = 0;
    loop {
        let phase = w.rollout().phase;
        if !matches!(
            phase,
            Phase::RollingBack | Phase::Aborting | Phase::Promoting
        ) {
            return Ok(done);
        }
        let actor = w
            .rollout()
            .history
            .last()
            .map(|t| t.actor.clone())
            .unwrap_or_else(|| POLICY_ACTOR.into());
        // Take the phase over: of two operators finishing it at once (two `run`s, a `step`
        // beside a `promote`), only the one that saved this bump may write, the other's
        // fence is older everywhere.
        w.rollout_mut().generation += 1;
        if let Err(e) = w.save().await {
            w.rollout_mut().generation -= 1;
            return Err(e);
        }
        let obs = w.observe().await?;
        let plan = plan::finish(phase, &actor, &obs, &w.settings());
        match run(w, plan).await {
            Ok(ts) => done.extend(ts),
            // The world changed under the plan (the canary went meanwhile): plan again.
            Err(Error::Plan(_)) if replans < 3 => replans += 1,
            Err(e) => return Err(e),
        }
    }
}

mod tick;
pub use tick::{Judge, Judgement, Tick, TickOptions, tick};

#[cfg(test)]
mod model;
