//! Fault profiles and the pure fault engine.

pub mod builtin;
pub mod engine;
pub mod profile;

pub use engine::{BodyCut, Decision, Engine, Facts, LineSoFar, Point};
pub use profile::Profile;
pub use profile::{Action, How, ProfileError, RefuseHow, Side, When};

#[cfg(test)]
mod tests;
