//! `reply`: answer the command without forwarding it. Only at `command`:
//! the server never sees the command; `text` goes to the client with CRLF.

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// `{ do = "reply", text = "-ERR [IN-USE] maildrop locked" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    /// The answer, e.g. `-ERR [IN-USE] maildrop locked` (CRLF added).
    pub text: String,
}

impl Params for Reply {
    const NAME: &'static str = "reply";

    fn check(&self, at: Trigger) -> Result<(), Problem> {
        if at != Trigger::Command {
            return Err(Problem::new("reply acts on a command before it is forwarded", "set when = \"command\""));
        }
        if self.text.trim().is_empty() || self.text.contains(['\r', '\n']) {
            return Err(Problem::new(
                "reply text must be one non-empty line",
                "e.g. text = \"-ERR [IN-USE] maildrop locked\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_at_command_only() {
        let r = |t: &str| Reply { text: t.into() };
        assert!(r("-ERR no").check(Trigger::Command).is_ok());
        assert!(r("-ERR no").check(Trigger::Status).unwrap_err().message.contains("before it is forwarded"));
        for bad in ["", "  ", "-ERR a\r\n+OK b"] {
            assert!(r(bad).check(Trigger::Command).is_err(), "{bad:?}");
        }
    }
}
