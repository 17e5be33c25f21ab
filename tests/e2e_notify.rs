//! Notifications against the real test environment and a local HTTP receiver: every
//! transition reaches a generic JSON sink (with a bearer token from a Secret) and a Slack
//! sink (URL from a Secret); a failing sink is retried, then given up without blocking the
//! rollout; no credential ends up in the state or the output.

mod e2e_common;

use e2e_common::*;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone)]
struct Received {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// An HTTP receiver on loopback: records every POST; paths under `/broken` answer 500.
async fn receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let mut data = Vec::new();
                let mut buf = [0u8; 8192];
                let (head, body) = loop {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => data.extend_from_slice(&buf[..n]),
                    }
                    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    let head = String::from_utf8_lossy(&data[..end]).to_string();
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if data.len() >= end + 4 + len {
                        break (head, data[end + 4..end + 4 + len].to_vec());
                    }
                };
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                let authorization = head.lines().find_map(|l| {
                    l.split_once(':')
                        .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.trim().to_string())
                });
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let status = if path.starts_with("/broken") {
                    "500 Internal Server Error"
                } else {
                    "200 OK"
                };
                sink.lock().unwrap().push(Received {
                    path,
                    authorization,
                    body,
                });
                let _ = sock
                    .write_all(
                        format!(
                            "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                        )
                        .as_bytes(),
                    )
                    .await;
                let _ = sock.shutdown().await;
            });
        }
    });
    (format!("http://{addr}"), got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transitions_reach_json_and_slack_sinks() {
    let p = Provider::Istio;
    let svc = "web";
    let (ns, _traffic) = setup("e2e-notify", svc, p, 100.0).await;
    let (base, got) = receiver().await;
    let slack_url = format!("{base}/slack/T000/B000/hook-s3cret-path");
    let token = "tok-s3cret-value";
    apply_value(
        &ns.client,
        &ns.name,
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "hooks"},
            "stringData": {"slack-url": slack_url, "token": token}
        }),
    )
    .await;
    let json_sink = format!("format=json,url={base}/json,token-secret=hooks/token");
    let broken_sink = format!("format=json,url={base}/broken");
    let out = start(
        &ns.name,
        svc,
        p,
        &[
            "--notify",
            &json_sink,
            "--notify",
            "format=slack,url-secret=hooks/slack-url",
            "--notify",
            &broken_sink,
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "start");

    // A typo in a sink fails before anything is created, naming the flag and key.
    let bad = kc_out(
        &ns.name,
        &[
            "start",
            "other",
            "--image",
            "app=x:1",
            "--notify",
            "format=slack,url-secret=hooks/missing",
        ],
    )
    .await;
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("has no key missing"),
        "names the missing key"
    );

    let run = kc(&ns.name, &["run", svc, "--metrics-window", "10s"])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    let stderr = String::from_utf8_lossy(&run.stderr).to_string();
    eprintln!("run:\n{stdout}{stderr}");
    assert_eq!(
        run.status.code(),
        Some(0),
        "promoted despite a failing sink"
    );

    let got = got.lock().unwrap().clone();
    let on = |prefix: &str| -> Vec<Received> {
        got.iter()
            .filter(|r| r.path.starts_with(prefix))
            .cloned()
            .collect()
    };
    let history = history_json(&ns.name, svc).await;
    let events: Vec<String> = history["current"]["rollout"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap().to_string())
        .collect();
    let json_events: Vec<String> = on("/json")
        .iter()
        .map(|r| r.body["event"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(json_events, events, "every transition, in order, once");
    for r in on("/json") {
        assert_eq!(
            r.authorization.as_deref(),
            Some(&*format!("Bearer {token}"))
        );
        assert_eq!(r.body["service"], svc);
        assert_eq!(r.body["namespace"], ns.name.as_str());
    }
    let slack = on("/slack/T000/B000/hook-s3cret-path");
    assert_eq!(
        slack.len(),
        events.len(),
        "one Slack message per transition"
    );
    assert!(
        slack.iter().all(|r| r.body["text"]
            .as_str()
            .is_some_and(|t| t.contains(&format!("{}/{svc}", ns.name)))),
        "{slack:?}"
    );
    assert!(
        slack.last().unwrap().body["text"]
            .as_str()
            .unwrap()
            .contains("Promoting → Promoted")
    );
    // The broken sink was retried (first try + 3 retries per transition) and then given up.
    let broken = on("/broken").len();
    assert!(broken >= 4 * events.len(), "retried: {broken} requests");
    assert!(
        stderr.contains(&format!("json sink {base}/broken"))
            || stdout.contains(&format!("json sink {base}/broken")),
        "the failure is reported, naming the sink"
    );

    // Credentials never stored or printed.
    let cm =
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .get(&format!("{svc}-canary-rollout"))
            .await
            .unwrap();
    let state = serde_json::to_string(&cm.data).unwrap();
    for secret in [token, "hook-s3cret-path"] {
        assert!(!state.contains(secret), "{secret} stored in the state");
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{secret} printed"
        );
        assert!(!String::from_utf8_lossy(&out.stdout).contains(secret));
    }
    assert!(state.contains("hooks"), "the reference is stored: {state}");
}
