//! `kubectl canary install-runner`: the in-cluster runner (a Deployment running
//! `kubectl-canary run --all`, its ServiceAccount and least-privilege Role) from the shipped
//! `deploy/` manifests, for the namespace (`-n`) or, with `-A`, for all namespaces
//! (ClusterRole). Applied with server-side apply, or printed with `--dry-run`.

use crate::cli::{GlobalArgs, InstallRunnerArgs, OutputFormat};
use crate::cluster;
use crate::error::{Error, Exit, Result};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{self, Scope};
use serde_json::{Value, json};

const NAMESPACED: &str = include_str!("../../deploy/runner-namespaced.yaml");
const CLUSTER: &str = include_str!("../../deploy/runner-cluster.yaml");
/// Where `-A` installs the runner unless `-n` says otherwise.
pub const CLUSTER_NAMESPACE: &str = "kubectl-canary";

/// The manifests for `namespace`, with the image, replicas and Prometheus URL filled in.
pub fn render(cluster_wide: bool, namespace: &str, args: &InstallRunnerArgs) -> Result<Vec<Value>> {
    let text = if cluster_wide { CLUSTER } else { NAMESPACED };
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let mut v: Value = serde::Deserialize::deserialize(doc)
            .map_err(|e| Error::Other(format!("shipped runner manifest: {e}")))?;
        if v.is_null() {
            continue;
        }
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        match kind.as_str() {
            "ClusterRole" => {}
            "ClusterRoleBinding" => {
                for s in v["subjects"].as_array_mut().into_iter().flatten() {
                    s["namespace"] = json!(namespace);
                }
            }
            _ => v["metadata"]["namespace"] = json!(namespace),
        }
        if kind == "Deployment" {
            v["spec"]["replicas"] = json!(args.replicas);
            let c = &mut v["spec"]["template"]["spec"]["containers"][0];
            c["image"] = json!(args.image);
            if let Some(url) = &args.prometheus_url {
                for e in c["env"].as_array_mut().into_iter().flatten() {
                    if e["name"] == "KUBECTL_CANARY_PROMETHEUS_URL" {
                        e["value"] = json!(url);
                    }
                }
            }
        }
        out.push(v);
    }
    Ok(out)
}

async fn apply(client: &kube::Client, v: &Value) -> Result<String> {
    let obj: DynamicObject = serde_json::from_value(v.clone())
        .map_err(|e| Error::Other(format!("runner manifest: {e}")))?;
    let tm = obj
        .types
        .clone()
        .ok_or_else(|| Error::Other("runner manifest without apiVersion/kind".into()))?;
    let gvk = GroupVersionKind::try_from(&tm).map_err(|e| Error::Other(e.to_string()))?;
    let (ar, caps) = discovery::pinned_kind(client, &gvk).await?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<DynamicObject> = match (caps.scope, &obj.metadata.namespace) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(
        &name,
        &PatchParams::apply("kubectl-canary").force(),
        &Patch::Apply(&obj),
    )
    .await?;
    Ok(format!("{}/{name}", tm.kind.to_lowercase()))
}

pub async fn run(g: &GlobalArgs, args: &InstallRunnerArgs) -> Result<Exit> {
    let cluster_wide = g.all_namespaces;
    let namespace = match (&g.namespace, cluster_wide, args.dry_run) {
        (Some(ns), _, _) => ns.clone(),
        (None, true, _) => CLUSTER_NAMESPACE.to_string(),
        (None, false, true) => "default".to_string(),
        (None, false, false) => cluster::connect(&g.connection()).await?.namespace,
    };
    let objects = render(cluster_wide, &namespace, args)?;
    if args.dry_run {
        match g.output {
            OutputFormat::Json => {
                let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
                crate::output::structured(g.output, &list)?;
            }
            _ => {
                let docs: Vec<String> = objects
                    .iter()
                    .map(|o| serde_yaml_ng::to_string(o).map_err(|e| Error::Output(e.to_string())))
                    .collect::<Result<_>>()?;
                print!("{}", docs.join("---\n"));
            }
        }
        return Ok(Exit::Ok);
    }
    let sess = cluster::connect(&g.connection()).await?;
    for o in &objects {
        let what = apply(&sess.client, o).await?;
        eprintln!("applied {what}");
    }
    println!(
        "runner installed in namespace {namespace}: {} replica(s) of {} drive {}",
        args.replicas,
        args.image,
        if cluster_wide {
            "the rollouts of all namespaces".to_string()
        } else {
            format!("the rollouts of namespace {namespace}")
        }
    );
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InstallRunnerArgs {
        InstallRunnerArgs {
            dry_run: true,
            image: "reg.example/kubectl-canary:9".into(),
            replicas: 2,
            prometheus_url: Some("http://prom:9090".into()),
        }
    }

    #[test]
    fn namespaced_manifests_are_namespaced_and_filled_in() {
        let objs = render(false, "shop", &args()).unwrap();
        let kinds: Vec<&str> = objs.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["ServiceAccount", "Role", "RoleBinding", "Deployment"]
        );
        assert!(objs.iter().all(|o| o["metadata"]["namespace"] == "shop"));
        let d = &objs[3];
        assert_eq!(d["spec"]["replicas"], 2);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "reg.example/kubectl-canary:9");
        assert_eq!(c["args"], json!(["run", "--all", "-n", "$(POD_NAMESPACE)"]));
        assert!(
            c["env"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["value"] == "http://prom:9090")
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }

    #[test]
    fn cluster_manifests_bind_the_service_account_of_their_namespace() {
        let objs = render(true, "ops", &args()).unwrap();
        let crb = objs
            .iter()
            .find(|o| o["kind"] == "ClusterRoleBinding")
            .unwrap();
        assert_eq!(crb["subjects"][0]["namespace"], "ops");
        assert!(crb["metadata"].get("namespace").is_none());
        let d = objs.iter().find(|o| o["kind"] == "Deployment").unwrap();
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["args"],
            json!(["run", "--all", "-A"])
        );
    }

    #[test]
    fn both_variants_grant_the_same_rules() {
        let rules = |all: bool| {
            render(all, "x", &args())
                .unwrap()
                .into_iter()
                .find(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
                .unwrap()["rules"]
                .clone()
        };
        assert_eq!(rules(false), rules(true));
    }
}
