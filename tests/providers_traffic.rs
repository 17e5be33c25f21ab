//! SMI, ingress-nginx and Gateway API traffic providers against the real test
//! environment: the objects they write route real requests through the test data plane
//! (Service → EndpointSlices → pod); the split is measured from the pods' own counters.
//!
//! Per provider: prepare (idempotent, user objects only created by the test), set_weight
//! 10 → 50 (read back and measured), a race of set_weight calls against foreign edits
//! (no 409 escapes, nothing lost), cleanup (idempotent; measured share back to 0; only
//! our parts removed, the user's unrelated fields/rules/backends unchanged).
//!
//! Needs the environment: `bash tests/env/setup.sh && tests/env/up`, then
//! `. ${KUBECTL_CANARY_ENV_DIR:-/tmp/kubectl-canary-env}/env.sh`.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::{Client, ResourceExt};
use kubectl_canary::providers::gateway_api::GatewayApi;
use kubectl_canary::providers::nginx::Nginx;
use kubectl_canary::providers::smi::Smi;
use kubectl_canary::providers::{HeaderRoute, Target, TrafficRouter, VersionSelectors};
use serde_json::{Value, json};
use support::{Provider, TestEnv, TestNamespace, Traffic, TrafficOptions};

const SVC: &str = "web";
const FOREIGN_ANN: &str = "example.com/owner";

fn header() -> HeaderRoute {
    HeaderRoute {
        name: "x-canary".into(),
        value: "always".into(),
    }
}

fn dyn_api(
    c: &Client,
    ns: &str,
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(group, version, kind);
    Api::namespaced_with(
        c.clone(),
        ns,
        &ApiResource::from_gvk_with_plural(&gvk, plural),
    )
}

fn trafficsplits(c: &Client, ns: &str) -> Api<DynamicObject> {
    dyn_api(
        c,
        ns,
        "split.smi-spec.io",
        "v1alpha2",
        "TrafficSplit",
        "trafficsplits",
    )
}

fn httproutes(c: &Client, ns: &str) -> Api<DynamicObject> {
    dyn_api(
        c,
        ns,
        "gateway.networking.k8s.io",
        "v1",
        "HTTPRoute",
        "httproutes",
    )
}

/// The object the provider edits for `provider` (the canary Ingress for nginx), as JSON.
async fn route_object(c: &Client, ns: &str, provider: Provider) -> Option<Value> {
    match provider {
        Provider::Smi => trafficsplits(c, ns)
            .get_opt(SVC)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap()),
        Provider::GatewayApi => httproutes(c, ns)
            .get_opt(SVC)
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap()),
        Provider::Nginx => Api::<Ingress>::namespaced(c.clone(), ns)
            .get_opt(&format!("{SVC}-canary"))
            .await
            .unwrap()
            .map(|o| serde_json::to_value(o).unwrap()),
        Provider::Istio => unreachable!(),
    }
}

