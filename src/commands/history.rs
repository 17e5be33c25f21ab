//! `kubectl canary history`: every transition with time, decision, reason and the metric
//! values (and resolved queries) behind it; earlier rollouts of the service too.

use crate::cli::{GlobalArgs, HistoryArgs};
use crate::cluster;
use crate::cluster::state::Store;
use crate::error::{Error, Exit, Result};
use crate::output;

pub async fn run(g: &GlobalArgs, args: &HistoryArgs) -> Result<Exit> {
    let sess = cluster::connect(g).await?;
    let service = &args.service.service;
    let stored = Store::new(&sess.client, &sess.namespace, service)
        .load()
        .await?;
    let doc = stored.doc;
    if doc.current.is_none() && doc.previous.is_empty() {
        return Err(Error::Cluster(format!(
            "no rollouts of {}/{service}",
            sess.namespace
        )));
    }
    if output::structured(g.output, &doc)? {
        return Ok(Exit::Ok);
    }
    for (i, rec) in doc.previous.iter().chain(doc.current.iter()).enumerate() {
        let r = &rec.rollout;
        if i > 0 {
            println!();
        }
        println!(
            "rollout of {:?} started {} by {} — {} (policy {} sha256 {})",
            rec.images,
            r.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            rec.started_by,
            r.phase,
            rec.policy.path,
            &rec.policy.sha256[..12.min(rec.policy.sha256.len())]
        );
        println!("{}", super::run::summary(r));
        // The queries behind each policy transition.
        for t in r.history.iter().filter(|t| t.actor == "policy") {
            if let Some(e) = r.evaluations.iter().find(|e| e.at == t.at)
                && !e.queries.is_empty()
            {
                println!("  {} {}:", t.at.format("%H:%M:%S"), t.event);
                for (q, v) in &e.queries {
                    let v = v
                        .map(|v| format!("{v}"))
                        .unwrap_or_else(|| "no data".into());
                    println!("    {v:>10}  {q}");
                }
            }
        }
    }
    Ok(Exit::Ok)
}
