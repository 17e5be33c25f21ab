//! Rank tests for continuous metrics such as latency: Mann–Whitney U with a Hodges–Lehmann
//! shift estimate ([`RankTest`]), and its sequential form ([`sequential_rank_test`]) that the
//! shipped policies call through `ctx.latency_test` and `ctx.latency_check`.

use super::bounds::spent_alpha;
use super::distributions::{normal_cdf, quantile};
use super::{TestOutcome, Verdict, fmt_p, valid_prob};
use std::cmp::Ordering;

/// Rank test for continuous metrics (latency): is the canary stochastically
/// greater (slower) than stable, by a margin that matters?
///
/// Why rank-based: latency is skewed and heavy-tailed; ranks make the test
/// distribution-free and robust to outliers. Why the extra shift threshold:
/// with thousands of samples a 1% slowdown is "significant" but harmless, so a
/// Fail needs both significance and a practically relevant Hodges–Lehmann
/// shift.
#[derive(Debug, Clone, PartialEq)]
pub struct RankTest {
    /// One-sided significance level.
    pub alpha: f64,
    /// Finite samples required on *each* side before any verdict.
    pub min_samples: usize,
    /// Tolerated shift relative to |median(stable)|, e.g. 0.10 = +10%.
    pub max_shift: f64,
}

impl Default for RankTest {
    fn default() -> Self {
        RankTest {
            alpha: 0.05,
            min_samples: 20,
            max_shift: 0.10,
        }
    }
}

/// Mann–Whitney U statistic details (canary = first sample).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MannWhitney {
    /// U of the first sample: number of pairs (x_i, y_j) with x_i > y_j,
    /// ties counting ½.
    pub u: f64,
    /// Continuity-corrected z for the alternative "first sample greater".
    pub z: f64,
    /// One-sided p-value (normal approximation, tie-corrected variance).
    pub p_value: f64,
}

/// One-sided Mann–Whitney U test "x stochastically greater than y", normal
/// approximation with tie correction and continuity correction (matches
/// `scipy.stats.mannwhitneyu(x, y, alternative="greater", method="asymptotic")`).
/// Inputs must be finite; returns `None` if either side is empty or any
/// value is non-finite.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> Option<MannWhitney> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let n1 = x.len() as f64;
    let n2 = y.len() as f64;
    let n = n1 + n2;
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    // partial_cmp (not total_cmp) so that -0.0 and 0.0 tie; all values finite.
    all.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(Ordering::Equal));
    let mut rank_sum_x = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < all.len() {
        let mut j = i + 1;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i) as f64;
        let avg_rank = (i + 1 + j) as f64 / 2.0; // ranks i+1..=j
        let in_x = all[i..j].iter().filter(|e| e.1).count() as f64;
        rank_sum_x += avg_rank * in_x;
        tie_term += t * t * t - t;
        i = j;
    }
    let u = rank_sum_x - n1 * (n1 + 1.0) / 2.0;
    let mu = n1 * n2 / 2.0;
    let var = if n > 1.0 {
        n1 * n2 / 12.0 * ((n + 1.0) - tie_term / (n * (n - 1.0)))
    } else {
        0.0
    };
    let (z, p) = if var > 0.0 {
        let z = (u - mu - 0.5) / var.sqrt();
        (z, normal_cdf(-z))
    } else {
        // All values tied: no evidence of any difference.
        (0.0, 1.0)
    };
    Some(MannWhitney { u, z, p_value: p })
}

