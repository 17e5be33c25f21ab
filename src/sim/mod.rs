//! Offline simulation: the real decision loop (state machine, policy engine, gates) against a
//! simulated service on a virtual clock. Deterministic for a given seed.

pub mod scenario;

use crate::controller::Evaluator;
use crate::core::decision::Observations;
use crate::core::facts::{Facts, PodFacts, TrackMetrics, finite};
use crate::core::plan::{Effect, Observed, Settings};
use crate::core::rollout::{Cause, Event, EventKind, Fence, Phase, Rollout, Transition};
use crate::core::stats::quantile;
use crate::error::Result as CanaryResult;
use crate::lifecycle;
use chrono::{DateTime, Utc};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Binomial, Distribution, LogNormal, Poisson};
pub use scenario::{Outcome, Scenario};
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How long `start` waits for canary pods before giving up (like a progress deadline).
pub const READY_TIMEOUT: Duration = Duration::from_secs(300);
/// Window of the "recent" rates and quantiles, as a `[1m]` range in PromQL.
const RECENT_WINDOW: Duration = Duration::from_secs(60);
/// Latency observations kept per tick and per step, to bound memory and test cost.
const SAMPLES_PER_TICK: u64 = 200;
const SAMPLES_PER_STEP: usize = 1000;

/// One line of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Virtual seconds since the rollout started.
    pub at_secs: u64,
    pub phase: Phase,
    pub weight: u32,
    pub action: String,
    pub reason: String,
    pub observations: Observations,
    /// Set when a transition happened at this row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transition: Option<EventKind>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: String,
    pub policy: String,
    pub seed: u64,
    pub outcome: Outcome,
    /// Virtual seconds at which the outcome was reached.
    pub outcome_at_secs: u64,
    pub reason: String,
    pub rows: Vec<Row>,
    pub rollout: Rollout,
}

struct Tick {
    at: Duration,
    requests: f64,
    errors: f64,
}

/// Simulated traffic of one version.
#[derive(Default)]
struct TrackSim {
    ticks: VecDeque<Tick>,
    latencies: VecDeque<(Duration, f64)>,
    step_requests: f64,
    step_errors: f64,
    step_samples: VecDeque<f64>,
}

impl TrackSim {
    fn reset_step(&mut self) {
        self.step_requests = 0.0;
        self.step_errors = 0.0;
        self.step_samples.clear();
    }

    fn record(&mut self, at: Duration, requests: u64, errors: u64, samples: Vec<f64>) {
        self.ticks.push_back(Tick {
            at,
            requests: requests as f64,
            errors: errors as f64,
        });
        self.step_requests += requests as f64;
        self.step_errors += errors as f64;
        for s in samples {
            self.latencies.push_back((at, s));
            self.step_samples.push_back(s);
        }
        while self.step_samples.len() > SAMPLES_PER_STEP {
            self.step_samples.pop_front();
        }
        let keep_from = at.saturating_sub(RECENT_WINDOW);
        while self.ticks.front().is_some_and(|t| t.at <= keep_from) {
            self.ticks.pop_front();
        }
        while self.latencies.front().is_some_and(|(t, _)| *t <= keep_from) {
            self.latencies.pop_front();
        }
    }

    fn metrics(&self, window: Duration) -> TrackMetrics {
        let requests: f64 = self.ticks.iter().map(|t| t.requests).sum();
        let errors: f64 = self.ticks.iter().map(|t| t.errors).sum();
        let secs = window.as_secs_f64();
        let recent: Vec<f64> = self.latencies.iter().map(|(_, l)| *l).collect();
        TrackMetrics {
            requests: Some(self.step_requests),
            errors: Some(self.step_errors),
            request_rate: finite(requests / secs),
            // 0/0 is NaN: no requests means no error rate, exactly as in PromQL.
            error_rate: finite(errors / requests),
            latency_p50: quantile(&recent, 0.50),
            latency_p95: quantile(&recent, 0.95),
            latency_p99: quantile(&recent, 0.99),
            latency_samples: self.step_samples.iter().copied().collect(),
        }
    }
}

