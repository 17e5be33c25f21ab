//! What of a rollout's evaluations and transitions the state object keeps, so that one
//! object (1 MiB limit, rewritten at every interval) stays small however long rollouts run.
//!
//! - Resolved PromQL texts are stored once per rollout (`Rollout::query_texts`); an
//!   evaluation keeps only their values, by index.
//! - Evaluations are bounded by count and by bytes. Over budget, older holds are thinned
//!   (every second one goes) before anything else, so charts still span the whole rollout
//!   at a lower resolution and every evaluation that changed something stays.
//! - Transitions are bounded by count (the first, the start, always stays).
//! - A finished rollout is kept as a summary: no per-query values, no policy log, and its
//!   evaluations thinned to a much smaller budget.

use super::decision::Evaluation;

/// The parts of a rollout this module bounds (the rollout lends them; this module does not
/// know the rollout, so the state machine can call it without the two depending on each
/// other).
pub struct Kept<'a> {
    pub evaluations: &'a mut Vec<Evaluation>,
    /// Resolved PromQL texts, referenced by index from the evaluations' values.
    pub query_texts: &'a mut Vec<String>,
    /// How many evaluations were dropped so far.
    pub thinned: &'a mut u64,
}

/// Evaluations kept for a rollout in progress.
pub const MAX_EVALUATIONS: usize = 400;
/// JSON bytes the evaluations of a rollout in progress (with its query table) may take.
pub const MAX_EVALUATION_BYTES: usize = 80 * 1024;
/// JSON bytes the evaluations of a finished rollout may take.
pub const MAX_SUMMARY_EVALUATION_BYTES: usize = 8 * 1024;
/// Transitions kept (a rollout flapping between pause and resume would grow without end).
pub const MAX_TRANSITIONS: usize = 200;
/// Policy log lines a decision other than a hold keeps once it is no longer the latest.
pub const MAX_LOG_LINES_KEPT: usize = 5;
/// ... and their bytes.
pub const MAX_LOG_BYTES_KEPT: usize = 2048;
/// Distinct query texts before unreferenced ones are dropped from the table.
const MAX_QUERY_TEXTS: usize = 64;

/// Appends `evaluation`, then applies the budgets.
pub fn record(r: Kept<'_>, mut evaluation: Evaluation) {
    let mut r = r;
    for (text, value) in std::mem::take(&mut evaluation.queries) {
        let index = match r.query_texts.iter().position(|t| *t == text) {
            Some(i) => i,
            None => {
                r.query_texts.push(text);
                r.query_texts.len() - 1
            }
        };
        evaluation.values.insert(index as u32, value);
    }
    // The values and the log behind a hold matter while it is the latest evaluation; the
    // decisions that changed something keep their values and the start of their log.
    if let Some(prev) = r.evaluations.last_mut() {
        if prev.decision.action() == "hold" {
            prev.values.clear();
            prev.log.clear();
        } else {
            cap_log(&mut prev.log, MAX_LOG_BYTES_KEPT);
        }
    }
    r.evaluations.push(evaluation);
    thin(&mut r, MAX_EVALUATIONS, MAX_EVALUATION_BYTES);
}

/// Bounds a rollout's transitions; called after each one is appended.
pub fn bound_history<T>(history: &mut Vec<T>) {
    if history.len() > MAX_TRANSITIONS {
        let excess = history.len() - MAX_TRANSITIONS;
        history.drain(1..=excess);
    }
}

/// What a finished rollout keeps.
pub fn summarize(mut r: Kept<'_>) {
    r.query_texts.clear();
    for e in r.evaluations.iter_mut() {
        e.values.clear();
        e.log.clear();
    }
    thin(&mut r, MAX_EVALUATIONS, MAX_SUMMARY_EVALUATION_BYTES);
}

