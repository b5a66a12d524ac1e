//! `refuse`: the server is down. Only at `accept`, before popfault dials
//! the server, which never sees the connection.

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// How a down server refuses a client at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RefuseHow {
    /// Reset the connection.
    #[default]
    Rst,
    /// Close it (EOF) without a word.
    Close,
    /// Accept and never greet.
    Hang,
    /// Greet with `-ERR` (the `text`) and close.
    Err,
}

/// `{ do = "refuse", how = "err", text = "-ERR [SYS/TEMP] down" }`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refuse {
    /// rst | close | hang | err.
    #[serde(default)]
    pub how: RefuseHow,
    /// The greeting for `how = "err"`.
    #[serde(default = "default_text")]
    pub text: String,
}

fn default_text() -> String {
    "-ERR [SYS/TEMP] server unavailable".into()
}

impl Default for Refuse {
    fn default() -> Refuse {
        Refuse { how: RefuseHow::default(), text: default_text() }
    }
}

impl Params for Refuse {
    const NAME: &'static str = "refuse";

    fn check(&self, at: Trigger) -> Result<(), Problem> {
        if at != Trigger::Accept {
            return Err(Problem::new(
                "refuse only happens at accept",
                "set when = \"accept\", or use do = \"disconnect\"",
            ));
        }
        let err_line =
            !self.text.contains(['\r', '\n']) && self.text.get(..4).is_some_and(|t| t.eq_ignore_ascii_case("-ERR"));
        if self.how == RefuseHow::Err && !err_line {
            return Err(Problem::new(
                "an -ERR greeting must be one line starting with -ERR",
                "e.g. text = \"-ERR [SYS/TEMP] server down\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_at_accept_with_a_one_line_err_greeting() {
        assert!(Refuse::default().check(Trigger::Accept).is_ok());
        assert!(Refuse::default().check(Trigger::Greeting).is_err());
        let err = |text: &str| Refuse { how: RefuseHow::Err, text: text.into() }.check(Trigger::Accept);
        assert!(err("-ERR [SYS/TEMP] down").is_ok());
        assert!(err("-err down").is_ok());
        assert!(err("+OK hello").is_err());
        assert!(err("-ERR down\r\n+OK ready").is_err());
    }
}
