//! `disconnect`: lost carrier. The session ends: `how` for the named
//! `side`, an orderly close (FIN) for the other (`both`: both get `how`).

use serde::Deserialize;

use super::{Params, Problem, Side};
use crate::faults::Trigger;

/// How a connection is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum How {
    /// Abortive close: the peer sees a reset.
    #[default]
    Rst,
    /// Orderly close: the peer sees EOF.
    Fin,
    /// Stop relaying, keep the socket open: the peer sees nothing.
    Silent,
}

/// `{ do = "disconnect", side = "both", how = "rst" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Disconnect {
    /// Who sees `how`; the other side sees an orderly close (`both`: both see `how`).
    #[serde(default)]
    pub side: Side,
    /// rst | fin | silent.
    #[serde(default)]
    pub how: How,
}

impl Params for Disconnect {
    const NAME: &'static str = "disconnect";

    /// Anywhere: at accept only the client exists, and is cut.
    fn check(&self, _: Trigger) -> Result<(), Problem> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Profile;

    #[test]
    fn defaults_to_a_reset_both_ways_and_works_anywhere() {
        for t in Trigger::ALL {
            assert_eq!(Disconnect::default().check(t), Ok(()));
        }
        let p = Profile::from_toml(
            "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"disconnect\", how = \"silent\" }]\n",
            "t",
            "t",
        )
        .expect("valid");
        assert_eq!(
            p.rules[0].actions[0].action,
            super::super::Action::Disconnect(Disconnect { side: Side::Both, how: How::Silent })
        );
    }
}
