//! Where one request goes: each routing API's documented semantics over the [`World`].
//!
//! * Istio VirtualService: `http` routes in order, first match wins (all conditions of one
//!   `match` entry must hold, entries are ORed). A destination `host` resolves through its
//!   Service; a `subset` is the DestinationRule subset's labels applied to the pods behind
//!   that host. No VirtualService for the host: the Service's endpoints.
//! * SMI TrafficSplit: requests to the root Service are split over the backends by relative
//!   weight, each backend resolving through its own Service.
//! * ingress-nginx: the primary Ingress for host + path; a canary Ingress for the same host
//!   and path takes `canary-by-header` (with `-value`/`-pattern`), then `canary-by-cookie`,
//!   then `canary-weight` out of `canary-weight-total`.
//! * Gateway API HTTPRoute: among all matching rule matches the spec's precedence wins
//!   (exact path, longest prefix, method, most headers, most query params, oldest route,
//!   name, rule order); `backendRefs` weights are relative, 0 = never.
//!
//! A destination without a ready pod answers 503 (Envoy's "no healthy upstream").
//! Deviation, on purpose: ingresses and HTTPRoutes are looked up in the caller's namespace
//! only (one controller per namespace), because parallel tests reuse host names.

use std::collections::BTreeMap;

use super::world::{
    GwMatch, GwPath, IngressPath, IstioDestination, IstioMatch, PathType, StringMatch, World,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Via {
    /// A meshed client calling a host (Istio sidecar).
    Istio,
    /// A meshed client calling a root Service (Linkerd/SMI).
    Smi,
    /// A client calling the ingress-nginx controller with a Host header.
    Nginx,
    /// A client calling a Gateway API gateway with a Host header.
    Gateway,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Istio => "istio",
            Via::Smi => "smi",
            Via::Nginx => "nginx",
            Via::Gateway => "gateway",
        }
    }

    pub fn parse(s: &str) -> Option<Via> {
        match s {
            "istio" => Some(Via::Istio),
            "smi" => Some(Via::Smi),
            "nginx" => Some(Via::Nginx),
            "gateway" => Some(Via::Gateway),
            _ => None,
        }
    }
}

/// Set by a caller entering through an Istio Gateway (`name` or `ns/name`); absent for an
/// in-mesh caller (its sidecar).
pub const HDR_GATEWAY: &str = "x-mesh-gateway";

#[derive(Clone, Debug)]
pub struct Request {
    pub via: Via,
    /// The caller's namespace (short hosts resolve in it).
    pub namespace: String,
    pub host: String,
    pub path: String,
    pub method: String,
    /// Lower-case names.
    pub headers: BTreeMap<String, String>,
}

/// ingress-nginx's metric labels for one request (`rootfs/etc/nginx/lua/monitor.lua`): the
/// location's Ingress and Service, which are the primary's for both tracks, and `canary`,
/// the alternative upstream's name when the request went there, else "".
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NginxLabels {
    pub ingress: String,
    pub service: String,
    pub canary: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Forward to this pod, reached through `service` (namespace of the pod = `namespace`).
    Pod {
        namespace: String,
        pod: String,
        service: String,
        /// ingress-nginx only: the labels its metrics carry for this request.
        nginx: Option<NginxLabels>,
    },
    /// The data plane answers itself (404 no route, 500 invalid backend, 503 no upstream).
    Reply {
        status: u16,
        service: Option<String>,
        why: String,
    },
}

fn reply(status: u16, service: Option<&str>, why: impl Into<String>) -> Outcome {
    Outcome::Reply {
        status,
        service: service.map(str::to_string),
        why: why.into(),
    }
}

/// `name` relative to `ns` as a cluster-local FQDN, split into (service, namespace).
fn service_of(host: &str, ns: &str) -> (String, String) {
    let h = host.trim_end_matches('.');
    let h = h.strip_suffix(".svc.cluster.local").unwrap_or(h);
    let h = h.strip_suffix(".svc").unwrap_or(h);
    match h.split_once('.') {
        Some((svc, rest)) => (svc.to_string(), rest.to_string()),
        None => (h.to_string(), ns.to_string()),
    }
}

