//! Fault profiles and the pure fault engine.

pub mod profile;

pub use profile::Profile;
