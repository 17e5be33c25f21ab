//! Drives one rollout for `run` (and each rollout of `run --all`): waits for its lease, then
//! steps it at the policy's interval while holding the lease, renewing it at every interval
//! (also while a long step such as a promotion runs), and gives it back when it stops. A
//! runner whose lease was taken over goes back to waiting. What happens is sent as
//! [`Update`]s; printing is the command's job.

use super::client::Session;
use super::clock;
use super::driver::{self, StepContext, StepReport};
use super::lease::{self, Acquire, Claim, RolloutLease};
use super::metrics::Metrics;
use super::notify;
use super::state::RolloutRecord;
use crate::core::attendance::{self, LeaseFacts};
use crate::core::rollout::{Event, Phase, Rollout, Transition};
use crate::error::{Error, Result};
use crate::policy::{Limits, PolicyEngine};
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What every rollout task of one process shares.
pub struct Shared {
    pub engine: PolicyEngine,
    /// One compiled policy for all the rollouts that run it.
    pub policies: driver::PolicyCache,
    pub limits: Limits,
    pub metrics: Metrics,
    /// Lease holder identity of this process.
    pub identity: String,
    /// Who is recorded in history for what the runner does itself (max_unattended).
    pub actor: String,
    /// Take the lease even from a live holder (`run --take-over`).
    pub take_over: bool,
    /// `run --all`: a failing rollout is reported and retried, never ends the process; a
    /// runner that holds more leases waits longer before taking a free one, so several
    /// runners share the rollouts.
    pub many: bool,
    /// Leases this process holds right now.
    pub held: AtomicUsize,
    /// `run --all`: live runners sharing the scope (this one included), from their presence
    /// Leases, and the active rollouts in scope, both from the last discovery round.
    pub peers: AtomicUsize,
    pub active: AtomicUsize,
}

impl Shared {
    /// How many rollouts this runner should drive for an even spread.
    fn fair_share(&self) -> usize {
        let peers = self.peers.load(Ordering::Relaxed).max(1);
        self.active.load(Ordering::Relaxed).div_ceil(peers).max(1)
    }

    fn has_peers(&self) -> bool {
        self.many && self.peers.load(Ordering::Relaxed) > 1
    }

    /// Counts one rollout out if this runner drives more than its share (true: the caller
    /// hands it over). Atomic, so only the excess is handed over.
    fn shed_one(&self) -> bool {
        if !self.has_peers() {
            return false;
        }
        let fair = self.fair_share();
        let mut held = self.held.load(Ordering::Relaxed);
        while held > fair {
            match self
                .held
                .compare_exchange(held, held - 1, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
        false
    }
}

/// How a spell of holding a lease ended.
enum Outcome {
    Ended(Ended),
    /// Somebody took the lease over.
    Lost,
    /// Handed over to even out the load (already counted out of `held`).
    Shed,
}

/// The rollout an update is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    pub namespace: String,
    pub service: String,
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.service)
    }
}

#[derive(Debug, Clone)]
pub enum Update {
    /// Somebody else drives it; we wait for their lease to lapse.
    Waiting {
        holder: String,
        expires_at: Option<DateTime<Utc>>,
    },
    /// We drive it now. `from`: the holder whose lapsed lease we took.
    Acquired { from: Option<String> },
    /// One evaluation (or convergence) done.
    Stepped {
        report: Box<StepReport>,
        rollout: Box<Rollout>,
        steps: Vec<u32>,
    },
    /// Transitions made outside a step (max_unattended's rollback).
    Transitions(Vec<Transition>),
    /// Somebody took the lease over; we stop driving and wait.
    Lost { holder: Option<String> },
    /// We drive more than our share: the lease is given back for a less busy runner.
    Shed,
    /// A step failed; `run --all` retries at the next interval.
    Failed(String),
    /// Something to know that does not stop anything (a notification that failed).
    Warning(String),
}

pub type Updates = mpsc::UnboundedSender<(Key, Update)>;

/// How a drive ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The rollout finished or paused.
    Done(Phase),
    /// Asked to stop (Ctrl-C, SIGTERM, --max-time); the rollout goes on with the next runner.
    Stopped(Option<Phase>),
}

/// True for the phases a runner drives (Paused waits for a human, Initializing for `start`).
pub fn is_active(p: Phase) -> bool {
    matches!(
        p,
        Phase::Progressing | Phase::RollingBack | Phase::Aborting | Phase::Promoting
    )
}

