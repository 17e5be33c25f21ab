//! The data plane's routing, request by request, against object graphs as the real
//! controllers would see them (each case names the upstream behaviour it checks).

use super::super::world::Kind;
use super::*;
use serde_json::{Value, json};

fn world(objs: &[(Kind, Value)]) -> World {
    let mut w = World::default();
    for (k, o) in objs {
        let ns = o["metadata"]["namespace"]
            .as_str()
            .unwrap_or("ns")
            .to_string();
        let name = o["metadata"]["name"].as_str().unwrap().to_string();
        w.apply(*k, (ns, name), o);
    }
    w
}

fn pod(name: &str, labels: Value) -> (Kind, Value) {
    (
        Kind::Pod,
        json!({"metadata": {"name": name, "uid": name, "labels": labels},
               "status": {"phase": "Running"}}),
    )
}

fn svc(name: &str) -> (Kind, Value) {
    (
        Kind::Service,
        json!({"metadata": {"name": name}, "spec": {"selector": {"app": name}}}),
    )
}

/// An EndpointSlice as the controller writes it.
fn slice(svc: &str, pods: &[(&str, bool)]) -> (Kind, Value) {
    let eps: Vec<Value> = pods
        .iter()
        .map(|(p, r)| {
            json!({"addresses": ["10.244.0.1"], "conditions": {"ready": r},
                             "targetRef": {"kind": "Pod", "name": p}})
        })
        .collect();
    (
        Kind::EndpointSlice,
        json!({"metadata": {"name": format!("{svc}-abcde"),
                            "labels": {"kubernetes.io/service-name": svc}},
               "endpoints": eps}),
    )
}

