//! Istio subset split: our DestinationRule subsets `kubectl-canary-stable` and
//! `kubectl-canary-canary`, whose labels pin each version's pods (stable: its Deployment's
//! selector + the current `pod-template-hash`; canary: the canary Deployment's selector), and
//! the weights of the VirtualService route to the service's host. The route's stable
//! destination points at our stable subset during the rollout; the subset it named before
//! (the user's `v1`, or none) is remembered in an annotation and restored by cleanup, which
//! also removes our subsets (and the DestinationRule when we created it).
//! Host split: when the route names `<svc>-stable`, the canary destination is the Service
//! `<svc>-canary` (created when missing), the user's `<svc>-stable` is pinned, and no subsets
//! are used. Only our entries are touched; everything else in the user's objects is kept.
//! Writes are read-modify-write with resourceVersion, retried on 409.

use super::shared::{fence_weight_write, modify};
use super::{HeaderRoute, ProviderError, Target, TrafficRouter};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub const STABLE_SUBSET: &str = "kubectl-canary-stable";
pub const CANARY_SUBSET: &str = "kubectl-canary-canary";
/// VirtualService annotation: the subset the stable destination named before ("" = none).
pub const STABLE_SUBSET_ANN: &str = "kubectl-canary.io/stable-subset";
/// VirtualService annotation, present when the stable destination had no weight before.
pub const STABLE_WEIGHT_ANN: &str = "kubectl-canary.io/stable-weight-absent";
pub const HEADER_ROUTE_NAME: &str = "kubectl-canary-header";
const GROUP: &str = "networking.istio.io";

/// The provider entry (see [`super::registry`]).
pub static PROVIDER: super::Provider = super::Provider {
    name: "istio",
    summary: "Istio: DestinationRule subsets + VirtualService weights (or two hosts)",
    group: GROUP,
    // v1 from Istio 1.22; older clusters serve v1beta1 and v1alpha3 with the same shape.
    versions: &["v1", "v1beta1", "v1alpha3"],
    kind: "VirtualService",
    routes_service,
    make: |client| {
        Box::pin(async move {
            super::registry::boxed(IstioRouter::discover(client).await?.unwrap_or_default())
        })
    },
};

/// Whether a VirtualService routes Service `svc`: its hosts name the service, or (a
/// gateway's route for several services; a delegate VirtualService) one of its routes sends
/// to it. A root that only delegates routes nothing itself.
fn routes_service(o: &Value, svc: &str, _stable: &str) -> bool {
    let names = |h: &serde_json::Value| {
        h.as_str()
            .is_some_and(|h| h == svc || h.starts_with(&format!("{svc}.")))
    };
    let routes_itself = o
        .pointer("/spec/http")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|http| http.iter().any(|r| r.get("route").is_some()));
    routes_itself
        && o.pointer("/spec/hosts")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|h| h.iter().any(names))
        || o.pointer("/spec/http")
            .and_then(serde_json::Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("route").and_then(serde_json::Value::as_array))
            .flatten()
            .any(|d| d.pointer("/destination/host").is_some_and(names))
}

#[derive(Debug, Clone)]
pub struct IstioRouter {
    /// API version served for networking.istio.io ("v1", or "v1beta1" on older meshes).
    pub version: String,
}

impl Default for IstioRouter {
    fn default() -> Self {
        IstioRouter {
            version: "v1".into(),
        }
    }
}

