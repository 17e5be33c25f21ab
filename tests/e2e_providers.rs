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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_promotes() {
    promote_flow(Provider::GatewayApi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_rolls_back() {
    rollback_flow(Provider::GatewayApi).await;
}
