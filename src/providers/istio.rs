//! Istio subset split: DestinationRule subsets `stable`/`canary` (by the `track` label) and
//! the weights of the VirtualService route to the service's host. Host split: when the
//! route names `<svc>-stable`, the canary destination is the Service `<svc>-canary`
//! (created like the SMI provider does when missing) and no subsets are used. Only our entries are
//! touched: the canary destination, the `kubectl-canary-header` http route and the canary
//! subset; everything else in the user's objects is kept. Writes are read-modify-write with
//! resourceVersion, retried on 409.

use super::shared::modify;
use super::{HeaderRoute, ProviderError, Target, TrafficRouter};
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

pub const STABLE_SUBSET: &str = "stable";
pub const CANARY_SUBSET: &str = "canary";
pub const HEADER_ROUTE_NAME: &str = "kubectl-canary-header";
const GROUP: &str = "networking.istio.io";

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
        F: FnMut(&mut Value) -> Result<bool, String> + Send,
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
                f(spec).map_err(|m| invalid(kind, target, name, &m))
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

/// Index of the http route that carries the service's traffic (not our header route).
fn main_route(spec: &Value, t: &Target) -> Option<usize> {
    spec.get("http")?.as_array()?.iter().position(|h| {
        h.get("name").and_then(Value::as_str) != Some(HEADER_ROUTE_NAME)
            && h.get("route").and_then(Value::as_array).is_some_and(|r| {
                r.iter()
                    .any(|d| dest_host(d).is_some_and(|h| host_matches(h, t)))
            })
    })
}