/// A foreign writer adding one annotation with a merge patch (never conflicts itself, but
/// bumps the resourceVersion under a concurrent read-modify-write).
async fn foreign_annotate(c: &Client, ns: &str, provider: Provider, key: &str, value: &str) {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    let pp = PatchParams::default();
    match provider {
        Provider::Smi => {
            trafficsplits(c, ns)
                .patch(SVC, &pp, &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        Provider::GatewayApi => {
            httproutes(c, ns)
                .patch(SVC, &pp, &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        Provider::Nginx => {
            Api::<Ingress>::namespaced(c.clone(), ns)
                .patch(&format!("{SVC}-canary"), &pp, &Patch::Merge(&patch))
                .await
                .unwrap();
        }
        Provider::Istio => unreachable!(),
    }
}

/// Wait until the canary's share of the requests served over 3 s windows, starting after the
/// weight change at `since`, is within `tol` of `target`; returns it.
async fn wait_share(traffic: &Traffic, ns: &str, target: f64, tol: f64, what: &str) -> f64 {
    let timeout = Duration::from_secs(40);
    let t0 = Instant::now();
    let canary = format!("{SVC}-canary");
    let mut last = None;
    // The data plane reacts to the watch event within milliseconds; skip one window anyway.
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        traffic.assert_running();
        let served = support::measure(ns, Duration::from_secs(3)).await;
        last = served.share(&canary).or(last);
        if let Some(v) = last
            && (v - target).abs() <= tol
        {
            return v;
        }
        assert!(
            t0.elapsed() < timeout,
            "{what}: measured canary share did not reach {target}±{tol} within {timeout:?} \
             (last {last:?}; {served:?})"
        );
    }
}

/// Create the user's objects for `provider` (as a user would before a rollout).
async fn user_objects(c: &Client, ns: &str, provider: Provider) {
    support::create_stable(c, ns, SVC, 1, false).await;
    match provider {
        // No TrafficSplit: prepare creates it (and the -stable/-canary Services).
        Provider::Smi => {}
        Provider::Nginx => {
            support::apply_value(
                c,
                ns,
                json!({
                    "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                    "metadata": {"name": SVC, "annotations": {
                        FOREIGN_ANN: "team-a",
                        "nginx.ingress.kubernetes.io/proxy-body-size": "8m"}},
                    "spec": {
                        "ingressClassName": "nginx",
                        "tls": [{"hosts": ["web.test"], "secretName": "web-tls"}],
                        "rules": [
                            {"host": "web.test", "http": {"paths": [
                                {"path": "/", "pathType": "Prefix",
                                 "backend": {"service": {"name": SVC, "port": {"number": 80}}}},
                                {"path": "/admin", "pathType": "Prefix",
                                 "backend": {"service": {"name": "admin", "port": {"number": 8080}}}}
                            ]}},
                            {"host": "other.test", "http": {"paths": [
                                {"path": "/", "pathType": "Prefix",
                                 "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                            ]}}
                        ]
                    }
                }),
            )
            .await;
        }
        Provider::GatewayApi => {
            // The route targets <svc>-stable; the user keeps that Service.
            support::apply_value(
                c,
                ns,
                json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("{SVC}-stable")},
                    "spec": {"selector": {"app": SVC, "version": "v1"},
                             "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
                }),
            )
            .await;
            support::apply_value(
                c,
                ns,
                json!({
                    "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                    "metadata": {"name": SVC, "annotations": {FOREIGN_ANN: "team-a"}},
                    "spec": {
                        "parentRefs": [{"name": "test-gateway"}],
                        "hostnames": ["web.test"],
                        "rules": [
                            {"matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                             "timeouts": {"request": "10s"},
                             "backendRefs": [
                                {"name": format!("{SVC}-stable"), "port": 80},
                                {"name": "web-legacy", "port": 80, "weight": 0}]},
                            {"matches": [{"path": {"type": "PathPrefix", "value": "/other"}}],
                             "backendRefs": [{"name": "other", "port": 8080}]}
                        ]
                    }
                }),
            )
            .await;
        }
        Provider::Istio => unreachable!(),
    }
}

/// What "the user's parts" are, captured before we touch anything (or right after
/// the foreign edit for SMI, whose TrafficSplit prepare creates).
fn user_parts(provider: Provider, obj: &Value) -> Value {
    match provider {
        Provider::Smi => json!({
            "service": obj["spec"]["service"],
            "legacy": obj["spec"]["backends"].as_array().unwrap().iter()
                .find(|b| b["service"] == "web-legacy").cloned(),
            "ann": obj["metadata"]["annotations"][FOREIGN_ANN],
        }),
        Provider::GatewayApi => json!({
            "spec": obj["spec"],
            "ann": obj["metadata"]["annotations"][FOREIGN_ANN],
        }),
        _ => obj.clone(),
    }
}

async fn provider_round_trip<R>(router: R, provider: Provider)
where
    R: TrafficRouter + Clone + 'static,
{
    let t0 = Instant::now();
    TestEnv::get();
    let ns = TestNamespace::create(&format!("prov-{}", provider.short())).await;
    let c = ns.client.clone();
    let mut target = Target::new(&ns.name, SVC);
    // Selectors as a rollout resolves them (placeholders until the Deployments exist).
    target.pods = Some(VersionSelectors {
        stable: BTreeMap::from([("app".to_string(), SVC.to_string())]),
        canary: BTreeMap::from([("app".to_string(), SVC.to_string())]),
    });
    let name = provider.short();

    // Errors name the object and say what to do.
    match router.prepare(&c, &target, &[]).await {
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&ns.name) && msg.contains(SVC),
                "{name}: unhelpful error: {msg}"
            );
            eprintln!("{name}: prepare without user objects: {msg}");
        }
        Ok(()) => panic!("{name}: prepare without the user's objects must fail"),
    }
    assert_eq!(router.read_weight(&c, &target).await.unwrap(), None);

    user_objects(&c, &ns.name, provider).await;
    let nginx_primary_before = if provider == Provider::Nginx {
        Some(
            Api::<Ingress>::namespaced(c.clone(), &ns.name)
                .get(SVC)
                .await
                .unwrap(),
        )
    } else {
        None
    };
    let gateway_before = if provider == Provider::GatewayApi {
        Some(user_parts(
            provider,
            &route_object(&c, &ns.name, provider).await.unwrap(),
        ))
    } else {
        None
    };

    // A canary Deployment as a rollout adds it; traffic from the provider's entry.
    support::create_canary(&c, &ns.name, SVC, 1, support::TEST_IMAGE).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let (stable_dep, canary_dep) = (
        deps.get(SVC).await.unwrap(),
        deps.get(&format!("{SVC}-canary")).await.unwrap(),
    );
    target.pods = Some(
        kubectl_canary::cluster::workloads::version_selectors(
            &c,
            &ns.name,
            &stable_dep,
            &canary_dep,
        )
        .await
        .unwrap(),
    );
    eprintln!("{name}: pinned selectors {:?}", target.pods);
    let traffic = Traffic::start_with(
        &ns.name,
        provider.via(),
        &provider.entry_host(SVC),
        TrafficOptions::at(150.0, 240),
    );

    // prepare (twice: idempotent; the second call writes nothing).
    let hdr = header();
    let header_arg: &[HeaderRoute] = if provider != Provider::Smi {
        std::slice::from_ref(&hdr)
    } else {
        &[]
    };
    if provider == Provider::Smi {
        let e = router
            .prepare(&c, &target, std::slice::from_ref(&hdr))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("header"), "{e}");
    }
    router.prepare(&c, &target, header_arg).await.unwrap();
    let rv1 =
        route_object(&c, &ns.name, provider).await.unwrap()["metadata"]["resourceVersion"].clone();
    router.prepare(&c, &target, header_arg).await.unwrap();
    let prepared = route_object(&c, &ns.name, provider).await.unwrap();
    assert_eq!(
        prepared["metadata"]["resourceVersion"], rv1,
        "{name}: repeated prepare wrote again"
    );
    assert_eq!(router.read_weight(&c, &target).await.unwrap(), Some(0));
    let canary_svc = Api::<Service>::namespaced(c.clone(), &ns.name)
        .get(&target.canary_service)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{name}: prepare did not create {}: {e}",
                target.canary_service
            )
        });
    assert_eq!(
        canary_svc.spec.as_ref().unwrap().selector.as_ref().unwrap(),
        &BTreeMap::from([
            ("app".to_string(), SVC.to_string()),
            ("track".to_string(), "canary".to_string())
        ])
    );
    eprintln!(
        "{name}: prepared object: {}",
        serde_json::to_string(&prepared).unwrap()
    );
    match provider {
        Provider::Nginx => {
            let ann = &prepared["metadata"]["annotations"];
            assert_eq!(ann["nginx.ingress.kubernetes.io/canary"], "true");
            assert_eq!(ann["nginx.ingress.kubernetes.io/canary-weight"], "0");
            assert_eq!(
                ann["nginx.ingress.kubernetes.io/canary-by-header"],
                "x-canary"
            );
            assert_eq!(
                ann["nginx.ingress.kubernetes.io/canary-by-header-value"],
                "always"
            );
            assert_eq!(
                prepared["spec"],
                json!({
                    "ingressClassName": "nginx",
                    "tls": [{"hosts": ["web.test"], "secretName": "web-tls"}],
                    "rules": [{"host": "web.test", "http": {"paths": [
                        {"path": "/", "pathType": "Prefix",
                         "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}]}}]
                })
            );
        }
        Provider::GatewayApi => {
            let rules = prepared["spec"]["rules"].as_array().unwrap();
            assert_eq!(rules.len(), 3, "{rules:?}");
            assert_eq!(
                rules[2]["backendRefs"],
                json!([{"name": "web-canary", "port": 80}])
            );
            assert_eq!(
                rules[2]["matches"],
                json!([{"path": {"type": "PathPrefix", "value": "/"},
                        "headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]}])
            );
        }
        Provider::Smi => {
            // The user's own later edits: an unrelated backend and annotation.
            let ts = trafficsplits(&c, &ns.name);
            let mut o = ts.get(SVC).await.unwrap();
            o.data["spec"]["backends"]
                .as_array_mut()
                .unwrap()
                .push(json!({"service": "web-legacy", "weight": 0}));
            o.annotations_mut()
                .insert(FOREIGN_ANN.into(), "team-a".into());
            ts.replace(SVC, &Default::default(), &o).await.unwrap();
        }
        Provider::Istio => unreachable!(),
    }
    let user_before = match provider {
        Provider::Smi => user_parts(
            provider,
            &route_object(&c, &ns.name, provider).await.unwrap(),
        ),
        _ => gateway_before.clone().unwrap_or(Value::Null),
    };

    support::wait_serving(&ns.name, SVC, 1, Duration::from_secs(60)).await;
    support::wait_serving(
        &ns.name,
        &format!("{SVC}-canary"),
        1,
        Duration::from_secs(60),
    )
    .await;

    // 10 %, twice (idempotent).
    router.set_weight(&c, &target, 10).await.unwrap();
    router.set_weight(&c, &target, 10).await.unwrap();
    assert_eq!(router.read_weight(&c, &target).await.unwrap(), Some(10));
    let at10 = wait_share(&traffic, &ns.name, 0.10, 0.05, &format!("{name} weight 10")).await;

    // 50 %.
    router.set_weight(&c, &target, 50).await.unwrap();
    assert_eq!(router.read_weight(&c, &target).await.unwrap(), Some(50));
    let at50 = wait_share(&traffic, &ns.name, 0.50, 0.08, &format!("{name} weight 50")).await;
    eprintln!(
        "{name}: written object at 50: {}",
        serde_json::to_string(&route_object(&c, &ns.name, provider).await.unwrap()["spec"])
            .unwrap()
    );

    assert!(router.set_weight(&c, &target, 101).await.is_err());

    // Race: set_weight calls against each other and against foreign annotation edits.
    let weights = [20u32, 30, 40, 60, 70, 80];
    let mut tasks = Vec::new();
    for (i, w) in weights.into_iter().enumerate() {
        let (r, c2, t) = (router.clone(), c.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            r.set_weight(&c2, &t, w).await.map_err(|e| e.to_string())
        }));
        let (c, ns_name) = (c.clone(), ns.name.clone());
        tasks.push(tokio::spawn(async move {
            foreign_annotate(
                &c,
                &ns_name,
                provider,
                &format!("example.com/race-{i}"),
                "x",
            )
            .await;
            Ok(())
        }));
    }
    for task in tasks {
        task.await
            .unwrap()
            .unwrap_or_else(|e| panic!("{name}: racing write failed: {e}"));
    }
    let raced = route_object(&c, &ns.name, provider).await.unwrap();
    for i in 0..weights.len() {
        assert_eq!(
            raced["metadata"]["annotations"][format!("example.com/race-{i}")],
            "x",
            "{name}: foreign edit {i} lost: {raced}"
        );
    }
    let w = router.read_weight(&c, &target).await.unwrap().unwrap();
    assert!(
        weights.contains(&w),
        "{name}: weight {w} after race is not one that was set"
    );
    match provider {
        Provider::Smi => {
            let b = raced["spec"]["backends"].as_array().unwrap();
            let get = |s: &str| {
                b.iter()
                    .filter(|x| x["service"] == s)
                    .map(|x| x["weight"].as_u64().unwrap())
                    .collect::<Vec<_>>()
            };
            assert_eq!(get("web-stable"), vec![100 - w as u64], "{raced}");
            assert_eq!(get("web-canary"), vec![w as u64], "{raced}");
        }
        Provider::GatewayApi => {
            let refs = raced["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
            assert_eq!(
                refs.len(),
                3,
                "{name}: one stable, one canary, the user's legacy ref: {refs:?}"
            );
            assert_eq!(refs[0]["weight"], 100 - w);
            assert_eq!(
                refs[1],
                json!({"name": "web-canary", "port": 80, "weight": w})
            );
        }
        _ => {}
    }
    eprintln!("{name}: race settled at weight {w}, all 6 foreign edits kept");
    router.set_weight(&c, &target, 50).await.unwrap();

    // Weight 0 with the canary still running: no request reaches it (the stable side is
    // pinned to stable's pods even where the user's Service selects both).
    router.set_weight(&c, &target, 0).await.unwrap();
    let at0 = wait_share(&traffic, &ns.name, 0.0, 0.0, &format!("{name} weight 0")).await;
    // The lifecycle's order: canary gone, then cleanup, twice.
    kubectl_canary::cluster::workloads::scale(&c, &ns.name, &format!("{SVC}-canary"), 0)
        .await
        .unwrap();
    kubectl_canary::cluster::workloads::wait_pods_gone(
        &c,
        &ns.name,
        &format!("{SVC}-canary"),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    router.cleanup(&c, &target).await.unwrap();
    router.cleanup(&c, &target).await.unwrap();
    assert_eq!(router.read_weight(&c, &target).await.unwrap(), None);
    let after_cleanup = wait_share(
        &traffic,
        &ns.name,
        0.0,
        0.0,
        &format!("{name} after cleanup"),
    )
    .await;
    // Nothing was left without an upstream on the way.
    let served = support::measure(&ns.name, Duration::from_secs(2)).await;
    assert_eq!(served.no_upstream(), 0, "{name}: {served:?}");
    assert!(
        Api::<Service>::namespaced(c.clone(), &ns.name)
            .get_opt(&target.canary_service)
            .await
            .unwrap()
            .is_none(),
        "{name}: cleanup left the {} Service it created",
        target.canary_service
    );
    match provider {
        Provider::Nginx => {
            assert!(
                route_object(&c, &ns.name, provider).await.is_none(),
                "canary Ingress left behind"
            );
            let primary = Api::<Ingress>::namespaced(c.clone(), &ns.name)
                .get(SVC)
                .await
                .unwrap();
            let before = nginx_primary_before.unwrap();
            assert_eq!(
                primary.resource_version(),
                before.resource_version(),
                "primary Ingress was modified"
            );
            assert_eq!(primary.spec, before.spec);
        }
        Provider::Smi => {
            let ts = route_object(&c, &ns.name, provider).await.unwrap();
            assert_eq!(user_parts(provider, &ts), user_before, "{ts}");
            assert_eq!(
                ts["spec"]["backends"],
                json!([{"service": "web-stable", "weight": 100}, {"service": "web-legacy", "weight": 0}])
            );
            assert!(
                Api::<Service>::namespaced(c.clone(), &ns.name)
                    .get_opt("web-stable")
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        Provider::GatewayApi => {
            let hr = route_object(&c, &ns.name, provider).await.unwrap();
            assert_eq!(
                user_parts(provider, &hr),
                user_before,
                "user's HTTPRoute changed: {hr}"
            );
            assert!(
                hr["metadata"]["annotations"]
                    .get("kubectl-canary.io/stable-weight")
                    .is_none(),
                "{hr}"
            );
        }
        Provider::Istio => unreachable!(),
    }
    eprintln!(
        "{name}: measured canary share {at10:.3} at weight 10, {at50:.3} at weight 50, \
         {at0:.3} at weight 0, {after_cleanup:.3} after cleanup; {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    drop(traffic);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smi_trafficsplit_provider() {
    provider_round_trip(Smi::new(), Provider::Smi).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_canary_ingress_provider() {
    provider_round_trip(Nginx::new(), Provider::Nginx).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_httproute_provider() {
    provider_round_trip(GatewayApi::new(), Provider::GatewayApi).await;
}
