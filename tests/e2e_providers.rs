//! End-to-end promote and rollback on the SMI, ingress-nginx and Gateway API providers
//! (the Istio ones are in e2e_istio.rs). Needs `tests/env` up.

mod e2e_common;

use e2e_common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_promotes() {
    promote_flow(Provider::Smi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_rolls_back() {
    rollback_flow(Provider::Smi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_promotes() {
    promote_flow(Provider::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_rolls_back() {
    rollback_flow(Provider::Nginx).await;
}

/// ingress-nginx scraped as the chart's ServiceMonitor is (`exported_namespace`,
/// `exported_service`): the rollout reads both tracks without configuration and promotes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_promotes_with_servicemonitor_labels() {
    promote_flow_tagged(Provider::Nginx, "nginx-sm-ok").await;
}

/// The same scrape style, a canary answering 50 % errors: rolled back on its error rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_rolls_back_with_servicemonitor_labels() {
    rollback_flow_with(
        Provider::Nginx,
        "nginx-sm-bad",
        Bad::Image("kubectl-canary/demo:2.0-err50"),
        "error",
        "canary_error_rate",
        0.05,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_promotes() {
    promote_flow(Provider::GatewayApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_rolls_back() {
    rollback_flow(Provider::GatewayApi).await;
}

/// Canary p99 of ~1.5 s (default policy limit 1000 ms), read through each provider's own
/// metric names → rollback.
async fn latency_flow(p: Provider) {
    rollback_flow_with(
        p,
        "slow",
        Bad::Image("kubectl-canary/demo:2.0-lat1500"),
        "p99",
        "canary_p99_ms",
        1000.0,
    )
    .await;
}

/// Crash-looping canary pods: `start` rolls back before any traffic is routed.
async fn crashloop_flow(p: Provider) {
    if TestEnv::get().external {
        eprintln!("kwok pod behaviours only exist in the local environment; skipped");
        return;
    }
    let (ns, _) = setup(&format!("e2e-{}-crash", provider_name(p)), "web", p, 0.0).await;
    let out = start(
        &ns.name,
        "web",
        p,
        &["--canary-label", "canary-demo/behavior=crashloop"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "start rolls back: {stderr}");
    assert!(stderr.contains("crash-looping"), "{stderr}");
    assert_eq!(
        route_weight(&ns.client, &ns.name, "web", p)
            .await
            .unwrap_or(0),
        0
    );
    assert_eq!(status_json(&ns.name, "web").await["phase"], "RolledBack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_latency_regression_rolls_back() {
    latency_flow(Provider::Smi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_latency_regression_rolls_back() {
    latency_flow(Provider::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_latency_regression_rolls_back() {
    latency_flow(Provider::GatewayApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_crashlooping_canary_rolls_back() {
    crashloop_flow(Provider::Smi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_crashlooping_canary_rolls_back() {
    crashloop_flow(Provider::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_crashlooping_canary_rolls_back() {
    crashloop_flow(Provider::GatewayApi).await;
}