/// Weighted pick; `None` when every weight is 0. `u` is uniform in [0, 1).
fn pick_weighted<T: Clone>(items: &[(T, f64)], u: f64) -> Option<T> {
    let total: f64 = items.iter().map(|(_, w)| w.max(0.0)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut x = u * total;
    for (t, w) in items {
        let w = w.max(0.0);
        if w > 0.0 && x < w {
            return Some(t.clone());
        }
        x -= w;
    }
    items
        .iter()
        .rev()
        .find(|(_, w)| *w > 0.0)
        .map(|(t, _)| t.clone())
}

fn pick_pod(pods: &[String], u: f64) -> Option<String> {
    if pods.is_empty() {
        return None;
    }
    let i = ((u * pods.len() as f64) as usize).min(pods.len() - 1);
    Some(pods[i].clone())
}

/// Two independent uniforms from one source.
pub trait Uniform {
    fn next(&mut self) -> f64;
}

impl<F: FnMut() -> f64> Uniform for F {
    fn next(&mut self) -> f64 {
        self()
    }
}

/// The ready pods of Service `svc` in `ns` (optionally restricted to `labels`), one picked.
fn to_service(
    w: &World,
    ns: &str,
    svc: &str,
    labels: Option<&BTreeMap<String, String>>,
    rnd: &mut dyn Uniform,
    nginx: Option<NginxLabels>,
) -> Outcome {
    if !w.services.contains_key(&(ns.to_string(), svc.to_string())) {
        return reply(503, Some(svc), format!("no Service {ns}/{svc}"));
    }
    let pods: Vec<String> = w
        .ready_endpoints(ns, svc)
        .into_iter()
        .filter(|p| match labels {
            None => true,
            Some(want) => w
                .pods
                .get(&(ns.to_string(), p.clone()))
                .is_some_and(|pod| want.iter().all(|(k, v)| pod.labels.get(k) == Some(v))),
        })
        .collect();
    match pick_pod(&pods, rnd.next()) {
        Some(pod) => Outcome::Pod {
            namespace: ns.to_string(),
            pod,
            service: svc.to_string(),
            nginx,
        },
        None => reply(
            503,
            Some(svc),
            match labels {
                Some(l) => format!("no healthy upstream: no ready pod of {ns}/{svc} has {l:?}"),
                None => format!("no healthy upstream: {ns}/{svc} has no ready endpoint"),
            },
        ),
    }
}

pub fn resolve(w: &World, req: &Request, rnd: &mut dyn Uniform) -> Outcome {
    match req.via {
        Via::Istio => istio(w, req, rnd),
        Via::Smi => smi(w, req, rnd),
        Via::Nginx => nginx(w, req, rnd),
        Via::Gateway => gateway(w, req, rnd),
    }
}

// --- Istio ------------------------------------------------------------------------------

fn istio_match(m: &IstioMatch, req: &Request) -> bool {
    if !m.unsupported.is_empty() {
        return false;
    }
    if let Some(u) = &m.uri
        && !u.matches(&req.path)
    {
        return false;
    }
    if let Some(x) = &m.method
        && !x.matches(&req.method)
    {
        return false;
    }
    let hv = |n: &str| req.headers.get(n).map(String::as_str);
    m.headers
        .iter()
        .all(|(n, sm)| hv(n).is_some_and(|v| sm.matches(v)))
        && m.without_headers
            .iter()
            .all(|(n, sm)| !hv(n).is_some_and(|v| sm.matches(v)))
}

/// Does VirtualService `vs` (in `vs_ns`) apply where the request entered: at the Istio
/// Gateway named by [`HDR_GATEWAY`] (`name` in the caller's namespace, or `ns/name`), or, without
/// it, at the caller's sidecar (`mesh`)? istio/api `networking/v1/virtual_service.proto`,
/// `VirtualService.gateways`: the gateways and sidecars the routes apply to, `<ns>/<name>` or
/// a name in the VirtualService's namespace; the reserved `mesh` means every sidecar; an
/// empty list means `mesh` only. A list without `mesh` does not apply to sidecars, so
/// in-mesh callers of the Service bypass it. (Per-route `match.gateways` is not imitated.)
fn vs_applies(vs: &super::world::VirtualService, vs_ns: &str, req: &Request) -> bool {
    let full = |name: &str, ns: &str| match name.split_once('/') {
        Some(_) => name.to_string(),
        None => format!("{ns}/{name}"),
    };
    match req.headers.get(HDR_GATEWAY) {
        None => vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh"),
        Some(gw) => {
            let gw = full(gw, &req.namespace);
            vs.gateways
                .iter()
                .any(|g| g != "mesh" && full(g, vs_ns) == gw)
        }
    }
}

fn istio(w: &World, req: &Request, rnd: &mut dyn Uniform) -> Outcome {
    let target = service_of(&req.host, &req.namespace);
    // exportTo defaults to every namespace; among several VirtualServices for one host the
    // oldest wins (Istio merges them only for gateways).
    let mut vss: Vec<_> = w
        .virtual_services
        .iter()
        .filter(|((ns, _), vs)| {
            vs.hosts.iter().any(|h| service_of(h, ns) == target) && vs_applies(vs, ns, req)
        })
        .collect();
    vss.sort_by(|a, b| (&a.1.created, a.0).cmp(&(&b.1.created, b.0)));
    let Some(((vs_ns, vs_name), vs)) = vss.first() else {
        // Without a VirtualService, Istio serves GAMMA routes to in-mesh callers (istio/istio
        // `pilot/pkg/config/kube/gateway`; mixing both for one host is unsupported upstream).
        if !req.headers.contains_key(HDR_GATEWAY)
            && let Some(o) = gamma(w, req, rnd, false)
        {
            return o;
        }
        if let Some(gw) = req.headers.get(HDR_GATEWAY) {
            // A gateway routes only what a VirtualService bound to it routes.
            return reply(
                404,
                None,
                format!("no VirtualService for host {} at gateway {gw}", req.host),
            );
        }
        return to_service(w, &target.1, &target.0, None, rnd, None);
    };
    let first_match = |http: &'_ [super::world::IstioHttpRoute]| {
        http.iter()
            .position(|r| r.matches.is_empty() || r.matches.iter().any(|m| istio_match(m, req)))
    };
    let Some(i) = first_match(&vs.http) else {
        return reply(
            404,
            None,
            format!("no http route of VirtualService {vs_ns}/{vs_name} matches"),
        );
    };
    // Delegation (istio/api networking/v1alpha3/virtual_service.proto `Delegate`; istio/istio
    // pilot/pkg/model/virtualservice.go `mergeVirtualServicesIfNeeded`): a root route with a
    // `delegate` hands the requests it matches to the delegate VirtualService's routes, which
    // are matched in their order on top of the root's match (a conjunction); the delegate's
    // destinations resolve in its own namespace. The delegate itself has no hosts and is never
    // a root.
    let (route, vs_ns, vs_name) = match &vs.http[i].delegate {
        None => (&vs.http[i], vs_ns.as_str(), vs_name.as_str()),
        Some((dns, dname)) => {
            let Some(d) = w.virtual_services.get(&(dns.clone(), dname.clone())) else {
                return reply(
                    404,
                    None,
                    format!("delegate VirtualService {dns}/{dname} of {vs_ns}/{vs_name} not found"),
                );
            };
            let Some(j) = first_match(&d.http) else {
                return reply(
                    404,
                    None,
                    format!("no http route of delegate VirtualService {dns}/{dname} matches"),
                );
            };
            (&d.http[j], dns.as_str(), dname.as_str())
        }
    };
    let weighted: Vec<(IstioDestination, f64)> = if route.route.len() == 1 {
        vec![(
            route.route[0].clone(),
            route.route[0].weight.unwrap_or(100.0),
        )]
    } else {
        route
            .route
            .iter()
            .map(|d| (d.clone(), d.weight.unwrap_or(0.0)))
            .collect()
    };
    let Some(dest) = pick_weighted(&weighted, rnd.next()) else {
        return reply(
            503,
            None,
            format!("route {:?} of {vs_ns}/{vs_name} has no weight", route.name),
        );
    };
    let (svc, ns) = service_of(&dest.host, vs_ns);
    let labels = match &dest.subset {
        None => None,
        Some(subset) => {
            let mut drs: Vec<_> = w
                .destination_rules
                .iter()
                .filter(|((dns, _), dr)| service_of(&dr.host, dns) == (svc.clone(), ns.clone()))
                .collect();
            drs.sort_by(|a, b| a.0.cmp(b.0));
            match drs
                .iter()
                .find_map(|(_, dr)| dr.subsets.iter().find(|(n, _)| n == subset))
            {
                Some((_, l)) => Some(l.clone()),
                None => {
                    return reply(
                        503,
                        Some(&svc),
                        format!("no DestinationRule subset {subset:?} for {ns}/{svc}"),
                    );
                }
            }
        }
    };
    to_service(w, &ns, &svc, labels.as_ref(), rnd, None)
}

