//! The Deployments a rollout works with: build/create the canary from stable's pod template,
//! wait for readiness, scale/delete, promote (stable takes the canary's pod template), and the
//! pod facts the policy sees.

use crate::core::facts::PodFacts;
use crate::core::rollout::Fence;
use crate::error::{Error, Result};
use crate::providers::VersionSelectors;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const TRACK_LABEL: &str = "track";
pub const VERSION_LABEL: &str = "kubectl-canary.io/version";
pub const ROLLOUT_ANNOTATION: &str = "kubectl-canary.io/rollout";
const MANAGER: &str = "kubectl-canary";

pub fn deployments(client: &Client, ns: &str) -> Api<Deployment> {
    Api::namespaced(client.clone(), ns)
}

pub async fn get_stable(client: &Client, ns: &str, name: &str) -> Result<Deployment> {
    deployments(client, ns)
        .get_opt(name)
        .await?
        .ok_or_else(|| Error::Cluster(format!("stable Deployment {ns}/{name} not found")))
}

/// The stable Deployment of `service`: `explicit` (`--stable`) if given; else the Deployment
/// named like the service; else the one Deployment whose pod template the Service's selector
/// matches, leaving out `canary` (`<service>-canary`, or the team's `--canary`); of several,
/// the one whose pods also carry `narrow` (the route's stable subset, see
/// [`crate::providers::Router::stable_pod_labels`]). None or several is an error naming
/// the candidates.
pub async fn find_stable(
    client: &Client,
    ns: &str,
    service: &str,
    explicit: Option<&str>,
    canary: &str,
    narrow: Option<&BTreeMap<String, String>>,
) -> Result<Deployment> {
    if let Some(name) = explicit {
        return deployments(client, ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::Usage(format!("--stable {name}: no Deployment {ns}/{name}")));
    }
    if let Some(d) = deployments(client, ns).get_opt(service).await? {
        return Ok(d);
    }
    let svc: Option<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), ns).get_opt(service).await?;
    let Some(selector) = svc
        .and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .filter(|s| !s.is_empty())
    else {
        return Err(Error::Usage(format!(
            "no Deployment {ns}/{service} and no Service {ns}/{service} with a selector to find it by; pass --stable DEPLOYMENT"
        )));
    };
    let mut found: Vec<Deployment> = deployments(client, ns)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|d| d.metadata.name.as_deref() != Some(canary))
        .filter(|d| selects(&selector, &template_labels(d)))
        .collect();
    if let Some(labels) = narrow.filter(|_| found.len() > 1) {
        let narrowed: Vec<Deployment> = found
            .iter()
            .filter(|d| selects(labels, &template_labels(d)))
            .cloned()
            .collect();
        if narrowed.len() == 1 {
            return Ok(narrowed.into_iter().next().expect("one"));
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Usage(format!(
            "no Deployment in {ns} has pods that Service {service} selects ({selector:?}); pass --stable DEPLOYMENT"
        ))),
        _ => Err(Error::Usage(format!(
            "Service {service} selects the pods of several Deployments ({}); pass --stable DEPLOYMENT (and --canary DEPLOYMENT to use one of them as the canary)",
            found
                .iter()
                .filter_map(|d| d.metadata.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The labels a Deployment gives its pods.
fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

/// Parses `--image CONTAINER=IMAGE` pairs and checks the containers exist in stable.
pub fn parse_images(pairs: &[String], stable: &Deployment) -> Result<BTreeMap<String, String>> {
    let containers = container_images(stable);
    let mut out = BTreeMap::new();
    for pair in pairs {
        let (c, i) = match pair.split_once('=') {
            Some((c, i)) => (c.trim().to_string(), i.trim().to_string()),
            // A bare image is fine when there is only one container.
            None if containers.len() == 1 => (
                containers.keys().next().cloned().unwrap_or_default(),
                pair.clone(),
            ),
            None => {
                return Err(Error::Usage(format!(
                    "--image {pair:?}: expected CONTAINER=IMAGE (containers: {})",
                    containers.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        };
        if !containers.contains_key(&c) {
            return Err(Error::Usage(format!(
                "--image {pair:?}: the stable Deployment has no container {c:?} (containers: {})",
                containers.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        out.insert(c, i);
    }
    Ok(out)
}

pub fn container_images(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .template
        .spec
        .as_ref()
        .map(|ps| {
            ps.containers
                .iter()
                .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

/// A label-safe version string from the images (tag of the first image, else a hash).
pub fn version_label(images: &BTreeMap<String, String>) -> String {
    let first = images.values().next().cloned().unwrap_or_default();
    let tag = first
        .rsplit_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.contains('/'))
        .unwrap_or("");
    let clean: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    let clean = clean
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string();
    if clean.is_empty() {
        "canary".into()
    } else {
        clean
    }
}

/// Annotation on the canary Deployment: the pod labels we set on its template and the value
/// each had before (null: absent), so promote gives stable the template without them.
pub const REPLACED_LABELS_ANNOTATION: &str = "kubectl-canary.io/replaced-labels";

/// The pod template of the Deployment named `stable_name` in the manifest file `path`
/// (several YAML documents, e.g. `helm template` output; a List works too). Errors name the
/// file (and line, for YAML errors) and the Deployments found.
pub fn template_from_manifest(
    path: &std::path::Path,
    stable_name: &str,
) -> Result<k8s_openapi::api::core::v1::PodTemplateSpec> {
    let shown = path.display();
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("-f {shown}: {e}")))?;
    let mut deployments: Vec<serde_json::Value> = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_json::Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::Usage(format!("-f {shown}: {e}")))?;
        let items = match v.get("kind").and_then(serde_json::Value::as_str) {
            Some("List") => v["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![v],
        };
        deployments.extend(items.into_iter().filter(|o| o["kind"] == "Deployment"));
    }
    let name_of = |o: &serde_json::Value| o["metadata"]["name"].as_str().unwrap_or("").to_string();
    let chosen = match deployments.iter().find(|o| name_of(o) == stable_name) {
        Some(d) => d.clone(),
        None if deployments.len() == 1 => deployments[0].clone(),
        None => {
            return Err(Error::Usage(format!(
                "-f {shown}: no Deployment {stable_name:?} in it (Deployments: {})",
                if deployments.is_empty() {
                    "none".to_string()
                } else {
                    deployments
                        .iter()
                        .map(name_of)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )));
        }
    };
    serde_json::from_value(chosen["spec"]["template"].clone()).map_err(|e| {
        Error::Usage(format!(
            "-f {shown}: Deployment {}: spec.template: {e}",
            name_of(&chosen)
        ))
    })
}

/// The canary Deployment: stable's pod template (or `template`, from `-f`) with the new
/// images, `track: canary`, selector = stable's selector with `track: canary`.
pub fn canary_deployment(
    stable: &Deployment,
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    canary_name: &str,
    service: &str,
    images: &BTreeMap<String, String>,
    replicas: u32,
    extra_labels: &BTreeMap<String, String>,
) -> Result<Deployment> {
    let spec = &stable.spec;
    let mut selector = spec.selector.match_labels.clone().unwrap_or_default();
    if spec
        .selector
        .match_expressions
        .as_ref()
        .is_some_and(|e| !e.is_empty())
    {
        return Err(Error::Cluster(format!(
            "Deployment {service} uses matchExpressions in its selector; only matchLabels are supported"
        )));
    }
    let mut template = template.cloned().unwrap_or_else(|| spec.template.clone());
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    if let Some((k, v)) = selector.iter().find(|(k, v)| labels.get(*k) != Some(*v)) {
        return Err(Error::Usage(format!(
            "the canary's pod template must carry stable's selector labels, but it has {k}={:?} (stable selects {k}={v:?})",
            labels.get(k)
        )));
    }
    selector.insert(TRACK_LABEL.into(), "canary".into());
    let mut ours = BTreeMap::from([
        (TRACK_LABEL.to_string(), "canary".to_string()),
        (VERSION_LABEL.to_string(), version_label(images)),
    ]);
    ours.extend(extra_labels.clone());
    let replaced: BTreeMap<String, Option<String>> = ours
        .keys()
        .map(|k| (k.clone(), labels.get(k).cloned()))
        .collect();
    labels.extend(ours);
    let pod = template
        .spec
        .as_mut()
        .ok_or_else(|| Error::Cluster(format!("Deployment {service} has no pod spec")))?;
    for c in pod.containers.iter_mut() {
        if let Some(img) = images.get(&c.name) {
            c.image = Some(img.clone());
        }
    }
    let mut dep_labels = stable.metadata.labels.clone().unwrap_or_default();
    dep_labels.insert(TRACK_LABEL.into(), "canary".into());
    dep_labels.insert(
        crate::cluster::state::MANAGED_BY.0.into(),
        crate::cluster::state::MANAGED_BY.1.into(),
    );
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": canary_name,
            "labels": dep_labels,
            "annotations": {
                ROLLOUT_ANNOTATION: service,
                REPLACED_LABELS_ANNOTATION: serde_json::to_string(&replaced).unwrap_or_default(),
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            "template": template,
        }
    }))
    .map_err(|e| Error::Other(format!("building canary Deployment: {e}")))?;
    Ok(d)
}

/// Whether kubectl-canary created this Deployment (a canary the user keeps is not ours).
pub fn is_ours(d: &Deployment) -> bool {
    d.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(crate::cluster::state::MANAGED_BY.0))
        .is_some_and(|v| v == crate::cluster::state::MANAGED_BY.1)
}

/// A canary Deployment the user keeps (seed 002 keeps one at 0 replicas between rollouts):
/// set its containers' images and its replicas; nothing else of it changes.
pub async fn reimage_user_canary(
    client: &Client,
    ns: &str,
    name: &str,
    images: &BTreeMap<String, String>,
    replicas: u32,
) -> Result<Deployment> {
    let api = deployments(client, ns);
    for _ in 0..5 {
        let mut d = api.get(name).await?;
        let pod = d
            .spec
            .template
            .spec
            .as_mut()
            .ok_or_else(|| Error::Cluster(format!("Deployment {ns}/{name} has no pod spec")))?;
        for (c, img) in images {
            let container = pod.containers.iter_mut().find(|x| &x.name == c).ok_or_else(|| {
                Error::Usage(format!(
                    "--image {c}=…: the existing canary Deployment {ns}/{name} has no container {c:?}"
                ))
            })?;
            container.image = Some(img.clone());
        }
        d.spec.replicas = Some(replicas as i32);
        match api.replace(name, &PostParams::default(), &d).await {
            Ok(d) => return Ok(d),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Cluster(format!(
        "Deployment {ns}/{name} kept changing while re-imaging it; re-run start"
    )))
}

/// Removes the canary: ours is deleted, a canary the user keeps goes back to 0 replicas.
pub async fn remove_canary(client: &Client, ns: &str, name: &str) -> Result<&'static str> {
    match deployments(client, ns).get_opt(name).await? {
        Some(d) if !is_ours(&d) => {
            scale(client, ns, name, 0).await?;
            Ok("the user's canary scaled to 0")
        }
        _ => {
            delete(client, ns, name).await?;
            Ok("canary deleted")
        }
    }
}

/// Creates or updates the canary (server-side apply; re-running converges).
pub async fn apply_canary(client: &Client, ns: &str, d: &Deployment) -> Result<Deployment> {
    let name = d.metadata.name.clone().unwrap_or_default();
    let api = deployments(client, ns);
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(d),
        )
        .await?)
}

/// Ready replicas of the latest generation, and the desired count.
pub fn readiness(d: &Deployment) -> (u32, u32, bool) {
    let desired = d.spec.replicas.unwrap_or(1).max(0) as u32;
    let st = d.status.clone().unwrap_or_default();
    let observed = st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let ready = st.ready_replicas.unwrap_or(0).max(0) as u32;
    let updated = st.updated_replicas.unwrap_or(0).max(0) as u32;
    let total = st.replicas.unwrap_or(0).max(0) as u32;
    let done = observed
        && updated >= desired
        && ready >= desired
        && total <= desired
        && st.unavailable_replicas.unwrap_or(0) == 0;
    (ready.min(updated), desired, done)
}

/// Waits until `name` is fully rolled out, with a progress bar on stderr. Gives up early when
/// its pods crash-loop. Returns Err(reason) when not ready in time.
pub async fn wait_rolled_out(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    what: &str,
    show: bool,
) -> Result<std::result::Result<(), String>> {
    let api = deployments(client, ns);
    let bar = if show {
        let b = indicatif::ProgressBar::new(1);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {msg} [{bar:20}] {pos}/{len} ready ({elapsed})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message(what.to_string());
        b.enable_steady_tick(Duration::from_millis(120));
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let start = Instant::now();
    let outcome = loop {
        let d = api.get_opt(name).await?;
        let Some(d) = d else {
            break Err(format!("Deployment {ns}/{name} disappeared"));
        };
        let (ready, desired, done) = readiness(&d);
        bar.set_length(desired as u64);
        bar.set_position(ready as u64);
        if done {
            break Ok(());
        }
        let pods = deployment_pod_facts(client, ns, &d).await?;
        if pods.crash_looping {
            break Err(format!(
                "{what}: pods are crash-looping ({} restarts, {}/{} ready)",
                pods.restarts, pods.ready, pods.desired
            ));
        }
        if start.elapsed() >= timeout {
            break Err(format!(
                "{what}: only {ready}/{desired} pods ready after {}",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    bar.finish_and_clear();
    Ok(outcome)
}

/// The label the ReplicaSet controller puts on every pod (and ReplicaSet) of one template.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
const REVISION_ANN: &str = "deployment.kubernetes.io/revision";

fn label_query(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A list by label served from the API server's watch cache (`resourceVersion=0`) rather
/// than a quorum read: pod and ReplicaSet facts are read at every evaluation of every
/// rollout, and under load these lists were the slowest requests of a step (p99 ~1.8 s with
/// 200 rollouts). The cache trails etcd by milliseconds, as an informer would; every
/// decision on pod readiness already tolerates that (readiness grace, waits that poll).
fn watch_cache_list(selector: &BTreeMap<String, String>) -> ListParams {
    ListParams::default()
        .labels(&label_query(selector))
        .match_any()
}

/// The ReplicaSets `d` owns.
async fn replica_sets_of(client: &Client, ns: &str, d: &Deployment) -> Result<Vec<ReplicaSet>> {
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let api: Api<ReplicaSet> = Api::namespaced(client.clone(), ns);
    let list = api.list(&watch_cache_list(&selector_of(d))).await?;
    Ok(list
        .items
        .into_iter()
        .filter(|rs| {
            rs.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.uid == uid)
        })
        .collect())
}

/// The `pod-template-hash` of `d`'s current ReplicaSet (the one of its current revision).
pub async fn current_template_hash(
    client: &Client,
    ns: &str,
    d: &Deployment,
) -> Result<Option<String>> {
    let rev = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION_ANN))
        .cloned();
    let sets = replica_sets_of(client, ns, d).await?;
    let current = sets.iter().find(|rs| {
        rev.is_some()
            && rs
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(REVISION_ANN))
                == rev.as_ref()
    });
    Ok(current.and_then(|rs| {
        rs.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(POD_TEMPLATE_HASH))
            .cloned()
    }))
}

/// The selectors that pin each version's pods on labels they already carry: stable's
/// selector + its current `pod-template-hash` (the canary's pods share stable's app labels,
/// never its template hash), the canary Deployment's own selector.
pub async fn version_selectors(
    client: &Client,
    ns: &str,
    stable: &Deployment,
    canary: &Deployment,
) -> Result<VersionSelectors> {
    let name = stable.metadata.name.clone().unwrap_or_default();
    // A Deployment just updated has its new ReplicaSet within moments.
    let mut hash = None;
    for _ in 0..20 {
        let live = deployments(client, ns).get(&name).await?;
        hash = current_template_hash(client, ns, &live).await?;
        if hash.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let hash = hash.ok_or_else(|| {
        Error::Cluster(format!(
            "Deployment {ns}/{name} has no ReplicaSet for its current revision yet; wait until it has rolled out"
        ))
    })?;
    let mut stable_sel = selector_of(stable);
    stable_sel.insert(POD_TEMPLATE_HASH.into(), hash);
    Ok(VersionSelectors {
        stable: stable_sel,
        canary: selector_of(canary),
    })
}

/// Pod health of the pods Deployment `d` owns (through its ReplicaSets). Its selector alone
/// would also count the other version where both share the app labels.
pub async fn deployment_pod_facts(client: &Client, ns: &str, d: &Deployment) -> Result<PodFacts> {
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = watch_cache_list(&selector_of(d));
    // Both lists at once: they depend only on the Deployment.
    let (sets, pods) = futures::try_join!(async { replica_sets_of(client, ns, d).await }, async {
        Ok(api.list(&lp).await?)
    })?;
    Ok(pod_facts_of(d, &sets, &pods.items))
}

/// Pod health of `d` from its ReplicaSets and the pods its selector matches: only pods owned
/// by one of those ReplicaSets count (see [`deployment_pod_facts`]).
pub fn pod_facts_of<S, P>(d: &Deployment, sets: &[S], pods: &[P]) -> PodFacts
where
    S: std::borrow::Borrow<ReplicaSet>,
    P: std::borrow::Borrow<Pod>,
{
    let desired = d.spec.replicas.unwrap_or(1).max(0) as u32;
    let sets: Vec<&str> = sets
        .iter()
        .filter_map(|rs| rs.borrow().metadata.name.as_deref())
        .collect();
    let mut f = PodFacts {
        desired,
        ..Default::default()
    };
    for p in pods.iter().map(Borrow::borrow).filter(|p: &&Pod| {
        p.metadata.deletion_timestamp.is_none()
            && p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "ReplicaSet" && sets.contains(&o.name.as_str()))
    }) {
        let st = p.status.clone().unwrap_or_default();
        let ready = st
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            f.ready += 1;
        }
        for cs in st.container_statuses.iter().flatten() {
            f.restarts += cs.restart_count.max(0) as u32;
            let waiting = cs
                .state
                .as_ref()
                .and_then(|s| s.waiting.as_ref())
                .and_then(|w| w.reason.as_deref());
            if waiting == Some("CrashLoopBackOff") || (!cs.ready && cs.restart_count >= 3) {
                f.crash_looping = true;
            }
        }
    }
    f
}

/// Waits (up to `timeout`) until no pod of Deployment `name` is left.
pub async fn wait_pods_gone(
    client: &Client,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> Result<()> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        let api: Api<Pod> = Api::namespaced(client.clone(), ns);
        let left = api
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|p| {
                p.metadata.owner_references.iter().flatten().any(|o| {
                    o.kind == "ReplicaSet"
                        && o.name
                            .strip_prefix(name)
                            .is_some_and(|r| r.starts_with('-') && !r[1..].contains('-'))
                })
            })
            .count();
        if left == 0 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// Whether equality-based `selector` matches `labels` (every key present with its value).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The canary's pod selector (from the live object, else stable's selector + track: canary).
pub fn selector_of(d: &Deployment) -> BTreeMap<String, String> {
    d.spec.selector.match_labels.clone().unwrap_or_default()
}

pub async fn scale(client: &Client, ns: &str, name: &str, replicas: u32) -> Result<()> {
    let api = deployments(client, ns);
    match api
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(client: &Client, ns: &str, name: &str) -> Result<()> {
    match deployments(client, ns)
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Stable takes the canary's pod template, keeping its own selector and pod labels
/// (read-modify-write with resourceVersion, retried on conflict). Idempotent.
pub async fn promote_stable(
    client: &Client,
    ns: &str,
    stable_name: &str,
    canary: &Deployment,
    fence: Fence,
) -> Result<()> {
    let canary_template = canary.spec.template.clone();
    // The labels we set on the canary's template, with what they were before.
    let replaced: Option<BTreeMap<String, Option<String>>> = canary
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| super::state::ours(a, REPLACED_LABELS_ANNOTATION))
        .and_then(|j| serde_json::from_str(j).ok());
    let what = "promoting; re-run `kubectl canary promote`";
    modify_stable(client, ns, stable_name, fence, what, |stable| {
        let spec = &mut stable.spec;
        let mut template = canary_template.clone();
        let meta = template.metadata.get_or_insert_with(Default::default);
        match &replaced {
            // Exactly the canary's template without our labels: stable's own labels, or
            // those of the `-f` manifest (so the next `helm upgrade` changes nothing).
            Some(replaced) => {
                let labels = meta.labels.get_or_insert_with(Default::default);
                for (k, before) in replaced {
                    match before {
                        Some(v) => labels.insert(k.clone(), v.clone()),
                        None => labels.remove(k),
                    };
                }
            }
            // A canary we did not build (the user's own): stable keeps its labels.
            None => {
                let stable_meta = spec.template.metadata.clone().unwrap_or_default();
                meta.labels = stable_meta.labels.clone();
                meta.annotations = stable_meta.annotations.clone();
            }
        }
        spec.template = template;
    })
    .await
}

/// Annotation on the stable Deployment: the fence of the last lifecycle write to it.
pub const STABLE_FENCE_ANNOTATION: &str = "kubectl-canary.io/fence";

/// Refuses a write to stable by a stale operator (stable carries a newer fence), and stamps
/// ours; the caller's replace with the read resourceVersion makes check and write atomic.
fn stamp_fence(stable: &mut Deployment, fence: Fence) -> Result<()> {
    let ann = stable
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    if let Some(theirs) = ann
        .get(STABLE_FENCE_ANNOTATION)
        .and_then(|v| Fence::decode(v))
        && theirs > fence
    {
        return Err(Error::Superseded {
            ours: fence.generation,
            theirs: theirs.generation,
        });
    }
    ann.insert(STABLE_FENCE_ANNOTATION.into(), fence.encode());
    Ok(())
}

/// Stamps `fence` on stable (see [`stamp_fence`]); retried on conflict.
pub async fn claim_stable(
    client: &Client,
    ns: &str,
    stable_name: &str,
    fence: Fence,
) -> Result<()> {
    modify_stable(
        client,
        ns,
        stable_name,
        fence,
        "claiming it; re-run the command",
        |_| {},
    )
    .await
}

/// Read-modify-write of stable with its fence checked and stamped (see [`stamp_fence`]),
/// replaced with the read resourceVersion and retried on conflict.
async fn modify_stable(
    client: &Client,
    ns: &str,
    stable_name: &str,
    fence: Fence,
    what: &str,
    mut change: impl FnMut(&mut Deployment),
) -> Result<()> {
    let api = deployments(client, ns);
    for _ in 0..5 {
        let mut stable = get_stable(client, ns, stable_name).await?;
        stamp_fence(&mut stable, fence)?;
        change(&mut stable);
        match api
            .replace(stable_name, &PostParams::default(), &stable)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Cluster(format!(
        "Deployment {ns}/{stable_name} kept changing while {what}"
    )))
}

/// Stable takes back the pod template it had when the rollout started (`previous`, as read
/// then); older records without it get their previous images back. Idempotent, retried on
/// conflict. The Deployment controller scales the old ReplicaSet back up (same template hash).
pub async fn restore_stable(
    client: &Client,
    ns: &str,
    stable_name: &str,
    previous: Option<&serde_json::Value>,
    previous_images: &BTreeMap<String, String>,
    fence: Fence,
) -> Result<()> {
    let template: Option<k8s_openapi::api::core::v1::PodTemplateSpec> = previous
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| Error::Cluster(format!("stored template of {ns}/{stable_name}: {e}")))?;
    let what = "restoring its template; re-run `kubectl canary rollback`";
    modify_stable(client, ns, stable_name, fence, what, |stable| {
        let spec = &mut stable.spec;
        match &template {
            Some(t) => spec.template = t.clone(),
            None => {
                for c in spec
                    .template
                    .spec
                    .iter_mut()
                    .flat_map(|p| p.containers.iter_mut())
                {
                    if let Some(img) = previous_images.get(&c.name) {
                        c.image = Some(img.clone());
                    }
                }
            }
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_tag() {
        let m = |s: &str| BTreeMap::from([("app".to_string(), s.to_string())]);
        assert_eq!(version_label(&m("reg:5000/app:1.4.0")), "1.4.0");
        assert_eq!(version_label(&m("reg:5000/app")), "canary");
        assert_eq!(version_label(&m("app:v2+build")), "v2-build");
    }
}
