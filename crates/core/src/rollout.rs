//! The rollout state machine. Pure: time is passed in, nothing is read or written.
//! The cluster side persists [`Rollout`] unchanged (serde), so any operator can continue it.

use super::decision::{Evaluation, Observations};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Canary created, waiting for it to become ready; no traffic yet.
    Initializing,
    /// Canary receives the weight of the current step.
    Progressing,
    /// Waiting for a human; the weight stays where it is.
    Paused,
    /// Stable is taking the canary's pod template.
    Promoting,
    Promoted,
    /// Traffic goes back to stable, then the canary is scaled down.
    RollingBack,
    RolledBack,
    /// Like a rollback, but asked for by a human who stops the rollout.
    Aborting,
    Aborted,
    /// Something outside the policy broke the rollout (e.g. stable Deployment deleted).
    Failed,
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Phase::Promoted | Phase::RolledBack | Phase::Aborted | Phase::Failed
        )
    }

    pub const ALL: [Phase; 10] = [
        Phase::Initializing,
        Phase::Progressing,
        Phase::Paused,
        Phase::Promoting,
        Phase::Promoted,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Aborting,
        Phase::Aborted,
        Phase::Failed,
    ];

    /// The inverse of [`Phase::as_str`] (a phase read back from a label).
    pub fn from_name(name: &str) -> Option<Phase> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Progressing => "Progressing",
            Phase::Paused => "Paused",
            Phase::Promoting => "Promoting",
            Phase::Promoted => "Promoted",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Aborting => "Aborting",
            Phase::Aborted => "Aborted",
            Phase::Failed => "Failed",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Canary pods are ready: route the first step's weight.
    CanaryReady {
        weight: u32,
    },
    /// Move to step `step` with weight `weight`.
    Advance {
        step: usize,
        weight: u32,
    },
    Pause,
    Resume,
    BeginPromote,
    PromoteDone,
    BeginRollback,
    RollbackDone,
    Abort,
    Fail,
}

impl Event {
    /// Which kind of event this is, without its data (what a [`Transition`] records).
    pub fn kind(&self) -> EventKind {
        match self {
            Event::CanaryReady { .. } => EventKind::CanaryReady,
            Event::Advance { .. } => EventKind::Advance,
            Event::Pause => EventKind::Pause,
            Event::Resume => EventKind::Resume,
            Event::BeginPromote => EventKind::BeginPromote,
            Event::PromoteDone => EventKind::PromoteDone,
            Event::BeginRollback => EventKind::BeginRollback,
            Event::RollbackDone => EventKind::RollbackDone,
            Event::Abort => EventKind::Abort,
            Event::Fail => EventKind::Fail,
        }
    }

    pub fn name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The kind of an [`Event`], as recorded in a [`Transition`]. Serialized as its
/// [`EventKind::name`] (`"advance"`, `"begin_rollback"`, ...), the text stored since
/// before this type existed, so stored state reads back unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    CanaryReady,
    Advance,
    Pause,
    Resume,
    BeginPromote,
    PromoteDone,
    BeginRollback,
    RollbackDone,
    Abort,
    Fail,
}

