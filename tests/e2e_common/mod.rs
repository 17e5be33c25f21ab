//! Shared flows of the e2e tests: the built `kubectl-canary` binary against the real test
//! environment (kwok control plane + Prometheus + canary-demo traffic). No mocks.
#![allow(dead_code)]

#[path = "../support/mod.rs"]
pub mod support;

pub mod layouts;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::Api;
use kubectl_canary::providers::{Router, Target};
use serde_json::Value;
use std::process::Output;
use std::time::{Duration, Instant};
pub use support::*;

pub const NEW_IMAGE: &str = "kubectl-canary/demo:2.0";
/// Fast schedule for tests (the shipped default policy has 5-minute steps).
pub const FAST: &str =
    "min_step_time=5s,interval=2s,min_requests=50,scale_down_delay=1s,readiness_grace=2s";

pub fn provider_name(p: Provider) -> &'static str {
    match p {
        Provider::Istio => "istio",
        Provider::Smi => "smi",
        Provider::Nginx => "nginx",
        Provider::GatewayApi => "gateway-api",
    }
}

/// `kubectl-canary` with the test cluster's kubeconfig and Prometheus.
pub fn kc(ns: &str, args: &[&str]) -> tokio::process::Command {
    let env = TestEnv::get();
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubectl-canary"));
    c.arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["-n", ns])
        .args(args)
        .env("KUBECTL_CANARY_PROMETHEUS_URL", &env.prometheus)
        .env("KUBECTL_CANARY_SCRAPE_INTERVAL", "1s")
        .env("KUBECTL_CANARY_ACTOR", "e2e")
        .kill_on_drop(true);
    c
}

