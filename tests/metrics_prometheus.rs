//! PrometheusClient against the real test environment: stable and canary pods in the test
//! data plane export the Istio, Linkerd, ingress-nginx and generic metric families; two
//! clients (one inside the mesh through a VirtualService, one through ingress-nginx with a
//! canary Ingress) both send 20 % to the canary; Prometheus scrapes every second.
//!
//! Needs the environment (`bash tests/run.sh`, or `tests/env/up` + `. env.sh`).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use kubectl_canary::metrics::prometheus::{
    Auth, PrometheusClient, PrometheusConfig, recorded_errors,
};
use kubectl_canary::metrics::{MetricsData, MetricsRequest, MetricsSource};
use serde_json::json;
use support::{Provider, TestEnv, TestNamespace, Traffic, TrafficOptions};

const FLAVOURS: [&str; 4] = ["istio", "linkerd", "nginx", "generic"];
const CANARY_WEIGHT: u32 = 20;

fn client(base_url: &str) -> PrometheusClient {
    PrometheusClient::new(PrometheusConfig {
        base_url: base_url.to_string(),
        timeout: Duration::from_secs(5),
        auth: Auth::None,
        window: Duration::from_secs(10),
        scrape_interval: Duration::from_secs(1),
        sample_interval: Duration::from_secs(2),
        retries: 1,
        ..PrometheusConfig::default()
    })
    .expect("PrometheusClient")
}

fn request(
    ns: &str,
    svc: &str,
    flavour: &str,
    step_started: chrono::DateTime<Utc>,
) -> MetricsRequest {
    MetricsRequest {
        namespace: ns.into(),
        service: svc.into(),
        stable_workload: svc.into(),
        canary_workload: format!("{svc}-canary"),
        flavour: kubectl_canary::core::schedule::MetricsFlavour::parse(flavour).unwrap(),
        step_started,
        now: Utc::now(),
        queries: BTreeMap::from([
            (
                "kafka_lag".to_string(),
                r#"sum(kafka_consumergroup_lag{consumergroup="{{canary_workload}}",topic="{{service}}-events"})"#
                    .to_string(),
            ),
            (
                "missing".to_string(),
                r#"sum(rate(no_such_metric_total{namespace="{{namespace}}"}[{{window}}]))"#
                    .to_string(),
            ),
        ]),
        latency_samples: true,
    }
}

/// Fetch every flavour; panics on Err (the environment is up: no error is expected).
async fn fetch_all(
    c: &PrometheusClient,
    ns: &str,
    svc: &str,
    step_started: chrono::DateTime<Utc>,
) -> BTreeMap<&'static str, MetricsData> {
    let mut out = BTreeMap::new();
    for f in FLAVOURS {
        let d = c
            .fetch(&request(ns, svc, f, step_started))
            .await
            .unwrap_or_else(|e| panic!("{f}: fetch failed: {e}"));
        let errs = recorded_errors(&d.resolved);
        assert!(errs.is_empty(), "{f}: query errors: {errs:?}");
        out.insert(f, d);
    }
    out
}

/// Poll `check` (Ok = done, Err = what is still wrong) until it succeeds or `timeout`.
async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let start = Instant::now();
    loop {
        match check().await {
            Ok(()) => {
                eprintln!("ok after {:.1?}: {what}", start.elapsed());
                return;
            }
            Err(last) if start.elapsed() >= timeout => {
                panic!("timed out after {timeout:?} waiting for: {what}\nlast observation: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(1000)).await,
        }
    }
}

fn share(d: &MetricsData) -> Option<f64> {
    let (s, c) = (d.stable.request_rate?, d.canary.request_rate?);
    (s + c > 0.0).then(|| c / (s + c))
}

/// ingress-nginx scraped with honor_labels / an annotation scrape: the series keep their own
/// `namespace` and `service`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_source_reads_every_flavour() {
    reads_every_flavour("metrics", "web", NginxScrape::Plain).await;
}

