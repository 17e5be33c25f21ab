//! `kubectl canary run`: `step` at the policy's interval until the rollout ends, with a live
//! view on stderr and a summary table. Ctrl-C stops between steps: the rollout stays
//! consistent and `run` (or `step`) continues it.

use crate::cli::{GlobalArgs, RunArgs};
use crate::cluster;
use crate::cluster::driver::{self, StepContext, StepReport};
use crate::cluster::metrics::Metrics;
use crate::core::rollout::{Phase, Rollout};
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::Limits;
use chrono::Utc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn live_line(r: &Rollout, steps: &[u32], rep: &StepReport) -> String {
    let now = Utc::now();
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

pub async fn run(g: &GlobalArgs, args: &RunArgs) -> Result<Exit> {
    let sess = cluster::connect(g).await?;
    let metrics = Metrics::from_args(&args.prometheus)?;
    let engine = super::engine(g);
    let limits = Limits::default();
    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(tokio::sync::Notify::new());
    {
        let (stop, wake) = (stop.clone(), wake.clone());
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
                wake.notify_waiters();
            }
        });
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let started = Instant::now();
    let service = args.service.service.clone();
    let mut last: Option<driver::Loaded>;
    let mut conflicts = 0;
    loop {
        let mut l = driver::load(&sess, &service).await?;
        let interval = driver::compile(&engine, &limits, l.record())?
            .schedule
            .interval;
        let steps = driver::compile(&engine, &limits, l.record())?
            .schedule
            .steps;
        let cx = StepContext {
            engine: &engine,
            limits: &limits,
            metrics: &metrics,
            dry_run: args.dry_run,
            show_progress: false,
        };
        let report = match driver::step(&mut l, &cx).await {
            Ok(r) => r,
            Err(Error::Conflict { .. }) if conflicts < 10 => {
                // Somebody else stepped at the same moment: reload and go on from their state.
                conflicts += 1;
                bar.println("another operator stepped this rollout at the same time; reloading");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => {
                bar.finish_and_clear();
                return Err(e);
            }
        };
        for w in &report.warnings {
            bar.println(format!("warning: {w}"));
        }
        for t in &report.transitions {
            bar.println(super::step::transition_line(t));
        }
        bar.set_message(live_line(l.rollout(), &steps, &report));
        let phase = l.rollout().phase;
        last = Some(l);
        if args.dry_run {
            bar.finish_and_clear();
            super::step::print_report(&report);
            return Ok(driver::phase_exit(phase));
        }
        if phase.is_terminal() || phase == Phase::Paused {
            break;
        }
        if let Some(max) = args.max_time
            && started.elapsed() >= Duration::from(max)
        {
            bar.println(format!(
                "--max-time {max} reached; the rollout goes on with the next `run` or `step`"
            ));
            break;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        // Not faster than once a second, even with a tiny interval override.
        let wait = interval.max(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
    }
    bar.finish_and_clear();
    let l = last.expect("at least one iteration");
    let r = l.rollout();
    if stop.load(Ordering::SeqCst) {
        eprintln!(
            "interrupted: the rollout stays {} at {}% — `kubectl canary run {service}` continues it",
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
            output::secs(r.elapsed(Utc::now()).as_secs()),
            super::rollback::weight_words(r)
        );
    }
    Ok(driver::phase_exit(r.phase))
}
