//! `kubectl canary status` (`get`): one rollout in detail, or all rollouts of a namespace
//! (`-A`: all namespaces) as a table; `-o json|yaml`; `--watch` redraws until it ends.

use crate::cli::{GlobalArgs, OutputFormat, StatusArgs};
use crate::cluster::clock;
use crate::cluster::lease::{self, RolloutLease};
use crate::cluster::metrics::Metrics;
use crate::cluster::state::{self, RolloutRecord, Store};
use crate::cluster::{self, Session, driver, workloads};
use crate::commands::report;
use crate::core::attendance::{self, Attendance, LeaseFacts};
use crate::core::decision::Observations;
use crate::core::facts::PodFacts;
use crate::core::schedule::Schedule;
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::report::{RollbackTimings, prometheus, timings};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

#[derive(Debug, Serialize, PartialEq)]
pub struct StatusView {
    pub namespace: String,
    pub service: String,
    pub phase: String,
    /// 1-based.
    pub step: usize,
    pub steps: Vec<u32>,
    pub desired_weight: u32,
    /// Read back from the route object (None: no canary route, or a list without --detail).
    pub route_weight: Option<u32>,
    pub provider: String,
    pub route: String,
    /// The stable and canary Deployments.
    pub stable: String,
    pub canary: String,
    pub images: BTreeMap<String, String>,
    /// Read from the cluster (None in a list without --detail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_pods: Option<PodFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canary_pods: Option<PodFacts>,
    pub started_at: DateTime<Utc>,
    pub started_by: String,
    pub time_in_step_secs: u64,
    pub last_decision: Option<String>,
    pub last_reason: Option<String>,
    pub observations: Observations,
    pub queries: BTreeMap<String, Option<f64>>,
    pub policy: String,
    pub policy_sha256: String,
    pub params: Vec<String>,
    pub schedule_overrides: Vec<String>,
    /// Time to detection and recovery of a rolled-back rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackTimings>,
    pub runner: RunnerView,
}

/// Who drives the rollout (its lease) and whether anybody is watching it.
#[derive(Debug, Serialize, PartialEq)]
pub struct RunnerView {
    /// The `run` holding the lease, if its claim has not lapsed.
    pub holder: Option<String>,
    /// When a runner last renewed the lease (or released it).
    pub renewed_at: Option<DateTime<Utc>>,
    /// "held", "recent" (no runner, but evaluated lately), "unattended" or "idle".
    pub attendance: &'static str,
    /// Unattended: seconds since anybody last acted on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unattended_secs: Option<u64>,
}

fn runner_view(rec: &RolloutRecord, lease: &LeaseFacts, interval: Option<Duration>) -> RunnerView {
    let now = clock::now();
    // Without a lease, three intervals without an evaluation is what a lapsed lease means.
    let grace = lease
        .duration
        .or(interval.map(lease::duration_for))
        .unwrap_or_else(|| {
            lease::duration_for(crate::core::schedule::Schedule::default().interval)
        });
    let a = attendance::attendance(&rec.rollout, lease, grace, now);
    RunnerView {
        holder: lease.live_holder(now).map(str::to_string),
        renewed_at: lease.renewed_at,
        attendance: match a {
            Attendance::Held { .. } => "held",
            Attendance::Recent => "recent",
            Attendance::Unattended { .. } => "unattended",
            Attendance::Idle => "idle",
        },
        unattended_secs: match a {
            Attendance::Unattended { last_seen } => {
                Some((now - last_seen).num_seconds().max(0) as u64)
            }
            _ => None,
        },
    }
}

fn runner_words(v: &RunnerView) -> String {
    let ago = |t: Option<DateTime<Utc>>| {
        t.map(|t| {
            format!(
                "{} ago",
                output::secs((clock::now() - t).num_seconds().max(0) as u64)
            )
        })
        .unwrap_or_else(|| "never".into())
    };
    match (v.attendance, &v.holder) {
        (_, Some(h)) => format!("{h} (lease renewed {})", ago(v.renewed_at)),
        ("unattended", _) => format!(
            "none — UNATTENDED for {} with canary traffic (last runner seen {}); `kubectl canary run` takes it over",
            output::secs(v.unattended_secs.unwrap_or(0)),
            ago(v.renewed_at)
        ),
        _ => format!("none (last seen {})", ago(v.renewed_at)),
    }
}

