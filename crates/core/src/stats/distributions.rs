//! Distributions and building blocks: the standard normal CDF and quantile, the Wilson
//! bound of a proportion and sample quantiles. The rank test uses [`normal_cdf`], the
//! classic error-share test [`wilson_upper`], the simulator [`quantile`].

use std::f64::consts::PI;

/// One-sided upper confidence bound (Wilson score) of a binomial proportion
/// `successes_or_errors / n` at the given `confidence` (e.g. 0.95).
///
/// Why Wilson: unlike the normal (Wald) interval it stays sensible at 0 events
/// and at small n, which is exactly the low-traffic canary case — 0 errors in
/// 300 requests gives ≈ 0.9%, not 0%.
///
/// Returns `None` for n ≤ 0, non-finite inputs, a count outside [0, n] or a
/// confidence outside (0, 1).
pub fn wilson_upper(successes_or_errors: f64, n: f64, confidence: f64) -> Option<f64> {
    let x = successes_or_errors;
    if !x.is_finite() || !n.is_finite() || !confidence.is_finite() {
        return None;
    }
    if n <= 0.0 || x < 0.0 || x > n || confidence <= 0.0 || confidence >= 1.0 {
        return None;
    }
    let z = normal_quantile(confidence);
    let p = x / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = p + z2 / (2.0 * n);
    let spread = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).max(0.0).sqrt();
    Some(((centre + spread) / denom).clamp(0.0, 1.0))
}

/// Standard normal CDF Φ(z): absolute error ~1e-16, relative error < 1e-12
/// in the lower tail (checked against scipy down to z = −37).
///
/// Why hand-rolled: std has no erf. Near the centre a positive-term series
/// avoids cancellation; in the tails a continued fraction for the Mills ratio
/// keeps *relative* accuracy, which matters for small p-values.
pub fn normal_cdf(z: f64) -> f64 {
    if z.is_nan() {
        return f64::NAN;
    }
    if z == f64::INFINITY {
        return 1.0;
    }
    if z == f64::NEG_INFINITY {
        return 0.0;
    }
    let a = z.abs();
    if a < 3.0 {
        // Φ(z) = 1/2 + φ(z) · Σ z^(2n+1) / (2n+1)!!
        let pdf = (-0.5 * z * z).exp() / (2.0 * PI).sqrt();
        let mut term = z;
        let mut sum = z;
        let z2 = z * z;
        let mut n = 1.0;
        while term.abs() > 1e-17 * sum.abs() {
            term *= z2 / (2.0 * n + 1.0);
            sum += term;
            n += 1.0;
            if n > 500.0 {
                break;
            }
        }
        (0.5 + pdf * sum).clamp(0.0, 1.0)
    } else {
        let tail = upper_tail(a);
        if z > 0.0 { 1.0 - tail } else { tail }
    }
}

/// Q(a) = 1 − Φ(a) for a ≥ 3 via the continued fraction
/// φ(a) / (a + 1/(a + 2/(a + 3/(a + …)))), evaluated bottom-up.
fn upper_tail(a: f64) -> f64 {
    if a > 40.0 {
        return 0.0;
    }
    let mut f = a;
    for k in (1..=120).rev() {
        f = a + k as f64 / f;
    }
    let pdf = (-0.5 * a * a).exp() / (2.0 * PI).sqrt();
    pdf / f
}

