//! Anytime-valid error test over a whole rollout ([`AnytimeErrorTest`], `ctx.error_test`).
//!
//! Why: a test that restarts at every step and is checked at every evaluation spends its α
//! once per step, and a confidence bound checked every 30 s is exceeded by luck sooner or
//! later. The test here is built on a nonnegative supermartingale (the likelihood ratio of
//! the error-share test, bet look by look) under the null hypothesis, so by Ville's
//! inequality the chance that it *ever* crosses 1/α — at any evaluation, over all steps — is
//! at most α. Evidence is carried from one evaluation to the next in [`Evidence`], a handful
//! of numbers that the policy layer records with each evaluation's observations.

use super::bounds::rate_below;
use super::evidence::{Evidence, StepCounts};
use super::{
    MIN_CANARY_ERRORS_TO_FAIL, TestOutcome, Verdict, count_u64, fmt_count, fmt_pct,
    ratio_test_config_error, valid_prob,
};

/// Log-likelihood ratio of the error-share test for one step (constant weight): H1 "canary
/// error rate = `ratio` × stable" against H0 "equal rates", given which version produced
/// each error. `None` without traffic on both sides.
pub fn share_llr(c: &StepCounts, ratio: f64) -> Option<f64> {
    if c.canary_requests <= 0.0 || c.stable_requests <= 0.0 {
        return None;
    }
    let w = c.canary_requests / (c.canary_requests + c.stable_requests);
    if !(w > 0.0 && w < 1.0) {
        return None;
    }
    let p1 = ratio * w / (ratio * w + 1.0 - w);
    Some(c.canary_errors * (p1 / w).ln() + c.stable_errors * ((1.0 - p1) / (1.0 - w)).ln())
}

/// The same likelihood ratio when stable serves nothing (the 100% step): the canary's
/// errors against a known baseline rate `p0`, H1 = `ratio` × p0. Why this is the same test:
/// it is the limit of [`share_llr`] as the canary's share goes to 1 with p0 known.
/// `None` when ratio × p0 ≥ 1 or p0 is not a rate.
pub fn baseline_llr(canary_errors: f64, canary_requests: f64, p0: f64, ratio: f64) -> Option<f64> {
    let p1 = ratio * p0;
    if !(valid_prob(p0) && p1 < 1.0) || canary_requests <= 0.0 {
        return None;
    }
    Some(
        canary_errors * ratio.ln()
            + (canary_requests - canary_errors) * ((1.0 - p1) / (1.0 - p0)).ln(),
    )
}

/// Anytime-valid error test over the whole rollout: the error-share likelihood ratio of each
/// step, added up across steps without restarting (at 100%, where stable has no traffic,
/// against the stable baseline rate carried from the earlier steps).
///
/// It is computed as a bet, look by look: each look's new errors are taken one at a time in
/// a seeded random order, and the stake on each is the likelihood ratio's, capped so that the
/// wealth lands on 1/α instead of past it ([`bet_in_order`]). Any stake keeps the wealth a
/// supermartingale under H0, so the guarantee below is unchanged; the cap only removes the
/// overshoot that cost a regressed canary about 6% more requests at 5% weight.
///
/// `Fail` when the accumulated ratio reaches 1/α — the chance of that for a canary as good as
/// stable is at most α for the whole rollout, however often it is evaluated. `Pass` (advance)
/// when it falls to β, or when the canary's own error rate over the rollout is below
/// `max_error_rate` by a time-uniform bound; a pass does not end the test: evidence keeps
/// accumulating at the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct AnytimeErrorTest {
    /// H1: canary error rate = `max_ratio` × stable's (must be > 1). Larger ratios are found
    /// faster; it is a parameter of the rollout and must not change during it.
    pub max_ratio: f64,
    pub alpha: f64,
    /// Pass (advance) when the ratio falls to β. Why lenient by default (0.2): a pass does
    /// not end the test, so a bad canary that advances by luck is still caught at the next
    /// step, while a strict β keeps healthy low-traffic canaries at the first step for hours.
    pub beta: f64,
    /// Canary requests of the current step before a Pass.
    pub min_canary_requests: u64,
    /// Absolute tolerance of the pass arm (0 disables it).
    pub max_error_rate: f64,
}