// --- SMI --------------------------------------------------------------------------------

fn smi(w: &World, req: &Request, rnd: &mut dyn Uniform) -> Outcome {
    // Linkerd serves GAMMA routes ahead of a TrafficSplit for the same Service.
    if let Some(o) = gamma(w, req, rnd, true) {
        return o;
    }
    let (root, ns) = service_of(&req.host, &req.namespace);
    let mut splits: Vec<_> = w
        .traffic_splits
        .iter()
        .filter(|((tns, _), ts)| *tns == ns && service_of(&ts.service, tns).0 == root)
        .collect();
    splits.sort_by(|a, b| a.0.cmp(b.0));
    let Some(((_, ts_name), ts)) = splits.first() else {
        return to_service(w, &ns, &root, None, rnd, None);
    };
    match pick_weighted(&ts.backends, rnd.next()) {
        Some(backend) => to_service(w, &ns, &backend, None, rnd, None),
        None => reply(
            503,
            Some(&root),
            format!("TrafficSplit {ns}/{ts_name} has no weight"),
        ),
    }
}

// --- ingress-nginx ----------------------------------------------------------------------
//
// Follows kubernetes/ingress-nginx (controller v1.15.1):
// * `internal/ingress/controller/util.go` `upstreamName`: an upstream is
//   `<namespace>-<service>-<port number>` (or `-<port name>`).
// * `internal/ingress/controller/controller.go` (`mergeAlternativeBackends`): a canary
//   Ingress owns no location ("marked as Canary, ignoring"); each of its host + path pairs
//   finds the primary location with the same path in that host's server and appends the
//   canary's upstream to that location's *upstream* as an alternative backend. Every location
//   (any Ingress, any host) whose backend is that upstream therefore shares the canary.
// * `rootfs/etc/nginx/lua/balancer.lua` (`route_to_alternative_balancer`, `get_balancer`):
//   only `alternative_backends[1]` is used; an alternative without endpoints has no
//   balancer and the request stays on the primary (no 503); the order is `canary-by-header`
//   (exact `-value`, else `-pattern` with `ngx.re.match`, i.e. unanchored, else
//   always/never), then `canary-by-cookie` (always/never), then `canary-weight` out of
//   `canary-weight-total`, which counts only when above 100.
// * `rootfs/etc/nginx/lua/monitor.lua`: the metric labels are the *location's* namespace,
//   Ingress and Service (the primary's, for both tracks) and `canary` =
//   `proxy_alternative_upstream_name`, set by `get_balancer` to the alternative's upstream
//   name only when the request went there ("" otherwise).