fn req(via: Via, host: &str, headers: &[(&str, &str)]) -> Request {
    Request {
        via,
        namespace: "ns".into(),
        host: host.into(),
        path: "/".into(),
        method: "GET".into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

/// Shares of pods (or "503"/"404"/…) over `n` deterministic requests.
fn shares(w: &World, r: &Request, n: usize) -> BTreeMap<String, f64> {
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for _ in 0..n {
        let k = match resolve(w, r, &mut rnd) {
            Outcome::Pod { pod, .. } => pod,
            Outcome::Reply { status, .. } => status.to_string(),
        };
        *out.entry(k).or_default() += 1.0 / n as f64;
    }
    out
}

fn close(m: &BTreeMap<String, f64>, k: &str, want: f64) {
    let got = m.get(k).copied().unwrap_or(0.0);
    assert!((got - want).abs() < 0.03, "{k}: {got} vs {want} in {m:?}");
}

fn bookinfo() -> Vec<(Kind, Value)> {
    vec![
        pod("reviews-v1-a", json!({"app": "reviews", "version": "v1"})),
        pod("reviews-v1-b", json!({"app": "reviews", "version": "v1"})),
        pod("reviews-v2-a", json!({"app": "reviews", "version": "v2"})),
        svc("reviews"),
        slice(
            "reviews",
            &[
                ("reviews-v1-a", true),
                ("reviews-v1-b", true),
                ("reviews-v2-a", true),
            ],
        ),
    ]
}

#[test]
fn service_selecting_two_deployments_spreads_over_all_pods() {
    let w = world(&bookinfo());
    let m = shares(&w, &req(Via::Istio, "reviews", &[]), 30_000);
    for p in ["reviews-v1-a", "reviews-v1-b", "reviews-v2-a"] {
        close(&m, p, 1.0 / 3.0);
    }
    // The FQDN is the same host.
    let m = shares(
        &w,
        &req(Via::Istio, "reviews.ns.svc.cluster.local", &[]),
        3000,
    );
    assert!(!m.contains_key("503"), "{m:?}");
}

#[test]
fn istio_subsets_header_route_first_and_empty_subset_503() {
    let mut objs = bookinfo();
    objs.push((
        Kind::DestinationRule,
        json!({"metadata": {"name": "reviews"}, "spec": {
        "host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}},
            {"name": "stable", "labels": {"track": "stable"}}]}}),
    ));
    objs.push((
        Kind::VirtualService,
        json!({"metadata": {"name": "reviews"}, "spec": {
        "hosts": ["reviews"], "http": [
            {"name": "hdr", "match": [{"headers": {"x-canary": {"exact": "yes"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"name": "main", "route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 90},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 10}]}]}}),
    ));
    let w = world(&objs);
    let m = shares(&w, &req(Via::Istio, "reviews", &[]), 30_000);
    close(&m, "reviews-v2-a", 0.10);
    close(&m, "reviews-v1-a", 0.45);
    let m = shares(
        &w,
        &req(Via::Istio, "reviews", &[("x-canary", "yes")]),
        1000,
    );
    close(&m, "reviews-v2-a", 1.0);
    // A subset selecting no pod: 503, and an unknown subset too.
    for subset in ["stable", "nope"] {
        let mut objs = objs.clone();
        objs.push((
            Kind::VirtualService,
            json!({"metadata": {"name": "reviews"}, "spec": {
            "hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": subset}, "weight": 95},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 5}]}]}}),
        ));
        let m = shares(&world(&objs), &req(Via::Istio, "reviews", &[]), 20_000);
        close(&m, "503", 0.95);
    }
}

#[test]
fn not_ready_endpoints_get_no_traffic() {
    let mut objs = bookinfo();
    objs.push(slice(
        "reviews",
        &[
            ("reviews-v1-a", true),
            ("reviews-v1-b", false),
            ("reviews-v2-a", false),
        ],
    ));
    let m = shares(&world(&objs), &req(Via::Smi, "reviews", &[]), 1000);
    close(&m, "reviews-v1-a", 1.0);
    let objs = vec![svc("empty"), slice("empty", &[("gone", false)])];
    close(
        &shares(&world(&objs), &req(Via::Istio, "empty", &[]), 100),
        "503",
        1.0,
    );
}

#[test]
fn trafficsplit_weights_are_relative() {
    let objs = vec![
        pod("web-1", json!({"app": "web"})),
        pod("web-canary-1", json!({"app": "web"})),
        svc("web"),
        svc("web-stable"),
        svc("web-canary"),
        slice("web", &[("web-1", true), ("web-canary-1", true)]),
        slice("web-stable", &[("web-1", true)]),
        slice("web-canary", &[("web-canary-1", true)]),
        (
            Kind::TrafficSplit,
            json!({"metadata": {"name": "web-split"}, "spec": {"service": "web",
            "backends": [{"service": "web-stable", "weight": 950}, {"service": "web-canary", "weight": 50}]}}),
        ),
    ];
    let m = shares(&world(&objs), &req(Via::Smi, "web", &[]), 30_000);
    close(&m, "web-canary-1", 0.05);
    close(&m, "web-1", 0.95);
}

#[test]
fn nginx_header_then_weight() {
    let ing = |name: &str, backend: &str, ann: Value| {
        (
            Kind::Ingress,
            json!({
        "metadata": {"name": name, "annotations": ann},
        "spec": {"ingressClassName": "nginx", "rules": [{"host": "shop.test", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]}}),
        )
    };
    let objs = vec![
        pod("shop-1", json!({"app": "shop"})),
        pod("shop-canary-1", json!({"app": "shop"})),
        svc("shop"),
        svc("shop-canary"),
        slice("shop", &[("shop-1", true), ("shop-canary-1", true)]),
        slice("shop-canary", &[("shop-canary-1", true)]),
        ing(
            "shop",
            "shop",
            json!({"kubernetes.io/ingress.class": "nginx"}),
        ),
        ing(
            "shop-canary",
            "shop-canary",
            json!({
            "nginx.ingress.kubernetes.io/canary": "true",
            "nginx.ingress.kubernetes.io/canary-weight": "20",
            "nginx.ingress.kubernetes.io/canary-by-header": "X-Canary"}),
        ),
    ];
    let w = world(&objs);
    // 20% via the canary Ingress + 80% × 1/2 through the primary Service, which selects
    // the canary pod too.
    let m = shares(&w, &req(Via::Nginx, "shop.test", &[]), 30_000);
    close(&m, "shop-canary-1", 0.2 + 0.8 * 0.5);
    let m = shares(
        &w,
        &req(Via::Nginx, "shop.test", &[("x-canary", "always")]),
        1000,
    );
    close(&m, "shop-canary-1", 1.0);
    let m = shares(
        &w,
        &req(Via::Nginx, "shop.test", &[("x-canary", "never")]),
        20_000,
    );
    close(&m, "shop-canary-1", 0.5);
    let m = shares(&w, &req(Via::Nginx, "other.test", &[]), 10);
    close(&m, "404", 1.0);
}

fn nginx_ingress(name: &str, host: &str, backend: &str, ann: Value) -> (Kind, Value) {
    (
        Kind::Ingress,
        json!({
    "metadata": {"name": name, "annotations": ann},
    "spec": {"ingressClassName": "nginx", "rules": [{"host": host, "http": {"paths": [
        {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": backend, "port": {"number": 80}}}}]}}]}}),
    )
}

/// A stable pod, a canary pod and the canary Ingress with `ann` (besides `canary: true`).
fn nginx_world(canary_ready: bool, ann: Value) -> World {
    let mut canary = json!({"nginx.ingress.kubernetes.io/canary": "true"});
    canary
        .as_object_mut()
        .unwrap()
        .extend(ann.as_object().unwrap().clone());
    world(&[
        pod("shop-1", json!({"app": "shop"})),
        pod("shop-canary-1", json!({"app": "shop-canary"})),
        svc("shop"),
        svc("shop-canary"),
        slice("shop", &[("shop-1", true)]),
        slice("shop-canary", &[("shop-canary-1", canary_ready)]),
        nginx_ingress("shop", "shop.test", "shop", json!({})),
        nginx_ingress("shop-canary", "shop.test", "shop-canary", canary),
    ])
}

fn labels_of(w: &World, r: &Request) -> Option<NginxLabels> {
    let mut u = || 0.0;
    match resolve(w, r, &mut u) {
        Outcome::Pod { nginx, .. } => nginx,
        other => panic!("{other:?}"),
    }
}

/// ingress-nginx `monitor.lua` + `balancer.lua`: both tracks carry the primary's Ingress
/// and Service; `canary` is the alternative upstream's name (`util.go` `upstreamName`).
#[test]
fn nginx_labels_are_the_primary_location_and_the_canary_upstream() {
    let w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "100"}),
    );
    let got = labels_of(&w, &req(Via::Nginx, "shop.test", &[]));
    assert_eq!(
        got,
        Some(NginxLabels {
            ingress: "shop".into(),
            service: "shop".into(),
            canary: "ns-shop-canary-80".into()
        })
    );
    let w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "0"}),
    );
    let got = labels_of(&w, &req(Via::Nginx, "shop.test", &[])).unwrap();
    assert_eq!((got.service.as_str(), got.canary.as_str()), ("shop", ""));
}

/// `balancer.lua`: an alternative backend without endpoints has no balancer; the request
/// stays on the primary instead of failing.
#[test]
fn nginx_canary_without_endpoints_falls_back_to_the_primary() {
    let w = nginx_world(
        false,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "100"}),
    );
    let m = shares(&w, &req(Via::Nginx, "shop.test", &[]), 1000);
    close(&m, "shop-1", 1.0);
}

/// `balancer.lua`: `canary-by-header-pattern` is `ngx.re.match`, unanchored.
#[test]
fn nginx_header_pattern_is_unanchored() {
    let w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-by-header": "x-tier",
               "nginx.ingress.kubernetes.io/canary-by-header-pattern": "beta"}),
    );
    let m = shares(
        &w,
        &req(Via::Nginx, "shop.test", &[("x-tier", "eu-beta-1")]),
        500,
    );
    close(&m, "shop-canary-1", 1.0);
    let m = shares(
        &w,
        &req(Via::Nginx, "shop.test", &[("x-tier", "stable")]),
        500,
    );
    close(&m, "shop-1", 1.0);
}

/// `balancer.lua`: `canary-weight-total` counts only when above 100.
#[test]
fn nginx_weight_total_counts_only_above_100() {
    let w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "20",
               "nginx.ingress.kubernetes.io/canary-weight-total": "50"}),
    );
    let m = shares(&w, &req(Via::Nginx, "shop.test", &[]), 20_000);
    close(&m, "shop-canary-1", 0.20);
    let w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "20",
               "nginx.ingress.kubernetes.io/canary-weight-total": "400"}),
    );
    let m = shares(&w, &req(Via::Nginx, "shop.test", &[]), 20_000);
    close(&m, "shop-canary-1", 0.05);
}