impl Default for AnytimeErrorTest {
    fn default() -> Self {
        AnytimeErrorTest {
            max_ratio: 2.0,
            alpha: 0.01,
            beta: 0.2,
            min_canary_requests: 500,
            max_error_rate: 0.01,
        }
    }
}

impl AnytimeErrorTest {
    /// Continues `previous` evidence with this evaluation's `step` and `counts` and judges it.
    /// `baseline_rate` is stable's error rate from earlier steps, used when stable has no
    /// traffic. Returns the evidence to record and the outcome.
    pub fn evaluate(
        &self,
        previous: Option<Evidence>,
        step: usize,
        counts: Option<StepCounts>,
        baseline_rate: Option<f64>,
    ) -> (Evidence, TestOutcome) {
        let mut ev = Evidence::continue_from(
            previous,
            step,
            counts.map(|c| (c.canary_requests, c.canary_errors)),
        );
        let samples = count_u64(ev.canary_requests);
        let config =
            ratio_test_config_error(self.max_ratio, self.alpha, self.beta, self.max_error_rate);
        if let Some(e) = config {
            return (
                ev,
                TestOutcome::inconclusive(samples, format!("invalid test configuration: {e}")),
            );
        }
        let Some(c) = counts else {
            return (
                ev,
                TestOutcome::inconclusive(
                    samples,
                    "no data: step counters missing or invalid; evidence so far kept",
                ),
            );
        };
        let k = self.max_ratio;
        let upper = (1.0 / self.alpha).ln();
        let (bet, against) = if c.stable_requests > 0.0 {
            (bet_on_share(&mut ev, &c, k, upper), "stable".to_string())
        } else {
            let p0 = baseline_rate.filter(|p| p.is_finite());
            (
                p0.and_then(|p0| bet_on_baseline(&mut ev, &c, p0, k, upper)),
                match p0 {
                    Some(p0) => format!("the stable baseline {}", fmt_pct(p0)),
                    None => "no baseline".to_string(),
                },
            )
        };
        let Some(()) = bet else {
            return (
                ev,
                TestOutcome::inconclusive(
                    samples,
                    format!(
                        "no data: {} canary and {} stable requests in this step, {against}; evidence so far kept",
                        fmt_count(c.canary_requests),
                        fmt_count(c.stable_requests)
                    ),
                ),
            );
        };
        let lower = self.beta.ln();
        let llr = ev.error_llr;
        let (x, n) = (ev.canary_errors, ev.canary_requests);
        let step_ratio = (c.stable_errors > 0.0
            && c.canary_requests > 0.0
            && c.stable_requests > 0.0)
            .then(|| (c.canary_errors / c.canary_requests) / (c.stable_errors / c.stable_requests));
        let head = format!(
            "canary {}/{} errors ({}) over the rollout vs {against}{}, LLR {:.2} (fail ≥ {:.2}, pass ≤ {:.2})",
            fmt_count(x),
            fmt_count(n),
            fmt_pct(if n > 0.0 { x / n } else { 0.0 }),
            if c.stable_requests > 0.0 {
                format!(
                    " {}/{} ({}) this step",
                    fmt_count(c.stable_errors),
                    fmt_count(c.stable_requests),
                    fmt_pct(c.stable_errors / c.stable_requests)
                )
            } else {
                String::new()
            },
            llr,
            upper,
            lower
        );
        let out = |verdict, why: String| TestOutcome {
            verdict,
            statistic: llr,
            p_value: None,
            estimate: step_ratio,
            samples,
            reason: format!("{head}: {why}"),
        };
        // A capped bet lands on the bound itself (`bet_on_share` snaps it there).
        if llr >= upper && x >= MIN_CANARY_ERRORS_TO_FAIL {
            let why = format!(
                "canary error rate is likely ≥ {k}× stable (α {})",
                self.alpha
            );
            return (ev, out(Verdict::Fail, why));
        }
        let enough = c.canary_requests >= self.min_canary_requests as f64;
        if enough && llr <= lower {
            let why = format!("canary error rate is likely below {k}× stable");
            return (ev, out(Verdict::Pass, why));
        }
        if enough && self.max_error_rate > 0.0 && rate_below(x, n, self.max_error_rate, self.alpha)
        {
            let why = format!(
                "canary error rate is below the tolerance {} (time-uniform bound)",
                fmt_pct(self.max_error_rate)
            );
            return (ev, out(Verdict::Pass, why));
        }
        let why = if enough {
            "not yet decided".to_string()
        } else {
            format!(
                "not yet decided ({}/{} canary requests in this step)",
                fmt_count(c.canary_requests.floor()),
                self.min_canary_requests
            )
        };
        (ev, out(Verdict::Inconclusive, why))
    }
}

