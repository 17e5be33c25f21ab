//! `kubectl canary run`: `step` at the policy's interval until the rollout ends, holding the
//! rollout's lease (see `cluster::lease`); a second `run` waits and takes over when the
//! holder dies. `run --all` drives every active rollout of the namespace (`-A`: all
//! namespaces), one task per rollout, and picks up rollouts as they start.
//!
//! Output: a terminal gets a live view on stderr; otherwise (a log file, a CI job, a pod) one
//! line per change of decision, transition or lease event on stdout (stderr with `-o json`,
//! which keeps stdout for the final record). Ctrl-C or SIGTERM stops between steps, gives the
//! leases back, and the rollout stays consistent for the next `run` or `step`.

use crate::cli::{GlobalArgs, OutputFormat, RunArgs};
use crate::cluster::clock;
use crate::cluster::driver::{self, StepContext, StepReport};
use crate::cluster::metrics::Metrics;
use crate::cluster::runner::{self, Ended, Key, Shared, Update};
use crate::cluster::state::ListedPhase;
use crate::cluster::{self, Session, lease, state};
use crate::core::rollout::{Phase, Rollout};
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::Limits;
use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

fn live_line(r: &Rollout, steps: &[u32], rep: &StepReport) -> String {
    let now = clock::now();
    let mut s = format!(
        "{} · step {}/{} · {}% (route {}) · {} in step",
        r.phase,
        r.step + 1,
        steps.len(),
        r.weight,
        rep.route_weight
            .map(|w| format!("{w}%"))
            .unwrap_or_else(|| "n/a".into()),
        output::secs(r.time_in_step(now).as_secs())
    );
    if let Some(e) = r.last_evaluation() {
        s.push_str(&format!(
            " · {}: {}",
            e.decision.action(),
            e.decision.reason()
        ));
        if !e.observations.is_empty() {
            s.push_str(&format!(" · {}", output::observations(&e.observations)));
        }
    }
    s
}

pub fn summary(r: &Rollout) -> comfy_table::Table {
    let mut t = output::table(&[
        "time",
        "transition",
        "step",
        "weight",
        "by",
        "reason",
        "observations",
    ]);
    for h in &r.history {
        t.add_row(vec![
            h.at.format("%H:%M:%S").to_string(),
            format!("{} → {}", h.from, h.to),
            (h.step + 1).to_string(),
            format!("{}%", h.weight),
            h.actor.clone(),
            h.reason.clone(),
            output::observations(&h.observations),
        ]);
    }
    t
}

/// What makes a new log line: the decision, not its changing numbers ("waiting: 3s of 5m").
#[derive(Debug, Clone, PartialEq)]
struct DecisionKey {
    phase: Phase,
    step: usize,
    weight: u32,
    route_weight: Option<u32>,
    action: Option<&'static str>,
    requested: Option<&'static str>,
    note: String,
    warnings: Vec<String>,
}

impl DecisionKey {
    fn of(rep: &StepReport, r: &Rollout) -> Self {
        DecisionKey {
            phase: r.phase,
            step: r.step,
            weight: r.weight,
            route_weight: rep.route_weight,
            action: rep.evaluation.as_ref().map(|e| e.decision.action()),
            requested: rep.requested.as_ref().map(|d| d.action()),
            note: if rep.evaluation.is_some() {
                String::new()
            } else {
                rep.note.clone()
            },
            warnings: rep.warnings.clone(),
        }
    }
}

/// Renders updates: a spinner with the live view on a terminal, or log lines.
struct Printer {
    bar: Option<indicatif::ProgressBar>,
    /// Log lines go to stderr (stdout carries `-o json|yaml`).
    to_stderr: bool,
    /// Prefix lines with namespace/service (several rollouts).
    prefixed: bool,
    last: HashMap<Key, DecisionKey>,
}

impl Printer {
    fn new(live: bool, to_stderr: bool, prefixed: bool) -> Self {
        let bar = live.then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Printer {
            bar,
            to_stderr,
            prefixed,
            last: HashMap::new(),
        }
    }

