//! Test helpers shared by the statistics modules: a seeded RNG and a tolerance check.

use std::f64::consts::PI;

/// Deterministic RNG (splitmix64), so that every simulation in the tests is reproducible.
pub(super) struct SplitMix64(pub(super) u64);

impl SplitMix64 {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub(super) fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(super) fn binomial(&mut self, n: u64, p: f64) -> u64 {
        (0..n).filter(|_| self.uniform() < p).count() as u64
    }
    /// Log-normal-ish latency sample around `median`.
    pub(super) fn latency(&mut self, median: f64) -> f64 {
        // Box–Muller
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        let n = (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos();
        median * (0.4 * n).exp()
    }
}

pub(super) fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}
