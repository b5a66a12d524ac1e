//! The server → client direction of [`Pop3Codec`]: status lines, attributed
//! to the pending commands, and multi-line bodies followed to their end.

use super::{MAX_STATUS_LINE, Pending, Pop3Codec, ServerEvent, Step, is_tls_start};
use crate::codec::command::Command;
use crate::codec::status::Status;

/// Where the server → client stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyPos {
    /// At the start of a body line.
    LineStart,
    /// Saw "." at the start of a line.
    Dot,
    /// Saw ".\r" at the start of a line.
    DotCr,
    /// Inside a line.
    InLine,
}

#[derive(Debug, Clone)]
pub(super) enum ServerMode {
    /// Expecting a status line (or greeting / continuation).
    Lines,
    /// Inside a multi-line body.
    Body { offset: u64, pos: BodyPos },
    /// Relaying the rest of an over-long line; `then_body` is the mode that
    /// follows it.
    Overlong { then_body: bool },
}
impl Pop3Codec {
    /// The next server → client event in `buf`. [`Step::NEED_MORE`] means
    /// an incomplete status line: keep it, or relay it now with
    /// [`pass_server`](Pop3Codec::pass_server).
    pub fn decode_server(&mut self, buf: &[u8]) -> Step<ServerEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
        }
        if !self.greeted && !self.server_line_started() && is_tls_start(buf) {
            // A TLS server never speaks first, but a stream that does is
            // not POP3 either way.
            self.opaque = true;
        }
        if self.opaque {
            return Step::of(buf.len(), ServerEvent::Opaque);
        }
        if self.untracked > 0 && matches!(self.server, ServerMode::Lines) && self.pending.is_empty() {
            // Lost track of a pipeline deeper than MAX_PENDING: relay the
            // rest untouched rather than guess which answer is whose.
            return Step::of(buf.len(), ServerEvent::Untracked);
        }
        match self.server.clone() {
            ServerMode::Body { offset, pos } => self.body(buf, offset, pos),
            ServerMode::Overlong { then_body } => match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    self.server = if then_body {
                        ServerMode::Body { offset: 0, pos: BodyPos::LineStart }
                    } else {
                        ServerMode::Lines
                    };
                    Step::of(i + 1, ServerEvent::OverlongMore)
                }
                None => Step::of(buf.len(), ServerEvent::OverlongMore),
            },
            ServerMode::Lines => {
                let have = self.parts.as_ref().map_or(0, |p| p.server.len());
                let limit = buf.len().min(MAX_STATUS_LINE - have);
                match memchr::memchr(b'\n', &buf[..limit]) {
                    Some(i) => Step::of(i + 1, self.status_line(&buf[..=i])),
                    None if have + buf.len() >= MAX_STATUS_LINE => {
                        // Frame it from its first MAX_STATUS_LINE bytes (the
                        // same whatever the reads), as if it were complete,
                        // so its command is answered and a body that follows
                        // an over-long +OK is still followed. The rest of the
                        // line comes as OverlongMore.
                        let take = MAX_STATUS_LINE - have;
                        let mut ev = self.status_line(&buf[..take]);
                        let then_body = matches!(ev, ServerEvent::Status { multiline: true, .. });
                        match &mut ev {
                            ServerEvent::Greeting(st) | ServerEvent::Status { status: st, .. } => {
                                st.overlong = true;
                                self.violations += 1;
                            }
                            // RFC 5034 continuations carry SASL data of any length.
                            ServerEvent::Continuation => {}
                            _ => {
                                self.violations += 1;
                                ev = ServerEvent::OverlongStart;
                            }
                        }
                        if self.opaque {
                            // STLS +OK was over-long: the rest is TLS anyway.
                            return Step::of(take, ev);
                        }
                        // A body, if any, starts after the end of this line.
                        self.server = ServerMode::Overlong { then_body };
                        Step::of(take, ev)
                    }
                    None => Step::NEED_MORE,
                }
            }
        }
    }

    /// Relays the start of a status line now, before its end: `buf` is what
    /// [`decode_server`](Pop3Codec::decode_server) just answered
    /// [`Step::NEED_MORE`] for. The codec keeps it (fewer than
    /// [`MAX_STATUS_LINE`] bytes) to parse the line when it ends.
    pub fn pass_server(&mut self, buf: &[u8]) -> Step<ServerEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
        }
        self.parts.get_or_insert_default().server.extend_from_slice(buf);
        Step::of(buf.len(), ServerEvent::LinePart)
    }

    /// A whole status line, `tail` being its last bytes (all of it unless
    /// its start was passed on already).
    fn status_line(&mut self, tail: &[u8]) -> ServerEvent {
        let status = match self.parts.as_deref_mut().filter(|p| !p.server.is_empty()) {
            None => Status::parse(tail),
            Some(parts) => {
                let mut line = std::mem::take(&mut parts.server);
                if parts.client_len == 0 {
                    self.parts = None;
                }
                line.extend_from_slice(tail);
                Status::parse(&line)
            }
        };
        if !self.greeted {
            self.greeted = true;
            return ServerEvent::Greeting(status);
        }
        let Some(head) = self.pending.front() else {
            return ServerEvent::Unsolicited;
        };
        if head.cmd.is_sasl() && status.is_continuation() {
            if let Some(sasl) = &mut self.sasl {
                sasl.continuations = sasl.continuations.saturating_add(1);
            }
            return ServerEvent::Continuation;
        }
        let Some(Pending { cmd, seq, .. }) = self.pending.pop_front() else {
            return ServerEvent::Unsolicited;
        };
        if cmd.is_sasl() {
            self.sasl = None;
        }
        let multiline = status.ok && cmd.multiline_on_ok();
        if multiline {
            self.server = ServerMode::Body { offset: 0, pos: BodyPos::LineStart };
        }
        if status.ok && cmd == Command::Stls {
            self.opaque = true;
        }
        ServerEvent::Status { cmd, seq, status, multiline }
    }

    /// Follows a body to its `CRLF.CRLF`: a line that is exactly ".".
    /// Byte-stuffed lines ("..x") are just lines that start with a dot and
    /// go on, so they never end the body.
    fn body(&mut self, buf: &[u8], offset: u64, mut pos: BodyPos) -> Step<ServerEvent> {
        let mut i = 0;
        while i < buf.len() {
            match pos {
                // Only a line that starts with a dot can end the body, so
                // jump straight to the next "\n." (one SIMD search per
                // read, not one per line).
                BodyPos::InLine => match memchr::memmem::find(&buf[i..], b"\n.") {
                    Some(j) => {
                        i += j + 2;
                        pos = BodyPos::Dot;
                    }
                    None => {
                        pos = if buf.last() == Some(&b'\n') { BodyPos::LineStart } else { BodyPos::InLine };
                        i = buf.len();
                    }
                },
                BodyPos::LineStart => {
                    pos = match buf[i] {
                        b'.' => BodyPos::Dot,
                        b'\n' => BodyPos::LineStart,
                        _ => BodyPos::InLine,
                    };
                    i += 1;
                }
                BodyPos::Dot | BodyPos::DotCr => {
                    let b = buf[i];
                    i += 1;
                    match (pos, b) {
                        (_, b'\n') => {
                            // ".\r\n" (or a bare ".\n", tolerated): the end.
                            self.server = ServerMode::Lines;
                            return Step::of(i, ServerEvent::Body { offset, end: true });
                        }
                        (BodyPos::Dot, b'\r') => pos = BodyPos::DotCr,
                        _ => pos = BodyPos::InLine,
                    }
                }
            }
        }
        self.server = ServerMode::Body { offset: offset + i as u64, pos };
        Step::of(i, ServerEvent::Body { offset, end: false })
    }
}
