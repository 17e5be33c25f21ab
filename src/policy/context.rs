//! The `ctx` a policy's `decide(ctx)` receives, and the functions it may call.
//! Values are read from prefetched [`Facts`]; a missing value throws "no data: …", so a
//! policy that forgets to handle missing data holds instead of passing.

use crate::core::decision::Observations;
use crate::core::facts::{Facts, PodFacts, Track, TrackMetrics};
use crate::core::stats::{ErrorShareTest, RankTest, TestOutcome};
use rhai::{Dynamic, Engine, EvalAltResult, Map, Position};
use std::cell::RefCell;
use std::sync::Arc;

/// Prefix of the error a missing value throws; the evaluator turns it into "inconclusive".
pub const NO_DATA: &str = "no data: ";

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

thread_local! {
    /// Observations recorded by `observe()` during the evaluation running on this thread.
    static OBSERVATIONS: RefCell<Observations> = const { RefCell::new(Observations::new()) };
    /// `print`/`debug` lines of the evaluation running on this thread.
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn reset_sinks() {
    OBSERVATIONS.with(|o| o.borrow_mut().clear());
    LOG.with(|l| l.borrow_mut().clear());
}

pub(crate) fn take_sinks() -> (Observations, Vec<String>) {
    (
        OBSERVATIONS.with(|o| std::mem::take(&mut *o.borrow_mut())),
        LOG.with(|l| std::mem::take(&mut *l.borrow_mut())),
    )
}

/// Lines of `print`/`debug` an evaluation keeps, and characters per line: the log is stored
/// in the rollout state, so a chatty loop must not grow it (200 × 64 KiB once could).
pub const MAX_LOG_LINES: usize = 50;
pub const MAX_LOG_LINE_CHARS: usize = 500;

pub(crate) fn log_line(line: String) {
    LOG.with(|l| {
        let mut l = l.borrow_mut();
        match l.len() {
            n if n < MAX_LOG_LINES => {
                let mut line = line;
                if line.chars().count() > MAX_LOG_LINE_CHARS {
                    line = line.chars().take(MAX_LOG_LINE_CHARS).collect::<String>() + " […]";
                }
                l.push(line);
            }
            n if n == MAX_LOG_LINES => l.push(format!(
                "[… more than {MAX_LOG_LINES} lines; the rest is dropped]"
            )),
            _ => {}
        }
    });
}

fn no_data(what: impl std::fmt::Display) -> Box<EvalAltResult> {
    EvalAltResult::ErrorRuntime(format!("{NO_DATA}{what}").into(), Position::NONE).into()
}

/// Everything a policy can read at one evaluation.
#[derive(Debug, Clone)]
pub struct ContextData {
    pub service: String,
    pub step: usize,
    pub weight: u32,
    pub steps: Vec<u32>,
    pub time_in_step_secs: f64,
    pub elapsed_secs: f64,
    pub min_requests: u64,
    pub params: Map,
    pub facts: Facts,
    /// Observations of earlier evaluations, oldest first.
    pub history: Vec<Observations>,
}

#[derive(Debug, Clone)]
pub struct PolicyContext(pub Arc<ContextData>);

#[derive(Debug, Clone)]
pub struct TrackView {
    data: Arc<ContextData>,
    track: Track,
}

impl TrackView {
    fn metrics(&self) -> &TrackMetrics {
        self.data.facts.track(self.track)
    }

    fn pods(&self) -> &PodFacts {
        self.data.facts.pods(self.track)
    }

    fn value(&self, field: &str) -> Option<f64> {
        let m = self.metrics();
        match field {
            "requests" => m.requests,
            "errors" => m.errors,
            "request_rate" => m.request_rate,
            "error_rate" => m.error_rate,
            "success_rate" => m.error_rate.map(|e| 1.0 - e),
            "p50" => m.latency_p50,
            "p95" => m.latency_p95,
            "p99" => m.latency_p99,
            _ => None,
        }
    }

    fn get(&mut self, field: &str) -> RhaiResult<f64> {
        self.value(field)
            .filter(|v| v.is_finite())
            .ok_or_else(|| no_data(format!("{}.{field}", self.track.as_str())))
    }
}

fn map_to_outcome(o: TestOutcome) -> Map {
    let mut m = Map::new();
    m.insert("verdict".into(), o.verdict.as_str().into());
    m.insert(
        "pass".into(),
        (o.verdict == crate::core::stats::Verdict::Pass).into(),
    );
    m.insert(
        "fail".into(),
        (o.verdict == crate::core::stats::Verdict::Fail).into(),
    );
    m.insert("statistic".into(), o.statistic.into());
    m.insert(
        "p_value".into(),
        o.p_value.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
    );
    m.insert(
        "estimate".into(),
        o.estimate.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
    );
    m.insert("samples".into(), (o.samples as i64).into());
    m.insert("reason".into(), o.reason.into());
    m
}

fn opt_f64(opts: &Map, key: &str, default: f64) -> RhaiResult<f64> {
    match opts.get(key) {
        None => Ok(default),
        Some(v) => v
            .as_float()
            .or_else(|_| v.as_int().map(|i| i as f64))
            .map_err(|t| format!("option {key} must be a number, got {t}").into()),
    }
}

impl PolicyContext {
    fn query(&mut self, name: &str) -> RhaiResult<f64> {
        match self.0.facts.queries.get(name) {
            Some(Some(v)) if v.is_finite() => Ok(*v),
            Some(_) => Err(no_data(format!("query {name}"))),
            None => Err(format!(
                "query {name:?} is not declared: add it to schedule().queries (declared: {})",
                self.0
                    .facts
                    .queries
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
            .into()),
        }
    }

    fn error_test(&mut self, opts: Map) -> RhaiResult<Map> {
        let d = ErrorShareTest::default();
        let test = ErrorShareTest {
            max_ratio: opt_f64(&opts, "max_ratio", d.max_ratio)?,
            alpha: opt_f64(&opts, "alpha", d.alpha)?,
            beta: opt_f64(&opts, "beta", d.beta)?,
            min_canary_requests: opt_f64(&opts, "min_requests", self.0.min_requests as f64)? as u64,
            max_error_rate: opt_f64(&opts, "max_error_rate", d.max_error_rate)?,
        };
        let (c, s) = (&self.0.facts.canary, &self.0.facts.stable);
        let nan = f64::NAN;
        Ok(map_to_outcome(test.evaluate(
            c.requests.unwrap_or(nan),
            c.errors.unwrap_or(nan),
            s.requests.unwrap_or(nan),
            s.errors.unwrap_or(nan),
        )))
    }

    fn latency_test(&mut self, opts: Map) -> RhaiResult<Map> {
        let d = RankTest::default();
        let test = RankTest {
            alpha: opt_f64(&opts, "alpha", d.alpha)?,
            min_samples: opt_f64(&opts, "min_samples", d.min_samples as f64)? as usize,
            max_shift: opt_f64(&opts, "max_shift", d.max_shift)?,
        };
        Ok(map_to_outcome(test.evaluate(
            &self.0.facts.canary.latency_samples,
            &self.0.facts.stable.latency_samples,
        )))
    }

    fn history(&mut self) -> rhai::Array {
        self.0
            .history
            .iter()
            .map(|obs| {
                let m: Map = obs
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().into(),
                            v.map(Dynamic::from_float).unwrap_or(Dynamic::UNIT),
                        )
                    })
                    .collect();
                Dynamic::from_map(m)
            })
            .collect()
    }
}

