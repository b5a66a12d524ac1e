//! `truncate`: a server that lies about the end of a message. At a `body`
//! cut the client gets a terminator that ends the body right there, and
//! the rest of the server's body is read and dropped up to its real end,
//! so the session goes on in step: the next answer the client reads is the
//! server's answer to its next command.
//!
//! The terminator closes the line the cut is in, so that the client sees
//! a well-formed multi-line response (RFC 1939: lines end in CRLF, the
//! body ends at a line that is exactly "."). Which bytes that takes
//! depends only on the part of the current line already delivered:
//!
//! | delivered of the current line | terminator sent | the client sees |
//! |---|---|---|
//! | nothing (a line start, or body offset 0) | `.\r\n` | the body ends after the last whole line |
//! | `.` (the first dot of a stuffed line) | `\r\n` | `.\r\n`: the body ends after the last whole line |
//! | ends with CR | `\n.\r\n` | that line, then the end |
//! | anything else | `\r\n.\r\n` | that line cut short, then the end |
//!
//! (The line `.` followed by CR is the server's own terminator less its
//! LF; the LF completes it.)

use serde::Deserialize;

use super::{Params, Problem};
use crate::faults::Trigger;

/// `{ do = "truncate" }`: no params; the rule's `offset` or `fraction`
/// says where.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Truncate {}

impl Params for Truncate {
    const NAME: &'static str = "truncate";

    fn check(&self, at: Trigger) -> Result<(), Problem> {
        if at != Trigger::Body {
            return Err(Problem::new(
                "truncate ends a multi-line body early, so it only happens inside one",
                "set when = \"body\" with an offset or fraction",
            ));
        }
        Ok(())
    }
}

/// Where the body delivered so far stands within its current line: all
/// that decides which terminator ends it cleanly (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BodyLine {
    /// At the start of a line (or of the body).
    #[default]
    Start,
    /// The line so far is `.`.
    Dot,
    /// The line so far is `.` CR.
    DotCr,
    /// The line so far ends with CR.
    Cr,
    /// Inside a line.
    Mid,
}

impl BodyLine {
    /// The state after `bytes` more of the body were delivered.
    pub fn after(self, bytes: &[u8]) -> BodyLine {
        // Only the bytes after the last LF matter.
        let (mut state, rest) = match bytes.iter().rposition(|&b| b == b'\n') {
            Some(i) => (BodyLine::Start, &bytes[i + 1..]),
            None => (self, bytes),
        };
        for &b in rest {
            state = match (state, b) {
                (BodyLine::Start, b'.') => BodyLine::Dot,
                (BodyLine::Dot, b'\r') => BodyLine::DotCr,
                (_, b'\r') => BodyLine::Cr,
                _ => BodyLine::Mid,
            };
        }
        state
    }

    /// The bytes that end the body here for the client.
    pub fn terminator(self) -> &'static [u8] {
        match self {
            BodyLine::Start => b".\r\n",
            BodyLine::Dot => b"\r\n",
            BodyLine::DotCr => b"\n",
            BodyLine::Cr => b"\n.\r\n",
            BodyLine::Mid => b"\r\n.\r\n",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the client holds once the body is cut after `at` bytes of
    /// `body`: the delivered part and the terminator.
    fn cut(body: &[u8], at: usize) -> Vec<u8> {
        // Delivered in two pieces, as reads may split it.
        let mid = at / 2;
        let state = BodyLine::Start.after(&body[..mid]).after(&body[mid..at]);
        let mut seen = body[..at].to_vec();
        seen.extend_from_slice(state.terminator());
        seen
    }

    #[test]
    fn the_terminator_closes_the_line_in_progress() {
        // "Hi" / ".x" (stuffed) / end: offsets as docs/PROFILES.md counts them.
        let body = b"Hi\r\n..x\r\n.\r\n";
        let cases: &[(usize, &[u8])] = &[
            (0, b".\r\n"),
            (1, b"H\r\n.\r\n"),
            (3, b"Hi\r\n.\r\n"),
            (4, b"Hi\r\n.\r\n"),
            (5, b"Hi\r\n.\r\n"),
            (6, b"Hi\r\n..\r\n.\r\n"),
            (8, b"Hi\r\n..x\r\n.\r\n"),
            (9, b"Hi\r\n..x\r\n.\r\n"),
            (10, b"Hi\r\n..x\r\n.\r\n"),
            (11, b"Hi\r\n..x\r\n.\r\n"),
        ];
        for (at, want) in cases {
            assert_eq!(cut(body, *at), *want, "cut at {at}: {:?}", String::from_utf8_lossy(&cut(body, *at)));
        }
    }

    #[test]
    fn what_the_client_gets_always_ends_at_its_first_terminator() {
        // Whatever the cut, the first end-of-body the client can find is
        // the last bytes it got: nothing is left over to be misread as the
        // answer to its next command.
        let body = b"a\r\n.\r\r\n..\r\n\r\n...\r\nb\n.c\r\n.\r\n";
        for at in 0..body.len() {
            let seen = cut(body, at);
            let first_end = (0..seen.len())
                .find(|&i| {
                    (i == 0 || seen[i - 1] == b'\n')
                        && (seen[i..].starts_with(b".\r\n") || seen[i..].starts_with(b".\n"))
                })
                .map(|i| i + if seen[i..].starts_with(b".\r\n") { 3 } else { 2 });
            assert_eq!(first_end, Some(seen.len()), "cut at {at}: {:?}", String::from_utf8_lossy(&seen));
        }
    }

    #[test]
    fn only_inside_a_body() {
        for t in Trigger::ALL {
            assert_eq!(Truncate {}.check(t).is_ok(), t == Trigger::Body, "{t}");
        }
    }
}
