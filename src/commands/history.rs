//! `kubectl canary history`: every transition with time, decision, reason and the metric
//! values (and resolved queries) behind it; earlier rollouts of the service too. `--since`
//! keeps what happened since a time.

use crate::cli::{GlobalArgs, HistoryArgs, OutputFormat};
use crate::cluster;
use crate::cluster::clock;
use crate::cluster::state::{StateDoc, Store};
use crate::error::{Error, Exit, Result};
use crate::output;
use crate::report::last_activity;
use chrono::{DateTime, NaiveDate, Utc};

/// `--since`: a duration back from `now` (`30m`, `2h`, `7d`) or a time (RFC 3339 or a date).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text)
        && let Ok(d) = chrono::Duration::from_std(d)
    {
        return Ok(now - d);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Some(t) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
    {
        return Ok(t.and_utc());
    }
    Err(Error::Usage(format!(
        "--since {text:?}: expected a duration (30m, 2h, 7d) or a time (2026-01-31T12:00:00Z, 2026-01-31)"
    )))
}

/// The rollouts active at or after `since`, each with only its transitions and evaluations
/// from then on.
pub fn since(doc: StateDoc, since: DateTime<Utc>) -> StateDoc {
    let keep = |mut rec: crate::cluster::state::RolloutRecord| {
        if last_activity(&rec.rollout) < since {
            return None;
        }
        rec.rollout.history.retain(|t| t.at >= since);
        rec.rollout.evaluations.retain(|e| e.at >= since);
        Some(rec)
    };
    StateDoc {
        current: doc.current.and_then(keep),
        previous: doc.previous.into_iter().filter_map(keep).collect(),
    }
}

pub async fn run(g: &GlobalArgs, args: &HistoryArgs) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let service = &args.service.service;
    let stored = Store::new(&sess.client, &sess.namespace, service)
        .load()
        .await?;
    let mut doc = stored.doc;
    if doc.current.is_none() && doc.previous.is_empty() {
        return Err(Error::Cluster(format!(
            "no rollouts of {}/{service}",
            sess.namespace
        )));
    }
    if let Some(text) = &args.since {
        let from = parse_since(text, clock::now())?;
        doc = since(doc, from);
        if doc.current.is_none() && doc.previous.is_empty() && g.output == OutputFormat::Table {
            println!(
                "no activity of {}/{service} since {}",
                sess.namespace,
                from.format("%Y-%m-%d %H:%M:%S UTC")
            );
            return Ok(Exit::Ok);
        }
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
        for t in r.history.iter().filter(|t| t.by_policy()) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::rollout::{Cause, Event, EventKind, Rollout};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_225_600 + s, 0).unwrap()
    }

    #[test]
    fn since_accepts_durations_times_and_dates() {
        let now = t(10_000);
        assert_eq!(parse_since("30m", now).unwrap(), t(10_000 - 1800));
        assert_eq!(parse_since("7d", now).unwrap(), t(10_000 - 7 * 86_400));
        assert_eq!(parse_since("2026-01-01T00:10:00Z", now).unwrap(), t(600));
        assert_eq!(parse_since("2026-01-01", now).unwrap(), t(0));
        let err = parse_since("yesterday", now).unwrap_err().to_string();
        assert!(err.contains("--since \"yesterday\""), "{err}");
    }

    fn record(start: i64, events: &[(i64, Event)]) -> crate::cluster::state::RolloutRecord {
        let mut r = Rollout::new(t(start));
        for (at, e) in events {
            r.apply(e.clone(), t(*at), Cause::policy("x")).unwrap();
        }
        serde_json::from_value(serde_json::json!({
            "namespace": "shop", "service": "web", "images": {}, "provider": "istio",
            "route": "web", "canary_replicas": 1, "started_by": "e2e",
            "policy": {"name": "default", "path": "default.rhai", "sha256": "", "source": ""},
            "rollout": r,
        }))
        .unwrap()
    }

    #[test]
    fn since_keeps_what_happened_from_then_on() {
        let old = record(
            0,
            &[(10, Event::CanaryReady { weight: 5 }), (20, Event::Abort)],
        );
        let cur = record(
            100,
            &[
                (110, Event::CanaryReady { weight: 5 }),
                (
                    150,
                    Event::Advance {
                        step: 1,
                        weight: 25,
                    },
                ),
            ],
        );
        let doc = StateDoc {
            current: Some(cur),
            previous: vec![old],
        };
        let got = since(doc.clone(), t(120));
        assert!(got.previous.is_empty(), "ended before --since");
        let history = &got.current.unwrap().rollout.history;
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].event, EventKind::Advance);
        assert_eq!(since(doc.clone(), t(0)), doc, "everything since the start");
        assert_eq!(since(doc, t(1000)), StateDoc::default());
    }
}
