//! A rollout loaded from the cluster: its session, state object, route and router. Shared by
//! the driver, which evaluates it, and the cluster world, which runs its plans.

use super::client::Session;
use super::state::{RolloutRecord, Store, Stored};
use crate::core::rollout::Rollout;
use crate::error::{Error, Result};
use crate::providers::{Router, Target};
use std::time::Duration;

/// How long rollback and promote wait for the canary's pods to go before removing our pins.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `promote` waits for the stable Deployment to roll out.
pub const PROMOTE_TIMEOUT: Duration = Duration::from_secs(600);

/// A rollout loaded from the cluster.
pub struct Loaded {
    pub sess: Session,
    pub target: Target,
    pub store: Store,
    pub stored: Stored,
    pub router: Router,
}

impl Loaded {
    pub fn record(&self) -> &RolloutRecord {
        self.stored
            .doc
            .current
            .as_ref()
            .expect("loaded rollouts have a current record")
    }

    pub fn record_mut(&mut self) -> &mut RolloutRecord {
        self.stored
            .doc
            .current
            .as_mut()
            .expect("loaded rollouts have a current record")
    }

    pub fn rollout(&self) -> &Rollout {
        &self.record().rollout
    }

    pub fn ns(&self) -> &str {
        &self.target.namespace
    }
}

pub async fn load(sess: &Session, service: &str) -> Result<Loaded> {
    let store = Store::new(&sess.client, &sess.namespace, service);
    let stored = store.load().await?;
    let Some(rec) = stored.doc.current.as_ref() else {
        return Err(Error::Cluster(format!(
            "no rollout of {}/{service}; start one with `kubectl canary start {service} --image CONTAINER=IMAGE -n {}`",
            sess.namespace, sess.namespace
        )));
    };
    let router = sess.routers.by_name(&sess.client, &rec.provider).await?;
    let target = rec.target();
    Ok(Loaded {
        sess: sess.clone(),
        target,
        store,
        stored,
        router,
    })
}