/// Rolls the rollout back when nobody held it for longer than the schedule's
/// `max_unattended` (`before`: its lease as it was before we took it).
pub async fn roll_back_if_overdue(
    l: &mut driver::Loaded,
    before: &LeaseFacts,
    max_unattended: Option<Duration>,
    actor: &str,
    show: bool,
) -> Result<Vec<Transition>> {
    let Some(alone) = attendance::overdue(l.rollout(), before, max_unattended, clock::now()) else {
        return Ok(vec![]);
    };
    let max = max_unattended.unwrap_or_default();
    let reason = format!(
        "unattended for {} with {}% canary traffic (schedule max_unattended {}): no runner held the rollout",
        crate::output::secs(alone.as_secs()),
        l.rollout().weight,
        humantime::format_duration(max)
    );
    driver::manual(l, Event::BeginRollback, actor, reason, show).await
}

/// Polls `fut` to completion while renewing `claim` after `first`, then every `every`.
/// Returns whether the lease is still ours.
async fn renewing<F: Future>(
    fut: F,
    lease: &RolloutLease,
    claim: &mut Claim,
    first: Duration,
    every: Duration,
) -> (F::Output, bool) {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + first, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut held = true;
    let mut out = None;
    loop {
        tokio::select! {
            o = &mut fut => return (o, held),
            _ = tick.tick(), if held => {
                // The renewal and `fut` go on together. A renewal is never dropped half-way
                // (the lease could then be renewed without our knowing its new version), so
                // a `fut` that ends first waits for it.
                let renewal = lease.renew(claim);
                tokio::pin!(renewal);
                loop {
                    tokio::select! {
                        r = &mut renewal => {
                            // A failed renewal (API hiccup) is retried at the next tick; the
                            // claim's safety margin stops us before anybody else may take over.
                            if let Ok(false) = r {
                                held = false;
                            }
                            break;
                        }
                        o = &mut fut, if out.is_none() => out = Some(o),
                    }
                }
                if let Some(o) = out.take() {
                    return (o, held);
                }
            }
        }
    }
}

/// Sends notifications in the background: a slow or failing sink never delays a step. The
/// task holds an update sender, so `run` waits for deliveries (bounded by their retries)
/// before it exits.
struct Notifier {
    client: kube::Client,
    updates: Updates,
    key: Key,
}

