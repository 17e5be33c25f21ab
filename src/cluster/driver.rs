//! The driver: loads a rollout from the cluster, evaluates it, and hands the core's events to
//! `crate::lifecycle`, which runs their plans against the cluster, persisting with
//! resourceVersion CAS. Every function converges when re-run after a crash at any point.
//!
//! The ordering rules (rollback, advance, promote) live in one place, `crate::core::plan`;
//! this module does not restate them.

use super::clock;
use super::state::RolloutRecord;
use super::workloads;
use super::world::ClusterWorld;
use crate::controller::{self, Evaluator};
use crate::core::decision::{Decision, Evaluation};
use crate::core::facts::{Facts, PodFacts};
use crate::core::rollout::{Cause, Event, Phase, Transition};
use crate::core::schedule::Schedule;
use crate::error::{Error, Exit, Result};
use crate::lifecycle;
use crate::metrics::{MetricsRequest, MetricsSource};
use crate::policy::{Limits, Policy, PolicyEngine};
use k8s_openapi::api::apps::v1::Deployment;
use std::sync::Arc;
use std::time::Duration;

pub use super::loaded::{DRAIN_TIMEOUT, Loaded, PROMOTE_TIMEOUT, load};

/// Applies `--schedule-override KEY=VALUE` pairs and re-validates the schedule.
pub fn apply_overrides(s: &mut Schedule, pairs: &[String]) -> Result<()> {
    for pair in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| {
                Error::Usage(format!("--schedule-override {pair:?}: expected KEY=VALUE"))
            })?;
        crate::policy::schedule::apply_override(s, k, v)
            .map_err(|e| Error::Usage(format!("--schedule-override {k}={v}: {e}")))?;
    }
    s.validate()
        .map_err(|e| Error::Usage(format!("schedule after overrides: {e}")))
}

/// Compiled policies by (sha256, schedule overrides): a runner of many rollouts that share a
/// policy compiles it once and keeps one AST, and a command compiles once per run instead of
/// at every use.
#[derive(Default)]
pub struct PolicyCache {
    compiled: std::sync::Mutex<CompiledPolicies>,
}

/// (sha256, schedule overrides) → compiled policy.
type CompiledPolicies = std::collections::HashMap<(String, Vec<String>), Arc<Policy>>;

