//! One evaluation of a rollout, shared by `simulate` and the cluster commands: build the
//! policy context from prefetched facts, call the policy, apply the core's gates, record.

use crate::core::decision::Evaluation;
use crate::core::evaluate::{self, Step};
use crate::core::facts::Facts;
use crate::core::rollout::Rollout;
use crate::policy::{ContextData, Limits, Policy, PolicyEngine};
use chrono::{DateTime, Utc};
use rhai::Map;

/// How many earlier evaluations a policy sees in `ctx.history`.
pub const HISTORY_IN_CONTEXT: usize = 20;

pub struct Evaluated {
    pub step: Step,
    pub evaluation: Evaluation,
    /// The policy read latency samples that `facts` skipped: void; evaluate again with them.
    pub wanted_latency_samples: bool,
}

/// Everything fixed for the life of a rollout: the compiled policy and its parameters.
pub struct Evaluator<'a> {
    pub engine: &'a PolicyEngine,
    pub policy: &'a Policy,
    pub limits: &'a Limits,
    pub service: &'a str,
    pub params: &'a Map,
}

impl Evaluator<'_> {
    /// Runs the policy once against `facts` and returns the effective step (not yet applied).
    pub fn evaluate(&self, rollout: &Rollout, facts: &Facts, now: DateTime<Utc>) -> Evaluated {
        let history = rollout
            .evaluations
            .iter()
            .rev()
            .take(HISTORY_IN_CONTEXT)
            .rev()
            .map(|e| e.observations.clone())
            .collect();
        let schedule = &self.policy.schedule;
        let data = ContextData {
            service: self.service.to_string(),
            step: rollout.step,
            weight: rollout.weight,
            steps: schedule.steps.clone(),
            time_in_step_secs: rollout.time_in_step(now).as_secs_f64(),
            elapsed_secs: rollout.elapsed(now).as_secs_f64(),
            min_requests: schedule.min_requests,
            params: self.params.clone(),
            facts: facts.clone(),
            history,
        };
        let outcome = self.engine.evaluate(self.policy, data, self.limits);
        if outcome.wanted_latency_samples {
            self.policy.learned_it_reads_latency_samples();
        }
        let step = evaluate::decide(rollout, schedule, outcome.decision, facts, now);
        let evaluation = Evaluation {
            at: now,
            step: rollout.step,
            weight: rollout.weight,
            decision: step.decision.clone(),
            observations: outcome.observations,
            queries: facts.resolved.clone(),
            values: Default::default(),
            canary_ready: Some(facts.canary_pods.ready),
            log: outcome.log,
        };
        Evaluated {
            step,
            evaluation,
            wanted_latency_samples: outcome.wanted_latency_samples,
        }
    }
}

/// Parses `--set key=value` pairs into policy params; numbers and booleans are typed.
pub fn parse_params(pairs: &[String]) -> Result<Map, String> {
    let mut map = Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("--set {pair:?}: expected KEY=VALUE"))?;
        let value = if let Ok(i) = v.parse::<i64>() {
            i.into()
        } else if let Ok(f) = v.parse::<f64>() {
            // `nan` or `inf` would silently disable a threshold (every comparison with NaN
            // is false).
            if !f.is_finite() {
                return Err(format!("--set {pair:?}: {v:?} is not a finite number"));
            }
            f.into()
        } else if let Ok(b) = v.parse::<bool>() {
            b.into()
        } else {
            v.into()
        };
        map.insert(k.trim().into(), value);
    }
    Ok(map)
}
