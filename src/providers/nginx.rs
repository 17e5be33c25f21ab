//! ingress-nginx provider: a second Ingress `<route>-canary`, cloned from the primary
//! Ingress `<route>` (same hosts, paths, ingressClassName, TLS), whose backends point to
//! `<svc>-canary`. The primary Ingress is never modified.
//!
//! ```yaml
//! apiVersion: networking.k8s.io/v1
//! kind: Ingress
//! metadata:
//!   name: <route>-canary
//!   labels: {app.kubernetes.io/managed-by: kubectl-canary}
//!   ownerReferences: [{kind: Ingress, name: <route>, ...}]   # deleted with the primary
//!   annotations:
//!     nginx.ingress.kubernetes.io/canary: "true"
//!     nginx.ingress.kubernetes.io/canary-weight: "<w>"
//!     nginx.ingress.kubernetes.io/canary-by-header: "<name>"         # with a header route
//!     nginx.ingress.kubernetes.io/canary-by-header-value: "<value>"
//! spec:  # primary's spec; only paths whose backend is <svc> or <svc>-stable, now <svc>-canary
//! ```

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    Ingress, IngressBackend, IngressRule, IngressServiceBackend, IngressSpec, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::ObjectMeta;
use kube::{Client, Resource};

use super::shared::{
    api_error, check_weight, delete_managed_service, ensure_version_service, fence_weight_write,
    is_managed, is_status, managed_labels, modify, pin_service, unpin_service, user_service,
};
use super::{HeaderRoute, ProviderError, Target, TrafficRouter};

const KIND: &str = "Ingress";
pub const CANARY: &str = "nginx.ingress.kubernetes.io/canary";
pub const CANARY_WEIGHT: &str = "nginx.ingress.kubernetes.io/canary-weight";
pub const CANARY_WEIGHT_TOTAL: &str = "nginx.ingress.kubernetes.io/canary-weight-total";
pub const CANARY_BY_HEADER: &str = "nginx.ingress.kubernetes.io/canary-by-header";
pub const CANARY_BY_HEADER_VALUE: &str = "nginx.ingress.kubernetes.io/canary-by-header-value";
/// Legacy class annotation, copied from the primary when it uses it instead of ingressClassName.
/// The provider entry (see [`super::registry`]).
pub static PROVIDER: super::Provider = super::Provider {
    name: "nginx",
    summary: "ingress-nginx canary Ingress (canary-weight annotation)",
    group: "networking.k8s.io",
    versions: &["v1"],
    kind: KIND,
    routes_service,
    make: |_| Box::pin(async { super::registry::boxed(Nginx::new()) }),
};

/// Whether an Ingress (not itself a canary) has a path to Service `svc` or `stable`.
fn routes_service(o: &serde_json::Value, svc: &str, stable: &str) -> bool {
    let canary = o
        .pointer("/metadata/annotations/nginx.ingress.kubernetes.io~1canary")
        .and_then(serde_json::Value::as_str)
        == Some("true");
    !canary
        && o.pointer("/spec/rules")
            .and_then(serde_json::Value::as_array)
            .is_some_and(|rules| {
                rules.iter().any(|r| {
                    r.pointer("/http/paths")
                        .and_then(serde_json::Value::as_array)
                        .is_some_and(|ps| {
                            ps.iter().any(|p| {
                                let b = p.pointer("/backend/service/name");
                                b == Some(&serde_json::json!(svc))
                                    || b == Some(&serde_json::json!(stable))
                            })
                        })
                })
            })
}

const LEGACY_CLASS: &str = "kubernetes.io/ingress.class";

/// ingress-nginx canary-Ingress router.
#[derive(Debug, Default, Clone)]
pub struct Nginx;

impl Nginx {
    pub fn new() -> Self {
        Nginx
    }
}

/// Name of the canary Ingress for a target.
pub fn canary_ingress_name(t: &Target) -> String {
    format!("{}-canary", t.route)
}

fn is_canary(meta: &ObjectMeta) -> bool {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(CANARY))
        .is_some_and(|v| v.trim() == "true")
}

