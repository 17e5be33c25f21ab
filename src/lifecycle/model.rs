//! Exhaustive crash and race tests of the lifecycle (plans + runner) over a model of the
//! cluster, FoundationDB-style: every operator runs the real [`super::tick`],
//! [`super::apply`], [`super::command`], [`super::converge`] and [`super::start_traffic`]
//! against a
//! [`ModelWorld`] whose every write is a yield point, so a test scheduler can stop an
//! operator after any effect (a crash) or run another operator in between (a race).
//!
//! The model is harsh on purpose: pods come and go the moment a Deployment changes, so a
//! wrong order shows up as traffic to a backend with no ready pod. Each effect, including
//! the fence check that precedes a write, is one atomic step here; in the cluster the route
//! write and its fence are atomic too (one read-modify-write), while the generation check
//! before a workload write is a separate read.

use super::*;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Template {
    Old,
    New,
}

const STABLE_REPLICAS: u32 = 3;
const STEPS: [u32; 3] = [5, 50, 100];

/// The shared "cluster".
#[derive(Debug, Clone)]
struct Cluster {
    stored: Rollout,
    /// resourceVersion of the state object.
    version: u64,
    prepared: bool,
    weight: u32,
    fence: Option<Fence>,
    /// Which stable template the route pins (None: the user's own selectors, all stable pods).
    stable_pin: Option<Template>,
    canary_exists: bool,
    canary_desired: u32,
    /// The fence of the last claim on the canary Deployment.
    canary_fence: Option<Fence>,
    stable_template: Template,
    stable_fence: Option<Fence>,
    announced: Vec<String>,
    violations: Vec<String>,
}

impl Cluster {
    fn stable_ready(&self, t: Template) -> u32 {
        if self.stable_template == t {
            STABLE_REPLICAS
        } else {
            0
        }
    }

    fn canary_ready(&self) -> u32 {
        if self.canary_exists {
            self.canary_desired
        } else {
            0
        }
    }

    /// The invariant: no backend that receives traffic is without ready pods.
    fn check(&mut self, after: &str) {
        let canary_share = if self.prepared { self.weight } else { 0 };
        if canary_share > 0 && self.canary_ready() == 0 {
            self.violations.push(format!(
                "after {after}: {canary_share}% to a canary with no ready pod"
            ));
        }
        let stable_pods = match self.stable_pin {
            Some(t) => self.stable_ready(t),
            None => STABLE_REPLICAS,
        };
        if canary_share < 100 && stable_pods == 0 {
            self.violations.push(format!(
                "after {after}: {}% to stable pods pinned to {:?}, none ready",
                100 - canary_share,
                self.stable_pin
            ));
        }
    }

    /// A rollout at its first step: 5% on one ready canary pod, stable pinned.
    fn progressing() -> Cluster {
        let mut c = Cluster::initializing();
        c.stored
            .apply(
                Event::CanaryReady { weight: STEPS[0] },
                t0(),
                Cause::new("alice", "ready"),
            )
            .unwrap();
        c.prepared = true;
        c.weight = STEPS[0];
        c.fence = Some(c.stored.fence());
        c.stable_pin = Some(Template::Old);
        c
    }

    /// `start` saved the rollout and its canary is ready; no route prepared yet.
    fn initializing() -> Cluster {
        Cluster {
            stored: Rollout::new(t0()),
            version: 1,
            prepared: false,
            weight: 0,
            fence: None,
            stable_pin: None,
            canary_exists: true,
            canary_desired: 1,
            canary_fence: None,
            stable_template: Template::Old,
            stable_fence: None,
            announced: Vec::new(),
            violations: Vec::new(),
        }
    }
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_767_225_600, 0).unwrap()
}

/// Returns Pending once: the point where the scheduler may switch operators or crash this one.
struct YieldPoint(bool);

impl Future for YieldPoint {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            Poll::Pending
        }
    }
}

/// One operator's view of the model cluster (its loaded rollout and CAS version).
struct ModelWorld {
    cluster: Arc<Mutex<Cluster>>,
    rollout: Rollout,
    version: u64,
}