pub async fn kc_out(ns: &str, args: &[&str]) -> Output {
    let out = kc(ns, args).output().await.expect("run kubectl-canary");
    eprintln!(
        "$ kubectl-canary {} -> {:?}\n{}{}",
        args.join(" "),
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub async fn status_json(ns: &str, svc: &str) -> Value {
    let out = kc(ns, &["status", svc, "-o", "json"])
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status json: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

pub async fn history_json(ns: &str, svc: &str) -> Value {
    let out = kc(ns, &["history", svc, "-o", "json"])
        .output()
        .await
        .unwrap();
    serde_json::from_slice(&out.stdout).expect("history json")
}

/// Canary weight read back from the route object (through the provider).
pub async fn route_weight(client: &Client, ns: &str, svc: &str, p: Provider) -> Option<u32> {
    let router = Router::by_name(client, provider_name(p)).await.unwrap();
    router
        .read_weight(client, &Target::new(ns, svc))
        .await
        .unwrap()
}

pub async fn deployment(client: &Client, ns: &str, name: &str) -> Option<Deployment> {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

pub fn image_of(d: &Deployment) -> String {
    d.spec.template.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap_or_default()
}

/// Namespace + the user's layout (stable Deployment without labels of ours, a Service over
/// every version, the provider's route as users write it) + client traffic into the data
/// plane when `rps` > 0.
pub async fn setup(
    prefix: &str,
    svc: &str,
    p: Provider,
    rps: f64,
) -> (TestNamespace, Option<Traffic>) {
    setup_with(prefix, svc, p, TrafficOptions::at(rps, 300)).await
}

/// [`setup`] with the client traffic of `traffic` (none when its rps is 0).
pub async fn setup_with(
    prefix: &str,
    svc: &str,
    p: Provider,
    traffic: TrafficOptions,
) -> (TestNamespace, Option<Traffic>) {
    let ns = TestNamespace::create(prefix).await;
    create_stable(&ns.client, &ns.name, svc, 2, false).await;
    user_route(&ns.client, &ns.name, p, svc).await;
    let traffic = if traffic.rps > 0.0 {
        wait_serving(&ns.name, svc, 2, Duration::from_secs(60)).await;
        Some(Traffic::start_with(
            &ns.name,
            p.via(),
            &p.entry_host(svc),
            traffic,
        ))
    } else {
        None
    };
    (ns, traffic)
}

pub async fn start(ns: &str, svc: &str, p: Provider, extra: &[&str]) -> Output {
    start_image(ns, svc, p, NEW_IMAGE, extra).await
}

/// `start` with canary image `image` (its tag can make the canary misbehave, e.g. `2.0-err50`).
pub async fn start_image(ns: &str, svc: &str, p: Provider, image: &str, extra: &[&str]) -> Output {
    let image = format!("app={image}");
    let mut args = vec![
        "start",
        svc,
        "--image",
        &image,
        "--provider",
        provider_name(p),
        "--schedule-override",
        FAST,
        "--set",
        "min_judge=20",
        "--timeout",
        "120s",
    ];
    args.extend_from_slice(extra);
    kc_out(ns, &args).await
}

/// What `run` did, sampled every 500 ms while it ran.
pub struct RunTrace {
    pub exit: Option<i32>,
    pub weights: Vec<u32>,
    pub max_share: f64,
    /// The canary's measured share over the last ≤5 s at each weight held ≥3 s (≥100 requests).
    pub share_at: std::collections::BTreeMap<u32, (f64, u64)>,
    pub elapsed: Duration,
}

/// At every weight the rollout held for a while, the canary's share of requests (counted by
/// the pods) equals the weight within sampling noise (4 standard errors + 2 points).
pub fn assert_weights_measured(trace: &RunTrace) {
    eprintln!("measured canary share per weight: {:?}", trace.share_at);
    for (w, (share, n)) in &trace.share_at {
        let p = f64::from(*w) / 100.0;
        let tol = 4.0 * (p * (1.0 - p) / *n as f64).sqrt() + 0.02;
        assert!(
            (share - p).abs() <= tol,
            "at weight {w} the canary got {share:.3} of {n} requests (±{tol:.3}): {:?}",
            trace.share_at
        );
    }
}

/// Nothing of ours is left in the user's objects: no pin, subset, header route, canary
/// backend or annotation (SMI's TrafficSplit is ours and stays, with stable at 100).
pub async fn assert_no_leftovers(ns: &str, svc: &str, p: Provider) {
    let mut objs = vec![format!("service/{svc}")];
    match p {
        Provider::Istio => objs.extend([
            format!("virtualservice.networking.istio.io/{svc}"),
            format!("destinationrule.networking.istio.io/{svc}"),
        ]),
        Provider::Nginx => objs.extend([
            format!("ingress.networking.k8s.io/{svc}"),
            format!("ingress.networking.k8s.io/{svc}-canary"),
        ]),
        Provider::GatewayApi => objs.push(format!("httproute.gateway.networking.k8s.io/{svc}")),
        Provider::Smi => objs.push(format!("service/{svc}-stable")),
    }
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&TestEnv::get().kubeconfig)
        .args(["-n", ns, "get", "--ignore-not-found", "-o", "json"])
        .args(&objs)
        .output()
        .expect("kubectl get");
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        format!("{svc}-canary"),
        "pod-template-hash".to_string(),
        "kubectl-canary-".to_string(),
        "kubectl-canary.io/".to_string(),
    ] {
        assert!(
            !text.contains(&needle),
            "{needle:?} left behind in {objs:?}:\n{text}"
        );
    }
    if p == Provider::Istio {
        assert!(
            !text.contains("DestinationRule"),
            "the DestinationRule we created is gone: {text}"
        );
    }
}

pub async fn run_traced(ns: &str, svc: &str, p: Provider, max: &str) -> RunTrace {
    run_traced_on(ns, provider_name(p), Target::new(ns, svc), max).await
}

/// [`run_traced`] for a rollout whose route and canary Deployment are named in `target`
/// (a route named like no service, a canary the team keeps), read through provider `router`.
pub async fn run_traced_on(ns: &str, router: &str, target: Target, max: &str) -> RunTrace {
    let t0 = Instant::now();
    let client = TestEnv::get().client().await;
    let router = Router::by_name(&client, router).await.unwrap();
    let svc = target.service.as_str();
    let mut child = kc(
        ns,
        &["run", svc, "--max-time", max, "--metrics-window", "10s"],
    )
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let canary = target.canary_deployment.clone();
    // The canary's share of requests over the last ~5 s, from the pods' own counters.
    let mut window: std::collections::VecDeque<Counts> = std::collections::VecDeque::new();
    let mut weights = Vec::new();
    let mut max_share: f64 = 0.0;
    let mut share_at = std::collections::BTreeMap::new();
    let mut held_since = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        let w = router.read_weight(&client, &target).await.unwrap();
        if let Some(w) = w
            && weights.last() != Some(&w)
        {
            weights.push(w);
            // A new weight: measure only requests sent after it was written.
            window.clear();
            held_since = Instant::now();
        }
        let now = Counts::now(ns).await;
        while window
            .front()
            .is_some_and(|c| c.at.unwrap().elapsed() > Duration::from_secs(5))
        {
            window.pop_front();
        }
        if let Some(first) = window.front() {
            let served = now.since(first);
            if served.total() >= 100
                && let Some(s) = served.share(&canary)
            {
                max_share = max_share.max(s);
                // Skip the first second at a weight: requests already in flight.
                if let (Some(w), true) = (w, held_since.elapsed() > Duration::from_secs(3))
                    && weights.last() == Some(&w)
                {
                    share_at.insert(w, (s, served.total()));
                }
            }
        }
        window.push_back(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let out = child.wait_with_output().await.unwrap();
    eprintln!("run stdout:\n{}", String::from_utf8_lossy(&out.stdout));
    RunTrace {
        exit: status.code(),
        weights,
        max_share,
        share_at,
        elapsed: t0.elapsed(),
    }
}

fn events(h: &Value) -> Vec<String> {
    h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap().to_string())
        .collect()
}

/// Healthy canary promotes through the shipped default policy (fast schedule).
pub async fn promote_flow(p: Provider) {
    promote_flow_tagged(p, "ok").await;
}

/// [`promote_flow`] in a namespace named `e2e-<provider>-<tag>-…` (the test environment
/// scrapes ingress-nginx ServiceMonitor-style in namespaces named `*nginx-sm*`).
pub async fn promote_flow_tagged(p: Provider, tag: &str) {
    let t0 = Instant::now();
    let svc = "web";
    let (ns, _traffic) = setup(&format!("e2e-{}-{tag}", provider_name(p)), svc, p, 100.0).await;
    let out = start(&ns.name, svc, p, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start");
    assert_eq!(route_weight(&ns.client, &ns.name, svc, p).await, Some(5));
    let trace = run_traced(&ns.name, svc, p, "200s").await;
    eprintln!(
        "[{}] promote: weights {:?}, max measured canary share {:.2}, run {:?}",
        provider_name(p),
        trace.weights,
        trace.max_share,
        trace.elapsed
    );
    assert_eq!(trace.exit, Some(0), "run ends promoted");
    for w in [25, 50] {
        assert!(
            trace.weights.contains(&w),
            "route weight {w} seen: {:?}",
            trace.weights
        );
    }
    assert!(
        trace.max_share > 0.4,
        "measured canary share rose: {}",
        trace.max_share
    );
    let stable = deployment(&ns.client, &ns.name, svc).await.unwrap();
    assert_eq!(image_of(&stable), NEW_IMAGE);
    let labels = stable
        .spec
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .clone()
        .unwrap();
    assert_eq!(
        labels,
        std::collections::BTreeMap::from([
            ("app".to_string(), svc.to_string()),
            ("version".to_string(), "v1".to_string())
        ]),
        "stable keeps exactly its own pod labels"
    );
    assert_weights_measured(&trace);
    // After promotion every request reaches the (new) stable pods, none is lost.
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() > 100, "traffic still flows: {served:?}");
    assert_eq!(served.of(svc), served.total(), "all on stable: {served:?}");
    assert_no_leftovers(&ns.name, svc, p).await;
    assert!(
        deployment(&ns.client, &ns.name, &format!("{svc}-canary"))
            .await
            .is_none(),
        "canary removed"
    );
    let w = route_weight(&ns.client, &ns.name, svc, p).await;
    assert!(matches!(w, None | Some(0)), "no canary weight left: {w:?}");
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "Promoted");
    let ev = events(&history_json(&ns.name, svc).await);
    assert_eq!(ev.first().map(String::as_str), Some("canary_ready"));
    assert!(
        ev.ends_with(&["begin_promote".to_string(), "promote_done".to_string()]),
        "{ev:?}"
    );
    eprintln!(
        "[{}] promote test took {:?}",
        provider_name(p),
        t0.elapsed()
    );
}

/// UIDs of the live pods of Deployment `name`, as the data plane runs them.
pub async fn stable_pod_uids(ns: &str, name: &str) -> Vec<String> {
    let mut v: Vec<String> = mesh_pods(ns)
        .await
        .into_iter()
        .filter(|p| p.live && p.deployment.as_deref() == Some(name))
        .map(|p| p.uid)
        .collect();
    v.sort();
    v
}

/// How a canary misbehaves.
pub enum Bad {
    /// From its pod template: an image whose tag says so (see tests/env/README.md).
    Image(&'static str),
    /// Injected into the running canary pods (`/admin/fault`).
    Fault(Value),
}

/// 50% errors on the canary (its image `2.0-err50`) → rollback: weight 0, canary at 0
/// replicas, history recorded.
pub async fn rollback_flow(p: Provider) {
    rollback_flow_with(
        p,
        "bad",
        Bad::Image("kubectl-canary/demo:2.0-err50"),
        "error",
        "canary_error_rate",
        0.05,
    )
    .await;
}

/// A misbehaving canary → the policy rolls back, its reason containing `why`, and
/// observation `obs` above `min` recorded with the transition.
pub async fn rollback_flow_with(p: Provider, tag: &str, bad: Bad, why: &str, obs: &str, min: f64) {
    let t0 = Instant::now();
    let svc = "web";
    let (ns, _traffic) = setup(&format!("e2e-{}-{tag}", provider_name(p)), svc, p, 100.0).await;
    let stable_before = stable_pod_uids(&ns.name, svc).await;
    let out = match &bad {
        Bad::Image(image) => start_image(&ns.name, svc, p, image, &[]).await,
        Bad::Fault(_) => start(&ns.name, svc, p, &[]).await,
    };
    assert_eq!(out.status.code(), Some(0), "start");
    let canary_name = format!("{svc}-canary");
    if let Bad::Fault(fault) = bad {
        wait_serving(&ns.name, &canary_name, 1, Duration::from_secs(30)).await;
        inject_fault(&ns.name, &canary_name, fault).await;
    }
    let trace = run_traced(&ns.name, svc, p, "120s").await;
    assert_eq!(trace.exit, Some(3), "run ends rolled back");
    assert_eq!(
        route_weight(&ns.client, &ns.name, svc, p)
            .await
            .unwrap_or(0),
        0
    );
    let canary = deployment(&ns.client, &ns.name, &format!("{svc}-canary"))
        .await
        .unwrap();
    assert_eq!(canary.spec.replicas, Some(0));
    let stable = deployment(&ns.client, &ns.name, svc).await.unwrap();
    assert_eq!(image_of(&stable), TEST_IMAGE, "stable untouched");
    // Measured at the pods: after the rollback every request reaches a stable pod.
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() > 100, "traffic still flows: {served:?}");
    assert_eq!(
        served.of(&canary_name),
        0,
        "canary pods get nothing after rollback: {served:?}"
    );
    assert_eq!(
        served.no_upstream(),
        0,
        "no request without upstream: {served:?}"
    );
    assert_weights_measured(&trace);
    assert_no_leftovers(&ns.name, svc, p).await;
    let stable_after = stable_pod_uids(&ns.name, svc).await;
    assert_eq!(stable_before, stable_after, "no stable pod was restarted");
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "RolledBack");
    let h = history_json(&ns.name, svc).await;
    let ev = events(&h);
    assert!(
        ev.ends_with(&["begin_rollback".to_string(), "rollback_done".to_string()]),
        "{ev:?}"
    );
    let rb = h["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "begin_rollback")
        .unwrap()
        .clone();
    assert!(rb["reason"].as_str().unwrap().contains(why), "{rb}");
    assert!(rb["observations"][obs].as_f64().unwrap() > min, "{rb}");
    assert_eq!(rb["actor"], "policy");
    eprintln!(
        "[{}] rollback test took {:?}",
        provider_name(p),
        t0.elapsed()
    );
}
