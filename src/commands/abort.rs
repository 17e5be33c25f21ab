//! `kubectl canary abort`: stop the rollout — traffic back to stable, canary scaled down, marked aborted.

use crate::cli::{GlobalArgs, ReasonArgs};
use crate::core::rollout::Event;
use crate::error::{Exit, Result};

pub async fn run(g: &GlobalArgs, args: &ReasonArgs) -> Result<Exit> {
    super::rollback::act(g, args, Event::Abort, "aborted by hand", false).await
}
