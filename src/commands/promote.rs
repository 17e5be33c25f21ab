//! `kubectl canary promote`: stable takes the canary's pod template now, traffic back to stable, canary removed.

use crate::cli::{GlobalArgs, ReasonArgs};
use crate::core::rollout::Event;
use crate::error::{Exit, Result};

pub async fn run(g: &GlobalArgs, args: &ReasonArgs) -> Result<Exit> {
    super::rollback::act(g, args, Event::BeginPromote, "promoted by hand", false).await
}
