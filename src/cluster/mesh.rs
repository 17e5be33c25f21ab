//! Which service mesh the stable pods are in, from the labels and annotations the meshes'
//! injectors read, so a route object that says nothing about a mesh (a Gateway API
//! HTTPRoute) still gets the mesh's metrics (`response_total` for Linkerd, `istio_requests_total`
//! for Istio) instead of the application's own.
//!
//! Pods that already run carry the injectors' own marks, which settle it; a pod template and
//! its namespace carry the request, which the injector follows:
//! - Linkerd (linkerd/linkerd2 `pkg/k8s/labels.go` `ProxyInjectAnnotation`,
//!   `pkg/inject/inject.go` `injectDisabled`/`isInjectAnnotationEnabled`): annotation
//!   `linkerd.io/inject: enabled` (or `ingress`) on the pod or its namespace; the pod's
//!   `disabled` wins. An injected pod carries `linkerd.io/proxy-version`.
//! - Istio sidecars (istio/istio `pkg/kube/inject/inject.go` `injectRequired`, and the
//!   webhook's namespace selector in `manifests/charts/istio-control/istio-discovery/templates/mutatingwebhook.yaml`):
//!   namespace label `istio-injection: enabled` or `istio.io/rev: <revision>`; the pod's
//!   `sidecar.istio.io/inject` (label first, then annotation) says `true`/`false` over it.
//!   An injected pod carries the annotation `sidecar.istio.io/status`.
//! - Istio ambient (istio/istio `cni/pkg/util/podutil.go` `PodRedirectionEnabled`): label
//!   `istio.io/dataplane-mode: ambient` on the namespace or the pod; the pod's `none` opts
//!   out. An enrolled pod carries `ambient.istio.io/redirection: enabled`.

use crate::core::schedule::MetricsFlavour;
use std::collections::BTreeMap;

/// Labels and annotations of one object (a namespace, a pod template or a pod).
#[derive(Debug, Default, Clone, Copy)]
pub struct Marks<'a> {
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
}

impl<'a> Marks<'a> {
    pub fn of(meta: &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        Marks {
            labels: meta.labels.as_ref(),
            annotations: meta.annotations.as_ref(),
        }
    }
    fn label(&self, k: &str) -> Option<&'a str> {
        self.labels.and_then(|m| m.get(k)).map(String::as_str)
    }
    fn annotation(&self, k: &str) -> Option<&'a str> {
        self.annotations.and_then(|m| m.get(k)).map(String::as_str)
    }
}

/// The mesh found, and why (shown to the user when it picks the metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    pub flavour: MetricsFlavour,
    pub why: String,
}

/// The mesh of pods made from `template` in `namespace`, or of the running `pod` when one
/// is given (its injector marks settle it). None: no mesh.
pub fn of(namespace: Marks, template: Marks, pod: Option<Marks>) -> Option<Mesh> {
    let mesh = |flavour, why: String| Some(Mesh { flavour, why });
    if let Some(pod) = pod {
        if pod.annotation("linkerd.io/proxy-version").is_some() {
            return mesh(
                MetricsFlavour::Linkerd,
                "the stable pods run Linkerd's proxy".into(),
            );
        }
        if pod.annotation("sidecar.istio.io/status").is_some() {
            return mesh(
                MetricsFlavour::Istio,
                "the stable pods run Istio's sidecar".into(),
            );
        }
        if pod.annotation("ambient.istio.io/redirection") == Some("enabled") {
            return mesh(
                MetricsFlavour::Istio,
                "the stable pods are enrolled in Istio ambient".into(),
            );
        }
    }
    let linkerd = template
        .annotation("linkerd.io/inject")
        .map(|v| (v, "the pod template"))
        .or_else(|| {
            namespace
                .annotation("linkerd.io/inject")
                .map(|v| (v, "the namespace"))
        });
    if let Some((v @ ("enabled" | "ingress"), on)) = linkerd {
        return mesh(
            MetricsFlavour::Linkerd,
            format!("{on} is annotated linkerd.io/inject: {v}"),
        );
    }
    let mode = template
        .label("istio.io/dataplane-mode")
        .map(|v| (v, "the pod template"))
        .or_else(|| {
            namespace
                .label("istio.io/dataplane-mode")
                .map(|v| (v, "the namespace"))
        });
    if let Some(("ambient", on)) = mode {
        return mesh(
            MetricsFlavour::Istio,
            format!("{on} is labelled istio.io/dataplane-mode: ambient"),
        );
    }
    let pod_says = template
        .label("sidecar.istio.io/inject")
        .or_else(|| template.annotation("sidecar.istio.io/inject"));
    let namespace_says = match (
        namespace.label("istio-injection"),
        namespace.label("istio.io/rev"),
    ) {
        (Some("enabled"), _) => Some("the namespace is labelled istio-injection: enabled".into()),
        // The revision selector only applies where istio-injection is absent.
        (None, Some(rev)) => Some(format!("the namespace is labelled istio.io/rev: {rev}")),
        _ => None,
    };
    match (pod_says, namespace_says) {
        (Some("true"), _) => mesh(
            MetricsFlavour::Istio,
            "the pod template asks for Istio's sidecar (sidecar.istio.io/inject: true)".into(),
        ),
        (Some("false"), _) => None,
        (_, Some(why)) => mesh(MetricsFlavour::Istio, why),
        _ => None,
    }
}

