//! Gateway API provider: edits the user's HTTPRoute `<route>`
//! (`gateway.networking.k8s.io/v1`) in place.
//!
//! In every rule with a backendRef to Service `<svc>` or `<svc>-stable` ("weighted rules"):
//!
//! ```yaml
//! backendRefs:
//! - {name: <svc>-stable, port: 80, weight: 100-w}   # the user's ref; only weight changes
//! - {name: <svc>-canary, port: 80, weight: w}       # added after it (same port/kind)
//! ```
//!
//! With a header route, one extra rule per weighted rule, appended after the user's rules:
//! a copy of the weighted rule (filters, timeouts…) named `kubectl-canary-header[-N]`
//! whose matches are the weighted rule's matches (or `PathPrefix /`) plus
//! `headers: [{type: Exact, name, value}]`, and whose only backendRef is the canary.
//! Gateway API chooses among matching rules by specificity (more header matches win),
//! not by list order, so appending it routes exactly like placing it first — and it
//! keeps `rules[0]` the weighted rule for tools that only look there.
//! Other rules, refs and fields are left untouched; the stable ref's original weight is
//! remembered in an annotation and restored by cleanup.

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::shared::{
    api_error, check_weight, delete_managed_service, drop_fence, ensure_version_service,
    fence_weight_write, modify, num, percent, pin_service, remember_stable_weight,
    take_stable_weight, unpin_service, user_service,
};
use super::{HeaderRoute, ProviderError, Target, TrafficRouter};

const KIND: &str = "HTTPRoute";
/// Name (prefix) of the header-route rules we add.
pub const HEADER_RULE_NAME: &str = "kubectl-canary-header";

/// HTTPRoute router: the Gateway API's, or Linkerd's own `policy.linkerd.io` HTTPRoute,
/// which has the same spec (linkerd/linkerd2 `policy-controller/k8s/index/src/outbound/index/http.rs`
/// converts both kinds alike), so one set of edits serves both.
#[derive(Debug, Clone)]
pub struct GatewayApi {
    group: &'static str,
    version: &'static str,
}

impl Default for GatewayApi {
    fn default() -> Self {
        Self::new()
    }
}

impl GatewayApi {
    /// `gateway.networking.k8s.io/v1` HTTPRoutes.
    pub fn new() -> Self {
        GatewayApi {
            group: GATEWAY_GROUP,
            version: "v1",
        }
    }

    /// Linkerd's `policy.linkerd.io/v1beta3` HTTPRoutes.
    pub fn linkerd() -> Self {
        GatewayApi {
            group: LINKERD_GROUP,
            version: LINKERD_VERSION,
        }
    }

    /// Linkerd's own HTTPRoute kind (its metrics are always Linkerd's).
    pub fn is_linkerd(&self) -> bool {
        self.group == LINKERD_GROUP
    }

    fn api(&self, client: &Client, ns: &str) -> Api<DynamicObject> {
        let gvk = GroupVersionKind::gvk(self.group, self.version, KIND);
        let ar = ApiResource::from_gvk_with_plural(&gvk, "httproutes");
        Api::namespaced_with(client.clone(), ns, &ar)
    }
}

pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
pub const LINKERD_GROUP: &str = "policy.linkerd.io";
pub const LINKERD_VERSION: &str = "v1beta3";

/// The provider entries (see [`super::registry`]).
pub static PROVIDER: super::Provider = super::Provider {
    name: "gateway-api",
    summary: "Gateway API HTTPRoute backendRefs weights (also GAMMA routes attached to a Service)",
    group: GATEWAY_GROUP,
    versions: &["v1"],
    kind: KIND,
    routes_service,
    make: |_| Box::pin(async { super::registry::boxed(GatewayApi::new()) }),
};

pub static LINKERD_PROVIDER: super::Provider = super::Provider {
    name: "linkerd-httproute",
    summary: "Linkerd's own HTTPRoute (policy.linkerd.io), edited like the Gateway API's",
    group: LINKERD_GROUP,
    versions: &[LINKERD_VERSION],
    kind: KIND,
    routes_service,
    make: |_| Box::pin(async { super::registry::boxed(GatewayApi::linkerd()) }),
};

