//! `delay`: latency. From now on each response's status line is held `ms`
//! (± `jitter_ms`, drawn per response) before it goes to the client.

use serde::Deserialize;

use super::{Params, Problem, check_ms};
use crate::faults::Trigger;

/// `{ do = "delay", ms = 250, jitter_ms = 100 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delay {
    /// Milliseconds.
    pub ms: u64,
    /// Up to this many milliseconds more or less.
    #[serde(default)]
    pub jitter_ms: u64,
}

impl Params for Delay {
    const NAME: &'static str = "delay";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        check_ms(self.ms, self.jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_bounds_as_stall() {
        assert!(Delay { ms: 150, jitter_ms: 50 }.check(Trigger::Greeting).is_ok());
        assert!(Delay { ms: 4_000_000, jitter_ms: 0 }.check(Trigger::Command).is_err());
        assert!(Delay { ms: 10, jitter_ms: 11 }.check(Trigger::Command).is_err());
    }
}
