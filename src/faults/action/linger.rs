//! `linger`: from now on, a close (FIN) that reaches popfault on its way
//! toward one side is passed on `ms` later: Toxiproxy's `slow_close`.
//! Bytes before it go on as usual; only the close waits.

use serde::Deserialize;

use super::{Params, Problem, Side, check_ms};
use crate::faults::Trigger;

/// `{ do = "linger", ms = 500, toward = "client" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Linger {
    /// Milliseconds the close waits.
    pub ms: u64,
    /// client (the server's close, held) | server (the client's).
    #[serde(default = "default_toward")]
    pub toward: Side,
}

fn default_toward() -> Side {
    Side::Client
}

impl Params for Linger {
    const NAME: &'static str = "linger";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        if self.toward == Side::Both {
            return Err(Problem::new("a close goes one way", "toward = \"client\" or \"server\""));
        }
        check_ms(self.ms, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anywhere_one_way_at_most_an_hour() {
        for t in Trigger::ALL {
            assert!(Linger { ms: 500, toward: Side::Client }.check(t).is_ok());
            assert!(Linger { ms: 500, toward: Side::Both }.check(t).is_err());
            assert!(Linger { ms: 3_600_001, toward: Side::Server }.check(t).is_err());
        }
    }
}