/// The backend pointed at `<svc>-canary` when it points to `<svc>` or `<svc>-stable`.
fn retarget(b: &IngressBackend, t: &Target) -> Option<IngressBackend> {
    let s = b.service.as_ref()?;
    if s.name != t.service && s.name != t.stable_service {
        return None;
    }
    let mut b = b.clone();
    if let Some(s) = b.service.as_mut() {
        s.name = t.canary_service.clone();
    }
    Some(b)
}

/// The canary Ingress spec: the primary's, keeping only paths (and the default backend)
/// that go to the target Service, retargeted to `<svc>-canary`.
fn canary_spec(primary: &IngressSpec, t: &Target) -> Option<IngressSpec> {
    let rules: Vec<IngressRule> = primary
        .rules
        .iter()
        .flatten()
        .filter_map(|r| {
            let http = r.http.as_ref()?;
            let paths: Vec<_> = http
                .paths
                .iter()
                .filter_map(|p| {
                    let backend = retarget(&p.backend, t)?;
                    let mut p = p.clone();
                    p.backend = backend;
                    Some(p)
                })
                .collect();
            if paths.is_empty() {
                return None;
            }
            let mut r = r.clone();
            r.http.as_mut().expect("checked").paths = paths;
            Some(r)
        })
        .collect();
    let default_backend = primary
        .default_backend
        .as_ref()
        .and_then(|b| retarget(b, t));
    if rules.is_empty() && default_backend.is_none() {
        return None;
    }
    Some(IngressSpec {
        ingress_class_name: primary.ingress_class_name.clone(),
        tls: primary.tls.clone(),
        rules: (!rules.is_empty()).then_some(rules),
        default_backend,
    })
}

fn set_ann(ann: &mut BTreeMap<String, String>, k: &str, v: Option<String>) -> bool {
    match v {
        Some(v) => ann.insert(k.to_string(), v.clone()).as_ref() != Some(&v),
        None => ann.remove(k).is_some(),
    }
}

/// Canary percent from the annotations (None when no weight annotation).
/// `canary-weight-total` counts only when above 100: kubernetes/ingress-nginx
/// `rootfs/etc/nginx/lua/balancer.lua` (`route_to_alternative_balancer`) ignores smaller totals,
/// although the docs only say "defaults to 100" (the source wins).
fn weight_of(meta: &ObjectMeta) -> Option<u32> {
    let ann = meta.annotations.as_ref()?;
    let w: f64 = ann.get(CANARY_WEIGHT)?.trim().parse().ok()?;
    let total = ann
        .get(CANARY_WEIGHT_TOTAL)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|t| *t > 100.0)
        .unwrap_or(100.0);
    Some(((w.clamp(0.0, total) / total) * 100.0).round() as u32)
}

/// (host, path, Service backend) of every path of `spec` that goes to a Service.
fn paths(spec: Option<&IngressSpec>) -> impl Iterator<Item = (&str, &str, &IngressServiceBackend)> {
    spec.and_then(|s| s.rules.as_ref())
        .into_iter()
        .flatten()
        .flat_map(|r| {
            let host = r.host.as_deref().unwrap_or("");
            r.http
                .iter()
                .flat_map(|h| h.paths.iter())
                .filter_map(move |p| {
                    Some((
                        host,
                        p.path.as_deref().unwrap_or("/"),
                        p.backend.service.as_ref()?,
                    ))
                })
        })
}