impl Notifier {
    fn later(&self, rec: &RolloutRecord, transitions: &[Transition]) {
        if rec.notify.is_empty() || transitions.is_empty() {
            return;
        }
        let (client, updates, key) = (self.client.clone(), self.updates.clone(), self.key.clone());
        let (rec, ts) = (rec.clone(), transitions.to_vec());
        tokio::spawn(async move {
            for w in notify::send(&client, &rec, &ts).await {
                let _ = updates.send((key.clone(), Update::Warning(w)));
            }
        });
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            // The sender is gone: nobody can ask us to stop any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Drives `service` in `sess.namespace` until it finishes, pauses, or `stop` turns true.
pub async fn drive(
    sess: Session,
    service: String,
    shared: Arc<Shared>,
    updates: Updates,
    mut stop: watch::Receiver<bool>,
) -> Result<Ended> {
    let key = Key {
        namespace: sess.namespace.clone(),
        service: service.clone(),
    };
    let send = |u: Update| {
        let _ = updates.send((key.clone(), u));
    };
    let lease = RolloutLease::new(&sess.client, &sess.namespace, &service, &shared.identity);
    let notifier = Notifier {
        client: sess.client.clone(),
        updates: updates.clone(),
        key: key.clone(),
    };
    let mut last_waiting_for: Option<String> = None;
    let mut first_look = true;
    // The last look found the lease held by a runner and we slept until its claim would lapse.
    let mut takeover = false;
    // We handed this rollout over: until then, it is the others' to take.
    let mut shed_until: Option<tokio::time::Instant> = None;
    loop {
        let l = driver::load(&sess, &service).await?;
        let phase = l.rollout().phase;
        if shared.many && !is_active(phase) {
            return Ok(Ended::Done(phase));
        }
        let policy = shared
            .policies
            .get(&shared.engine, &shared.limits, l.record())?;
        drop(l);
        // Not faster than once a second, even with a tiny interval override.
        let interval = policy.schedule.interval.max(Duration::from_secs(1));
        let duration = lease::duration_for(interval);
        if let Some(until) = shed_until.filter(|t| tokio::time::Instant::now() < *t) {
            // Still nobody's: leave it to a less busy runner a while longer. Taken by one that
            // died since: take it over as soon as its lease lapses, not after the whole pause
            // (seen: 14 s instead of 7 at a 2 s interval).
            let watched = sess
                .watched
                .as_deref()
                .and_then(|c| c.lease(&sess.namespace, &service));
            let facts = match watched {
                Some(facts) => facts,
                None => lease.facts().await?,
            };
            if facts.holder.is_none() {
                let wake = until.min(tokio::time::Instant::now() + interval / 4);
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => continue,
                    _ = stopped(&mut stop) => return Ok(Ended::Stopped(Some(phase))),
                }
            }
            takeover = facts.live_holder(clock::now()).is_none();
        }
        if shared.many {
            // Runners that start together take free rollouts in random order, and the more
            // rollouts one drives the later it reaches for another: they spread. The first
            // look spreads the rollouts found together over a whole interval, so their
            // evaluations do not all fall in the same second of every interval (200 at once
            // made the API server and Prometheus queue them); later looks are capped at half
            // an interval so a takeover stays within about three intervals.
            // A takeover (the holder we waited for stopped renewing) looks again within a
            // quarter interval and skips the full-share penalty: the rollout is unattended
            // until someone takes it, and rebalancing (shedding) evens the spread afterwards.
            let spread = if first_look {
                interval
            } else if takeover {
                interval / 4
            } else {
                interval / 2
            };
            first_look = false;
            let held = shared.held.load(Ordering::Relaxed);
            let jitter = rand::random::<u64>() % (spread.as_millis() as u64).max(1);
            let mut pause = Duration::from_millis(held as u64 * 50 + jitter).min(spread);
            if !takeover && shared.has_peers() && held >= shared.fair_share() {
                // Full already: let a runner below its share take it first.
                pause += interval / 2;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stopped(&mut stop) => return Ok(Ended::Stopped(Some(phase))),
            }
        }
        let (mut claim, before) = match lease.acquire(duration, shared.take_over).await? {
            Acquire::Held { claim, before } => (claim, before),
            Acquire::Busy(facts) => {
                takeover = facts.holder.is_some();
                if last_waiting_for != facts.holder {
                    last_waiting_for = facts.holder.clone();
                    send(Update::Waiting {
                        holder: facts.holder.clone().unwrap_or_default(),
                        expires_at: facts.expires_at(),
                    });
                }
                // Look again when the holder's claim would lapse (it renews before that).
                let until = facts
                    .expires_at()
                    .and_then(|t| (t - clock::now()).to_std().ok())
                    .unwrap_or(interval)
                    .clamp(Duration::from_millis(200), duration)
                    + Duration::from_millis(100);
                // Or as soon as the watch shows the holder gave it up (a handover).
                let released = async {
                    let Some(cache) = sess.watched.as_deref() else {
                        return std::future::pending().await;
                    };
                    loop {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        if cache
                            .lease(&sess.namespace, &service)
                            .is_some_and(|now| now.holder != facts.holder)
                        {
                            return;
                        }
                    }
                };
                tokio::select! {
                    _ = tokio::time::sleep(until) => continue,
                    _ = released => continue,
                    _ = stopped(&mut stop) => return Ok(Ended::Stopped(Some(phase))),
                }
            }
        };
        last_waiting_for = None;
        takeover = false;
        shared.held.fetch_add(1, Ordering::Relaxed);
        send(Update::Acquired {
            from: before.holder.clone().filter(|h| *h != shared.identity),
        });
        let result = hold(
            &sess,
            &service,
            &shared,
            &lease,
            &mut claim,
            &before,
            policy.schedule.max_unattended,
            &policy.schedule.steps,
            interval,
            &send,
            &notifier,
            &mut stop,
        )
        .await;
        if !matches!(result, Ok(Outcome::Shed)) {
            shared.held.fetch_sub(1, Ordering::Relaxed);
        }
        match result {
            Ok(Outcome::Ended(ended)) => {
                lease.release(claim).await;
                return Ok(ended);
            }
            // Lost the lease: back to waiting.
            Ok(Outcome::Lost) => continue,
            Ok(Outcome::Shed) => {
                lease.release(claim).await;
                // Give the others two lease durations to take it before we may again.
                shed_until = Some(tokio::time::Instant::now() + duration * 2);
                continue;
            }
            Err(e) => {
                lease.release(claim).await;
                return Err(e);
            }
        }
    }
}

/// Steps while we hold the lease.
#[allow(clippy::too_many_arguments)]
async fn hold(
    sess: &Session,
    service: &str,
    shared: &Shared,
    lease: &RolloutLease,
    claim: &mut Claim,
    before: &LeaseFacts,
    max_unattended: Option<Duration>,
    steps: &[u32],
    interval: Duration,
    send: &impl Fn(Update),
    notifier: &Notifier,
    stop: &mut watch::Receiver<bool>,
) -> Result<Outcome> {
    let cx = StepContext {
        engine: &shared.engine,
        policies: &shared.policies,
        limits: &shared.limits,
        metrics: &shared.metrics,
        dry_run: false,
        show_progress: false,
        leave_recent_finish: true,
    };
    let mut l = driver::load(sess, service).await?;
    let fresh = |l: &driver::Loaded| {
        sess.watched
            .as_deref()
            .and_then(|c| c.state_version(&sess.namespace, service))
            .is_some_and(|seen| l.stored.resource_version.as_ref() == Some(&seen))
    };
    let (done, held) = renewing(
        roll_back_if_overdue(&mut l, before, max_unattended, &shared.actor, false),
        lease,
        claim,
        interval,
        interval,
    )
    .await;
    let done = done?;
    notifier.later(l.record(), &done);
    // The state as this runner saved it last: the next step starts from it when the watch
    // shows nobody wrote since (one GET fewer per evaluation); else it is read again.
    let mut kept = Some(l);
    if !done.is_empty() {
        send(Update::Transitions(done));
    }
    if !held {
        send(Update::Lost {
            holder: holder_now(lease).await,
        });
        return Ok(Outcome::Lost);
    }
    let mut conflicts = 0;
    loop {
        if !claim.is_safe(clock::now()) {
            // Renewals have been failing for a while: another runner may take over soon.
            let holder = holder_now(lease).await;
            if holder.as_deref().is_some_and(|h| h != lease.identity) {
                send(Update::Lost { holder });
                return Ok(Outcome::Lost);
            }
            if !matches!(lease.renew(claim).await, Ok(true)) {
                send(Update::Failed(
                    "cannot renew the lease; not stepping until it is renewed".into(),
                ));
                let (_, held) = renewing(
                    tokio::time::sleep(interval),
                    lease,
                    claim,
                    interval,
                    interval,
                )
                .await;
                if !held {
                    send(Update::Lost { holder: None });
                    return Ok(Outcome::Lost);
                }
                continue;
            }
        }
        // Evaluations are due every interval from the start of the previous one, whatever
        // the step took.
        let due = tokio::time::Instant::now() + interval;
        let mine = kept.take().filter(|l| fresh(l));
        let step = async {
            let mut l = match mine {
                Some(l) => l,
                None => driver::load(sess, service).await?,
            };
            let report = driver::step(&mut l, &cx).await?;
            notifier.later(l.record(), &report.transitions);
            Ok::<_, Error>((report, l))
        };
        // The lease is renewed at every evaluation, beside it: a renewal before the step
        // (one more round trip) made every second evaluation later than the others.
        let (result, held) = renewing(step, lease, claim, Duration::ZERO, interval).await;
        let mut phase = None;
        match result {
            Ok((report, l)) => {
                conflicts = 0;
                phase = Some(l.rollout().phase);
                send(Update::Stepped {
                    report: Box::new(report),
                    rollout: Box::new(l.rollout().clone()),
                    steps: steps.to_vec(),
                });
                kept = Some(l);
            }
            Err(Error::Conflict { .. } | Error::Superseded { .. }) if conflicts < 10 => {
                // A human (rollback, pause) or a forced step wrote at the same moment (or
                // committed before this step's write, which its fence then refused): reload
                // and go on from their state.
                conflicts += 1;
                send(Update::Failed(
                    "another operator changed the rollout at the same time; reloading".into(),
                ));
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) if shared.many => send(Update::Failed(e.to_string())),
            Err(e) => return Err(e),
        }
        if !held {
            send(Update::Lost {
                holder: holder_now(lease).await,
            });
            return Ok(Outcome::Lost);
        }
        if let Some(p) = phase
            && (p.is_terminal() || p == Phase::Paused)
        {
            return Ok(Outcome::Ended(Ended::Done(p)));
        }
        if shared.shed_one() {
            send(Update::Shed);
            return Ok(Outcome::Shed);
        }
        let wait = async {
            tokio::select! {
                _ = tokio::time::sleep_until(due) => false,
                _ = stopped(stop) => true,
            }
        };
        let (stop_now, held) = renewing(wait, lease, claim, interval, interval).await;
        if stop_now {
            return Ok(Outcome::Ended(Ended::Stopped(phase)));
        }
        if !held {
            send(Update::Lost {
                holder: holder_now(lease).await,
            });
            return Ok(Outcome::Lost);
        }
    }
}

async fn holder_now(lease: &RolloutLease) -> Option<String> {
    lease.facts().await.ok().and_then(|f| f.holder)
}