/// Adds the canary destination (weight 0) and the header route; idempotent.
pub fn prepare_vs(
    spec: &mut Value,
    t: &Target,
    header: Option<&HeaderRoute>,
) -> Result<bool, String> {
    let idx = main_route(spec, t).ok_or_else(|| {
        format!(
            "has no http route to host {:?}; add one (kubectl-canary only adjusts its weights)",
            t.service
        )
    })?;
    let before = spec.clone();
    let host_split = is_host_split(spec, t);
    let http = spec["http"].as_array_mut().expect("checked by main_route");
    let route = http[idx]["route"]
        .as_array_mut()
        .expect("checked by main_route");
    let stable_pos = route
        .iter()
        .position(|d| is_stable(d, t))
        .ok_or("has no stable destination")?;
    if !host_split && dest_subset(&route[stable_pos]).is_none() {
        route[stable_pos]["destination"]["subset"] = json!(STABLE_SUBSET);
    }
    let stable_dest = route[stable_pos]["destination"].clone();
    let canary_dest = {
        let mut dest = stable_dest.clone();
        if host_split {
            dest["host"] = json!(t.canary_service);
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
    let has_header = http
        .iter()
        .any(|h| h.get("name").and_then(Value::as_str) == Some(HEADER_ROUTE_NAME));
    if let (Some(hr), false) = (header, has_header) {
        http.insert(
            0,
            json!({
                "name": HEADER_ROUTE_NAME,
                "match": [{"headers": {hr.name.to_lowercase(): {"exact": hr.value}}}],
                "route": [{"destination": canary_dest}],
            }),
        );
    }
    Ok(*spec != before)
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

/// Removes the canary destination and the header route; stable gets 100.
pub fn cleanup_vs(spec: &mut Value, t: &Target) -> bool {
    let before = spec.clone();
    if let Some(http) = spec.get_mut("http").and_then(Value::as_array_mut) {
        http.retain(|h| h.get("name").and_then(Value::as_str) != Some(HEADER_ROUTE_NAME));
    }
    if let Some(idx) = main_route(spec, t) {
        let route = spec["http"][idx]["route"]
            .as_array_mut()
            .expect("checked by main_route");
        route.retain(|d| !is_canary(d, t));
        if route.len() == 1 {
            route[0]["weight"] = json!(100);
        }
    }
    *spec != before
}

/// Ensures subsets stable/canary exist (labels `track`), without touching others.
pub fn prepare_dr(spec: &mut Value) -> bool {
    let before = spec.clone();
    if !spec.get("subsets").is_some_and(Value::is_array) {
        spec["subsets"] = json!([]);
    }
    let subsets = spec["subsets"].as_array_mut().expect("just set");
    for name in [STABLE_SUBSET, CANARY_SUBSET] {
        if !subsets
            .iter()
            .any(|s| s.get("name").and_then(Value::as_str) == Some(name))
        {
            subsets.push(json!({"name": name, "labels": {"track": name}}));
        }
    }
    *spec != before
}

impl TrafficRouter for IstioRouter {
    fn name(&self) -> &'static str {
        "istio"
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        header: Option<&HeaderRoute>,
    ) -> Result<(), ProviderError> {
        let host_split = match self.virtual_service(client, target).await? {
            Some(vs) => vs
                .data
                .get("spec")
                .is_some_and(|s| is_host_split(s, target)),
            None => false,
        };
        if host_split {
            // Two Services: `<svc>-canary` must exist before the route names it.
            let user = super::shared::user_service(client, target).await?;
            super::shared::ensure_track_service(
                client,
                target,
                &user,
                &target.canary_service,
                "canary",
            )
            .await?;
            let route = target.route.clone();
            return self
                .update(client, target, "VirtualService", &route, |spec| {
                    prepare_vs(spec, target, header)
                })
                .await;
        }
        // DestinationRule first: the VirtualService must never name a subset that does not exist.
        let dr_api = self.api(client, &target.namespace, "DestinationRule");
        if dr_api.get_opt(&target.service).await?.is_none() {
            let gvk = GroupVersionKind::gvk(GROUP, &self.version, "DestinationRule");
            let ar = ApiResource::from_gvk(&gvk);
            let mut obj = DynamicObject::new(&target.service, &ar).within(&target.namespace);
            obj.data = json!({"spec": {"host": target.service, "subsets": [
                {"name": STABLE_SUBSET, "labels": {"track": STABLE_SUBSET}},
                {"name": CANARY_SUBSET, "labels": {"track": CANARY_SUBSET}},
            ]}});
            match dr_api.create(&PostParams::default(), &obj).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        let svc = target.service.clone();
        self.update(client, target, "DestinationRule", &svc, |spec| {
            Ok(prepare_dr(spec))
        })
        .await?;
        let route = target.route.clone();
        self.update(client, target, "VirtualService", &route, |spec| {
            prepare_vs(spec, target, header)
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
        self.update(client, target, "VirtualService", &route, |spec| {
            set_weight_vs(spec, target, weight.min(100))
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
            .update(client, target, "VirtualService", &route, |spec| {
                Ok(cleanup_vs(spec, target))
            })
            .await
        {
            Ok(()) | Err(ProviderError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
        // The subsets stay: a subset that selects no pods routes nothing, and removing it
        // while a sidecar still holds the old route would turn requests into 503s.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target::new("shop", "web")
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
        assert!(prepare_vs(&mut s, &target(), Some(&hr)).unwrap());
        assert_eq!(s["http"][0]["name"], HEADER_ROUTE_NAME);
        assert_eq!(s["http"][0]["route"][0]["destination"]["subset"], "canary");
        assert_eq!(s["http"][1]["name"], "other");
        assert_eq!(s["http"][2]["retries"]["attempts"], 3);
        assert_eq!(s["http"][2]["route"][0]["destination"]["subset"], "stable");
        assert_eq!(
            s["http"][2]["route"][1]["destination"]["port"]["number"],
            80
        );
        assert_eq!(read_weight_vs(&s, &target()), Some(0));
        let again = s.clone();
        assert!(!prepare_vs(&mut s, &target(), Some(&hr)).unwrap());
        assert_eq!(s, again);
    }

    #[test]
    fn weights_and_cleanup() {
        let mut s = vs();
        prepare_vs(&mut s, &target(), None).unwrap();
        assert!(set_weight_vs(&mut s, &target(), 25).unwrap());
        assert_eq!(read_weight_vs(&s, &target()), Some(25));
        assert_eq!(s["http"][1]["route"][0]["weight"], 75);
        assert!(!set_weight_vs(&mut s, &target(), 25).unwrap());
        assert!(cleanup_vs(&mut s, &target()));
        assert_eq!(s["http"][1]["route"].as_array().unwrap().len(), 1);
        assert_eq!(s["http"][1]["route"][0]["weight"], 100);
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
        assert!(prepare_vs(&mut s, &target(), Some(&hr)).unwrap());
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
        assert!(cleanup_vs(&mut s, &target()));
        assert_eq!(s["http"].as_array().unwrap().len(), 1);
        assert_eq!(s["http"][0]["route"].as_array().unwrap().len(), 1);
        assert_eq!(s["http"][0]["route"][0]["weight"], 100);
    }

    #[test]
    fn dr_subsets_added_once() {
        let mut dr =
            json!({"host": "web", "subsets": [{"name": "stable", "labels": {"version": "v1"}}]});
        assert!(prepare_dr(&mut dr));
        assert_eq!(dr["subsets"][0]["labels"]["version"], "v1");
        assert_eq!(dr["subsets"][1]["name"], "canary");
        assert!(!prepare_dr(&mut dr));
    }
}