/// Whether an HTTPRoute (Gateway API's or Linkerd's) routes Service `svc`: attached to it
/// as a GAMMA parent, or sending to it (or to `stable`, its version Service) from a rule.
fn routes_service(o: &Value, svc: &str, stable: &str) -> bool {
    // A GAMMA route is attached to the Service itself (parentRef kind
    // Service; gateway-api geps/gep-1426), whatever its backends are.
    let attached = o
        .pointer("/spec/parentRefs")
        .and_then(serde_json::Value::as_array)
        .is_some_and(|ps| {
            ps.iter()
                .any(|p| p["kind"] == "Service" && p["name"] == svc)
        });
    attached
        || o.pointer("/spec/rules")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|rules| {
                rules.iter().any(|r| {
                    r["backendRefs"].as_array().is_some_and(|refs| {
                        refs.iter().any(|b| b["name"] == svc || b["name"] == stable)
                    })
                })
            })
}

fn str_of<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// A backendRef to a core Service in the route's namespace.
fn is_service_ref(r: &Value, ns: &str) -> bool {
    str_of(r, "group").is_none_or(str::is_empty)
        && str_of(r, "kind").is_none_or(|k| k == "Service")
        && str_of(r, "namespace").is_none_or(|n| n == ns)
}

fn is_stable_ref(r: &Value, t: &Target) -> bool {
    is_service_ref(r, &t.namespace)
        && str_of(r, "name").is_some_and(|n| n == t.service || n == t.stable_service)
}

fn is_canary_ref(r: &Value, t: &Target) -> bool {
    is_service_ref(r, &t.namespace) && str_of(r, "name") == Some(t.canary_service.as_str())
}