/// ingress-nginx scraped as the chart's ServiceMonitor is (honorLabels unset): the test
/// environment's Prometheus renames the series' `namespace`/`service` of namespaces named
/// `*nginx-sm*` to `exported_namespace`/`exported_service`, as a prometheus-operator does.
/// The same queries read both, with no configuration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_source_reads_nginx_scraped_by_a_servicemonitor() {
    // Another service name: Kafka consumer groups (the lag query) are cluster-wide.
    reads_every_flavour("metrics-nginx-sm", "shop", NginxScrape::ServiceMonitor).await;
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NginxScrape {
    Plain,
    ServiceMonitor,
}

/// The ingress-nginx series of namespace `n` are labelled as the controller exports them
/// (kubernetes/ingress-nginx `rootfs/etc/nginx/lua/monitor.lua`, `util.go` `upstreamName`):
/// both tracks carry the primary Ingress and Service; the canary's `canary` is its upstream
/// `<ns>-<svc>-canary-80`, stable's is empty; the namespace label is the scrape style's.
async fn assert_nginx_series_shape(c: &PrometheusClient, n: &str, svc: &str, scrape: NginxScrape) {
    let (ns_label, svc_label, other) = match scrape {
        NginxScrape::Plain => ("namespace", "service", "exported_namespace"),
        NginxScrape::ServiceMonitor => ("exported_namespace", "exported_service", "namespace"),
    };
    let count = |sel: String| {
        let c = c.clone();
        async move {
            c.query(
                &format!("count(nginx_ingress_controller_requests{{{sel}}})"),
                Utc::now(),
            )
            .await
            .unwrap_or_else(|e| panic!("{sel}: {e:?}"))
        }
    };
    let canary = format!(
        r#"{ns_label}="{n}",{svc_label}="{svc}",ingress="{svc}",canary="{n}-{svc}-canary-80""#
    );
    let stable = format!(r#"{ns_label}="{n}",{svc_label}="{svc}",ingress="{svc}",canary="""#);
    assert!(
        count(canary.clone()).await.is_some_and(|x| x > 0.0),
        "no series {{{canary}}}"
    );
    assert!(
        count(stable.clone()).await.is_some_and(|x| x > 0.0),
        "no series {{{stable}}}"
    );
    // Nothing in the other style, and no series names the canary Service as `service`.
    assert_eq!(count(format!(r#"{other}="{n}""#)).await, None, "{scrape:?}");
    assert_eq!(
        count(format!(r#"{ns_label}="{n}",{svc_label}="{svc}-canary""#)).await,
        None
    );
}

async fn reads_every_flavour(prefix: &str, svc: &str, scrape: NginxScrape) {
    let t0 = Instant::now();
    let env = TestEnv::get();
    let ns = TestNamespace::create(prefix).await;
    let n = ns.name.clone();
    // Stable pods behind `web` (this test reads metrics, it does not test routing: the
    // Service selects stable only, as a rollout pins it, so both clients' splits are exactly
    // the weight).
    support::create_stable(&ns.client, &n, svc, 2, true).await;
    support::apply_value(
        &ns.client,
        &n,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
               "spec": {"selector": {"app": svc, "version": "v1"},
                        "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}),
    )
    .await;
    support::create_canary(&ns.client, &n, svc, 1, support::TEST_IMAGE).await;
    // ingress-nginx: primary Ingress → `<svc>` (stable), canary Ingress → `<svc>-canary`.
    support::set_route(&ns.client, &n, Provider::Nginx, svc, svc, CANARY_WEIGHT).await;
    // Istio: a host split (`web` selects stable only, so subsets of it could not reach the
    // canary: the data plane would answer 503, as Envoy would).
    support::apply_value(
        &ns.client,
        &n,
        json!({"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
               "metadata": {"name": svc},
               "spec": {"hosts": [svc], "http": [{"route": [
                   {"destination": {"host": format!("{svc}-stable")}, "weight": 100 - CANARY_WEIGHT},
                   {"destination": {"host": format!("{svc}-canary")}, "weight": CANARY_WEIGHT}]}]}}),
    )
    .await;
    support::wait_serving(&n, svc, 2, Duration::from_secs(60)).await;
    support::wait_serving(&n, &format!("{svc}-canary"), 1, Duration::from_secs(60)).await;
    let traffic: Vec<Traffic> = [Provider::Istio, Provider::Nginx]
        .into_iter()
        .map(|p| {
            Traffic::start_with(
                &n,
                p.via(),
                &p.entry_host(svc),
                TrafficOptions::at(60.0, 150),
            )
        })
        .collect();
    let step_started = Utc::now();
    let c = client(&env.prometheus);

    // 1. Traffic split: canary share of requests ≈ route weight, healthy error rates 0.
    // Let the recent window (10 s) fill with traffic first: rates over a window that
    // started before the first request are extrapolated from a few samples.
    tokio::time::sleep(Duration::from_secs(11)).await;
    let target = f64::from(CANARY_WEIGHT) / 100.0;
    eventually(
        Duration::from_secs(40),
        "every flavour: canary request share ≈ weight, error rates 0, counts > 0",
        || {
            let c = c.clone();
            let n = n.clone();
            async move {
                let all = fetch_all(&c, &n, svc, step_started).await;
                let mut bad = Vec::new();
                for (f, d) in &all {
                    let ok = share(d).is_some_and(|s| (s - target).abs() <= 0.08)
                        && d.stable.error_rate == Some(0.0)
                        && d.canary.error_rate == Some(0.0)
                        && d.canary.requests.is_some_and(|r| r > 0.0)
                        && d.stable.errors == Some(0.0);
                    if !ok {
                        bad.push(format!(
                            "{f}: share {:?} err s/c {:?}/{:?} canary requests {:?} stable errors {:?}",
                            share(d),
                            d.stable.error_rate,
                            d.canary.error_rate,
                            d.canary.requests,
                            d.stable.errors
                        ));
                    }
                }
                if bad.is_empty() { Ok(()) } else { Err(bad.join("; ")) }
            }
        },
    )
    .await;
    assert_nginx_series_shape(&c, &n, svc, scrape).await;
    let first = fetch_all(&c, &n, svc, step_started).await;
    for (f, d) in &first {
        eprintln!(
            "{f}: canary share {:.3} (weight {target}), rates s/c {:?}/{:?} req/s, requests s/c {:?}/{:?}, p95 s/c {:?}/{:?} ms",
            share(d).unwrap(),
            d.stable.request_rate,
            d.canary.request_rate,
            d.stable.requests,
            d.canary.requests,
            d.stable.latency_p95,
            d.canary.latency_p95,
        );
        // Named queries: the lag gauge exists (0 before the fault); a missing series is
        // no data, not 0.
        assert_eq!(d.queries.get("kafka_lag"), Some(&Some(0.0)), "{f}");
        assert_eq!(d.queries.get("missing"), Some(&None), "{f}: missing series");
        assert!(
            d.failed.is_empty(),
            "{f}: no data is not a failure: {:?}",
            d.failed
        );
        let missing_text = format!(r#"sum(rate(no_such_metric_total{{namespace="{n}"}}[10s]))"#);
        assert_eq!(
            d.resolved.get(&missing_text),
            Some(&None),
            "{f}: resolved text recorded: {:?}",
            d.resolved.keys().collect::<Vec<_>>()
        );
        for m in [&d.stable, &d.canary] {
            for v in [m.requests, m.errors] {
                assert!(
                    v.is_some_and(|x| x >= 0.0 && x.fract() == 0.0),
                    "{f}: {m:?}"
                );
            }
            assert!(m.latency_p50 <= m.latency_p95 && m.latency_p95 <= m.latency_p99);
        }
        // Every built-in query and the two named ones are recorded.
        assert!(d.resolved.len() >= 16, "{f}: {} resolved", d.resolved.len());
    }

    // 2. Fault on the canary only: 50 % errors, ~200 ms latency, Kafka lag.
    support::inject_fault(
        &n,
        &format!("{svc}-canary"),
        json!({"error_rate": 0.5, "latency_ms": 200.0, "kafka_lag": 5000}),
    )
    .await;
    eventually(
        Duration::from_secs(40),
        "every flavour: canary error rate ≈ 0.5 and p95 ≫ stable's, stable healthy, lag 5000",
        || {
            let c = c.clone();
            let n = n.clone();
            async move {
                let all = fetch_all(&c, &n, svc, step_started).await;
                let mut bad = Vec::new();
                for (f, d) in &all {
                    let ok = d
                        .canary
                        .error_rate
                        .is_some_and(|e| (0.3..=0.7).contains(&e))
                        && d.stable.error_rate.is_some_and(|e| e < 0.02)
                        && d.canary.latency_p95.is_some_and(|p| p > 200.0)
                        && d.stable.latency_p95.is_some_and(|p| p < 50.0)
                        && d.queries.get("kafka_lag") == Some(&Some(5000.0));
                    if !ok {
                        bad.push(format!(
                            "{f}: err s/c {:?}/{:?} p95 s/c {:?}/{:?} lag {:?}",
                            d.stable.error_rate,
                            d.canary.error_rate,
                            d.stable.latency_p95,
                            d.canary.latency_p95,
                            d.queries.get("kafka_lag")
                        ));
                    }
                }
                if bad.is_empty() {
                    Ok(())
                } else {
                    Err(bad.join("; "))
                }
            }
        },
    )
    .await;
    let second = fetch_all(&c, &n, svc, step_started).await;
    for (f, d) in &second {
        let before = &first[f];
        eprintln!(
            "{f}: after fault error_rate s/c {:?}/{:?}, p95 s/c {:?}/{:?} ms, errors s/c {:?}/{:?}, canary samples {:?}",
            d.stable.error_rate,
            d.canary.error_rate,
            d.stable.latency_p95,
            d.canary.latency_p95,
            d.stable.errors,
            d.canary.errors,
            d.canary.latency_samples,
        );
        // Counts since the step start grow.
        assert!(
            d.canary.requests > before.canary.requests
                && d.stable.requests > before.stable.requests,
            "{f}: requests must grow: {:?} -> {:?}",
            (before.stable.requests, before.canary.requests),
            (d.stable.requests, d.canary.requests)
        );
        assert!(
            d.canary.errors.is_some_and(|e| e > 0.0) && d.canary.errors <= d.canary.requests,
            "{f}: canary errors {:?} of {:?}",
            d.canary.errors,
            d.canary.requests
        );
        assert_eq!(d.stable.errors, Some(0.0), "{f}: stable errors");
        // Per-interval p95 samples over the step (2 s intervals, step ≥ 15 s): several,
        // the latest ones slow on the canary.
        let step_secs = (Utc::now() - step_started).num_seconds();
        for m in [&d.stable, &d.canary] {
            assert!(
                m.latency_samples.len() >= 5,
                "{f}: {} samples over a {step_secs}s step: {:?}",
                m.latency_samples.len(),
                m.latency_samples
            );
            assert!(m.latency_samples.iter().all(|v| v.is_finite() && *v >= 0.0));
        }
        let last = *d.canary.latency_samples.last().unwrap();
        assert!(last > 100.0, "{f}: last canary p95 sample {last} ms");
        assert!(
            d.stable.latency_samples.iter().all(|v| *v < 50.0),
            "{f}: stable samples {:?}",
            d.stable.latency_samples
        );
    }
    drop(traffic);
    eprintln!("reads_every_flavour({prefix}) took {:.1?}", t0.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_prometheus_is_no_data_with_a_visible_error() {
    // A loopback port nobody listens on: bind, read the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let c = client(&url);
    let now = Utc::now();
    let req = request("ns", "web", "istio", now - chrono::Duration::seconds(60));
    let started = Instant::now();
    let d = c.fetch(&req).await.expect("an outage is no data, not Err");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(10), "fetch took {took:?}");
    for m in [&d.stable, &d.canary] {
        assert_eq!(
            (m.requests, m.errors, m.request_rate, m.error_rate),
            (None, None, None, None)
        );
        assert_eq!(
            (m.latency_p50, m.latency_p95, m.latency_p99),
            (None, None, None)
        );
        assert!(m.latency_samples.is_empty());
    }
    assert_eq!(d.queries.get("kafka_lag"), Some(&None));
    assert_eq!(d.queries.get("missing"), Some(&None));
    // A policy can tell these failures from "no data": each is named with its error.
    for name in [
        "canary.requests",
        "stable.p95",
        "canary.error_rate",
        "kafka_lag",
        "missing",
    ] {
        assert!(
            d.failed.get(name).is_some_and(|e| !e.is_empty()),
            "{name} is recorded as failed: {:?}",
            d.failed
        );
    }
    let errs = recorded_errors(&d.resolved);
    assert!(
        !errs.is_empty(),
        "the outage must be visible: {:?}",
        d.resolved
    );
    assert!(
        errs.iter().all(|e| e.contains(&url)),
        "errors name the backend: {errs:?}"
    );
    eprintln!("dead backend after {took:?}: {errs:?}");
    // Every attempted query is recorded as no data.
    assert!(d.resolved.values().all(Option::is_none));
    assert!(d.resolved.len() > errs.len());

    // The detailed form lists each failed query.
    let detailed = c.fetch_detailed(&req).await.unwrap();
    assert_eq!(
        detailed.failures.len(),
        detailed.data.resolved.len(),
        "every query failed"
    );
}

/// Ambient mode: no sidecar; the waypoint reports the requests it proxies as
/// `reporter="waypoint"` (istio/proxy `istio_stats.cc`). The Istio flavour reads them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_flavour_reads_waypoint_reports() {
    let env = TestEnv::get();
    let ns = TestNamespace::create("metrics-ambient").await;
    let n = ns.name.clone();
    support::apply(
        &ns.client,
        &n,
        &format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 1\n  \
             selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web, istio.io/dataplane-mode: ambient}}}}\n    \
             spec: {{containers: [{{name: web, image: \"{}\"}}]}}\n---\n\
             apiVersion: v1\nkind: Service\nmetadata: {{name: web}}\n\
             spec: {{selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}]}}\n",
            support::TEST_IMAGE
        ),
    )
    .await;
    support::wait_serving(&n, "web", 1, Duration::from_secs(60)).await;
    let _traffic = Traffic::start_with(&n, "istio", "web", TrafficOptions::at(50.0, 60));
    let c = client(&env.prometheus);
    let step_started = Utc::now();
    eventually(
        Duration::from_secs(40),
        "the Istio flavour reads the waypoint's reports of stable",
        || {
            let c = c.clone();
            let n = n.clone();
            async move {
                let d = c
                    .fetch(&request(&n, "web", "istio", step_started))
                    .await
                    .map_err(|e| e.to_string())?;
                match d.stable.request_rate {
                    Some(r) if r > 10.0 => Ok(()),
                    other => Err(format!("stable request rate {other:?}")),
                }
            }
        },
    )
    .await;
    let count = |reporter: &str| {
        let q = format!(
            r#"count(istio_requests_total{{reporter="{reporter}",destination_workload_namespace="{n}"}})"#
        );
        let c = c.clone();
        async move { c.query(&q, Utc::now()).await.unwrap() }
    };
    assert!(count("waypoint").await.is_some_and(|x| x > 0.0));
    assert_eq!(count("destination").await, None, "one reporter per request");
}
