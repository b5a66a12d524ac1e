//! `corrupt`: flip one random bit in each of the next `bytes` bytes relayed
//! in the direction of the trigger (toward the server at `accept`,
//! `command` and `forwarded`; toward the client elsewhere).

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// `{ do = "corrupt", bytes = 8 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrupt {
    /// How many bytes.
    pub bytes: usize,
}

impl Params for Corrupt {
    const NAME: &'static str = "corrupt";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        if self.bytes > 16 << 20 {
            return Err(Problem::new(format!("{} bytes is more than 16 MiB", self.bytes), "use at most 16777216"));
        }
        if self.bytes == 0 {
            return Err(Problem::new("bytes must be at least 1", "e.g. bytes = 16"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_byte_to_16_mib() {
        assert!(Corrupt { bytes: 1 }.check(Trigger::Body).is_ok());
        assert!(Corrupt { bytes: 16 << 20 }.check(Trigger::Body).is_ok());
        assert!(Corrupt { bytes: (16 << 20) + 1 }.check(Trigger::Body).is_err());
        assert!(Corrupt { bytes: 0 }.check(Trigger::Body).is_err());
    }
}