/// The simulated world: scenario state with faults applied as time passes.
struct World {
    scenario: Scenario,
    rng: ChaCha8Rng,
    stable: TrackSim,
    canary: TrackSim,
    crash_loop: bool,
    metrics_down: bool,
    restarts: u32,
    next_fault: usize,
    /// What the simulated route sends to the canary (written by the lifecycle's effects).
    route_weight: u32,
    canary_replicas: u32,
    stable_changed: bool,
}

impl World {
    fn new(mut scenario: Scenario, seed: u64) -> Self {
        scenario.faults.sort_by_key(|f| f.at);
        let crash_loop = scenario.pods.crash_loop;
        World {
            scenario,
            rng: ChaCha8Rng::seed_from_u64(seed),
            stable: TrackSim::default(),
            canary: TrackSim::default(),
            crash_loop,
            metrics_down: false,
            restarts: 0,
            next_fault: 0,
            route_weight: 0,
            canary_replicas: 0,
            stable_changed: false,
        }
    }

    fn apply_faults(&mut self, now: Duration) {
        while let Some(f) = self
            .scenario
            .faults
            .get(self.next_fault)
            .filter(|f| f.at <= now)
            .cloned()
        {
            for (change, version) in [
                (&f.canary, &mut self.scenario.canary),
                (&f.stable, &mut self.scenario.stable),
            ] {
                if let Some(c) = change {
                    if let Some(e) = c.error_rate {
                        version.error_rate = e;
                    }
                    if let Some(l) = c.latency_ms {
                        version.latency_ms = l;
                    }
                    if let Some(s) = c.latency_spread {
                        version.latency_spread = s;
                    }
                }
            }
            if let Some(r) = f.rps {
                self.scenario.traffic.rps = r;
            }
            if let Some(c) = f.crash_loop {
                self.crash_loop = c;
            }
            if let Some(d) = f.metrics_down {
                self.metrics_down = d;
            }
            self.scenario.signals.extend(f.signals.clone());
            self.next_fault += 1;
        }
    }

    /// Serves `dt` of traffic with `weight`% on the canary.
    fn serve(&mut self, at: Duration, dt: Duration, weight: u32) {
        let total = self.scenario.traffic.rps * dt.as_secs_f64();
        let canary_share = f64::from(weight) / 100.0;
        // A canary without ready pods fails every request routed to it (no endpoints → 503).
        let canary_error_rate = if self.crash_loop {
            1.0
        } else {
            self.scenario.canary.error_rate
        };
        let stable = self.scenario.stable.clone();
        let canary = self.scenario.canary.clone();
        let s = self.traffic(total * (1.0 - canary_share), stable.error_rate, &stable);
        let c = self.traffic(total * canary_share, canary_error_rate, &canary);
        self.stable.record(at, s.0, s.1, s.2);
        self.canary.record(at, c.0, c.1, c.2);
        if self.crash_loop {
            self.restarts += 1;
        }
    }

    fn traffic(
        &mut self,
        mean: f64,
        error_rate: f64,
        v: &scenario::Version,
    ) -> (u64, u64, Vec<f64>) {
        let n = if mean > 0.0 {
            Poisson::new(mean)
                .map(|p| p.sample(&mut self.rng) as u64)
                .unwrap_or(0)
        } else {
            0
        };
        let errors = Binomial::new(n, error_rate.clamp(0.0, 1.0))
            .map(|b| b.sample(&mut self.rng))
            .unwrap_or(0);
        let dist = LogNormal::new(v.latency_ms.ln(), v.latency_spread.max(1e-6)).ok();
        let samples = match dist {
            Some(d) => (0..n.min(SAMPLES_PER_TICK))
                .map(|_| d.sample(&mut self.rng))
                .collect(),
            None => Vec::new(),
        };
        (n, errors, samples)
    }

