//! Evidence carried from one evaluation to the next: [`StepCounts`] (the step's counters) and
//! [`Evidence`] (what the anytime tests and `ctx.error_bounds` accumulate over the rollout),
//! stored as a few observations of each evaluation ([`EVIDENCE_KEYS`]).

use crate::decision::Observations;

/// Counters of the current step, as the facts give them (since the step started).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCounts {
    pub canary_requests: f64,
    pub canary_errors: f64,
    pub stable_requests: f64,
    pub stable_errors: f64,
}

impl StepCounts {
    pub const ZERO: StepCounts = StepCounts {
        canary_requests: 0.0,
        canary_errors: 0.0,
        stable_requests: 0.0,
        stable_errors: 0.0,
    };

    /// `None` unless every counter is finite, non-negative and errors ≤ requests: bad data
    /// adds no evidence either way.
    pub fn new(
        canary_requests: f64,
        canary_errors: f64,
        stable_requests: f64,
        stable_errors: f64,
    ) -> Option<StepCounts> {
        let ok = |n: f64, e: f64| n.is_finite() && e.is_finite() && e >= 0.0 && e <= n;
        (ok(canary_requests, canary_errors) && ok(stable_requests, stable_errors)).then_some(
            StepCounts {
                canary_requests,
                canary_errors,
                stable_requests,
                stable_errors,
            },
        )
    }
}

/// What one evaluation hands to the next so that evidence accumulates over the whole rollout
/// instead of restarting at each step.
///
/// It is recorded as a few observations of the evaluation ([`Evidence::record`]), so it lives
/// in the rollout state in the cluster and survives a restart of the plugin, and the state
/// grows by these numbers per evaluation, never by the rollout's length: only the most
/// recent evaluation that carries them is read back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evidence {
    /// Step index of the evaluation that recorded it.
    pub step: usize,
    /// Log-likelihood ratio of the error-share test over the rollout so far, and the part of
    /// it that comes from the steps before `step`.
    pub error_llr: f64,
    pub error_llr_done: f64,
    /// Canary requests and errors over the rollout so far, and before `step`.
    pub canary_requests: f64,
    pub canary_requests_done: f64,
    pub canary_errors: f64,
    pub canary_errors_done: f64,
    /// Evaluations that used the evidence so far, this one included: tests checked on
    /// sliding windows spend their α per look ([`spent_alpha`](super::spent_alpha)).
    pub looks: u64,
    /// The step's counters up to which the error test has bet (errors as whole numbers:
    /// a fraction waits for the next look). `None` when the evidence was recorded by a
    /// version that recomputed the step's ratio from its counters instead of betting look by
    /// look; the next error test continues from that ratio.
    pub tested: Option<StepCounts>,
}

impl Default for Evidence {
    fn default() -> Self {
        Evidence {
            step: 0,
            error_llr: 0.0,
            error_llr_done: 0.0,
            canary_requests: 0.0,
            canary_requests_done: 0.0,
            canary_errors: 0.0,
            canary_errors_done: 0.0,
            looks: 0,
            tested: Some(StepCounts::ZERO),
        }
    }
}

/// Observation names of [`Evidence`], in field order (`tested` as its four counters).
pub const EVIDENCE_KEYS: [&str; 12] = [
    "evidence_step",
    "evidence_error_llr",
    "evidence_error_llr_done",
    "evidence_canary_requests",
    "evidence_canary_requests_done",
    "evidence_canary_errors",
    "evidence_canary_errors_done",
    "evidence_looks",
    "evidence_tested_canary_requests",
    "evidence_tested_canary_errors",
    "evidence_tested_stable_requests",
    "evidence_tested_stable_errors",
];

