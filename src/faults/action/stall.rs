//! `stall`: stop relaying in both directions for `ms` (± `jitter_ms`),
//! then go on as before.

use serde::Deserialize;

use super::{Params, Problem, check_ms};
use crate::faults::Trigger;

/// `{ do = "stall", ms = 1500, jitter_ms = 300 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stall {
    /// Milliseconds.
    pub ms: u64,
    /// Up to this many milliseconds more or less, uniformly.
    #[serde(default)]
    pub jitter_ms: u64,
}

impl Params for Stall {
    const NAME: &'static str = "stall";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        check_ms(self.ms, self.jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_an_hour_and_jitter_within_ms() {
        assert!(Stall { ms: 3_600_000, jitter_ms: 3_600_000 }.check(Trigger::Body).is_ok());
        assert!(Stall { ms: 3_600_001, jitter_ms: 0 }.check(Trigger::Body).is_err());
        let e = Stall { ms: 100, jitter_ms: 500 }.check(Trigger::Response).unwrap_err();
        assert!(e.message.contains("jitter_ms at most ms") && e.fix.contains("jitter_ms = 300"), "{e:?}");
    }
}