impl PolicyCache {
    /// The stored policy of `rec`, compiled (see [`compile`]) or from the cache.
    pub fn get(
        &self,
        engine: &PolicyEngine,
        limits: &Limits,
        rec: &RolloutRecord,
    ) -> Result<Arc<Policy>> {
        let key = (rec.policy.sha256.clone(), rec.schedule_overrides.clone());
        if let Some(p) = self.lock().get(&key) {
            return Ok(p.clone());
        }
        let policy = Arc::new(compile(engine, limits, rec)?);
        let mut cache = self.lock();
        // Rollouts come and go with their policies: a bounded cache, not a growing one.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, policy.clone());
        Ok(policy)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CompiledPolicies> {
        self.compiled.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Recompiles the stored policy source (no file needed) and applies the stored overrides.
pub fn compile(engine: &PolicyEngine, limits: &Limits, rec: &RolloutRecord) -> Result<Policy> {
    let mut policy = engine.compile(&rec.policy.path, &rec.policy.source, limits)?;
    if policy.sha256 != rec.policy.sha256 {
        return Err(Error::Cluster(format!(
            "stored policy {} does not match its recorded sha256 {} (got {}); the state was edited by hand",
            rec.policy.path, rec.policy.sha256, policy.sha256
        )));
    }
    apply_overrides(&mut policy.schedule, &rec.schedule_overrides)?;
    Ok(policy)
}

pub fn phase_exit(p: Phase) -> Exit {
    match p {
        Phase::Promoted => Exit::Ok,
        Phase::RolledBack | Phase::Aborted => Exit::RolledBack,
        Phase::Paused => Exit::Paused,
        Phase::Failed => Exit::Error,
        _ => Exit::Running,
    }
}

/// Finishes in-flight phases (RollingBack, Aborting, Promoting); returns the transitions made.
pub async fn converge(l: &mut Loaded, show: bool) -> Result<Vec<Transition>> {
    lifecycle::converge(&mut ClusterWorld::new(l, show)).await
}

/// The stable and canary Deployments as one step read them (None: not found).
pub struct Versions {
    pub stable: Option<Deployment>,
    pub canary: Option<Deployment>,
}

/// Pod health of one version: from a runner's watch when it serves, else listed.
async fn pod_facts(
    client: &kube::Client,
    ns: &str,
    cache: Option<&super::watch_cache::WatchCache>,
    d: Option<&Deployment>,
) -> Result<PodFacts> {
    let Some(d) = d else {
        return Ok(PodFacts::default());
    };
    match cache.and_then(|c| c.facts(d)) {
        Some(facts) => Ok(facts),
        None => workloads::deployment_pod_facts(client, ns, d).await,
    }
}

/// What one evaluation of this rollout asks its metrics source for, at `now`.
pub fn metrics_request(
    l: &Loaded,
    schedule: &Schedule,
    now: chrono::DateTime<chrono::Utc>,
    latency_samples: bool,
) -> MetricsRequest {
    MetricsRequest {
        namespace: l.ns().to_string(),
        service: l.target.service.clone(),
        stable_workload: l.target.stable_deployment.clone(),
        canary_workload: l.target.canary_deployment.clone(),
        flavour: schedule
            .metrics
            .unwrap_or_else(|| l.router.metrics_flavour(l.record().mesh)),
        step_started: l.rollout().step_started_at,
        now,
        queries: schedule.queries.clone(),
        latency_samples,
    }
}

/// Fetches metrics and pod facts for one evaluation (concurrently); the latency samples only
/// with `latency_samples` (see [`Policy::reads_latency_samples`]).
pub async fn gather<M: MetricsSource + Sync>(
    l: &Loaded,
    schedule: &Schedule,
    metrics: &M,
    versions: &Versions,
    latency_samples: bool,
) -> Result<(Facts, Option<String>)> {
    let client = &l.sess.client;
    let ns = l.ns();
    let req = metrics_request(l, schedule, clock::now(), latency_samples);
    let pods = async {
        let cache = l.sess.watched.as_deref();
        let (s, c) = futures::try_join!(
            pod_facts(client, ns, cache, versions.stable.as_ref()),
            pod_facts(client, ns, cache, versions.canary.as_ref())
        )?;
        Ok::<_, Error>((s, c))
    };
    let (pods, data) = tokio::join!(pods, metrics.fetch(&req));
    let (stable_pods, canary_pods) = pods?;
    let (data, warning) = match data {
        Ok(d) => (d, None),
        // No metrics is "no data" for the policy (it holds), never a pass.
        Err(e) => (Default::default(), Some(format!("metrics: {e}"))),
    };
    Ok((
        Facts {
            stable: data.stable,
            canary: data.canary,
            stable_pods,
            canary_pods,
            queries: data.queries,
            resolved: data.resolved,
            failed: data.failed,
            latency_samples_skipped: !latency_samples,
        },
        warning,
    ))
}

/// What one `step` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StepReport {
    pub service: String,
    pub namespace: String,
    pub phase: String,
    pub step: usize,
    pub weight: u32,
    /// Weight read back from the route object before the evaluation.
    pub route_weight: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<Evaluation>,
    /// The policy's own decision when a gate changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<Decision>,
    /// The event that would be (dry run) or was applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<Event>,
    pub transitions: Vec<Transition>,
    pub dry_run: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub note: String,
}

/// How long a finishing operator may take beyond the scale-down delay (stable's rollout
/// wait) before a runner assumes it died and finishes for it.
pub const FINISH_GRACE: Duration = Duration::from_secs(120);

pub struct StepContext<'a, M> {
    pub engine: &'a PolicyEngine,
    pub policies: &'a PolicyCache,
    pub limits: &'a Limits,
    pub metrics: &'a M,
    pub dry_run: bool,
    pub show_progress: bool,
    /// For runners: a promote, rollback or abort committed less than [`FINISH_GRACE`] plus
    /// the scale-down delay ago is left to the operator finishing it. Taking it over at once
    /// would fence that operator out, and two finishers taking over from each other never
    /// finish (seen with `promote` beside `run --all`). Traffic to stable precedes those
    /// commits, so waiting is safe.
    pub leave_recent_finish: bool,
}

/// The policy over the cluster: the rollout's Deployments and pods, Prometheus, one
/// evaluation (two when the policy turns out to read latency samples the first one skipped).
struct ClusterJudge<'c, 'x, M> {
    cx: &'c StepContext<'x, M>,
}

impl<M: MetricsSource + Sync> lifecycle::Judge<ClusterWorld<'_>> for ClusterJudge<'_, '_, M> {
    async fn judge(&mut self, w: &mut ClusterWorld<'_>) -> Result<lifecycle::Judgement> {
        let cx = self.cx;
        let l = &*w.l;
        let api = workloads::deployments(&l.sess.client, l.ns());
        let cache = l.sess.watched.as_deref();
        let ns = l.ns().to_string();
        // A runner's watch has the Deployments; other commands read them, at once: every
        // round trip before the evaluation makes it later than due.
        let read = |name: String| {
            let (api, ns) = (api.clone(), ns.clone());
            async move {
                match cache.map(|c| c.deployment(&ns, &name)) {
                    Some(Some(d)) => Ok(Some(d)),
                    // Not in the cache: confirmed by a read before anything concludes that
                    // it is gone.
                    _ => api.get_opt(&name).await,
                }
            }
        };
        let (stable, canary) = tokio::join!(
            read(l.target.stable_deployment.clone()),
            read(l.target.canary_deployment.clone()),
        );
        let versions = Versions {
            stable: stable?,
            canary: canary?,
        };
        if versions.stable.is_none() {
            // Outside the policy: nothing to promote into or roll back to.
            return Ok(lifecycle::Judgement::Fail(format!(
                "stable Deployment {} no longer exists",
                l.target.stable_deployment
            )));
        }
        let policy = cx.policies.get(cx.engine, cx.limits, l.record())?;
        let params = controller::parse_params(&l.record().params).map_err(Error::Usage)?;
        let evaluator = Evaluator {
            engine: cx.engine,
            policy: &policy,
            limits: cx.limits,
            service: &l.target.service,
            params: &params,
        };
        let samples = policy.reads_latency_samples();
        let (mut facts, mut warning) =
            gather(l, &policy.schedule, cx.metrics, &versions, samples).await?;
        let mut evaluated = evaluator.evaluate(l.rollout(), &facts, clock::now());
        if evaluated.wanted_latency_samples {
            // Once per compiled policy: it read the samples through a hook or a function
            // pointer. That outcome saw none; this one sees them.
            (facts, warning) = gather(l, &policy.schedule, cx.metrics, &versions, true).await?;
            evaluated = evaluator.evaluate(l.rollout(), &facts, clock::now());
        }
        Ok(lifecycle::Judgement::Evaluated {
            evaluated: Box::new(evaluated),
            warnings: warning.into_iter().collect(),
        })
    }
}