fn decision(action: &str, reason: impl Into<String>) -> Map {
    let mut m = Map::new();
    m.insert("action".into(), action.into());
    m.insert("reason".into(), reason.into().into());
    m
}

fn to_f64(v: &Dynamic) -> Option<f64> {
    if v.is_unit() {
        None
    } else if let Ok(f) = v.as_float() {
        Some(f)
    } else if let Ok(i) = v.as_int() {
        Some(i as f64)
    } else {
        v.as_bool().ok().map(|b| if b { 1.0 } else { 0.0 })
    }
}

/// Registers the context types and the policy helper functions on `engine`.
pub fn register(engine: &mut Engine) {
    engine
        .register_type_with_name::<PolicyContext>("Context")
        .register_get("step", |c: &mut PolicyContext| c.0.step as i64)
        .register_get("weight", |c: &mut PolicyContext| c.0.weight as i64)
        .register_get("steps", |c: &mut PolicyContext| {
            c.0.steps.iter().map(|w| Dynamic::from_int(*w as i64)).collect::<rhai::Array>()
        })
        .register_get("is_last_step", |c: &mut PolicyContext| c.0.step + 1 >= c.0.steps.len())
        .register_get("time_in_step", |c: &mut PolicyContext| c.0.time_in_step_secs)
        .register_get("elapsed", |c: &mut PolicyContext| c.0.elapsed_secs)
        .register_get("service", |c: &mut PolicyContext| c.0.service.clone())
        .register_get("params", |c: &mut PolicyContext| c.0.params.clone())
        .register_get("history", PolicyContext::history)
        .register_get("canary", |c: &mut PolicyContext| TrackView {
            data: c.0.clone(),
            track: Track::Canary,
        })
        .register_get("stable", |c: &mut PolicyContext| TrackView {
            data: c.0.clone(),
            track: Track::Stable,
        })
        .register_fn("param", |c: &mut PolicyContext, name: &str, default: Dynamic| {
            c.0.params.get(name).cloned().unwrap_or(default)
        })
        .register_fn("query", PolicyContext::query)
        .register_fn("has_query", |c: &mut PolicyContext, name: &str| {
            matches!(c.0.facts.queries.get(name), Some(Some(v)) if v.is_finite())
        })
        .register_fn("error_test", PolicyContext::error_test)
        .register_fn("error_test", |c: &mut PolicyContext| c.error_test(Map::new()))
        .register_fn("latency_test", PolicyContext::latency_test)
        .register_fn("latency_test", |c: &mut PolicyContext| c.latency_test(Map::new()));

    engine.register_type_with_name::<TrackView>("Track");
    for field in [
        "requests",
        "errors",
        "request_rate",
        "error_rate",
        "success_rate",
        "p50",
        "p95",
        "p99",
    ] {
        engine.register_get(field, move |t: &mut TrackView| t.get(field));
    }
    engine
        .register_fn("has", |t: &mut TrackView, field: &str| {
            t.value(field).is_some_and(f64::is_finite)
        })
        .register_get("name", |t: &mut TrackView| t.track.as_str().to_string())
        .register_get("ready_pods", |t: &mut TrackView| t.pods().ready as i64)
        .register_get("desired_pods", |t: &mut TrackView| t.pods().desired as i64)
        .register_get("restarts", |t: &mut TrackView| t.pods().restarts as i64)
        .register_get("crash_looping", |t: &mut TrackView| t.pods().crash_looping);

    // Decisions.
    engine
        .register_fn("advance", || decision("advance", "policy checks passed"))
        .register_fn("advance", |r: &str| decision("advance", r))
        .register_fn("advance_to", |w: i64| {
            let mut m = decision("advance", format!("advance to {w}%"));
            m.insert("to_weight".into(), w.into());
            m
        })
        .register_fn("advance_to", |w: i64, r: &str| {
            let mut m = decision("advance", r);
            m.insert("to_weight".into(), w.into());
            m
        })
        .register_fn("hold", |r: &str| decision("hold", r))
        .register_fn("pause", |r: &str| decision("pause", r))
        .register_fn("rollback", |r: &str| decision("rollback", r))
        .register_fn("promote", || decision("promote", "policy promoted"))
        .register_fn("promote", |r: &str| decision("promote", r));

    // Observations recorded in history and shown by `status`.
    engine.register_fn("observe", |name: &str, value: Dynamic| {
        OBSERVATIONS.with(|o| {
            let mut o = o.borrow_mut();
            if o.len() < 64 || o.contains_key(name) {
                o.insert(name.to_string(), to_f64(&value).filter(|v| v.is_finite()));
            }
        });
    });

    // Comparison helpers: canary vs stable.
    engine
        .register_fn("ratio", |a: f64, b: f64| -> RhaiResult<f64> {
            if b.abs() < f64::EPSILON || !a.is_finite() || !b.is_finite() {
                Err(no_data(format!("ratio({a}, {b}) has no finite value")))
            } else {
                Ok(a / b)
            }
        })
        .register_fn("delta", |a: f64, b: f64| a - b)
        .register_fn("relative_increase", |a: f64, b: f64| -> RhaiResult<f64> {
            if b.abs() < f64::EPSILON || !a.is_finite() || !b.is_finite() {
                Err(no_data(format!(
                    "relative_increase({a}, {b}) has no finite value"
                )))
            } else {
                Ok((a - b) / b)
            }
        });
}
