//! `throttle`: a line speed in bits per second, both directions, from now
//! on (bytes go out in slices of about 50 ms worth).

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// `{ do = "throttle", bps = 28800 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Bits per second (14400, 28800, 56000…).
    pub bps: u64,
}

impl Params for Throttle {
    const NAME: &'static str = "throttle";

    fn check(&self, _: Trigger) -> Result<(), Problem> {
        if self.bps < 300 {
            return Err(Problem::new(
                format!("{} bit/s is too slow to be useful", self.bps),
                "use at least 300 (e.g. 28800)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_300_bits_per_second() {
        assert!(Throttle { bps: 300 }.check(Trigger::Greeting).is_ok());
        let e = Throttle { bps: 28 }.check(Trigger::Greeting).unwrap_err();
        assert!(e.message.contains("28 bit/s") && e.fix.contains("28800"), "{e:?}");
    }
}