impl EventKind {
    pub const ALL: [EventKind; 10] = [
        EventKind::CanaryReady,
        EventKind::Advance,
        EventKind::Pause,
        EventKind::Resume,
        EventKind::BeginPromote,
        EventKind::PromoteDone,
        EventKind::BeginRollback,
        EventKind::RollbackDone,
        EventKind::Abort,
        EventKind::Fail,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::CanaryReady => "canary_ready",
            EventKind::Advance => "advance",
            EventKind::Pause => "pause",
            EventKind::Resume => "resume",
            EventKind::BeginPromote => "begin_promote",
            EventKind::PromoteDone => "promote_done",
            EventKind::BeginRollback => "begin_rollback",
            EventKind::RollbackDone => "rollback_done",
            EventKind::Abort => "abort",
            EventKind::Fail => "fail",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The actor of transitions decided by the policy (any other actor is the user who ran a
/// command). Stored as this plain text in [`Transition::actor`].
pub const POLICY_ACTOR: &str = "policy";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("illegal transition: {event} while {phase}")]
pub struct IllegalTransition {
    pub phase: Phase,
    pub event: &'static str,
}

/// One recorded transition: when, why, who, and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub at: DateTime<Utc>,
    pub from: Phase,
    pub to: Phase,
    pub event: EventKind,
    pub step: usize,
    pub weight: u32,
    pub reason: String,
    /// [`POLICY_ACTOR`], or the user who ran the command.
    pub actor: String,
    #[serde(default)]
    pub observations: Observations,
}

impl Transition {
    /// Decided by the policy, not asked for by a user.
    pub fn by_policy(&self) -> bool {
        self.actor == POLICY_ACTOR
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The full state of one rollout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub phase: Phase,
    pub step: usize,
    /// Desired canary weight in percent.
    pub weight: u32,
    pub started_at: DateTime<Utc>,
    pub step_started_at: DateTime<Utc>,
    #[serde(default)]
    pub history: Vec<Transition>,
    /// Most recent evaluations, older ones thinned (see [`super::retention`]).
    #[serde(default)]
    pub evaluations: Vec<Evaluation>,
    /// The resolved PromQL texts of this rollout, once; evaluations keep values by index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query_texts: Vec<String>,
    /// Evaluations removed from `evaluations` to keep the state small.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub evaluations_thinned: u64,
    /// Transitions applied so far; every route write carries it as its fence.
    #[serde(default)]
    pub generation: u64,
}

/// The token every lifecycle write to the route and to stable carries: a write is refused
/// when its object already carries a newer token. Ordered by rollout, generation, then rank:
/// the rollback side outranks a writer of the same generation, so a rollback that claimed
/// the next generation (traffic to stable before its commit) wins against an advance or a
/// promote committed at that generation meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence {
    /// Tells rollouts of the same service apart (a new rollout starts again at generation 0).
    pub started_at_ms: i64,
    pub generation: u64,
    /// 1 for writes on the way back to stable (rollback, abort), 0 otherwise.
    pub rank: u8,
}

impl Fence {
    pub fn encode(&self) -> String {
        format!("{}.{}.{}", self.started_at_ms, self.generation, self.rank)
    }

    pub fn decode(text: &str) -> Option<Fence> {
        let mut parts = text.split('.');
        let fence = Fence {
            started_at_ms: parts.next()?.parse().ok()?,
            generation: parts.next()?.parse().ok()?,
            rank: parts.next().map_or(Some(0), |r| r.parse().ok())?,
        };
        parts.next().is_none().then_some(fence)
    }

    /// The claim of an operator about to commit a rollback or abort.
    pub fn claim_next(self) -> Fence {
        Fence {
            generation: self.generation + 1,
            rank: 1,
            ..self
        }
    }
}

/// See [`Rollout::reconcile_route`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRepair {
    InSync,
    /// Write this weight.
    Write(u32),
    /// Leave the route as it is and do not evaluate: traffic was moved toward stable.
    Respect,
}

/// Who caused a transition and why.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cause {
    pub actor: String,
    pub reason: String,
    pub observations: Observations,
}

impl Cause {
    pub fn new(actor: impl Into<String>, reason: impl Into<String>) -> Self {
        Cause {
            actor: actor.into(),
            reason: reason.into(),
            observations: Observations::new(),
        }
    }

    /// A transition decided by the policy ([`POLICY_ACTOR`]).
    pub fn policy(reason: impl Into<String>) -> Self {
        Cause::new(POLICY_ACTOR, reason)
    }

    pub fn with_observations(mut self, observations: Observations) -> Self {
        self.observations = observations;
        self
    }
}

impl Rollout {
    /// Evaluations kept in the state object at most (see [`super::retention`]).
    pub const MAX_EVALUATIONS: usize = super::retention::MAX_EVALUATIONS;

    pub fn new(at: DateTime<Utc>) -> Self {
        Rollout {
            phase: Phase::Initializing,
            step: 0,
            weight: 0,
            started_at: at,
            step_started_at: at,
            history: Vec::new(),
            evaluations: Vec::new(),
            query_texts: Vec::new(),
            evaluations_thinned: 0,
            generation: 0,
        }
    }

    /// The fence of the current generation.
    pub fn fence(&self) -> Fence {
        Fence {
            started_at_ms: self.started_at.timestamp_millis(),
            generation: self.generation,
            rank: u8::from(matches!(self.phase, Phase::RollingBack | Phase::Aborting)),
        }
    }

