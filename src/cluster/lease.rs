//! Who drives a rollout: one coordination.k8s.io/v1 Lease per rollout, named like its state
//! ConfigMap (`<svc>-canary-rollout`) and labelled like it. A `run` holds it and renews it at
//! every interval; its duration is three intervals, so a second `run` takes over within about
//! three intervals of the holder's death. A Lease of its own (rather than a stamp in the state
//! ConfigMap) keeps renewals from racing the state's compare-and-swap writes.
//!
//! Expiry is `renewTime + leaseDurationSeconds`, both written and read on the API server's
//! clock (`clock::now`, each process measures its offset at connect): runners whose host
//! clocks disagree still agree on when a lease lapsed, to within about a second. Should they
//! overlap anyway, the state's CAS keeps a transition from being applied twice.

use super::clock;
use super::state::{MANAGED_BY, SERVICE_LABEL, configmap_name};
use crate::core::attendance::LeaseFacts;
use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::time::Duration;

/// The lease lasts this many renewal periods (intervals).
pub const INTERVALS_PER_LEASE: u32 = 3;
/// Shortest lease, whatever the interval (a renewal is one API round trip).
const MIN_LEASE: Duration = Duration::from_secs(3);

/// The lease duration for a rollout evaluated every `interval`.
pub fn duration_for(interval: Duration) -> Duration {
    (interval * INTERVALS_PER_LEASE).max(MIN_LEASE)
}

/// This process as a lease holder: `actor@host:pid.nonce`. The nonce tells a restarted
/// process (a container's pid 1 again) from the one that died.
pub fn identity(actor: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    let nonce: u16 = rand::random();
    format!("{actor}@{host}:{}.{nonce:04x}", std::process::id())
}

fn micro(t: DateTime<Utc>) -> Option<MicroTime> {
    k8s_openapi::jiff::Timestamp::from_microsecond(t.timestamp_micros())
        .ok()
        .map(MicroTime)
}

fn chrono_of(t: &MicroTime) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(t.0.as_microsecond())
}

/// What a Lease object says about its holder.
pub fn facts_of(lease: &Lease) -> LeaseFacts {
    let spec = lease.spec.as_ref();
    LeaseFacts {
        holder: spec
            .and_then(|s| s.holder_identity.clone())
            .filter(|h| !h.is_empty()),
        renewed_at: spec.and_then(|s| s.renew_time.as_ref()).and_then(chrono_of),
        duration: spec
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs),
    }
}

/// A lease this process holds.
#[derive(Debug, Clone)]
pub struct Claim {
    lease: Box<Lease>,
    pub renewed_at: DateTime<Utc>,
    pub duration: Duration,
}

impl Claim {
    /// True while it is safe to act: one renewal period before others may take over, so a
    /// holder whose renewals fail stops before anybody else starts.
    pub fn is_safe(&self, now: DateTime<Utc>) -> bool {
        let margin = self.duration / INTERVALS_PER_LEASE;
        chrono::Duration::from_std(self.duration.saturating_sub(margin))
            .is_ok_and(|d| self.renewed_at + d > now)
    }
}

/// The outcome of trying to take a rollout's lease.
#[derive(Debug)]
pub enum Acquire {
    /// Ours now; `before` is what the lease said until then (for the unattended check).
    Held { claim: Claim, before: LeaseFacts },
    /// Somebody else holds it.
    Busy(LeaseFacts),
}

/// The lease of one rollout, as seen by one holder identity.
#[derive(Clone)]
pub struct RolloutLease {
    api: Api<Lease>,
    namespace: String,
    service: String,
    pub identity: String,
}

impl RolloutLease {
    pub fn new(client: &Client, namespace: &str, service: &str, identity: &str) -> Self {
        RolloutLease {
            api: Api::namespaced(client.clone(), namespace),
            namespace: namespace.into(),
            service: service.into(),
            identity: identity.into(),
        }
    }

    fn name(&self) -> String {
        configmap_name(&self.service)
    }

    pub async fn facts(&self) -> Result<LeaseFacts> {
        Ok(self
            .api
            .get_opt(&self.name())
            .await?
            .map(|l| facts_of(&l))
            .unwrap_or_default())
    }