async fn pods(sess: &Session, ns: &str, name: &str) -> Result<PodFacts> {
    match workloads::deployments(&sess.client, ns)
        .get_opt(name)
        .await?
    {
        None => Ok(PodFacts::default()),
        Some(d) => workloads::deployment_pod_facts(&sess.client, ns, &d).await,
    }
}

/// What only the cluster's objects can tell (a few requests per rollout).
pub struct Live {
    pub route_weight: Option<u32>,
    pub stable_pods: PodFacts,
    pub canary_pods: PodFacts,
}

pub async fn live(sess: &Session, rec: &RolloutRecord) -> Result<Live> {
    let target = rec.target();
    let route_weight = match sess.routers.by_name(&sess.client, &rec.provider).await {
        Ok(r) => r.read_weight(&sess.client, &target).await.ok().flatten(),
        Err(_) => None,
    };
    let (stable_pods, canary_pods) = futures::try_join!(
        pods(sess, &rec.namespace, &target.stable_deployment),
        pods(sess, &rec.namespace, &target.canary_deployment)
    )?;
    Ok(Live {
        route_weight,
        stable_pods,
        canary_pods,
    })
}

/// Schedules compiled once per policy and overrides (a list shares a few policies), with
/// the cache the runners use.
#[derive(Default)]
pub struct Schedules {
    engine: Option<crate::policy::PolicyEngine>,
    policies: driver::PolicyCache,
}

impl Schedules {
    fn of(&mut self, rec: &RolloutRecord) -> Option<Schedule> {
        let engine = self
            .engine
            .get_or_insert_with(|| crate::policy::PolicyEngine::new(vec![], &Default::default()));
        // A policy that no longer compiles shows no schedule; status itself still works.
        self.policies
            .get(engine, &Default::default(), rec)
            .ok()
            .map(|p| p.schedule.clone())
    }
}

/// One rollout in detail: its state, lease and live objects.
pub async fn view(sess: &Session, rec: &RolloutRecord, lease: &LeaseFacts) -> Result<StatusView> {
    let live = live(sess, rec).await?;
    Ok(view_of(rec, lease, Some(live), &mut Schedules::default()))
}

/// The view from the stored state and lease; `live` None: the objects were not read.
pub fn view_of(
    rec: &RolloutRecord,
    lease: &LeaseFacts,
    live: Option<Live>,
    schedules: &mut Schedules,
) -> StatusView {
    let (route_weight, stable_pods, canary_pods) = match live {
        Some(l) => (l.route_weight, Some(l.stable_pods), Some(l.canary_pods)),
        None => (None, None, None),
    };
    let r = &rec.rollout;
    let schedule = schedules.of(rec);
    let runner = runner_view(rec, lease, schedule.as_ref().map(|s| s.interval));
    let steps = schedule.map(|s| s.steps).unwrap_or_default();
    let last = r.last_evaluation();
    let (last_decision, last_reason) = match (last, r.history.last()) {
        (Some(e), Some(t)) if t.at > e.at => (Some(t.event.to_string()), Some(t.reason.clone())),
        (Some(e), _) => (
            Some(e.decision.action().to_string()),
            Some(e.decision.reason().to_string()),
        ),
        (None, Some(t)) => (Some(t.event.to_string()), Some(t.reason.clone())),
        (None, None) => (None, None),
    };
    let deployments = rec.target();
    StatusView {
        namespace: rec.namespace.clone(),
        service: rec.service.clone(),
        phase: r.phase.to_string(),
        step: r.step + 1,
        steps,
        desired_weight: r.weight,
        route_weight,
        provider: rec.provider.clone(),
        route: rec.route.clone(),
        stable: deployments.stable_deployment,
        canary: deployments.canary_deployment,
        images: rec.images.clone(),
        stable_pods,
        canary_pods,
        started_at: r.started_at,
        started_by: rec.started_by.clone(),
        time_in_step_secs: r.time_in_step(clock::now()).as_secs(),
        last_decision,
        last_reason,
        observations: last.map(|e| e.observations.clone()).unwrap_or_default(),
        queries: last.map(|e| e.queries.clone()).unwrap_or_default(),
        policy: rec.policy.path.clone(),
        policy_sha256: rec.policy.sha256.clone(),
        params: rec.params.clone(),
        schedule_overrides: rec.schedule_overrides.clone(),
        rollback: timings::rollback_timings(r),
        runner,
    }
}

