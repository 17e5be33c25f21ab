//! Helpers shared by the traffic providers: read-modify-write with retry on 409, the
//! `<svc>-stable` / `<svc>-canary` Services, error mapping, weight bookkeeping.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{ProviderError, Target};

/// Label put on objects kubectl-canary created (so cleanup deletes only those).
// The one managed-by label, defined with the state it marks (crate::cluster::state).
pub(crate) const MANAGED_BY_KEY: &str = crate::cluster::state::MANAGED_BY.0;
pub(crate) const MANAGED_BY: &str = crate::cluster::state::MANAGED_BY.1;
/// Annotation on a route object remembering the stable backend's weight before we touched
/// it ("" = it had no weight), restored by cleanup.
pub(crate) const STABLE_WEIGHT_ANN: &str = "kubectl-canary.io/stable-weight";

pub(crate) fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Map an API error on `kind ns/name` to a ProviderError with a hint where one helps.
pub(crate) fn api_error(kind: &'static str, ns: &str, name: &str, e: kube::Error) -> ProviderError {
    let invalid = |message: String| ProviderError::Invalid {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        message,
    };
    match &e {
        kube::Error::Api(s) if s.code == 403 => invalid(format!(
            "forbidden ({}): grant get/create/update/delete on {kind} in namespace {ns}",
            s.message
        )),
        kube::Error::Api(s) if s.code == 422 || s.code == 400 => {
            invalid(format!("rejected by the API server: {}", s.message))
        }
        _ => ProviderError::Kube(e),
    }
}

/// Delays between retries after a 409 Conflict (bounded: ~10 tries within a few seconds).
fn conflict_backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(800))
        .with_jitter()
        .with_max_times(10)
        .build()
}

/// Read-modify-write of `name`: get, `mutate` (returns whether it changed anything), replace
/// with the resourceVersion that was read; on 409 re-read and re-apply `mutate`. Returns
/// `Ok(None)` when the object does not exist; skips the write when nothing changed.
pub(crate) async fn modify<K, F>(
    api: &Api<K>,
    kind: &'static str,
    ns: &str,
    name: &str,
    mut mutate: F,
) -> Result<Option<K>, ProviderError>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
    F: FnMut(&mut K) -> Result<bool, ProviderError>,
{
    let mut delays = conflict_backoff();
    let mut conflicts = 0u32;
    loop {
        let Some(mut obj) = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(kind, ns, name, e))?
        else {
            return Ok(None);
        };
        if !mutate(&mut obj)? {
            return Ok(Some(obj));
        }
        match api.replace(name, &PostParams::default(), &obj).await {
            Ok(o) => return Ok(Some(o)),
            Err(e) if is_status(&e, 409) => {
                conflicts += 1;
                match delays.next() {
                    Some(d) => tokio::time::sleep(d).await,
                    None => {
                        return Err(ProviderError::Invalid {
                            kind,
                            namespace: ns.to_string(),
                            name: name.to_string(),
                            message: format!(
                                "still conflicting with other writers after {conflicts} \
                                 attempts (409); retry later"
                            ),
                        });
                    }
                }
            }
            Err(e) => return Err(api_error(kind, ns, name, e)),
        }
    }
}

pub(crate) fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(MANAGED_BY_KEY.to_string(), MANAGED_BY.to_string())])
}

pub(crate) fn is_managed(meta: &ObjectMeta) -> bool {
    meta.labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_KEY))
        .is_some_and(|v| v == MANAGED_BY)
}

/// The user's Service `<svc>` (NotFound with a hint when missing).
pub(crate) async fn user_service(client: &Client, t: &Target) -> Result<Service, ProviderError> {
    let api: Api<Service> = Api::namespaced(client.clone(), &t.namespace);
    api.get_opt(&t.service)
        .await
        .map_err(|e| api_error("Service", &t.namespace, &t.service, e))?
        .ok_or_else(|| ProviderError::NotFound {
            kind: "Service",
            namespace: t.namespace.clone(),
            name: t.service.clone(),
            hint: "create the Service your clients call first (its selector and ports are \
                   copied to the -stable/-canary Services)"
                .into(),
        })
}

