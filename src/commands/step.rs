//! `kubectl canary step`: evaluate the policy once now and apply its decision. It refuses
//! while a `run` holds the rollout's lease (unless `--force`), and rolls back a rollout left
//! unattended longer than the schedule's `max_unattended`.

use crate::cli::{GlobalArgs, StepArgs};
use crate::cluster;
use crate::cluster::clock;
use crate::cluster::driver::{self, StepContext, StepReport};
use crate::cluster::lease::RolloutLease;
use crate::cluster::metrics::Metrics;
use crate::cluster::{notify, runner};
use crate::core::rollout::Transition;
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::Limits;

pub fn transition_line(t: &Transition) -> String {
    format!(
        "{}  {} → {}  step {} {}%  by {}: {}",
        t.at.format("%H:%M:%S"),
        t.from,
        t.to,
        t.step + 1,
        t.weight,
        t.actor,
        t.reason
    )
}

pub fn print_report(r: &StepReport) {
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(e) = &r.evaluation {
        println!(
            "{}/{}: {} step {} at {}% (route {}) — {}: {}",
            r.namespace,
            r.service,
            r.phase,
            r.step + 1,
            r.weight,
            r.route_weight
                .map(|w| format!("{w}%"))
                .unwrap_or_else(|| "n/a".into()),
            e.decision.action(),
            e.decision.reason()
        );
        if !e.observations.is_empty() {
            println!("  observations: {}", output::observations(&e.observations));
        }
        if let Some(req) = &r.requested {
            println!("  policy asked: {}: {}", req.action(), req.reason());
        }
    } else {
        println!("{}/{}: {} — {}", r.namespace, r.service, r.phase, r.note);
    }
    for t in &r.transitions {
        println!("  {}", transition_line(t));
    }
    if r.dry_run {
        println!("dry run: {}", r.note);
    }
}

pub async fn run(g: &GlobalArgs, args: &StepArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let metrics = Metrics::new(args.prometheus.config())?;
    let engine = super::engine(g);
    let limits = Limits::default();
    let policies = driver::PolicyCache::default();
    let mut l = driver::load(&sess, &args.service.service).await?;
    let lease = RolloutLease::new(&sess.client, l.ns(), &args.service.service, &sess.actor);
    let before = lease.facts().await?;
    let now = clock::now();
    if !args.force
        && !args.dry_run
        && let Some(holder) = before.live_holder(now)
    {
        return Err(Error::Leased {
            namespace: l.ns().to_string(),
            service: args.service.service.clone(),
            holder: holder.to_string(),
            renewed_secs_ago: before
                .renewed_at
                .map(|t| (now - t).num_seconds())
                .unwrap_or_default(),
            expires_in_secs: before
                .expires_at()
                .map(|t| (t - now).num_seconds())
                .unwrap_or_default(),
        });
    }
    if !args.dry_run {
        let max = policies
            .get(&engine, &limits, l.record())?
            .schedule
            .max_unattended;
        let done = runner::roll_back_if_overdue(&mut l, &before, max, &sess.actor, true).await?;
        notify::send_and_warn(&sess.client, l.record(), &done).await;
        if !done.is_empty() {
            if !output::structured(g.output, &done)? {
                for t in &done {
                    println!("{}", transition_line(t));
                }
            }
            return Ok(driver::phase_exit(l.rollout().phase));
        }
    }
    let cx = StepContext {
        engine: &engine,
        policies: &policies,
        limits: &limits,
        metrics: &metrics,
        dry_run: args.dry_run,
        show_progress: true,
        leave_recent_finish: false,
    };
    let report = driver::step(&mut l, &cx).await?;
    notify::send_and_warn(&sess.client, l.record(), &report.transitions).await;
    if !output::structured(g.output, &report)? {
        print_report(&report);
    }
    Ok(driver::phase_exit(l.rollout().phase))
}