/// [`of`] for the stable Deployment: its namespace, its pod template, and one of its pods.
/// None without a read when `router`'s metrics do not depend on the mesh (every route kind
/// but the Gateway API's names its data plane).
pub async fn detect(
    router: &crate::providers::Router,
    client: &kube::Client,
    ns: &str,
    stable: &k8s_openapi::api::apps::v1::Deployment,
) -> crate::error::Result<Option<Mesh>> {
    if !router.metrics_follow_mesh() {
        return Ok(None);
    }
    use k8s_openapi::api::core::v1::{Namespace, Pod};
    use kube::api::{Api, ListParams};
    let namespace = Api::<Namespace>::all(client.clone()).get_opt(ns).await?;
    let selector = super::workloads::selector_of(stable)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels(&selector).limit(1))
        .await?;
    let template = stable
        .spec
        .template
        .metadata
        .as_ref()
        .map(Marks::of)
        .unwrap_or_default();
    Ok(of(
        namespace
            .as_ref()
            .map(|n| Marks::of(&n.metadata))
            .unwrap_or_default(),
        template,
        pods.items.first().map(|p| Marks::of(&p.metadata)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flavour(ns: Marks, tmpl: Marks, pod: Option<Marks>) -> Option<MetricsFlavour> {
        of(ns, tmpl, pod).map(|m| m.flavour)
    }

    #[test]
    fn linkerd_from_namespace_or_template_and_the_template_can_opt_out() {
        let on = map(&[("linkerd.io/inject", "enabled")]);
        let off = map(&[("linkerd.io/inject", "disabled")]);
        let ns = Marks {
            labels: None,
            annotations: Some(&on),
        };
        assert_eq!(
            flavour(ns, Marks::default(), None),
            Some(MetricsFlavour::Linkerd)
        );
        let m = of(ns, Marks::default(), None).unwrap();
        assert_eq!(
            m.why,
            "the namespace is annotated linkerd.io/inject: enabled"
        );
        let opt_out = Marks {
            labels: None,
            annotations: Some(&off),
        };
        assert_eq!(flavour(ns, opt_out, None), None);
        let tmpl = Marks {
            labels: None,
            annotations: Some(&on),
        };
        assert_eq!(
            flavour(Marks::default(), tmpl, None),
            Some(MetricsFlavour::Linkerd)
        );
    }

    #[test]
    fn istio_sidecar_from_namespace_labels_and_the_pods_own_word() {
        let injection = map(&[("istio-injection", "enabled")]);
        let rev = map(&[("istio.io/rev", "1-22")]);
        let disabled_with_rev = map(&[("istio-injection", "disabled"), ("istio.io/rev", "1-22")]);
        let no = map(&[("sidecar.istio.io/inject", "false")]);
        let yes = map(&[("sidecar.istio.io/inject", "true")]);
        let labels = |m| Marks {
            labels: Some(m),
            annotations: None,
        };
        assert_eq!(
            flavour(labels(&injection), Marks::default(), None),
            Some(MetricsFlavour::Istio)
        );
        assert_eq!(
            flavour(labels(&rev), Marks::default(), None),
            Some(MetricsFlavour::Istio)
        );
        assert_eq!(
            flavour(labels(&disabled_with_rev), Marks::default(), None),
            None
        );
        assert_eq!(flavour(labels(&injection), labels(&no), None), None);
        assert_eq!(
            flavour(Marks::default(), labels(&yes), None),
            Some(MetricsFlavour::Istio)
        );
        // The annotation form (older Istio) counts too.
        let annotated = Marks {
            labels: None,
            annotations: Some(&no),
        };
        assert_eq!(flavour(labels(&injection), annotated, None), None);
    }

    #[test]
    fn ambient_from_namespace_or_pod_label_and_none_opts_out() {
        let ambient = map(&[("istio.io/dataplane-mode", "ambient")]);
        let none = map(&[("istio.io/dataplane-mode", "none")]);
        let labels = |m| Marks {
            labels: Some(m),
            annotations: None,
        };
        assert_eq!(
            flavour(labels(&ambient), Marks::default(), None),
            Some(MetricsFlavour::Istio)
        );
        assert_eq!(
            flavour(Marks::default(), labels(&ambient), None),
            Some(MetricsFlavour::Istio)
        );
        assert_eq!(flavour(labels(&ambient), labels(&none), None), None);
    }

    #[test]
    fn a_running_pods_injector_marks_settle_it() {
        let linkerd = map(&[("linkerd.io/proxy-version", "edge-25.1.1")]);
        let istio_ns = map(&[("istio-injection", "enabled")]);
        let pod = Marks {
            labels: None,
            annotations: Some(&linkerd),
        };
        let ns = Marks {
            labels: Some(&istio_ns),
            annotations: None,
        };
        assert_eq!(
            flavour(ns, Marks::default(), Some(pod)),
            Some(MetricsFlavour::Linkerd)
        );
        assert_eq!(flavour(Marks::default(), Marks::default(), None), None);
    }
}