fn cap_log(log: &mut Vec<String>, max_bytes: usize) {
    log.truncate(MAX_LOG_LINES_KEPT);
    let mut left = max_bytes;
    log.retain_mut(|line| {
        if left == 0 {
            return false;
        }
        if line.len() > left {
            let mut cut = left;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        left -= line.len().min(left);
        true
    });
}

fn json_len<T: serde::Serialize + ?Sized>(v: &T) -> usize {
    serde_json::to_vec(v).map_or(0, |b| b.len())
}

fn thin(r: &mut Kept<'_>, max_count: usize, max_bytes: usize) {
    let mut sizes: Vec<usize> = r.evaluations.iter().map(|e| json_len(e) + 1).collect();
    let mut table = json_len(&**r.query_texts);
    let over = |sizes: &[usize], table: usize| {
        sizes.len() > max_count || sizes.iter().sum::<usize>() + table > max_bytes
    };
    while over(&sizes, table) {
        let before = sizes.len();
        // Every second hold of the older half (never the latest evaluation).
        let older = (r.evaluations.len() / 2)
            .max(1)
            .min(r.evaluations.len() - 1);
        let mut drop_next_hold = false;
        let (evaluations, kept_sizes): (Vec<_>, Vec<_>) = std::mem::take(r.evaluations)
            .into_iter()
            .zip(sizes)
            .enumerate()
            .filter(|(i, (e, _))| {
                if *i >= older || e.decision.action() != "hold" {
                    return true;
                }
                drop_next_hold = !drop_next_hold;
                drop_next_hold
            })
            .map(|(_, pair)| pair)
            .unzip();
        *r.evaluations = evaluations;
        sizes = kept_sizes;
        if sizes.len() == before {
            // Nothing left to thin: the oldest goes.
            if r.evaluations.len() <= 1 {
                break;
            }
            r.evaluations.remove(0);
            sizes.remove(0);
        }
        *r.thinned += (before - sizes.len()) as u64;
        if r.query_texts.len() > MAX_QUERY_TEXTS {
            drop_unreferenced_texts(r);
            table = json_len(&**r.query_texts);
        }
    }
    if r.query_texts.len() > MAX_QUERY_TEXTS {
        drop_unreferenced_texts(r);
    }
}

/// Rebuilds the query table from the texts still referenced (renumbering the values).
fn drop_unreferenced_texts(r: &mut Kept<'_>) {
    let mut used: Vec<u32> = r
        .evaluations
        .iter()
        .flat_map(|e| e.values.keys().copied())
        .collect();
    used.sort_unstable();
    used.dedup();
    let texts = std::mem::take(r.query_texts);
    *r.query_texts = used.iter().map(|&i| texts[i as usize].clone()).collect();
    for e in r.evaluations.iter_mut() {
        e.values = std::mem::take(&mut e.values)
            .into_iter()
            .map(|(i, v)| (used.binary_search(&i).expect("collected above") as u32, v))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Decision;
    use crate::rollout::Rollout;
    use chrono::{DateTime, Utc};
    use std::collections::BTreeMap;

    fn advance(reason: &str) -> Decision {
        Decision::Advance {
            to_weight: None,
            reason: reason.into(),
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    /// An evaluation as a Prometheus-backed policy records it: 12 observations, 10 resolved
    /// queries of ~200 characters, and a full policy log (50 lines × 500 characters).
    pub fn heavy(i: usize, decision: Decision) -> Evaluation {
        let observations = (0..12)
            .map(|k| (format!("canary_observation_{k}"), Some(i as f64 * 0.001)))
            .collect();
        let queries = (0..10)
            .map(|k| {
                (
                    format!(
                        "sum(rate(istio_requests_total{{destination_workload=\"web-canary\",namespace=\"shop\",response_code=~\"5..\",query=\"{k}\"}}[1m])) / sum(rate(istio_requests_total{{destination_workload=\"web-canary\",namespace=\"shop\"}}[1m]))"
                    ),
                    Some(k as f64),
                )
            })
            .collect();
        Evaluation {
            at: t0() + chrono::Duration::seconds(30 * i as i64),
            step: i / 100,
            weight: 5,
            decision,
            observations,
            queries,
            values: BTreeMap::new(),
            canary_ready: None,
            log: vec!["x".repeat(500); 50],
        }
    }

    #[test]
    fn query_texts_are_stored_once_and_values_by_index() {
        let mut r = Rollout::new(t0());
        for i in 0..3 {
            r.record_evaluation(heavy(i, Decision::hold("watching")));
        }
        assert_eq!(r.query_texts.len(), 10);
        let last = r.last_evaluation().unwrap();
        assert!(last.queries.is_empty());
        assert_eq!(last.values.len(), 10);
        let (index, value) = last.values.iter().nth(3).unwrap();
        assert!(
            r.query_texts[*index as usize].contains("query=\\\"3\\\"")
                || r.query_texts[*index as usize].contains("query=\"3\"")
        );
        assert_eq!(*value, Some(3.0));
        assert!(
            r.evaluations[0].values.is_empty(),
            "an older hold drops them"
        );
        assert!(r.evaluations[0].log.is_empty(), "and its log");
    }

    #[test]
    fn a_thousand_evaluations_stay_within_budget_and_span_the_rollout() {
        let mut r = Rollout::new(t0());
        for i in 0..1000 {
            let d = if i % 100 == 99 {
                advance("soaked")
            } else {
                Decision::hold("watching")
            };
            r.record_evaluation(heavy(i, d));
        }
        let bytes = json_len(&r.evaluations) + json_len(&r.query_texts);
        assert!(bytes <= MAX_EVALUATION_BYTES, "{bytes} bytes");
        assert!(r.evaluations.len() <= MAX_EVALUATIONS);
        let advances = r
            .evaluations
            .iter()
            .filter(|e| e.decision.action() == "advance")
            .count();
        assert_eq!(
            advances, 10,
            "every evaluation that changed something stays"
        );
        assert!(
            r.evaluations.len() >= 50,
            "enough points to chart: {}",
            r.evaluations.len()
        );
        let advance = r
            .evaluations
            .iter()
            .find(|e| e.decision.action() == "advance");
        let advance = advance.unwrap();
        assert_eq!(advance.values.len(), 10, "a decision keeps its values");
        let log: usize = advance.log.iter().map(String::len).sum();
        assert!(
            log > 0 && log <= MAX_LOG_BYTES_KEPT,
            "and the start of its log: {log}"
        );
        assert_eq!(r.evaluations.last().unwrap().step, 9, "the latest stays");
        assert_eq!(
            r.evaluations_thinned as usize + r.evaluations.len(),
            1000,
            "what was thinned is counted"
        );
        assert_eq!(
            r.evaluations.last().unwrap().log.len(),
            50,
            "with its full log"
        );
        assert!(
            r.evaluations[0].at < t0() + chrono::Duration::seconds(30 * 100),
            "older evaluations are thinned, not cut: the first kept is from {}",
            r.evaluations[0].at
        );
        let mut prev = r.evaluations[0].at;
        for e in &r.evaluations[1..] {
            assert!(e.at > prev, "kept in order");
            prev = e.at;
        }
    }

    #[test]
    fn only_the_latest_survives_when_it_alone_is_over_budget() {
        let mut r = Rollout::new(t0());
        let mut big = heavy(0, Decision::hold("x"));
        big.log = vec!["y".repeat(500); 400];
        r.record_evaluation(heavy(1, Decision::hold("x")));
        r.record_evaluation(big);
        assert_eq!(r.evaluations.len(), 1);
    }

    #[test]
    fn summaries_drop_values_and_logs_and_fit_their_budget() {
        let mut r = Rollout::new(t0());
        for i in 0..1000 {
            r.record_evaluation(heavy(i, Decision::hold("watching")));
        }
        r.summarize();
        assert!(r.query_texts.is_empty());
        assert!(
            r.evaluations
                .iter()
                .all(|e| e.values.is_empty() && e.log.is_empty())
        );
        let bytes = json_len(&r.evaluations);
        assert!(bytes <= MAX_SUMMARY_EVALUATION_BYTES, "{bytes} bytes");
        assert!(
            r.evaluations.len() >= 8,
            "still charts: {}",
            r.evaluations.len()
        );
    }

    #[test]
    fn renumbering_keeps_each_value_with_its_text() {
        let mut r = Rollout::new(t0());
        for i in 0..(MAX_QUERY_TEXTS + 10) {
            let mut e = heavy(i, advance("x"));
            e.log.clear();
            e.queries = BTreeMap::from([(format!("q{i}"), Some(i as f64))]);
            r.record_evaluation(e);
        }
        // Force a collection: drop the oldest evaluations, then collect.
        r.evaluations.drain(..20);
        drop_unreferenced_texts(&mut r.kept());
        assert_eq!(r.query_texts.len(), MAX_QUERY_TEXTS + 10 - 20);
        for e in &r.evaluations {
            for (i, v) in &e.values {
                assert_eq!(
                    r.query_texts[*i as usize],
                    format!("q{}", v.unwrap() as usize)
                );
            }
        }
    }

    #[test]
    fn history_keeps_the_start_and_the_latest() {
        let mut r = Rollout::new(t0());
        r.apply(
            crate::rollout::Event::CanaryReady { weight: 5 },
            t0(),
            crate::rollout::Cause::new("me", "start"),
        )
        .unwrap();
        for i in 0..(MAX_TRANSITIONS + 50) {
            let ev = if i % 2 == 0 {
                crate::rollout::Event::Pause
            } else {
                crate::rollout::Event::Resume
            };
            r.apply(ev, t0(), crate::rollout::Cause::new("me", format!("{i}")))
                .unwrap();
        }
        assert_eq!(r.history.len(), MAX_TRANSITIONS);
        assert_eq!(r.history[0].reason, "start");
        assert_eq!(
            r.history.last().unwrap().reason,
            format!("{}", MAX_TRANSITIONS + 49)
        );
    }
}