/// The other Ingresses that meet the target's upstream: a canary Ingress of someone else's
/// on one of the primary's locations (an error: kubernetes/ingress-nginx
/// `rootfs/etc/nginx/lua/balancer.lua` uses only `alternative_backends[1]`, so one of the
/// two canaries would silently get nothing), and primary Ingresses whose paths go to the
/// same Service and port. Those share the primary's upstream (`<ns>-<svc>-<port>`,
/// `internal/ingress/controller/util.go` `upstreamName`), so the controller merges our
/// canary into their traffic too (`controller.go` `mergeAlternativeBackends`): they get the
/// same split, and the metrics, which select by Service, count them.
pub async fn neighbours(
    client: &Client,
    target: &Target,
) -> Result<(Vec<String>, Vec<String>), ProviderError> {
    let ns = &target.namespace;
    let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
    let all = api
        .list(&Default::default())
        .await
        .map_err(|e| api_error(KIND, ns, &target.route, e))?
        .items;
    let ours = canary_ingress_name(target);
    let Some(primary) = all
        .iter()
        .find(|i| i.metadata.name.as_deref() == Some(target.route.as_str()))
    else {
        return Ok((Vec::new(), Vec::new()));
    };
    let is_target =
        |b: &IngressServiceBackend| b.name == target.service || b.name == target.stable_service;
    let locations: Vec<(&str, &str)> = paths(primary.spec.as_ref())
        .filter(|(_, _, b)| is_target(b))
        .map(|(h, p, _)| (h, p))
        .collect();
    let upstreams: Vec<(&str, Option<&ServiceBackendPort>)> = paths(primary.spec.as_ref())
        .filter(|(_, _, b)| is_target(b))
        .map(|(_, _, b)| (b.name.as_str(), b.port.as_ref()))
        .collect();
    let (mut canaries, mut sharing) = (Vec::new(), Vec::new());
    for ing in &all {
        let name = ing.metadata.name.clone().unwrap_or_default();
        if name == target.route || name == ours {
            continue;
        }
        if is_canary(&ing.metadata) {
            if paths(ing.spec.as_ref()).any(|(h, p, _)| locations.contains(&(h, p))) {
                canaries.push(name);
            }
        } else if paths(ing.spec.as_ref())
            .any(|(_, _, b)| upstreams.contains(&(b.name.as_str(), b.port.as_ref())))
        {
            sharing.push(name);
        }
    }
    Ok((canaries, sharing))
}

/// A canary Ingress of someone else's on the primary's locations is an error (see
/// [`neighbours`]); checked by start before anything is created, and again by prepare.
pub async fn refuse_other_canaries(client: &Client, target: &Target) -> Result<(), ProviderError> {
    let (canaries, _) = neighbours(client, target).await?;
    refuse_canaries(target, &canaries)
}

/// The error for `canaries`, the other canary Ingresses [`neighbours`] found, if any.
pub fn refuse_canaries(target: &Target, canaries: &[String]) -> Result<(), ProviderError> {
    if canaries.is_empty() {
        return Ok(());
    }
    Err(ProviderError::Invalid {
        kind: KIND,
        namespace: target.namespace.clone(),
        name: target.route.clone(),
        message: format!(
            "Ingress {} is already a canary for its paths, and ingress-nginx sends a location \
             to one canary only (balancer.lua): end that canary first (delete it, or set its \
             {CANARY} annotation to \"false\")",
            canaries.join(", ")
        ),
    })
}

fn not_prepared(t: &Target) -> ProviderError {
    ProviderError::NotFound {
        kind: KIND,
        namespace: t.namespace.clone(),
        name: canary_ingress_name(t),
        hint: "run prepare first (it creates the canary Ingress), or pass --provider".into(),
    }
}

impl TrafficRouter for Nginx {
    fn metrics(&self) -> super::registry::Metrics {
        super::registry::Metrics::Of(crate::core::schedule::MetricsFlavour::Nginx)
    }

    /// `nginx.ingress.kubernetes.io/canary-by-header` takes one header name.
    fn header_routes_routed(&self) -> (usize, &'static str) {
        (1, "ingress-nginx's canary-by-header takes one header")
    }

