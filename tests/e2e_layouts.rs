//! End-to-end on the layouts users already have, measured at the pods: bookinfo's
//! `reviews-v1` behind Service `reviews` with DestinationRule subsets v1/v2 (seed 000), seed
//! 002's Linkerd layout with its own canary Deployment at 0 replicas and a TrafficSplit
//! named `auth-service-split`, and an ingress-nginx Service that selects both versions.
//! Each shows the canary's share at the first weight, header route and share 0 after
//! rollback, the user's objects as they were, the same stable pods, and per-version counts.

mod e2e_common;

use e2e_common::layouts::*;
use e2e_common::*;
use serde_json::{Value, json};
use std::time::Duration;

/// bookinfo's reviews as its users deploy it: `reviews-v1` (2 pods) behind Service `reviews`,
/// DestinationRule subsets v1/v2, and VirtualService `reviews` with the `http` routes given.
fn bookinfo_reviews(http_routes: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: reviews-v1, labels: {{app: reviews, version: v1}}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: reviews, version: v1}}}}
  template:
    metadata: {{labels: {{app: reviews, version: v1}}}}
    spec: {{containers: [{{name: reviews, image: "kubectl-canary/demo:1.0"}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: reviews, labels: {{app: reviews}}}}
spec: {{selector: {{app: reviews}}, ports: [{{name: http, port: 9080, targetPort: 9080}}]}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
{http_routes}"#
    )
}

/// `start reviews` with a new image on the fast schedule (stable and route found by themselves).
async fn start_reviews(n: &str) -> std::process::Output {
    kc_out(
        n,
        &[
            "start",
            "reviews",
            "--image",
            "reviews=kubectl-canary/demo:2.0",
            "--schedule-override",
            FAST,
            "--timeout",
            "60s",
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_reviews_v1_with_user_subsets() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-bookinfo").await;
    let n = ns.name.as_str();
    apply(
        &ns.client,
        n,
        &bookinfo_reviews("  - route:\n    - destination: {host: reviews, subset: v1}\n"),
    )
    .await;
    // bookinfo also runs reviews-v2, which Service reviews selects too: the route's subset
    // v1 (version: v1) says which Deployment is stable.
    apply(
        &ns.client,
        n,
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v2, labels: {app: reviews, version: v2}}
spec:
  replicas: 1
  selector: {matchLabels: {app: reviews, version: v2}}
  template:
    metadata: {labels: {app: reviews, version: v2}}
    spec: {containers: [{name: reviews, image: "kubectl-canary/demo:1.5"}]}
"#,
    )
    .await;
    wait_serving(n, "reviews-v1", 2, Duration::from_secs(60)).await;
    let (vs0, dr0, svc0) = (
        user_view(&kubectl_json(n, "virtualservice/reviews")),
        user_view(&kubectl_json(n, "destinationrule/reviews")),
        user_view(&kubectl_json(n, "service/reviews")),
    );
    let stable_before = stable_pod_uids(n, "reviews-v1").await;
    let _traffic = Traffic::start_with(n, "istio", "reviews", TrafficOptions::at(200.0, 120));
    // Found from the Service and the route's subset: no --stable, no --route.
    let out = start_reviews(n).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start reviews on bookinfo: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_json(n, "reviews").await;
    assert_eq!(st["stable"], "reviews-v1", "{st}");
    assert_eq!(st["route_weight"], 5);
    assert_eq!(st["stable_pods"]["ready"], 2, "{st}");
    assert_eq!(st["stable_pods"]["desired"], 2, "{st}");
    assert_eq!(st["canary_pods"]["ready"], 1, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    eprintln!("bookinfo: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    let vs = kubectl_json(n, "virtualservice/reviews");
    assert!(
        vs.to_string().contains("kubectl-canary-header"),
        "the policy's header route is set up: {vs}"
    );
    // The header route, with real requests: a second client whose every request says
    // `x-canary: true` reaches only the canary. (200 × 5 % + 50 × 100 %) / 250 = 24 %.
    let header_client = Traffic::start_with(
        n,
        "istio",
        "reviews",
        TrafficOptions::at(50.0, 60).with_header("x-canary:true", 1.0),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    eprintln!("bookinfo: canary share {share:.3} with a header client ({served:?})");
    assert!((share - 0.24).abs() < 0.05, "{served:?}");
    drop(header_client);
    // An evaluation on this layout: stable is `reviews-v1`, no Deployment is named after the
    // Service (step used to look for `reviews`, and marked the rollout Failed).
    let out = kc_out(n, &["step", "reviews"]).await;
    let st = status_json(n, "reviews").await;
    assert_eq!(
        st["phase"],
        "Progressing",
        "{st}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(matches!(out.status.code(), Some(0 | 5)), "{out:?}");

    // The header client's traffic after rollback: the header route is gone, so it is stable's.
    let _header_client = Traffic::start_with(
        n,
        "istio",
        "reviews",
        TrafficOptions::at(50.0, 60).with_header("x-canary:true", 1.0),
    );
    let out = kc_out(n, &["rollback", "reviews"]).await;
    assert_eq!(out.status.code(), Some(3), "rollback exits 3 (rolled back)");
    assert_eq!(status_json(n, "reviews").await["phase"], "RolledBack");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    assert_eq!(share, 0.0, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    assert_eq!(served.of("reviews-v1"), served.total(), "{served:?}");
    assert_eq!(
        user_view(&kubectl_json(n, "virtualservice/reviews")),
        vs0,
        "VirtualService as the user had it, byte for byte"
    );
    assert_eq!(user_view(&kubectl_json(n, "destinationrule/reviews")), dr0);
    assert_eq!(user_view(&kubectl_json(n, "service/reviews")), svc0);
    assert_eq!(stable_pod_uids(n, "reviews-v1").await, stable_before);
}

/// Istio's bookinfo `virtual-service-reviews-jason-v1`-style layout: a user's match route
/// (`end-user: jason` → subset v1) ahead of the general route (→ v1). Istio takes the first
/// matching route, so the split belongs in the general route; the jason route names `v1`,
/// whose labels the canary's pods inherit, so it must reach stable's pods only. Measured at
/// the pods for each kind of caller, and the VirtualService is given back byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_users_match_route_ahead_of_the_general_route() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-jason").await;
    let n = ns.name.as_str();
    apply(
        &ns.client,
        n,
        &bookinfo_reviews(
            r#"  - match:
    - headers:
        end-user: {exact: jason}
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
"#,
        ),
    )
    .await;
    wait_serving(n, "reviews-v1", 2, Duration::from_secs(60)).await;
    let vs0 = user_view(&kubectl_json(n, "virtualservice/reviews"));
    let stable_before = stable_pod_uids(n, "reviews-v1").await;
    let out = start_reviews(n).await;
    assert_eq!(out.status.code(), Some(0), "start");
    assert_eq!(status_json(n, "reviews").await["route_weight"], 5);
    // Jason's requests: all on stable (before the fix the split sat in this route).
    let jason = Traffic::start_with(
        n,
        "istio",
        "reviews",
        TrafficOptions::at(150.0, 60).with_header("end-user:jason", 1.0),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    eprintln!("jason route: canary share {share:.3} ({served:?})");
    assert!(served.total() > 300, "{served:?}");
    assert_eq!(
        share, 0.0,
        "the jason route reaches stable pods only: {served:?}"
    );
    drop(jason);
    // Everyone else: the general route carries the 5 % (not the canary's 1-of-3 pods).
    let general = Traffic::start_with(n, "istio", "reviews", TrafficOptions::at(200.0, 60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    eprintln!("general route: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    let out = kc_out(n, &["rollback", "reviews"]).await;
    assert_eq!(out.status.code(), Some(3), "rolled back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    assert_eq!(share, 0.0, "{served:?}");
    drop(general);
    assert_eq!(
        user_view(&kubectl_json(n, "virtualservice/reviews")),
        vs0,
        "the user's routes byte for byte"
    );
    assert_eq!(stable_pod_uids(n, "reviews-v1").await, stable_before);
}

/// Seed 000's own layout: `devmentor-routes`, bound to the gateway only, routes `users` and
/// `ai-gateway` by path; `ai-gateway-v1` runs 3 pods and the team's `ai-gateway-v2` (an older
/// build) waits at 0; Service `ai-gateway` selects both by `app`.
const SEED_000_LAYOUT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: ai-gateway-v1}
spec:
  replicas: 3
  selector: {matchLabels: {app: ai-gateway, version: v1}}
  template:
    metadata: {labels: {app: ai-gateway, version: v1}}
    spec: {containers: [{name: ai-gateway, image: "kubectl-canary/demo:1.0"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ai-gateway-v2}
spec:
  replicas: 0
  selector: {matchLabels: {app: ai-gateway, version: v2}}
  template:
    metadata: {labels: {app: ai-gateway, version: v2}}
    spec: {containers: [{name: ai-gateway, image: "kubectl-canary/demo:1.9"}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: users}
spec:
  replicas: 1
  selector: {matchLabels: {app: users}}
  template:
    metadata: {labels: {app: users}}
    spec: {containers: [{name: users, image: "kubectl-canary/demo:1.0"}]}
---
apiVersion: v1
kind: Service
metadata: {name: ai-gateway}
spec: {selector: {app: ai-gateway}, ports: [{name: http, port: 8080, targetPort: 8080}]}
---
apiVersion: v1
kind: Service
metadata: {name: users}
spec: {selector: {app: users}, ports: [{name: http, port: 8080, targetPort: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ai-gateway}
spec:
  host: ai-gateway
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: devmentor-routes}
spec:
  hosts: [devmentor.example.com]
  gateways: [devmentor-gateway]
  http:
  - match:
    - uri: {prefix: /api/users}
    route:
    - destination: {host: users, port: {number: 8080}}
  - match:
    - uri: {prefix: /api/ai}
    route:
    - destination: {host: ai-gateway, subset: v1, port: {number: 8080}}
"#;

/// Seed 000's own layout: `devmentor-routes`, bound to the gateway only, routes several
/// services by path (named like none of them); `ai-gateway-v1` runs 3 pods and the team's
/// `ai-gateway-v2` waits at 0; the Service selects both by `app`. `--canary ai-gateway-v2`
/// adopts the team's canary (re-imaged, scaled, back at 0 after), so stable is the one other
/// Deployment the Service selects and no `ai-gateway-canary` Deployment is created. Gateway
/// callers get the split; in-mesh callers of the Service bypass a gateway-only route
/// (istio/api `VirtualService.gateways`), so they must reach no canary pod. Measured at the
/// pods, per kind of caller; the users route and every object of the team's come back byte
/// for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_gateway_only_route_for_several_services() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-seed000").await;
    let n = ns.name.as_str();
    apply(&ns.client, n, SEED_000_LAYOUT).await;
    wait_serving(n, "ai-gateway-v1", 3, Duration::from_secs(60)).await;
    wait_serving(n, "users", 1, Duration::from_secs(60)).await;
    let objects = [
        "virtualservice/devmentor-routes",
        "destinationrule/ai-gateway",
        "service/ai-gateway",
        "service/users",
    ];
    let before = snapshot(n, &objects);
    let stable_before = stable_pod_uids(n, "ai-gateway-v1").await;
    // The route is found by what it routes (no --route); the team's v2 is the canary, so
    // stable is the other Deployment the Service selects (no --stable).
    let out = kc_out(
        n,
        &[
            "start",
            "ai-gateway",
            "--canary",
            "ai-gateway-v2",
            "--image",
            "ai-gateway=kubectl-canary/demo:2.0",
            "--schedule-override",
            FAST,
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start ai-gateway: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_json(n, "ai-gateway").await;
    assert_eq!(st["route_weight"], 5, "{st}");
    assert_eq!(st["canary_pods"]["ready"], 1, "{st}");
    let v2 = kubectl_json(n, "deployment/ai-gateway-v2");
    assert_eq!(
        v2["spec"]["template"]["spec"]["containers"][0]["image"],
        "kubectl-canary/demo:2.0"
    );
    let deps = kubectl_json(n, "deployments");
    let mut names: Vec<&str> = deps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ai-gateway-v1", "ai-gateway-v2", "users"]);
    let gateway = || {
        TrafficOptions::at(200.0, 60)
            .with_path("/api/ai/chat")
            .through_gateway("devmentor-gateway")
    };
    // Gateway callers: the split.
    let t = Traffic::start_with(n, "istio", "devmentor.example.com", gateway());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "ai-gateway-v2").await;
    eprintln!("seed 000, gateway callers: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    drop(t);
    // In-mesh callers of the Service: the route does not apply to them; no canary pod.
    let t = Traffic::start_with(n, "istio", "ai-gateway", TrafficOptions::at(200.0, 60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "ai-gateway-v2").await;
    eprintln!("seed 000, in-mesh callers: canary share {share:.3} ({served:?})");
    assert!(served.total() > 300, "{served:?}");
    assert_eq!(
        share, 0.0,
        "in-mesh callers bypass the gateway's route: {served:?}"
    );
    drop(t);
    // The users route still reaches users.
    let t = Traffic::start_with(
        n,
        "istio",
        "devmentor.example.com",
        TrafficOptions::at(100.0, 60)
            .with_path("/api/users/1")
            .through_gateway("devmentor-gateway"),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let served = measure(n, Duration::from_secs(3)).await;
    assert!(
        served.of("users") > 100 && served.of("users") == served.total(),
        "{served:?}"
    );
    drop(t);

    let _gw = Traffic::start_with(n, "istio", "devmentor.example.com", gateway());
    let out = kc_out(n, &["rollback", "ai-gateway"]).await;
    assert_eq!(out.status.code(), Some(3), "rolled back");
    let stable = "ai-gateway-v1";
    assert_restored(
        n,
        "ai-gateway-v2",
        &objects,
        &before,
        stable,
        &stable_before,
    )
    .await;
    let v2 = kubectl_json(n, "deployment/ai-gateway-v2");
    assert_eq!(v2["spec"]["replicas"], 0, "the team's v2 is kept, at 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_linkerd_layout_with_its_own_canary() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-seed002").await;
    let n = ns.name.as_str();
    let dep = |name: &str, version: &str, replicas: u32| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  \
             selector: {{matchLabels: {{app: auth-service, version: {version}}}}}\n  template:\n    \
             metadata: {{labels: {{app: auth-service, version: {version}}}}}\n    \
             spec: {{containers: [{{name: auth, image: \"kubectl-canary/demo:1.0\"}}]}}\n---\n"
        )
    };
    let svc = |name: &str, version: Option<&str>| {
        let sel = match version {
            Some(v) => format!("{{app: auth-service, version: {v}}}"),
            None => "{app: auth-service}".to_string(),
        };
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec: {{selector: {sel}, ports: [{{port: 80, targetPort: 8080}}]}}\n---\n"
        )
    };
    let m: String = [
        dep("auth-service-stable", "stable", 2),
        dep("auth-service-canary", "canary", 0),
        svc("auth-service", None),
        svc("auth-service-stable", Some("stable")),
        svc("auth-service-canary", Some("canary")),
    ]
    .concat()
        + r#"
apiVersion: split.smi-spec.io/v1alpha2
kind: TrafficSplit
metadata: {name: auth-service-split}
spec:
  service: auth-service
  backends:
  - {service: auth-service-stable, weight: 100}
  - {service: auth-service-canary, weight: 0}
"#;
    apply(&ns.client, n, &m).await;
    wait_serving(n, "auth-service-stable", 2, Duration::from_secs(60)).await;
    let stable_before = stable_pod_uids(n, "auth-service-stable").await;
    let _traffic = Traffic::start_with(n, "smi", "auth-service", TrafficOptions::at(200.0, 120));
    let out = kc_out(
        n,
        &[
            "start",
            "auth-service",
            "--image",
            "auth=kubectl-canary/demo:2.0",
            "--schedule-override",
            FAST,
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start auth-service on seed 002's layout"
    );
    // Found by itself: stable auth-service-stable (the Service's pods minus <svc>-canary),
    // provider smi and the TrafficSplit auth-service-split (its root is auth-service).
    let st = status_json(n, "auth-service").await;
    assert_eq!(st["provider"], "smi", "{st}");
    assert_eq!(st["route"], "auth-service-split", "{st}");
    // The user's canary was re-imaged and scaled; no other Deployment was created.
    let deps = kubectl_json(n, "deployments");
    let names: Vec<&str> = deps["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["auth-service-canary", "auth-service-stable"],
        "{names:?}"
    );
    let canary = kubectl_json(n, "deployment/auth-service-canary");
    assert_eq!(canary["spec"]["replicas"], 1);
    assert_eq!(
        canary["spec"]["template"]["spec"]["containers"][0]["image"],
        "kubectl-canary/demo:2.0"
    );
    let st = status_json(n, "auth-service").await;
    assert_eq!(st["stable_pods"]["ready"], 2, "{st}");
    assert_eq!(st["canary_pods"]["ready"], 1, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "auth-service-canary").await;
    eprintln!("seed 002: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "{served:?}");

    assert_eq!(
        kc_out(n, &["rollback", "auth-service"]).await.status.code(),
        Some(3)
    );
    let canary = kubectl_json(n, "deployment/auth-service-canary");
    assert_eq!(
        canary["spec"]["replicas"], 0,
        "the user's canary is kept, at 0"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "auth-service-canary").await;
    assert_eq!(share, 0.0, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    let ts = kubectl_json(n, "trafficsplit/auth-service-split");
    assert_eq!(
        ts["spec"]["backends"],
        json!([{"service": "auth-service-stable", "weight": 100}, {"service": "auth-service-canary", "weight": 0}])
    );
    for s in ["auth-service-stable", "auth-service-canary"] {
        let o = kubectl_json(n, &format!("service/{s}"));
        assert!(!o.to_string().contains("pod-template-hash"), "{o}");
    }
    assert_eq!(
        stable_pod_uids(n, "auth-service-stable").await,
        stable_before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_service_over_both_versions_counts_each_version() {
    let p = Provider::Nginx;
    let (ns, _traffic) = setup("lay-nginx", "shop", p, 200.0).await;
    let n = ns.name.as_str();
    let out = start(n, "shop", p, &[]).await;
    assert_eq!(out.status.code(), Some(0));
    let st = status_json(n, "shop").await;
    assert_eq!(st["stable_pods"]["ready"], 2, "not 3/2: {st}");
    assert_eq!(st["stable_pods"]["desired"], 2, "{st}");
    assert_eq!(st["canary_pods"]["ready"], 1, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "shop-canary").await;
    eprintln!("nginx: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "not 37%: {served:?}");
    let ing = kubectl_json(n, "ingress/shop");
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"],
        "8m"
    );
    assert_eq!(kc_out(n, &["abort", "shop"]).await.status.code(), Some(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "shop-canary").await;
    assert_eq!(share, 0.0, "{served:?}");
    assert_no_leftovers(n, "shop", p).await;
    let ing = kubectl_json(n, "ingress/shop");
    assert_eq!(
        ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"], "8m",
        "the user's annotation survives"
    );
}

/// `start -f` takes the canary's whole pod template from a manifest (an env and an annotation
/// change, as `helm template` would render them); promote gives stable exactly that
/// template, so applying the same manifest afterwards restarts no stable pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_template_is_canaried_and_promoted_exactly() {
    let p = Provider::Istio;
    let (ns, _traffic) = setup("lay-manifest", "web", p, 100.0).await;
    let n = ns.name.as_str();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("rendered.yaml");
    std::fs::write(
        &manifest,
        r#"# rendered by helm template
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config}
data: {FEATURE: "on"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, labels: {app: web}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web, version: v1}
      annotations: {checksum/config: "2"}
    spec:
      containers:
      - name: app
        image: kubectl-canary/demo:2.0
        ports: [{containerPort: 8080, name: http}]
        env: [{name: FEATURE, value: "on"}]
"#,
    )
    .unwrap();
    let f = manifest.to_str().unwrap();
    let out = kc_out(
        n,
        &[
            "start",
            "web",
            "-f",
            f,
            "--schedule-override",
            FAST,
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start -f");
    let canary = kubectl_json(n, "deployment/web-canary");
    let tpl = &canary["spec"]["template"];
    assert_eq!(
        tpl["spec"]["containers"][0]["env"][0]["value"], "on",
        "{tpl}"
    );
    assert_eq!(tpl["metadata"]["annotations"]["checksum/config"], "2");
    assert_eq!(kc_out(n, &["promote", "web"]).await.status.code(), Some(0));
    let stable = kubectl_json(n, "deployment/web");
    let tpl = &stable["spec"]["template"];
    assert_eq!(
        tpl["metadata"]["labels"],
        json!({"app": "web", "version": "v1"}),
        "exactly the manifest's labels"
    );
    assert_eq!(
        tpl["metadata"]["annotations"],
        json!({"checksum/config": "2"})
    );
    assert_eq!(
        tpl["spec"]["containers"][0]["env"],
        json!([{"name": "FEATURE", "value": "on"}])
    );
    wait_serving(n, "web", 2, Duration::from_secs(60)).await;
    let (pods_before, template) = (
        stable_pod_uids(n, "web").await,
        stable["spec"]["template"].clone(),
    );
    // The user's next deploy with the same values.
    let apply = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&TestEnv::get().kubeconfig)
        .args(["-n", n, "apply", "-f", f])
        .output()
        .unwrap();
    assert!(
        apply.status.success(),
        "{}",
        String::from_utf8_lossy(&apply.stderr)
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stable = kubectl_json(n, "deployment/web");
    // (Not the generation: kubectl's last-applied annotation bumps a Deployment's generation.)
    assert_eq!(
        stable["spec"]["template"], template,
        "the template did not change"
    );
    assert_eq!(
        stable_pod_uids(n, "web").await,
        pods_before,
        "no stable pod restarted"
    );
    assert_no_leftovers(n, "web", p).await;
}

/// `start --dry-run` shows every object it would create or change as a diff, and changes
/// nothing: on ingress-nginx that is the canary Deployment, Service and Ingress, the pin on
/// the user's Service, and the state ConfigMap the start's plan commits (Progressing at 5%).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_shows_the_diff_and_changes_nothing() {
    let p = Provider::Nginx;
    let (ns, _) = setup("lay-dry", "web", p, 0.0).await;
    let n = ns.name.as_str();
    let svc_before = user_view(&kubectl_json(n, "service/web"));
    let out = start(n, "web", p, &["--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "Deployment ",
        "/web-canary (create)",
        "Ingress ",
        "Service ",
        "/web (change)",
        "+    pod-template-hash:",
        "nginx.ingress.kubernetes.io/canary-weight: '5'",
        "/web-canary-rollout (create)",
        "kubectl-canary.io/phase: Progressing",
    ] {
        assert!(text.contains(needle), "{needle:?} missing in:\n{text}");
    }
    let json_out = start(n, "web", p, &["--dry-run", "-o", "json"]).await;
    let plan: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let objects: Vec<&str> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["object"].as_str().unwrap())
        .collect();
    assert_eq!(objects.len(), 5, "{objects:?}");
    assert!(plan["error"].is_null(), "{plan}");
    // Nothing was written.
    assert_eq!(user_view(&kubectl_json(n, "service/web")), svc_before);
    assert!(deployment(&ns.client, n, "web-canary").await.is_none());
    let ing = kubectl_json(n, "ingresses");
    assert_eq!(ing["items"].as_array().unwrap().len(), 1, "{ing}");
    let cms = kubectl_json(n, "configmaps");
    assert!(
        !cms.to_string().contains("web-canary-rollout"),
        "no state ConfigMap: {cms}"
    );
}

/// Linkerd's preferred layout (GAMMA): an HTTPRoute attached to Service `web` by its
/// parentRef (`kind: Service`, gateway-api geps/gep-1426), in a namespace annotated
/// `linkerd.io/inject: enabled`, named like nothing (`web-mesh-route`). `start` finds it by
/// the parentRef, reads Linkerd's metrics because the namespace is meshed, and splits the
/// in-mesh callers of `web`, measured at the pods; after rollback the route is as the team
/// had it and the same stable pods serve everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_gamma_route_in_an_injected_namespace() {
    gamma_flow("gateway.networking.k8s.io/v1", "gateway-api").await;
}

/// The same with Linkerd's own HTTPRoute kind (`policy.linkerd.io/v1beta3`), which Linkerd
/// serves like the Gateway API's (linkerd2 `policy-controller/k8s/index/src/outbound/index/http.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linkerd_policy_httproute_in_an_injected_namespace() {
    gamma_flow("policy.linkerd.io/v1beta3", "linkerd-httproute").await;
}

async fn gamma_flow(api_version: &str, provider: &str) {
    TestEnv::get();
    let ns = TestNamespace::create("lay-gamma").await;
    let n = ns.name.as_str();
    kubectl(
        n,
        &["annotate", "namespace", n, "linkerd.io/inject=enabled"],
    );
    apply(
        &ns.client,
        n,
        &(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: app, image: "kubectl-canary/demo:1.0"}]}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{name: http, port: 80, targetPort: 8080}]}
---
apiVersion: "#
            .to_string()
            + api_version
            + r#"
kind: HTTPRoute
metadata: {name: web-mesh-route}
spec:
  parentRefs:
  - {group: core, kind: Service, name: web, port: 80}
  rules:
  - backendRefs:
    - {name: web, port: 80}
"#),
    )
    .await;
    wait_serving(n, "web", 2, Duration::from_secs(60)).await;
    let group = api_version.split('/').next().unwrap();
    let route = format!("httproutes.{group}/web-mesh-route");
    let objects = [route.as_str(), "service/web"];
    let before = snapshot(n, &objects);
    let stable_before = stable_pod_uids(n, "web").await;
    // In-mesh callers (a Linkerd proxy on the client side).
    let _traffic = Traffic::start_with(n, "smi", "web", TrafficOptions::at(200.0, 120));
    let out = kc_out(
        n,
        &[
            "start",
            "web",
            "--image",
            "app=kubectl-canary/demo:2.0",
            "--schedule-override",
            FAST,
            "--timeout",
            "60s",
        ],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "start web: {err}");
    if provider == "gateway-api" {
        // Linkerd's own kind always reads Linkerd's metrics; the Gateway API's needs the mesh.
        assert!(
            err.contains(
                "note: metrics: linkerd (the namespace is annotated linkerd.io/inject: enabled)"
            ),
            "{err}"
        );
    }
    let st = status_json(n, "web").await;
    assert_eq!(st["provider"], provider, "{st}");
    assert_eq!(st["route"], "web-mesh-route", "{st}");
    assert_eq!(st["route_weight"], 5, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "web-canary").await;
    eprintln!(
        "{provider} GAMMA, in-mesh callers: canary share {share:.3} at weight 5 ({served:?})"
    );
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    // The rollout reads Linkerd's metrics (the record's flavour, as `step` does).
    let out = kc_out(n, &["check-metrics", "web", "-o", "json"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("response_total"), "{text}");
    assert!(!text.contains("http_requests_total"), "{text}");

    assert_eq!(kc_out(n, &["rollback", "web"]).await.status.code(), Some(3));
    assert_restored(n, "web-canary", &objects, &before, "web", &stable_before).await;
}

/// ingress-nginx keeps one upstream per Service and port, and a location goes to one canary
/// only (kubernetes/ingress-nginx `internal/ingress/controller/controller.go`
/// `mergeAlternativeBackends`, `rootfs/etc/nginx/lua/balancer.lua`). So another Ingress on the
/// same Service and port (`shop-admin`, host admin.test) gets the same split: start says so,
/// and it is measured at the pods. A canary Ingress of someone else's on the primary's
/// location would make ours get nothing: start refuses before creating anything, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_other_ingresses_on_the_same_upstream() {
    let p = Provider::Nginx;
    let (ns, _traffic) = setup("lay-nginx-share", "shop", p, 200.0).await;
    let n = ns.name.as_str();
    let ingress = |name: &str, host: &str, backend: &str, canary: bool| {
        let ann = if canary {
            "{nginx.ingress.kubernetes.io/canary: \"true\", nginx.ingress.kubernetes.io/canary-weight: \"50\"}"
        } else {
            "{}"
        };
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, annotations: {ann}}}\n\
             spec: {{ingressClassName: nginx, rules: [{{host: {host}, http: {{paths: [{{path: /, pathType: Prefix, \
             backend: {{service: {{name: {backend}, port: {{number: 80}}}}}}}}]}}}}]}}\n"
        )
    };
    // Someone else's canary on shop.test/: refused, nothing created.
    apply(
        &ns.client,
        n,
        &ingress("shop-v2", "shop.test", "shop", true),
    )
    .await;
    let out = start(n, "shop", p, &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("Ingress shop-v2 is already a canary for its paths"),
        "{err}"
    );
    assert!(deployment(&ns.client, n, "shop-canary").await.is_none());
    kubectl(n, &["delete", "ingress", "shop-v2"]);

    // Another host on the same Service and port: noted, and it gets the same share.
    apply(
        &ns.client,
        n,
        &ingress("shop-admin", "admin.test", "shop", false),
    )
    .await;
    let out = start(n, "shop", p, &[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("note: Ingress shop-admin sends to the same Service and port as shop"),
        "{err}"
    );
    drop(_traffic);
    let _admin = Traffic::start_with(n, "nginx", "admin.test", TrafficOptions::at(200.0, 60));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "shop-canary").await;
    eprintln!(
        "nginx, another Ingress on the upstream: canary share {share:.3} at weight 5 ({served:?})"
    );
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(kc_out(n, &["abort", "shop"]).await.status.code(), Some(3));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "shop-canary").await;
    assert_eq!(share, 0.0, "{served:?}");
    assert_no_leftovers(n, "shop", p).await;
}

/// Seed 002 sends testers to the canary by any of three headers. A policy's `header_route`
/// list is set up on each provider that can match headers (any one header matches: Istio's
/// and Gateway API's match lists are ORed); ingress-nginx's `canary-by-header` takes one
/// name, so the first is routed and start names the others. Measured at the pods per header,
/// and after rollback every header reaches stable only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_002_several_header_routes() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("headers.rhai");
    let default = std::fs::read_to_string("policies/default.rhai").unwrap();
    let one = r#"header_route: #{ name: "x-canary", value: "true" },"#;
    assert!(
        default.contains(one),
        "the default policy's header route moved"
    );
    std::fs::write(
        &policy,
        default.replace(
            one,
            r#"header_route: [#{ name: "x-canary", value: "true" }, #{ name: "x-user-tier", value: "beta" }, #{ name: "x-region", value: "us-west-2" }],"#,
        ),
    )
    .unwrap();
    let policy = policy.to_str().unwrap();
    let headers = ["x-canary:true", "x-user-tier:beta", "x-region:us-west-2"];
    for p in [Provider::Istio, Provider::GatewayApi, Provider::Nginx] {
        let (ns, _none) = setup("lay-headers", "web", p, 0.0).await;
        let n = ns.name.as_str();
        wait_serving(n, "web", 2, Duration::from_secs(60)).await;
        let out = start(n, "web", p, &["--policy", policy]).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{p:?}: {err}");
        let routed = if p == Provider::Nginx {
            assert!(
                err.contains("note: nginx matches one header; the policy's header routes (x-user-tier: beta), (x-region: us-west-2) are not set up"),
                "{err}"
            );
            1
        } else {
            3
        };
        for (i, h) in headers.iter().enumerate() {
            let t = Traffic::start_with(
                n,
                p.via(),
                &p.entry_host("web"),
                TrafficOptions::at(100.0, 30).with_header(h, 1.0),
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
            let (share, served) = canary_share(n, "web-canary").await;
            eprintln!("{p:?}: header {h}: canary share {share:.3} ({served:?})");
            assert!(served.total() > 200, "{served:?}");
            if i < routed {
                assert_eq!(share, 1.0, "{p:?} {h}: {served:?}");
            } else {
                assert!(share < 0.15, "{p:?} {h} is not routed: {served:?}");
            }
            drop(t);
        }
        assert_eq!(kc_out(n, &["rollback", "web"]).await.status.code(), Some(3));
        let t = Traffic::start_with(
            n,
            p.via(),
            &p.entry_host("web"),
            TrafficOptions::at(100.0, 30).with_header(headers[1], 1.0),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (share, served) = canary_share(n, "web-canary").await;
        assert_eq!(share, 0.0, "{p:?}: {served:?}");
        drop(t);
        assert_no_leftovers(n, "web", p).await;
    }
}

/// A delegating root (Istio `delegate`, istio/api `networking/v1alpha3/virtual_service.proto`):
/// VirtualService `reviews` for the host only hands its traffic to `reviews-routes`, which
/// holds the routes. start edits the delegate (the root routes nothing itself), the split is
/// measured at the pods, and after rollback both VirtualServices are as the team had them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookinfo_delegate_virtual_service() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-delegate").await;
    let n = ns.name.as_str();
    apply(
        &ns.client,
        n,
        &(bookinfo_reviews(
            "  - match: [{uri: {prefix: /}}]\n    delegate: {name: reviews-routes}\n",
        ) + r#"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-routes}
spec:
  http:
  - route:
    - destination: {host: reviews, subset: v1}
"#),
    )
    .await;
    wait_serving(n, "reviews-v1", 2, Duration::from_secs(60)).await;
    let objects = [
        "virtualservice/reviews",
        "virtualservice/reviews-routes",
        "destinationrule/reviews",
        "service/reviews",
    ];
    let before = snapshot(n, &objects);
    let stable_before = stable_pod_uids(n, "reviews-v1").await;
    let _traffic = Traffic::start_with(n, "istio", "reviews", TrafficOptions::at(200.0, 120));
    let out = start_reviews(n).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start reviews with a delegate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = status_json(n, "reviews").await;
    assert_eq!(st["provider"], "istio", "{st}");
    assert_eq!(st["route"], "reviews-routes", "{st}");
    assert_eq!(st["route_weight"], 5, "{st}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (share, served) = canary_share(n, "reviews-canary").await;
    eprintln!("delegate: canary share {share:.3} at weight 5 ({served:?})");
    assert!((share - 0.05).abs() < 0.03, "{served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    assert_eq!(
        kc_out(n, &["rollback", "reviews"]).await.status.code(),
        Some(3)
    );
    let stable = "reviews-v1";
    assert_restored(
        n,
        "reviews-canary",
        &objects,
        &before,
        stable,
        &stable_before,
    )
    .await;
}

/// Seed 000's layout promoted weight by weight with the team's `ai-gateway-v2` adopted: at
/// every weight the policy held, gateway callers' share of `ai-gateway-v2` (counted by the
/// pods) is the weight; the run promotes on Istio's metrics for the two Deployments; stable
/// `ai-gateway-v1` ends on the new image with its own labels, on new pods (promote rolls it
/// out), `ai-gateway-v2` back at 0, and the team's route and Service as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_000_adopted_canary_promotes_weight_by_weight() {
    TestEnv::get();
    let ns = TestNamespace::create("lay-seed000-promote").await;
    let n = ns.name.as_str();
    apply(&ns.client, n, SEED_000_LAYOUT).await;
    wait_serving(n, "ai-gateway-v1", 3, Duration::from_secs(60)).await;
    let objects = [
        "virtualservice/devmentor-routes",
        "destinationrule/ai-gateway",
        "service/ai-gateway",
    ];
    let before = snapshot(n, &objects);
    let _gateway = Traffic::start_with(
        n,
        "istio",
        "devmentor.example.com",
        TrafficOptions::at(200.0, 300)
            .with_path("/api/ai/chat")
            .through_gateway("devmentor-gateway"),
    );
    let out = kc_out(
        n,
        &[
            "start",
            "ai-gateway",
            "--canary",
            "ai-gateway-v2",
            "--image",
            "ai-gateway=kubectl-canary/demo:2.0",
            "--schedule-override",
            FAST,
            "--set",
            "min_judge=20",
            "--timeout",
            "60s",
        ],
    )
    .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut target = kubectl_canary::providers::Target::new(n, "ai-gateway");
    target.route = "devmentor-routes".into();
    target.canary_deployment = "ai-gateway-v2".into();
    let trace = run_traced_on(n, "istio", target, "240s").await;
    eprintln!(
        "seed 000 promote: weights {:?}, shares {:?}, run {:?}",
        trace.weights, trace.share_at, trace.elapsed
    );
    assert_eq!(trace.exit, Some(0), "run ends promoted");
    assert!(trace.share_at.len() >= 3, "{:?}", trace.share_at);
    assert_weights_measured(&trace);
    let v1 = kubectl_json(n, "deployment/ai-gateway-v1");
    assert_eq!(
        v1["spec"]["template"]["spec"]["containers"][0]["image"],
        "kubectl-canary/demo:2.0"
    );
    assert_eq!(
        v1["spec"]["template"]["metadata"]["labels"],
        json!({"app": "ai-gateway", "version": "v1"})
    );
    let v2 = kubectl_json(n, "deployment/ai-gateway-v2");
    assert_eq!(v2["spec"]["replicas"], 0, "the team's v2 is kept, at 0");
    assert_eq!(
        snapshot(n, &objects),
        before,
        "the team's objects as they had them"
    );
}