const NGINX: &str = "nginx.ingress.kubernetes.io/";

fn path_matches(p: &IngressPath, path: &str) -> bool {
    match p.path_type {
        PathType::Exact => path == p.path,
        PathType::Prefix => gw_prefix(&p.path, path),
        // ingress-nginx treats ImplementationSpecific as a plain prefix.
        PathType::ImplementationSpecific => path.starts_with(p.path.as_str()),
    }
}

/// `internal/ingress/controller/util.go` `upstreamName`.
pub fn nginx_upstream(ns: &str, p: &IngressPath) -> String {
    format!("{ns}-{}-{}", p.service, p.port)
}

fn nginx_ingress_ours(class: &Option<String>) -> bool {
    class.as_deref().is_none_or(|c| c == "nginx")
}

fn nginx_is_canary(a: &BTreeMap<String, String>) -> bool {
    a.get(&format!("{NGINX}canary"))
        .is_some_and(|v| v.trim() == "true")
}

/// The primary location serving `host` + `path` in `ns`: (Ingress name, the server's host,
/// the path entry). Longest path wins, then the oldest Ingress.
fn nginx_location(
    w: &World,
    ns: &str,
    host: &str,
    path: &str,
) -> Option<(String, String, IngressPath)> {
    let mut best: Option<(usize, String, String, String, IngressPath)> = None;
    for ((ins, name), ing) in &w.ingresses {
        if ins != ns || !nginx_ingress_ours(&ing.class) || nginx_is_canary(&ing.annotations) {
            continue;
        }
        for (h, paths) in &ing.rules {
            if !h.is_empty() && h != host {
                continue;
            }
            for p in paths.iter().filter(|p| path_matches(p, path)) {
                let better = match &best {
                    None => true,
                    Some((len, created, bname, ..)) => {
                        p.path.len() > *len
                            || (p.path.len() == *len && (&ing.created, name) < (created, bname))
                    }
                };
                if better {
                    best = Some((
                        p.path.len(),
                        ing.created.clone(),
                        name.clone(),
                        h.clone(),
                        p.clone(),
                    ));
                }
            }
        }
    }
    best.map(|(_, _, name, host, p)| (name, host, p))
}

