//! Hand-written Prometheus text exposition for the demo workload.
//!
//! Every process is one pod. Series carry the pod's own identity (Deployment, labels) and,
//! where a real data plane reports it per request, the route the request came through.
//! The Linkerd, generic and the pod's default Istio series exist from startup (200 and
//! 500), so `rate()` works immediately.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Status codes that always have a series (zero until used).
pub const CODES: [u16; 2] = [200, 500];

#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: vec![0; bounds.len()],
            sum: 0.0,
            count: 0,
        }
    }

    pub fn observe(&mut self, v: f64) {
        for (i, b) in self.bounds.iter().enumerate() {
            if v <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += v;
        self.count += 1;
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {c}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

const ISTIO_MS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];
const LINKERD_MS: &[f64] = &[
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0, 50000.0,
];
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of the Cassandra driver's `cql-requests` timer, seconds. Micrometer computes its own
/// bucket bounds (percentile histogram clipped to the driver's lowest/highest latency); these are
/// a stand-in, the series' names and labels are what matters to the hook.
const CQL_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Kong 3.x `KONG_LATENCY_BUCKETS` (kong/kong `kong/plugins/prometheus/exporter.lua`).
const KONG_MS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
];
/// Port of the demo Services (tests/support: `"port": 80`), part of the Kong service name.
const SERVICE_PORT: u16 = 80;

/// Identity of the serving pod, used as label values (from the pod itself: namespace,
/// owning Deployment, its own labels).
#[derive(Clone, Debug)]
pub struct Identity {
    pub namespace: String,
    pub pod: String,
    /// Owning Deployment (Istio destination_workload, Linkerd deployment).
    pub workload: String,
    /// Pod label `version` (Istio destination_version), "unknown" without one.
    pub version: String,
    /// Pod label `app` (or the workload): Istio destination_app, the generic `service`.
    pub app: String,
    /// Pod label `track`, "" without one (the generic flavour's label).
    pub track: String,
    /// Who reports this pod's Istio requests: `destination` (its sidecar), or `waypoint` for
    /// a pod labelled `istio.io/dataplane-mode: ambient` (istio/proxy
    /// `source/extensions/filters/http/istio_stats/istio_stats.cc`: a waypoint reports as
    /// `reporter="waypoint"`, with the destination workload's labels). The waypoint is a
    /// proxy of its own; the pod reports in its place here.
    pub istio_reporter: &'static str,
}

/// How a request reached the pod, told by the data plane with each request: the Service it
/// was routed through and, behind ingress-nginx, the labels the controller puts on it
/// (kubernetes/ingress-nginx `rootfs/etc/nginx/lua/monitor.lua`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RouteCtx {
    pub service: String,
    /// ingress-nginx's `ingress` label: the primary location's Ingress.
    pub ingress: String,
    /// ingress-nginx's `service` label: the primary location's Service, for both tracks
    /// (a canary Ingress owns no location).
    pub nginx_service: String,
    /// ingress-nginx's `canary` label: the alternative upstream's name
    /// (`<namespace>-<service>-<port>`) when the request went to the canary, "" otherwise.
    pub canary: String,
}

#[derive(Debug)]
struct PerRoute {
    ctx: RouteCtx,
    /// (code, requests, Istio duration histogram)
    codes: Vec<(u16, u64, Histogram)>,
    nginx_s: Histogram,
}

impl PerRoute {
    fn observe(&mut self, code: u16, duration_ms: f64) {
        match self.codes.iter_mut().find(|c| c.0 == code) {
            Some(c) => {
                c.1 += 1;
                c.2.observe(duration_ms);
            }
            None => {
                let mut h = Histogram::new(ISTIO_MS);
                h.observe(duration_ms);
                self.codes.push((code, 1, h));
            }
        }
        self.nginx_s.observe(duration_ms / 1000.0);
    }

    fn new(ctx: RouteCtx) -> Self {
        PerRoute {
            ctx,
            codes: CODES
                .iter()
                .map(|&c| (c, 0, Histogram::new(ISTIO_MS)))
                .collect(),
            nginx_s: Histogram::new(SECONDS),
        }
    }
}

#[derive(Debug)]
pub struct Metrics {
    id: Identity,
    /// Istio series: one per Service the requests came through (labels carry only that).
    istio: Vec<PerRoute>,
    /// ingress-nginx series: one per (Ingress, Service, canary) the requests came through.
    nginx: Vec<PerRoute>,
    /// Per code, over all routes (Linkerd and generic series are per pod).
    per_code: Vec<(u16, u64)>,
    linkerd_ms: Histogram,
    generic_s: Histogram,
    /// The Cassandra driver's `cql-requests` timer: reads and writes alike (the driver does not
    /// split them).
    cql_s: Histogram,
    kong_ms: Histogram,
}