    fn facts(&mut self, queries: &BTreeMap<String, String>) -> Facts {
        let pods = self.scenario.pods.clone();
        let mut facts = Facts {
            stable_pods: PodFacts {
                desired: pods.stable,
                ready: pods.stable,
                restarts: 0,
                crash_looping: false,
            },
            canary_pods: PodFacts {
                desired: self.canary_replicas,
                ready: if self.crash_loop {
                    0
                } else {
                    self.canary_replicas
                },
                restarts: self.restarts,
                crash_looping: self.crash_loop && self.restarts >= 3,
            },
            ..Facts::default()
        };
        if self.metrics_down {
            for name in queries.keys() {
                facts.queries.insert(name.clone(), None);
            }
            return facts;
        }
        facts.stable = self.stable.metrics(RECENT_WINDOW);
        facts.canary = self.canary.metrics(RECENT_WINDOW);
        for name in queries.keys() {
            // Signals get ±5% noise so policies don't depend on exact values.
            let value = self
                .scenario
                .signals
                .get(name)
                .map(|v| v * (0.95 + 0.1 * self.rng.random::<f64>()));
            facts.queries.insert(name.clone(), value.and_then(finite));
            facts.resolved.insert(format!("sim:{name}"), value);
        }
        facts
    }
}

fn at_time(start: DateTime<Utc>, offset: Duration) -> DateTime<Utc> {
    start + chrono::Duration::from_std(offset).unwrap_or_default()
}

/// The simulated cluster as a [`lifecycle::World`]: the core's effects change the simulated
/// route and pods on the virtual clock, and each shows up in the timeline.
struct SimWorld<'a> {
    world: &'a mut World,
    rollout: &'a mut Rollout,
    rows: &'a mut Vec<Row>,
    start: DateTime<Utc>,
    now: &'a mut Duration,
    settings: Settings,
}

impl SimWorld<'_> {
    fn effect_row(&mut self, action: &str, reason: String) {
        self.rows.push(Row {
            at_secs: self.now.as_secs(),
            phase: self.rollout.phase,
            weight: self.world.route_weight,
            action: action.to_string(),
            reason,
            observations: Observations::new(),
            transition: None,
        });
    }
}

impl lifecycle::World for SimWorld<'_> {
    fn now(&self) -> DateTime<Utc> {
        at_time(self.start, *self.now)
    }

    fn settings(&self) -> Settings {
        self.settings
    }

    fn rollout(&self) -> &Rollout {
        self.rollout
    }

    fn rollout_mut(&mut self) -> &mut Rollout {
        self.rollout
    }

    // One operator, nothing to race with: the store is the rollout itself.
    async fn reload(&mut self) -> CanaryResult<()> {
        Ok(())
    }

    async fn save(&mut self) -> CanaryResult<()> {
        Ok(())
    }

    async fn stored_fence(&mut self) -> CanaryResult<Fence> {
        Ok(self.rollout.fence())
    }

    async fn announce(&mut self, t: &Transition) {
        self.rows.push(Row {
            at_secs: self.now.as_secs(),
            phase: t.to,
            weight: self.world.route_weight,
            action: t.event.name().to_string(),
            reason: t.reason.clone(),
            observations: t.observations.clone(),
            transition: Some(t.event),
        });
    }

    async fn observe(&mut self) -> CanaryResult<Observed> {
        let ready = if self.world.crash_loop {
            0
        } else {
            self.world.canary_replicas
        };
        Ok(Observed {
            canary_exists: true,
            canary_desired: self.world.canary_replicas,
            canary_ready: ready,
            stable_replicas: self.world.scenario.pods.stable,
            stable_changed: self.world.stable_changed,
        })
    }

    async fn route_weight(&mut self) -> CanaryResult<Option<u32>> {
        Ok(Some(self.world.route_weight))
    }

    async fn execute(&mut self, effect: &Effect, _fence: Fence) -> CanaryResult<()> {
        match effect {
            Effect::EnsureCanaryCapacity { replicas } if self.world.canary_replicas < *replicas => {
                self.world.canary_replicas = *replicas;
                self.effect_row("scale", format!("canary scaled up to {replicas} pods"));
            }
            Effect::SetWeight { weight } => {
                self.world.route_weight = *weight;
                self.effect_row("route", format!("route: {weight}% to the canary"));
            }
            Effect::RouteToStable => {
                self.world.route_weight = 0;
                self.effect_row("route", "route: weight 0, all traffic on stable".into());
            }
            Effect::ScaleDownDelay(d) => {
                *self.now += *d;
                self.effect_row(
                    "wait",
                    format!(
                        "scale-down delay {} (proxies converge)",
                        humantime::format_duration(*d)
                    ),
                );
            }
            Effect::ScaleCanaryToZero | Effect::RemoveCanary => {
                self.world.canary_replicas = 0;
                let how = if matches!(effect, Effect::RemoveCanary) {
                    "canary deleted"
                } else {
                    "canary scaled to 0"
                };
                self.effect_row("scale", how.into());
            }
            Effect::PromoteStable => {
                self.world.stable_changed = true;
                self.effect_row("promote", "stable takes the canary's pod template".into());
            }
            Effect::RestoreStable => {
                self.world.stable_changed = false;
                self.effect_row("restore", "stable takes back its previous template".into());
            }
            _ => {}
        }
        Ok(())
    }
}