    fn line(&self, key: &Key, text: &str) {
        let text = if self.prefixed || self.bar.is_none() {
            format!("{} {key} {text}", clock::now().format("%Y-%m-%dT%H:%M:%SZ"))
        } else {
            text.to_string()
        };
        match &self.bar {
            Some(bar) => bar.println(text),
            None if self.to_stderr => eprintln!("{text}"),
            None => println!("{text}"),
        }
    }

    fn update(&mut self, key: &Key, u: Update) {
        match u {
            Update::Waiting { holder, expires_at } => {
                let left = expires_at
                    .map(|t| (t - clock::now()).num_seconds().max(0))
                    .map(|s| format!(", its lease lapses in {s}s unless renewed"))
                    .unwrap_or_default();
                self.line(
                    key,
                    &format!("waiting: driven by {holder}{left}; taking over when it stops"),
                );
            }
            Update::Acquired { from } => match from {
                Some(h) => self.line(key, &format!("took over from {h} (its lease lapsed)")),
                None => self.line(key, "holding the lease"),
            },
            Update::Lost { holder } => self.line(
                key,
                &format!(
                    "lease taken over by {}; waiting",
                    holder.as_deref().unwrap_or("another runner")
                ),
            ),
            Update::Shed => self.line(
                key,
                "handing over: this runner drives more than its share of the rollouts",
            ),
            Update::Failed(e) => self.line(key, &format!("error: {e}")),
            Update::Warning(w) => self.line(key, &format!("warning: {w}")),
            Update::Transitions(ts) => {
                for t in &ts {
                    self.line(key, &super::step::transition_line(t));
                }
            }
            Update::Stepped {
                report,
                rollout,
                steps,
            } => {
                for t in &report.transitions {
                    self.line(key, &super::step::transition_line(t));
                }
                let dk = DecisionKey::of(&report, &rollout);
                let changed = self.last.get(key) != Some(&dk);
                if changed {
                    for w in &report.warnings {
                        self.line(key, &format!("warning: {w}"));
                    }
                }
                match &self.bar {
                    Some(bar) if !self.prefixed => {
                        bar.set_message(live_line(&rollout, &steps, &report))
                    }
                    _ if changed => self.line(key, &log_line(&rollout, &steps, &report)),
                    _ => {}
                }
                self.last.insert(key.clone(), dk);
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn log_line(r: &Rollout, steps: &[u32], rep: &StepReport) -> String {
    let mut s = format!(
        "{} step {}/{} {}% (route {})",
        r.phase,
        r.step + 1,
        steps.len(),
        r.weight,
        rep.route_weight
            .map(|w| format!("{w}%"))
            .unwrap_or_else(|| "n/a".into()),
    );
    match &rep.evaluation {
        Some(e) => {
            s.push_str(&format!(
                " {}: {}",
                e.decision.action(),
                e.decision.reason()
            ));
            if !e.observations.is_empty() {
                s.push_str(&format!(" · {}", output::observations(&e.observations)));
            }
        }
        None => s.push_str(&format!(" — {}", rep.note)),
    }
    s
}

/// Stop on Ctrl-C or SIGTERM (a pod being deleted), and after `--max-time`.
fn stop_signal(max_time: Option<Duration>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let term = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                match signal(SignalKind::terminate()) {
                    Ok(mut s) => {
                        s.recv().await;
                    }
                    Err(_) => std::future::pending::<()>().await,
                }
            }
            #[cfg(not(unix))]
            std::future::pending::<()>().await
        };
        let timeout = async {
            match max_time {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term => {}
            _ = timeout => {}
        }
        let _ = tx.send(true);
        // Keep the sender alive so receivers never see it closed.
        std::future::pending::<()>().await;
    });
    rx
}

fn shared(g: &GlobalArgs, args: &RunArgs, sess: &Session) -> Result<Arc<Shared>> {
    Ok(Arc::new(Shared {
        engine: super::engine(g),
        policies: Default::default(),
        limits: Limits::default(),
        metrics: Metrics::new(args.prometheus.config())?,
        identity: lease::identity(&sess.actor),
        actor: sess.actor.clone(),
        take_over: args.take_over,
        many: args.all,
        held: Default::default(),
        peers: Default::default(),
        active: Default::default(),
    }))
}

/// `run --dry-run`: one evaluation, nothing written, no lease.
async fn dry_run(g: &GlobalArgs, args: &RunArgs, sess: &Session, service: &str) -> Result<Exit> {
    let metrics = Metrics::new(args.prometheus.config())?;
    let engine = super::engine(g);
    let limits = Limits::default();
    let mut l = driver::load(sess, service).await?;
    let policies = driver::PolicyCache::default();
    let cx = StepContext {
        engine: &engine,
        policies: &policies,
        limits: &limits,
        metrics: &metrics,
        dry_run: true,
        show_progress: false,
        leave_recent_finish: false,
    };
    let report = driver::step(&mut l, &cx).await?;
    if !output::structured(g.output, &report)? {
        super::step::print_report(&report);
    }
    Ok(driver::phase_exit(l.rollout().phase))
}

pub async fn run(g: &GlobalArgs, args: &RunArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    // A runner lives for hours: follow its host clock if it drifts from the API server.
    tokio::spawn(cluster::clock::keep_synced(sess.client.clone()));
    if args.all {
        return run_all(g, args, sess).await;
    }
    let service = args
        .service
        .clone()
        .ok_or_else(|| Error::Usage("run: name a SERVICE, or pass --all".into()))?;
    if args.dry_run {
        return dry_run(g, args, &sess, &service).await;
    }
    let shared = shared(g, args, &sess)?;
    let stop = stop_signal(args.max_time.map(Into::into));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let live = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let mut printer = Printer::new(live, g.output != OutputFormat::Table, false);
    let task = tokio::spawn(runner::drive(
        sess.clone(),
        service.clone(),
        shared,
        tx,
        stop.clone(),
    ));
    while let Some((key, u)) = rx.recv().await {
        printer.update(&key, u);
    }
    printer.finish();
    let ended = task
        .await
        .map_err(|e| Error::Other(format!("internal: run task: {e}")))??;
    let l = driver::load(&sess, &service).await?;
    let r = l.rollout();
    if let Ended::Stopped(_) = ended {
        eprintln!(
            "stopped: the rollout stays {} at {}% — `kubectl canary run {service}` continues it",
            r.phase, r.weight
        );
    }
    if !output::structured(g.output, l.record())? {
        println!("{}", summary(r));
        println!(
            "{}/{}: {} after {} ({})",
            l.ns(),
            service,
            r.phase,
            output::secs(r.elapsed(clock::now()).as_secs()),
            super::rollback::weight_words(r)
        );
    }
    Ok(driver::phase_exit(r.phase))
}

/// `run --all`: a task per active rollout in scope, discovered from the watch of the state
/// ConfigMaps (or one list call per round without it).
async fn run_all(g: &GlobalArgs, args: &RunArgs, mut sess: Session) -> Result<Exit> {
    let shared = shared(g, args, &sess)?;
    let scope = (!g.all_namespaces).then(|| sess.namespace.clone());
    // Watches of the workloads and rollout states in scope instead of reads per evaluation.
    match cluster::watch_cache::WatchCache::start(&sess.client, scope.as_deref()).await {
        Ok(cache) => sess.watched = Some(Arc::new(cache)),
        Err(e) => eprintln!("warning: {e}"),
    }
    let mut stop = stop_signal(args.max_time.map(Into::into));
    let (tx, mut rx) = mpsc::unbounded_channel::<(Key, Update)>();
    let to_stderr = g.output != OutputFormat::Table;
    let printer = tokio::spawn(async move {
        let mut p = Printer::new(false, to_stderr, true);
        while let Some((key, u)) = rx.recv().await {
            p.update(&key, u);
        }
    });
    let say = |what: &str| {
        let line = format!(
            "{} runner {} {what}",
            clock::now().format("%Y-%m-%dT%H:%M:%SZ"),
            shared.identity
        );
        if to_stderr {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    say(&format!(
        "drives the active rollouts of {}",
        scope
            .as_deref()
            .map(|n| format!("namespace {n}"))
            .unwrap_or_else(|| "all namespaces".into())
    ));
    let mut tasks: BTreeMap<Key, tokio::task::JoinHandle<Result<Ended>>> = BTreeMap::new();
    let started = Instant::now();
    // Runners of one scope count each other through presence Leases in this namespace.
    let presence = lease::Presence::new(&sess.client, &sess.namespace, &shared.identity);
    let discover: Duration = args.discover_interval.into();
    let mut unlabelled = UnlabelledPhases::default();
    let mut last_trouble = None;
    loop {
        match presence.beat(lease::duration_for(discover)).await {
            Ok(n) => shared.peers.store(n, Ordering::Relaxed),
            Err(e) => say(&format!("cannot renew this runner's presence: {e}")),
        }
        let watched = sess.watched.as_deref();
        let trouble = watched.and_then(|c| c.trouble());
        if trouble.is_some() && trouble != last_trouble {
            say(trouble.as_deref().unwrap_or_default());
        }
        last_trouble = trouble;
        let listed = match watched.and_then(|c| c.listed_states()) {
            Some(listed) => Ok(listed),
            None => state::list_metadata(&sess.client, scope.as_deref()).await,
        };
        match listed {
            Ok(listed) => {
                let mut active = Vec::new();
                for l in listed {
                    let key = Key {
                        namespace: l.namespace.clone(),
                        service: l.service.clone(),
                    };
                    let phase = match l.phase {
                        ListedPhase::Current(p) => Some(p),
                        ListedPhase::Unlabelled => unlabelled.phase(&sess.client, &key, &l).await,
                    };
                    if phase.is_some_and(runner::is_active) {
                        active.push(key);
                    }
                }
                shared.active.store(active.len(), Ordering::Relaxed);
                for key in active {
                    if tasks.contains_key(&key) {
                        continue;
                    }
                    let mut s = sess.clone();
                    s.namespace = key.namespace.clone();
                    let task = runner::drive(
                        s,
                        key.service.clone(),
                        shared.clone(),
                        tx.clone(),
                        stop.clone(),
                    );
                    tasks.insert(key, tokio::spawn(task));
                }
            }
            Err(e) => say(&format!("cannot list rollouts: {e}")),
        }
        // Drop finished rollouts (a paused one is picked up again once resumed).
        let finished: Vec<Key> = tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for key in finished {
            if let Some(t) = tasks.remove(&key) {
                match t.await {
                    Ok(Ok(Ended::Done(p))) => say(&format!("done with {key}: {p}")),
                    Ok(Ok(Ended::Stopped(_))) => {}
                    Ok(Err(e)) => say(&format!("{key}: {e}")),
                    Err(e) => say(&format!("{key}: task failed: {e}")),
                }
            }
        }
        let stopping = tokio::select! {
            _ = tokio::time::sleep(discover) => false,
            r = stop.changed() => r.is_ok() && *stop.borrow(),
        };
        if stopping || *stop.borrow() {
            break;
        }
    }
    let n = tasks.len();
    for (_, t) in tasks {
        let _ = t.await;
    }
    presence.leave().await;
    drop(tx);
    let _ = printer.await;
    say(&format!(
        "stopped after {}; released {n} rollout task(s)",
        output::secs(started.elapsed().as_secs())
    ));
    Ok(Exit::Ok)
}

/// Phases of state documents written before the phase label, read once per resourceVersion
/// (they are rewritten, and so labelled, at their next save).
#[derive(Default)]
struct UnlabelledPhases(BTreeMap<Key, (Option<String>, Option<Phase>)>);

impl UnlabelledPhases {
    async fn phase(
        &mut self,
        client: &kube::Client,
        key: &Key,
        l: &state::Listed,
    ) -> Option<Phase> {
        if let Some((rv, phase)) = self.0.get(key)
            && *rv == l.resource_version
        {
            return *phase;
        }
        // Unreadable now: looked at again at the next round.
        let phase = state::phase_of(client, l).await.ok()?;
        self.0
            .insert(key.clone(), (l.resource_version.clone(), phase));
        phase
    }
}
