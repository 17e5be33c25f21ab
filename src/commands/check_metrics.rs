//! `kubectl canary check-metrics`: runs each track's built-in queries (and the policy's named
//! ones) against Prometheus, and for every query without data says why: which label or value
//! Prometheus does not have, what it has instead, and the likely fix.

use crate::cli::{CheckMetricsArgs, GlobalArgs};
use crate::cluster::state::Store;
use crate::cluster::{self, clock, mesh, workloads};
use crate::core::schedule::MetricsFlavour;
use crate::error::{Error, Exit, Result};
use crate::metrics::MetricsRequest;
use crate::metrics::diagnose::{self, Check};
use crate::metrics::prometheus::PrometheusClient;
use crate::output;
use crate::providers::{Router, Target};
use std::collections::BTreeMap;

/// Whose metrics to read, and where that choice came from (said in the output).
struct Subject {
    request: MetricsRequest,
    source: String,
}

async fn subject(
    g: &GlobalArgs,
    args: &CheckMetricsArgs,
    sess: &cluster::Session,
) -> Result<Subject> {
    let service = &args.service.service;
    let now = clock::now();
    let doc = Store::new(&sess.client, &sess.namespace, service)
        .load()
        .await?
        .doc;
    let rec = doc.current.as_ref().or(doc.previous.last());
    let mut target = match rec {
        Some(rec) => rec.target(),
        None => Target::new(&sess.namespace, service),
    };
    let mut queries = BTreeMap::new();
    let (flavour, source) = match (args.metrics, rec) {
        (Some(f), _) => (f, "--metrics".to_string()),
        (None, Some(rec)) => {
            let schedule = super::report::stored_schedule(g, rec);
            if let Some(s) = &schedule {
                queries = s.queries.clone();
            }
            let who = super::report::workloads(sess, rec, schedule.as_ref()).await?;
            (
                who.flavour,
                format!("the rollout's ({} provider)", rec.provider),
            )
        }
        (None, None) => match Router::discover(&sess.client, &mut target).await {
            Ok(router) => {
                let mesh = match workloads::find_stable(
                    &sess.client,
                    &sess.namespace,
                    service,
                    None,
                    &target.canary_deployment,
                    None,
                )
                .await
                {
                    Ok(stable) => {
                        if let Some(name) = &stable.metadata.name {
                            target.stable_deployment = name.clone();
                        }
                        mesh::detect(&router, &sess.client, &sess.namespace, &stable).await?
                    }
                    Err(_) => None,
                };
                let flavour = router.metrics_flavour(mesh.as_ref().map(|m| m.flavour));
                let why = match &mesh {
                    Some(m) if flavour == m.flavour => format!("; {}", m.why),
                    _ => String::new(),
                };
                (
                    flavour,
                    format!("the detected {} provider{why}", router.name()),
                )
            }
            Err(e) => (
                MetricsFlavour::Generic,
                format!("no provider found ({e}); the application's own metrics"),
            ),
        },
    };
    Ok(Subject {
        request: MetricsRequest {
            namespace: sess.namespace.clone(),
            service: service.clone(),
            stable_workload: target.stable_deployment.clone(),
            canary_workload: target.canary_deployment.clone(),
            flavour,
            step_started: now,
            now,
            queries,
            latency_samples: false,
        },
        source,
    })
}

fn value_text(c: &Check) -> String {
    match (c.value, c.name.as_str()) {
        (None, _) => "no data".into(),
        (Some(v), "error_rate") => format!("{:.2}%", v * 100.0),
        (Some(v), "p95") => format!("{v:.1} ms"),
        (Some(v), _) => format!("{v}"),
    }
}

pub async fn run(g: &GlobalArgs, args: &CheckMetricsArgs) -> Result<Exit> {
    let config = args.prometheus.config().ok_or_else(|| {
        Error::Usage(
            "check-metrics needs Prometheus: --prometheus-url or KUBECTL_CANARY_PROMETHEUS_URL"
                .into(),
        )
    })?;
    let window = config.window;
    let client = PrometheusClient::new(config)?;
    let sess = cluster::connect(&g.connection()).await?;
    let s = subject(g, args, &sess).await?;
    let window_secs = window.as_secs().max(1);
    let checks = diagnose::check(&client, &s.request, window_secs).await?;
    // The canary has no data before it serves; the stable track must.
    let stable_missing = checks
        .iter()
        .any(|c| c.track == "stable" && c.value.is_none());
    if !output::structured(g.output, &checks)? {
        println!(
            "Metrics of {}/{} ({} flavour, from {}; Prometheus {}, rates over {}s):",
            s.request.namespace,
            s.request.service,
            s.request.flavour,
            s.source,
            client.config.base_url,
            window_secs
        );
        for c in &checks {
            println!("  {:<7} {:<12} {}", c.track, c.name, value_text(c));
            if let Some(why) = &c.why {
                println!("          why: {why}");
                println!("          query: {}", c.promql);
            }
        }
        if stable_missing {
            println!(
                "stable has no data: a rollout would hold at every evaluation until it has (fix the cause above first)"
            );
        }
    }
    Ok(if stable_missing {
        Exit::Error
    } else {
        Exit::Ok
    })
}