impl Evidence {
    /// Reads the evidence back from an evaluation's observations; `None` when that evaluation
    /// did not record it (or recorded nonsense).
    pub fn from_observations(obs: &Observations) -> Option<Evidence> {
        let get = |k: &str| obs.get(k).copied().flatten().filter(|v| v.is_finite());
        let step = get(EVIDENCE_KEYS[0]).filter(|s| *s >= 0.0)?;
        Some(Evidence {
            step: step as usize,
            error_llr: get(EVIDENCE_KEYS[1])?,
            error_llr_done: get(EVIDENCE_KEYS[2])?,
            canary_requests: get(EVIDENCE_KEYS[3])?,
            canary_requests_done: get(EVIDENCE_KEYS[4])?,
            canary_errors: get(EVIDENCE_KEYS[5])?,
            canary_errors_done: get(EVIDENCE_KEYS[6])?,
            looks: get(EVIDENCE_KEYS[7]).unwrap_or(0.0).max(0.0) as u64,
            tested: (|| {
                StepCounts::new(
                    get(EVIDENCE_KEYS[8])?,
                    get(EVIDENCE_KEYS[9])?,
                    get(EVIDENCE_KEYS[10])?,
                    get(EVIDENCE_KEYS[11])?,
                )
            })(),
        })
    }

    /// The most recent evidence in `history` (oldest first). An evaluation whose policy threw
    /// before it ran a test records none; the one before it still counts.
    pub fn latest(history: &[Observations]) -> Option<Evidence> {
        history.iter().rev().find_map(Evidence::from_observations)
    }

    pub fn record(&self, obs: &mut Observations) {
        let t = self.tested;
        let values = [
            Some(self.step as f64),
            Some(self.error_llr),
            Some(self.error_llr_done),
            Some(self.canary_requests),
            Some(self.canary_requests_done),
            Some(self.canary_errors),
            Some(self.canary_errors_done),
            Some(self.looks as f64),
            t.map(|t| t.canary_requests),
            t.map(|t| t.canary_errors),
            t.map(|t| t.stable_requests),
            t.map(|t| t.stable_errors),
        ];
        for (k, v) in EVIDENCE_KEYS.iter().zip(values) {
            obs.insert(k.to_string(), v);
        }
    }

    /// Continues `previous` (`None` at the first evaluation) with this evaluation's step and
    /// the canary's step counters. A new step — or counters that went backwards, as after a
    /// reset — closes the previous segment: what it held becomes "done". Missing counters
    /// keep the evidence as it was.
    pub fn continue_from(
        previous: Option<Evidence>,
        step: usize,
        canary: Option<(f64, f64)>,
    ) -> Evidence {
        let mut e = previous.unwrap_or(Evidence {
            step,
            ..Evidence::default()
        });
        let seen_in_segment = e.canary_requests - e.canary_requests_done;
        let new_segment = e.step != step || canary.is_some_and(|(n, _)| n + 0.5 < seen_in_segment);
        if new_segment {
            e.step = step;
            e.error_llr_done = e.error_llr;
            e.canary_requests_done = e.canary_requests;
            e.canary_errors_done = e.canary_errors;
            e.tested = Some(StepCounts::ZERO);
        }
        if let Some((n, x)) = canary {
            e.canary_requests = e.canary_requests_done + n;
            e.canary_errors = e.canary_errors_done + x;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_through_observations() {
        let ev = Evidence {
            step: 2,
            error_llr: -3.5,
            error_llr_done: -1.25,
            canary_requests: 1234.0,
            canary_requests_done: 1000.0,
            canary_errors: 7.0,
            canary_errors_done: 5.0,
            looks: 42,
            tested: StepCounts::new(234.0, 2.0, 4000.0, 41.0),
        };
        let mut obs = Observations::new();
        obs.insert("canary_requests".into(), Some(1.0));
        ev.record(&mut obs);
        assert_eq!(Evidence::from_observations(&obs), Some(ev));
        // The latest evaluation that carries it wins; ones without it are skipped.
        let older = Observations::new();
        let mut newer = Observations::new();
        Evidence { step: 3, ..ev }.record(&mut newer);
        let history = vec![obs.clone(), newer, older];
        assert_eq!(Evidence::latest(&history).map(|e| e.step), Some(3));
        assert_eq!(Evidence::latest(&[]), None);
        obs.insert(EVIDENCE_KEYS[1].into(), None);
        assert_eq!(Evidence::from_observations(&obs), None);
    }
}