    async fn check_layout(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<Vec<String>, ProviderError> {
        let (canaries, sharing) = neighbours(client, target).await?;
        refuse_canaries(target, &canaries)?;
        Ok(sharing
            .iter()
            .map(|i| {
                format!(
                    "Ingress {i} sends to the same Service and port as {}, so ingress-nginx gives its requests the same canary share (one upstream per Service and port); its requests count in the metrics too",
                    target.route
                )
            })
            .collect())
    }

    async fn prepare(
        &self,
        client: &Client,
        target: &Target,
        headers: &[HeaderRoute],
    ) -> Result<(), ProviderError> {
        let ns = &target.namespace;
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        let primary = api
            .get_opt(&target.route)
            .await
            .map_err(|e| api_error(KIND, ns, &target.route, e))?
            .ok_or_else(|| ProviderError::NotFound {
                kind: KIND,
                namespace: ns.clone(),
                name: target.route.clone(),
                hint: format!(
                    "no Ingress named {}: create the primary Ingress first or pass --provider",
                    target.route
                ),
            })?;
        let invalid = |message: String| ProviderError::Invalid {
            kind: KIND,
            namespace: ns.clone(),
            name: target.route.clone(),
            message,
        };
        if is_canary(&primary.metadata) {
            return Err(invalid(format!(
                "is itself a canary Ingress ({CANARY}: \"true\"); pass the primary Ingress"
            )));
        }
        let spec = primary
            .spec
            .as_ref()
            .and_then(|s| canary_spec(s, target))
            .ok_or_else(|| {
                invalid(format!(
                    "has no backend pointing to Service {} or {}",
                    target.service, target.stable_service
                ))
            })?;
        refuse_other_canaries(client, target).await?;
        let user = user_service(client, target).await?;
        let pods = target.selectors()?;
        ensure_version_service(client, target, &user, &target.canary_service, &pods.canary).await?;
        // The stable backend may be the user's Service over both versions: pin it.
        pin_service(client, target, &target.service).await?;
        pin_service(client, target, &target.stable_service).await?;

        let name = canary_ingress_name(target);
        let owner = OwnerReference {
            api_version: "networking.k8s.io/v1".into(),
            kind: KIND.into(),
            name: target.route.clone(),
            uid: primary.metadata.uid.clone().unwrap_or_default(),
            ..Default::default()
        };
        let legacy_class = primary
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(LEGACY_CLASS).cloned());
        // Our annotations; canary-weight only when missing (keep a running split).
        let sync = |meta: &mut ObjectMeta| -> bool {
            let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
            let mut ch = set_ann(ann, CANARY, Some("true".into()));
            if !ann.contains_key(CANARY_WEIGHT) {
                ch |= set_ann(ann, CANARY_WEIGHT, Some("0".into()));
            }
            // One header per canary Ingress (the annotations take one name and one value);
            // start says which of several it could not route (Router::header_routes_routed).
            let header = headers.first();
            ch |= set_ann(ann, CANARY_BY_HEADER, header.map(|h| h.name.clone()));
            ch |= set_ann(ann, CANARY_BY_HEADER_VALUE, header.map(|h| h.value.clone()));
            if let Some(c) = &legacy_class {
                ch |= set_ann(ann, LEGACY_CLASS, Some(c.clone()));
            }
            let labels = meta.labels.get_or_insert_with(BTreeMap::new);
            for (k, v) in managed_labels() {
                ch |= labels.insert(k, v.clone()).as_ref() != Some(&v);
            }
            if !owner.uid.is_empty()
                && meta.owner_references.as_deref() != Some(std::slice::from_ref(&owner))
            {
                meta.owner_references = Some(vec![owner.clone()]);
                ch = true;
            }
            ch
        };
        for _ in 0..3 {
            let updated = modify(&api, KIND, ns, &name, |ing| {
                if !is_managed(&ing.metadata) && !is_canary(&ing.metadata) {
                    return Err(ProviderError::Invalid {
                        kind: KIND,
                        namespace: ns.clone(),
                        name: name.clone(),
                        message: "exists and is not a canary Ingress: rename or delete it".into(),
                    });
                }
                let mut ch = sync(&mut ing.metadata);
                if ing.spec.as_ref() != Some(&spec) {
                    ing.spec = Some(spec.clone());
                    ch = true;
                }
                Ok(ch)
            })
            .await?;
            if updated.is_some() {
                return Ok(());
            }
            let mut ing = Ingress {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(ns.clone()),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
                ..Default::default()
            };
            sync(&mut ing.metadata);
            match api.create(&PostParams::default(), &ing).await {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 409) => continue,
                Err(e) => return Err(api_error(KIND, ns, &name, e)),
            }
        }
        Err(ProviderError::Invalid {
            kind: KIND,
            namespace: ns.clone(),
            name,
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
        let api: Api<Ingress> = Api::namespaced(client.clone(), &target.namespace);
        let name = canary_ingress_name(target);
        modify(&api, KIND, &target.namespace, &name, |ing| {
            if !is_canary(&ing.metadata) {
                return Err(not_prepared(target));
            }
            let ann = ing.metadata.annotations.get_or_insert_with(BTreeMap::new);
            let fenced = fence_weight_write(ann, KIND, target, &name, weight)?;
            // Weight is a percentage: a foreign canary-weight-total would rescale it.
            let a = set_ann(ann, CANARY_WEIGHT_TOTAL, None);
            let b = set_ann(ann, CANARY_WEIGHT, Some(weight.to_string()));
            Ok(a | b | fenced)
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
        let api: Api<Ingress> = Api::namespaced(client.clone(), &target.namespace);
        let name = canary_ingress_name(target);
        let ing = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(KIND, &target.namespace, &name, e))?;
        Ok(ing
            .filter(|i| is_canary(&i.metadata))
            .and_then(|i| weight_of(&i.metadata)))
    }

    async fn cleanup(&self, client: &Client, target: &Target) -> Result<(), ProviderError> {
        let ns = &target.namespace;
        let api: Api<Ingress> = Api::namespaced(client.clone(), ns);
        let name = canary_ingress_name(target);
        if let Some(ing) = api
            .get_opt(&name)
            .await
            .map_err(|e| api_error(KIND, ns, &name, e))?
            && is_managed(&ing.metadata)
        {
            let dp = DeleteParams {
                preconditions: ing.meta().uid.clone().map(|uid| kube::api::Preconditions {
                    uid: Some(uid),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&name, &dp).await {
                Ok(_) => {}
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => return Err(api_error(KIND, ns, &name, e)),
            }
        }
        unpin_service(client, ns, &target.service).await?;
        unpin_service(client, ns, &target.stable_service).await?;
        delete_managed_service(client, ns, &target.canary_service).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canary_spec_keeps_only_target_paths() {
        let t = Target::new("ns", "web");
        let primary: IngressSpec = serde_json::from_value(json!({
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["web.test"], "secretName": "tls"}],
            "rules": [
                {"host": "web.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web", "port": {"number": 80}}}},
                    {"path": "/other", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}},
                {"host": "x.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}}
                ]}}
            ]
        }))
        .unwrap();
        let c = serde_json::to_value(canary_spec(&primary, &t).unwrap()).unwrap();
        assert_eq!(
            c,
            json!({
                "ingressClassName": "nginx",
                "tls": [{"hosts": ["web.test"], "secretName": "tls"}],
                "rules": [{"host": "web.test", "http": {"paths": [
                    {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "web-canary", "port": {"number": 80}}}}
                ]}}]
            })
        );
        let none: IngressSpec = serde_json::from_value(json!({"rules": [{"host": "x", "http": {"paths": [
            {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "other", "port": {"number": 80}}}}]}}]}))
        .unwrap();
        assert!(canary_spec(&none, &t).is_none());
    }

    #[test]
    fn weight_annotations() {
        let mut meta = ObjectMeta::default();
        assert_eq!(weight_of(&meta), None);
        let ann = meta.annotations.get_or_insert_with(BTreeMap::new);
        assert!(set_ann(ann, CANARY_WEIGHT, Some("25".into())));
        assert!(!set_ann(ann, CANARY_WEIGHT, Some("25".into())));
        assert_eq!(weight_of(&meta), Some(25));
        let ann = meta.annotations.as_mut().unwrap();
        ann.insert(CANARY_WEIGHT_TOTAL.into(), "1000".into());
        assert_eq!(weight_of(&meta), Some(3));
        // A total of 100 or less is ignored by the controller: 25 stays 25 %.
        let ann = meta.annotations.as_mut().unwrap();
        ann.insert(CANARY_WEIGHT_TOTAL.into(), "50".into());
        assert_eq!(weight_of(&meta), Some(25));
    }
}