/// Escape a label value for the text exposition format.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn new(id: Identity) -> Self {
        // Istio series exist from startup for the pod's own app Service, so rate() works at once.
        let default_ctx = RouteCtx {
            service: id.app.clone(),
            ..RouteCtx::default()
        };
        Metrics {
            id,
            istio: vec![PerRoute::new(default_ctx)],
            nginx: Vec::new(),
            per_code: CODES.iter().map(|&c| (c, 0)).collect(),
            linkerd_ms: Histogram::new(LINKERD_MS),
            generic_s: Histogram::new(SECONDS),
            cql_s: Histogram::new(CQL_S),
            kong_ms: Histogram::new(KONG_MS),
        }
    }

    /// Requests served, by status code (the pod's own counters).
    pub fn counts(&self) -> BTreeMap<u16, u64> {
        self.per_code.iter().copied().collect()
    }

    /// Record one served request that arrived through `ctx`.
    pub fn record(&mut self, ctx: &RouteCtx, code: u16, duration_ms: f64) {
        let by_service = RouteCtx {
            service: ctx.service.clone(),
            ..RouteCtx::default()
        };
        Self::entry(&mut self.istio, &by_service).observe(code, duration_ms);
        if !ctx.ingress.is_empty() {
            Self::entry(&mut self.nginx, ctx).observe(code, duration_ms);
        }
        match self.per_code.iter_mut().find(|c| c.0 == code) {
            Some(c) => c.1 += 1,
            None => self.per_code.push((code, 1)),
        }
        self.linkerd_ms.observe(duration_ms);
        self.generic_s.observe(duration_ms / 1000.0);
    }

    fn entry<'a>(routes: &'a mut Vec<PerRoute>, ctx: &RouteCtx) -> &'a mut PerRoute {
        let i = match routes.iter().position(|r| r.ctx == *ctx) {
            Some(i) => i,
            None => {
                routes.push(PerRoute::new(ctx.clone()));
                routes.len() - 1
            }
        };
        &mut routes[i]
    }

    /// Record the service-signal samples taken for one request.
    pub fn record_signals(
        &mut self,
        cassandra_read_ms: f64,
        cassandra_write_ms: f64,
        kong_ms: f64,
    ) {
        self.cql_s.observe(cassandra_read_ms / 1000.0);
        self.cql_s.observe(cassandra_write_ms / 1000.0);
        self.kong_ms.observe(kong_ms);
    }

    pub fn render(&self, kafka_lag: f64) -> String {
        let id = &self.id;
        let (app, ns, wl, ver, track, pod) = (
            esc(&id.app),
            esc(&id.namespace),
            esc(&id.workload),
            esc(&id.version),
            esc(&id.track),
            esc(&id.pod),
        );
        let mut o = String::with_capacity(16 * 1024);

        // Istio (destination side: this pod's proxy reports what it served)
        o.push_str("# HELP istio_requests_total Requests served (Istio standard metric).\n");
        o.push_str("# TYPE istio_requests_total counter\n");
        let istio_labels = |r: &PerRoute, code: u16| {
            format!(
                "reporter=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{ns}\",destination_workload=\"{wl}\",destination_workload_namespace=\"{ns}\",destination_app=\"{app}\",destination_version=\"{ver}\",response_code=\"{code}\"",
                id.istio_reporter,
                esc(&r.ctx.service)
            )
        };
        for r in &self.istio {
            for (code, n, _) in &r.codes {
                let _ = writeln!(o, "istio_requests_total{{{}}} {n}", istio_labels(r, *code));
            }
        }
        o.push_str("# HELP istio_request_duration_milliseconds Request duration (Istio standard metric).\n");
        o.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for r in &self.istio {
            for (code, _, h) in &r.codes {
                h.render(
                    &mut o,
                    "istio_request_duration_milliseconds",
                    &istio_labels(r, *code),
                );
            }
        }

        // Linkerd (inbound side of this pod's proxy)
        o.push_str("# HELP response_total Responses (Linkerd proxy metric).\n");
        o.push_str("# TYPE response_total counter\n");
        for (code, n) in &self.per_code {
            let class = if *code >= 500 { "failure" } else { "success" };
            let _ = writeln!(
                o,
                "response_total{{direction=\"inbound\",deployment=\"{wl}\",namespace=\"{ns}\",pod=\"{pod}\",classification=\"{class}\",status_code=\"{code}\"}} {n}"
            );
        }
        o.push_str("# HELP response_latency_ms Response latency (Linkerd proxy metric).\n");
        o.push_str("# TYPE response_latency_ms histogram\n");
        self.linkerd_ms.render(
            &mut o,
            "response_latency_ms",
            &format!("direction=\"inbound\",deployment=\"{wl}\",namespace=\"{ns}\",pod=\"{pod}\""),
        );

        // ingress-nginx: only for requests that came through an Ingress.
        o.push_str(
            "# HELP nginx_ingress_controller_requests Client requests (ingress-nginx metric).\n",
        );
        o.push_str("# TYPE nginx_ingress_controller_requests counter\n");
        let nginx_labels = |r: &PerRoute| {
            format!(
                "ingress=\"{}\",namespace=\"{ns}\",service=\"{}\",canary=\"{}\"",
                esc(&r.ctx.ingress),
                esc(&r.ctx.nginx_service),
                esc(&r.ctx.canary)
            )
        };
        for r in &self.nginx {
            for (code, n, _) in &r.codes {
                let _ = writeln!(
                    o,
                    "nginx_ingress_controller_requests{{{},status=\"{code}\"}} {n}",
                    nginx_labels(r)
                );
            }
        }
        o.push_str("# HELP nginx_ingress_controller_request_duration_seconds Request duration (ingress-nginx metric).\n");
        o.push_str("# TYPE nginx_ingress_controller_request_duration_seconds histogram\n");
        for r in &self.nginx {
            r.nginx_s.render(
                &mut o,
                "nginx_ingress_controller_request_duration_seconds",
                &nginx_labels(r),
            );
        }

        // Generic: what an instrumented app exports, with its pod's labels attached.
        o.push_str("# HELP http_requests_total HTTP requests served.\n");
        o.push_str("# TYPE http_requests_total counter\n");
        for (code, n) in &self.per_code {
            let _ = writeln!(
                o,
                "http_requests_total{{namespace=\"{ns}\",service=\"{app}\",track=\"{track}\",pod=\"{pod}\",code=\"{code}\"}} {n}"
            );
        }
        o.push_str("# HELP http_request_duration_seconds HTTP request duration.\n");
        o.push_str("# TYPE http_request_duration_seconds histogram\n");
        self.generic_s.render(
            &mut o,
            "http_request_duration_seconds",
            &format!("namespace=\"{ns}\",service=\"{app}\",track=\"{track}\",pod=\"{pod}\""),
        );

        // Kafka consumer lag in kafka_exporter's shape (danielqsj/kafka_exporter
        // `kafka_exporter.go`: `kafka_consumergroup_lag{consumergroup, topic, partition}`). In a
        // real cluster one exporter reports every group and no pod label; here each pod stands
        // in for the exporter with its own group's lag, the group named like its Deployment (the
        // kafka-lag hook's default). Two replicas of a Deployment report the same series (told
        // apart only by their scrape targets), so the hook's sum counts the lag once per replica.
        o.push_str("# HELP kafka_consumergroup_lag Current Approximate Lag of a ConsumerGroup at Topic/Partition\n");
        o.push_str("# TYPE kafka_consumergroup_lag gauge\n");
        let _ = writeln!(
            o,
            "kafka_consumergroup_lag{{consumergroup=\"{wl}\",topic=\"{app}-events\",partition=\"0\"}} {kafka_lag}"
        );

        // Cassandra client latency in the Java driver 4.x shape: the session timer `cql-requests`
        // through Micrometer's Prometheus registry with the TaggingMetricIdGenerator
        // (apache/cassandra-java-driver `TaggingMetricIdGenerator.java`: name "session.cql-requests",
        // tag session=<session name>, "s0" by default; `MicrometerSessionMetricUpdater.java`:
        // publishPercentileHistogram). The driver adds no pod label: `namespace` and `pod` are what
        // a real scrape's target labels add (the test env's file_sd names them canary_demo_*).
        o.push_str("# HELP session_cql_requests_seconds Cassandra driver CQL request latency (session.cql-requests)\n");
        o.push_str("# TYPE session_cql_requests_seconds histogram\n");
        self.cql_s.render(
            &mut o,
            "session_cql_requests_seconds",
            &format!("namespace=\"{ns}\",pod=\"{pod}\",session=\"s0\""),
        );

        // Kong gateway overhead in Kong's shape (kong/kong `kong/plugins/prometheus/exporter.lua`:
        // histogram "kong_latency_ms" {service, route} with the prefix "kong_"). STAND-IN: a real
        // Kong exports this itself, labelled by ITS service and route, never by pod; here each pod
        // emits what Kong would report for requests to it, taking its Kong service to be its own
        // Kubernetes Service (named like its Deployment: `<service>` / `<service>-canary`) behind
        // an Ingress of the same name without a host. The Kong Ingress Controller names them
        // (Kong/kubernetes-ingress-controller `internal/dataplane/translator/subtranslator/ingress.go`):
        // service "<namespace>.<Service>.<port>", route "<namespace>.<Ingress>.<Service>.<host>.<port>".
        o.push_str("# HELP kong_kong_latency_ms Latency added by Kong and enabled plugins for each service/route in Kong\n");
        o.push_str("# TYPE kong_kong_latency_ms histogram\n");
        self.kong_ms.render(
            &mut o,
            "kong_kong_latency_ms",
            &format!(
                "service=\"{ns}.{wl}.{SERVICE_PORT}\",route=\"{ns}.{wl}.{wl}..{SERVICE_PORT}\""
            ),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(track: &str) -> Identity {
        Identity {
            namespace: "ns1".into(),
            pod: "web-canary-abc-1".into(),
            workload: "web-canary".into(),
            version: "v2".into(),
            app: "web".into(),
            track: track.into(),
            istio_reporter: "destination",
        }
    }

    #[test]
    fn pod_families_present_from_startup() {
        let text = Metrics::new(id("canary")).render(0.0);
        for needle in [
            "istio_requests_total{reporter=\"destination\",destination_service_name=\"web\",destination_service_namespace=\"ns1\",destination_workload=\"web-canary\",destination_workload_namespace=\"ns1\",destination_app=\"web\",destination_version=\"v2\",response_code=\"200\"} 0",
            "response_code=\"500\"} 0",
            "response_total{direction=\"inbound\",deployment=\"web-canary\",namespace=\"ns1\",pod=\"web-canary-abc-1\",classification=\"failure\",status_code=\"500\"} 0",
            "http_requests_total{namespace=\"ns1\",service=\"web\",track=\"canary\",pod=\"web-canary-abc-1\",code=\"500\"} 0",
            "kafka_consumergroup_lag{consumergroup=\"web-canary\",topic=\"web-events\",partition=\"0\"} 0",
            "session_cql_requests_seconds_bucket{namespace=\"ns1\",pod=\"web-canary-abc-1\",session=\"s0\",le=\"+Inf\"} 0",
            "kong_kong_latency_ms_bucket{service=\"ns1.web-canary.80\",route=\"ns1.web-canary.web-canary..80\",le=\"+Inf\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
        // ingress-nginx reports only what came through an Ingress.
        assert!(!text.contains("nginx_ingress_controller_requests{"));
    }

    #[test]
    fn an_ambient_pod_is_reported_by_its_waypoint() {
        let mut m = Metrics::new(Identity {
            istio_reporter: "waypoint",
            ..id("")
        });
        m.record(&RouteCtx::default(), 200, 1.0);
        let t = m.render(0.0);
        assert!(
            t.contains(
                "istio_requests_total{reporter=\"waypoint\",destination_service_name=\"web\""
            ),
            "{t}"
        );
        assert!(!t.contains("reporter=\"destination\""), "{t}");
    }

    #[test]
    fn series_follow_the_route_a_request_took() {
        let mut m = Metrics::new(id(""));
        let via_primary = RouteCtx {
            service: "web".into(),
            ingress: "web".into(),
            nginx_service: "web".into(),
            canary: String::new(),
        };
        // A canary request carries the primary location's Ingress and Service and the
        // canary's upstream name (ingress-nginx `monitor.lua`, `util.go` `upstreamName`).
        let via_canary = RouteCtx {
            service: "web-canary".into(),
            ingress: "web".into(),
            nginx_service: "web".into(),
            canary: "ns1-web-canary-80".into(),
        };
        m.record(&via_primary, 200, 3.0);
        m.record(&via_canary, 500, 30.0);
        m.record(&via_canary, 200, 7.0);
        m.record_signals(1.0, 2.0, 3.0);
        let t = m.render(42.0);
        assert!(t.contains("nginx_ingress_controller_requests{ingress=\"web\",namespace=\"ns1\",service=\"web\",canary=\"\",status=\"200\"} 1"), "{t}");
        assert!(t.contains("nginx_ingress_controller_requests{ingress=\"web\",namespace=\"ns1\",service=\"web\",canary=\"ns1-web-canary-80\",status=\"500\"} 1"));
        assert!(t.contains("destination_service_name=\"web-canary\",destination_service_namespace=\"ns1\",destination_workload=\"web-canary\""));
        assert!(t.contains("track=\"\",pod=\"web-canary-abc-1\",code=\"200\"} 2"));
        assert!(t.contains("status_code=\"500\"} 1"));
        assert!(t.contains("response_latency_ms_count{direction=\"inbound\",deployment=\"web-canary\",namespace=\"ns1\",pod=\"web-canary-abc-1\"} 3"));
        assert!(t.contains("partition=\"0\"} 42"));
        assert_eq!(m.counts().get(&200), Some(&2));
        assert_eq!(m.counts().get(&500), Some(&1));
        // One Istio series per Service and code: the primary Ingress's requests and those
        // sent to `web` directly share it (two identical label sets would be a duplicate
        // sample that Prometheus drops).
        let mut m = Metrics::new(id(""));
        m.record(
            &RouteCtx {
                service: "web".into(),
                ..RouteCtx::default()
            },
            200,
            1.0,
        );
        m.record(&via_primary, 200, 1.0);
        let t = m.render(0.0);
        let istio_200: Vec<&str> = t
            .lines()
            .filter(|l| {
                l.starts_with("istio_requests_total{")
                    && l.contains("destination_service_name=\"web\"")
                    && l.contains("response_code=\"200\"")
            })
            .collect();
        assert_eq!(istio_200.len(), 1, "{istio_200:?}");
        assert!(istio_200[0].ends_with(" 2"), "{istio_200:?}");
    }

    /// The hooks' series in their exporters' shapes, and nothing of the demo-only names they
    /// replaced: kafka_exporter `kafka_consumergroup_lag{consumergroup, topic, partition}`, the
    /// Cassandra Java driver's `session.cql-requests` timer through Micrometer, Kong's
    /// `kong_kong_latency_ms{service, route}` with the Kong Ingress Controller's names.
    #[test]
    fn hook_series_in_the_exporters_shapes() {
        let mut m = Metrics::new(id("canary"));
        m.record_signals(2.0, 30.0, 6.0);
        let t = m.render(1234.0);
        let lines = |prefix: &str| -> Vec<&str> {
            t.lines()
                .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
                .collect()
        };
        assert_eq!(
            lines("kafka_consumergroup_lag"),
            [
                "kafka_consumergroup_lag{consumergroup=\"web-canary\",topic=\"web-events\",partition=\"0\"} 1234"
            ]
        );
        let cql = lines("session_cql_requests_seconds");
        assert_eq!(cql.len(), CQL_S.len() + 3, "{cql:?}");
        for want in [
            // one read (2 ms) and one write (30 ms) in the one timer
            "session_cql_requests_seconds_bucket{namespace=\"ns1\",pod=\"web-canary-abc-1\",session=\"s0\",le=\"0.0025\"} 1",
            "session_cql_requests_seconds_bucket{namespace=\"ns1\",pod=\"web-canary-abc-1\",session=\"s0\",le=\"0.05\"} 2",
            "session_cql_requests_seconds_bucket{namespace=\"ns1\",pod=\"web-canary-abc-1\",session=\"s0\",le=\"+Inf\"} 2",
            "session_cql_requests_seconds_count{namespace=\"ns1\",pod=\"web-canary-abc-1\",session=\"s0\"} 2",
        ] {
            assert!(cql.contains(&want), "missing {want}\n{cql:#?}");
        }
        let kong = lines("kong_kong_latency_ms");
        assert_eq!(kong.len(), KONG_MS.len() + 3, "{kong:?}");
        for want in [
            "kong_kong_latency_ms_bucket{service=\"ns1.web-canary.80\",route=\"ns1.web-canary.web-canary..80\",le=\"5\"} 0",
            "kong_kong_latency_ms_bucket{service=\"ns1.web-canary.80\",route=\"ns1.web-canary.web-canary..80\",le=\"7\"} 1",
            "kong_kong_latency_ms_bucket{service=\"ns1.web-canary.80\",route=\"ns1.web-canary.web-canary..80\",le=\"1000\"} 1",
            "kong_kong_latency_ms_count{service=\"ns1.web-canary.80\",route=\"ns1.web-canary.web-canary..80\"} 1",
        ] {
            assert!(kong.contains(&want), "missing {want}\n{kong:#?}");
        }
        assert!(!t.contains("cassandra_client_request"), "{t}");
        for l in cql.iter().chain(&kong) {
            assert!(
                !l.contains("workload=") && !l.contains("operation="),
                "no exporter labels its series so: {l}"
            );
        }
    }
}
