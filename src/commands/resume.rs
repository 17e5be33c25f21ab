//! `kubectl canary resume`: continue a paused rollout (its step timer restarts).

use crate::cli::{GlobalArgs, ReasonArgs};
use crate::core::rollout::Event;
use crate::error::{Exit, Result};

pub async fn run(g: &GlobalArgs, args: &ReasonArgs) -> Result<Exit> {
    super::rollback::act(g, args, Event::Resume, "resumed by hand", false).await
}
