//! CPU time of one policy evaluation (compiled AST, context conversion included) and of
//! compiling a policy. Run: `cargo bench --bench policy_eval`.

use chrono::DateTime;
use criterion::{Criterion, criterion_group, criterion_main};
use kubectl_canary::controller::Evaluator;
use kubectl_canary::core::facts::{Facts, PodFacts, TrackMetrics};
use kubectl_canary::core::rollout::{Cause, Event, Rollout};
use kubectl_canary::policy::{self, Limits, PolicyEngine};
use std::hint::black_box;

fn facts() -> Facts {
    let track = |requests: f64, errors: f64| TrackMetrics {
        requests: Some(requests),
        errors: Some(errors),
        request_rate: Some(requests / 300.0),
        error_rate: Some(errors / requests),
        latency_p50: Some(80.0),
        latency_p95: Some(140.0),
        latency_p99: Some(180.0),
        latency_samples: Vec::new(),
    };
    let pods = |n| PodFacts {
        desired: n,
        ready: n,
        restarts: 0,
        crash_looping: false,
    };
    Facts {
        stable: track(28_500.0, 57.0),
        canary: track(1_500.0, 3.0),
        stable_pods: pods(3),
        canary_pods: pods(1),
        ..Facts::default()
    }
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let engine = PolicyEngine::new(Vec::new(), &limits);
    let policy = policy::load(&engine, "default", &limits).expect("default policy compiles");
    let params = rhai::Map::new();
    let evaluator = Evaluator {
        engine: &engine,
        policy: &policy,
        limits: &limits,
        service: "checkout",
        params: &params,
    };
    let t0 = DateTime::from_timestamp(1_767_225_600, 0).unwrap();
    let mut rollout = Rollout::new(t0);
    rollout
        .apply(Event::CanaryReady { weight: 5 }, t0, Cause::default())
        .unwrap();
    let now = t0 + chrono::Duration::seconds(400);
    let facts = facts();
    let sample = evaluator.evaluate(&rollout, &facts, now);
    assert_eq!(
        sample.step.decision.action(),
        "advance",
        "bench must exercise the full path"
    );

    c.bench_function(
        "evaluate default policy (compiled AST, context conversion)",
        |b| b.iter(|| black_box(evaluator.evaluate(black_box(&rollout), black_box(&facts), now))),
    );

    // Fixed cost of the engine and context conversion: a policy that only advances.
    let trivial = engine
        .compile(
            "trivial.rhai",
            "fn schedule() { #{ steps: [5, 100] } }\nfn decide(ctx) { advance() }",
            &limits,
        )
        .unwrap();
    let trivial_evaluator = Evaluator {
        policy: &trivial,
        ..evaluator
    };
    c.bench_function("evaluate trivial policy (engine + context overhead)", |b| {
        b.iter(|| {
            black_box(trivial_evaluator.evaluate(black_box(&rollout), black_box(&facts), now))
        })
    });

    let (file, text) = kubectl_canary::shipped::policy("default").unwrap();
    c.bench_function("compile default policy", |b| {
        b.iter(|| black_box(engine.compile(file, black_box(text), &limits).unwrap()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
