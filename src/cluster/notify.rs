//! Notifications: every transition is POSTed to the rollout's webhook sinks, as generic JSON
//! or as a Slack incoming-webhook message. Sinks are configured at `start`
//! (`--notify format=slack,url-secret=hooks/slack-url`); the state records only where the
//! credentials are (Secret name and key, in the rollout's namespace), and they are read at
//! send time, never stored or printed. Delivery is retried a few times and then given up
//! with a warning: a failing sink never blocks or fails the rollout.

use crate::cluster::state::RolloutRecord;
use crate::core::rollout::Transition;
use crate::error::{Error, Result};
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use serde_json::{Value, json};
use std::time::Duration;

/// One request's timeout; with the retries a sink gets about 15 s per transition at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
const RETRIES: usize = 3;

pub use super::sink::{Format, SecretRef, Sink, UrlSource, parse_sink};

async fn read_secret(client: &Client, ns: &str, r: &SecretRef) -> Result<String> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(&r.name)
        .await?
        .ok_or_else(|| Error::Cluster(format!("{r}: no Secret {ns}/{}", r.name)))?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(&r.key))
        .map(|b| b.0.clone())
        .or_else(|| {
            secret
                .string_data
                .as_ref()
                .and_then(|d| d.get(&r.key))
                .map(|s| s.clone().into_bytes())
        })
        .ok_or_else(|| {
            Error::Cluster(format!("{r}: Secret {ns}/{} has no key {}", r.name, r.key))
        })?;
    String::from_utf8(bytes)
        .map(|s| s.trim().to_string())
        .map_err(|_| Error::Cluster(format!("{r}: not UTF-8 text")))
}

/// Checks at `start` that every referenced Secret key exists (without keeping its value).
pub async fn check(client: &Client, ns: &str, sinks: &[Sink]) -> Result<()> {
    for s in sinks {
        if let UrlSource::Secret(r) = &s.url {
            let url = read_secret(client, ns, r).await?;
            reqwest::Url::parse(&url)
                .map_err(|_| Error::Usage(format!("--notify: the value of {r} is not a URL")))?;
        }
        if let Some(r) = &s.token {
            read_secret(client, ns, r).await?;
        }
    }
    Ok(())
}

/// The generic JSON body of one transition.
pub fn json_payload(rec: &RolloutRecord, t: &Transition) -> Value {
    json!({
        "namespace": rec.namespace,
        "service": rec.service,
        "event": t.event.name(),
        "from": t.from,
        "to": t.to,
        "step": t.step + 1,
        "weight": t.weight,
        "reason": t.reason,
        "actor": t.actor,
        "at": t.at,
        "observations": t.observations,
        "images": rec.images,
    })
}

/// The Slack message of one transition.
pub fn slack_payload(rec: &RolloutRecord, t: &Transition) -> Value {
    use crate::core::rollout::Phase;
    let icon = match t.to {
        Phase::Promoted => ":white_check_mark:",
        Phase::RollingBack | Phase::RolledBack | Phase::Failed => ":rotating_light:",
        Phase::Aborting | Phase::Aborted | Phase::Paused => ":warning:",
        _ => ":arrow_forward:",
    };
    json!({
        "text": format!(
            "{icon} canary *{}/{}*: {} → {} at step {} ({}% canary) by {}: {}",
            rec.namespace, rec.service, t.from, t.to, t.step + 1, t.weight, t.actor, t.reason
        )
    })
}

fn http() -> &'static reqwest::Client {
    static C: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    C.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .build()
            .unwrap_or_default()
    })
}

async fn deliver(client: &Client, rec: &RolloutRecord, sink: &Sink, t: &Transition) -> Result<()> {
    let url = match &sink.url {
        UrlSource::Plain(u) => u.clone(),
        UrlSource::Secret(r) => read_secret(client, &rec.namespace, r).await?,
    };
    let token = match &sink.token {
        Some(r) => Some(read_secret(client, &rec.namespace, r).await?),
        None => None,
    };
    let body = match sink.format {
        Format::Json => json_payload(rec, t),
        Format::Slack => slack_payload(rec, t),
    };
    let post = || async {
        let mut rb = http().post(&url).json(&body);
        if let Some(tok) = &token {
            rb = rb.bearer_auth(tok);
        }
        let resp = rb.send().await.map_err(|e| e.without_url().to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("HTTP {}", resp.status()))
        }
    };
    post.retry(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_times(RETRIES),
    )
    .await
    .map_err(|e| Error::Other(format!("{sink}: {e} (after {RETRIES} retries)")))
}

/// Sends `transitions` to every sink of `rec`, in order per sink, sinks concurrently.
/// Failures are returned as warnings (never as an error).
pub async fn send(client: &Client, rec: &RolloutRecord, transitions: &[Transition]) -> Vec<String> {
    if rec.notify.is_empty() || transitions.is_empty() {
        return vec![];
    }
    let per_sink = rec.notify.iter().map(|sink| async move {
        let mut warnings = Vec::new();
        for t in transitions {
            if let Err(e) = deliver(client, rec, sink, t).await {
                warnings.push(format!("notification {}: {e}", t.event));
            }
        }
        warnings
    });
    futures::future::join_all(per_sink)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// [`send`], printing the warnings on stderr (the one-shot commands).
pub async fn send_and_warn(client: &Client, rec: &RolloutRecord, transitions: &[Transition]) {
    for w in send(client, rec, transitions).await {
        eprintln!("warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinks_parse_with_errors_naming_the_key() {
        let s = parse_sink("format=slack,url-secret=hooks/slack-url").unwrap();
        assert_eq!(s.format, Format::Slack);
        assert_eq!(
            s.url,
            UrlSource::Secret(SecretRef {
                name: "hooks".into(),
                key: "slack-url".into()
            })
        );
        let j =
            parse_sink("format=json, url=http://recv:8080/hook, token-secret=hooks/token").unwrap();
        assert_eq!(j.url, UrlSource::Plain("http://recv:8080/hook".into()));
        assert_eq!(j.token.unwrap().key, "token");
        for (bad, needle) in [
            ("format=teams,url=http://x", "format=\"teams\""),
            ("format=json", "url=… or url-secret=… missing"),
            ("url=http://x", "format=json|slack missing"),
            ("format=json,url=ftp://x", "http or https"),
            ("format=json,url-secret=hooks", "expected SECRET/KEY"),
            (
                "format=json,url=http://x,colour=red",
                "unknown key \"colour\"",
            ),
        ] {
            let e = parse_sink(bad).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("--notify"), "{bad}: {e}");
        }
    }

    #[test]
    fn display_never_shows_a_secret_url() {
        let s = parse_sink("format=slack,url-secret=hooks/slack-url").unwrap();
        assert_eq!(
            s.to_string(),
            "slack sink (url from secret hooks/slack-url)"
        );
    }
}