/// The primary location with exactly `path` in the server of `host` (the canary merge's
/// lookup: same host, same path text).
fn nginx_location_exact(w: &World, ns: &str, host: &str, path: &str) -> Option<IngressPath> {
    let mut found: Vec<_> = w
        .ingresses
        .iter()
        .filter(|((ins, _), ing)| {
            ins == ns && nginx_ingress_ours(&ing.class) && !nginx_is_canary(&ing.annotations)
        })
        .flat_map(|(key, ing)| {
            ing.rules
                .iter()
                .filter(|(h, _)| h == host)
                .flat_map(|(_, ps)| ps.iter())
                .filter(|p| p.path == path)
                .map(move |p| ((&ing.created, key), p.clone()))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().next().map(|(_, p)| p)
}

fn nginx(w: &World, req: &Request, rnd: &mut dyn Uniform) -> Outcome {
    let ns = &req.namespace;
    let Some((primary, _host, ppath)) = nginx_location(w, ns, &req.host, &req.path) else {
        return reply(
            404,
            None,
            format!("no Ingress in {ns} for host {}", req.host),
        );
    };
    let primary_upstream = nginx_upstream(ns, &ppath);
    // The alternative backends merged into the primary upstream, in merge order (Ingresses
    // by age, then name); only the first one is used.
    let mut canaries: Vec<_> = w
        .ingresses
        .iter()
        .filter(|((ins, _), ing)| {
            ins == ns && nginx_ingress_ours(&ing.class) && nginx_is_canary(&ing.annotations)
        })
        .filter_map(|((_, name), ing)| {
            let alt = ing.rules.iter().find_map(|(h, ps)| {
                ps.iter().find(|p| {
                    nginx_location_exact(w, ns, h, &p.path)
                        .is_some_and(|loc| nginx_upstream(ns, &loc) == primary_upstream)
                })
            })?;
            Some((ing.created.clone(), name.clone(), ing, alt.clone()))
        })
        .collect();
    canaries.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    let labels = |canary: Option<String>| NginxLabels {
        ingress: primary.clone(),
        service: ppath.service.clone(),
        canary: canary.unwrap_or_default(),
    };
    let to_canary = canaries.first().and_then(|(_, _, ing, alt)| {
        // No endpoints: no balancer for the alternative, the request stays on the primary.
        if w.ready_endpoints(ns, &alt.service).is_empty() {
            return None;
        }
        let a = |k: &str| {
            ing.annotations
                .get(&format!("{NGINX}{k}"))
                .map(|v| v.trim())
        };
        let mut decide = || -> bool {
            if let Some(h) = a("canary-by-header") {
                let got = req.headers.get(&h.to_ascii_lowercase()).map(String::as_str);
                if let Some(got) = got {
                    if let Some(want) = a("canary-by-header-value").filter(|v| !v.is_empty()) {
                        if got == want {
                            return true;
                        }
                    } else if let Some(pat) =
                        a("canary-by-header-pattern").filter(|v| !v.is_empty())
                    {
                        // ngx.re.match: unanchored (a match anywhere in the value).
                        if regex::Regex::new(pat).is_ok_and(|r| r.is_match(got)) {
                            return true;
                        }
                    } else if got == "always" {
                        return true;
                    } else if got == "never" {
                        return false;
                    }
                }
            }
            if let Some(c) = a("canary-by-cookie") {
                let cookie = req.headers.get("cookie").and_then(|cs| {
                    cs.split(';').find_map(|kv| {
                        let (k, v) = kv.trim().split_once('=')?;
                        (k == c).then(|| v.to_string())
                    })
                });
                match cookie.as_deref() {
                    Some("always") => return true,
                    Some("never") => return false,
                    _ => {}
                }
            }
            // `math.random(weightTotal) <= weight`: weightTotal only when above 100.
            let total = a("canary-weight-total")
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|t| *t > 100.0)
                .unwrap_or(100.0);
            let weight = a("canary-weight")
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
                .clamp(0.0, total);
            rnd.next() * total < weight
        };
        decide().then(|| alt.clone())
    });
    match to_canary {
        Some(alt) => to_service(
            w,
            ns,
            &alt.service,
            None,
            rnd,
            Some(labels(Some(nginx_upstream(ns, &alt)))),
        ),
        None => to_service(w, ns, &ppath.service, None, rnd, Some(labels(None))),
    }
}

// --- Gateway API ------------------------------------------------------------------------

/// PathPrefix matches whole path elements: `/foo` matches `/foo` and `/foo/x`, not `/foox`.
fn gw_prefix(prefix: &str, path: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty()
        || path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn gw_match(m: &GwMatch, req: &Request) -> bool {
    let path_ok = match &m.path {
        GwPath::Exact(p) => req.path == *p,
        GwPath::Prefix(p) => gw_prefix(p, &req.path),
        GwPath::Regex(r) => StringMatch::Regex(r.clone()).matches(&req.path),
    };
    path_ok
        && m.method.as_ref().is_none_or(|x| *x == req.method)
        && m.headers.iter().all(|(n, sm)| {
            req.headers
                .get(n)
                .is_some_and(|v| sm.matches(v.as_str()))
        })
        // The driver sends no query string.
        && m.query.is_empty()
}

fn hostname_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => host.ends_with(&format!(".{suffix}")),
        None => pattern == host,
    }
}

