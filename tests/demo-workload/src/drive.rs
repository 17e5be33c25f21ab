//! `canary-demo drive`: send a bounded, steady request rate to loopback
//! backends, split by the weights of a route object watched through the API
//! server, so that patching the route's weights moves real traffic.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use kube::api::{Api, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::discovery::{ApiResource, Discovery};
use kube::runtime::watcher;
use serde_json::Value;

use crate::rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RouteKind {
    Virtualservice,
    Trafficsplit,
    Ingress,
    Httproute,
}

impl RouteKind {
    fn group_kind(self) -> (&'static str, &'static str) {
        match self {
            RouteKind::Virtualservice => ("networking.istio.io", "VirtualService"),
            RouteKind::Trafficsplit => ("split.smi-spec.io", "TrafficSplit"),
            RouteKind::Ingress => ("networking.k8s.io", "Ingress"),
            RouteKind::Httproute => ("gateway.networking.k8s.io", "HTTPRoute"),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct DriveArgs {
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: PathBuf,
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    #[arg(long, value_enum)]
    pub kind: RouteKind,
    /// Route object name (for `ingress`: the primary, non-canary Ingress).
    #[arg(long)]
    pub name: String,
    /// KEY=ADDR, repeatable. KEY is the subset/host, backend service or
    /// backendRef name; ADDR a loopback host:port. The first is the primary.
    #[arg(long = "backend", required = true)]
    pub backends: Vec<String>,
    /// Requests per second (total over all backends).
    #[arg(long, default_value_t = 50.0)]
    pub rps: f64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
}

/// Weights by backend key, in route order. `None` = the route has no weights (yet).
pub type Weights = Vec<(String, f64)>;

fn s(v: &Value) -> Option<&str> {
    v.as_str()
}

fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// VirtualService: first http route with weights; key = subset if set, else host.
pub fn vs_weights(spec: &Value) -> Option<Weights> {
    let http = spec.get("http")?.as_array()?;
    let key = |d: &Value| -> Option<String> {
        let dest = d.get("destination")?;
        dest.get("subset")
            .and_then(s)
            .filter(|x| !x.is_empty())
            .or_else(|| dest.get("host").and_then(s))
            .map(str::to_string)
    };
    let weighted = http.iter().find(|h| {
        h.get("route")
            .and_then(Value::as_array)
            .is_some_and(|r| r.iter().any(|d| d.get("weight").is_some()))
    });
    match weighted {
        Some(h) => Some(
            h["route"]
                .as_array()?
                .iter()
                .filter_map(|d| Some((key(d)?, d.get("weight").and_then(num).unwrap_or(0.0))))
                .collect(),
        ),
        None => {
            let first = http.first()?.get("route")?.as_array()?.first()?;
            Some(vec![(key(first)?, 100.0)])
        }
    }
}

/// SMI TrafficSplit: backends[].service / weight.
pub fn ts_weights(spec: &Value) -> Option<Weights> {
    let b = spec.get("backends")?.as_array()?;
    if b.is_empty() {
        return None;
    }
    Some(
        b.iter()
            .filter_map(|x| {
                Some((
                    x.get("service").and_then(s)?.to_string(),
                    x.get("weight").and_then(num).unwrap_or(0.0),
                ))
            })
            .collect(),
    )
}

/// Gateway API HTTPRoute: rules[0].backendRefs[] (weights relative, default 1).
pub fn httproute_weights(spec: &Value) -> Option<Weights> {
    let refs = spec
        .get("rules")?
        .as_array()?
        .first()?
        .get("backendRefs")?
        .as_array()?;
    if refs.is_empty() {
        return None;
    }
    Some(
        refs.iter()
            .filter_map(|r| {
                Some((
                    r.get("name").and_then(s)?.to_string(),
                    r.get("weight").and_then(num).unwrap_or(1.0),
                ))
            })
            .collect(),
    )
}

const CANARY_ANN: &str = "nginx.ingress.kubernetes.io/canary";

fn ingress_hosts(spec: &Value) -> Vec<String> {
    spec.get("rules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .map(|r| r.get("host").and_then(s).unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn ingress_backend(spec: &Value) -> Option<String> {
    let from_rules = spec
        .get("rules")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .and_then(|r| r.pointer("/http/paths/0/backend/service/name"))
        .and_then(s);
    from_rules
        .or_else(|| spec.pointer("/defaultBackend/service/name").and_then(s))
        .map(str::to_string)
}

fn annotation<'a>(obj: &'a Value, key: &str) -> Option<&'a str> {
    obj.pointer("/metadata/annotations")?.get(key)?.as_str()
}

/// ingress-nginx canary: the primary Ingress `name` plus a canary Ingress
/// (annotation canary="true") sharing a host. `objs` are whole Ingress objects.
pub fn ingress_weights(name: &str, objs: &[Value]) -> Option<Weights> {
    let is_canary = |o: &Value| annotation(o, CANARY_ANN).is_some_and(|v| v.trim() == "true");
    let primary = objs
        .iter()
        .find(|o| o.pointer("/metadata/name").and_then(s) == Some(name) && !is_canary(o))?;
    let pspec = primary.get("spec")?;
    let pkey = ingress_backend(pspec)?;
    let phosts = ingress_hosts(pspec);
    let canary = objs.iter().find(|o| {
        is_canary(o)
            && o.get("spec").is_some_and(|cs| {
                let ch = ingress_hosts(cs);
                ch.iter().any(|h| phosts.contains(h))
            })
    });
    let Some(c) = canary else {
        return Some(vec![(pkey, 100.0)]);
    };
    let ckey = c.get("spec").and_then(ingress_backend)?;
    let total = annotation(c, "nginx.ingress.kubernetes.io/canary-weight-total")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0);
    let w = annotation(c, "nginx.ingress.kubernetes.io/canary-weight")
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
        .clamp(0.0, total);
    Some(vec![(pkey, total - w), (ckey, w)])
}

fn compute(
    kind: RouteKind,
    name: &str,
    store: &BTreeMap<String, DynamicObject>,
) -> Option<Weights> {
    match kind {
        RouteKind::Ingress => {
            let objs: Vec<Value> = store
                .values()
                .filter_map(|o| serde_json::to_value(o).ok())
                .collect();
            ingress_weights(name, &objs)
        }
        _ => {
            let o = store.get(name)?;
            let spec = o.data.get("spec")?;
            match kind {
                RouteKind::Virtualservice => vs_weights(spec),
                RouteKind::Trafficsplit => ts_weights(spec),
                RouteKind::Httproute => httproute_weights(spec),
                RouteKind::Ingress => unreachable!(),
            }
        }
    }
}

/// Turn route weights into cumulative probabilities over known backends.
/// No weights ⇒ everything to the primary (first) backend.
fn table(w: &Option<Weights>, backends: &[(String, SocketAddr)]) -> Vec<(usize, f64)> {
    let Some(w) = w else {
        return vec![(0, 1.0)];
    };
    let mut merged: Vec<(usize, f64)> = Vec::new();
    for (k, wt) in w {
        if let Some(i) = backends.iter().position(|(bk, _)| bk == k)
            && *wt > 0.0
        {
            merged.push((i, *wt));
        }
    }
    let total: f64 = merged.iter().map(|x| x.1).sum();
    if total <= 0.0 {
        return Vec::new();
    }
    merged.iter().map(|(i, x)| (*i, x / total)).collect()
}

fn pick(tab: &[(usize, f64)]) -> Option<usize> {
    let mut u = rng::uniform();
    for (i, p) in tab {
        if u < *p {
            return Some(*i);
        }
        u -= p;
    }
    tab.last().map(|x| x.0)
}

fn parse_backend(spec: &str) -> anyhow::Result<(String, SocketAddr)> {
    let (k, a) = spec
        .split_once('=')
        .with_context(|| format!("--backend {spec:?}: expected KEY=ADDR"))?;
    let a = a.trim_start_matches("http://").trim_end_matches('/');
    let addr: SocketAddr = a
        .parse()
        .with_context(|| format!("--backend {spec:?}: ADDR must be ip:port"))?;
    if !addr.ip().is_loopback() {
        bail!("--backend {spec:?}: only loopback addresses are allowed");
    }
    Ok((k.to_string(), addr))
}

async fn resolve(client: kube::Client, kind: RouteKind) -> anyhow::Result<ApiResource> {
    let (group, k) = kind.group_kind();
    let d = Discovery::new(client).filter(&[group]).run().await?;
    let (ar, _) = d
        .get(group)
        .and_then(|g| g.recommended_kind(k))
        .with_context(|| format!("{k}.{group} is not served by the API server (CRD installed?)"))?;
    Ok(ar)
}

pub async fn run(a: DriveArgs) -> anyhow::Result<()> {
    if !(a.rps > 0.0 && a.rps <= 5000.0) {
        bail!("--rps must be within (0, 5000]");
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        bail!("--duration must be within (0, 3600] seconds");
    }
    let backends: Vec<(String, SocketAddr)> = a
        .backends
        .iter()
        .map(|b| parse_backend(b))
        .collect::<anyhow::Result<_>>()?;

    let kc = Kubeconfig::read_from(&a.kubeconfig)
        .with_context(|| format!("reading kubeconfig {}", a.kubeconfig.display()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(cfg)?;
    let ar = resolve(client.clone(), a.kind).await?;
    eprintln!(
        "canary-demo drive: watching {}/{} {} in {} ({} rps for {}s)",
        ar.group, ar.version, a.name, a.namespace, a.rps, a.duration
    );
    let api: Api<DynamicObject> = Api::namespaced_with(client, &a.namespace, &ar);
    let wcfg = match a.kind {
        RouteKind::Ingress => watcher::Config::default(),
        _ => watcher::Config::default().fields(&format!("metadata.name={}", a.name)),
    };

    let tab: Arc<Mutex<Vec<(usize, f64)>>> = Arc::new(Mutex::new(table(&None, &backends)));
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);

    // Watch task: keep the split table current.
    let watch = {
        let tab = tab.clone();
        let backends = backends.clone();
        let (kind, name) = (a.kind, a.name.clone());
        tokio::spawn(async move {
            let mut store: BTreeMap<String, DynamicObject> = BTreeMap::new();
            let mut init: BTreeMap<String, DynamicObject> = BTreeMap::new();
            let mut last: Option<Option<Weights>> = None;
            let mut in_init = false;
            let mut stream = watcher(api, wcfg).boxed();
            while let Some(ev) = stream.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    Err(e) => {
                        eprintln!("canary-demo drive: watch error: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                let key = |o: &DynamicObject| o.metadata.name.clone().unwrap_or_default();
                match ev {
                    watcher::Event::Init => {
                        in_init = true;
                        init.clear();
                    }
                    watcher::Event::InitApply(o) => {
                        init.insert(key(&o), o);
                    }
                    watcher::Event::InitDone => {
                        in_init = false;
                        store = std::mem::take(&mut init);
                    }
                    watcher::Event::Apply(o) => {
                        store.insert(key(&o), o);
                    }
                    watcher::Event::Delete(o) => {
                        store.remove(&key(&o));
                    }
                }
                if in_init {
                    continue;
                }
                let w = compute(kind, &name, &store);
                if last.as_ref() != Some(&w) {
                    let t = table(&w, &backends);
                    let shown: Vec<String> = t
                        .iter()
                        .map(|(i, p)| format!("{}={:.1}%", backends[*i].0, p * 100.0))
                        .collect();
                    match &w {
                        Some(w) => eprintln!(
                            "canary-demo drive: weights {:?} -> split [{}]",
                            w,
                            shown.join(", ")
                        ),
                        None => eprintln!(
                            "canary-demo drive: route has no weights -> all traffic to {}",
                            backends[0].0
                        ),
                    }
                    *tab.lock().unwrap() = t;
                    last = Some(w);
                }
            }
        })
    };

    // Traffic loop.
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let inflight = Arc::new(tokio::sync::Semaphore::new(256));
    let sent: Arc<Vec<AtomicU64>> = Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
    let errors = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rps));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dropped = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {},
            _ = tokio::signal::ctrl_c() => break,
        }
        if Instant::now() >= deadline {
            break;
        }
        let choice = {
            let t = tab.lock().unwrap();
            pick(&t)
        };
        let Some(i) = choice else { continue };
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let uri: hyper::Uri = format!("http://{}/", backends[i].1).parse()?;
        let (http, sent, errors) = (http.clone(), sent.clone(), errors.clone());
        tokio::spawn(async move {
            let _permit = permit;
            sent[i].fetch_add(1, Ordering::Relaxed);
            let r = tokio::time::timeout(Duration::from_secs(10), http.get(uri)).await;
            match r {
                Ok(Ok(resp)) => {
                    // Drain the body so the connection can be reused.
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    watch.abort();
    // Let in-flight requests finish (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(3), inflight.acquire_many(256)).await;
    let summary: HashMap<&str, u64> = backends
        .iter()
        .zip(sent.iter())
        .map(|((k, _), n)| (k.as_str(), n.load(Ordering::Relaxed)))
        .collect();
    eprintln!(
        "canary-demo drive: done; sent {:?}, transport errors {}, skipped (too many in flight) {}",
        summary,
        errors.load(Ordering::Relaxed),
        dropped
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn virtualservice_subsets_and_hosts() {
        let spec = json!({"hosts":["web"],"http":[{"route":[
            {"destination":{"host":"web","subset":"stable"},"weight":90},
            {"destination":{"host":"web","subset":"canary"},"weight":10}]}]});
        assert_eq!(
            vs_weights(&spec).unwrap(),
            vec![("stable".to_string(), 90.0), ("canary".to_string(), 10.0)]
        );
        let hosts = json!({"http":[{"route":[
            {"destination":{"host":"web-stable"},"weight":70},
            {"destination":{"host":"web-canary"},"weight":30}]}]});
        assert_eq!(
            vs_weights(&hosts).unwrap()[1],
            ("web-canary".to_string(), 30.0)
        );
        let noweights = json!({"http":[{"route":[{"destination":{"host":"web"}}]}]});
        assert_eq!(
            vs_weights(&noweights).unwrap(),
            vec![("web".to_string(), 100.0)]
        );
        assert!(vs_weights(&json!({})).is_none());
    }

    #[test]
    fn trafficsplit_and_httproute() {
        let ts = json!({"service":"web","backends":[{"service":"web-stable","weight":80},{"service":"web-canary","weight":20}]});
        assert_eq!(
            ts_weights(&ts).unwrap()[0],
            ("web-stable".to_string(), 80.0)
        );
        let hr = json!({"rules":[{"backendRefs":[{"name":"a"},{"name":"b","weight":3},{"name":"c","weight":0}]}]});
        assert_eq!(
            httproute_weights(&hr).unwrap(),
            vec![
                ("a".to_string(), 1.0),
                ("b".to_string(), 3.0),
                ("c".to_string(), 0.0)
            ]
        );
    }

    #[test]
    fn ingress_canary() {
        let primary = json!({"metadata":{"name":"web"},"spec":{"rules":[{"host":"web.example","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"web-stable","port":{"number":80}}}}]}}]}});
        let canary = json!({"metadata":{"name":"web-canary","annotations":{
            "nginx.ingress.kubernetes.io/canary":"true","nginx.ingress.kubernetes.io/canary-weight":"25"}},
            "spec":{"rules":[{"host":"web.example","http":{"paths":[{"path":"/","pathType":"Prefix","backend":{"service":{"name":"web-canary","port":{"number":80}}}}]}}]}});
        let other = json!({"metadata":{"name":"x","annotations":{"nginx.ingress.kubernetes.io/canary":"true","nginx.ingress.kubernetes.io/canary-weight":"99"}},
            "spec":{"rules":[{"host":"other.example","http":{"paths":[{"backend":{"service":{"name":"x"}}}]}}]}});
        assert_eq!(
            ingress_weights("web", &[other.clone(), primary.clone(), canary.clone()]).unwrap(),
            vec![
                ("web-stable".to_string(), 75.0),
                ("web-canary".to_string(), 25.0)
            ]
        );
        assert_eq!(
            ingress_weights("web", std::slice::from_ref(&primary)).unwrap(),
            vec![("web-stable".to_string(), 100.0)]
        );
        assert!(ingress_weights("web", &[canary]).is_none());
    }

    #[test]
    fn split_table() {
        let b = vec![
            ("stable".to_string(), "127.0.0.1:1".parse().unwrap()),
            ("canary".to_string(), "127.0.0.1:2".parse().unwrap()),
        ];
        assert_eq!(table(&None, &b), vec![(0, 1.0)]);
        let t = table(
            &Some(vec![
                ("stable".into(), 3.0),
                ("canary".into(), 1.0),
                ("zzz".into(), 5.0),
            ]),
            &b,
        );
        assert_eq!(t, vec![(0, 0.75), (1, 0.25)]);
        assert!(table(&Some(vec![("stable".into(), 0.0)]), &b).is_empty());
        let n = 10_000;
        let c = (0..n).filter(|_| pick(&t) == Some(1)).count() as f64 / n as f64;
        assert!((c - 0.25).abs() < 0.03, "{c}");
        assert!(parse_backend("a=10.0.0.1:80").is_err());
        assert!(parse_backend("a=http://127.0.0.1:80/").is_ok());
    }
}