/// Standard normal quantile Φ⁻¹(p): Acklam's rational approximation refined
/// by Halley steps against [`normal_cdf`], so round trips hold to ~1e-12.
/// Returns ±∞ at 1/0 and NaN outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p > 0.5 {
        // Work in the lower tail where p has full relative precision.
        return -normal_quantile(1.0 - p);
    }
    const A: [f64; 6] = [
        -3.969683028665376e+01,
        2.209460984245205e+02,
        -2.759285104469687e+02,
        1.38357751867269e+02,
        -3.066479806614716e+01,
        2.506628277459239e+00,
    ];
    const B: [f64; 5] = [
        -5.447609879822406e+01,
        1.615858368580409e+02,
        -1.556989798598866e+02,
        6.680131188771972e+01,
        -1.328068155288572e+01,
    ];
    const C: [f64; 6] = [
        -7.784894002430293e-03,
        -3.223964580411365e-01,
        -2.400758277161838e+00,
        -2.549732539343734e+00,
        4.374664141464968e+00,
        2.938163982698783e+00,
    ];
    const D: [f64; 4] = [
        7.784695709041462e-03,
        3.224671290700398e-01,
        2.445134137142996e+00,
        3.754408661907416e+00,
    ];
    const P_LOW: f64 = 0.02425;
    let mut x = if p < P_LOW {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    // Halley refinement against the accurate CDF; skipped in the extreme tail
    // (p below ~1e-300) where exp(x²/2) would overflow.
    for _ in 0..2 {
        let e = normal_cdf(x) - p;
        let log_u = 0.5 * x * x + 0.5 * (2.0 * PI).ln();
        if log_u > 700.0 {
            break;
        }
        let u = e * log_u.exp();
        let step = u / (1.0 + x * u / 2.0);
        if !step.is_finite() {
            break;
        }
        x -= step;
    }
    x
}

// ---------------------------------------------------------------------------
// Quantiles
// ---------------------------------------------------------------------------

/// Sample quantile with linear interpolation between order statistics
/// (Hyndman–Fan type 7, the numpy/R default). Non-finite samples are ignored.
/// Returns `None` when no finite sample remains or `q` is outside [0, 1].
///
/// This is what naive per-window policies use ("p99 of this minute < 300ms");
/// it is kept for such policies and for comparison in tests and docs.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if !q.is_finite() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(quantile_sorted(&v, q))
}

