//! Proves the test environment is real: a Kubernetes control plane that runs
//! Deployments on kwok nodes (Ready for minutes, no node flapping), enforces RBAC,
//! Prometheus scraping the pods' processes, injected faults showing up in metrics, and
//! crash-looping pods. The data plane's routing is tested in `dataplane.rs`.
//!
//! Needs the environment from `bash tests/run.sh` (see tests/env/README.md).

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;
use support::{Provider, TestEnv, TestNamespace, Traffic, TrafficOptions, wait_for};

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn rs_image(rs: &ReplicaSet) -> String {
    rs.spec
        .template
        .as_ref()
        .and_then(|t| t.spec.as_ref())
        .map(|s| s.containers[0].image.clone().unwrap_or_default())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_runs_on_kwok_nodes_and_rolls_out() {
    let env = TestEnv::get();
    let ns = TestNamespace::create("env-deploy").await;
    let c = ns.client.clone();

    if !env.external {
        let v = c.apiserver_version().await.expect("GET /version");
        assert_eq!(
            v.git_version, "v1.36.3",
            "/version must report the pinned release"
        );
    }

    support::create_stable(&c, &ns.name, "web", 3, true).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    let rss: Api<ReplicaSet> = Api::namespaced(c.clone(), &ns.name);

    wait_for(
        Duration::from_secs(60),
        "Deployment web: 3 ready replicas",
        || {
            let deps = deps.clone();
            async move {
                let d = deps.get("web").await.unwrap();
                d.status.and_then(|s| s.ready_replicas) == Some(3)
            }
        },
    )
    .await;

    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 3);
    for p in &list.items {
        let name = p.metadata.name.clone().unwrap_or_default();
        let spec = p.spec.as_ref().unwrap();
        let node = spec.node_name.clone().unwrap_or_default();
        if !env.external {
            assert!(
                node.starts_with("kwok-node-"),
                "pod {name} scheduled on {node:?}"
            );
        }
        assert!(pod_ready(p), "pod {name} not Ready");
        assert!(
            p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some(),
            "pod {name} has no IP"
        );
        // ServiceAccount admission injected the API access token volume,
        // which needs the default ServiceAccount and the token signer.
        let vols = spec.volumes.clone().unwrap_or_default();
        assert!(
            vols.iter().any(|v| v.name.starts_with("kube-api-access-")),
            "pod {name} has no service account token volume: {vols:?}"
        );
    }

    // Rollout: new image -> new ReplicaSet ready, old one scaled to 0.
    deps.patch(
        "web",
        &PatchParams::default(),
        &Patch::Strategic(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "kubectl-canary/demo:2.0"}
        ]}}}})),
    )
    .await
    .unwrap();
    wait_for(
        Duration::from_secs(90),
        "rollout of web to demo:2.0 to complete",
        || {
            let (deps, rss) = (deps.clone(), rss.clone());
            async move {
                let d = deps.get("web").await.unwrap();
                let gen_ = d.metadata.generation.unwrap_or(0);
                let Some(s) = d.status else { return false };
                let done = s.observed_generation.unwrap_or(0) >= gen_
                    && s.updated_replicas == Some(3)
                    && s.ready_replicas == Some(3)
                    && s.available_replicas == Some(3)
                    && s.replicas == Some(3);
                if !done {
                    return false;
                }
                let list = rss
                    .list(&ListParams::default().labels("app=web"))
                    .await
                    .unwrap();
                let old_gone = list
                    .items
                    .iter()
                    .filter(|r| rs_image(r) != "kubectl-canary/demo:2.0")
                    .all(|r| {
                        r.spec.replicas == Some(0)
                            && r.status.as_ref().map(|s| s.replicas) == Some(0)
                    });
                let new_ready = list.items.iter().any(|r| {
                    rs_image(r) == "kubectl-canary/demo:2.0"
                        && r.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
                });
                list.items.len() == 2 && old_gone && new_ready
            }
        },
    )
    .await;
    let list = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let images: Vec<String> = list
        .items
        .iter()
        .map(|p| {
            p.spec.as_ref().unwrap().containers[0]
                .image
                .clone()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        images.len() == 3 && images.iter().all(|i| i == "kubectl-canary/demo:2.0"),
        "after the rollout only new pods remain: {images:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_is_enforced() {
    let env = TestEnv::get();
    let ns = TestNamespace::create("env-rbac").await;
    let c = ns.client.clone();
    support::apply(
        &c,
        &ns.name,
        r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader}
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: alice-reads-pods}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}
"#,
    )
    .await;
    // The admin can read Secrets (sanity check that the call itself works).
    Api::<Secret>::namespaced(c.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("admin lists secrets");

    let alice = env.client_as("alice", &[]).await;
    let forbidden = |r: Result<_, kube::Error>, what: &str| match r {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{what}: expected 403, got {s:?}"),
        Err(e) => panic!("{what}: expected 403 Forbidden, got error {e}"),
        Ok(_) => panic!("{what}: expected 403 Forbidden, but it was allowed"),
    };
    // RBAC caches are updated asynchronously; the binding is effective quickly.
    wait_for(
        Duration::from_secs(20),
        "alice may list pods in the test namespace",
        || {
            let alice = alice.clone();
            let ns = ns.name.clone();
            async move {
                Api::<Pod>::namespaced(alice, &ns)
                    .list(&ListParams::default())
                    .await
                    .is_ok()
            }
        },
    )
    .await;
    forbidden(
        Api::<Secret>::namespaced(alice.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "alice lists secrets",
    );
    forbidden(
        Api::<Pod>::namespaced(alice.clone(), "kube-system")
            .list(&ListParams::default())
            .await
            .map(|_| ()),
        "alice lists pods in kube-system",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_fault_raises_canary_error_rate() {
    TestEnv::get();
    let ns = TestNamespace::create("env-fault").await;
    let c = ns.client.clone();
    let svc = "web";
    support::create_stable(&c, &ns.name, svc, 1, false).await;
    support::create_canary(&c, &ns.name, svc, 1, support::TEST_IMAGE).await;
    support::set_route(&c, &ns.name, Provider::Istio, svc, "web-route", 50).await;
    support::wait_serving(&ns.name, svc, 1, Duration::from_secs(60)).await;
    support::wait_serving(&ns.name, "web-canary", 1, Duration::from_secs(60)).await;
    let traffic = Traffic::start_with(&ns.name, "istio", svc, TrafficOptions::at(60.0, 120));
    let n = &ns.name;
    let err_ratio = |version: &str| {
        format!(
            "sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{n}\",destination_version=\"{version}\",response_code=~\"5..\"}}[5s])) / sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"{n}\",destination_version=\"{version}\"}}[5s]))"
        )
    };
    let (qc, qs) = (err_ratio("v2"), err_ratio("v1"));
    // Healthy first: both versions get traffic and no errors.
    wait_for(
        Duration::from_secs(30),
        "healthy canary: traffic with 0 % errors",
        || {
            let qc = qc.clone();
            async move { support::prom_query(&qc).await == Some(0.0) }
        },
    )
    .await;

    support::inject_fault(
        n,
        "web-canary",
        json!({"error_rate": 0.5, "kafka_lag": 5000}),
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        &format!("canary error ratio ≈ 0.5 ({qc})"),
        || {
            let qc = qc.clone();
            async move {
                support::prom_query(&qc)
                    .await
                    .is_some_and(|v| (0.3..=0.7).contains(&v))
            }
        },
    )
    .await;
    traffic.assert_running();
    assert_eq!(
        support::prom_query(&qs).await,
        Some(0.0),
        "stable must stay healthy"
    );
    // Linkerd's view of the same requests agrees.
    let linkerd = format!(
        "sum(rate(response_total{{direction=\"inbound\",namespace=\"{n}\",deployment=\"{svc}-canary\",classification=\"failure\"}}[5s])) / sum(rate(response_total{{direction=\"inbound\",namespace=\"{n}\",deployment=\"{svc}-canary\"}}[5s]))"
    );
    let v = support::prom_query(&linkerd)
        .await
        .expect("linkerd failure ratio");
    assert!((0.25..=0.75).contains(&v), "linkerd failure ratio {v}");
    // The pods' own counters agree too.
    let served = support::measure(n, Duration::from_secs(3)).await;
    let canary_err =
        served.errors_by_deployment["web-canary"] as f64 / served.of("web-canary") as f64;
    assert!((0.25..=0.75).contains(&canary_err), "{served:?}");
    assert_eq!(served.errors_by_deployment.get(svc), Some(&0), "{served:?}");
    // Service signal for hooks.
    let lag =
        format!("kafka_consumergroup_lag{{consumergroup=\"{svc}-canary\",topic=\"{svc}-events\"}}");
    wait_for(
        Duration::from_secs(10),
        "kafka lag 5000 on the canary",
        || {
            let lag = lag.clone();
            async move { support::prom_query(&lag).await == Some(5000.0) }
        },
    )
    .await;
}

/// kwok's nodes keep their leases, so the node lifecycle controller never marks them (and
/// every pod) NotReady: a Deployment stays Ready for 5 minutes and the controller-manager
/// never enters disruption mode. (Before node leases, nodes flapped about every 55 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_stay_ready_for_five_minutes() {
    let env = TestEnv::get();
    if env.external {
        eprintln!("node heartbeats are kwok's; not checked on an external cluster");
        return;
    }
    let ns = TestNamespace::create("env-steady").await;
    let c = ns.client.clone();
    support::create_stable(&c, &ns.name, "steady", 3, false).await;
    let deps: Api<Deployment> = Api::namespaced(c.clone(), &ns.name);
    let ready = || {
        let deps = deps.clone();
        async move {
            deps.get("steady")
                .await
                .ok()
                .and_then(|d| d.status)
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0)
        }
    };
    wait_for(Duration::from_secs(60), "3 ready replicas", || async {
        ready().await == 3
    })
    .await;
    let log = env
        .env_dir
        .as_ref()
        .map(|d| d.join("logs/kube-controller-manager.log"));
    let disruptions = || {
        log.as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .map(|t| t.matches("Entering master disruption mode").count())
            .unwrap_or(0)
    };
    let before = disruptions();
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.clone(), "kube-node-lease");
    let renew_of = |l: &k8s_openapi::api::coordination::v1::Lease| {
        l.spec.as_ref().and_then(|s| s.renew_time.clone())
    };
    let first = leases
        .get("kwok-node-0")
        .await
        .expect("node lease of kwok-node-0");
    let t0 = std::time::Instant::now();
    let mut min_ready = 3;
    while t0.elapsed() < Duration::from_secs(300) {
        min_ready = min_ready.min(ready().await);
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
        for node in nodes.list(&ListParams::default()).await.unwrap() {
            let ok = node
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            assert!(
                ok,
                "node {:?} not Ready after {:?}",
                node.metadata.name,
                t0.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(min_ready, 3, "a replica went NotReady during 5 minutes");
    assert_eq!(
        disruptions(),
        before,
        "controller-manager entered disruption mode"
    );
    let last = leases.get("kwok-node-0").await.unwrap();
    assert_ne!(
        renew_of(&first),
        renew_of(&last),
        "the node lease is renewed"
    );
    eprintln!(
        "3/3 replicas Ready and all nodes Ready for {:?}",
        t0.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelled_pods_crash_loop_or_stay_unready() {
    let env = TestEnv::get();
    if env.external {
        eprintln!(
            "crash-loop behaviour comes from the kwok stages of the local environment; not checked on an external cluster"
        );
        return;
    }
    let ns = TestNamespace::create("env-crash").await;
    let c = ns.client.clone();
    for (name, behavior) in [("crashy", "crashloop"), ("sleepy", "unready")] {
        support::apply_value(
            &c,
            &ns.name,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": name}},
                    "template": {
                        "metadata": {"labels": {"app": name, "canary-demo/behavior": behavior}},
                        "spec": {"containers": [{"name": "app", "image": support::TEST_IMAGE}]}
                    }
                }
            }),
        )
        .await;
    }
    let pods: Api<Pod> = Api::namespaced(c.clone(), &ns.name);
    wait_for(
        Duration::from_secs(60),
        "crashy pod: restartCount >= 3, CrashLoopBackOff, not Ready",
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=crashy"))
                    .await
                    .unwrap();
                list.items.iter().any(|p| {
                    let cs = p
                        .status
                        .as_ref()
                        .and_then(|s| s.container_statuses.clone())
                        .unwrap_or_default();
                    !pod_ready(p)
                        && cs.iter().any(|c| {
                            c.restart_count >= 3
                                && !c.ready
                                && c.state
                                    .as_ref()
                                    .and_then(|s| s.waiting.as_ref())
                                    .and_then(|w| w.reason.as_deref())
                                    == Some("CrashLoopBackOff")
                        })
                })
            }
        },
    )
    .await;
    wait_for(
        Duration::from_secs(30),
        "sleepy pod: Running but not Ready",
        || {
            let pods = pods.clone();
            async move {
                let list = pods
                    .list(&ListParams::default().labels("app=sleepy"))
                    .await
                    .unwrap();
                list.items.iter().any(|p| {
                    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                        && !pod_ready(p)
                })
            }
        },
    )
    .await;
    let deps: Api<Deployment> = Api::namespaced(c, &ns.name);
    for name in ["crashy", "sleepy"] {
        let d = deps.get(name).await.unwrap();
        let ready = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
        assert_eq!(ready, 0, "{name} must have no ready replicas");
    }
}