/// `controller.go` `mergeAlternativeBackends`: the canary is merged into the primary
/// *upstream*, so another Ingress (another host) on the same Service and port shares it.
#[test]
fn nginx_other_ingresses_on_the_same_upstream_share_the_canary() {
    let mut w = nginx_world(
        true,
        json!({"nginx.ingress.kubernetes.io/canary-weight": "100"}),
    );
    let (k, o) = nginx_ingress("shop-admin", "admin.test", "shop", json!({}));
    w.apply(k, ("ns".into(), "shop-admin".into()), &o);
    let got = labels_of(&w, &req(Via::Nginx, "admin.test", &[])).unwrap();
    assert_eq!(
        (
            got.ingress.as_str(),
            got.service.as_str(),
            got.canary.as_str()
        ),
        ("shop-admin", "shop", "ns-shop-canary-80")
    );
}

/// istio/api `VirtualService.gateways`: a VirtualService bound to a gateway only
/// (no `mesh`) routes that gateway's requests; in-mesh callers of the Service bypass it.
#[test]
fn a_gateway_only_virtual_service_is_bypassed_by_in_mesh_callers() {
    let objs = vec![
        pod("ai-1", json!({"app": "ai", "version": "v1"})),
        pod("ai-2", json!({"app": "ai", "version": "v2"})),
        svc("ai"),
        slice("ai", &[("ai-1", true), ("ai-2", true)]),
        (
            Kind::DestinationRule,
            json!({"metadata": {"name": "ai"}, "spec": {"host": "ai", "subsets": [
                {"name": "v1", "labels": {"version": "v1"}}]}}),
        ),
        (
            Kind::VirtualService,
            json!({"metadata": {"name": "routes"}, "spec": {"hosts": ["shop.example.com"],
                "gateways": ["edge"], "http": [{"match": [{"uri": {"prefix": "/api/ai"}}],
                "route": [{"destination": {"host": "ai", "subset": "v1"}}]}]}}),
        ),
    ];
    let w = world(&objs);
    let mut r = req(
        Via::Istio,
        "shop.example.com",
        &[("x-mesh-gateway", "edge")],
    );
    r.path = "/api/ai/chat".into();
    close(&shares(&w, &r, 1000), "ai-1", 1.0);
    // Another gateway, or a sidecar calling the external host: no route.
    let mut other = req(
        Via::Istio,
        "shop.example.com",
        &[("x-mesh-gateway", "ns2/edge")],
    );
    other.path = "/api/ai/chat".into();
    close(&shares(&w, &other, 10), "404", 1.0);
    // In-mesh callers of the Service reach every pod it selects.
    let m = shares(&w, &req(Via::Istio, "ai", &[]), 20_000);
    close(&m, "ai-2", 0.5);
}

