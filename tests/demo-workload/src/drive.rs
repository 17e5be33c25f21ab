//! `canary-demo drive`: a bounded, steady request rate into the test data plane
//! (`canary-demo mesh`), as a client of one entry (Istio host, SMI root Service, ingress-nginx
//! or Gateway API host). Where each request lands is the mesh's business: the driver never
//! looks at route objects. Optionally a share of the requests carries a header, to exercise
//! header routes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;

use crate::mesh::route::Via;
use crate::mesh::{HDR_NAMESPACE, HDR_POD, HDR_VIA};
use crate::rng;

#[derive(Args, Debug, Clone)]
pub struct DriveArgs {
    /// The mesh's proxy address (loopback host:port).
    #[arg(long, env = "CANARY_TEST_MESH_PROXY")]
    pub mesh: String,
    /// Which entry the client uses.
    #[arg(long, value_enum)]
    pub via: Via,
    /// The client's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Host called: a Service name (istio, smi) or an Ingress/HTTPRoute host name.
    #[arg(long)]
    pub host: String,
    /// NAME:VALUE sent with `--header-share` of the requests.
    #[arg(long)]
    pub header: Option<String>,
    /// Share of requests (0..=1) that carry `--header`.
    #[arg(long, default_value_t = 0.0)]
    pub header_share: f64,
    /// Request path.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Enter through this Istio Gateway (`name` or `ns/name`) instead of the caller's sidecar.
    #[arg(long)]
    pub gateway: Option<String>,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    pub rps: f64,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    pub duration: f64,
}

pub async fn run(a: DriveArgs) -> anyhow::Result<()> {
    if !(a.rps > 0.0 && a.rps <= 5000.0) {
        bail!("--rps must be within (0, 5000]");
    }
    if !(a.duration > 0.0 && a.duration <= 3600.0) {
        bail!("--duration must be within (0, 3600] seconds");
    }
    if !a.path.starts_with('/') {
        bail!("--path must start with /");
    }
    if !(0.0..=1.0).contains(&a.header_share) {
        bail!("--header-share must be within 0..=1");
    }
    let mesh: SocketAddr = a
        .mesh
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .parse()
        .with_context(|| format!("--mesh {:?}: expected ip:port", a.mesh))?;
    if !mesh.ip().is_loopback() {
        bail!("--mesh {mesh}: only loopback addresses are allowed");
    }
    let header = match &a.header {
        Some(h) => {
            let (n, v) = h
                .split_once(':')
                .with_context(|| format!("--header {h:?}: expected NAME:VALUE"))?;
            Some((n.trim().to_string(), v.trim().to_string()))
        }
        None => None,
    };
    eprintln!(
        "canary-demo drive: {} rps for {}s to {} via {} (namespace {})",
        a.rps,
        a.duration,
        a.host,
        a.via.as_str(),
        a.namespace
    );
    let http: HttpClient<_, Empty<Bytes>> = HttpClient::builder(TokioExecutor::new()).build_http();
    let inflight = Arc::new(tokio::sync::Semaphore::new(256));
    let outcomes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
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
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            dropped += 1;
            continue;
        };
        let mut b = hyper::Request::builder()
            .uri(format!("http://{mesh}{}", a.path))
            .header("host", &a.host)
            .header(HDR_VIA, a.via.as_str())
            .header(HDR_NAMESPACE, &a.namespace);
        if let Some(g) = &a.gateway {
            b = b.header(crate::mesh::route::HDR_GATEWAY, g.as_str());
        }
        if let Some((n, v)) = &header
            && rng::chance(a.header_share)
        {
            b = b.header(n.as_str(), v.as_str());
        }
        let req = b.body(Empty::<Bytes>::new())?;
        let (http, outcomes, errors) = (http.clone(), outcomes.clone(), errors.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(Duration::from_secs(30), http.request(req)).await {
                Ok(Ok(resp)) => {
                    let key = format!(
                        "{} {}",
                        resp.status().as_u16(),
                        resp.headers()
                            .get(HDR_POD)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                    );
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
                    *outcomes.lock().unwrap().entry(key).or_default() += 1;
                }
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(3), inflight.acquire_many(256)).await;
    eprintln!(
        "canary-demo drive: done; answers (status pod) {:?}, transport errors {}, skipped (too many in flight) {}",
        outcomes.lock().unwrap(),
        errors.load(Ordering::Relaxed),
        dropped
    );
    Ok(())
}