fn refs(rule: &Value) -> &[Value] {
    rule.get("backendRefs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// One of our header rules: named by us, or (if the CRD pruned `name`) canary-only refs
/// and header matches only.
fn is_header_rule(rule: &Value, t: &Target) -> bool {
    if str_of(rule, "name").is_some_and(|n| n.starts_with(HEADER_RULE_NAME)) {
        return true;
    }
    let r = refs(rule);
    let matches = rule.get("matches").and_then(Value::as_array);
    !r.is_empty()
        && r.iter().all(|x| is_canary_ref(x, t))
        && matches.is_some_and(|m| {
            !m.is_empty()
                && m.iter().all(|x| {
                    x.get("headers")
                        .and_then(Value::as_array)
                        .is_some_and(|h| !h.is_empty())
                })
        })
}

fn is_weighted_rule(rule: &Value, t: &Target) -> bool {
    !is_header_rule(rule, t) && refs(rule).iter().any(|r| is_stable_ref(r, t))
}

fn rules(spec: &Value) -> &[Value] {
    spec.get("rules")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Ensure a canary ref next to the stable ref of a weighted rule (new ones get weight 0).
fn ensure_canary_ref(rule: &mut Value, t: &Target) {
    let list = rule["backendRefs"].as_array_mut().expect("weighted rule");
    if list.iter().any(|r| is_canary_ref(r, t)) {
        return;
    }
    let si = list
        .iter()
        .position(|r| is_stable_ref(r, t))
        .expect("weighted rule");
    let mut c = list[si].clone();
    c["name"] = json!(t.canary_service);
    c["weight"] = json!(0);
    list.insert(si + 1, c);
}

fn header_rule(weighted: &Value, t: &Target, headers: &[HeaderRoute], n: usize) -> Value {
    let mut rule = weighted.clone();
    rule["name"] = json!(if n == 0 {
        HEADER_RULE_NAME.to_string()
    } else {
        format!("{HEADER_RULE_NAME}-{}", n + 1)
    });
    let base = weighted
        .get("matches")
        .and_then(Value::as_array)
        .filter(|m| !m.is_empty())
        .cloned()
        .unwrap_or_else(|| vec![json!({"path": {"type": "PathPrefix", "value": "/"}})]);
    // Each of the rule's matches with each header: matches are ORed (HTTPRouteRule.matches),
    // so any one header reaches the canary.
    let mut matches = Vec::new();
    for h in headers {
        for m in &base {
            let mut m = m.clone();
            let mut hs: Vec<Value> = m
                .get("headers")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            hs.retain(|x| !str_of(x, "name").is_some_and(|n| n.eq_ignore_ascii_case(&h.name)));
            hs.push(json!({"type": "Exact", "name": h.name, "value": h.value}));
            m["headers"] = Value::Array(hs);
            matches.push(m);
        }
    }
    rule["matches"] = Value::Array(matches);
    let mut canary = refs(weighted)
        .iter()
        .find(|r| is_canary_ref(r, t))
        .cloned()
        .expect("canary ref ensured");
    if let Some(o) = canary.as_object_mut() {
        o.remove("weight");
    }
    rule["backendRefs"] = json!([canary]);
    rule
}

/// prepare: canary refs in every weighted rule, header rules in sync with `headers`.
fn hr_prepare(spec: &mut Value, t: &Target, headers: &[HeaderRoute]) -> Result<bool, String> {
    let old = rules(spec).to_vec();
    let mut new: Vec<Value> = old
        .iter()
        .filter(|r| !is_header_rule(r, t))
        .cloned()
        .collect();
    let mut weighted = 0;
    for r in new.iter_mut().filter(|r| is_weighted_rule(r, t)) {
        ensure_canary_ref(r, t);
        weighted += 1;
    }
    if weighted == 0 {
        return Err(format!(
            "has no rule with a backendRef to Service {} or {}: add one (port as the \
             Service's) or pass --provider",
            t.service, t.stable_service
        ));
    }
    if !headers.is_empty() {
        let extra: Vec<Value> = new
            .iter()
            .filter(|r| is_weighted_rule(r, t))
            .enumerate()
            .map(|(n, r)| header_rule(r, t, headers, n))
            .collect();
        new.extend(extra);
    }
    if new == old {
        return Ok(false);
    }
    spec["rules"] = Value::Array(new);
    Ok(true)
}

/// The first weighted rule's stable ref weight (for remembering it), `Value::Null` if unset.
fn stable_weight(spec: &Value, t: &Target) -> Option<Value> {
    let rule = rules(spec).iter().find(|r| is_weighted_rule(r, t))?;
    let r = refs(rule).iter().find(|r| is_stable_ref(r, t))?;
    Some(r.get("weight").cloned().unwrap_or(Value::Null))
}

fn set_w(r: &mut Value, w: u32) -> bool {
    if r.get("weight") == Some(&json!(w)) {
        return false;
    }
    r["weight"] = json!(w);
    true
}

fn hr_set_weight(spec: &mut Value, t: &Target, w: u32) -> Result<bool, String> {
    let Some(list) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return Err("has no rules".into());
    };
    let mut changed = false;
    let mut weighted = 0;
    for rule in list.iter_mut().filter(|r| is_weighted_rule(r, t)) {
        weighted += 1;
        let before = refs(rule).len();
        ensure_canary_ref(rule, t);
        changed |= refs(rule).len() != before;
        for r in rule["backendRefs"].as_array_mut().expect("weighted") {
            if is_stable_ref(r, t) {
                changed |= set_w(r, 100 - w);
            } else if is_canary_ref(r, t) {
                changed |= set_w(r, w);
            }
        }
    }
    if weighted == 0 {
        return Err(format!(
            "has no rule with a backendRef to Service {} or {}",
            t.service, t.stable_service
        ));
    }
    Ok(changed)
}

fn hr_read_weight(spec: &Value, t: &Target) -> Option<u32> {
    let rule = rules(spec).iter().find(|r| is_weighted_rule(r, t))?;
    let w = |r: &Value| r.get("weight").and_then(num).unwrap_or(1.0);
    let canary = refs(rule).iter().find(|r| is_canary_ref(r, t)).map(w)?;
    let stable = refs(rule).iter().find(|r| is_stable_ref(r, t)).map(w)?;
    Some(percent(stable, canary))
}

/// cleanup: header rules and canary refs removed; stable weight restored
/// (`Some(Some(w))` → w, `Some(None)` → unset, `None` → 100 where a canary ref was).
fn hr_cleanup(spec: &mut Value, t: &Target, restore: Option<Option<i64>>) -> bool {
    let Some(list) = spec.get_mut("rules").and_then(Value::as_array_mut) else {
        return false;
    };
    let before = list.len();
    list.retain(|r| !is_header_rule(r, t));
    let mut changed = list.len() != before;
    for rule in list.iter_mut().filter(|r| is_weighted_rule(r, t)) {
        let refs = rule["backendRefs"].as_array_mut().expect("weighted");
        let n = refs.len();
        refs.retain(|r| !is_canary_ref(r, t));
        let had_canary = refs.len() != n;
        changed |= had_canary;
        for r in refs.iter_mut().filter(|r| is_stable_ref(r, t)) {
            match restore {
                Some(Some(w)) => changed |= set_w(r, w.clamp(0, 1_000_000) as u32),
                Some(None) => {
                    changed |= r.as_object_mut().and_then(|o| o.remove("weight")).is_some()
                }
                None if had_canary => changed |= set_w(r, 100),
                None => {}
            }
        }
    }
    changed
}

fn invalid(t: &Target, message: String) -> ProviderError {
    ProviderError::Invalid {
        kind: KIND,
        namespace: t.namespace.clone(),
        name: t.route.clone(),
        message,
    }
}

fn missing(t: &Target) -> ProviderError {
    ProviderError::NotFound {
        kind: KIND,
        namespace: t.namespace.clone(),
        name: t.route.clone(),
        hint: format!(
            "no HTTPRoute named {}: create the HTTPRoute first (Gateway API CRDs installed?) \
             or pass --provider",
            t.route
        ),
    }
}

fn spec_mut<'a>(o: &'a mut DynamicObject, t: &Target) -> Result<&'a mut Value, ProviderError> {
    match o.data.get_mut("spec") {
        Some(s) if s.is_object() => Ok(s),
        _ => Err(invalid(t, "has no spec".into())),
    }
}

