//! Where notifications go, as `start --notify` gives it and the rollout state stores it:
//! the format and the Secret keys that hold the URL and token, never the credentials.
//! Sending is [`super::notify`]'s; the state ([`super::state`]) only stores these.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `{"namespace", "service", "event", "from", "to", "step", "weight", "reason", …}`.
    Json,
    /// Slack incoming webhook: `{"text": "…"}`.
    Slack,
}

/// A key of a Secret in the rollout's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "secret {}/{}", self.name, self.key)
    }
}

/// Where a sink's URL comes from: the URL of a Slack webhook is itself the credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UrlSource {
    Plain(String),
    Secret(SecretRef),
}

/// A webhook sink as stored in the rollout state (no credentials in it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sink {
    pub format: Format,
    pub url: UrlSource,
    /// Sent as `Authorization: Bearer …`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
}

impl std::fmt::Display for Sink {
    /// Names the sink without its credentials.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let format = match self.format {
            Format::Json => "json",
            Format::Slack => "slack",
        };
        match &self.url {
            UrlSource::Plain(u) => write!(f, "{format} sink {u}"),
            UrlSource::Secret(s) => write!(f, "{format} sink (url from {s})"),
        }
    }
}

fn secret_ref(flag: &str, key: &str, v: &str) -> Result<SecretRef> {
    match v.split_once('/') {
        Some((name, k)) if !name.is_empty() && !k.is_empty() && !k.contains('/') => Ok(SecretRef {
            name: name.into(),
            key: k.into(),
        }),
        _ => Err(Error::Usage(format!(
            "{flag}: {key}={v:?}: expected SECRET/KEY (a key of a Secret in the rollout's namespace)"
        ))),
    }
}

/// Parses one `--notify` value: `format=json|slack` plus `url=URL` or `url-secret=NAME/KEY`,
/// and optionally `token-secret=NAME/KEY`, comma-separated.
pub fn parse_sink(text: &str) -> Result<Sink> {
    let flag = format!("--notify {text:?}");
    let (mut format, mut url, mut token) = (None, None, None);
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| Error::Usage(format!("{flag}: {part:?} is not KEY=VALUE")))?;
        match k {
            "format" => {
                format = Some(match v {
                    "json" => Format::Json,
                    "slack" => Format::Slack,
                    _ => {
                        return Err(Error::Usage(format!("{flag}: format={v:?}: json or slack")));
                    }
                })
            }
            "url" => {
                let parsed = reqwest::Url::parse(v)
                    .map_err(|e| Error::Usage(format!("{flag}: url={v:?}: {e}")))?;
                if !matches!(parsed.scheme(), "http" | "https") {
                    return Err(Error::Usage(format!("{flag}: url={v:?}: http or https")));
                }
                url = Some(UrlSource::Plain(v.into()))
            }
            "url-secret" => url = Some(UrlSource::Secret(secret_ref(&flag, k, v)?)),
            "token-secret" => token = Some(secret_ref(&flag, k, v)?),
            _ => {
                return Err(Error::Usage(format!(
                    "{flag}: unknown key {k:?} (format, url, url-secret, token-secret)"
                )));
            }
        }
    }
    Ok(Sink {
        format: format.ok_or_else(|| Error::Usage(format!("{flag}: format=json|slack missing")))?,
        url: url.ok_or_else(|| Error::Usage(format!("{flag}: url=… or url-secret=… missing")))?,
        token,
    })
}