/// Evaluates the rollout once and applies the decision: [`lifecycle::tick`] over the cluster.
pub async fn step<M: MetricsSource + Sync>(
    l: &mut Loaded,
    cx: &StepContext<'_, M>,
) -> Result<StepReport> {
    let opts = lifecycle::TickOptions {
        dry_run: cx.dry_run,
        leave_recent_finish: cx
            .leave_recent_finish
            .then(|| super::world::settings_of(l.record()).scale_down_delay + FINISH_GRACE),
    };
    let mut world = ClusterWorld::new(l, cx.show_progress);
    // Boxed: the lifecycle's future is large, and this one is polled inside a runner's
    // (stack depth).
    let ticked = Box::pin(lifecycle::tick(&mut world, &mut ClusterJudge { cx }, opts)).await;
    let ticked = ticked?;
    let r = l.rollout();
    let (requested, event, evaluation) = match ticked.decided {
        Some((step, evaluation)) => (step.requested, step.event, Some(evaluation)),
        None => (None, None, None),
    };
    Ok(StepReport {
        service: l.target.service.clone(),
        namespace: l.ns().to_string(),
        phase: r.phase.to_string(),
        step: r.step,
        weight: r.weight,
        route_weight: ticked.route_weight,
        evaluation,
        requested,
        event,
        transitions: ticked.transitions,
        dry_run: cx.dry_run,
        warnings: ticked.warnings,
        note: ticked.note,
    })
}