/// The rule that wins among `routes` for `req` (the HTTPRoute spec's precedence: exact path,
/// then the longest prefix, a method, the most header matches, the most query matches,
/// the oldest route, the route name, then rule order).
fn best_rule<'a>(
    routes: impl Iterator<Item = (&'a str, &'a super::world::HttpRoute)>,
    req: &Request,
) -> Option<&'a super::world::GwRule> {
    // Precedence key, smaller wins.
    type Prec<'a> = (
        u8,
        std::cmp::Reverse<usize>,
        u8,
        std::cmp::Reverse<usize>,
        std::cmp::Reverse<usize>,
        &'a str,
        &'a str,
        usize,
    );
    let mut best: Option<(Prec, &super::world::GwRule)> = None;
    for (name, hr) in routes {
        for (i, rule) in hr.rules.iter().enumerate() {
            for m in rule.matches.iter().filter(|m| gw_match(m, req)) {
                let (kind, len) = match &m.path {
                    GwPath::Exact(p) => (0, p.len()),
                    GwPath::Prefix(p) => (1, p.len()),
                    GwPath::Regex(p) => (2, p.len()),
                };
                let key: Prec = (
                    kind,
                    std::cmp::Reverse(len),
                    u8::from(m.method.is_none()),
                    std::cmp::Reverse(m.headers.len()),
                    std::cmp::Reverse(m.query.len()),
                    hr.created.as_str(),
                    name,
                    i,
                );
                if best.as_ref().is_none_or(|(k, _)| key < *k) {
                    best = Some((key, rule));
                }
            }
        }
    }
    best.map(|(_, rule)| rule)
}