/// The policy over the simulated service: the traffic of the past interval at the route's
/// weight, then one evaluation.
struct SimJudge<'a, 'e> {
    evaluator: &'a Evaluator<'e>,
    queries: &'a BTreeMap<String, String>,
    interval: Duration,
}

impl lifecycle::Judge<SimWorld<'_>> for SimJudge<'_, '_> {
    async fn judge(&mut self, w: &mut SimWorld<'_>) -> CanaryResult<lifecycle::Judgement> {
        let now = *w.now;
        w.world.serve(now, self.interval, w.world.route_weight);
        let facts = w.world.facts(self.queries);
        let evaluated = self
            .evaluator
            .evaluate(w.rollout, &facts, at_time(w.start, now));
        Ok(lifecycle::Judgement::Evaluated {
            evaluated: Box::new(evaluated),
            warnings: Vec::new(),
        })
    }
}

/// Runs `scenario` through the policy of `evaluator` and reports the timeline and outcome.
pub fn run(evaluator: &Evaluator<'_>, scenario: &Scenario, seed: u64) -> Report {
    let schedule = evaluator.policy.schedule.clone();
    let start = DateTime::from_timestamp(1_767_225_600, 0).expect("valid epoch"); // 2026-01-01
    let mut world = World::new(scenario.clone(), seed);
    let mut rollout = Rollout::new(start);
    let mut rows = Vec::new();
    let tick = schedule.interval;
    let mut now = Duration::ZERO;
    let mut finished: Option<(Outcome, String, Duration)> = None;
    let settings = Settings {
        canary_replicas: scenario.pods.canary.max(1),
        max_canary_replicas: schedule.max_canary_replicas,
        scale_down_delay: schedule.scale_down_delay,
        delete_on_rollback: false,
    };
    world.canary_replicas = settings.capacity(schedule.weight_at(0), scenario.pods.stable);
    // The same lifecycle as the cluster's; the simulated world never fails an effect.
    let life = |world: &mut World,
                rollout: &mut Rollout,
                rows: &mut Vec<Row>,
                now: &mut Duration,
                event: Event,
                cause: Cause| {
        let mut w = SimWorld {
            world,
            rollout,
            rows,
            start,
            now,
            settings,
        };
        futures::executor::block_on(lifecycle::apply(&mut w, event, cause))
            .expect("the simulated world runs every effect")
    };

    while now <= scenario.duration {
        world.apply_faults(now);
        if rollout.phase == Phase::Initializing {
            // The canary is created at t=0 and gets traffic once its pods are ready.
            let ready_at = scenario.pods.canary_ready_after;
            if !world.crash_loop && now >= ready_at {
                let weight = schedule.weight_at(0);
                let cause =
                    Cause::new("kubectl-canary", format!("canary ready, {weight}% traffic"));
                life(
                    &mut world,
                    &mut rollout,
                    &mut rows,
                    &mut now,
                    Event::CanaryReady { weight },
                    cause,
                );
            } else if now >= READY_TIMEOUT {
                let reason = format!(
                    "canary pods not ready after {}",
                    humantime::format_duration(READY_TIMEOUT)
                );
                let decided = now;
                life(
                    &mut world,
                    &mut rollout,
                    &mut rows,
                    &mut now,
                    Event::BeginRollback,
                    Cause::new("kubectl-canary", reason.clone()),
                );
                finished = Some((Outcome::RolledBack, reason, decided));
                break;
            }
            now += tick.min(Duration::from_secs(10));
            continue;
        }
        // The same evaluation step as the cluster's (lifecycle::tick).
        let decided = now;
        let mut effects = Vec::new();
        let mut judge = SimJudge {
            evaluator,
            queries: &schedule.queries,
            interval: tick,
        };
        let ticked = {
            let mut w = SimWorld {
                world: &mut world,
                rollout: &mut rollout,
                rows: &mut effects,
                start,
                now: &mut now,
                settings,
            };
            futures::executor::block_on(lifecycle::tick(
                &mut w,
                &mut judge,
                lifecycle::TickOptions::default(),
            ))
            .expect("the simulated world runs every effect")
        };
        let (step, evaluation) = ticked
            .decided
            .expect("a progressing rollout is evaluated at every tick");
        let decision = step.decision;
        let observations = evaluation.observations;
        let transitions = ticked.transitions;
        // The decision's row first, then what it caused.
        rows.push(row(
            &rollout,
            decided,
            decision.action(),
            decision.reason(),
            observations,
            transitions.first().map(|t| t.event),
        ));
        rows.extend(effects.into_iter().filter(|r| {
            transitions
                .first()
                .is_none_or(|t| r.transition != Some(t.event))
                || r.at_secs != decided.as_secs()
        }));
        if transitions.iter().any(|t| t.event == EventKind::Advance) {
            world.stable.reset_step();
            world.canary.reset_step();
        }
        let outcome = match rollout.phase {
            Phase::Paused => Some(Outcome::Paused),
            Phase::RolledBack => Some(Outcome::RolledBack),
            Phase::Promoted => Some(Outcome::Promoted),
            _ => None,
        };
        if let Some(outcome) = outcome {
            finished = Some((outcome, decision.reason().to_string(), decided));
            break;
        }
        now += tick;
    }
    let (outcome, reason, at) = finished.unwrap_or_else(|| {
        let last = rows.last().map(|r| r.reason.clone()).unwrap_or_default();
        (
            Outcome::Inconclusive,
            format!(
                "still running after {}: {last}",
                humantime::format_duration(scenario.duration)
            ),
            scenario.duration,
        )
    });
    Report {
        scenario: scenario.name.clone(),
        policy: evaluator.policy.path.clone(),
        seed,
        outcome,
        // When the outcome was decided (a rollback's effects, such as the scale-down delay,
        // follow in the timeline).
        outcome_at_secs: at.min(scenario.duration).as_secs(),
        reason,
        rows,
        rollout,
    }
}

fn row(
    rollout: &Rollout,
    at: Duration,
    action: &str,
    reason: &str,
    observations: Observations,
    transition: Option<EventKind>,
) -> Row {
    Row {
        at_secs: at.as_secs(),
        phase: rollout.phase,
        weight: rollout.weight,
        action: action.to_string(),
        reason: reason.to_string(),
        observations,
        transition,
    }
}

/// True when the report meets the scenario's expectation.
pub fn meets(report: &Report, expect: &scenario::Expectation) -> bool {
    report.outcome == expect.outcome
        && expect
            .within
            .is_none_or(|w| report.outcome_at_secs <= w.as_secs())
}

impl Report {
    /// Decisions that advanced or promoted while some metric was missing: must be empty.
    pub fn advances(&self) -> impl Iterator<Item = &Row> {
        self.rows
            .iter()
            .filter(|r| r.action == "advance" || r.action == "promote")
    }
}
