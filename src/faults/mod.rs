//! Fault profiles and the pure fault engine.
//!
//! - `trigger`: where a rule is considered (`Trigger`, and the `Point`s
//!   the relay reports);
//! - `action/`: what a rule does, one file per action (`Action`, `Step`);
//! - `profile`: TOML → validated `Profile` of `Rule`s; `error`: located
//!   errors;
//! - `engine`: per-session decisions; `builtin`: the shipped profiles.

pub mod action;
pub mod builtin;
pub mod engine;
mod error;
pub mod profile;
pub mod trigger;

pub use action::{
    Action, BodyLine, Corrupt, Delay, Disconnect, How, Limit, Linger, Noise, Refuse, RefuseHow, Reply, Side, Stall,
    Step, Swallow, Throttle, Truncate,
};
pub use engine::{BodyCut, Decision, Engine, Facts};
pub use profile::{Profile, ProfileError};
pub use trigger::{LineSoFar, Point, Trigger};

#[cfg(test)]
mod tests;
