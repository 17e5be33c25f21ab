//! A small, fast, non-cryptographic PRNG (xorshift64*), enough for sampling
//! latencies and error outcomes in a demo workload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static SEED: AtomicU64 = AtomicU64::new(0);

fn next_u64() -> u64 {
    let mut cur = SEED.load(Ordering::Relaxed);
    loop {
        let mut x = if cur == 0 { initial_seed() } else { cur };
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        match SEED.compare_exchange_weak(cur, x, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return x.wrapping_mul(0x2545_F491_4F6C_DD1D),
            Err(actual) => cur = actual,
        }
    }
}

fn initial_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (nanos ^ (u64::from(std::process::id()) << 32)) | 1
}

/// Uniform in [0, 1).
pub fn uniform() -> f64 {
    (next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// True with probability `p`.
pub fn chance(p: f64) -> bool {
    p > 0.0 && uniform() < p
}

/// Exponentially distributed sample with the given mean (0 when mean <= 0).
pub fn exp(mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    -mean * (1.0 - uniform()).ln()
}

#[cfg(test)]
mod tests {
    #[test]
    fn uniform_in_range_and_mean() {
        let n = 20_000;
        let mut sum = 0.0;
        for _ in 0..n {
            let u = super::uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
        }
        let mean = sum / n as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn exp_mean() {
        let n = 20_000;
        let mean = (0..n).map(|_| super::exp(10.0)).sum::<f64>() / n as f64;
        assert!((mean - 10.0).abs() < 0.6, "mean {mean}");
        assert_eq!(super::exp(0.0), 0.0);
    }
}
