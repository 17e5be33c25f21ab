//! Hand-written Prometheus text exposition for the demo workload.
//!
//! Every process serves exactly one (service, workload, version, track), so
//! each family only varies by status code; all families and the 200/500 series
//! exist from startup so `rate()` works immediately.

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
const CASSANDRA_S: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const KONG_MS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0,
    200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// Identity of the serving process, used as label values.
#[derive(Clone, Debug)]
pub struct Identity {
    pub service: String,
    pub namespace: String,
    pub workload: String,
    pub version: String,
    pub track: String,
    pub ingress: String,
    /// Service name used by ingress-nginx labels (the canary Service for track=canary).
    pub nginx_service: String,
}

impl Identity {
    fn is_canary(&self) -> bool {
        self.track == "canary"
    }
}

#[derive(Debug)]
struct PerCode {
    code: u16,
    requests: u64,
    istio_ms: Histogram,
}

#[derive(Debug)]
pub struct Metrics {
    id: Identity,
    per_code: Vec<PerCode>,
    linkerd_ms: Histogram,
    nginx_s: Histogram,
    generic_s: Histogram,
    cassandra_read_s: Histogram,
    cassandra_write_s: Histogram,
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
        Metrics {
            id,
            per_code: CODES
                .iter()
                .map(|&code| PerCode {
                    code,
                    requests: 0,
                    istio_ms: Histogram::new(ISTIO_MS),
                })
                .collect(),
            linkerd_ms: Histogram::new(LINKERD_MS),
            nginx_s: Histogram::new(SECONDS),
            generic_s: Histogram::new(SECONDS),
            cassandra_read_s: Histogram::new(CASSANDRA_S),
            cassandra_write_s: Histogram::new(CASSANDRA_S),
            kong_ms: Histogram::new(KONG_MS),
        }
    }

    /// Record one served request.
    pub fn record(&mut self, code: u16, duration_ms: f64) {
        let idx = match self.per_code.iter().position(|p| p.code == code) {
            Some(i) => i,
            None => {
                self.per_code.push(PerCode {
                    code,
                    requests: 0,
                    istio_ms: Histogram::new(ISTIO_MS),
                });
                self.per_code.len() - 1
            }
        };
        let pc = &mut self.per_code[idx];
        pc.requests += 1;
        pc.istio_ms.observe(duration_ms);
        self.linkerd_ms.observe(duration_ms);
        self.nginx_s.observe(duration_ms / 1000.0);
        self.generic_s.observe(duration_ms / 1000.0);
    }

    /// Record the service-signal samples taken for one request.
    pub fn record_signals(
        &mut self,
        cassandra_read_ms: f64,
        cassandra_write_ms: f64,
        kong_ms: f64,
    ) {
        self.cassandra_read_s.observe(cassandra_read_ms / 1000.0);
        self.cassandra_write_s.observe(cassandra_write_ms / 1000.0);
        self.kong_ms.observe(kong_ms);
    }

    pub fn render(&self, kafka_lag: f64) -> String {
        let id = &self.id;
        let (svc, ns, wl, ver, track) = (
            esc(&id.service),
            esc(&id.namespace),
            esc(&id.workload),
            esc(&id.version),
            esc(&id.track),
        );
        let ingress = esc(&id.ingress);
        let nginx_svc = esc(&id.nginx_service);
        let canary = if id.is_canary() {
            nginx_svc.clone()
        } else {
            String::new()
        };
        let mut o = String::with_capacity(16 * 1024);

        // Istio
        o.push_str("# HELP istio_requests_total Requests served (Istio standard metric).\n");
        o.push_str("# TYPE istio_requests_total counter\n");
        let istio_labels = |code: u16| {
            format!(
                "reporter=\"destination\",destination_service_name=\"{svc}\",destination_workload=\"{wl}\",destination_workload_namespace=\"{ns}\",destination_version=\"{ver}\",response_code=\"{code}\""
            )
        };
        for pc in &self.per_code {
            let _ = writeln!(
                o,
                "istio_requests_total{{{}}} {}",
                istio_labels(pc.code),
                pc.requests
            );
        }
        o.push_str("# HELP istio_request_duration_milliseconds Request duration (Istio standard metric).\n");
        o.push_str("# TYPE istio_request_duration_milliseconds histogram\n");
        for pc in &self.per_code {
            pc.istio_ms.render(
                &mut o,
                "istio_request_duration_milliseconds",
                &istio_labels(pc.code),
            );
        }

        // Linkerd
        o.push_str("# HELP response_total Responses (Linkerd proxy metric).\n");
        o.push_str("# TYPE response_total counter\n");
        for pc in &self.per_code {
            let class = if pc.code >= 500 { "failure" } else { "success" };
            let _ = writeln!(
                o,
                "response_total{{direction=\"inbound\",deployment=\"{wl}\",namespace=\"{ns}\",classification=\"{class}\",status_code=\"{}\"}} {}",
                pc.code, pc.requests
            );
        }
        o.push_str("# HELP response_latency_ms Response latency (Linkerd proxy metric).\n");
        o.push_str("# TYPE response_latency_ms histogram\n");
        self.linkerd_ms.render(
            &mut o,
            "response_latency_ms",
            &format!("direction=\"inbound\",deployment=\"{wl}\",namespace=\"{ns}\""),
        );

        // ingress-nginx
        o.push_str(
            "# HELP nginx_ingress_controller_requests Client requests (ingress-nginx metric).\n",
        );
        o.push_str("# TYPE nginx_ingress_controller_requests counter\n");
        for pc in &self.per_code {
            let _ = writeln!(
                o,
                "nginx_ingress_controller_requests{{ingress=\"{ingress}\",namespace=\"{ns}\",service=\"{nginx_svc}\",status=\"{}\",canary=\"{canary}\"}} {}",
                pc.code, pc.requests
            );
        }
        o.push_str("# HELP nginx_ingress_controller_request_duration_seconds Request duration (ingress-nginx metric).\n");
        o.push_str("# TYPE nginx_ingress_controller_request_duration_seconds histogram\n");
        self.nginx_s.render(
            &mut o,
            "nginx_ingress_controller_request_duration_seconds",
            &format!("ingress=\"{ingress}\",namespace=\"{ns}\",service=\"{nginx_svc}\",canary=\"{canary}\""),
        );

        // Generic
        o.push_str("# HELP http_requests_total HTTP requests served.\n");
        o.push_str("# TYPE http_requests_total counter\n");
        for pc in &self.per_code {
            let _ = writeln!(
                o,
                "http_requests_total{{namespace=\"{ns}\",service=\"{svc}\",track=\"{track}\",code=\"{}\"}} {}",
                pc.code, pc.requests
            );
        }
        o.push_str("# HELP http_request_duration_seconds HTTP request duration.\n");
        o.push_str("# TYPE http_request_duration_seconds histogram\n");
        self.generic_s.render(
            &mut o,
            "http_request_duration_seconds",
            &format!("namespace=\"{ns}\",service=\"{svc}\",track=\"{track}\""),
        );

        // Kafka consumer lag (kafka-exporter naming)
        o.push_str("# HELP kafka_consumergroup_lag Current approximate lag of a consumer group at topic/partition.\n");
        o.push_str("# TYPE kafka_consumergroup_lag gauge\n");
        let _ = writeln!(
            o,
            "kafka_consumergroup_lag{{consumergroup=\"{wl}\",topic=\"{svc}-events\",partition=\"0\"}} {kafka_lag}"
        );

        // Cassandra client request latency
        o.push_str(
            "# HELP cassandra_client_request_latency_seconds Cassandra client request latency.\n",
        );
        o.push_str("# TYPE cassandra_client_request_latency_seconds histogram\n");
        for (op, h) in [
            ("read", &self.cassandra_read_s),
            ("write", &self.cassandra_write_s),
        ] {
            h.render(
                &mut o,
                "cassandra_client_request_latency_seconds",
                &format!("namespace=\"{ns}\",workload=\"{wl}\",operation=\"{op}\""),
            );
        }

        // Kong gateway overhead (Kong's Prometheus plugin naming)
        o.push_str("# HELP kong_kong_latency_ms Latency added by Kong (gateway overhead).\n");
        o.push_str("# TYPE kong_kong_latency_ms histogram\n");
        self.kong_ms.render(
            &mut o,
            "kong_kong_latency_ms",
            &format!("service=\"{ns}.{svc}\",workload=\"{wl}\""),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(track: &str) -> Identity {
        Identity {
            service: "web".into(),
            namespace: "ns1".into(),
            workload: "web-canary".into(),
            version: "v2".into(),
            track: track.into(),
            ingress: "web".into(),
            nginx_service: "web-canary".into(),
        }
    }

    #[test]
    fn all_families_present_from_startup() {
        let m = Metrics::new(id("canary"));
        let text = m.render(0.0);
        for needle in [
            "istio_requests_total{reporter=\"destination\",destination_service_name=\"web\",destination_workload=\"web-canary\",destination_workload_namespace=\"ns1\",destination_version=\"v2\",response_code=\"200\"} 0",
            "response_code=\"500\"} 0",
            "istio_request_duration_milliseconds_bucket{",
            "response_total{direction=\"inbound\",deployment=\"web-canary\",namespace=\"ns1\",classification=\"failure\",status_code=\"500\"} 0",
            "response_latency_ms_bucket{direction=\"inbound\"",
            "nginx_ingress_controller_requests{ingress=\"web\",namespace=\"ns1\",service=\"web-canary\",status=\"200\",canary=\"web-canary\"} 0",
            "nginx_ingress_controller_request_duration_seconds_bucket{",
            "http_requests_total{namespace=\"ns1\",service=\"web\",track=\"canary\",code=\"500\"} 0",
            "http_request_duration_seconds_bucket{",
            "kafka_consumergroup_lag{consumergroup=\"web-canary\",topic=\"web-events\",partition=\"0\"} 0",
            "cassandra_client_request_latency_seconds_bucket{namespace=\"ns1\",workload=\"web-canary\",operation=\"write\"",
            "kong_kong_latency_ms_bucket{service=\"ns1.web\",workload=\"web-canary\"",
        ] {
            assert!(text.contains(needle), "missing {needle}\n{text}");
        }
    }

    #[test]
    fn stable_has_empty_canary_label() {
        let text = Metrics::new(id("stable")).render(0.0);
        assert!(text.contains("status=\"200\",canary=\"\"} 0"));
    }

    #[test]
    fn records_requests_and_buckets() {
        let mut m = Metrics::new(id("stable"));
        m.record(200, 3.0);
        m.record(500, 30.0);
        m.record(200, 7.0);
        m.record_signals(1.0, 2.0, 3.0);
        let t = m.render(42.0);
        assert!(t.contains("response_code=\"200\"} 2"));
        assert!(t.contains("response_code=\"500\"} 1"));
        assert!(t.contains("status_code=\"500\"} 1"));
        assert!(t.contains("response_latency_ms_bucket{direction=\"inbound\",deployment=\"web-canary\",namespace=\"ns1\",le=\"5\"} 1"));
        assert!(t.contains("response_latency_ms_count{direction=\"inbound\",deployment=\"web-canary\",namespace=\"ns1\"} 3"));
        assert!(t.contains("partition=\"0\"} 42"));
        assert!(
            t.contains("kong_kong_latency_ms_count{service=\"ns1.web\",workload=\"web-canary\"} 1")
        );
    }
}