impl IstioRouter {
    /// Picks the served version of networking.istio.io; None when Istio CRDs are absent.
    pub async fn discover(client: &Client) -> Result<Option<IstioRouter>, ProviderError> {
        match kube::discovery::group(client, GROUP).await {
            Ok(g) => {
                let versions = g.versions().map(str::to_string).collect::<Vec<_>>();
                let version = if versions.iter().any(|v| v == "v1") {
                    "v1".to_string()
                } else {
                    g.preferred_version_or_latest().to_string()
                };
                Ok(Some(IstioRouter { version }))
            }
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn api(&self, client: &Client, ns: &str, kind: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(GROUP, &self.version, kind);
        let ar = ApiResource::from_gvk(&gvk);
        Api::namespaced_with(client.clone(), ns, &ar)
    }

    pub async fn virtual_service(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<DynamicObject>, ProviderError> {
        Ok(self
            .api(client, &target.namespace, "VirtualService")
            .get_opt(&target.route)
            .await?)
    }

    /// The delegate that holds the routes when the VirtualService `target.route` routes nothing
    /// itself and hands its traffic to one delegate in its namespace (istio/api
    /// `networking/v1alpha3/virtual_service.proto` `Delegate`; a delegate in another
    /// namespace is an error: a rollout's objects live in one namespace).
    pub async fn delegate_of(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<String>, ProviderError> {
        let Some(vs) = self.virtual_service(client, target).await? else {
            return Ok(None);
        };
        let http = vs.data["spec"]["http"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if http.iter().any(|h| h.get("route").is_some()) {
            return Ok(None);
        }
        let mut delegates: Vec<(String, String)> = http
            .iter()
            .filter_map(|h| {
                let d = h.get("delegate")?;
                let name = d["name"].as_str()?.to_string();
                let ns = d["namespace"]
                    .as_str()
                    .unwrap_or(&target.namespace)
                    .to_string();
                Some((ns, name))
            })
            .collect();
        delegates.sort();
        delegates.dedup();
        match delegates.as_slice() {
            [(ns, name)] if *ns == target.namespace => Ok(Some(name.clone())),
            [] => Ok(None),
            many => Err(invalid(
                "VirtualService",
                target,
                &target.route,
                &format!(
                    "delegates to {}; pass --route with the delegate VirtualService that routes {} (in namespace {})",
                    many.iter()
                        .map(|(ns, n)| format!("{ns}/{n}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    target.service,
                    target.namespace
                ),
            )),
        }
    }

    /// The labels of the subset the route's general traffic goes to (bookinfo's `v1`:
    /// `version: v1`, from the DestinationRule for the host), which tell stable apart when
    /// the Service selects several Deployments. None: the route names no subset.
    pub async fn stable_subset_labels(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
        let Some(vs) = self.virtual_service(client, target).await? else {
            return Ok(None);
        };
        let Some(subset) = vs
            .data
            .get("spec")
            .and_then(|spec| stable_subset(spec, target))
        else {
            return Ok(None);
        };
        let drs = self
            .api(client, &target.namespace, "DestinationRule")
            .list(&Default::default())
            .await?;
        Ok(drs
            .items
            .iter()
            .filter(|dr| {
                dr.data["spec"]["host"]
                    .as_str()
                    .is_some_and(|h| host_matches(h, target))
            })
            .find_map(|dr| subset_labels(&dr.data["spec"], &subset)))
    }

    /// Read-modify-write of one object's spec (the shared retry-on-409 loop). `f` returns
    /// false for "no change".
    async fn update<F>(
        &self,
        client: &Client,
        target: &Target,
        kind: &'static str,
        name: &str,
        mut f: F,
    ) -> Result<(), ProviderError>
    where
        F: FnMut(&mut Value, &mut BTreeMap<String, String>) -> Result<bool, String> + Send,
    {
        let api = self.api(client, &target.namespace, kind);
        let found = modify(
            &api,
            kind,
            &target.namespace,
            name,
            |obj: &mut DynamicObject| {
                let spec = obj
                    .data
                    .get_mut("spec")
                    .ok_or_else(|| invalid(kind, target, name, "has no spec"))?;
                let ann = obj
                    .metadata
                    .annotations
                    .get_or_insert_with(Default::default);
                f(spec, ann).map_err(|m| invalid(kind, target, name, &m))
            },
        )
        .await?;
        found.map(|_| ()).ok_or_else(|| ProviderError::NotFound {
            kind,
            namespace: target.namespace.clone(),
            name: name.to_string(),
            hint: format!(
                "create the {kind} for service {} first (or pass --provider)",
                target.service
            ),
        })
    }
}

fn invalid(kind: &'static str, t: &Target, name: &str, msg: &str) -> ProviderError {
    ProviderError::Invalid {
        kind,
        namespace: t.namespace.clone(),
        name: name.to_string(),
        message: msg.to_string(),
    }
}

/// Does `host` name Service `name` of the namespace (short name or FQDN)?
fn host_is(host: &str, name: &str, ns: &str) -> bool {
    host == name || host == format!("{name}.{ns}") || host.starts_with(&format!("{name}.{ns}.svc"))
}

/// Does `host` name the service (subset split) or its stable Service (host split)?
fn host_matches(host: &str, t: &Target) -> bool {
    host_is(host, &t.service, &t.namespace) || host_is(host, &t.stable_service, &t.namespace)
}

/// Host split: the route names `<svc>-stable` (and we add `<svc>-canary`), no subsets.
pub fn is_host_split(spec: &Value, t: &Target) -> bool {
    main_route(spec, t)
        .and_then(|i| spec["http"][i]["route"].as_array())
        .is_some_and(|r| {
            r.iter()
                .any(|d| dest_host(d).is_some_and(|h| host_is(h, &t.stable_service, &t.namespace)))
        })
}

/// A VirtualService bound to gateways only (`gateways` without `mesh`): istio/api
/// `networking/v1/virtual_service.proto` — its routes apply at those gateways, and in-mesh
/// callers of the Service bypass it and reach every pod the Service selects. So the canary
/// gets a host of its own (`<svc>-canary`) and the Service is pinned to stable's pods for the
/// rollout: gateway callers get the split, in-mesh callers stable only.
pub fn is_gateway_only(spec: &Value) -> bool {
    spec.get("gateways")
        .and_then(Value::as_array)
        .is_some_and(|g| !g.is_empty() && !g.iter().any(|g| g.as_str() == Some("mesh")))
}

fn is_canary(d: &Value, t: &Target) -> bool {
    dest_subset(d) == Some(CANARY_SUBSET)
        || dest_host(d).is_some_and(|h| host_is(h, &t.canary_service, &t.namespace))
}

fn is_stable(d: &Value, t: &Target) -> bool {
    dest_host(d).is_some_and(|h| host_matches(h, t)) && !is_canary(d, t)
}

fn dest_host(d: &Value) -> Option<&str> {
    d.get("destination")?.get("host")?.as_str()
}

fn dest_subset(d: &Value) -> Option<&str> {
    d.get("destination")?.get("subset")?.as_str()
}

/// Index of the http route that carries the service's general traffic (not our header
/// route): Istio evaluates routes in order and the first match wins, so a user's match route
/// ahead of the default one (bookinfo's `end-user: jason`) only takes the requests it
/// matches. The general route is the first one to the host without a `match` (it takes
/// everything that reaches it); when every route has one, the last route to the host.
fn main_route(spec: &Value, t: &Target) -> Option<usize> {
    let to_host: Vec<(usize, &Value)> = spec
        .get("http")?
        .as_array()?
        .iter()
        .enumerate()
        .filter(|(_, h)| {
            h.get("name").and_then(Value::as_str) != Some(HEADER_ROUTE_NAME)
                && h.get("route").and_then(Value::as_array).is_some_and(|r| {
                    r.iter()
                        .any(|d| dest_host(d).is_some_and(|h| host_matches(h, t)))
                })
        })
        .collect();
    let catch_all = |h: &Value| {
        h.get("match")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
    };
    to_host
        .iter()
        .find(|(_, h)| catch_all(h))
        .or(to_host.last())
        .map(|(i, _)| *i)
}

/// The subset named by the stable destination of the route's general traffic.
fn stable_subset(spec: &Value, t: &Target) -> Option<String> {
    let idx = main_route(spec, t)?;
    spec["http"][idx]["route"]
        .as_array()?
        .iter()
        .find(|d| is_stable(d, t))
        .and_then(dest_subset)
        .map(str::to_string)
}

/// A DestinationRule subset's labels.
fn subset_labels(dr_spec: &Value, subset: &str) -> Option<BTreeMap<String, String>> {
    dr_spec["subsets"]
        .as_array()?
        .iter()
        .find(|s| s["name"].as_str() == Some(subset))
        .and_then(|s| serde_json::from_value(s["labels"].clone()).ok())
}

/// The destinations of the user's other routes (not the main one, not ours) that name the
/// service's host with the subset stable's destination named before the rollout (`original`,
/// "" = the whole host): those select the canary's pods too (they carry stable's labels), so
/// they are pinned to stable for the rollout and given back their subset at the end.
fn other_stable_destinations<'a>(
    spec: &'a mut Value,
    t: &'a Target,
    main: usize,
    subset: &'a str,
) -> impl Iterator<Item = &'a mut Value> + 'a {
    spec.get_mut("http")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .enumerate()
        .filter(move |(i, h)| {
            *i != main && h.get("name").and_then(Value::as_str) != Some(HEADER_ROUTE_NAME)
        })
        .filter_map(|(_, h)| h.get_mut("route").and_then(Value::as_array_mut))
        .flatten()
        .filter(move |d| {
            dest_host(d).is_some_and(|h| host_is(h, &t.service, &t.namespace))
                && dest_subset(d).unwrap_or("") == subset
        })
}

/// Adds the canary destination (weight 0) and the header route; idempotent.
pub fn prepare_vs(
    spec: &mut Value,
    ann: &mut BTreeMap<String, String>,
    t: &Target,
    headers: &[HeaderRoute],
) -> Result<bool, String> {
    let idx = main_route(spec, t).ok_or_else(|| {
        format!(
            "has no http route to host {:?}; add one (kubectl-canary only adjusts its weights)",
            t.service
        )
    })?;
    let before = spec.clone();
    let host_split = is_host_split(spec, t);
    let gateway_only = is_gateway_only(spec);
    let http = spec["http"].as_array_mut().expect("checked by main_route");
    let route = http[idx]["route"]
        .as_array_mut()
        .expect("checked by main_route");
    let stable_pos = route
        .iter()
        .position(|d| is_stable(d, t))
        .ok_or("has no stable destination")?;
    let mut changed = false;
    if !host_split && dest_subset(&route[stable_pos]) != Some(STABLE_SUBSET) {
        // The user's own subset (or the whole host) may select the canary's pods too.
        let original = dest_subset(&route[stable_pos]).unwrap_or("").to_string();
        ann.entry(STABLE_SUBSET_ANN.to_string()).or_insert(original);
        route[stable_pos]["destination"]["subset"] = json!(STABLE_SUBSET);
        changed = true;
    }
    if route[stable_pos].get("weight").is_none() {
        // Remembered so that cleanup gives the route back byte for byte.
        ann.entry(STABLE_WEIGHT_ANN.to_string()).or_default();
    }
    let stable_dest = route[stable_pos]["destination"].clone();
    let canary_dest = {
        let mut dest = stable_dest.clone();
        if host_split || gateway_only {
            dest["host"] = json!(t.canary_service);
            dest.as_object_mut().map(|d| d.remove("subset"));
        } else {
            dest["subset"] = json!(CANARY_SUBSET);
        }
        dest
    };
    if !route.iter().any(|d| is_canary(d, t)) {
        if route[stable_pos].get("weight").is_none() {
            route[stable_pos]["weight"] = json!(100);
        }
        route.push(json!({"destination": canary_dest.clone(), "weight": 0}));
    }
    if !host_split && let Some(original) = ann.get(STABLE_SUBSET_ANN).cloned() {
        for d in other_stable_destinations(spec, t, idx, &original) {
            d["destination"]["subset"] = json!(STABLE_SUBSET);
        }
    }
    let http = spec["http"].as_array_mut().expect("checked by main_route");
    let has_header = http
        .iter()
        .any(|h| h.get("name").and_then(Value::as_str) == Some(HEADER_ROUTE_NAME));
    if !headers.is_empty() && !has_header {
        // One match per header: Istio's match list is an OR (istio/api
        // networking/v1alpha3/virtual_service.proto, HTTPRoute.match).
        let matches: Vec<Value> = headers
            .iter()
            .map(|hr| json!({"headers": {hr.name.to_lowercase(): {"exact": hr.value}}}))
            .collect();
        http.insert(
            0,
            json!({
                "name": HEADER_ROUTE_NAME,
                "match": matches,
                "route": [{"destination": canary_dest}],
            }),
        );
    }
    Ok(changed || *spec != before)
}

/// Sets canary weight `w` and stable `100 - w` in the main route.
pub fn set_weight_vs(spec: &mut Value, t: &Target, w: u32) -> Result<bool, String> {
    let Some(idx) = main_route(spec, t) else {
        return Err(format!("has no http route to host {:?}", t.service));
    };
    let route = spec["http"][idx]["route"]
        .as_array_mut()
        .expect("checked by main_route");
    let canary = route.iter().position(|d| is_canary(d, t));
    let Some(canary) = canary else {
        // No canary destination: all traffic already on stable.
        return if w == 0 {
            Ok(false)
        } else {
            Err("has no canary destination (prepare did not run)".into())
        };
    };
    let mut changed = false;
    for (i, d) in route.iter_mut().enumerate() {
        let stable = is_stable(d, t)
            && (dest_subset(d) == Some(STABLE_SUBSET)
                || dest_host(d).is_some_and(|h| host_is(h, &t.stable_service, &t.namespace)));
        let want = if i == canary {
            w
        } else if stable {
            100 - w
        } else {
            continue;
        };
        if d.get("weight").and_then(Value::as_u64) != Some(want as u64) {
            d["weight"] = json!(want);
            changed = true;
        }
    }
    Ok(changed)
}

pub fn read_weight_vs(spec: &Value, t: &Target) -> Option<u32> {
    let idx = main_route(spec, t)?;
    let route = spec["http"][idx]["route"].as_array()?;
    let total: u64 = route
        .iter()
        .filter_map(|d| d.get("weight").and_then(Value::as_u64))
        .sum();
    let canary = route.iter().find(|d| is_canary(d, t))?;
    let w = canary.get("weight").and_then(Value::as_u64).unwrap_or(0);
    if total == 0 {
        return Some(0);
    }
    Some(((w * 100) as f64 / total as f64).round() as u32)
}

/// Removes the canary destination and the header route; stable gets 100 and the subset it
/// named before the rollout.
pub fn cleanup_vs(spec: &mut Value, ann: &mut BTreeMap<String, String>, t: &Target) -> bool {
    let before = spec.clone();
    let original = ann.remove(STABLE_SUBSET_ANN);
    // Absent on rollouts prepared by an older version: those get weight 100 written back.
    let weight_was_absent = ann.remove(STABLE_WEIGHT_ANN).is_some();
    let had_ann =
        original.is_some() | weight_was_absent | ann.remove(super::shared::FENCE_ANN).is_some();
    if let Some(http) = spec.get_mut("http").and_then(Value::as_array_mut) {
        http.retain(|h| h.get("name").and_then(Value::as_str) != Some(HEADER_ROUTE_NAME));
    }
    if let Some(idx) = main_route(spec, t) {
        let route = spec["http"][idx]["route"]
            .as_array_mut()
            .expect("checked by main_route");
        route.retain(|d| !is_canary(d, t));
        if route.len() == 1 {
            if weight_was_absent {
                route[0].as_object_mut().map(|d| d.remove("weight"));
            } else {
                route[0]["weight"] = json!(100);
            }
        }
    }
    // Every destination we pinned (the main route's and the user's other routes') gets back
    // the subset it named.
    if let Some(original) = original {
        for d in spec
            .get_mut("http")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(|h| h.get_mut("route").and_then(Value::as_array_mut))
            .flatten()
            .filter(|d| dest_subset(d) == Some(STABLE_SUBSET))
        {
            let dest = d["destination"].as_object_mut().expect("has a subset");
            if original.is_empty() {
                dest.remove("subset");
            } else {
                dest.insert("subset".into(), json!(original));
            }
        }
    }
    had_ann || *spec != before
}

/// Upserts our two subsets with the pinned selectors, without touching the user's subsets.
pub fn prepare_dr(spec: &mut Value, pods: &super::VersionSelectors) -> bool {
    let before = spec.clone();
    if !spec.get("subsets").is_some_and(Value::is_array) {
        spec["subsets"] = json!([]);
    }
    let subsets = spec["subsets"].as_array_mut().expect("just set");
    for (name, labels) in [(STABLE_SUBSET, &pods.stable), (CANARY_SUBSET, &pods.canary)] {
        let want = json!({"name": name, "labels": labels});
        match subsets
            .iter_mut()
            .find(|s| s.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(s) => *s = want,
            None => subsets.push(want),
        }
    }
    *spec != before
}

/// Removes our subsets (after the VirtualService no longer names them).
pub fn cleanup_dr(spec: &mut Value) -> bool {
    let Some(subsets) = spec.get_mut("subsets").and_then(Value::as_array_mut) else {
        return false;
    };
    let n = subsets.len();
    subsets.retain(|s| {
        !matches!(
            s.get("name").and_then(Value::as_str),
            Some(STABLE_SUBSET | CANARY_SUBSET)
        )
    });
    subsets.len() != n
}

impl TrafficRouter for IstioRouter {
    fn metrics(&self) -> super::registry::Metrics {
        super::registry::Metrics::Of(crate::core::schedule::MetricsFlavour::Istio)
    }

    async fn delegate(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<String>, ProviderError> {
        self.delegate_of(client, target).await
    }

    async fn stable_subset_labels(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
        IstioRouter::stable_subset_labels(self, client, target).await
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        let (host_split, gateway_only) = match self.virtual_service(client, target).await? {
            Some(vs) => vs.data.get("spec").map_or((false, false), |s| {
                (is_host_split(s, target), is_gateway_only(s))
            }),
            None => (false, false),
        };
        if host_split || gateway_only {
            // The canary is a host of its own, `<svc>-canary`, which must exist before the
            // route names it. What stable's traffic goes through is pinned to stable's pods:
            // the route's `<svc>-stable` (host split), or, for a gateway-only route, the
            // Service itself, which in-mesh callers reach directly.
            let user = super::shared::user_service(client, target).await?;
            let pods = target.selectors()?;
            super::shared::ensure_version_service(
                client,
                target,
                &user,
                &target.canary_service,
                &pods.canary,
            )
            .await?;
            let pinned = if host_split {
                &target.stable_service
            } else {
                &target.service
            };
            super::shared::pin_service(client, target, pinned).await?;
        }
        if host_split {
            let route = target.route.clone();
            return self
                .update(client, target, "VirtualService", &route, |spec, ann| {
                    prepare_vs(spec, ann, target, headers)
                })
                .await;
        }
        // DestinationRule first: the VirtualService must never name a subset that does not exist.
        let pods = target.selectors()?;
        let dr_api = self.api(client, &target.namespace, "DestinationRule");
        if dr_api.get_opt(&target.service).await?.is_none() {
            let gvk = GroupVersionKind::gvk(GROUP, &self.version, "DestinationRule");
            let ar = ApiResource::from_gvk(&gvk);
            let mut obj = DynamicObject::new(&target.service, &ar).within(&target.namespace);
            obj.metadata.labels = Some(super::shared::managed_labels());
            obj.data = json!({"spec": {"host": target.service, "subsets": [
                {"name": STABLE_SUBSET, "labels": pods.stable},
                {"name": CANARY_SUBSET, "labels": pods.canary},
            ]}});
            match dr_api.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let svc = target.service.clone();
        self.update(client, target, "DestinationRule", &svc, |spec, _| {
            Ok(prepare_dr(spec, pods))
        })
        .await?;
        let route = target.route.clone();
        self.update(client, target, "VirtualService", &route, |spec, ann| {
            prepare_vs(spec, ann, target, headers)
        })
        .await
    }

    async fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        let route = target.route.clone();
        self.update(client, target, "VirtualService", &route, |spec, ann| {
            let fenced = fence_weight_write(ann, "VirtualService", target, &route, weight.min(100))
                .map_err(|e| e.to_string())?;
            Ok(set_weight_vs(spec, target, weight.min(100))? | fenced)
        })
        .await
    }

    async fn read_weight(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<u32>, ProviderError> {
        Ok(self
            .virtual_service(client, target)
            .await?
            .and_then(|vs| vs.data.get("spec").and_then(|s| read_weight_vs(s, target))))
    }

    async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        let route = target.route.clone();
        match self
            .update(client, target, "VirtualService", &route, |spec, ann| {
                Ok(cleanup_vs(spec, ann, target))
            })
            .await
        {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        // Then our subsets (the route no longer names them); a DestinationRule we created
        // and that holds nothing else goes too.
        let svc = target.service.clone();
        match self
            .update(client, target, "DestinationRule", &svc, |spec, _| {
                Ok(cleanup_dr(spec))
            })
            .await
        {
            Ok(()) | Err(ProviderError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let dr_api = self.api(client, &target.namespace, "DestinationRule");
        if let Some(dr) = dr_api.get_opt(&svc).await?
            && super::shared::is_managed(&dr.metadata)
            && dr.data["spec"]["subsets"]
                .as_array()
                .is_none_or(Vec::is_empty)
        {
            match dr_api.delete(&svc, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        super::shared::unpin_service(client, &target.namespace, &target.stable_service).await?;
        // (pinned for a gateway-only route; a no-op otherwise)
        super::shared::unpin_service(client, &target.namespace, &target.service).await?;
        super::shared::delete_managed_service(client, &target.namespace, &target.canary_service)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("shop", "web")
    }

    fn ann() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn vs() -> Value {
        json!({"hosts": ["web"], "http": [
            {"name": "other", "route": [{"destination": {"host": "other"}}]},
            {"name": "primary", "retries": {"attempts": 3}, "route": [{"destination": {"host": "web", "port": {"number": 80}}}]}
        ]})
    }

    #[test]
    fn prepare_adds_only_our_parts_and_is_idempotent() {
        let mut s = vs();
        let hr = HeaderRoute {
            name: "x-canary".into(),
            value: "true".into(),
        };
        let mut a = ann();
        assert!(prepare_vs(&mut s, &mut a, &target(), std::slice::from_ref(&hr)).unwrap());
        assert_eq!(
            a[STABLE_SUBSET_ANN], "",
            "the stable destination named no subset"
        );
        assert_eq!(s["http"][0]["name"], HEADER_ROUTE_NAME);
        assert_eq!(
            s["http"][0]["route"][0]["destination"]["subset"],
            CANARY_SUBSET
        );
        assert_eq!(s["http"][1]["name"], "other");
        assert_eq!(s["http"][2]["retries"]["attempts"], 3);
        assert_eq!(
            s["http"][2]["route"][0]["destination"]["subset"],
            STABLE_SUBSET
        );
        assert_eq!(
            s["http"][2]["route"][1]["destination"]["port"]["number"],
            80
        );
        assert_eq!(read_weight_vs(&s, &target()), Some(0));
        let again = s.clone();
        assert!(!prepare_vs(&mut s, &mut a, &target(), std::slice::from_ref(&hr)).unwrap());
        assert_eq!(s, again);
    }

    #[test]
    fn weights_and_cleanup() {
        let mut s = vs();
        let original = s.clone();
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &target(), &[]).unwrap();
        assert!(set_weight_vs(&mut s, &target(), 25).unwrap());
        assert_eq!(read_weight_vs(&s, &target()), Some(25));
        assert_eq!(s["http"][1]["route"][0]["weight"], 75);
        assert!(!set_weight_vs(&mut s, &target(), 25).unwrap());
        assert!(cleanup_vs(&mut s, &mut a, &target()));
        // The user's route byte for byte: no weight (it had none), the whole host again.
        assert_eq!(s, original);
        assert!(a.is_empty());
        assert_eq!(read_weight_vs(&s, &target()), None);
        // weight 0 without a canary destination is a no-op, anything else an error
        assert!(!set_weight_vs(&mut s, &target(), 0).unwrap());
        assert!(set_weight_vs(&mut s, &target(), 10).is_err());
    }

    #[test]
    fn host_split_uses_the_canary_service() {
        let mut s = json!({"hosts": ["web"], "http": [{"route": [
            {"destination": {"host": "web-stable", "port": {"number": 80}}}
        ]}]});
        assert!(is_host_split(&s, &target()));
        let hr = HeaderRoute {
            name: "x-canary".into(),
            value: "true".into(),
        };
        let mut a = ann();
        assert!(prepare_vs(&mut s, &mut a, &target(), std::slice::from_ref(&hr)).unwrap());
        assert_eq!(
            s["http"][0]["route"][0]["destination"]["host"],
            "web-canary"
        );
        let main = &s["http"][1]["route"];
        assert!(main[0]["destination"].get("subset").is_none());
        assert_eq!(main[1]["destination"]["host"], "web-canary");
        assert_eq!(main[1]["destination"]["port"]["number"], 80);
        assert!(set_weight_vs(&mut s, &target(), 30).unwrap());
        assert_eq!(s["http"][1]["route"][0]["weight"], 70);
        assert_eq!(read_weight_vs(&s, &target()), Some(30));
        assert!(cleanup_vs(&mut s, &mut a, &target()));
        assert_eq!(
            s,
            json!({"hosts": ["web"], "http": [{"route": [
                {"destination": {"host": "web-stable", "port": {"number": 80}}}
            ]}]})
        );
    }

    /// A route the user wrote with a weight keeps it; one prepared by an older version (no
    /// weight annotation) gets weight 100 as before.
    #[test]
    fn a_stable_weight_of_the_users_is_given_back() {
        let t = Target::new("bookinfo", "reviews");
        let original = json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}, "weight": 100}]}]});
        let mut s = original.clone();
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &t, &[]).unwrap();
        assert!(!a.contains_key(STABLE_WEIGHT_ANN));
        set_weight_vs(&mut s, &t, 20).unwrap();
        assert!(cleanup_vs(&mut s, &mut a, &t));
        assert_eq!(s, original);
        let mut s = json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}}]}]});
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &t, &[]).unwrap();
        a.remove(STABLE_WEIGHT_ANN);
        cleanup_vs(&mut s, &mut a, &t);
        assert_eq!(s["http"][0]["route"][0]["weight"], 100);
    }

    /// bookinfo's `end-user: jason` match route ahead of the general route (Istio: first
    /// match wins). The split goes into the general route; the jason route, which names
    /// stable's subset `v1` (whose labels the canary's pods carry too), is pinned to stable
    /// for the rollout; a route to another subset is left alone; all come back byte for byte.
    #[test]
    fn a_users_match_route_ahead_of_the_general_route() {
        let t = Target::new("bookinfo", "reviews");
        let original = json!({"hosts": ["reviews"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v1"}}]},
            {"match": [{"headers": {"end-user": {"exact": "ada"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}
        ]});
        let mut s = original.clone();
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &t, &[]).unwrap();
        set_weight_vs(&mut s, &t, 5).unwrap();
        let http = s["http"].as_array().unwrap();
        assert_eq!(http[0]["route"].as_array().unwrap().len(), 1, "{s}");
        assert_eq!(http[0]["route"][0]["destination"]["subset"], STABLE_SUBSET);
        assert_eq!(http[1]["route"][0]["destination"]["subset"], "v2");
        assert_eq!(http[2]["route"][0]["destination"]["subset"], STABLE_SUBSET);
        assert_eq!(http[2]["route"][0]["weight"], 95);
        assert_eq!(http[2]["route"][1]["destination"]["subset"], CANARY_SUBSET);
        assert_eq!(read_weight_vs(&s, &t), Some(5));
        // Idempotent.
        let again = s.clone();
        assert!(!prepare_vs(&mut s, &mut a, &t, &[]).unwrap());
        assert_eq!(s, again);
        assert!(cleanup_vs(&mut s, &mut a, &t));
        assert_eq!(s, original);
        assert!(a.is_empty());
    }

    #[test]
    fn users_subset_is_replaced_by_the_pin_and_restored() {
        let mut s = json!({"hosts": ["reviews"], "http": [{"route": [
            {"destination": {"host": "reviews", "subset": "v1"}}]}]});
        let t = Target::new("bookinfo", "reviews");
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &t, &[]).unwrap();
        assert_eq!(a[STABLE_SUBSET_ANN], "v1");
        assert_eq!(
            s["http"][0]["route"][0]["destination"]["subset"],
            STABLE_SUBSET
        );
        assert!(cleanup_vs(&mut s, &mut a, &t));
        assert_eq!(
            s,
            json!({"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}}]}]})
        );
    }

    /// Seed 000's `devmentor-routes`: bound to a gateway only, routing several services by
    /// path. Only this service's route gets the canary, as a host of its own (in-mesh callers
    /// bypass the route; the Service is pinned to stable instead); the rest byte for byte.
    #[test]
    fn a_gateway_only_route_gets_the_canary_as_a_host() {
        let t = Target::new("devmentor", "ai-gateway");
        let original = json!({"hosts": ["devmentor.example.com"], "gateways": ["devmentor-gateway"],
        "http": [
            {"match": [{"uri": {"prefix": "/api/users"}}],
             "route": [{"destination": {"host": "users", "port": {"number": 8080}}}]},
            {"match": [{"uri": {"prefix": "/api/ai"}}],
             "route": [{"destination": {"host": "ai-gateway", "subset": "v1", "port": {"number": 8080}}}]}
        ]});
        assert!(is_gateway_only(&original));
        assert!(!is_gateway_only(
            &json!({"gateways": ["devmentor-gateway", "mesh"]})
        ));
        let mut s = original.clone();
        let mut a = ann();
        prepare_vs(&mut s, &mut a, &t, &[]).unwrap();
        set_weight_vs(&mut s, &t, 5).unwrap();
        assert_eq!(s["http"][0], original["http"][0]);
        let route = &s["http"][1]["route"];
        assert_eq!(route[0]["destination"]["subset"], STABLE_SUBSET);
        assert_eq!(route[0]["weight"], 95);
        assert_eq!(
            route[1],
            json!({"destination": {"host": "ai-gateway-canary", "port": {"number": 8080}}, "weight": 5})
        );
        assert_eq!(read_weight_vs(&s, &t), Some(5));
        assert!(cleanup_vs(&mut s, &mut a, &t));
        assert_eq!(s, original);
    }

    #[test]
    fn dr_subsets_pinned_upserted_and_removed() {
        let pods = |hash: &str| super::super::VersionSelectors {
            stable: BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("pod-template-hash".to_string(), hash.to_string()),
            ]),
            canary: BTreeMap::from([
                ("app".to_string(), "web".to_string()),
                ("track".to_string(), "canary".to_string()),
            ]),
        };
        let mut dr =
            json!({"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]});
        assert!(prepare_dr(&mut dr, &pods("abc")));
        assert_eq!(dr["subsets"][0]["labels"]["version"], "v1");
        assert_eq!(dr["subsets"][1]["name"], STABLE_SUBSET);
        assert_eq!(dr["subsets"][1]["labels"]["pod-template-hash"], "abc");
        assert!(!prepare_dr(&mut dr, &pods("abc")));
        // After promote the pin moves to the new ReplicaSet.
        assert!(prepare_dr(&mut dr, &pods("def")));
        assert_eq!(dr["subsets"][1]["labels"]["pod-template-hash"], "def");
        assert!(cleanup_dr(&mut dr));
        assert_eq!(
            dr,
            json!({"host": "web", "subsets": [{"name": "v1", "labels": {"version": "v1"}}]})
        );
    }

    #[test]
    fn the_general_routes_subset_names_stables_labels() {
        let t = Target::new("bookinfo", "reviews");
        let spec = json!({"hosts": ["reviews"], "http": [
            {"match": [{"headers": {"end-user": {"exact": "jason"}}}],
             "route": [{"destination": {"host": "reviews", "subset": "v2"}}]},
            {"route": [{"destination": {"host": "reviews", "subset": "v1"}}]}]});
        assert_eq!(stable_subset(&spec, &t).as_deref(), Some("v1"));
        let dr = json!({"host": "reviews", "subsets": [
            {"name": "v1", "labels": {"version": "v1"}},
            {"name": "v2", "labels": {"version": "v2"}}]});
        assert_eq!(
            subset_labels(&dr, "v1"),
            Some(BTreeMap::from([("version".to_string(), "v1".to_string())]))
        );
        assert_eq!(subset_labels(&dr, "v3"), None);
        let whole_host = json!({"hosts": ["reviews"], "http": [
            {"route": [{"destination": {"host": "reviews"}}]}]});
        assert_eq!(stable_subset(&whole_host, &t), None);
    }
}