impl TrafficRouter for GatewayApi {
    fn metrics(&self) -> super::registry::Metrics {
        if self.is_linkerd() {
            super::registry::Metrics::Of(crate::core::schedule::MetricsFlavour::Linkerd)
        } else {
            super::registry::Metrics::OfMesh
        }
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        let api = self.api(client, &target.namespace);
        // Check the route first: a missing route is the likelier mistake.
        if api
            .get_opt(&target.route)
            .await
            .map_err(|e| api_error(KIND, &target.namespace, &target.route, e))?
            .is_none()
        {
            return Err(missing(target));
        }
        let user = user_service(client, target).await?;
        let pods = target.selectors()?;
        ensure_version_service(client, target, &user, &target.canary_service, &pods.canary).await?;
        // The stable backend may be the user's Service over both versions: pin it.
        pin_service(client, target, &target.service).await?;
        pin_service(client, target, &target.stable_service).await?;
        modify(&api, KIND, &target.namespace, &target.route, |o| {
            hr_prepare(spec_mut(o, target)?, target, headers).map_err(|m| invalid(target, m))
        })
        .await?
        .map(|_| ())
        .ok_or_else(|| missing(target))
    }

    async fn set_weight(
        &self,
        client: &Client,
        target: &Target,
        weight: u32,
    ) -> Result<(), ProviderError> {
        check_weight(KIND, target, weight)?;
        let api = self.api(client, &target.namespace);
        modify(&api, KIND, &target.namespace, &target.route, |o| {
            let ann = o.metadata.annotations.get_or_insert_with(Default::default);
            let fenced = fence_weight_write(ann, KIND, target, &target.route, weight)?;
            let spec = spec_mut(o, target)?;
            let orig = stable_weight(spec, target);
            let changed = hr_set_weight(spec, target, weight).map_err(|m| invalid(target, m))?;
            if changed {
                remember_stable_weight(o.meta_mut(), orig.as_ref());
            }
            Ok(changed | fenced)
        })
        .await?
        .map(|_| ())
        .ok_or_else(|| missing(target))
    }

