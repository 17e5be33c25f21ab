//! SMI TrafficSplit provider (`split.smi-spec.io`, v1alpha2 preferred, v1alpha3/v1alpha4
//! accepted: the `spec.service` / `spec.backends[] {service, weight}` shape is the same).
//!
//! Object written (name = `target.route`):
//!
//! ```yaml
//! apiVersion: split.smi-spec.io/v1alpha2
//! kind: TrafficSplit
//! spec:
//!   service: <svc>                 # the root Service clients call
//!   backends:
//!   - {service: <svc>-stable, weight: 100-w}
//!   - {service: <svc>-canary, weight: w}
//!   # other backends are left as they are
//! ```
//!
//! `prepare` also creates `<svc>-stable` / `<svc>-canary` when missing: ports copied from
//! `<svc>`, selector = `<svc>`'s selector + `track: stable|canary`.
//!
//! This file also holds the small helpers shared by the SMI, NGINX and Gateway API
//! providers (read-modify-write with retry on 409, split Services, error mapping).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::{HeaderRoute, ProviderError, Target, TrafficRouter};

/// Label put on objects kubectl-canary created (so cleanup deletes only those).
pub(crate) const MANAGED_BY_KEY: &str = "app.kubernetes.io/managed-by";
pub(crate) const MANAGED_BY: &str = "kubectl-canary";
/// Annotation on a route object remembering the stable backend's weight before we touched
/// it ("" = it had no weight), restored by cleanup.
pub(crate) const STABLE_WEIGHT_ANN: &str = "kubectl-canary.io/stable-weight";
/// Label selecting stable / canary pods.
pub(crate) const TRACK_LABEL: &str = "track";

const GROUP: &str = "split.smi-spec.io";
const KIND: &str = "TrafficSplit";
/// Versions with the `{service, weight: int}` backend shape, most preferred first.
const VERSIONS: [&str; 3] = ["v1alpha2", "v1alpha3", "v1alpha4"];

/// SMI TrafficSplit router.
#[derive(Debug, Default, Clone)]
pub struct Smi {
    resource: OnceCell<ApiResource>,
}

impl Smi {
    pub fn new() -> Self {
        Self::default()
    }

    /// The served TrafficSplit version (discovery of one group, cached per provider).
    async fn api(&self, client: &Client, ns: &str) -> Result<Api<DynamicObject>, ProviderError> {
        let ar = self
            .resource
            .get_or_try_init(|| async {
                let hint = |m: String| ProviderError::Invalid {
                    kind: KIND,
                    namespace: ns.to_string(),
                    name: String::new(),
                    message: m,
                };
                let group = kube::discovery::group(client, GROUP).await.map_err(|e| {
                    hint(format!(
                        "API group {GROUP} is not served ({e}): install the SMI TrafficSplit \
                         CRD or pass --provider"
                    ))
                })?;
                for v in VERSIONS {
                    if let Some((ar, _)) = group
                        .versioned_resources(v)
                        .into_iter()
                        .find(|(ar, _)| ar.kind == KIND)
                    {
                        return Ok(ar);
                    }
                }
                let served: Vec<&str> = group.versions().collect();
                Err(hint(format!(
                    "{GROUP} serves {served:?} but none of {VERSIONS:?}; only TrafficSplit \
                     v1alpha2..v1alpha4 is supported"
                )))
            })
            .await?;
        Ok(Api::namespaced_with(client.clone(), ns, ar))
    }
}

// ---------------------------------------------------------------------------------------
// Shared helpers (SMI, NGINX, Gateway API).
// ---------------------------------------------------------------------------------------

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

