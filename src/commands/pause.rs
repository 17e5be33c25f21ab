//! `kubectl canary pause`: hold the rollout at its current weight until resumed.

use crate::cli::{GlobalArgs, ReasonArgs};
use crate::core::rollout::Event;
use crate::error::{Exit, Result};

pub async fn run(g: &GlobalArgs, args: &ReasonArgs) -> Result<Exit> {
    super::rollback::act(g, args, Event::Pause, "paused by hand", false).await
}