/// Above this many items in one look, the bet is one constant stake for the whole look (valid
/// and order-free, but it may overshoot the bound): walking them one by one would cost more
/// than it gains.
const MAX_ITEMS_BET_ONE_BY_ONE: f64 = 1_000_000.0;

/// The order in which one look's errors (or requests) are bet on. The counters only say how
/// many came from each version, so the order is drawn at random, from a seed that depends on
/// the evidence before the look and the number of items but not on which version produced
/// them: under H0 a random order of the look's items is distributed as the order they came
/// in, so betting on them one by one keeps the wealth a supermartingale. A seed instead of
/// real randomness makes a decision reproducible (`simulate`, a retried evaluation).
fn random_marks(ev: &Evidence, items: u64, marked: u64) -> Vec<bool> {
    use rand::SeedableRng;
    let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
    let tested = ev.tested.unwrap_or(StepCounts::ZERO);
    for v in [
        ev.step as u64,
        ev.looks,
        items,
        ev.error_llr.to_bits(),
        tested.canary_requests.to_bits(),
        tested.stable_requests.to_bits(),
    ] {
        seed = (seed ^ v)
            .wrapping_mul(0xBF58_476D_1CE4_E5B9)
            .rotate_left(31);
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut marks = vec![false; items as usize];
    for i in rand::seq::index::sample(&mut rng, items as usize, marked as usize) {
        marks[i] = true;
    }
    marks
}

/// Bets the log-wealth `log_wealth` on `marks` in their order (a mark is a canary error) and
/// returns it. `odds(j, marked_so_far)` gives the item's probability `p` of being marked under
/// H0 and `p1` under H1; no bet when `p` is 0 or 1. The stake is the likelihood ratio's,
/// capped so that a marked item lifts the wealth exactly onto `upper` and not past it. Why the
/// cap: wealth past 1/α buys no earlier decision, and the smaller stake loses less when the
/// item is unmarked — the overshoot of the last error was about 0.3 nats (6% more canary
/// requests) at 5% weight. A won capped bet is set onto `upper` itself, not a rounding error
/// below it, where the next stake would be ~0 and the test could never fail.
fn bet_in_order(
    mut log_wealth: f64,
    upper: f64,
    marks: Vec<bool>,
    odds: impl Fn(usize, f64) -> (f64, f64),
) -> f64 {
    let mut marked_so_far = 0.0;
    for (j, marked) in marks.into_iter().enumerate() {
        if log_wealth >= upper {
            break;
        }
        let (p, p1) = odds(j, marked_so_far);
        if p > 0.0 && p < 1.0 {
            let full = (p1 - p) / (p * (1.0 - p));
            let to_bound = ((upper - log_wealth).exp() - 1.0) / (1.0 - p);
            let capped = to_bound < full;
            let stake = if capped { to_bound.max(0.0) } else { full };
            log_wealth = match (marked, capped) {
                (true, true) => upper,
                (true, false) => log_wealth + (stake * (1.0 - p)).ln_1p(),
                (false, _) => log_wealth + (-stake * p).ln_1p(),
            };
        }
        if marked {
            marked_so_far += 1.0;
        }
    }
    log_wealth
}

/// Multiplies the error-share test's wealth by this look's errors (since `ev.tested`), one
/// error at a time in a random order: under H0 (equal error rates) the look's errors are a
/// random subset of its requests, so the next error is the canary's with the probability of
/// an urn of the look's requests without the errors already drawn; the bet is the likelihood
/// ratio of H1 (the canary's odds of each error × `ratio`), capped at the bound. `None`
/// without canary and stable traffic in the step.
fn bet_on_share(ev: &mut Evidence, c: &StepCounts, ratio: f64, upper: f64) -> Option<()> {
    if c.canary_requests <= 0.0 || c.stable_requests <= 0.0 {
        return None;
    }
    let Some(t) = ev.tested else {
        // Evidence of an older version: the step so far as one bet, as it computed it.
        ev.error_llr = ev.error_llr_done + share_llr(c, ratio)?;
        ev.tested = Some(*c);
        return Some(());
    };
    let (dc, ds) = (
        c.canary_requests - t.canary_requests,
        c.stable_requests - t.stable_requests,
    );
    let (k, m) = (
        (c.canary_errors - t.canary_errors).floor(),
        (c.stable_errors - t.stable_errors).floor(),
    );
    if !(dc >= 0.0 && ds >= 0.0 && k >= 0.0 && m >= 0.0 && k <= dc && m <= ds) {
        // Counters that went backwards or disagree: no bet on this look (a stake of 0 is
        // always valid), and the next look starts from here.
        ev.tested = Some(*c);
        return Some(());
    }
    let n = k + m;
    // Drawn before `tested` moves on: the seed must not know this look's errors.
    let marks =
        (n > 0.0 && n <= MAX_ITEMS_BET_ONE_BY_ONE).then(|| random_marks(ev, n as u64, k as u64));
    ev.tested = Some(StepCounts {
        canary_requests: c.canary_requests,
        canary_errors: t.canary_errors + k,
        stable_requests: c.stable_requests,
        stable_errors: t.stable_errors + m,
    });
    let Some(marks) = marks else {
        if n > 0.0 {
            ev.error_llr += share_llr(&StepCounts::new(dc, k, ds, m)?, ratio)?;
        }
        return Some(());
    };
    let total = dc + ds;
    ev.error_llr = bet_in_order(ev.error_llr, upper, marks, |j, drawn_canary| {
        let p = (dc - drawn_canary) / (total - j as f64);
        (p, ratio * p / (ratio * p + 1.0 - p))
    });
    Some(())
}

/// The same at 100%, where stable serves nothing: this look's canary requests against the
/// baseline rate `p0` (H1: `ratio` × p0), one request at a time in a random order when the
/// look could reach the bound, in one closed form otherwise (far from the bound the cap never
/// binds and the order does not matter). `None` when `p0` is not a rate or ratio × p0 ≥ 1.
fn bet_on_baseline(
    ev: &mut Evidence,
    c: &StepCounts,
    p0: f64,
    ratio: f64,
    upper: f64,
) -> Option<()> {
    let p1 = ratio * p0;
    if !(valid_prob(p0) && p1 < 1.0) || c.canary_requests <= 0.0 {
        return None;
    }
    let Some(t) = ev.tested else {
        ev.error_llr =
            ev.error_llr_done + baseline_llr(c.canary_errors, c.canary_requests, p0, ratio)?;
        ev.tested = Some(*c);
        return Some(());
    };
    let dn = c.canary_requests - t.canary_requests;
    let k = (c.canary_errors - t.canary_errors).floor();
    if !(dn >= 0.0 && k >= 0.0 && k <= dn) {
        ev.tested = Some(*c);
        return Some(());
    }
    let tested = |requests: f64| StepCounts {
        canary_requests: requests,
        canary_errors: t.canary_errors + k,
        ..*c
    };
    let success = ((1.0 - p1) / (1.0 - p0)).ln();
    let items = dn.floor();
    if ev.error_llr + k * ratio.ln() < upper || items > MAX_ITEMS_BET_ONE_BY_ONE || items < k {
        ev.error_llr += k * ratio.ln() + (dn - k) * success;
        ev.tested = Some(tested(c.canary_requests));
        return Some(());
    }
    let marks = random_marks(ev, items as u64, k as u64);
    ev.error_llr = bet_in_order(ev.error_llr, upper, marks, |_, _| (p0, p1));
    ev.tested = Some(tested(t.canary_requests + items));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::{SplitMix64, close};

    fn poisson_ish(rng: &mut SplitMix64, n: u64, p: f64) -> f64 {
        rng.binomial(n, p) as f64
    }

    /// One simulated rollout through `weights` (interval by interval, `per_interval`
    /// requests in total), checking the anytime test at every interval and never stopping
    /// for a pass. Returns (failed, canary requests at the fail).
    fn rollout_fails(
        rng: &mut SplitMix64,
        test: &AnytimeErrorTest,
        weights: &[f64],
        intervals_per_step: u32,
        per_interval: u64,
        stable_rate: f64,
        canary_rate: f64,
    ) -> Option<f64> {
        let mut ev = None;
        for (step, w) in weights.iter().enumerate() {
            let (mut cr, mut ce, mut sr, mut se) = (0.0, 0.0, 0.0, 0.0);
            let cn = (per_interval as f64 * w).round() as u64;
            let sn = per_interval - cn;
            for _ in 0..intervals_per_step {
                cr += cn as f64;
                sr += sn as f64;
                ce += poisson_ish(rng, cn, canary_rate);
                se += poisson_ish(rng, sn, stable_rate);
                let counts = StepCounts::new(cr, ce, sr, se);
                let (next, o) = test.evaluate(ev, step, counts, Some(stable_rate));
                ev = Some(next);
                if o.verdict == Verdict::Fail {
                    return Some(next.canary_requests);
                }
            }
        }
        None
    }

    #[test]
    fn anytime_error_test_type_one_error_under_continuous_monitoring() {
        // A/A at 1% errors through 5/25/50% and 100% (against the known baseline), checked
        // every interval, never stopping early: the share of runs that *ever* fail must stay
        // within α (+ simulation tolerance). A per-step SPRT restarted at the same α fails
        // more often, which is what the accumulated test is for.
        let test = AnytimeErrorTest::default();
        let mut rng = SplitMix64(0x5EED_0100);
        let runs = 400;
        let fails = (0..runs)
            .filter(|_| {
                rollout_fails(
                    &mut rng,
                    &test,
                    &[0.05, 0.25, 0.5, 1.0],
                    40,
                    400,
                    0.01,
                    0.01,
                )
                .is_some()
            })
            .count();
        let rate = fails as f64 / runs as f64;
        assert!(
            rate <= test.alpha + 0.01,
            "false-fail rate {rate} ({fails}/{runs})"
        );
    }

    #[test]
    fn anytime_error_test_detects_doubling_near_the_sprt_bound() {
        // 1% → 2% at 5% weight, 40 canary requests per interval: the mean canary requests
        // to fail is within 1.14× of Wald's expected sample number (≈1155 at α 0.01, power
        // 0.95; measured 1280, 1.11×). The gap is the Ville boundary ln(1/α) instead of
        // ln((1−β)/α) and the interval granularity. Without the capped stake the overshoot of
        // the last error (up to ln 1.9) made it 1339 (1.16×).
        let test = AnytimeErrorTest::default();
        let mut rng = SplitMix64(0x5EED_0101);
        let runs = 200;
        let found: Vec<f64> = (0..runs)
            .filter_map(|_| rollout_fails(&mut rng, &test, &[0.05], 400, 800, 0.01, 0.02))
            .collect();
        assert!(
            found.len() as f64 >= 0.95 * runs as f64,
            "detected {}/{runs}",
            found.len()
        );
        let mean = found.iter().sum::<f64>() / found.len() as f64;
        let w: f64 = 0.05;
        let p1 = 2.0 * w / (2.0 * w + 1.0 - w);
        let kl = (p1 * (p1 / w).ln() + (1.0 - p1) * ((1.0 - p1) / (1.0 - w)).ln())
            * (0.02 + 0.01 * (1.0 - w) / w);
        let wald = (0.95 * (0.95f64 / 0.01).ln() + 0.05 * (0.05f64 / 0.99).ln()) / kl;
        assert!(close(wald, 1155.0, 5.0), "Wald ESN {wald}");
        assert!(
            mean > wald && mean < 1.14 * wald,
            "mean {mean} vs Wald {wald}"
        );
    }

    #[test]
    fn anytime_error_test_accumulates_across_steps() {
        // Far from the bound, a look's bet is close to the step's likelihood ratio (the urn of
        // the look's requests instead of a binomial share), and steps add up.
        let test = AnytimeErrorTest::default();
        let a = StepCounts::new(1000.0, 20.0, 19_000.0, 190.0).unwrap();
        let b = StepCounts::new(5000.0, 50.0, 15_000.0, 150.0).unwrap();
        let (ev, o) = test.evaluate(None, 0, Some(a), None);
        let la = share_llr(&a, 2.0).unwrap();
        // (210 errors in one look: the urn's odds drift as errors are drawn.)
        assert!(close(o.statistic, la, 0.25), "{} vs {la}", o.statistic);
        let (ev, o) = test.evaluate(Some(ev), 1, Some(b), None);
        let want = la + share_llr(&b, 2.0).unwrap();
        assert!(close(o.statistic, want, 0.5), "{} vs {want}", o.statistic);
        assert_eq!(ev.canary_requests, 6000.0);
        assert_eq!(ev.canary_errors, 70.0);
        assert_eq!((ev.canary_requests_done, ev.step), (1000.0, 1));
        assert_eq!(ev.tested, Some(b));
        // A later look of the same step bets on what is new since the last one only.
        let b2 = StepCounts::new(6000.0, 60.0, 18_000.0, 180.0).unwrap();
        let (ev2, o2) = test.evaluate(Some(ev), 1, Some(b2), None);
        let look = StepCounts::new(1000.0, 10.0, 3000.0, 30.0).unwrap();
        let want = o.statistic + share_llr(&look, 2.0).unwrap();
        assert!(close(o2.statistic, want, 0.1), "{} vs {want}", o2.statistic);
        assert_eq!(ev2.canary_requests, 7000.0);
        // Missing counters keep the evidence and are inconclusive, never a pass.
        let (ev3, o3) = test.evaluate(Some(ev2), 1, None, None);
        assert_eq!(o3.verdict, Verdict::Inconclusive);
        assert!(o3.reason.contains("no data"), "{}", o3.reason);
        assert_eq!(ev3, ev2);
        // Counters that go backwards within a step (a reset) start a new segment, whose
        // counters are all new.
        let c = StepCounts::new(100.0, 1.0, 300.0, 3.0).unwrap();
        let (ev4, _) = test.evaluate(Some(ev2), 1, Some(c), None);
        assert_eq!(ev4.canary_requests_done, 7000.0);
        assert_eq!(ev4.canary_requests, 7100.0);
        assert_eq!(ev4.tested, Some(c));
        // Stable's counters going backwards alone: no bet on that look.
        let d = StepCounts::new(6500.0, 65.0, 100.0, 1.0).unwrap();
        let (ev5, o5) = test.evaluate(Some(ev2), 1, Some(d), None);
        assert_eq!(o5.statistic, ev2.error_llr);
        assert_eq!(ev5.tested, Some(d));
        // Fractions of an error wait for the next look.
        let f = StepCounts::new(6100.0, 61.5, 18_300.0, 182.7).unwrap();
        let (ev6, _) = test.evaluate(Some(ev2), 1, Some(f), None);
        let t = ev6.tested.unwrap();
        assert_eq!((t.canary_errors, t.stable_errors), (61.0, 182.0));
    }

    #[test]
    fn anytime_error_test_continues_evidence_of_an_older_version() {
        // Evidence recorded before looks were bet on one by one carries no `tested`: the step
        // so far is one bet, as that version computed it, and looks go on from there.
        let test = AnytimeErrorTest::default();
        let old = Evidence {
            step: 0,
            error_llr: 0.7,
            error_llr_done: 0.5,
            canary_requests: 900.0,
            canary_requests_done: 0.0,
            canary_errors: 9.0,
            canary_errors_done: 0.0,
            looks: 7,
            tested: None,
        };
        let c = StepCounts::new(1000.0, 10.0, 19_000.0, 190.0).unwrap();
        let (ev, o) = test.evaluate(Some(old), 0, Some(c), None);
        let want = 0.5 + share_llr(&c, 2.0).unwrap();
        assert!(close(o.statistic, want, 1e-12), "{} vs {want}", o.statistic);
        assert_eq!(ev.tested, Some(c));
    }

    #[test]
    fn anytime_error_test_bets_land_on_the_bound() {
        // A canary with every error: the wealth reaches 1/α exactly, never past it (the capped
        // stake), and the same counters always give the same decision (a seeded order).
        let test = AnytimeErrorTest::default();
        let upper = (1.0 / test.alpha).ln();
        let mut ev = None;
        let mut failed = None;
        for look in 1..=40 {
            let n = f64::from(look);
            let c = StepCounts::new(25.0 * n, 2.0 * n, 475.0 * n, 5.0 * n).unwrap();
            let (next, o) = test.evaluate(ev, 0, Some(c), None);
            let (again, o2) = test.evaluate(ev, 0, Some(c), None);
            assert_eq!((next, o.statistic), (again, o2.statistic));
            assert!(o.statistic <= upper + 1e-9, "{} > {upper}", o.statistic);
            ev = Some(next);
            if o.verdict == Verdict::Fail {
                failed = Some(o.statistic);
                break;
            }
        }
        let at = failed.expect("a canary with every error fails");
        assert_eq!(at, upper, "a won capped bet lands on the bound");
        // At 100% against the baseline as well.
        let mut ev = None;
        for look in 1..=40 {
            let n = f64::from(look);
            let c = StepCounts::new(500.0 * n, 20.0 * n, 0.0, 0.0).unwrap();
            let (next, o) = test.evaluate(ev, 3, Some(c), Some(0.01));
            assert!(o.statistic <= upper + 1e-9, "{} > {upper}", o.statistic);
            ev = Some(next);
            if o.verdict == Verdict::Fail {
                assert_eq!(o.statistic, upper);
                return;
            }
        }
        panic!("a canary with 4% errors against a 1% baseline did not fail");
    }

    #[test]
    fn anytime_error_test_one_look_is_a_fair_bet_under_h0() {
        // The heart of the validity: whatever the wealth before a look, its expected factor
        // under H0 is at most 1 — averaged here over the look's possible errors (which
        // requests failed is a random subset) and over the seeded orders. Near the bound the
        // stake is capped, far from it it is the likelihood ratio's.
        let test = AnytimeErrorTest::default();
        let upper = (1.0 / test.alpha).ln();
        let mut rng = SplitMix64(0x5EED_0102);
        for start in [0.0, upper - 0.3, upper - 1.0, -2.0] {
            let runs = 20_000;
            let mut sum = 0.0;
            for look in 0..runs {
                let prev = Evidence {
                    error_llr: start,
                    looks: look,
                    ..Evidence::default()
                };
                // 25 canary and 475 stable requests, each failing with 1%.
                let k = rng.binomial(25, 0.01) as f64;
                let m = rng.binomial(475, 0.01) as f64;
                let c = StepCounts::new(25.0, k, 475.0, m).unwrap();
                let (ev, _) = test.evaluate(Some(prev), 0, Some(c), None);
                sum += (ev.error_llr - start).exp();
            }
            let mean = sum / runs as f64;
            assert!(mean < 1.01, "start {start}: mean factor {mean}");
        }
    }

    #[test]
    fn anytime_error_test_at_full_weight_uses_the_baseline() {
        // At 100% stable has no traffic: each canary error adds ln(k), each success
        // ln((1 − k·p0)/(1 − p0)).
        let test = AnytimeErrorTest::default();
        let c = StepCounts::new(2000.0, 20.0, 0.0, 0.0).unwrap();
        let (_, o) = test.evaluate(None, 3, Some(c), Some(0.01));
        let want = 20.0 * 2f64.ln() + 1980.0 * (0.98f64 / 0.99).ln();
        assert!(close(o.statistic, want, 1e-9), "{}", o.statistic);
        assert_eq!(baseline_llr(20.0, 2000.0, 0.01, 2.0), Some(want));
        // Without a baseline there is nothing to compare with.
        let (_, o) = test.evaluate(None, 3, Some(c), None);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert_eq!(baseline_llr(1.0, 10.0, 0.6, 2.0), None);
    }

    #[test]
    fn anytime_error_test_verdicts() {
        let test = AnytimeErrorTest::default();
        // A clearly worse canary fails; a clean one passes after min requests.
        let bad = StepCounts::new(2000.0, 80.0, 38_000.0, 380.0).unwrap();
        assert_eq!(
            test.evaluate(None, 0, Some(bad), None).1.verdict,
            Verdict::Fail
        );
        let good = StepCounts::new(20_000.0, 100.0, 380_000.0, 1900.0).unwrap();
        let (_, o) = test.evaluate(None, 0, Some(good), None);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        let few = StepCounts::new(100.0, 0.0, 1900.0, 10.0).unwrap();
        let (_, o) = test.evaluate(None, 0, Some(few), None);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("100/500"), "{}", o.reason);
        let invalid = AnytimeErrorTest {
            max_ratio: 0.5,
            ..Default::default()
        };
        assert_eq!(
            invalid.evaluate(None, 0, Some(bad), None).1.verdict,
            Verdict::Inconclusive
        );
        assert!(StepCounts::new(10.0, 11.0, 10.0, 0.0).is_none());
        assert!(StepCounts::new(f64::NAN, 0.0, 10.0, 0.0).is_none());
    }
}