#[test]
fn httproute_header_rule_beats_weighted_rule() {
    let objs = vec![
        pod("a-1", json!({"app": "a"})),
        pod("b-1", json!({"app": "b"})),
        svc("a"),
        svc("b"),
        slice("a", &[("a-1", true)]),
        slice("b", &[("b-1", true)]),
        (
            Kind::HttpRoute,
            json!({"metadata": {"name": "r"}, "spec": {"hostnames": ["web.test"], "rules": [
            {"backendRefs": [{"name": "a", "port": 80, "weight": 3}, {"name": "b", "port": 80, "weight": 1}]},
            {"matches": [{"headers": [{"name": "X-Canary", "value": "yes"}]}],
             "backendRefs": [{"name": "b", "port": 80}]}]}}),
        ),
    ];
    let w = world(&objs);
    let m = shares(&w, &req(Via::Gateway, "web.test", &[]), 20_000);
    close(&m, "b-1", 0.25);
    let m = shares(
        &w,
        &req(Via::Gateway, "web.test", &[("x-canary", "yes")]),
        1000,
    );
    close(&m, "b-1", 1.0);
    assert!(gw_prefix("/foo", "/foo/x") && !gw_prefix("/foo", "/foox") && gw_prefix("/", "/x"));
}

#[test]
fn workload_name_strips_the_template_hash() {
    let p = super::super::world::parse_pod(&json!({"metadata": {"name": "reviews-v1-7d9f-x",
        "labels": {"pod-template-hash": "7d9f"},
        "ownerReferences": [{"kind": "ReplicaSet", "name": "reviews-v1-7d9f"}]},
        "status": {"phase": "Running"}}));
    assert_eq!(p.deployment.as_deref(), Some("reviews-v1"));
    assert!(p.running);
}

