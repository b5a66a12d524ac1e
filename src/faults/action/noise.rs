//! `noise`: random bytes injected toward one side, ahead of any further
//! relayed bytes that way.

use serde::Deserialize;

use super::{Params, Problem, Side};
use crate::faults::Trigger;

/// `{ do = "noise", bytes = 16, toward = "client" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Noise {
    /// How many bytes.
    #[serde(default = "default_bytes")]
    pub bytes: usize,
    /// client | server.
    #[serde(default = "default_toward")]
    pub toward: Side,
}

fn default_bytes() -> usize {
    16
}

fn default_toward() -> Side {
    Side::Client
}

impl Params for Noise {
    const NAME: &'static str = "noise";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        if self.bytes == 0 {
            return Err(Problem::new("bytes must be at least 1", "e.g. bytes = 16"));
        }
        if self.bytes > 65536 {
            return Err(Problem::new(
                format!("{} bytes of noise is more than 64 KiB", self.bytes),
                "use at most 65536",
            ));
        }
        if self.toward == Side::Both {
            return Err(Problem::new("noise goes toward one side", "toward = \"client\" or \"server\""));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_to_64_kib_toward_one_side() {
        let n = |bytes, toward| Noise { bytes, toward }.check(Trigger::Body);
        assert!(n(1, Side::Client).is_ok() && n(65536, Side::Server).is_ok());
        assert!(n(0, Side::Client).is_err());
        assert!(n(65537, Side::Client).is_err());
        assert_eq!(n(8, Side::Both).unwrap_err().message, "noise goes toward one side");
    }
}