    /// The phase `event` leads to from `self.phase`, or an error if it is not allowed.
    pub fn next_phase(&self, event: &Event) -> Result<Phase, IllegalTransition> {
        use Phase::*;
        let to = match (self.phase, event) {
            (Initializing, Event::CanaryReady { .. }) => Progressing,
            (Progressing, Event::Advance { step, .. }) if *step > self.step => Progressing,
            (Progressing, Event::Pause) => Paused,
            (Paused, Event::Resume) => Progressing,
            (Progressing | Paused, Event::BeginPromote) => Promoting,
            (Promoting, Event::PromoteDone) => Promoted,
            (Initializing | Progressing | Paused | Promoting, Event::BeginRollback) => RollingBack,
            (RollingBack, Event::RollbackDone) => RolledBack,
            (Initializing | Progressing | Paused | Promoting | RollingBack, Event::Abort) => {
                Aborting
            }
            (Aborting, Event::RollbackDone) => Aborted,
            (phase, Event::Fail) if !phase.is_terminal() => Failed,
            (phase, event) => {
                return Err(IllegalTransition {
                    phase,
                    event: event.name(),
                });
            }
        };
        Ok(to)
    }

    /// Applies `event` at time `at`, recording the transition.
    pub fn apply(
        &mut self,
        event: Event,
        at: DateTime<Utc>,
        cause: Cause,
    ) -> Result<&Transition, IllegalTransition> {
        let to = self.next_phase(&event)?;
        let from = self.phase;
        match event {
            Event::CanaryReady { weight } => {
                self.step = 0;
                self.weight = weight;
                self.step_started_at = at;
            }
            Event::Advance { step, weight } => {
                self.step = step;
                self.weight = weight;
                self.step_started_at = at;
            }
            // Traffic leaves the canary as the first act of a rollback or abort.
            Event::BeginRollback | Event::Abort => self.weight = 0,
            Event::PromoteDone => self.weight = 100,
            Event::Resume => self.step_started_at = at,
            _ => {}
        }
        self.phase = to;
        self.generation += 1;
        self.history.push(Transition {
            at,
            from,
            to,
            event: event.kind(),
            step: self.step,
            weight: self.weight,
            reason: cause.reason,
            actor: cause.actor,
            observations: cause.observations,
        });
        super::retention::bound_history(&mut self.history);
        Ok(self.history.last().expect("just pushed"))
    }

    pub fn record_evaluation(&mut self, evaluation: Evaluation) {
        super::retention::record(self.kept(), evaluation);
    }

    /// Drops what a finished rollout no longer needs (see [`super::retention::summarize`]).
    pub fn summarize(&mut self) {
        super::retention::summarize(self.kept());
    }

