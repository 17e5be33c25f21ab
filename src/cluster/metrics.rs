//! The metrics source of the cluster commands: Prometheus from `--prometheus-*` flags (with
//! env fallbacks), or none (every metric is "no data": the policy holds, never passes).

use crate::cli::PrometheusArgs;
use crate::error::Result;
use crate::metrics::prometheus::{Auth, PrometheusClient, PrometheusConfig};
use crate::metrics::{MetricsData, MetricsError, MetricsRequest, MetricsSource};

pub enum Metrics {
    Prometheus(Box<PrometheusClient>),
    None,
}

impl Metrics {
    pub fn from_args(a: &PrometheusArgs) -> Result<Metrics> {
        let Some(url) = a.url.clone().filter(|u| !u.is_empty()) else {
            return Ok(Metrics::None);
        };
        let auth = match (&a.token, &a.user) {
            (Some(t), _) => Auth::Bearer(t.clone()),
            (None, Some(u)) => Auth::Basic {
                username: u.clone(),
                password: a.password.clone(),
            },
            (None, None) => Auth::None,
        };
        let config = PrometheusConfig {
            base_url: url,
            timeout: a.timeout.into(),
            auth,
            ca_cert: a.ca.clone(),
            insecure_skip_verify: a.insecure,
            window: a.window.into(),
            scrape_interval: a.scrape_interval.into(),
            ..PrometheusConfig::default()
        };
        Ok(Metrics::Prometheus(Box::new(PrometheusClient::new(
            config,
        )?)))
    }

    pub fn describe(&self) -> String {
        match self {
            Metrics::Prometheus(p) => p.config.base_url.clone(),
            Metrics::None => "none".into(),
        }
    }
}

impl MetricsSource for Metrics {
    async fn fetch(&self, req: &MetricsRequest) -> Result<MetricsData, MetricsError> {
        match self {
            Metrics::Prometheus(p) => p.fetch(req).await,
            Metrics::None => Err(MetricsError::Backend {
                url: "-".into(),
                message:
                    "no Prometheus configured (--prometheus-url or KUBECTL_CANARY_PROMETHEUS_URL); \
                          every metric is no data"
                        .into(),
            }),
        }
    }
}
