//! End-to-end: the shipped hooks decide a rollout from real Prometheus series. A policy
//! that imports `kafka-lag` (pause) and `gateway-overhead` (rollback) runs against the
//! demo workload; faults on the canary's Kafka lag and gateway overhead must stop it. The pods
//! serve the hooks' series in their exporters' shapes (kafka_exporter's
//! `kafka_consumergroup_lag{consumergroup}`, Kong's `kong_kong_latency_ms{service, route}` with
//! the Kong Ingress Controller's service names), so the hooks' default queries are the ones a
//! real cluster would answer.

mod e2e_common;

use e2e_common::*;
use serde_json::{Value, json};
use std::time::Duration;

const HOOK_POLICY: &str = r#"
import "kafka-lag" as kafka;
import "gateway-overhead" as gateway;

fn schedule() {
    #{
        steps: [10, 50, 100],
        min_step_time: "5m",
        min_requests: 1000,
        interval: "30s",
        queries: kafka::queries(#{}) + gateway::queries(#{}),
    }
}

fn decide(ctx) {
    let lag = kafka::check(ctx, #{ max_lag: 1000, decision: "pause" });
    if lag != () { return lag; }
    let overhead = gateway::check(ctx, #{ max_overhead_ms: 50, decision: "rollback" });
    if overhead != () { return overhead; }
    advance()
}
"#;

fn transition(history: &Value, event: &str) -> Value {
    history["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {history}"))
        .clone()
}

/// What a hook must make the rollout do.
struct Expect {
    /// `run`'s exit code (3 rolled back, 4 paused).
    exit: i32,
    /// The transition the hook's decision causes.
    event: &'static str,
    /// Text the transition's reason contains.
    why: &'static str,
    /// Observation recorded with the transition, and the value it must exceed.
    observation: &'static str,
    above: f64,
}

/// Each test uses its own service name: Kafka consumer groups are cluster-wide names, so
/// two namespaces with a `web-canary` group would read each other's lag.
async fn hook_flow(svc: &str, fault: Value, expect: Expect) {
    let p = Provider::Istio;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("hooks.rhai");
    std::fs::write(&policy, HOOK_POLICY).unwrap();
    let (ns, _traffic) = setup(&format!("e2e-hook-{svc}"), svc, p, 100.0).await;
    let out = start(&ns.name, svc, p, &["--policy", policy.to_str().unwrap()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let canary = format!("{svc}-canary");
    wait_serving(&ns.name, &canary, 1, Duration::from_secs(30)).await;
    inject_fault(&ns.name, &canary, fault).await;
    let trace = run_traced(&ns.name, svc, p, "120s").await;
    let history = history_json(&ns.name, svc).await;
    assert_eq!(
        trace.exit,
        Some(expect.exit),
        "run exit code; history: {history}"
    );
    let t = transition(&history, expect.event);
    assert!(t["reason"].as_str().unwrap().contains(expect.why), "{t}");
    assert!(
        t["observations"][expect.observation].as_f64().unwrap() > expect.above,
        "{t}"
    );
}

/// Kafka lag of the canary's consumer group passes 1000 → the rollout pauses for a human.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_lag_pauses_the_rollout() {
    let expect = Expect {
        exit: 4,
        event: "pause",
        why: "kafka",
        observation: "kafka_lag",
        above: 1000.0,
    };
    hook_flow("orders", json!({"kafka_lag": 50000}), expect).await;
}

/// Gateway overhead p95 above 50 ms (seed 001) on the canary's Kong service while stable's
/// stays low → rollback. The reason quotes stable's overhead: the stable query found stable's
/// Kong service too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_overhead_rolls_back() {
    let expect = Expect {
        exit: 3,
        event: "begin_rollback",
        why: "≥ 50 ms (stable ",
        observation: "gateway_overhead_p95_ms",
        above: 50.0,
    };
    hook_flow("payments", json!({"gateway_overhead_ms": 200}), expect).await;
}