/// Adds when Prometheus saw the canary's traffic reach 0 to a rolled-back rollout's timings
/// (best effort: status never fails because Prometheus does).
async fn with_recovery(
    g: &GlobalArgs,
    sess: &Session,
    rec: &RolloutRecord,
    v: &mut StatusView,
    metrics: &Metrics,
) {
    let (Some(rb), Metrics::Prometheus(client)) = (v.rollback.take(), metrics) else {
        return;
    };
    let schedule = report::stored_schedule(g, rec);
    let recovered = match report::workloads(sess, rec, schedule.as_ref()).await {
        Ok(who) => prometheus::with_recovery(client, &who, rb.clone(), clock::now())
            .await
            .ok()
            .map(|(rb, _)| rb),
        Err(_) => None,
    };
    v.rollback = Some(recovered.unwrap_or(rb));
}

fn print_view(v: &StatusView) {
    let pods = |p: &Option<PodFacts>| {
        let Some(p) = p else {
            return "-".to_string();
        };
        let mut s = format!("{}/{} ready", p.ready, p.desired);
        if p.restarts > 0 {
            s.push_str(&format!(", {} restarts", p.restarts));
        }
        if p.crash_looping {
            s.push_str(", CRASH-LOOPING");
        }
        s
    };
    println!("Name:        {}/{}", v.namespace, v.service);
    println!("Phase:       {}", v.phase);
    println!("Runner:      {}", runner_words(&v.runner));
    println!(
        "Step:        {}/{} {:?}  ({} in step)",
        v.step,
        v.steps.len(),
        v.steps,
        output::secs(v.time_in_step_secs)
    );
    println!(
        "Weight:      {}% desired, {} in {} {}",
        v.desired_weight,
        v.route_weight
            .map(|w| format!("{w}%"))
            .unwrap_or_else(|| "none".into()),
        v.provider,
        v.route
    );
    println!("Images:      {:?}", v.images);
    println!("Stable:      {}", pods(&v.stable_pods));
    println!("Canary:      {}", pods(&v.canary_pods));
    println!(
        "Last:        {}: {}",
        v.last_decision.as_deref().unwrap_or("-"),
        v.last_reason.as_deref().unwrap_or("-")
    );
    println!("Observed:    {}", output::observations(&v.observations));
    println!(
        "Policy:      {} (sha256 {}){}{}",
        v.policy,
        &v.policy_sha256[..12.min(v.policy_sha256.len())],
        if v.params.is_empty() {
            String::new()
        } else {
            format!(" --set {}", v.params.join(","))
        },
        if v.schedule_overrides.is_empty() {
            String::new()
        } else {
            format!(" overrides {}", v.schedule_overrides.join(","))
        }
    );
    println!(
        "Started:     {} by {}",
        v.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        v.started_by
    );
    if let Some(rb) = &v.rollback {
        println!("Rollback:    {}", rb.summary());
    }
}

