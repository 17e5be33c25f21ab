//! The cluster as a [`World`]: the core's effects as Kubernetes writes (routes through the
//! provider, Deployments, the state ConfigMap with compare-and-swap).

use super::clock;
use super::events;
use super::loaded::{DRAIN_TIMEOUT, Loaded, PROMOTE_TIMEOUT};
use super::workloads;
use crate::core::plan::{Effect, Observed, Settings};
use crate::core::rollout::{Fence, Rollout, Transition};
use crate::core::schedule::HeaderRoute;
use crate::error::{Error, Result};
use crate::lifecycle::World;
use chrono::{DateTime, Utc};
use std::time::Duration;

/// How long the canary may take to reach the capacity a weight needs.
pub const CAPACITY_TIMEOUT: Duration = Duration::from_secs(300);

pub struct ClusterWorld<'a> {
    pub l: &'a mut Loaded,
    /// Progress bars on stderr while waiting.
    pub show: bool,
    /// The policy's header routes, set up by [`Effect::Prepare`] (start).
    pub headers: Vec<HeaderRoute>,
    /// For `start --dry-run` only: its canary's pods never exist, so [`World::observe`]
    /// reports the canary's desired replicas as ready (what a real start waits for before
    /// routing). Never set on a world that writes to the cluster.
    pub assume_canary_ready: bool,
}

impl<'a> ClusterWorld<'a> {
    pub fn new(l: &'a mut Loaded, show: bool) -> Self {
        ClusterWorld {
            l,
            show,
            headers: Vec::new(),
            assume_canary_ready: false,
        }
    }

    pub fn with_headers(mut self, headers: Vec<HeaderRoute>) -> Self {
        self.headers = headers;
        self
    }

    /// See [`ClusterWorld::assume_canary_ready`]: for a dry run's copy-on-write view only.
    pub fn assuming_canary_ready(mut self, assume: bool) -> Self {
        self.assume_canary_ready = assume;
        self
    }

    async fn stable_template_changed(&self) -> Result<bool> {
        let l = &*self.l;
        let stable = workloads::deployments(&l.sess.client, l.ns())
            .get_opt(&l.target.stable_deployment)
            .await?;
        let Some(stable) = stable else {
            return Ok(false);
        };
        let rec = l.record();
        Ok(match &rec.previous_template {
            Some(before) => {
                let now = serde_json::to_value(&stable.spec.template).unwrap_or_default();
                &now != before
            }
            // Older records: the images tell.
            None => {
                !rec.previous_images.is_empty()
                    && workloads::container_images(&stable) != rec.previous_images
            }
        })
    }
}

pub fn settings_of(rec: &super::state::RolloutRecord) -> Settings {
    Settings {
        canary_replicas: rec.canary_replicas.max(1),
        max_canary_replicas: rec.max_canary_replicas,
        scale_down_delay: rec
            .scale_down_delay
            .unwrap_or(Settings::default().scale_down_delay),
        delete_on_rollback: rec.delete_on_rollback,
    }
}

