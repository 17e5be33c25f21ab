//! A copy-on-write view of the cluster for `start --dry-run`: reads go to the API server,
//! writes are kept in memory and answered as if they were persisted. The providers' and
//! workloads' real code then runs unchanged, and what it would have written is diffed
//! against what exists, so the dry run cannot drift from the real `start`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

/// What a dry run would have written: object path → the object after (None: deleted).
#[derive(Default)]
pub struct Writes(Mutex<BTreeMap<String, Option<Value>>>);

/// One object the dry run would create, change or delete.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Change {
    /// `Kind namespace/name`.
    pub object: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                      "reason": reason, "message": message, "code": code.as_u16()});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
        .expect("valid response")
}

fn ok(code: StatusCode, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).unwrap_or_default()))
        .expect("valid response")
}

/// RFC 7386 JSON merge patch (also used for apply and strategic patches: close enough for
/// showing what would change).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

async fn body_json(req: Request<Body>) -> Value {
    use http_body_util::BodyExt;
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice(&bytes)
        .or_else(|_| serde_yaml_ng::from_slice(&bytes))
        .unwrap_or(Value::Null)
}

impl Writes {
    async fn current(&self, real: &Client, path: &str) -> Option<Value> {
        if let Some(v) = self.0.lock().expect("dry-run writes").get(path) {
            return v.clone();
        }
        fetch(real, path).await
    }

    fn store(&self, path: &str, v: Option<Value>) {
        self.0
            .lock()
            .expect("dry-run writes")
            .insert(path.to_string(), v);
    }

    async fn handle(&self, real: &Client, req: Request<Body>) -> Response<Body> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let stamp = |v: &mut Value| {
            if v.is_object() {
                v["metadata"]["resourceVersion"] = json!("dry-run");
            }
        };
        match method {
            Method::GET => {
                let written = self.0.lock().expect("dry-run writes").get(&path).cloned();
                match written {
                    Some(Some(v)) => ok(StatusCode::OK, &v),
                    Some(None) => status(StatusCode::NOT_FOUND, "NotFound", "deleted (dry run)"),
                    None => match real.send(req).await {
                        Ok(r) => r,
                        Err(e) => status(StatusCode::BAD_GATEWAY, "DryRun", &e.to_string()),
                    },
                }
            }
            Method::POST => {
                let mut v = body_json(req).await;
                let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
                stamp(&mut v);
                self.store(&format!("{path}/{name}"), Some(v.clone()));
                ok(StatusCode::CREATED, &v)
            }
            Method::PUT => {
                let mut v = body_json(req).await;
                stamp(&mut v);
                self.store(&path, Some(v.clone()));
                ok(StatusCode::OK, &v)
            }
            Method::PATCH => {
                let patch = body_json(req).await;
                let mut v = match self.current(real, &path).await {
                    Some(v) => v,
                    // Server-side apply creates what is missing.
                    None if content_type.contains("apply-patch") => json!({}),
                    None => return status(StatusCode::NOT_FOUND, "NotFound", "not found"),
                };
                if content_type.contains("json-patch") {
                    // JSON patches are not replayed; the object is shown unchanged.
                } else {
                    merge(&mut v, &patch);
                }
                stamp(&mut v);
                self.store(&path, Some(v.clone()));
                ok(StatusCode::OK, &v)
            }
            Method::DELETE => {
                self.store(&path, None);
                ok(
                    StatusCode::OK,
                    &json!({"kind": "Status", "status": "Success"}),
                )
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "DryRun",
                "not available in a dry run",
            ),
        }
    }
}

async fn fetch(real: &Client, path: &str) -> Option<Value> {
    let req = Request::builder()
        .method(Method::GET)
        .uri(path)
        .body(Vec::new())
        .ok()?;
    real.request::<Value>(req).await.ok()
}

/// A client whose writes land in the returned [`Writes`], not in the cluster.
pub fn client(real: Client) -> (Client, Arc<Writes>) {
    let writes = Arc::new(Writes::default());
    let ns = real.default_namespace().to_string();
    let w = writes.clone();
    let svc = tower::service_fn(move |req: Request<Body>| {
        let (w, real) = (w.clone(), real.clone());
        async move { Ok::<_, std::convert::Infallible>(w.handle(&real, req).await) }
    });
    (Client::new(svc, ns), writes)
}

/// Fields the API server owns: left out of the diff.
fn clean(mut v: Value) -> Value {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "uid",
            "creationTimestamp",
            "generation",
        ] {
            m.remove(k);
        }
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    v
}

impl Writes {
    /// Every object the dry run wrote, with what exists now.
    pub async fn changes(&self, real: &Client) -> Vec<Change> {
        let writes = self.0.lock().expect("dry-run writes").clone();
        let mut out = Vec::new();
        for (path, after) in writes {
            let before = fetch(real, &path).await.map(clean);
            let after = after.map(clean);
            if before == after {
                continue;
            }
            let shown = after.as_ref().or(before.as_ref());
            let kind = shown
                .and_then(|v| v["kind"].as_str())
                .unwrap_or("object")
                .to_string();
            let name = path.rsplit('/').next().unwrap_or("").to_string();
            let ns = path
                .split("/namespaces/")
                .nth(1)
                .and_then(|r| r.split('/').next())
                .unwrap_or("");
            out.push(Change {
                object: format!("{kind} {ns}/{name}"),
                before,
                after,
            });
        }
        out
    }
}

/// A unified diff of one change, as YAML.
pub fn diff(c: &Change) -> String {
    let yaml = |v: &Option<Value>| {
        v.as_ref()
            .map(|v| serde_yaml_ng::to_string(v).unwrap_or_default())
            .unwrap_or_default()
    };
    let (a, b) = (yaml(&c.before), yaml(&c.after));
    let what = match (&c.before, &c.after) {
        (None, Some(_)) => "create",
        (Some(_), None) => "delete",
        _ => "change",
    };
    similar::TextDiff::from_lines(&a, &b)
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{} (now)", c.object),
            &format!("{} ({what})", c.object),
        )
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut v, &json!({"b": {"c": null, "e": 4}, "f": [1]}));
        assert_eq!(v, json!({"a": 1, "b": {"d": 3, "e": 4}, "f": [1]}));
    }

    #[test]
    fn diff_shows_creations_and_changes() {
        let c = Change {
            object: "Service ns/web".into(),
            before: Some(json!({"spec": {"selector": {"app": "web"}}})),
            after: Some(json!({"spec": {"selector": {"app": "web", "pod-template-hash": "abc"}}})),
        };
        let d = diff(&c);
        assert!(d.contains("+    pod-template-hash: abc"), "{d}");
        assert!(d.contains("Service ns/web (change)"), "{d}");
    }
}