/// A human's promote/rollback/abort/pause/resume.
pub async fn manual(
    l: &mut Loaded,
    event: Event,
    actor: &str,
    reason: String,
    show: bool,
) -> Result<Vec<Transition>> {
    let name = format!("{}/{}", l.ns(), l.target.service);
    lifecycle::command(
        &mut ClusterWorld::new(l, show),
        event,
        Cause::new(actor, reason),
        &name,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::Rollout;

    #[test]
    fn overrides() {
        let mut s = Schedule::default();
        apply_overrides(
            &mut s,
            &[
                "min_step_time=5s".into(),
                "interval=2s".into(),
                "min_requests=50".into(),
                "steps=10/50/100".into(),
                "max_duration=none".into(),
            ],
        )
        .unwrap();
        assert_eq!(s.min_step_time, Duration::from_secs(5));
        assert_eq!(s.interval, Duration::from_secs(2));
        assert_eq!(s.min_requests, 50);
        assert_eq!(s.steps, vec![10, 50, 100]);
        assert!(apply_overrides(&mut s, &["bogus=1".into()]).is_err());
        assert!(apply_overrides(&mut s, &["steps=10/5/100".into()]).is_err());
        // The same rules as the policy's schedule() map (one parser): limits, names, none.
        let mut s = Schedule::default();
        let err = apply_overrides(&mut s, &["interval=1e20".into()]).unwrap_err();
        assert!(
            err.to_string()
                .contains("--schedule-override interval=1e20"),
            "{err}"
        );
        let err = apply_overrides(&mut s, &["scale_down_delay=90d".into()]).unwrap_err();
        assert!(err.to_string().contains("longer than the limit"), "{err}");
        apply_overrides(
            &mut s,
            &["readiness_grace=7".into(), "max_canary_replicas=3".into()],
        )
        .unwrap();
        assert_eq!(s.readiness_grace, Duration::from_secs(7));
        assert_eq!(s.max_canary_replicas, Some(3));
        apply_overrides(&mut s, &["max_canary_replicas=none".into()]).unwrap();
        assert_eq!(s.max_canary_replicas, None);
        let err = apply_overrides(&mut s, &["queries=x".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
    }

    #[test]
    fn a_policy_is_compiled_once_per_sha_and_overrides() {
        let engine = PolicyEngine::new(vec![], &Limits::default());
        let source = include_str!("../../policies/default.rhai");
        let sha = engine
            .compile("default.rhai", source, &Limits::default())
            .unwrap()
            .sha256;
        let rec = |overrides: &[&str]| -> RolloutRecord {
            serde_json::from_value(serde_json::json!({
                "namespace": "shop", "service": "web", "images": {}, "provider": "istio",
                "route": "web", "canary_replicas": 1, "started_by": "e2e",
                "policy": {"name": "default", "path": "default.rhai", "sha256": sha, "source": source},
                "schedule_overrides": overrides,
                "rollout": Rollout::new(clock::now()),
            }))
            .unwrap()
        };
        let cache = PolicyCache::default();
        let limits = Limits::default();
        let a = cache.get(&engine, &limits, &rec(&[])).unwrap();
        let b = cache.get(&engine, &limits, &rec(&[])).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "one AST for the rollouts that share a policy"
        );
        let c = cache.get(&engine, &limits, &rec(&["interval=5s"])).unwrap();
        assert_eq!(c.schedule.interval, Duration::from_secs(5));
        assert!(!Arc::ptr_eq(&a, &c));
        let mut edited = rec(&[]);
        edited.policy.sha256 = "0".repeat(64);
        assert!(
            cache.get(&engine, &limits, &edited).is_err(),
            "a hand-edited state"
        );
    }
}