/// Ensure the Service `name` selects exactly `selector` (one version's pinned pods): create
/// it from the user's Service (same ports) when missing, re-pin it when it is ours. A Service
/// of that name the user made is left alone.
pub(crate) async fn ensure_version_service(
    client: &Client,
    t: &Target,
    user: &Service,
    name: &str,
    selector: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    let api: Api<Service> = Api::namespaced(client.clone(), &t.namespace);
    if let Some(mut existing) = api
        .get_opt(name)
        .await
        .map_err(|e| api_error("Service", &t.namespace, name, e))?
    {
        if !is_managed(&existing.metadata) {
            return Ok(());
        }
        let spec = existing.spec.get_or_insert_with(Default::default);
        if spec.selector.as_ref() == Some(selector) {
            return Ok(());
        }
        spec.selector = Some(selector.clone());
        return match api.replace(name, &PostParams::default(), &existing).await {
            Ok(_) => Ok(()),
            Err(e) => Err(api_error("Service", &t.namespace, name, e)),
        };
    }
    let uspec = user.spec.clone().unwrap_or_default();
    let ports: Vec<ServicePort> = uspec
        .ports
        .unwrap_or_default()
        .into_iter()
        .map(|p| ServicePort {
            name: p.name,
            port: p.port,
            target_port: p.target_port,
            protocol: p.protocol,
            app_protocol: p.app_protocol,
            ..Default::default()
        })
        .collect();
    let mut labels = user.metadata.labels.clone().unwrap_or_default();
    labels.extend(managed_labels());
    let svc = Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(t.namespace.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(ports),
            ..Default::default()
        }),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &svc).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()), // created concurrently
        Err(e) => Err(api_error("Service", &t.namespace, name, e)),
    }
}

/// Annotation on a user's Service whose selector we pinned: its selector before (JSON).
pub(crate) const ORIGINAL_SELECTOR_ANN: &str = "kubectl-canary.io/original-selector";

/// Pin the user's Service `name` to the stable pods for the rollout: its own selector plus
/// the stable pin (`pod-template-hash`), so a Service that also selects the canary's pods
/// (they carry the same app labels) feeds stable only. The selector it had is remembered
/// and [`unpin_service`] puts it back. Our own Services and missing ones are skipped.
/// Re-pinning (after promote) keeps the first remembered selector.
pub(crate) async fn pin_service(
    client: &Client,
    t: &Target,
    name: &str,
) -> Result<(), ProviderError> {
    let stable = &t.selectors()?.stable;
    modify_service(client, &t.namespace, name, |svc| {
        if is_managed(&svc.metadata) {
            return false;
        }
        let ann = svc
            .metadata
            .annotations
            .get_or_insert_with(Default::default);
        let spec = svc.spec.get_or_insert_with(Default::default);
        let original: BTreeMap<String, String> = match ann.get(ORIGINAL_SELECTOR_ANN) {
            Some(j) => serde_json::from_str(j).unwrap_or_default(),
            None => {
                let o = spec.selector.clone().unwrap_or_default();
                if o.is_empty() {
                    // No selector: its endpoints are not the controller's; nothing to pin.
                    return false;
                }
                ann.insert(
                    ORIGINAL_SELECTOR_ANN.into(),
                    serde_json::to_string(&o).unwrap_or_default(),
                );
                o
            }
        };
        let mut pinned = original;
        pinned.extend(stable.clone());
        if spec.selector.as_ref() == Some(&pinned) {
            return false;
        }
        spec.selector = Some(pinned);
        true
    })
    .await
}

/// Put back the selector [`pin_service`] replaced (no-op when it was never pinned).
pub(crate) async fn unpin_service(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(), ProviderError> {
    modify_service(client, ns, name, |svc| {
        let Some(original) = svc
            .metadata
            .annotations
            .as_mut()
            .and_then(|a| a.remove(ORIGINAL_SELECTOR_ANN))
        else {
            return false;
        };
        let original: BTreeMap<String, String> =
            serde_json::from_str(&original).unwrap_or_default();
        svc.spec.get_or_insert_with(Default::default).selector = Some(original);
        true
    })
    .await
}

/// Set the selector of our Service `name` (a user's Service of that name is left alone).
pub(crate) async fn repin_managed_service(
    client: &Client,
    ns: &str,
    name: &str,
    selector: &BTreeMap<String, String>,
) -> Result<(), ProviderError> {
    modify_service(client, ns, name, |svc| {
        if !is_managed(&svc.metadata) {
            return false;
        }
        let spec = svc.spec.get_or_insert_with(Default::default);
        if spec.selector.as_ref() == Some(selector) {
            return false;
        }
        spec.selector = Some(selector.clone());
        true
    })
    .await
}

/// Read-modify-write of Service `name` (missing = nothing to do); `f` returns whether it changed.
async fn modify_service<F>(client: &Client, ns: &str, name: &str, f: F) -> Result<(), ProviderError>
where
    F: Fn(&mut Service) -> bool,
{
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let mut backoff = conflict_backoff();
    loop {
        let Some(mut svc) = api
            .get_opt(name)
            .await
            .map_err(|e| api_error("Service", ns, name, e))?
        else {
            return Ok(());
        };
        if !f(&mut svc) {
            return Ok(());
        }
        match api.replace(name, &PostParams::default(), &svc).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 409) => match backoff.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(api_error("Service", ns, name, e)),
            },
            Err(e) => return Err(api_error("Service", ns, name, e)),
        }
    }
}

