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
//! No header routes: `matches` (v1alpha3+) would be read by Linkerd's adaptor as a plain
//! split, see [`NO_HEADER_ROUTES`].
//!
//! `prepare` also creates `<svc>-stable` / `<svc>-canary` when missing: ports copied from
//! `<svc>`, selector = `<svc>`'s selector + `track: stable|canary`.

use std::fmt::Debug;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::shared::{
    api_error, check_weight, delete_managed_service, drop_fence, ensure_version_service,
    fence_weight_write, is_status, managed_labels, modify, num, percent, remember_stable_weight,
    take_stable_weight, user_service,
};
use super::{HeaderRoute, ProviderError, Target, TrafficRouter};

const GROUP: &str = "split.smi-spec.io";
const KIND: &str = "TrafficSplit";
/// Versions with the `{service, weight: int}` backend shape, most preferred first.
const VERSIONS: [&str; 3] = ["v1alpha2", "v1alpha3", "v1alpha4"];

/// The provider entry (see [`super::registry`]).
pub static PROVIDER: super::Provider = super::Provider {
    name: "smi",
    summary: "SMI TrafficSplit (Linkerd's SMI extension)",
    group: GROUP,
    versions: &VERSIONS,
    kind: KIND,
    // A TrafficSplit routes the Service that is its root.
    routes_service: |o, svc, _| o.pointer("/spec/service").and_then(Value::as_str) == Some(svc),
    make: |_| Box::pin(async { super::registry::boxed(Smi::new()) }),
};

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

/// Annotation on a TrafficSplit whose canary backend the user had before the rollout
/// (seed 002 keeps it at weight 0): cleanup sets it back to 0 instead of removing it.
const USER_CANARY_BACKEND_ANN: &str = "kubectl-canary.io/user-canary-backend";

/// cleanup: drop the canary backend (or back to 0 when it is the user's), stable back to
/// `stable_weight`.
fn ts_cleanup(spec: &mut Value, t: &Target, stable_weight: u32, users_canary: bool) -> bool {
    let Some(b) = spec.get_mut("backends").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = b.clone();
    if users_canary {
        set_backend(b, &t.canary_service, 0);
    } else {
        b.retain(|x| x.get("service").and_then(Value::as_str) != Some(t.canary_service.as_str()));
    }
    let mut changed = *b != before;
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

/// Why SMI routes no header. linkerd/linkerd-smi `pkg/adaptor/controller.go`: the adaptor
/// reads every TrafficSplit through the v1alpha1 client (so v1alpha3/v1alpha4 `matches` are
/// dropped) and writes each split's backends into the root Service's ServiceProfile
/// `dstOverrides`, the last one synced winning. A second split carrying a header match
/// (smi-spec `traffic-split/v1alpha4`) would therefore send *all* of the root Service's
/// traffic to the canary on Linkerd, the one maintained SMI implementation, whose metrics
/// this provider reads.
const NO_HEADER_ROUTES: &str = "Linkerd's SMI adaptor reads TrafficSplits without `matches` and \
     would give a header split all traffic; on Linkerd an HTTPRoute on the Service routes by \
     header (`--provider gateway-api` or `linkerd-httproute`)";

impl TrafficRouter for Smi {
    fn metrics(&self) -> super::registry::Metrics {
        super::registry::Metrics::Of(crate::core::schedule::MetricsFlavour::Linkerd)
    }

    fn header_routes_routed(&self) -> (usize, &'static str) {
        (0, NO_HEADER_ROUTES)
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        if let Some(h) = headers.first() {
            return Err(ProviderError::Invalid {
                kind: KIND,
                namespace: target.namespace.clone(),
                name: target.route.clone(),
                message: format!(
                    "SMI TrafficSplit does not route by header ({}: {}): {}",
                    h.name, h.value, NO_HEADER_ROUTES
                ),
            });
        }
        let user = user_service(client, target).await?;
        let pods = target.selectors()?;
        ensure_version_service(client, target, &user, &target.stable_service, &pods.stable).await?;
        ensure_version_service(client, target, &user, &target.canary_service, &pods.canary).await?;
        let api = self.api(client, &target.namespace).await?;
        let (ns, name) = (&target.namespace, &target.route);
        for _ in 0..3 {
            let updated = modify(&api, KIND, ns, name, |o| {
                check_root(o, target)?;
                if !o.data.get("spec").is_some_and(Value::is_object) {
                    o.data["spec"] = json!({"service": target.service});
                }
                let users_canary = o.data["spec"]["backends"]
                    .as_array()
                    .is_some_and(|b| backend_pos(b, &target.canary_service).is_some());
                let ann = o.metadata.annotations.get_or_insert_with(Default::default);
                let marked = users_canary
                    && !ann.contains_key(USER_CANARY_BACKEND_ANN)
                    && !super::shared::is_managed(&o.metadata);
                if marked {
                    o.metadata
                        .annotations
                        .get_or_insert_with(Default::default)
                        .insert(USER_CANARY_BACKEND_ANN.into(), "true".into());
                }
                Ok(ts_prepare(&mut o.data["spec"], target) || marked)
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
            let ann = o.metadata.annotations.get_or_insert_with(Default::default);
            let fenced = fence_weight_write(ann, KIND, target, &target.route, weight)?;
            let changed = ts_set_weight(&mut o.data["spec"], target, weight) | fenced;
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
            let fence = drop_fence(&mut o.metadata);
            let users_canary = o
                .metadata
                .annotations
                .as_mut()
                .and_then(|a| a.remove(USER_CANARY_BACKEND_ANN))
                .is_some();
            let had = restore.is_some() || users_canary || fence;
            let stable = match restore {
                Some(Some(w)) if w > 0 => w as u32,
                _ => 100,
            };
            let changed = match o.data.get_mut("spec") {
                Some(spec) => ts_cleanup(spec, target, stable, users_canary),
                None => false,
            };
            Ok(changed || had)
        })
        .await?;
        // Our `-stable` Service stays behind the TrafficSplit: unpin it (back to the root
        // Service's selector), or the next change of stable's template would empty it.
        if let Ok(root) = user_service(client, target).await
            && let Some(sel) = root.spec.and_then(|s| s.selector)
        {
            super::shared::repin_managed_service(
                client,
                &target.namespace,
                &target.stable_service,
                &sel,
            )
            .await?;
        }
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
        let mut users = spec.clone();
        assert!(ts_cleanup(&mut spec, &t(), 100, false));
        assert!(!ts_cleanup(&mut spec, &t(), 100, false));
        assert_eq!(
            spec["backends"],
            json!([{"service": "web-stable", "weight": 100}, {"service": "web-mirror", "weight": 5}])
        );
        assert_eq!(ts_read_weight(&spec, &t()), None);
        // A canary backend the user had stays, at 0.
        assert!(ts_cleanup(&mut users, &t(), 100, true));
        assert_eq!(
            users["backends"][2],
            json!({"service": "web-canary", "weight": 0})
        );
    }

    #[test]
    fn relative_weights_read_as_percent() {
        let spec = json!({"backends": [
            {"service": "web-stable", "weight": 900}, {"service": "web-canary", "weight": "100"}]});
        assert_eq!(ts_read_weight(&spec, &t()), Some(10));
    }
}
