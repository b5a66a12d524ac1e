//! `swallow`: drop the command, never forwarded and never answered. Only
//! at `command`.

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// `{ do = "swallow" }`: no params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Swallow {}

impl Params for Swallow {
    const NAME: &'static str = "swallow";

    fn check(&self, at: Trigger) -> Result<(), Problem> {
        if at != Trigger::Command {
            return Err(Problem::new("swallow acts on a command before it is forwarded", "set when = \"command\""));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_at_command() {
        for t in Trigger::ALL {
            assert_eq!(Swallow {}.check(t).is_ok(), t == Trigger::Command, "{t}");
        }
    }
}
