//! A kube client built from kubectl's own flags (kubectl passes them through unchanged).

use crate::error::{Error, Result};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use std::time::Duration;

/// How to reach the cluster: kubectl's connection flags, as given.
#[derive(Debug, Clone, Default)]
pub struct Connection {
    pub kubeconfig: Option<std::path::PathBuf>,
    pub context: Option<String>,
    pub cluster: Option<String>,
    pub user: Option<String>,
    pub namespace: Option<String>,
    pub impersonate: Option<String>,
    pub impersonate_groups: Vec<String>,
    /// kubectl's `--request-timeout` text (see [`parse_request_timeout`]).
    pub request_timeout: Option<String>,
}

/// A connected client plus what the commands need to know about the session.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    /// `-n`, or the context's namespace.
    pub namespace: String,
    /// Who runs the command, recorded in history ("alice", "system:serviceaccount:ci:deployer").
    pub actor: String,
    /// Traffic providers discovered in this cluster, shared by the session's clones.
    pub routers: std::sync::Arc<crate::providers::Routers>,
    /// Watched Deployments, pods and ReplicaSets (`run --all`); None: read them when needed.
    pub watched: Option<std::sync::Arc<super::watch_cache::WatchCache>>,
}

/// Parses kubectl's `--request-timeout` ("0" = none, plain numbers are seconds).
pub fn parse_request_timeout(s: &str) -> Result<Option<Duration>> {
    let s = s.trim();
    if s == "0" || s.is_empty() {
        return Ok(None);
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Some(Duration::from_secs(secs)));
    }
    humantime::parse_duration(s)
        .map(Some)
        .map_err(|e| Error::Usage(format!("--request-timeout {s:?}: {e}")))
}

pub async fn config(g: &Connection) -> Result<Config> {
    let opts = KubeConfigOptions {
        context: g.context.clone(),
        cluster: g.cluster.clone(),
        user: g.user.clone(),
    };
    let explicit = g
        .kubeconfig
        .as_ref()
        .filter(|p| !p.as_os_str().is_empty() && !p.to_string_lossy().contains(':'));
    let mut cfg = match explicit {
        Some(path) => {
            let kc = Kubeconfig::read_from(path).map_err(|e| {
                Error::Cluster(format!("cannot read kubeconfig {}: {e}", path.display()))
            })?;
            Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| Error::Cluster(format!("kubeconfig {}: {e}", path.display())))?
        }
        // KUBECONFIG lists (a:b) and ~/.kube/config are merged by kube like kubectl does;
        // inside a pod (CI job) the service account is used.
        None => match Config::from_kubeconfig(&opts).await {
            Ok(c) => c,
            Err(kc_err) => Config::incluster().map_err(|_| {
                Error::Cluster(format!(
                    "no usable kubeconfig ({kc_err}); pass --kubeconfig or set KUBECONFIG"
                ))
            })?,
        },
    };
    if let Some(user) = &g.impersonate {
        cfg.auth_info.impersonate = Some(user.clone());
    }
    if !g.impersonate_groups.is_empty() {
        cfg.auth_info.impersonate_groups = Some(g.impersonate_groups.clone());
    }
    if let Some(t) = &g.request_timeout {
        let t = parse_request_timeout(t)?;
        cfg.read_timeout = t;
        cfg.write_timeout = t;
        if t.is_some() {
            cfg.connect_timeout = t;
        }
    }
    if let Some(ns) = &g.namespace {
        cfg.default_namespace = ns.clone();
    }
    Ok(cfg)
}

/// The kubeconfig user of the selected context (who runs the command, for history).
fn kubeconfig_user(g: &Connection) -> Option<String> {
    if let Some(u) = &g.user {
        return Some(u.clone());
    }
    let kc = match g
        .kubeconfig
        .as_ref()
        .filter(|p| !p.to_string_lossy().contains(':'))
    {
        Some(p) => Kubeconfig::read_from(p).ok()?,
        None => Kubeconfig::read().ok()?,
    };
    let ctx_name = g.context.clone().or(kc.current_context.clone())?;
    kc.contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
}

pub async fn connect(g: &Connection) -> Result<Session> {
    let cfg = config(g).await?;
    let namespace = cfg.default_namespace.clone();
    let actor = g
        .impersonate
        .clone()
        .or_else(|| std::env::var("KUBECTL_CANARY_ACTOR").ok())
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| kubeconfig_user(g))
        .unwrap_or_else(|| "unknown".into());
    let client = Client::try_from(cfg).map_err(|e| Error::Cluster(format!("kube client: {e}")))?;
    // Times this process stores or compares are on the API server's clock (see `clock`). When
    // the offset cannot be measured the host's clock is used; the requests that follow report
    // an unreachable cluster in their own words.
    let _ = super::clock::sync(&client).await;
    Ok(Session {
        client,
        namespace,
        actor,
        routers: Default::default(),
        watched: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_timeout_forms() {
        assert_eq!(parse_request_timeout("0").unwrap(), None);
        assert_eq!(
            parse_request_timeout("5").unwrap(),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            parse_request_timeout("1m").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert!(parse_request_timeout("soon").is_err());
    }
}