/// Delete the Service `name` only if kubectl-canary created it.
pub(crate) async fn delete_managed_service(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<(), ProviderError> {
    let api: Api<Service> = Api::namespaced(client.clone(), ns);
    let Some(s) = api
        .get_opt(name)
        .await
        .map_err(|e| api_error("Service", ns, name, e))?
    else {
        return Ok(());
    };
    if !is_managed(&s.metadata) {
        return Ok(());
    }
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(api_error("Service", ns, name, e)),
    }
}

/// Numeric weight, also accepting numeric strings.
pub(crate) fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Canary percent from relative (stable, canary) weights.
pub(crate) fn percent(stable: f64, canary: f64) -> u32 {
    let total = stable + canary;
    if total <= 0.0 || canary <= 0.0 {
        return 0;
    }
    ((canary / total) * 100.0).round().clamp(0.0, 100.0) as u32
}

pub(crate) fn check_weight(kind: &'static str, t: &Target, w: u32) -> Result<(), ProviderError> {
    if w > 100 {
        return Err(ProviderError::Invalid {
            kind,
            namespace: t.namespace.clone(),
            name: t.route.clone(),
            message: format!("weight {w} is not a percentage (0..=100)"),
        });
    }
    Ok(())
}

/// Remember the stable weight before our first change (annotation on the route object).
pub(crate) fn remember_stable_weight(meta: &mut ObjectMeta, original: Option<&Value>) -> bool {
    let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
    if ann.contains_key(STABLE_WEIGHT_ANN) {
        return false;
    }
    let v = original
        .and_then(num)
        .map(|f| (f as i64).to_string())
        .unwrap_or_default();
    ann.insert(STABLE_WEIGHT_ANN.to_string(), v);
    true
}

/// Take the remembered stable weight: `Some(Some(w))` a weight, `Some(None)` "had none",
/// `None` nothing remembered.
pub(crate) fn take_stable_weight(meta: &mut ObjectMeta) -> Option<Option<i64>> {
    let ann = meta.annotations.as_mut()?;
    let v = ann.remove(STABLE_WEIGHT_ANN)?;
    Some(v.trim().parse().ok())
}

/// Annotation on the weight-carrying route object: the fence of the last weight write.
pub(crate) const FENCE_ANN: &str = "kubectl-canary.io/fence";

/// Called inside a weight write's read-modify-write (so it is atomic with the write: the
/// object's resourceVersion guards it): refuses the write when the route carries a newer
/// fence than ours (a rollback or a later step wrote it; even a stale write toward stable
/// could undo a rollback that moved everything onto the canary while stable is restored),
/// and stamps ours.
pub(crate) fn fence_weight_write(
    ann: &mut BTreeMap<String, String>,
    kind: &'static str,
    t: &Target,
    name: &str,
    weight: u32,
) -> Result<bool, ProviderError> {
    let Some(ours) = t.fence else {
        return Ok(false);
    };
    let theirs = ann
        .get(FENCE_ANN)
        .and_then(|v| crate::core::rollout::Fence::decode(v));
    if let Some(theirs) = theirs
        && theirs > ours
    {
        return Err(ProviderError::Fenced {
            kind,
            namespace: t.namespace.clone(),
            name: name.to_string(),
            weight,
            ours: ours.generation,
            theirs: theirs.generation,
        });
    }
    let stamp = ours.encode();
    Ok(ann.insert(FENCE_ANN.to_string(), stamp.clone()).as_deref() != Some(stamp.as_str()))
}

/// Removes the fence annotation (cleanup); true when there was one.
pub(crate) fn drop_fence(meta: &mut ObjectMeta) -> bool {
    meta.annotations
        .as_mut()
        .and_then(|a| a.remove(FENCE_ANN))
        .is_some()
}