impl ModelWorld {
    fn new(cluster: &Arc<Mutex<Cluster>>) -> Self {
        let c = cluster.lock().unwrap();
        ModelWorld {
            cluster: cluster.clone(),
            rollout: c.stored.clone(),
            version: c.version,
        }
    }
}

impl World for ModelWorld {
    fn now(&self) -> DateTime<Utc> {
        t0() + chrono::Duration::seconds(60)
    }

    fn settings(&self) -> Settings {
        Settings {
            scale_down_delay: std::time::Duration::from_secs(30),
            ..Settings::default()
        }
    }

    fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    fn rollout_mut(&mut self) -> &mut Rollout {
        &mut self.rollout
    }

    async fn reload(&mut self) -> Result<()> {
        YieldPoint(false).await;
        let c = self.cluster.lock().unwrap();
        self.rollout = c.stored.clone();
        self.version = c.version;
        Ok(())
    }

    async fn save(&mut self) -> Result<()> {
        YieldPoint(false).await;
        let mut c = self.cluster.lock().unwrap();
        if c.version != self.version {
            return Err(Error::Conflict {
                namespace: "ns".into(),
                service: "web".into(),
            });
        }
        c.stored = self.rollout.clone();
        c.version += 1;
        self.version = c.version;
        Ok(())
    }

    async fn stored_fence(&mut self) -> Result<Fence> {
        Ok(self.cluster.lock().unwrap().stored.fence())
    }

    async fn announce(&mut self, t: &Transition) {
        self.cluster
            .lock()
            .unwrap()
            .announced
            .push(format!("{} {}->{} at {}%", t.event, t.from, t.to, t.weight));
    }

    async fn observe(&mut self) -> Result<Observed> {
        let c = self.cluster.lock().unwrap();
        Ok(Observed {
            canary_exists: c.canary_exists,
            canary_desired: if c.canary_exists { c.canary_desired } else { 0 },
            canary_ready: c.canary_ready(),
            stable_replicas: STABLE_REPLICAS,
            stable_changed: c.stable_template == Template::New,
        })
    }

    async fn route_weight(&mut self) -> Result<Option<u32>> {
        let c = self.cluster.lock().unwrap();
        Ok(c.prepared.then_some(c.weight))
    }

    async fn execute(&mut self, effect: &Effect, fence: Fence) -> Result<()> {
        YieldPoint(false).await;
        let mut c = self.cluster.lock().unwrap();
        let gone = || Error::Cluster("canary Deployment is gone".into());
        match effect {
            Effect::Prepare | Effect::RepinStable => {
                if !c.canary_exists {
                    if matches!(effect, Effect::Prepare) {
                        return Err(gone());
                    }
                } else {
                    if !c.prepared {
                        c.prepared = true;
                        c.weight = 0;
                    }
                    c.stable_pin = Some(c.stable_template);
                }
            }
            Effect::EnsureCanaryCapacity { replicas } => {
                if !c.canary_exists {
                    return Err(
                        crate::core::plan::Refusal::NoReadyCanary { what: "scaling it" }.into(),
                    );
                }
                if c.canary_fence.is_some_and(|theirs| theirs > fence) {
                    return Err(Error::Cluster("canary claimed by a newer state".into()));
                }
                c.canary_fence = Some(fence);
                c.canary_desired = c.canary_desired.max(*replicas);
            }
            Effect::SetWeight { .. } | Effect::RouteToStable => {
                let weight = match effect {
                    Effect::SetWeight { weight } => *weight,
                    _ => 0,
                };
                if c.prepared {
                    if c.fence.is_some_and(|theirs| theirs > fence) {
                        return Err(Error::Cluster("fenced".into()));
                    }
                    c.fence = Some(fence);
                    c.weight = weight;
                } else if weight > 0 {
                    return Err(Error::Cluster("route not prepared".into()));
                }
            }
            Effect::ScaleDownDelay(_) | Effect::WaitCanaryGone | Effect::WaitStableRolledOut => {}
            Effect::ScaleCanaryToZero | Effect::RemoveCanary => {
                if c.canary_fence.is_some_and(|theirs| theirs > fence) {
                    return Err(Error::Cluster("canary claimed by a newer state".into()));
                }
                c.canary_desired = 0;
                if matches!(effect, Effect::RemoveCanary) {
                    c.canary_exists = false;
                    c.canary_fence = None;
                }
            }
            Effect::ClaimStable | Effect::PromoteStable | Effect::RestoreStable => {
                if c.stable_fence.is_some_and(|theirs| theirs > fence) {
                    return Err(Error::Cluster("stable claimed by a newer state".into()));
                }
                c.stable_fence = Some(fence);
                match effect {
                    Effect::PromoteStable if !c.canary_exists => return Err(gone()),
                    Effect::PromoteStable => c.stable_template = Template::New,
                    Effect::RestoreStable => c.stable_template = Template::Old,
                    _ => {}
                }
            }
            Effect::Cleanup => {
                c.prepared = false;
                c.weight = 0;
                c.stable_pin = None;
                c.fence = None;
            }
            Effect::Commit { .. } => unreachable!("run by the lifecycle"),
        }
        let name = effect.name();
        c.check(name);
        Ok(())
    }
}

