//! `kubectl canary report`: one rollout as a self-contained HTML page (weight, canary vs
//! stable, decisions, context, rollback timings), or its model as JSON/YAML (`-o json`).

use crate::cli::{GlobalArgs, OutputFormat, ReportArgs};
use crate::cluster::clock;
use crate::cluster::metrics::Metrics;
use crate::cluster::state::{MAX_PREVIOUS, RolloutRecord, StateDoc, Store};
use crate::cluster::{self, Session, driver};
use crate::core::schedule::Schedule;
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::policy::Limits;
use crate::report::prometheus::Workloads;
use crate::report::{Report, html};
use std::io::Write;
use std::path::PathBuf;

/// The rollout `--previous N` names: None/0 the current one (else the last finished), N the
/// N-th most recent finished one.
pub fn pick<'a>(
    doc: &'a StateDoc,
    previous: Option<usize>,
    what: &str,
) -> Result<&'a RolloutRecord> {
    match previous.unwrap_or(0) {
        0 => doc
            .current
            .as_ref()
            .or(doc.previous.last())
            .ok_or_else(|| Error::Cluster(format!("no rollouts of {what}"))),
        n => doc
            .previous
            .len()
            .checked_sub(n)
            .map(|i| &doc.previous[i])
            .ok_or_else(|| {
                Error::Usage(format!(
                    "--previous {n}: {what} has {} earlier rollout(s) stored (the last {MAX_PREVIOUS} are kept)",
                    doc.previous.len()
                ))
            }),
    }
}

/// The stored policy's schedule (steps, metrics flavour); None when it no longer compiles
/// (a hook gone): the report is still made, without them.
pub fn stored_schedule(g: &GlobalArgs, rec: &RolloutRecord) -> Option<Schedule> {
    driver::compile(&super::engine(g), &Limits::default(), rec)
        .ok()
        .map(|p| p.schedule)
}

/// Whose metrics the rollout read: the policy's metrics flavour, else the provider's.
pub async fn workloads(
    sess: &Session,
    rec: &RolloutRecord,
    schedule: Option<&Schedule>,
) -> Result<Workloads> {
    let flavour = match schedule.and_then(|s| s.metrics) {
        Some(f) => f,
        None => sess
            .routers
            .by_name(&sess.client, &rec.provider)
            .await?
            .metrics_flavour(rec.mesh),
    };
    let target = rec.target();
    Ok(Workloads {
        flavour,
        namespace: rec.namespace.clone(),
        service: rec.service.clone(),
        stable: target.stable_deployment,
        canary: target.canary_deployment,
    })
}

pub async fn run(g: &GlobalArgs, args: &ReportArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let service = &args.service.service;
    let doc = Store::new(&sess.client, &sess.namespace, service)
        .load()
        .await?
        .doc;
    let rec = pick(
        &doc,
        args.previous,
        &format!("{}/{service}", sess.namespace),
    )?;
    let schedule = stored_schedule(g, rec);
    let steps = schedule
        .as_ref()
        .map(|s| s.steps.clone())
        .unwrap_or_default();
    let now = clock::now();
    let mut report = Report::of_record(rec, steps, now);
    if let Metrics::Prometheus(client) = Metrics::new(args.prometheus.config())? {
        let who = workloads(&sess, rec, schedule.as_ref()).await?;
        report = report.with_prometheus(&client, &who, now).await?;
    }
    match g.output {
        OutputFormat::Json | OutputFormat::Yaml => {
            output::structured(g.output, &report)?;
        }
        OutputFormat::Table | OutputFormat::Html => {
            let file = args
                .file
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{service}-report.html")));
            write_page(&report, &file)?;
            if file.as_os_str() != "-" {
                println!("wrote {}", file.display());
                if let Some(rb) = &report.rollback {
                    println!("rollback: {}", rb.summary());
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// Writes the HTML page to `file` ("-": stdout).
pub fn write_page(report: &Report, file: &std::path::Path) -> Result<()> {
    let page = html::render(report);
    if file.as_os_str() == "-" {
        return std::io::stdout()
            .lock()
            .write_all(page.as_bytes())
            .map_err(|e| Error::Output(e.to_string()));
    }
    std::fs::write(file, page)
        .map_err(|e| Error::Output(format!("writing report {}: {e}", file.display())))
}