    fn stamped(&self, mut lease: Lease, duration: Duration, now: DateTime<Utc>) -> Lease {
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let changed = spec.holder_identity.as_deref() != Some(self.identity.as_str());
        if changed {
            spec.acquire_time = micro(now);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.renew_time = micro(now);
        spec.lease_duration_seconds = Some(duration.as_secs().max(1).min(i32::MAX as u64) as i32);
        lease
    }

    fn conflict(&self) -> Error {
        Error::Conflict {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
        }
    }

    /// Takes the lease if nobody holds it, its holder's claim lapsed, or `take_over`.
    pub async fn acquire(&self, duration: Duration, take_over: bool) -> Result<Acquire> {
        let now = clock::now();
        let pp = PostParams {
            field_manager: Some("kubectl-canary".into()),
            ..Default::default()
        };
        let (before, result) = match self.api.get_opt(&self.name()).await? {
            None => {
                let labels = BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (SERVICE_LABEL.to_string(), self.service.clone()),
                ]);
                let fresh = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                let lease = self.stamped(fresh, duration, now);
                (LeaseFacts::default(), self.api.create(&pp, &lease).await)
            }
            Some(existing) => {
                let before = facts_of(&existing);
                if let Some(h) = before.live_holder(now)
                    && h != self.identity
                    && !take_over
                {
                    return Ok(Acquire::Busy(before));
                }
                let lease = self.stamped(existing, duration, now);
                (before, self.api.replace(&self.name(), &pp, &lease).await)
            }
        };
        match result {
            Ok(lease) => Ok(Acquire::Held {
                claim: Claim {
                    lease: Box::new(lease),
                    renewed_at: now,
                    duration,
                },
                before,
            }),
            // Somebody else created or renewed it between our read and write: theirs.
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Acquire::Busy(self.facts().await?)),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews `claim`. Ok(false): somebody else holds the lease now (a takeover).
    pub async fn renew(&self, claim: &mut Claim) -> Result<bool> {
        let now = clock::now();
        let lease = self.stamped((*claim.lease).clone(), claim.duration, now);
        let pp = PostParams {
            field_manager: Some("kubectl-canary".into()),
            ..Default::default()
        };
        match self.api.replace(&self.name(), &pp, &lease).await {
            Ok(l) => {
                *claim.lease = l;
                claim.renewed_at = now;
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 404 => {
                match self.api.get_opt(&self.name()).await? {
                    Some(l) if facts_of(&l).holder.as_deref() == Some(self.identity.as_str()) => {
                        // Still ours (an unrelated write, e.g. a label): renew on top of it.
                        *claim.lease = l;
                        Err(self.conflict())
                    }
                    _ => Ok(false),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the lease up so the next runner need not wait for it to lapse (best effort).
    pub async fn release(&self, claim: Claim) {
        let mut lease = *claim.lease;
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.renew_time = micro(clock::now());
        }
        let _ = self
            .api
            .replace(&self.name(), &PostParams::default(), &lease)
            .await;
    }
}

/// Label of the presence Leases of `run --all` runners.
pub const RUNNER_LABEL: &str = "kubectl-canary.io/runner";

/// A `run --all` runner's presence: a Lease of its own in its namespace, so runners that
/// share a scope can count each other (even one that holds no rollout yet) and spread the
/// rollouts evenly.
pub struct Presence {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Presence {
    pub fn new(client: &Client, namespace: &str, identity: &str) -> Self {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(identity.as_bytes()));
        Presence {
            api: Api::namespaced(client.clone(), namespace),
            name: format!("kubectl-canary-runner-{}", &digest[..12]),
            identity: identity.into(),
        }
    }

    /// Renews this runner's presence and counts the live runners (this one included).
    pub async fn beat(&self, duration: Duration) -> Result<usize> {
        let now = clock::now();
        let pp = PostParams {
            field_manager: Some("kubectl-canary".into()),
            ..Default::default()
        };
        let spec = LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            renew_time: micro(now),
            lease_duration_seconds: Some(duration.as_secs().clamp(1, i32::MAX as u64) as i32),
            ..Default::default()
        };
        match self.api.get_opt(&self.name).await? {
            Some(mut l) => {
                l.spec = Some(spec);
                self.api.replace(&self.name, &pp, &l).await?;
            }
            None => {
                let labels = BTreeMap::from([
                    (MANAGED_BY.0.to_string(), MANAGED_BY.1.to_string()),
                    (RUNNER_LABEL.to_string(), "true".to_string()),
                ]);
                let l = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        labels: Some(labels),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                self.api.create(&pp, &l).await?;
            }
        }
        // By owner, then by either name of the runner label (runners of an earlier version
        // carry the old one).
        let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
        Ok(self
            .api
            .list(&lp)
            .await?
            .iter()
            .filter(|l| {
                l.metadata
                    .labels
                    .as_ref()
                    .and_then(|m| super::state::ours(m, RUNNER_LABEL))
                    .is_some_and(|v| v == "true")
            })
            .filter(|l| facts_of(l).live_holder(now).is_some())
            .count()
            .max(1))
    }

    /// Marks this runner gone (best effort).
    pub async fn leave(&self) {
        if let Ok(Some(mut l)) = self.api.get_opt(&self.name).await {
            if let Some(s) = l.spec.as_mut() {
                s.holder_identity = None;
            }
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &l)
                .await;
        }
    }
}

/// Every rollout lease of a namespace (or all with None), by (namespace, service): one call.
pub async fn list(
    client: &Client,
    namespace: Option<&str>,
) -> Result<BTreeMap<(String, String), LeaseFacts>> {
    let api: Api<Lease> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let lp = ListParams::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));
    let mut out = BTreeMap::new();
    for l in api.list(&lp).await? {
        let service = l
            .metadata
            .labels
            .as_ref()
            .and_then(|m| super::state::ours(m, SERVICE_LABEL))
            .cloned();
        if let (Some(ns), Some(svc)) = (l.metadata.namespace.clone(), service) {
            out.insert((ns, svc), facts_of(&l));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_is_three_intervals_with_a_floor() {
        assert_eq!(
            duration_for(Duration::from_secs(30)),
            Duration::from_secs(90)
        );
        assert_eq!(duration_for(Duration::from_millis(200)), MIN_LEASE);
    }

    #[test]
    fn a_claim_is_unsafe_one_period_before_it_lapses() {
        let t0 = Utc::now();
        let c = Claim {
            lease: Box::default(),
            renewed_at: t0,
            duration: Duration::from_secs(30),
        };
        assert!(c.is_safe(t0 + chrono::Duration::seconds(19)));
        assert!(!c.is_safe(t0 + chrono::Duration::seconds(20)));
    }

    #[test]
    fn micro_time_round_trips() {
        let t = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(chrono_of(&micro(t).unwrap()), Some(t));
    }

    #[test]
    fn identities_are_unique_per_process_start() {
        let (a, b) = (identity("alice"), identity("alice"));
        assert!(a.starts_with("alice@"), "{a}");
        assert!(a.contains(&format!(":{}.", std::process::id())), "{a}");
        // Two nonces collide one time in 65536; that would be a flaky test, so compare prefixes.
        assert_eq!(a.rsplit_once('.').unwrap().0, b.rsplit_once('.').unwrap().0);
    }
}