    async fn read_weight(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Option<u32>, ProviderError> {
        let api = self.api(client, &target.namespace);
        let obj = api
            .get_opt(&target.route)
            .await
            .map_err(|e| api_error(KIND, &target.namespace, &target.route, e))?;
        Ok(obj.and_then(|o| hr_read_weight(o.data.get("spec")?, target)))
    }

    async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        let api = self.api(client, &target.namespace);
        modify(&api, KIND, &target.namespace, &target.route, |o| {
            let restore = take_stable_weight(o.meta_mut());
            let had = restore.is_some() | drop_fence(o.meta_mut());
            let changed = match o.data.get_mut("spec") {
                Some(spec) => hr_cleanup(spec, target, restore),
                None => false,
            };
            Ok(changed || had)
        })
        .await?;
        unpin_service(client, &target.namespace, &target.service).await?;
        unpin_service(client, &target.namespace, &target.stable_service).await?;
        delete_managed_service(client, &target.namespace, &target.canary_service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Target {
        Target::new("ns", "web")
    }

    fn route() -> Value {
        json!({
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/api"}}],
                 "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"add": [{"name": "x", "value": "1"}]}}],
                 "backendRefs": [{"name": "web-stable", "port": 80}, {"name": "mirror", "port": 80, "weight": 1}]},
                {"backendRefs": [{"name": "other", "port": 8080}]}
            ]
        })
    }

    #[test]
    fn prepare_set_cleanup_round_trip() {
        let mut spec = route();
        let h = HeaderRoute {
            name: "x-canary".into(),
            value: "always".into(),
        };
        assert!(hr_prepare(&mut spec, &t(), std::slice::from_ref(&h)).unwrap());
        assert!(!hr_prepare(&mut spec, &t(), std::slice::from_ref(&h)).unwrap());
        assert_eq!(
            spec["rules"][0]["backendRefs"][1],
            json!({"name": "web-canary", "port": 80, "weight": 0})
        );
        assert_eq!(hr_read_weight(&spec, &t()), Some(0));
        let hr = &spec["rules"][2];
        assert_eq!(hr["name"], HEADER_RULE_NAME);
        assert_eq!(
            hr["matches"],
            json!([{"path": {"type": "PathPrefix", "value": "/api"},
                    "headers": [{"type": "Exact", "name": "x-canary", "value": "always"}]}])
        );
        assert_eq!(
            hr["backendRefs"],
            json!([{"name": "web-canary", "port": 80}])
        );
        assert_eq!(hr["filters"], spec["rules"][0]["filters"]);

        let orig = stable_weight(&spec, &t());
        assert_eq!(orig, Some(Value::Null));
        assert!(hr_set_weight(&mut spec, &t(), 30).unwrap());
        assert!(!hr_set_weight(&mut spec, &t(), 30).unwrap());
        assert_eq!(hr_read_weight(&spec, &t()), Some(30));
        assert_eq!(spec["rules"][0]["backendRefs"][0]["weight"], 70);
        assert_eq!(spec["rules"][0]["backendRefs"][2]["weight"], 1);

        // Header rule without `name` (pruned by a CRD that lacks it) is still ours.
        spec["rules"][2].as_object_mut().unwrap().remove("name");
        assert!(hr_cleanup(&mut spec, &t(), Some(None)));
        assert!(!hr_cleanup(&mut spec, &t(), Some(None)));
        assert_eq!(spec, route());
    }

    #[test]
    fn route_without_target_is_an_error() {
        let mut spec = json!({"rules": [{"backendRefs": [{"name": "other", "port": 80}]}]});
        assert!(hr_prepare(&mut spec, &t(), &[]).is_err());
        assert!(hr_set_weight(&mut spec, &t(), 5).is_err());
        assert_eq!(hr_read_weight(&spec, &t()), None);
    }
}