fn quantile_sorted(v: &[f64], q: f64) -> f64 {
    let h = (v.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    let hi = h.ceil() as usize;
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::testing::close;

    // ---- normal distribution --------------------------------------------------

    #[test]
    fn normal_cdf_known_values() {
        // Reference values from Python's math.erfc: 0.5*erfc(-z/sqrt(2)).
        let cases = [
            (0.0, 0.5),
            (1.0, 0.8413447460685429),
            (-1.0, 0.15865525393145707),
            (1.6448536269514722, 0.95),
            (1.959963984540054, 0.975),
            (2.5, 0.9937903346742238),
            (-3.0, 0.0013498980316300957),
            (-5.0, 2.866515718791946e-07),
            (-8.0, 6.220960574271819e-16),
            (-20.0, 2.7536241186063314e-89),
        ];
        for (z, want) in cases {
            let got = normal_cdf(z);
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-9, "Φ({z}) = {got}, want {want}, rel err {rel}");
        }
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert!(normal_cdf(f64::NAN).is_nan());
        assert_eq!(normal_cdf(50.0), 1.0);
        assert_eq!(normal_cdf(-50.0), 0.0);
    }

    #[test]
    fn normal_cdf_monotone_and_symmetric() {
        let mut prev = 0.0;
        let mut z = -10.0;
        while z <= 10.0 {
            let p = normal_cdf(z);
            assert!(p >= prev, "not monotone at {z}");
            assert!(close(p + normal_cdf(-z), 1.0, 1e-14), "asymmetric at {z}");
            prev = p;
            z += 0.01;
        }
        // Continuity across the series / continued-fraction switch at |z| = 3.
        let eps = 1e-9;
        assert!(close(normal_cdf(3.0 - eps), normal_cdf(3.0 + eps), 1e-11));
        assert!(close(normal_cdf(-3.0 - eps), normal_cdf(-3.0 + eps), 1e-11));
    }

    #[test]
    fn normal_quantile_known_values() {
        // Reference values from Python's statistics.NormalDist().inv_cdf.
        let cases = [
            (0.5, 0.0),
            (0.95, 1.6448536269514722),
            (0.975, 1.959963984540054),
            (0.8, 0.8416212335729143),
            (0.01, -2.3263478740408408),
            (1e-6, -4.753424308822899),
            (1e-12, -7.034483825301131),
        ];
        for (p, want) in cases {
            let got = normal_quantile(p);
            assert!(close(got, want, 1e-9), "Φ⁻¹({p}) = {got}, want {want}");
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(-0.1).is_nan());
        assert!(normal_quantile(1.1).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
    }

    #[test]
    fn normal_round_trip() {
        let mut p = 1e-10;
        while p < 1.0 {
            let z = normal_quantile(p);
            let back = normal_cdf(z);
            assert!(
                ((back - p) / p.min(1.0 - p)).abs() < 1e-7,
                "p={p} z={z} back={back}"
            );
            p *= 1.37;
        }
        for i in 1..1000 {
            let p = i as f64 / 1000.0;
            assert!(close(normal_cdf(normal_quantile(p)), p, 1e-12), "p={p}");
        }
        // Above z ≈ 6, 1 − Φ(z) < 1e-9 is not representable precisely as Φ(z)
        // itself, so round trips through Φ are limited by f64, not by us.
        let mut z = -8.0;
        while z < 6.0 {
            assert!(close(normal_quantile(normal_cdf(z)), z, 1e-7), "z={z}");
            z += 0.05;
        }
        // Deep tail must not overflow.
        let z = normal_quantile(1e-300);
        assert!(z.is_finite() && z < -37.0 && z > -37.5, "{z}");
    }

    // ---- Wilson ---------------------------------------------------------------

    #[test]
    fn wilson_upper_known_values() {
        // Wilson formula with z = Φ⁻¹(0.95), evaluated in Python/scipy.
        let u = wilson_upper(0.0, 300.0, 0.95).unwrap();
        assert!(close(u, 0.008937872175128179, 1e-12), "{u}");
        let u = wilson_upper(5.0, 1000.0, 0.95).unwrap();
        assert!(close(u, 0.01023533150672088, 1e-12), "{u}");
        let u = wilson_upper(10.0, 10.0, 0.95).unwrap();
        assert!(close(u, 1.0, 1e-12), "{u}");
        // Monotone in confidence and count.
        assert!(
            wilson_upper(5.0, 1000.0, 0.99).unwrap() > wilson_upper(5.0, 1000.0, 0.95).unwrap()
        );
        assert!(
            wilson_upper(6.0, 1000.0, 0.95).unwrap() > wilson_upper(5.0, 1000.0, 0.95).unwrap()
        );
        // Always above the point estimate.
        assert!(wilson_upper(50.0, 1000.0, 0.95).unwrap() > 0.05);
    }

    #[test]
    fn wilson_upper_rejects_bad_input() {
        assert_eq!(wilson_upper(0.0, 0.0, 0.95), None);
        assert_eq!(wilson_upper(0.0, -5.0, 0.95), None);
        assert_eq!(wilson_upper(f64::NAN, 10.0, 0.95), None);
        assert_eq!(wilson_upper(1.0, f64::INFINITY, 0.95), None);
        assert_eq!(wilson_upper(11.0, 10.0, 0.95), None);
        assert_eq!(wilson_upper(-1.0, 10.0, 0.95), None);
        assert_eq!(wilson_upper(1.0, 10.0, 1.0), None);
        assert_eq!(wilson_upper(1.0, 10.0, 0.0), None);
    }

    // ---- quantile -------------------------------------------------------------

    #[test]
    fn quantile_linear_interpolation() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        // numpy.quantile([1,2,3,4], 0.9) == 3.7
        assert!(close(quantile(&v, 0.9).unwrap(), 3.7, 1e-12));
        assert_eq!(quantile(&[7.0], 0.99), Some(7.0));
    }

    #[test]
    fn quantile_ignores_non_finite_and_rejects_bad_q() {
        let v = [f64::NAN, 1.0, f64::INFINITY, 3.0, f64::NEG_INFINITY];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[f64::NAN], 0.5), None);
        assert_eq!(quantile(&[1.0], 1.5), None);
        assert_eq!(quantile(&[1.0], -0.1), None);
        assert_eq!(quantile(&[1.0], f64::NAN), None);
    }
}
