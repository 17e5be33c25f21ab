//! The lifecycle's live cases (issue 10): a rollback during a slow promote restores stable's
//! previous template, and the canary's capacity follows its weight (F3); a stale writer cannot
//! undo a rollback (F1); operators with skewed clocks agree on soak and lease (F8). Real control plane,
//! Prometheus and data plane; traffic is counted by the pods.

mod e2e_common;

use e2e_common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kubectl_canary::core::rollout::Fence;
use kubectl_canary::providers::{Router, Target};
use serde_json::json;
use std::time::Duration;

fn replicas(d: &Deployment) -> i32 {
    d.spec.replicas.unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread")]
async fn rollback_during_a_slow_promote_restores_stable() {
    let svc = "web";
    let p = Provider::Istio;
    let (ns, _traffic) = setup("e2e-f3", svc, p, 100.0).await;
    let before = deployment(&ns.client, &ns.name, svc).await.unwrap();
    let old_image = image_of(&before);
    let out = start(&ns.name, svc, p, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start");
    let canary_name = format!("{svc}-canary");
    let canary = deployment(&ns.client, &ns.name, &canary_name)
        .await
        .unwrap();
    assert_eq!(
        replicas(&canary),
        1,
        "5% of 2 stable pods needs one canary pod"
    );

    // A slow stable rollout: new pods count as available only after 20 s (the old ones
    // have been ready longer by then, so restoring them is quick).
    let api: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    api.patch(
        svc,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minReadySeconds": 20}})),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;

    let template_hashes = |pods: Vec<PodCount>| -> std::collections::BTreeSet<String> {
        pods.into_iter()
            .filter(|p| p.live && p.deployment.as_deref() == Some(svc))
            .filter_map(|p| p.labels.get("pod-template-hash").cloned())
            .collect()
    };
    let old_hashes = template_hashes(mesh_pods(&ns.name).await);
    assert_eq!(old_hashes.len(), 1, "{old_hashes:?}");
    let mut promote = kc(&ns.name, &["promote", svc]).spawn().expect("promote");
    wait_for(
        Duration::from_secs(60),
        "stable takes the canary's template",
        || {
            let client = ns.client.clone();
            let ns = ns.name.clone();
            async move {
                deployment(&client, &ns, svc)
                    .await
                    .is_some_and(|d| image_of(&d) == NEW_IMAGE)
            }
        },
    )
    .await;
    let canary = deployment(&ns.client, &ns.name, &canary_name)
        .await
        .unwrap();
    assert_eq!(
        replicas(&canary),
        2,
        "before it carries 100% the canary has stable's replica count"
    );
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "Promoting", "{st}");

    let out = kc_out(
        &ns.name,
        &["rollback", svc, "--reason", "drill during promote"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "rollback ends RolledBack");
    let _ = promote.kill().await;

    let stable = deployment(&ns.client, &ns.name, svc).await.unwrap();
    assert_eq!(
        image_of(&stable),
        old_image,
        "stable's previous template is back"
    );
    let labels = stable
        .spec
        .template
        .metadata
        .clone()
        .unwrap()
        .labels
        .unwrap();
    assert_eq!(labels.get("version").map(String::as_str), Some("v1"));
    let st = status_json(&ns.name, svc).await;
    assert_eq!(st["phase"], "RolledBack", "{st}");
    let history = history_json(&ns.name, svc).await;
    let events: Vec<&str> = history["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap())
        .collect();
    assert!(
        events.ends_with(&["begin_promote", "begin_rollback", "rollback_done"]),
        "{events:?}"
    );
    assert!(
        history["current"]["rollout"]["history"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("previous template restored")
    );

    // Everything reaches stable's pods of the old template, nothing is dropped.
    wait_serving(&ns.name, svc, 2, Duration::from_secs(60)).await;
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() > 100, "traffic flows: {served:?}");
    assert_eq!(served.of(svc), served.total(), "all on stable: {served:?}");
    assert_eq!(served.no_upstream(), 0, "{served:?}");
    wait_for(
        Duration::from_secs(60),
        "only the old template's pods are left",
        || {
            let ns = ns.name.clone();
            let old = old_hashes.clone();
            async move { template_hashes(mesh_pods(&ns).await) == old }
        },
    )
    .await;
    assert_no_leftovers(&ns.name, svc, p).await;
    // The killed promote left nothing to finish; a later step changes nothing.
    let out = kc_out(&ns.name, &["step", svc]).await;
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        image_of(&deployment(&ns.client, &ns.name, svc).await.unwrap()),
        old_image
    );
}

/// `kubectl-canary` run by an operator whose host clock is `skew` off ("-10m": behind).
fn kc_skewed(ns: &str, skew: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = kc(ns, args);
    c.env(kubectl_canary::cluster::clock::TEST_SKEW_ENV, skew);
    c
}

async fn weight_of(ns: &str, svc: &str) -> i64 {
    let st = status_json(ns, svc).await;
    st["desired_weight"]
        .as_i64()
        .unwrap_or_else(|| panic!("status has desired_weight: {st}"))
}

/// F8: operators whose clocks disagree share the API server's clock. Operator A's clock is
/// ten minutes behind. A starts a rollout with a 4-minute soak; operator B (right clock)
/// neither sees ten minutes in the step nor advances it early, and while A's `run` holds the
/// lease B sees it held (not lapsed ten minutes ago) and its `step` is refused.
#[tokio::test(flavor = "multi_thread")]
async fn operators_with_skewed_clocks_agree_on_soak_and_lease() {
    let svc = "web";
    let p = Provider::Istio;
    let (ns, _traffic) = setup("e2e-skew", svc, p, 100.0).await;
    let out = kc_skewed(
        &ns.name,
        "-10m",
        &[
            "start",
            svc,
            "--image",
            &format!("app={NEW_IMAGE}"),
            "--provider",
            provider_name(p),
            "--schedule-override",
            FAST,
            "--schedule-override",
            "min_step_time=4m",
            "--set",
            "min_judge=20",
            "--timeout",
            "120s",
        ],
    )
    .output()
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "start: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let st = status_json(&ns.name, svc).await;
    let in_step = st["time_in_step_secs"].as_u64().unwrap();
    assert!(
        in_step < 120,
        "B sees the step A just started as {in_step} s old: {st}"
    );

    // Enough canary requests for a verdict, far less than the soak: B's step holds.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let out = kc_out(&ns.name, &["step", svc]).await;
    assert!(
        matches!(out.status.code(), Some(0) | Some(5)),
        "step: {:?}",
        out.status
    );
    assert_eq!(
        weight_of(&ns.name, svc).await,
        5,
        "not advanced before the 4-minute soak"
    );
    // The pods get the held step's 5%, counted where the data plane sends it (about 1000
    // requests at 100/s: 5% ± 0.7%).
    let served = measure(&ns.name, Duration::from_secs(10)).await;
    let share = served.share(&format!("{svc}-canary")).unwrap_or(0.0);
    assert!(
        (0.02..=0.09).contains(&share),
        "canary share {share}: {served:?}"
    );

    // A's run holds the lease; B sees it held and its step is refused.
    let mut a = kc_skewed(&ns.name, "-10m", &["run", svc])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("run");
    wait_for(Duration::from_secs(30), "A's run holds the lease", || {
        let ns = ns.name.clone();
        async move { status_json(&ns, svc).await["runner"]["holder"].is_string() }
    })
    .await;
    let runner = status_json(&ns.name, svc).await["runner"].clone();
    assert_eq!(runner["attendance"], "held", "{runner}");
    let refused = kc_out(&ns.name, &["step", svc]).await;
    assert_eq!(
        refused.status.code(),
        Some(1),
        "step refused while A's run holds the lease"
    );
    let _ = a.kill().await;
    assert_eq!(weight_of(&ns.name, svc).await, 5);
}

/// The fence annotation the last weight write stamped on the user's VirtualService.
async fn route_fence(client: &kube::Client, ns: &str, svc: &str) -> Option<Fence> {
    let ar = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "networking.istio.io",
        "v1",
        "VirtualService",
    ));
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let vs = api.get(svc).await.unwrap();
    vs.metadata
        .annotations
        .as_ref()?
        .get("kubectl-canary.io/fence")
        .and_then(|v| Fence::decode(v))
}

/// F1 live: a writer that still holds the state from before a rollback (a `step` or `run`
/// that read it just before the rollback committed) tries to put its 5% back on the route
/// while the rollback waits out its scale-down delay. The write carries its stale fence and
/// the route refuses it: traffic stays on stable, the rollback finishes.
#[tokio::test(flavor = "multi_thread")]
async fn stale_writer_cannot_undo_a_rollback() {
    let svc = "web";
    let p = Provider::Istio;
    let (ns, _traffic) = setup("e2e-f1", svc, p, 100.0).await;
    let out = start(
        &ns.name,
        svc,
        p,
        &["--schedule-override", "scale_down_delay=40s"],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start");
    assert_eq!(route_weight(&ns.client, &ns.name, svc, p).await, Some(5));
    let stale = route_fence(&ns.client, &ns.name, svc)
        .await
        .expect("start stamped its fence on the route");

    let mut rollback = kc(&ns.name, &["rollback", svc, "--reason", "drill"])
        .spawn()
        .expect("rollback");
    wait_for(
        Duration::from_secs(30),
        "the rollback moved traffic to stable",
        || {
            let client = ns.client.clone();
            let ns = ns.name.clone();
            async move { route_weight(&client, &ns, svc, p).await == Some(0) }
        },
    )
    .await;
    let theirs = route_fence(&ns.client, &ns.name, svc).await.unwrap();
    assert!(
        theirs > stale,
        "the rollback's fence {theirs:?} outranks {stale:?}"
    );

    let router = Router::by_name(&ns.client, "istio").await.unwrap();
    let stale_target = Target {
        fence: Some(stale),
        ..Target::new(&ns.name, svc)
    };
    let refused = router
        .set_weight(&ns.client, &stale_target, 5)
        .await
        .expect_err("a write with a stale fence is refused");
    assert!(
        refused.to_string().contains("written by a newer state"),
        "{refused}"
    );
    assert_eq!(route_weight(&ns.client, &ns.name, svc, p).await, Some(0));
    let served = measure(&ns.name, Duration::from_secs(3)).await;
    assert!(served.total() > 100, "traffic flows: {served:?}");
    assert_eq!(served.of(svc), served.total(), "all on stable: {served:?}");

    let code = tokio::time::timeout(Duration::from_secs(120), rollback.wait())
        .await
        .expect("rollback finishes")
        .unwrap()
        .code();
    assert_eq!(code, Some(3), "rollback ends RolledBack");
    assert_eq!(status_json(&ns.name, svc).await["phase"], "RolledBack");
    assert_no_leftovers(&ns.name, svc, p).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rollout_started_under_the_old_label_names_carries_on() {
    // Our labels and annotations were `kubectl-canary/…` before they took the
    // `kubectl-canary.io/` prefix. A rollout in flight across the upgrade carries the old
    // names on its state ConfigMap and its canary Deployment; it is listed, stepped and
    // promoted as any other, and its state is saved under the new names.
    let svc = "web";
    let p = Provider::Istio;
    let (ns, _traffic) = setup("e2e-prefix", svc, p, 50.0).await;
    let out = start(&ns.name, svc, p, &[]).await;
    assert_eq!(out.status.code(), Some(0), "start");
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let cm_name = format!("{svc}-canary-rollout");
    // A merge patch that renames our keys as an earlier version wrote them.
    let to_old_names = |map: &std::collections::BTreeMap<String, String>| {
        let mut patch = serde_json::Map::new();
        for (k, v) in map
            .iter()
            .filter(|(k, _)| k.starts_with("kubectl-canary.io/"))
        {
            patch.insert(k.clone(), serde_json::Value::Null);
            patch.insert(
                k.replacen("kubectl-canary.io/", "kubectl-canary/", 1),
                json!(v),
            );
        }
        patch
    };
    let labels = cms.get(&cm_name).await.unwrap().metadata.labels.unwrap();
    let relabel = to_old_names(&labels);
    assert!(relabel.len() >= 4, "service and phase labels: {labels:?}");
    cms.patch(
        &cm_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": relabel}})),
    )
    .await
    .unwrap();
    let deps: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let canary_name = format!("{svc}-canary");
    let annotations = deps
        .get(&canary_name)
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    let reannotate = to_old_names(&annotations);
    assert!(!reannotate.is_empty(), "{annotations:?}");
    deps.patch(
        &canary_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": reannotate}})),
    )
    .await
    .unwrap();

    // Listed, then promoted.
    let out = kc(&ns.name, &["status", "-o", "json"])
        .output()
        .await
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && listed.contains(&ns.name) && listed.contains("Progressing"),
        "{listed}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kc(&ns.name, &["promote", svc]).output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "promote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stable = deps.get(svc).await.unwrap();
    assert_eq!(image_of(&stable), NEW_IMAGE);
    let pod_labels = stable
        .spec
        .template
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert!(
        !pod_labels
            .keys()
            .any(|k| k == "track" || k.starts_with("kubectl-canary")),
        "stable's pods carry none of our labels: {pod_labels:?}"
    );
    let labels = cms.get(&cm_name).await.unwrap().metadata.labels.unwrap();
    assert!(
        labels.contains_key("kubectl-canary.io/service")
            && !labels.keys().any(|k| k.starts_with("kubectl-canary/")),
        "saved under the new names only: {labels:?}"
    );
}
