//! The decision core: rollout state machine, decisions, schedule, statistics and the
//! evaluation step. No I/O here: adapters fill [`facts::Facts`] and persist
//! [`rollout::Rollout`].
#![forbid(unsafe_code)]

pub mod attendance;
pub mod decision;
pub mod evaluate;
pub mod facts;
pub mod plan;
pub mod retention;
pub mod rollout;
pub mod schedule;
pub mod stats;