impl World for ClusterWorld<'_> {
    fn now(&self) -> DateTime<Utc> {
        clock::now()
    }

    fn settings(&self) -> Settings {
        settings_of(self.l.record())
    }

    fn rollout(&self) -> &Rollout {
        self.l.rollout()
    }

    fn rollout_mut(&mut self) -> &mut Rollout {
        &mut self.l.record_mut().rollout
    }

    async fn reload(&mut self) -> Result<()> {
        let fresh = self.l.store.load().await?;
        if fresh.doc.current.is_none() {
            return Err(Error::Cluster(format!(
                "the rollout of {}/{} is gone from its state ConfigMap",
                self.l.ns(),
                self.l.target.service
            )));
        }
        self.l.stored = fresh;
        Ok(())
    }

    async fn save(&mut self) -> Result<()> {
        let l = &mut *self.l;
        l.store.save(&mut l.stored).await
    }

    async fn stored_fence(&mut self) -> Result<Fence> {
        let fresh = self.l.store.load().await?;
        let r = fresh.doc.current.as_ref().map(|r| &r.rollout);
        Ok(r.map(Rollout::fence).unwrap_or(Fence {
            started_at_ms: i64::MAX,
            generation: u64::MAX,
            rank: u8::MAX,
        }))
    }

    async fn announce(&mut self, t: &Transition) {
        let l = &*self.l;
        let uid = workloads::deployments(&l.sess.client, l.ns())
            .get_opt(&l.target.stable_deployment)
            .await
            .ok()
            .flatten()
            .and_then(|d| d.metadata.uid);
        events::emit(&l.sess.client, l.ns(), &l.target.stable_deployment, uid, t).await;
    }

    async fn observe(&mut self) -> Result<Observed> {
        let l = &*self.l;
        let api = workloads::deployments(&l.sess.client, l.ns());
        let (stable, canary) = futures::try_join!(
            api.get_opt(&l.target.stable_deployment),
            api.get_opt(&l.target.canary_deployment)
        )?;
        let canary_facts = match &canary {
            Some(c) => Some(workloads::deployment_pod_facts(&l.sess.client, l.ns(), c).await?),
            None => None,
        };
        let canary_desired = canary_facts.as_ref().map(|f| f.desired).unwrap_or(0);
        Ok(Observed {
            canary_exists: canary.is_some(),
            canary_desired,
            canary_ready: match &canary_facts {
                Some(_) if self.assume_canary_ready => canary_desired,
                Some(f) => f.ready,
                None => 0,
            },
            stable_replicas: stable
                .as_ref()
                .and_then(|d| d.spec.replicas)
                .unwrap_or(1)
                .max(0) as u32,
            stable_changed: self.stable_template_changed().await?,
        })
    }

    async fn route_weight(&mut self) -> Result<Option<u32>> {
        let l = &*self.l;
        Ok(l.router.read_weight(&l.sess.client, &l.target).await?)
    }

    async fn execute(&mut self, effect: &Effect, fence: Fence) -> Result<()> {
        let show = self.show;
        let l = &mut *self.l;
        let client = l.sess.client.clone();
        let ns = l.ns().to_string();
        l.target.fence = Some(fence);
        let canary = l.target.canary_deployment.clone();
        let stable = l.target.stable_deployment.clone();
        match effect {
            Effect::Prepare => {
                let api = workloads::deployments(&client, &ns);
                let c = api.get_opt(&canary).await?.ok_or_else(|| {
                    Error::Cluster(format!("canary Deployment {ns}/{canary} is gone"))
                })?;
                let s = workloads::get_stable(&client, &ns, &stable).await?;
                l.target.pods = Some(workloads::version_selectors(&client, &ns, &s, &c).await?);
                l.router.prepare(&client, &l.target, &self.headers).await?;
            }
            Effect::EnsureCanaryCapacity { replicas } => {
                let d = workloads::deployments(&client, &ns)
                    .get_opt(&canary)
                    .await?
                    .ok_or_else(|| {
                        Error::Cluster(format!("canary Deployment {ns}/{canary} is gone"))
                    })?;
                let desired = d.spec.replicas.unwrap_or(1).max(0) as u32;
                if desired < *replicas {
                    workloads::scale(&client, &ns, &canary, *replicas).await?;
                }
                let what = format!("canary {canary} ({replicas} replicas)");
                let waited = workloads::wait_rolled_out(
                    &client,
                    &ns,
                    &canary,
                    CAPACITY_TIMEOUT,
                    &what,
                    show,
                )
                .await?;
                waited.map_err(|why| {
                    Error::Cluster(format!(
                        "{why}; the weight was not raised (the canary needs {replicas} ready pods for it)"
                    ))
                })?;
            }
            Effect::SetWeight { weight } => {
                l.router.set_weight(&client, &l.target, *weight).await?;
            }
            Effect::RouteToStable => l.router.route_to_stable(&client, &l.target).await?,
            Effect::ScaleDownDelay(d) => {
                if show && !d.is_zero() {
                    eprintln!(
                        "waiting {} (scale-down delay) so every proxy stops sending to {canary}",
                        humantime::format_duration(*d)
                    );
                }
                tokio::time::sleep(*d).await;
            }
            Effect::ScaleCanaryToZero => workloads::scale(&client, &ns, &canary, 0).await?,
            Effect::RemoveCanary => {
                workloads::remove_canary(&client, &ns, &canary).await?;
            }
            Effect::WaitCanaryGone => {
                workloads::wait_pods_gone(&client, &ns, &canary, DRAIN_TIMEOUT).await?
            }
            Effect::PromoteStable => {
                let c = workloads::deployments(&client, &ns)
                    .get_opt(&canary)
                    .await?
                    .ok_or_else(|| {
                        Error::Cluster(format!("canary Deployment {ns}/{canary} is gone"))
                    })?;
                workloads::promote_stable(&client, &ns, &stable, &c, fence).await?;
            }
            Effect::RestoreStable => {
                let rec = l.record();
                workloads::restore_stable(
                    &client,
                    &ns,
                    &stable,
                    rec.previous_template.as_ref(),
                    &rec.previous_images,
                    fence,
                )
                .await?;
            }
            Effect::ClaimStable => workloads::claim_stable(&client, &ns, &stable, fence).await?,
            Effect::WaitStableRolledOut => {
                let waited = workloads::wait_rolled_out(
                    &client,
                    &ns,
                    &stable,
                    PROMOTE_TIMEOUT,
                    &format!("stable {stable}"),
                    show,
                )
                .await?;
                waited.map_err(|why| {
                    Error::Cluster(format!(
                        "{why}; the rollout stays {} — re-run the command to continue",
                        l.rollout().phase
                    ))
                })?;
            }
            Effect::RepinStable => {
                let api = workloads::deployments(&client, &ns);
                if let Some(c) = api.get_opt(&canary).await? {
                    let s = workloads::get_stable(&client, &ns, &stable).await?;
                    l.target.pods = Some(workloads::version_selectors(&client, &ns, &s, &c).await?);
                    l.router.prepare(&client, &l.target, &[]).await?;
                }
            }
            Effect::Cleanup => l.router.cleanup(&client, &l.target).await?,
            Effect::Commit { .. } => {
                return Err(Error::Other(
                    "internal: a commit reached the cluster executor".into(),
                ));
            }
        }
        Ok(())
    }
}