/// The list; the route and canary columns only with --detail (they cost requests per row).
fn list_table(rows: &[StatusView], detail: bool) -> comfy_table::Table {
    let mut header = vec!["namespace", "service", "phase", "step", "weight"];
    if detail {
        header.extend(["route", "canary"]);
    }
    header.extend(["provider", "age", "last"]);
    let mut t = output::table(&header);
    for v in rows {
        let mut row = vec![
            v.namespace.clone(),
            v.service.clone(),
            if v.runner.attendance == "unattended" {
                format!("{} (unattended)", v.phase)
            } else {
                v.phase.clone()
            },
            format!("{}/{}", v.step, v.steps.len()),
            format!("{}%", v.desired_weight),
        ];
        if detail {
            row.push(
                v.route_weight
                    .map(|w| format!("{w}%"))
                    .unwrap_or_else(|| "-".into()),
            );
            row.push(
                v.canary_pods
                    .as_ref()
                    .map(|p| format!("{}/{}", p.ready, p.desired))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        row.extend([
            v.provider.clone(),
            output::secs((clock::now() - v.started_at).num_seconds().max(0) as u64),
            v.last_reason.clone().unwrap_or_default(),
        ]);
        t.add_row(row);
    }
    t
}

pub async fn run(g: &GlobalArgs, args: &StatusArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let metrics = Metrics::new(args.prometheus.config())?;
    let tty = std::io::stdout().is_terminal() && g.output == OutputFormat::Table;
    let mut previous: Option<String> = None;
    loop {
        let (text, exit, done) = match &args.service {
            Some(svc) => {
                let doc = Store::new(&sess.client, &sess.namespace, svc)
                    .load()
                    .await?
                    .doc;
                let rec = doc
                    .current
                    .or_else(|| doc.previous.last().cloned())
                    .ok_or_else(|| {
                        Error::Cluster(format!("no rollout of {}/{svc}", sess.namespace))
                    })?;
                let lease = RolloutLease::new(&sess.client, &sess.namespace, svc, "")
                    .facts()
                    .await?;
                let mut v = view(&sess, &rec, &lease).await?;
                with_recovery(g, &sess, &rec, &mut v, &metrics).await;
                let exit = driver::phase_exit(rec.rollout.phase);
                (
                    serde_json::to_string(&v).unwrap_or_default(),
                    exit,
                    rec.rollout.phase.is_terminal(),
                )
                    .then_print(
                        || {
                            if !output::structured(g.output, &v)? {
                                print_view(&v);
                            }
                            Ok(())
                        },
                        &previous,
                        tty,
                    )?
            }
            None => {
                let ns = if g.all_namespaces {
                    None
                } else {
                    Some(sess.namespace.as_str())
                };
                let (docs, leases) = futures::try_join!(
                    state::list(&sess.client, ns),
                    lease::list(&sess.client, ns)
                )?;
                let recs: Vec<RolloutRecord> = docs
                    .into_iter()
                    .filter_map(|d| d.current.or_else(|| d.previous.last().cloned()))
                    .collect();
                // Without --detail: the two list calls above and nothing per rollout.
                let mut lives: Vec<Option<Live>> = if args.detail {
                    futures::stream::iter(recs.iter().map(|rec| live(&sess, rec)))
                        .buffered(16)
                        .collect::<Vec<_>>()
                        .await
                        .into_iter()
                        .map(|l| l.map(Some))
                        .collect::<Result<_>>()?
                } else {
                    Vec::new()
                };
                lives.resize_with(recs.len(), || None);
                let mut schedules = Schedules::default();
                let mut rows: Vec<StatusView> = recs
                    .iter()
                    .zip(lives)
                    .map(|(rec, live)| {
                        let key = (rec.namespace.clone(), rec.service.clone());
                        let lease = leases.get(&key).cloned().unwrap_or_default();
                        view_of(rec, &lease, live, &mut schedules)
                    })
                    .collect();
                rows.sort_by(|a, b| (&a.namespace, &a.service).cmp(&(&b.namespace, &b.service)));
                (
                    serde_json::to_string(&rows).unwrap_or_default(),
                    Exit::Ok,
                    false,
                )
                    .then_print(
                        || {
                            if !output::structured(g.output, &rows)? {
                                if rows.is_empty() {
                                    println!("no rollouts");
                                } else {
                                    println!("{}", list_table(&rows, args.detail));
                                }
                            }
                            Ok(())
                        },
                        &previous,
                        tty,
                    )?
            }
        };
        if !args.watch || done {
            return Ok(exit);
        }
        previous = Some(text);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Prints only when the view changed since the last round (watch mode); clears a terminal.
trait ThenPrint {
    fn then_print(
        self,
        print: impl FnOnce() -> Result<()>,
        previous: &Option<String>,
        tty: bool,
    ) -> Result<(String, Exit, bool)>;
}

impl ThenPrint for (String, Exit, bool) {
    fn then_print(
        self,
        print: impl FnOnce() -> Result<()>,
        previous: &Option<String>,
        tty: bool,
    ) -> Result<(String, Exit, bool)> {
        if previous.as_deref() != Some(self.0.as_str()) {
            if tty && previous.is_some() {
                print!("\x1b[2J\x1b[H");
            }
            print()?;
        }
        Ok(self)
    }
}
