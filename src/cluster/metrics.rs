//! The metrics source of the cluster commands: Prometheus from `--prometheus-*` flags (with
//! env fallbacks), or none (every metric is "no data": the policy holds, never passes).

use crate::error::Result;
use crate::metrics::prometheus::{PrometheusClient, PrometheusConfig};
use crate::metrics::{MetricsData, MetricsError, MetricsRequest, MetricsSource};

pub enum Metrics {
    Prometheus(Box<PrometheusClient>),
    None,
}

impl Metrics {
    /// Prometheus when configured, else none.
    pub fn new(config: Option<PrometheusConfig>) -> Result<Metrics> {
        let Some(config) = config else {
            return Ok(Metrics::None);
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