/// Hodges–Lehmann two-sample shift estimate: median of all pairwise
/// differences x_i − y_j. Returns `None` if either side is empty or contains
/// non-finite values.
///
/// Computed exactly without materialising the n·m differences: a binary search
/// over the ordered bit patterns of f64 with an O(n + m) two-pointer count per
/// step (≤ 64 steps), so 10k × 10k inputs cost ~1M operations after sorting.
pub fn hodges_lehmann(x: &[f64], y: &[f64]) -> Option<f64> {
    if x.is_empty() || y.is_empty() || x.iter().chain(y).any(|v| !v.is_finite()) {
        return None;
    }
    let mut xs = x.to_vec();
    let mut ys = y.to_vec();
    xs.sort_by(f64::total_cmp);
    ys.sort_by(f64::total_cmp);
    let m = xs.len() as u128 * ys.len() as u128;
    let k_lo = m.div_ceil(2); // 1-based order statistic(s) forming the median
    let k_hi = m / 2 + 1;
    let a = kth_difference(&xs, &ys, k_lo);
    let b = if k_hi == k_lo {
        a
    } else {
        kth_difference(&xs, &ys, k_hi)
    };
    Some(0.5 * a + 0.5 * b + 0.0)
}

/// Monotone map f64 → u64 (for non-NaN values) so integer order = float order.
fn f64_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

fn key_f64(k: u64) -> f64 {
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// Number of pairs with xs[i] − ys[j] ≤ d (both sorted ascending).
fn count_le(xs: &[f64], ys: &[f64], d: f64) -> u128 {
    let mut j = 0usize;
    let mut count = 0u128;
    for &xi in xs {
        // For fixed i the qualifying j form a suffix whose start only moves right
        // as xi grows (floating subtraction is monotone in each argument).
        while j < ys.len() && xi - ys[j] > d {
            j += 1;
        }
        count += (ys.len() - j) as u128;
    }
    count
}

/// k-th smallest (1-based) pairwise difference xs[i] − ys[j].
fn kth_difference(xs: &[f64], ys: &[f64], k: u128) -> f64 {
    let mut lo = f64_key(xs[0] - ys[ys.len() - 1]);
    let mut hi = f64_key(xs[xs.len() - 1] - ys[0]);
    // Invariant: count_le(key_f64(hi)) ≥ k; find the smallest such key.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count_le(xs, ys, key_f64(mid)) >= k {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    key_f64(hi)
}

impl RankTest {
    /// One-sided Mann–Whitney U test "canary latency stochastically greater
    /// than stable" (normal approximation, tie and continuity corrected) with
    /// the Hodges–Lehmann shift (canary − stable) as `estimate`.
    ///
    /// Non-finite samples are dropped and counted in the reason. Fewer than
    /// `min_samples` finite samples on either side → `Inconclusive`. `Fail`
    /// when p < alpha AND shift > max_shift × |median(stable)|; `Pass`
    /// otherwise (including a canary that is faster).
    pub fn evaluate(&self, canary: &[f64], stable: &[f64]) -> TestOutcome {
        let c: Vec<f64> = canary.iter().copied().filter(|v| v.is_finite()).collect();
        let s: Vec<f64> = stable.iter().copied().filter(|v| v.is_finite()).collect();
        let samples = c.len() as u64;
        let dropped = (canary.len() - c.len()) + (stable.len() - s.len());
        let dropped_txt = if dropped > 0 {
            format!(", {dropped} non-finite samples dropped")
        } else {
            String::new()
        };
        if !(valid_prob(self.alpha) && self.max_shift.is_finite() && self.max_shift >= 0.0) {
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "invalid test configuration: alpha={} max_shift={}",
                    self.alpha, self.max_shift
                ),
            );
        }
        let need = self.min_samples.max(1);
        if c.len() < need || s.len() < need {
            let what = if c.is_empty() || s.is_empty() {
                "no data"
            } else {
                "too few samples"
            };
            return TestOutcome::inconclusive(
                samples,
                format!(
                    "{what}: {} canary and {} stable samples, need {} each{dropped_txt}",
                    c.len(),
                    s.len(),
                    need
                ),
            );
        }
        // Both sides non-empty and finite, so these cannot fail.
        let (Some(mw), Some(shift), Some(med)) = (
            mann_whitney_greater(&c, &s),
            hodges_lehmann(&c, &s),
            quantile(&s, 0.5),
        ) else {
            return TestOutcome::inconclusive(samples, "internal error computing rank test");
        };
        let limit = self.max_shift * med.abs();
        let rel = if med != 0.0 {
            format!(" ({:+.1}%)", shift / med.abs() * 100.0)
        } else {
            String::new()
        };
        let head = format!(
            "{} canary vs {} stable samples{dropped_txt}: shift {:.4}{rel} vs stable median {:.4}, z {:.2}, p {}",
            c.len(),
            s.len(),
            shift,
            med,
            mw.z,
            fmt_p(mw.p_value)
        );
        let significant = mw.p_value < self.alpha;
        let relevant = shift > limit;
        let (verdict, why) = match (significant, relevant) {
            (true, true) => (
                Verdict::Fail,
                format!(
                    "canary is significantly slower by more than the {:.4} tolerance",
                    limit
                ),
            ),
            (true, false) => (
                Verdict::Pass,
                format!(
                    "difference is significant but within the {:.4} tolerance",
                    limit
                ),
            ),
            (false, _) => (
                Verdict::Pass,
                format!("no significant increase at alpha {}", self.alpha),
            ),
        };
        TestOutcome {
            verdict,
            statistic: mw.z,
            p_value: Some(mw.p_value),
            estimate: Some(shift),
            samples,
            reason: format!("{head}; {why}"),
        }
    }
}