/// Ensure the Service `name` exists; when missing create it from the user's Service:
/// same ports, selector = user's selector + `track: <track>`. Existing ones are left alone.
pub(crate) async fn ensure_track_service(
    client: &Client,
    t: &Target,
    user: &Service,
    name: &str,
    track: &str,
) -> Result<(), ProviderError> {
    let api: Api<Service> = Api::namespaced(client.clone(), &t.namespace);
    if api
        .get_opt(name)
        .await
        .map_err(|e| api_error("Service", &t.namespace, name, e))?
        .is_some()
    {
        return Ok(());
    }
    let uspec = user.spec.clone().unwrap_or_default();
    let mut selector = uspec.selector.clone().unwrap_or_default();
    if selector.is_empty() {
        return Err(ProviderError::Invalid {
            kind: "Service",
            namespace: t.namespace.clone(),
            name: t.service.clone(),
            message: format!(
                "has no selector, so {name} cannot be derived from it: create {name} yourself"
            ),
        });
    }
    selector.insert(TRACK_LABEL.to_string(), track.to_string());
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
            selector: Some(selector),
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

// ---------------------------------------------------------------------------------------
// TrafficSplit spec edits (pure, unit-tested).
// ---------------------------------------------------------------------------------------

fn backends_mut(spec: &mut Value) -> &mut Vec<Value> {
    if !spec.get("backends").is_some_and(Value::is_array) {
        spec["backends"] = json!([]);
    }
    spec["backends"]
        .as_array_mut()
        .expect("backends is an array")
}

fn backend_pos(backends: &[Value], service: &str) -> Option<usize> {
    backends
        .iter()
        .position(|b| b.get("service").and_then(Value::as_str) == Some(service))
}

/// Set a backend's weight (adding it when missing); returns whether anything changed.
fn set_backend(backends: &mut Vec<Value>, service: &str, weight: u32) -> bool {
    match backend_pos(backends, service) {
        Some(i) => {
            if backends[i].get("weight").and_then(num) == Some(weight as f64)
                && backends[i]["weight"].is_number()
            {
                return false;
            }
            backends[i]["weight"] = json!(weight);
            true
        }
        None => {
            backends.push(json!({"service": service, "weight": weight}));
            true
        }
    }
}

/// prepare: stable and canary backends exist (a new canary gets weight 0, a new stable 100;
/// existing weights are kept so a repeated prepare does not reset a running split).
fn ts_prepare(spec: &mut Value, t: &Target) -> bool {
    let b = backends_mut(spec);
    let mut changed = false;
    if backend_pos(b, &t.stable_service).is_none() {
        changed |= set_backend(b, &t.stable_service, 100);
    }
    if backend_pos(b, &t.canary_service).is_none() {
        changed |= set_backend(b, &t.canary_service, 0);
    }
    changed
}

fn ts_set_weight(spec: &mut Value, t: &Target, w: u32) -> bool {
    let b = backends_mut(spec);
    let a = set_backend(b, &t.stable_service, 100 - w);
    let c = set_backend(b, &t.canary_service, w);
    a | c
}

fn ts_read_weight(spec: &Value, t: &Target) -> Option<u32> {
    let b = spec.get("backends")?.as_array()?;
    let w = |s: &str| backend_pos(b, s).map(|i| b[i].get("weight").and_then(num).unwrap_or(0.0));
    let canary = w(&t.canary_service)?;
    Some(percent(w(&t.stable_service).unwrap_or(0.0), canary))
}

/// cleanup: drop the canary backend, stable back to `stable_weight`.
fn ts_cleanup(spec: &mut Value, t: &Target, stable_weight: u32) -> bool {
    let Some(b) = spec.get_mut("backends").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = b.len();
    b.retain(|x| x.get("service").and_then(Value::as_str) != Some(t.canary_service.as_str()));
    let mut changed = b.len() != before;
    if backend_pos(b, &t.stable_service).is_some() {
        changed |= set_backend(b, &t.stable_service, stable_weight);
    }
    changed
}

fn check_root(obj: &DynamicObject, t: &Target) -> Result<(), ProviderError> {
    match obj.data.pointer("/spec/service").and_then(Value::as_str) {
        Some(s) if s != t.service => Err(ProviderError::Invalid {
            kind: KIND,
            namespace: t.namespace.clone(),
            name: t.route.clone(),
            message: format!(
                "splits Service {s}, not {}: pass the right --route or service",
                t.service
            ),
        }),
        _ => Ok(()),
    }
}

fn not_prepared(t: &Target) -> ProviderError {
    ProviderError::NotFound {
        kind: KIND,
        namespace: t.namespace.clone(),
        name: t.route.clone(),
        hint: "run prepare first (it creates the TrafficSplit), or pass --provider".into(),
    }
}

impl TrafficRouter for Smi {
    fn name(&self) -> &'static str {
        "smi"
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        header: Option<&HeaderRoute>,
    ) -> Result<(), ProviderError> {
        if let Some(h) = header {
            return Err(ProviderError::Invalid {
                kind: KIND,
                namespace: target.namespace.clone(),
                name: target.route.clone(),
                message: format!(
                    "SMI TrafficSplit cannot route by header ({}: {}); drop the header \
                     route or use the istio, nginx or gateway-api provider",
                    h.name, h.value
                ),
            });
        }
        let user = user_service(client, target).await?;
        ensure_track_service(client, target, &user, &target.stable_service, "stable").await?;
        ensure_track_service(client, target, &user, &target.canary_service, "canary").await?;
        let api = self.api(client, &target.namespace).await?;
        let (ns, name) = (&target.namespace, &target.route);
        for _ in 0..3 {
            let updated = modify(&api, KIND, ns, name, |o| {
                check_root(o, target)?;
                if !o.data.get("spec").is_some_and(Value::is_object) {
                    o.data["spec"] = json!({"service": target.service});
                }
                Ok(ts_prepare(&mut o.data["spec"], target))
            })
            .await?;
            if updated.is_some() {
                return Ok(());
            }
            let ar = self.resource.get().expect("resolved above");
            let mut obj = DynamicObject::new(name, ar).within(ns).data(json!({
                "spec": {"service": target.service, "backends": [
                    {"service": target.stable_service, "weight": 100},
                    {"service": target.canary_service, "weight": 0}
                ]}
            }));
            obj.metadata.labels = Some(managed_labels());
            match api.create(&PostParams::default(), &obj).await {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue, // created concurrently: update it
                Err(e) => return Err(api_error(KIND, ns, name, e)),
            }
        }
        Err(ProviderError::Invalid {
            kind: KIND,
            namespace: ns.clone(),
            name: name.clone(),
            message: "created and deleted concurrently by someone else; retry".into(),
        })
    }

    async fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        check_weight(KIND, target, weight)?;
        let api = self.api(client, &target.namespace).await?;
        modify(&api, KIND, &target.namespace, &target.route, |o| {
            check_root(o, target)?;
            if !o.data.get("spec").is_some_and(Value::is_object) {
                return Err(not_prepared(target));
            }
            let orig = o.data["spec"]["backends"]
                .as_array()
                .and_then(|b| backend_pos(b, &target.stable_service).map(|i| b[i].clone()));
            let changed = ts_set_weight(&mut o.data["spec"], target, weight);
            if let (true, Some(b)) = (changed, orig) {
                remember_stable_weight(&mut o.metadata, b.get("weight"));
            }
            Ok(changed)
        })
        .await?
        .map(|_| ())
        .ok_or_else(|| not_prepared(target))
    }

    async fn read_weight(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<u32>, ProviderError> {
        let api = self.api(client, &target.namespace).await?;
        let obj = api
            .get_opt(&target.route)
            .await
            .map_err(|e| api_error(KIND, &target.namespace, &target.route, e))?;
        Ok(obj.and_then(|o| ts_read_weight(o.data.get("spec")?, target)))
    }

    async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        let api = self.api(client, &target.namespace).await?;
        // The TrafficSplit stays (stable at 100): deleting it would send the root Service's
        // traffic to every pod its selector matches, canary pods included.
        modify(&api, KIND, &target.namespace, &target.route, |o| {
            let restore = take_stable_weight(&mut o.metadata);
            let had = restore.is_some();
            let stable = match restore {
                Some(Some(w)) if w > 0 => w as u32,
                _ => 100,
            };
            let changed = match o.data.get_mut("spec") {
                Some(spec) => ts_cleanup(spec, target, stable),
                None => false,
            };
            Ok(changed || had)
        })
        .await?;
        delete_managed_service(client, &target.namespace, &target.canary_service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Target {
        Target::new("ns", "web")
    }

    #[test]
    fn trafficsplit_edits_keep_other_backends() {
        let mut spec = json!({"service": "web", "backends": [
            {"service": "web-stable", "weight": 100}, {"service": "web-mirror", "weight": 5}]});
        assert!(ts_prepare(&mut spec, &t()));
        assert!(!ts_prepare(&mut spec, &t()), "prepare is idempotent");
        assert_eq!(ts_read_weight(&spec, &t()), Some(0));
        assert!(ts_set_weight(&mut spec, &t(), 10));
        assert!(!ts_set_weight(&mut spec, &t(), 10));
        assert_eq!(ts_read_weight(&spec, &t()), Some(10));
        assert_eq!(
            spec["backends"][1],
            json!({"service": "web-mirror", "weight": 5})
        );
        assert!(ts_cleanup(&mut spec, &t(), 100));
        assert!(!ts_cleanup(&mut spec, &t(), 100));
        assert_eq!(
            spec["backends"],
            json!([{"service": "web-stable", "weight": 100}, {"service": "web-mirror", "weight": 5}])
        );
        assert_eq!(ts_read_weight(&spec, &t()), None);
    }

    #[test]
    fn relative_weights_read_as_percent() {
        let spec = json!({"backends": [
            {"service": "web-stable", "weight": 900}, {"service": "web-canary", "weight": "100"}]});
        assert_eq!(ts_read_weight(&spec, &t()), Some(10));
    }
}