/// The operators the tests interleave; each is the real lifecycle code over a fresh view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Start,
    Abort,
    Step,
    /// A step whose policy holds.
    Hold,
    Rollback,
    Promote,
    Run,
}

/// The policy of the model: the core's readiness gate, else the next step or promote (or a
/// hold). Its evaluation carries no metrics.
struct ModelPolicy {
    hold: bool,
}

impl Judge<ModelWorld> for ModelPolicy {
    async fn judge(&mut self, w: &mut ModelWorld) -> Result<Judgement> {
        use crate::core::decision::{Decision, Evaluation};
        let r = w.rollout().clone();
        let obs = w.observe().await?;
        let reason = "model".to_string();
        let (decision, event) = if obs.canary_ready == 0 {
            (Decision::Rollback { reason }, Some(Event::BeginRollback))
        } else if self.hold {
            (Decision::Hold { reason }, None)
        } else if r.step + 1 < STEPS.len() {
            let (step, weight) = (r.step + 1, STEPS[r.step + 1]);
            (
                Decision::Advance {
                    to_weight: Some(weight),
                    reason,
                },
                Some(Event::Advance { step, weight }),
            )
        } else {
            (Decision::Promote { reason }, Some(Event::BeginPromote))
        };
        Ok(Judgement::Evaluated {
            warnings: Vec::new(),
            evaluated: Box::new(crate::controller::Evaluated {
                step: crate::core::evaluate::Step {
                    decision: decision.clone(),
                    requested: None,
                    event,
                },
                evaluation: Evaluation {
                    at: w.now(),
                    step: r.step,
                    weight: r.weight,
                    decision,
                    observations: Default::default(),
                    queries: Default::default(),
                    values: Default::default(),
                    canary_ready: Some(obs.canary_ready),
                    log: Vec::new(),
                },
                wanted_latency_samples: false,
            }),
        })
    }
}

/// One step of any operator: the real [`tick`]; a finished rollout is swept.
async fn step_once(w: &mut ModelWorld, hold: bool) -> Result<Vec<Transition>> {
    if w.rollout().phase.is_terminal() {
        return sweep(w).await.map(|()| Vec::new());
    }
    let ticked = tick(w, &mut ModelPolicy { hold }, TickOptions::default()).await?;
    Ok(ticked.transitions)
}

async fn operate(op: Op, cluster: Arc<Mutex<Cluster>>) -> Result<()> {
    let mut w = ModelWorld::new(&cluster);
    let cause = Cause::new("bob", "by hand");
    match op {
        Op::Start => {
            if w.rollout().phase == Phase::Initializing {
                start_traffic(&mut w, STEPS[0], cause).await?;
            }
        }
        Op::Abort => drop(command(&mut w, Event::Abort, cause, "ns/web").await?),
        Op::Rollback => drop(command(&mut w, Event::BeginRollback, cause, "ns/web").await?),
        Op::Promote => drop(command(&mut w, Event::BeginPromote, cause, "ns/web").await?),
        Op::Step => drop(step_once(&mut w, false).await?),
        Op::Hold => drop(step_once(&mut w, true).await?),
        Op::Run => {
            for _ in 0..6 {
                w.reload().await?;
                if w.rollout().phase.is_terminal() {
                    break;
                }
                step_once(&mut w, false).await?;
            }
        }
    }
    Ok(())
}

type OpFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// Polls `f` once: Some(result) when it finished.
fn poll_once(f: &mut OpFuture) -> Option<Result<()>> {
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

/// Runs `op` to completion alone; returns how many yields it took.
fn run_alone(op: Op, cluster: &Arc<Mutex<Cluster>>) -> (usize, Result<()>) {
    let mut f: OpFuture = Box::pin(operate(op, cluster.clone()));
    let mut polls = 0;
    loop {
        polls += 1;
        if let Some(r) = poll_once(&mut f) {
            return (polls, r);
        }
        assert!(polls < 10_000, "{op:?} does not finish");
    }
}

/// What every ending must satisfy: the route and the state agree, nothing of ours is left
/// on a finished rollout, stable runs the template the outcome says.
fn assert_settled(c: &Cluster, what: &str) {
    assert!(c.violations.is_empty(), "{what}: {:?}", c.violations);
    let r = &c.stored;
    match r.phase {
        Phase::RolledBack | Phase::Aborted => {
            assert!(
                !c.prepared && c.stable_pin.is_none(),
                "{what}: leftovers {c:?}"
            );
            assert_eq!(c.canary_ready(), 0, "{what}: canary still up");
            assert_eq!(
                c.stable_template,
                Template::Old,
                "{what}: stable not restored"
            );
        }
        Phase::Promoted => {
            assert!(!c.prepared && !c.canary_exists, "{what}: leftovers {c:?}");
            assert_eq!(c.stable_template, Template::New, "{what}");
        }
        Phase::Progressing | Phase::Paused => {
            assert!(c.prepared, "{what}: {c:?}");
            assert_eq!(c.weight, r.weight, "{what}: route and state disagree");
            assert_eq!(c.stable_template, Template::Old, "{what}");
        }
        other => panic!("{what}: left in flight: {other} ({c:?})"),
    }
}

fn fresh(op: Op) -> Arc<Mutex<Cluster>> {
    Arc::new(Mutex::new(match op {
        Op::Start => Cluster::initializing(),
        _ => Cluster::progressing(),
    }))
}

/// A human re-runs a command that lost a race; `step` is what any operator runs next.
fn settle(op: Op, cluster: &Arc<Mutex<Cluster>>) {
    for _ in 0..2 {
        if run_alone(op, cluster).1.is_ok() {
            break;
        }
    }
    let _ = run_alone(Op::Step, cluster);
}

#[test]
fn crash_after_every_effect_then_rerun_converges() {
    let mut checked = 0;
    for op in [
        Op::Start,
        Op::Abort,
        Op::Step,
        Op::Rollback,
        Op::Promote,
        Op::Run,
    ] {
        let (total, _) = run_alone(op, &fresh(op));
        for crash_at in 0..total {
            let cluster = fresh(op);
            let mut f: OpFuture = Box::pin(operate(op, cluster.clone()));
            for _ in 0..crash_at {
                if poll_once(&mut f).is_some() {
                    break;
                }
            }
            drop(f); // kill -9
            settle(op, &cluster);
            let c = cluster.lock().unwrap();
            assert_settled(
                &c,
                &format!("{op:?} crashed after {crash_at} of {total} yields"),
            );
            checked += 1;
        }
    }
    assert!(checked > 40, "only {checked} crash points");
}

/// Every interleaving of `a` and `b` at effect boundaries with at most `preemptions`
/// switches away from an operator that could have continued (depth-first over schedules;
/// `usize::MAX`: all of them). One preemption already covers "the other operator runs
/// entirely at this boundary" for every boundary of either.
fn all_interleavings(
    a: Op,
    b: Op,
    preemptions: usize,
    check: impl Fn(&Cluster, &[Result<()>; 2], &str),
) -> usize {
    let start = fresh(a).lock().unwrap().clone();
    interleavings(&start, a, b, preemptions, check)
}

/// Every interleaving of `a` and `b` from `start` (no bound on preemptions).
fn all_interleavings_from(start: &Cluster, a: Op, b: Op, check: impl Fn(&Cluster, &str)) -> usize {
    interleavings(start, a, b, usize::MAX, |c, _, what| check(c, what))
}

fn interleavings(
    start: &Cluster,
    a: Op,
    b: Op,
    preemptions: usize,
    check: impl Fn(&Cluster, &[Result<()>; 2], &str),
) -> usize {
    let mut explored = 0;
    let mut stack: Vec<Vec<usize>> = vec![Vec::new()];
    while let Some(prefix) = stack.pop() {
        let cluster = Arc::new(Mutex::new(start.clone()));
        let mut ops: [Option<OpFuture>; 2] = [
            Some(Box::pin(operate(a, cluster.clone()))),
            Some(Box::pin(operate(b, cluster.clone()))),
        ];
        let mut results: [Option<Result<()>>; 2] = [None, None];
        let mut schedule = Vec::new();
        loop {
            let runnable: Vec<usize> = (0..2).filter(|i| ops[*i].is_some()).collect();
            if runnable.is_empty() {
                break;
            }
            let pick = match prefix.get(schedule.len()) {
                Some(p) => *p,
                None => {
                    // Branch here later with the other operator.
                    if runnable.len() == 2 && switches(&schedule, runnable[1]) <= preemptions {
                        let mut other = schedule.clone();
                        other.push(runnable[1]);
                        stack.push(other);
                    }
                    runnable[0]
                }
            };
            schedule.push(pick);
            let f = ops[pick].as_mut().expect("runnable");
            if let Some(r) = poll_once(f) {
                results[pick] = Some(r);
                ops[pick] = None;
            }
        }
        let results = results.map(|r| r.expect("finished"));
        // Whoever lost a race re-runs its command once, then any operator steps.
        for (i, op) in [a, b].into_iter().enumerate() {
            if results[i].is_err() {
                let _ = run_alone(op, &cluster);
            }
        }
        let _ = run_alone(Op::Step, &cluster);
        let c = cluster.lock().unwrap();
        check(&c, &results, &format!("{a:?}/{b:?} schedule {schedule:?}"));
        explored += 1;
    }
    explored
}

/// Preemptions in `schedule` followed by `next` (both operators were runnable: a switch).
fn switches(schedule: &[usize], next: usize) -> usize {
    let mut n = 0;
    let mut last = None;
    for &p in schedule.iter().chain(std::iter::once(&next)) {
        if last.is_some_and(|l| l != p) {
            n += 1;
        }
        last = Some(p);
    }
    n
}

#[test]
fn two_operators_interleaved_at_every_effect_boundary() {
    // Pairs whose schedules are few are explored completely, the others with a bound on
    // preemptions (start/abort has 14.5 million schedules unbounded: 340 s).
    let pairs = [
        (Op::Start, Op::Abort, 4),
        (Op::Step, Op::Rollback, usize::MAX),
        (Op::Promote, Op::Rollback, 6),
        (Op::Step, Op::Step, usize::MAX),
        (Op::Run, Op::Run, 4),
    ];
    for (a, b, preemptions) in pairs {
        let started = std::time::Instant::now();
        let n = all_interleavings(a, b, preemptions, |c, _results, what| {
            assert_settled(c, what);
            // No rollback or abort is lost: it ends the rollout, or was refused because the
            // rollout had already finished.
            if matches!(b, Op::Rollback | Op::Abort) {
                assert!(
                    matches!(
                        c.stored.phase,
                        Phase::RolledBack | Phase::Aborted | Phase::Promoted
                    ),
                    "{what}: {} ({:?})",
                    c.stored.phase,
                    c.announced
                );
                if c.stored.phase == Phase::Promoted {
                    assert!(
                        !c.announced.iter().any(|t| t.contains("->RollingBack")),
                        "{what}: a committed rollback was undone: {:?}",
                        c.announced
                    );
                }
            }
            // Each transition is announced once (a lost race commits nothing).
            let mut seen = c.announced.clone();
            seen.dedup();
            assert_eq!(seen, c.announced, "{what}: repeated transition");
        });
        eprintln!("{a:?}/{b:?}: {n} schedules in {:?}", started.elapsed());
        assert!(n > 10, "{a:?}/{b:?}: only {n} schedules");
    }
}

#[test]
fn a_stale_writer_cannot_raise_the_weight_after_a_rollback() {
    // The step committed its advance (generation 2) and is about to write 50%; a rollback
    // commits generation 3 and routes to stable first. The step's write then is refused.
    let cluster = fresh(Op::Step);
    let mut step: OpFuture = Box::pin(operate(Op::Step, cluster.clone()));
    // Run the step until its advance is saved.
    while cluster.lock().unwrap().stored.generation < 2 {
        assert!(poll_once(&mut step).is_none());
    }
    let (_, rolled) = run_alone(Op::Rollback, &cluster);
    rolled.unwrap();
    let result = loop {
        if let Some(r) = poll_once(&mut step) {
            break r;
        }
    };
    let c = cluster.lock().unwrap();
    assert!(result.is_err(), "the stale step must fail");
    assert_eq!(c.stored.phase, Phase::RolledBack);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
}

/// A step killed between saving its advance (5% → 50%) and writing the route.
fn crashed_after_advance() -> Arc<Mutex<Cluster>> {
    let cluster = fresh(Op::Step);
    let mut step: OpFuture = Box::pin(operate(Op::Step, cluster.clone()));
    while cluster.lock().unwrap().stored.weight == STEPS[0] {
        assert!(
            poll_once(&mut step).is_none(),
            "the step ended before its advance"
        );
    }
    drop(step); // kill -9
    {
        let c = cluster.lock().unwrap();
        assert_eq!((c.stored.weight, c.weight), (STEPS[1], STEPS[0]), "{c:?}");
    }
    cluster
}

#[test]
fn a_crash_between_an_advance_and_its_route_write_is_finished_by_the_next_tick() {
    // The step saved its advance (5% → 50%) and died before writing the route. The next
    // operator's tick, whose policy only holds, finishes the write (route repair); without
    // it, the route would stay at 5% while the state says 50%.
    let cluster = crashed_after_advance();
    let (_, held) = run_alone(Op::Hold, &cluster);
    held.unwrap();
    let c = cluster.lock().unwrap();
    assert_eq!(c.weight, STEPS[1], "route not repaired: {c:?}");
    assert_eq!(c.stored.phase, Phase::Progressing);
    assert!(c.violations.is_empty(), "{:?}", c.violations);
    assert!(
        c.stored
            .evaluations
            .last()
            .is_some_and(|e| e.decision.action() == "hold"),
        "the hold was recorded"
    );
}

#[test]
fn route_repair_races_a_rollback_at_every_boundary() {
    // A crash left the route behind the state's advance; a holding step (which repairs it)
    // and a rollback interleave at every effect boundary. The rollback always wins, and no
    // write raises the canary's share after it.
    let crashed = crashed_after_advance().lock().unwrap().clone();
    let explored = all_interleavings_from(&crashed, Op::Hold, Op::Rollback, |c, what| {
        assert_settled(c, what);
        assert_eq!(
            c.stored.phase,
            Phase::RolledBack,
            "{what}: {:?}",
            c.announced
        );
    });
    assert!(explored > 10, "only {explored} schedules");
}

#[test]
fn route_repair_never_raises_onto_a_canary_without_ready_pods() {
    // As above, but the canary's pods went before the next tick: the repair must not send
    // the committed 50% to it; the evaluation's readiness gate rolls back instead.
    let cluster = crashed_after_advance();
    cluster.lock().unwrap().canary_desired = 0;
    let _ = run_alone(Op::Hold, &cluster);
    let _ = run_alone(Op::Step, &cluster);
    let c = cluster.lock().unwrap();
    // The 5% it already had stays until the rollback (the model flags it after each effect);
    // what must never happen is a write of more.
    assert!(
        !c.violations.iter().any(|v| v.contains("50%")),
        "{:?}",
        c.violations
    );
    assert_eq!(c.stored.phase, Phase::RolledBack, "{:?}", c.announced);
    assert!(!c.prepared, "{c:?}");
}
