//! Trigger points: where in a session a rule is considered. A profile
//! names one ([`Trigger`], its `when`); the relay reports one ([`Point`],
//! with the command it concerns). One enum says which points exist, so
//! the two cannot drift apart.

use std::fmt;

use serde::Deserialize;

use crate::codec::Command;

/// When a rule is considered: a rule's `when`, and the kind of every
/// [`Point`] the relay reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// A client connected, before the upstream connection is made.
    Accept,
    /// The server greeting arrived, before it is forwarded.
    Greeting,
    /// A complete client command, before it is forwarded.
    Command,
    /// The command was forwarded, before any response byte.
    Forwarded,
    /// A response's status line arrived, before it is forwarded.
    Status,
    /// Inside a multi-line response body, at a byte offset or fraction.
    Body,
    /// A response was fully delivered.
    Response,
    /// At a time since the session began.
    Timer,
}

impl Trigger {
    /// Every trigger point, in session order.
    pub const ALL: [Trigger; 8] = [
        Trigger::Accept,
        Trigger::Greeting,
        Trigger::Command,
        Trigger::Forwarded,
        Trigger::Status,
        Trigger::Body,
        Trigger::Response,
        Trigger::Timer,
    ];

    /// The name used in TOML and in fault events.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Accept => "accept",
            Trigger::Greeting => "greeting",
            Trigger::Command => "command",
            Trigger::Forwarded => "forwarded",
            Trigger::Status => "status",
            Trigger::Body => "body",
            Trigger::Response => "response",
            Trigger::Timer => "timer",
        }
    }

    /// Whether the point concerns a command (so a rule's `command` filter
    /// means something there).
    pub fn has_command(self) -> bool {
        matches!(self, Trigger::Command | Trigger::Forwarded | Trigger::Status | Trigger::Body | Trigger::Response)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A point the relay reports to [`Engine::decide`](super::Engine::decide),
/// with the command it concerns. Body cuts and timers have their own
/// calls (`plan_body`, `timer_due`): they are planned, not reported.
#[derive(Debug, Clone, Copy)]
pub enum Point<'a> {
    /// A client connected, before the upstream connection.
    Accept,
    /// The greeting arrived, before it is forwarded.
    Greeting,
    /// A complete command, before it is forwarded.
    Command(&'a Command),
    /// The command was forwarded, before any response byte.
    Forwarded(&'a Command),
    /// A status line answering `cmd` arrived, before it is forwarded.
    Status(&'a Command),
    /// A response to `cmd` was fully delivered.
    Response(&'a Command),
}

impl Point<'_> {
    /// The trigger point this is an instance of.
    pub fn trigger(&self) -> Trigger {
        match self {
            Point::Accept => Trigger::Accept,
            Point::Greeting => Trigger::Greeting,
            Point::Command(_) => Trigger::Command,
            Point::Forwarded(_) => Trigger::Forwarded,
            Point::Status(_) => Trigger::Status,
            Point::Response(_) => Trigger::Response,
        }
    }

    /// The command it concerns: there is one exactly where
    /// [`Trigger::has_command`] says so.
    pub fn command(&self) -> Option<&Command> {
        match self {
            Point::Command(c) | Point::Forwarded(c) | Point::Status(c) | Point::Response(c) => Some(c),
            Point::Accept | Point::Greeting => None,
        }
    }
}

/// A line that has begun and not ended, as far as it is known: the
/// relay asks [`Engine::wants_whole_line`](super::Engine::wants_whole_line)
/// whether to hold it.
#[derive(Debug, Clone, Copy)]
pub enum LineSoFar<'a> {
    /// The first bytes of a client command line (no LF yet).
    Command(&'a [u8]),
    /// The server's greeting.
    Greeting,
    /// A status line that will answer this command.
    Status(&'a Command),
}

impl LineSoFar<'_> {
    /// The trigger point the line will reach when it ends.
    pub fn trigger(&self) -> Trigger {
        match self {
            LineSoFar::Command(_) => Trigger::Command,
            LineSoFar::Greeting => Trigger::Greeting,
            LineSoFar::Status(_) => Trigger::Status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_has_a_command_exactly_where_its_trigger_says() {
        let cmd = Command::Noop;
        let points = [
            Point::Accept,
            Point::Greeting,
            Point::Command(&cmd),
            Point::Forwarded(&cmd),
            Point::Status(&cmd),
            Point::Response(&cmd),
        ];
        for p in points {
            assert_eq!(p.command().is_some(), p.trigger().has_command(), "{p:?}");
        }
    }

    #[test]
    fn names_round_trip_through_toml() {
        #[derive(Deserialize)]
        struct W {
            when: Trigger,
        }
        for t in Trigger::ALL {
            let w: W = toml::from_str(&format!("when = \"{t}\"")).expect("parses");
            assert_eq!(w.when, t);
        }
    }
}
