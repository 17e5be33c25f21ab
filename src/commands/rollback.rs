//! `kubectl canary rollback`: canary weight 0 first, then the canary scaled to 0 (or deleted).
//! Also the shared path of promote, abort, pause and resume: a human's decision, recorded
//! with who and why.

use crate::cli::{GlobalArgs, ReasonArgs, RollbackArgs};
use crate::cluster::{self, driver, notify};
use crate::core::rollout::Event;
use crate::error::{Exit, Result};
use crate::output;

pub(crate) async fn act(
    g: &GlobalArgs,
    args: &ReasonArgs,
    event: Event,
    default_reason: &str,
    delete: bool,
) -> Result<Exit> {
    let sess = cluster::connect(&g.connection()).await?;
    let mut l = driver::load(&sess, &args.service.service).await?;
    if delete {
        l.record_mut().delete_on_rollback = true;
    }
    let reason = args
        .reason
        .clone()
        .unwrap_or_else(|| default_reason.to_string());
    let ts = driver::manual(&mut l, event, &sess.actor, reason, true).await?;
    notify::send_and_warn(&sess.client, l.record(), &ts).await;
    if !output::structured(g.output, &ts)? {
        for t in &ts {
            println!("{}", super::step::transition_line(t));
        }
        let r = l.rollout();
        println!(
            "{}/{}: {} ({})",
            l.ns(),
            l.target.service,
            r.phase,
            weight_words(r)
        );
    }
    Ok(driver::phase_exit(l.rollout().phase))
}

pub async fn run(g: &GlobalArgs, args: &RollbackArgs) -> Result<Exit> {
    act(
        g,
        &args.inner,
        Event::BeginRollback,
        "rolled back by hand",
        args.delete,
    )
    .await
}

/// "5% canary", or for a promoted rollout "new version on stable".
pub fn weight_words(r: &crate::core::rollout::Rollout) -> String {
    if r.phase == crate::core::rollout::Phase::Promoted {
        "new version on stable, all traffic".into()
    } else {
        format!("{}% canary", r.weight)
    }
}