/// Sends `req` to one of `rule`'s backendRefs (Services in `ns`) by weight.
fn to_backend(w: &World, ns: &str, rule: &super::world::GwRule, rnd: &mut dyn Uniform) -> Outcome {
    if rule.backends.is_empty() {
        return reply(500, None, "matched rule has no backendRefs");
    }
    match pick_weighted(&rule.backends, rnd.next()) {
        Some(Some(svc)) => to_service(w, ns, &svc, None, rnd, None),
        Some(None) => reply(500, None, "backendRef is not a Service"),
        None => reply(500, None, "every backendRef has weight 0"),
    }
}

fn gateway(w: &World, req: &Request, rnd: &mut dyn Uniform) -> Outcome {
    let ns = &req.namespace;
    // A route whose only parents are Services is a mesh (GAMMA) route: no gateway serves it.
    let routes = w.http_routes.iter().filter(|((rns, _), hr)| {
        rns == ns
            && hr.attaches_to_gateway
            && (hr.hostnames.is_empty()
                || hr.hostnames.iter().any(|h| hostname_matches(h, &req.host)))
    });
    match best_rule(routes.map(|((_, name), hr)| (name.as_str(), hr)), req) {
        Some(rule) => to_backend(w, ns, rule, rnd),
        None => reply(404, None, format!("no HTTPRoute rule in {ns} matches")),
    }
}

// --- Gateway API for meshes (GAMMA) -----------------------------------------------------
//
// Follows kubernetes-sigs/gateway-api `geps/gep-1426/index.md` (and `site-src/mesh/`):
// an HTTPRoute whose parentRef is a Service (`kind: Service`, group "" or "core") applies
// to in-mesh requests addressed to that Service, matched by the parentRef, not by
// hostnames; a route in the caller's namespace (consumer route) takes precedence over
// routes in the Service's namespace (producer routes); a backendRef to the parent Service
// means that Service's endpoints. Linkerd (linkerd/linkerd2 `policy-controller`) and
// Istio serve these for meshed callers. Nothing matching a rule is a 404, as Linkerd's proxy
// answers (linkerd/linkerd2-proxy `linkerd/app/integration/src/tests/client_policy.rs`
// `returns_404_if_no_http_route_matches`); Istio's answer there was not read.

/// The GAMMA routes' outcome for an in-mesh request, or None when no route is attached to
/// the Service the request names (the mesh's other routing then applies). Linkerd also
/// serves its own `policy.linkerd.io` HTTPRoutes (the same shape; linkerd/linkerd2
/// `policy-controller/k8s/index/src/outbound/index/http.rs` `convert_route` turns both kinds
/// into the same outbound routes), ranked with the Gateway API's by the same precedence.
fn gamma(w: &World, req: &Request, rnd: &mut dyn Uniform, linkerd: bool) -> Option<Outcome> {
    let (root, ns) = service_of(&req.host, &req.namespace);
    let attached = |route_ns: &str| -> Vec<(&str, &super::world::HttpRoute)> {
        let linkerd_routes = w.linkerd_http_routes.iter().filter(|_| linkerd);
        w.http_routes
            .iter()
            .chain(linkerd_routes)
            .filter(|((rns, _), hr)| {
                rns == route_ns && hr.parent_services.iter().any(|p| p.0 == ns && p.1 == root)
            })
            .map(|((_, name), hr)| (name.as_str(), hr))
            .collect()
    };
    let consumer = attached(&req.namespace);
    let routes = if req.namespace != ns && !consumer.is_empty() {
        consumer
    } else {
        attached(&ns)
    };
    if routes.is_empty() {
        return None;
    }
    Some(match best_rule(routes.into_iter(), req) {
        Some(rule) => to_backend(w, &ns, rule, rnd),
        None => reply(
            404,
            Some(&root),
            format!("no rule of the HTTPRoutes attached to Service {ns}/{root} matches"),
        ),
    })
}

#[cfg(test)]
mod tests;