/// Sequential rank test: [`RankTest`] at the `look`-th look with α spent as [`spent_alpha`],
/// so a canary as slow as stable fails with probability at most `test.alpha` over all looks.
pub fn sequential_rank_test(
    test: &RankTest,
    look: u64,
    canary: &[f64],
    stable: &[f64],
) -> TestOutcome {
    let spent = RankTest {
        alpha: spent_alpha(test.alpha, look),
        ..test.clone()
    };
    let mut o = spent.evaluate(canary, stable);
    o.reason = format!(
        "{} (look {look}, α {} of {})",
        o.reason,
        fmt_p(spent.alpha),
        test.alpha
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::{SplitMix64, close};

    #[test]
    fn mann_whitney_hand_example() {
        // x = [3,4,5], y = [1,2]: every x beats every y → U = 6.
        // var = 3·2/12·6 = 3, z = (6 − 3 − 0.5)/√3 = 1.443376, p = 0.074457.
        let mw = mann_whitney_greater(&[3.0, 4.0, 5.0], &[1.0, 2.0]).unwrap();
        assert_eq!(mw.u, 6.0);
        assert!(close(mw.z, 2.5 / 3f64.sqrt(), 1e-12));
        assert!(
            close(mw.p_value, 0.07445733658938286, 1e-12),
            "{}",
            mw.p_value
        );
        // Reverse direction: U = 0, p close to 1.
        let mw = mann_whitney_greater(&[1.0, 2.0], &[3.0, 4.0, 5.0]).unwrap();
        assert_eq!(mw.u, 0.0);
        assert!(mw.p_value > 0.95);
    }

    #[test]
    fn mann_whitney_matches_scipy_with_ties() {
        // scipy.stats.mannwhitneyu(x, y, alternative="greater",
        //     use_continuity=True, method="asymptotic") with the data below.
        let x = [1.0, 2.0, 2.0, 3.0, 5.0, 5.0];
        let y = [1.0, 1.0, 2.0, 3.0, 4.0];
        let mw = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(mw.u, SCIPY_TIES_U);
        assert!(
            close(mw.p_value, SCIPY_TIES_P, 1e-9),
            "{} vs {}",
            mw.p_value,
            SCIPY_TIES_P
        );
    }

    #[test]
    fn mann_whitney_matches_scipy_larger() {
        // Deterministic data: x_i = (i*7 % 23) + 0.5*(i%3), y_j = (j*5 % 19).
        let x: Vec<f64> = (0..30)
            .map(|i| ((i * 7) % 23) as f64 + 0.5 * (i % 3) as f64)
            .collect();
        let y: Vec<f64> = (0..25).map(|j| ((j * 5) % 19) as f64).collect();
        let mw = mann_whitney_greater(&x, &y).unwrap();
        assert_eq!(mw.u, SCIPY_LARGE_U);
        assert!(
            close(mw.p_value, SCIPY_LARGE_P, 1e-9),
            "{} vs {}",
            mw.p_value,
            SCIPY_LARGE_P
        );
        let hl = hodges_lehmann(&x, &y).unwrap();
        assert!(
            close(hl, SCIPY_LARGE_HL, 1e-12),
            "HL {hl} vs {SCIPY_LARGE_HL}"
        );
    }

    // Reference values computed offline with scipy 1.17.1 (mannwhitneyu,
    // method="asymptotic", use_continuity=True) and numpy
    // (median of np.subtract.outer(x, y)); python is not needed at test time.
    const SCIPY_TIES_U: f64 = 19.5;
    const SCIPY_TIES_P: f64 = 0.22738616690408892;
    const SCIPY_LARGE_U: f64 = 478.0;
    const SCIPY_LARGE_P: f64 = 0.04145298881693869;
    const SCIPY_LARGE_HL: f64 = 3.0;

    #[test]
    fn mann_whitney_all_tied() {
        let mw = mann_whitney_greater(&[2.0; 5], &[2.0; 7]).unwrap();
        assert_eq!(mw.u, 17.5);
        assert_eq!(mw.p_value, 1.0);
        assert!(mann_whitney_greater(&[], &[1.0]).is_none());
        assert!(mann_whitney_greater(&[f64::NAN], &[1.0]).is_none());
    }

    #[test]
    fn hodges_lehmann_small_examples() {
        // Differences of [3,4,5] − [1,2]: {2,1,3,2,4,3} → median (2+3)/2 = 2.5.
        assert_eq!(hodges_lehmann(&[3.0, 4.0, 5.0], &[1.0, 2.0]), Some(2.5));
        // Odd count: [10] − [1,2,4] = {9,8,6} → 8.
        assert_eq!(hodges_lehmann(&[10.0], &[1.0, 2.0, 4.0]), Some(8.0));
        // Pure shift is recovered exactly, including negative shifts.
        let y: Vec<f64> = (0..50).map(|i| (i * 13 % 37) as f64 * 0.25).collect();
        let x: Vec<f64> = y.iter().map(|v| v - 1.5).collect();
        assert_eq!(hodges_lehmann(&x, &y), Some(-1.5));
        assert_eq!(hodges_lehmann(&[], &[1.0]), None);
        assert_eq!(hodges_lehmann(&[f64::NAN], &[1.0]), None);
    }

    #[test]
    fn hodges_lehmann_matches_brute_force() {
        let mut rng = SplitMix64(42);
        for n in [1usize, 2, 3, 7, 20, 61] {
            for m in [1usize, 4, 9, 33] {
                let x: Vec<f64> = (0..n)
                    .map(|_| (rng.uniform() * 20.0).round() / 4.0)
                    .collect();
                let y: Vec<f64> = (0..m).map(|_| rng.latency(3.0)).collect();
                let mut d: Vec<f64> = x
                    .iter()
                    .flat_map(|a| y.iter().map(move |b| a - b))
                    .collect();
                d.sort_by(f64::total_cmp);
                let k = d.len();
                let want = if k % 2 == 1 {
                    d[k / 2]
                } else {
                    0.5 * d[k / 2 - 1] + 0.5 * d[k / 2]
                };
                assert_eq!(hodges_lehmann(&x, &y), Some(want), "n={n} m={m}");
            }
        }
    }

    #[test]
    fn rank_test_defaults() {
        let t = RankTest::default();
        assert_eq!(t.alpha, 0.05);
        assert_eq!(t.min_samples, 20);
        assert_eq!(t.max_shift, 0.10);
    }

    #[test]
    fn rank_test_identical_distributions_not_fail() {
        let t = RankTest::default();
        let mut fails = 0;
        for seed in 0..50u64 {
            let mut rng = SplitMix64(1000 + seed);
            let c: Vec<f64> = (0..200).map(|_| rng.latency(100.0)).collect();
            let s: Vec<f64> = (0..2000).map(|_| rng.latency(100.0)).collect();
            let o = t.evaluate(&c, &s);
            assert_ne!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
            if o.verdict == Verdict::Fail {
                fails += 1;
            }
        }
        // Needs both p < 0.05 and a > 10% shift: essentially never under A/A.
        assert_eq!(fails, 0);
        // And the literal same sample is a Pass with p ≈ 0.5.
        let mut rng = SplitMix64(7);
        let s: Vec<f64> = (0..500).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&s, &s);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert_eq!(o.estimate, Some(0.0));
        assert!(o.p_value.unwrap() > 0.4);
    }

    #[test]
    fn rank_test_detects_30_percent_shift() {
        let t = RankTest::default();
        for seed in 0..20u64 {
            let mut rng = SplitMix64(2000 + seed);
            let c: Vec<f64> = (0..200).map(|_| rng.latency(130.0)).collect();
            let s: Vec<f64> = (0..2000).map(|_| rng.latency(100.0)).collect();
            let o = t.evaluate(&c, &s);
            assert_eq!(o.verdict, Verdict::Fail, "seed {seed}: {}", o.reason);
            assert!(o.p_value.unwrap() < 0.05);
            let shift = o.estimate.unwrap();
            assert!(shift > 12.0 && shift < 45.0, "shift {shift}");
            assert_eq!(o.samples, 200);
        }
    }

    #[test]
    fn rank_test_small_significant_shift_passes() {
        // +3% with lots of data: significant, but below the 10% tolerance.
        let t = RankTest::default();
        let mut rng = SplitMix64(3);
        let c: Vec<f64> = (0..10_000).map(|_| rng.latency(103.0)).collect();
        let s: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&c, &s);
        assert!(o.p_value.unwrap() < 0.05, "{}", o.reason);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.reason.contains("within"), "{}", o.reason);
        // Tightening the tolerance turns it into a Fail.
        let strict = RankTest {
            max_shift: 0.01,
            ..Default::default()
        };
        assert_eq!(strict.evaluate(&c, &s).verdict, Verdict::Fail);
    }

    #[test]
    fn rank_test_faster_canary_passes() {
        let t = RankTest::default();
        let mut rng = SplitMix64(4);
        let c: Vec<f64> = (0..300).map(|_| rng.latency(70.0)).collect();
        let s: Vec<f64> = (0..300).map(|_| rng.latency(100.0)).collect();
        let o = t.evaluate(&c, &s);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert!(o.estimate.unwrap() < 0.0);
        assert!(o.p_value.unwrap() > 0.95);
    }

    #[test]
    fn rank_test_ties_handled() {
        // Latency quantised to 10ms buckets → heavy ties.
        let t = RankTest::default();
        let mut rng = SplitMix64(5);
        let q = |v: f64| (v / 10.0).round() * 10.0;
        let s: Vec<f64> = (0..500).map(|_| q(rng.latency(100.0))).collect();
        let same: Vec<f64> = (0..500).map(|_| q(rng.latency(100.0))).collect();
        let slow: Vec<f64> = (0..500).map(|_| q(rng.latency(140.0))).collect();
        let o = t.evaluate(&same, &s);
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
        let o = t.evaluate(&slow, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        // All values identical: Pass with p = 1.
        let o = t.evaluate(&[5.0; 30], &[5.0; 30]);
        assert_eq!(o.verdict, Verdict::Pass, "{}", o.reason);
        assert_eq!(o.p_value, Some(1.0));
    }

    #[test]
    fn rank_test_insufficient_or_bad_data_inconclusive() {
        let t = RankTest::default();
        let many: Vec<f64> = (0..100).map(|i| i as f64).collect();
        let o = t.evaluate(&[], &many);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert!(o.reason.contains("no data"), "{}", o.reason);
        let o = t.evaluate(&many, &[]);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        let o = t.evaluate(&many[..19], &many);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        assert!(o.reason.contains("19 canary"), "{}", o.reason);
        // NaNs are dropped and counted; dropping below the minimum → Inconclusive.
        let mut c: Vec<f64> = many[..20].iter().map(|v| v + 1000.0).collect();
        c[0] = f64::NAN;
        c[1] = f64::INFINITY;
        let o = t.evaluate(&c, &many);
        assert_eq!(o.verdict, Verdict::Inconclusive, "{}", o.reason);
        assert!(o.reason.contains("2 non-finite"), "{}", o.reason);
        assert!(o.statistic.is_nan());
        // All-NaN input never passes.
        let o = t.evaluate(&[f64::NAN; 50], &[f64::NAN; 50]);
        assert_eq!(o.verdict, Verdict::Inconclusive);
        // Invalid configuration.
        let bad = RankTest {
            alpha: 1.5,
            ..Default::default()
        };
        assert_eq!(bad.evaluate(&many, &many).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn rank_test_nan_dropped_but_still_decides() {
        let t = RankTest::default();
        let mut rng = SplitMix64(6);
        let mut c: Vec<f64> = (0..100).map(|_| rng.latency(150.0)).collect();
        let s: Vec<f64> = (0..100).map(|_| rng.latency(100.0)).collect();
        c.push(f64::NAN);
        let o = t.evaluate(&c, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert_eq!(o.samples, 100);
        assert!(o.reason.contains("1 non-finite"), "{}", o.reason);
    }

    #[test]
    fn rank_test_large_inputs_are_fast_enough() {
        // 10k × 10k must not materialise 1e8 differences.
        let t = RankTest::default();
        let mut rng = SplitMix64(8);
        let c: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let s: Vec<f64> = (0..10_000).map(|_| rng.latency(100.0)).collect();
        let start = std::time::Instant::now();
        let o = t.evaluate(&c, &s);
        assert!(
            start.elapsed().as_secs_f64() < 5.0,
            "took {:?}",
            start.elapsed()
        );
        assert_ne!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert!(o.estimate.unwrap().abs() < 3.0);
    }

    #[test]
    fn sequential_rank_test_rarely_fails_identical_builds() {
        // A/A latency checked at 25 looks on growing samples: no run may fail (α 0.01 over
        // all looks, and max_shift 0 so only significance counts).
        let test = RankTest {
            alpha: 0.01,
            min_samples: 20,
            max_shift: 0.0,
        };
        let mut fails = 0;
        for seed in 0..40u64 {
            let mut rng = SplitMix64(5000 + seed);
            let mut c = Vec::new();
            let mut s = Vec::new();
            for look in 1..=25u64 {
                c.extend((0..10).map(|_| rng.latency(100.0)));
                s.extend((0..40).map(|_| rng.latency(100.0)));
                if sequential_rank_test(&test, look, &c, &s).verdict == Verdict::Fail {
                    fails += 1;
                    break;
                }
            }
        }
        assert_eq!(fails, 0);
        // A 30% slower canary is still found at a late look.
        let mut rng = SplitMix64(6000);
        let c: Vec<f64> = (0..200).map(|_| rng.latency(130.0)).collect();
        let s: Vec<f64> = (0..1000).map(|_| rng.latency(100.0)).collect();
        let o = sequential_rank_test(&test, 100, &c, &s);
        assert_eq!(o.verdict, Verdict::Fail, "{}", o.reason);
        assert!(o.reason.contains("look 100"), "{}", o.reason);
    }
}