/// GAMMA (gateway-api `geps/gep-1426`): a route whose parentRef is Service `web` splits
/// in-mesh callers of `web` (Linkerd's and Istio's), matched by the parentRef with no
/// hostnames; a header rule wins by its match; a gateway does not serve it; a route in
/// the caller's namespace (consumer) wins over the Service's (producer).
#[test]
fn gamma_routes_attach_to_the_service_they_name() {
    let mut objs = vec![
        pod("web-a", json!({"app": "web", "track": "stable"})),
        pod("web-canary-a", json!({"app": "web", "track": "canary"})),
        svc("web"),
        svc("web-canary"),
        slice("web", &[("web-a", true)]),
        slice("web-canary", &[("web-canary-a", true)]),
    ];
    objs.push((
        Kind::HttpRoute,
        json!({"metadata": {"name": "web-split", "namespace": "ns"}, "spec": {
            "parentRefs": [{"group": "core", "kind": "Service", "name": "web", "port": 80}],
            "rules": [
                {"matches": [{"headers": [{"name": "x-canary", "value": "true"}]}],
                 "backendRefs": [{"name": "web-canary", "port": 80}]},
                {"backendRefs": [{"name": "web", "port": 80, "weight": 80},
                                 {"name": "web-canary", "port": 80, "weight": 20}]}]}}),
    ));
    let w = world(&objs);
    for via in [Via::Smi, Via::Istio] {
        let m = shares(&w, &req(via, "web", &[]), 20_000);
        close(&m, "web-canary-a", 0.20);
        let m = shares(&w, &req(via, "web", &[("x-canary", "true")]), 1000);
        close(&m, "web-canary-a", 1.0);
    }
    // A gateway serves no route whose only parent is a Service.
    let m = shares(&w, &req(Via::Gateway, "web", &[]), 100);
    close(&m, "404", 1.0);
    // Without the route, Service `web` is its own endpoints.
    let m = shares(&world(&objs[..6]), &req(Via::Smi, "web", &[]), 1000);
    close(&m, "web-a", 1.0);
    // A consumer route in the caller's namespace wins over the producer route.
    let mut objs = objs.clone();
    objs.push((
        Kind::HttpRoute,
        json!({"metadata": {"name": "pin", "namespace": "client"}, "spec": {
            "parentRefs": [{"kind": "Service", "name": "web", "namespace": "ns"}],
            "rules": [{"backendRefs": [{"name": "web", "namespace": "ns", "port": 80}]}]}}),
    ));
    let w = world(&objs);
    let mut r = req(Via::Smi, "web.ns", &[]);
    r.namespace = "client".into();
    close(&shares(&w, &r, 1000), "web-a", 1.0);
}

/// Delegation (istio/api `Delegate`): the root VirtualService for the host hands the
/// requests its route matches to the delegate's routes (matched in order, on top of the
/// root's match); a delegate has no hosts of its own and is never a root.
#[test]
fn istio_delegate_virtual_service_routes_what_its_root_hands_it() {
    let mut objs = bookinfo();
    objs.push((
        Kind::DestinationRule,
        json!({"metadata": {"name": "reviews", "namespace": "ns"}, "spec": {
        "host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]}}),
    ));
    objs.push((
        Kind::VirtualService,
        json!({"metadata": {"name": "reviews", "namespace": "ns"}, "spec": {
        "hosts": ["reviews"], "http": [
            {"match": [{"uri": {"prefix": "/"}}], "delegate": {"name": "reviews-routes"}}]}}),
    ));
    objs.push((
        Kind::VirtualService,
        json!({"metadata": {"name": "reviews-routes", "namespace": "ns"}, "spec": {
        "http": [
            {"match": [{"headers": {"x-canary": {"exact": "yes"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}]}]}}),
    ));
    let w = world(&objs);
    let m = shares(&w, &req(Via::Istio, "reviews", &[]), 30_000);
    close(&m, "reviews-v2-a", 0.20);
    let m = shares(
        &w,
        &req(Via::Istio, "reviews", &[("x-canary", "yes")]),
        1000,
    );
    close(&m, "reviews-v2-a", 1.0);
    // Without the delegate, the root's route has nowhere to go.
    let m = shares(
        &world(&objs[..objs.len() - 1]),
        &req(Via::Istio, "reviews", &[]),
        100,
    );
    close(&m, "404", 1.0);
}