    pub(crate) fn kept(&mut self) -> super::retention::Kept<'_> {
        super::retention::Kept {
            evaluations: &mut self.evaluations,
            query_texts: &mut self.query_texts,
            thinned: &mut self.evaluations_thinned,
        }
    }

    /// The queries behind `evaluation` (resolved PromQL text → value).
    pub fn queries_of<'a>(
        &'a self,
        evaluation: &'a Evaluation,
    ) -> impl Iterator<Item = (&'a str, Option<f64>)> + 'a {
        evaluation
            .values
            .iter()
            .filter_map(|(i, v)| self.query_texts.get(*i as usize).map(|t| (t.as_str(), *v)))
    }

    /// What to do when the route object's canary weight disagrees with this state (read
    /// before an evaluation). Disagreement is resolved toward stable, never toward more
    /// canary traffic, with one exception: the route still at the weight before this
    /// state's last advance is a crash between saving that advance and writing the route,
    /// which is finished.
    pub fn reconcile_route(&self, route: Option<u32>) -> RouteRepair {
        let desired = self.weight;
        match route {
            Some(w) if w == desired => RouteRepair::InSync,
            // More canary traffic than the state says: always back down.
            Some(w) if w > desired => RouteRepair::Write(desired),
            _ => {
                let last = self.history.last();
                let before_last_advance = last
                    .filter(|t| t.event == EventKind::Advance && t.weight == desired)
                    .and_then(|_| self.history.iter().rev().nth(1).map(|t| t.weight));
                match (route, before_last_advance) {
                    (Some(w), Some(prev)) if w == prev => RouteRepair::Write(desired),
                    // Not prepared (None) or moved toward stable by someone else (a rollback
                    // racing us, a manual emergency edit): respected.
                    _ => RouteRepair::Respect,
                }
            }
        }
    }

    /// Policy log lines kept on a hold that is no longer the latest evaluation.
    pub const MAX_LOG_LINES_KEPT: usize = super::retention::MAX_LOG_LINES_KEPT;

    pub fn last_evaluation(&self) -> Option<&Evaluation> {
        self.evaluations.last()
    }

    pub fn time_in_step(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.step_started_at).to_std().unwrap_or_default()
    }

    pub fn elapsed(&self, now: DateTime<Utc>) -> std::time::Duration {
        (now - self.started_at).to_std().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Phase::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn in_phase(phase: Phase, step: usize) -> Rollout {
        let mut r = Rollout::new(t0());
        r.phase = phase;
        r.step = step;
        r
    }

    const ALL: [Phase; 10] = Phase::ALL;

    #[test]
    fn phase_names_read_back() {
        for p in ALL {
            assert_eq!(Phase::from_name(p.as_str()), Some(p));
        }
        assert_eq!(Phase::from_name("progressing"), None);
    }

    fn events() -> Vec<Event> {
        vec![
            Event::CanaryReady { weight: 5 },
            Event::Advance {
                step: 2,
                weight: 50,
            },
            Event::Pause,
            Event::Resume,
            Event::BeginPromote,
            Event::PromoteDone,
            Event::BeginRollback,
            Event::RollbackDone,
            Event::Abort,
            Event::Fail,
        ]
    }

    /// The whole transition table: (from, event) → Some(to) or None (illegal).
    fn expected(from: Phase, event: &Event) -> Option<Phase> {
        let active = matches!(from, Initializing | Progressing | Paused | Promoting);
        match event {
            Event::CanaryReady { .. } => (from == Initializing).then_some(Progressing),
            Event::Advance { .. } => (from == Progressing).then_some(Progressing),
            Event::Pause => (from == Progressing).then_some(Paused),
            Event::Resume => (from == Paused).then_some(Progressing),
            Event::BeginPromote => matches!(from, Progressing | Paused).then_some(Promoting),
            Event::PromoteDone => (from == Promoting).then_some(Promoted),
            Event::BeginRollback => active.then_some(RollingBack),
            Event::RollbackDone => match from {
                RollingBack => Some(RolledBack),
                Aborting => Some(Aborted),
                _ => None,
            },
            Event::Abort => (active || from == RollingBack).then_some(Aborting),
            Event::Fail => (!from.is_terminal()).then_some(Failed),
        }
    }

    #[test]
    fn transition_table_is_exhaustive() {
        let mut checked = 0;
        for from in ALL {
            for event in events() {
                let mut r = in_phase(from, 1);
                let got = r.apply(event.clone(), t0(), Cause::new("test", "x"));
                match expected(from, &event) {
                    Some(to) => {
                        let t = got.unwrap_or_else(|e| panic!("{from} + {event:?}: {e}"));
                        assert_eq!(t.to, to, "{from} + {event:?}");
                        assert_eq!(r.phase, to);
                        assert_eq!(r.history.len(), 1);
                    }
                    None => {
                        let err = got.expect_err(&format!("{from} + {event:?} must be illegal"));
                        assert_eq!(err.phase, from);
                        assert_eq!(r.phase, from, "state unchanged after illegal event");
                        assert!(r.history.is_empty());
                    }
                }
                checked += 1;
            }
        }
        assert_eq!(checked, ALL.len() * events().len());
    }

    #[test]
    fn advance_must_move_forward() {
        let mut r = in_phase(Progressing, 2);
        assert!(
            r.apply(
                Event::Advance {
                    step: 2,
                    weight: 50
                },
                t0(),
                Cause::default()
            )
            .is_err()
        );
        assert!(
            r.apply(
                Event::Advance {
                    step: 1,
                    weight: 25
                },
                t0(),
                Cause::default()
            )
            .is_err()
        );
    }

    #[test]
    fn full_happy_path_records_history_and_weights() {
        let mut r = Rollout::new(t0());
        let later = |s| t0() + chrono::Duration::seconds(s);
        r.apply(
            Event::CanaryReady { weight: 5 },
            later(10),
            Cause::policy("ready"),
        )
        .unwrap();
        assert_eq!((r.step, r.weight), (0, 5));
        r.apply(
            Event::Advance {
                step: 1,
                weight: 25,
            },
            later(400),
            Cause::policy("ok"),
        )
        .unwrap();
        assert_eq!(r.step_started_at, later(400));
        assert_eq!(r.time_in_step(later(460)).as_secs(), 60);
        r.apply(
            Event::BeginPromote,
            later(900),
            Cause::new("alice", "manual"),
        )
        .unwrap();
        r.apply(Event::PromoteDone, later(960), Cause::policy("rolled out"))
            .unwrap();
        assert_eq!(r.phase, Promoted);
        assert_eq!(r.weight, 100);
        let events: Vec<_> = r.history.iter().map(|t| t.event.name()).collect();
        assert_eq!(
            events,
            ["canary_ready", "advance", "begin_promote", "promote_done"]
        );
        assert_eq!(r.history[2].actor, "alice");
    }

    #[test]
    fn rollback_sets_weight_to_zero_first() {
        let mut r = in_phase(Progressing, 1);
        r.weight = 25;
        r.apply(Event::BeginRollback, t0(), Cause::policy("errors"))
            .unwrap();
        assert_eq!(r.weight, 0);
        assert_eq!(r.history[0].weight, 0);
        r.apply(Event::RollbackDone, t0(), Cause::default())
            .unwrap();
        assert_eq!(r.phase, RolledBack);
    }

    #[test]
    fn serde_round_trip() {
        let mut r = Rollout::new(t0());
        r.apply(
            Event::CanaryReady { weight: 5 },
            t0(),
            Cause::policy("ready"),
        )
        .unwrap();
        let json = serde_json::to_string(&r).unwrap();
        let back: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        assert!(json.contains("\"phase\":\"progressing\""));
    }

    #[test]
    fn event_kinds_are_stored_as_the_old_event_names() {
        // The names stored as plain text before `EventKind` existed.
        let old = [
            "canary_ready",
            "advance",
            "pause",
            "resume",
            "begin_promote",
            "promote_done",
            "begin_rollback",
            "rollback_done",
            "abort",
            "fail",
        ];
        let kinds: Vec<_> = events().iter().map(Event::kind).collect();
        assert_eq!(kinds, EventKind::ALL);
        for ((event, kind), name) in events().iter().zip(EventKind::ALL).zip(old) {
            assert_eq!(event.name(), name);
            assert_eq!(kind.name(), name);
            assert_eq!(kind.to_string(), name);
            let t = Transition {
                at: t0(),
                from: Progressing,
                to: Progressing,
                event: kind,
                step: 1,
                weight: 25,
                reason: "r".into(),
                actor: POLICY_ACTOR.into(),
                observations: Observations::new(),
            };
            let json = serde_json::to_value(&t).unwrap();
            assert_eq!(json["event"], name, "{kind:?}");
            assert_eq!(json["actor"], "policy");
            let back: Transition = serde_json::from_value(json).unwrap();
            assert_eq!(back, t);
            assert!(back.by_policy());
        }
        // A transition stored as text by an older version still loads.
        let stored = r#"{"at":"2023-11-14T22:13:20Z","from":"progressing","to":"rolling_back",
            "event":"begin_rollback","step":1,"weight":0,"reason":"errors","actor":"alice"}"#;
        let t: Transition = serde_json::from_str(stored).unwrap();
        assert_eq!(t.event, EventKind::BeginRollback);
        assert!(!t.by_policy());
        assert!(serde_json::from_str::<EventKind>("\"begin-rollback\"").is_err());
    }

    #[test]
    fn fences_order_by_rollout_generation_then_rank() {
        let mut r = Rollout::new(t0());
        let start = r.fence();
        r.apply(Event::CanaryReady { weight: 5 }, t0(), Cause::default())
            .unwrap();
        let ready = r.fence();
        assert!(ready > start);
        // A rollback claims the next generation before its commit, and outranks an advance
        // committed at that generation by another operator meanwhile.
        let claim = ready.claim_next();
        r.apply(
            Event::Advance {
                step: 1,
                weight: 25,
            },
            t0(),
            Cause::default(),
        )
        .unwrap();
        assert!(claim > r.fence());
        r.apply(Event::BeginRollback, t0(), Cause::default())
            .unwrap();
        assert_eq!(r.fence().generation, 3);
        assert!(
            r.fence() > claim,
            "a later generation outranks an old claim"
        );
        // A newer rollout of the same service outranks anything of the old one.
        let newer = Rollout::new(t0() + chrono::Duration::seconds(1)).fence();
        assert!(newer > r.fence());
        for f in [start, claim, r.fence()] {
            assert_eq!(Fence::decode(&f.encode()), Some(f));
        }
        assert_eq!(Fence::decode("12.3").map(|f| f.rank), Some(0));
        assert_eq!(Fence::decode("x.3"), None);
        assert_eq!(Fence::decode("1.2.3.4"), None);
    }

    #[test]
    fn route_disagreements_resolve_toward_stable() {
        let mut r = Rollout::new(t0());
        r.apply(Event::CanaryReady { weight: 5 }, t0(), Cause::default())
            .unwrap();
        assert_eq!(r.reconcile_route(Some(5)), RouteRepair::InSync);
        assert_eq!(r.reconcile_route(Some(30)), RouteRepair::Write(5));
        // A rollback or a hand edit moved traffic toward stable: respected.
        assert_eq!(r.reconcile_route(Some(0)), RouteRepair::Respect);
        assert_eq!(r.reconcile_route(None), RouteRepair::Respect);
        r.apply(
            Event::Advance {
                step: 1,
                weight: 25,
            },
            t0(),
            Cause::default(),
        )
        .unwrap();
        // Crash between saving the advance and writing the route: finish it.
        assert_eq!(r.reconcile_route(Some(5)), RouteRepair::Write(25));
        // Anything else below: respected.
        assert_eq!(r.reconcile_route(Some(2)), RouteRepair::Respect);
        assert_eq!(r.reconcile_route(Some(0)), RouteRepair::Respect);
    }

    #[test]
    fn state_stays_small_over_a_long_rollout() {
        use crate::decision::{Decision, Evaluation};
        use std::collections::BTreeMap;
        let t = |i: i64| t0() + chrono::Duration::seconds(i);
        let mut r = Rollout::new(t(0));
        // 120 evaluations with 20 resolved queries of ~300 characters each, as with Prometheus.
        let queries: BTreeMap<String, Option<f64>> = (0..20)
            .map(|i| {
                (
                    format!(
                        "sum(rate(istio_requests_total{{q=\"{i}\"}}[60s])) {}",
                        "x".repeat(260)
                    ),
                    Some(i as f64),
                )
            })
            .collect();
        for i in 0..120 {
            let decision = if i == 60 {
                Decision::Advance {
                    to_weight: None,
                    reason: "ok".into(),
                }
            } else {
                Decision::hold("waiting")
            };
            r.record_evaluation(Evaluation {
                at: t(i),
                step: 0,
                weight: 5,
                decision,
                observations: Default::default(),
                queries: queries.clone(),
                values: Default::default(),
                canary_ready: None,
                log: Vec::new(),
            });
        }
        let size = serde_json::to_string(&r).unwrap().len();
        assert!(size < 64 * 1024, "{size} bytes");
        assert_eq!(
            r.last_evaluation().unwrap().values.len(),
            20,
            "latest keeps its queries"
        );
        let advance = r
            .evaluations
            .iter()
            .find(|e| e.decision.action() == "advance")
            .unwrap();
        assert_eq!(
            advance.values.len(),
            20,
            "the decision that changed something keeps them"
        );
    }

    #[test]
    fn evaluations_are_bounded() {
        let mut r = Rollout::new(t0());
        for i in 0..(Rollout::MAX_EVALUATIONS + 7) {
            r.record_evaluation(Evaluation {
                at: t0(),
                step: i,
                weight: 5,
                decision: crate::decision::Decision::hold("x"),
                observations: Default::default(),
                queries: Default::default(),
                values: Default::default(),
                canary_ready: None,
                log: vec![],
            });
        }
        assert!(r.evaluations.len() <= Rollout::MAX_EVALUATIONS);
        assert_eq!(r.evaluations[0].step, 0, "thinned, not cut");
        assert_eq!(
            r.last_evaluation().unwrap().step,
            Rollout::MAX_EVALUATIONS + 6
        );
    }
}
