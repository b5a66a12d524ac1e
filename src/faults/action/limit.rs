//! `limit`: from now on, relay at most `bytes` more bytes toward one side,
//! then close the session in order (FIN both ways): Toxiproxy's
//! `limit_data`. Only relayed bytes count; noise, `reply` answers and a
//! `truncate` terminator are the proxy's own and do not.

use serde::Deserialize;

use super::{Params, Problem, Side};
use crate::faults::Trigger;

/// `{ do = "limit", bytes = 1024, toward = "client" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    /// Bytes still relayed that way (0: close at the next byte).
    pub bytes: u64,
    /// client | server.
    #[serde(default = "default_toward")]
    pub toward: Side,
}

fn default_toward() -> Side {
    Side::Client
}

impl Params for Limit {
    const NAME: &'static str = "limit";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        if self.toward == Side::Both {
            return Err(Problem::new("a limit counts one direction", "toward = \"client\" or \"server\""));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anywhere_one_direction() {
        for t in Trigger::ALL {
            assert!(Limit { bytes: 0, toward: Side::Client }.check(t).is_ok());
            assert!(Limit { bytes: 10, toward: Side::Server }.check(t).is_ok());
            assert!(Limit { bytes: 10, toward: Side::Both }.check(t).is_err());
        }
    }
}
