//! Framing of both directions of a POP3 conversation.
//!
//! [`Pop3Codec`] is a pure decoder in the style of mini-redis's `frame.rs`:
//! the caller keeps a read buffer, offers it to `decode_client` or
//! `decode_server`, and gets back how many bytes belong to the next event.
//! Returning [`Step::NEED_MORE`] means "an incomplete line: read more".
//! The decoder never buffers: a line that could be held is at most
//! [`MAX_COMMAND_LINE`] or [`MAX_STATUS_LINE`] octets in the caller's buffer,
//! and anything longer is handed back in pieces as a protocol violation.
//! Body bytes are handed back as they come, in any amount.
//!
//! Which server responses are multi-line is decided by the queue of
//! forwarded commands (`forwarded`), so pipelined clients are followed.

use std::collections::VecDeque;

use super::command::{Command, trim_eol};
use super::status::Status;

/// RFC 2449 §4: a command line is at most 255 octets including CRLF.
pub const MAX_COMMAND_LINE: usize = 255;
/// RFC 2449 §4: a status line is at most 512 octets including CRLF.
pub const MAX_STATUS_LINE: usize = 512;
/// Longest pipeline the decoder tracks. Past it, responses are still relayed
/// but attributed to nothing; the bound keeps memory fixed per session.
pub const MAX_PENDING: usize = 1024;

/// How many bytes of the offered buffer form the next event, and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step<E> {
    /// Bytes of the offered buffer consumed by this step (0: need more).
    pub consumed: usize,
    /// What those bytes were; `None` only when `consumed == 0`.
    pub event: Option<E>,
}

impl<E> Step<E> {
    /// "Incomplete: read more and offer the buffer again."
    pub const NEED_MORE: Step<E> = Step { consumed: 0, event: None };

    fn of(consumed: usize, event: E) -> Step<E> {
        Step { consumed, event: Some(event) }
    }
}

/// What a client → server byte range was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// A complete command line (CRLF included in the consumed bytes).
    /// `overlong` lines were relayed in pieces before this, their last piece.
    Command {
        /// The parsed command (secrets dropped).
        cmd: Command,
        /// The line broke the RFC 2449 limit.
        overlong: bool,
    },
    /// The first [`MAX_COMMAND_LINE`] bytes of a line that has no CRLF within
    /// the limit: a protocol violation, relayed as is.
    OverlongStart,
    /// More bytes of an over-long line, without its end.
    OverlongMore,
    /// A line inside a SASL exchange (RFC 5034): a secret, never parsed.
    SaslResponse {
        /// The line was `*`: the client cancels the exchange.
        cancel: bool,
    },
    /// Bytes after STLS succeeded: TLS, relayed opaquely.
    Opaque,
}

/// What a server → client byte range was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// The greeting line.
    Greeting(Status),
    /// A complete status line answering `cmd`.
    Status {
        /// The command this answers.
        cmd: Command,
        /// The command's sequence number in the session (1-based).
        seq: u64,
        /// The parsed status line.
        status: Status,
        /// A body follows (multi-line +OK).
        multiline: bool,
    },
    /// A SASL continuation line (`+ ...`) within an AUTH exchange.
    Continuation,
    /// Body bytes of a multi-line response, as on the wire (byte-stuffed).
    Body {
        /// Offset of the first of these bytes from the start of the body.
        offset: u64,
        /// The terminating `.CRLF` ends within these bytes (they are last).
        end: bool,
    },
    /// A line while no command awaited a response (e.g. a server's
    /// "-ERR autologout" before it closes).
    Unsolicited,
    /// Part of a status line longer than [`MAX_STATUS_LINE`]: violation.
    OverlongStart,
    /// More bytes of an over-long status line, without its end.
    OverlongMore,
    /// Bytes after STLS succeeded: TLS, relayed opaquely.
    Opaque,
    /// Bytes relayed without framing after a pipeline deeper than
    /// [`MAX_PENDING`] made the answers impossible to attribute.
    Untracked,
}

/// A command forwarded to the server and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    cmd: Command,
    seq: u64,
    /// Answered by the proxy itself (a fault's `reply`), not the server.
    synthetic: bool,
}

/// Where the server → client stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyPos {
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
enum ServerMode {
    /// Expecting a status line (or greeting / continuation).
    Lines,
    /// Inside a multi-line body.
    Body { offset: u64, pos: BodyPos },
    /// Relaying the rest of an over-long line; `then_body` is the mode that
    /// follows it.
    Overlong { then_body: bool },
}

/// The pure POP3 decoder for one session, both directions.
#[derive(Debug, Clone)]
pub struct Pop3Codec {
    pending: VecDeque<Pending>,
    greeted: bool,
    next_seq: u64,
    /// Commands past MAX_PENDING that were not tracked.
    untracked: u64,
    /// An AUTH exchange is open: client lines are SASL responses.
    sasl_open: bool,
    /// In an over-long line: the command it started (None: SASL data).
    client_overlong: Option<Option<Command>>,
    server: ServerMode,
    /// STLS succeeded: both directions are TLS from here on.
    opaque: bool,
    violations: u64,
}

impl Default for Pop3Codec {
    fn default() -> Self {
        Self::new()
    }
}

impl Pop3Codec {
    /// A codec at the start of a session, expecting the server's greeting.
    pub fn new() -> Pop3Codec {
        Pop3Codec {
            pending: VecDeque::new(),
            greeted: false,
            next_seq: 1,
            untracked: 0,
            sasl_open: false,
            client_overlong: None,
            server: ServerMode::Lines,
            opaque: false,
            violations: 0,
        }
    }

    /// Whether a pipeline deeper than [`MAX_PENDING`] made the codec stop
    /// framing (the rest of the session is relayed as `Untracked`).
    pub fn lost_track(&self) -> bool {
        self.untracked > 0
    }

    /// Whether the server's greeting line has arrived.
    pub fn greeted(&self) -> bool {
        self.greeted
    }

    /// Whether STLS succeeded and the stream is now opaque TLS.
    pub fn is_opaque(&self) -> bool {
        self.opaque
    }

    /// Protocol violations seen (over-long lines), both directions.
    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// The sequence number the next forwarded (or replied) command gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Commands forwarded and not yet answered.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Gives back the pipeline queue's memory when nothing is pending: an
    /// idle session then holds none (the queue keeps its capacity
    /// otherwise).
    pub fn shed(&mut self) {
        if self.pending.is_empty() {
            self.pending = VecDeque::new();
        }
    }

    /// Whether a multi-line body is being relayed now.
    pub fn in_body(&self) -> bool {
        matches!(self.server, ServerMode::Body { .. })
    }

    /// The next client → server event in `buf`. Call [`forwarded`] once the
    /// command's bytes have been sent upstream.
    ///
    /// [`forwarded`]: Pop3Codec::forwarded
    pub fn decode_client(&mut self, buf: &[u8]) -> Step<ClientEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
        }
        if self.opaque {
            return Step::of(buf.len(), ClientEvent::Opaque);
        }
        let limit = buf.len().min(MAX_COMMAND_LINE);
        let eol = memchr::memchr(b'\n', &buf[..limit]);
        if let Some(cmd) = &self.client_overlong {
            // Continuing an over-long line: pass through to its LF.
            return match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    let ev = match cmd {
                        Some(cmd) => ClientEvent::Command { cmd: cmd.clone(), overlong: true },
                        // A long SASL response (GSSAPI tokens are): still
                        // SASL, never a command.
                        None => {
                            self.sasl_open = false;
                            ClientEvent::SaslResponse { cancel: false }
                        }
                    };
                    self.client_overlong = None;
                    Step::of(i + 1, ev)
                }
                None => Step::of(buf.len(), ClientEvent::OverlongMore),
            };
        }
        match eol {
            Some(i) => {
                let line = &buf[..=i];
                if self.sasl_open {
                    // One client line answers one continuation; the next
                    // line is SASL again only after the next "+ ".
                    self.sasl_open = false;
                    let cancel = trim_eol(line) == b"*";
                    return Step::of(i + 1, ClientEvent::SaslResponse { cancel });
                }
                Step::of(i + 1, ClientEvent::Command { cmd: Command::parse(line), overlong: false })
            }
            None if buf.len() >= MAX_COMMAND_LINE => {
                self.violations += 1;
                // Keep only the parsed command (no secrets) for the line's
                // end, parsed from exactly the limit so that it does not
                // depend on how much was read.
                let cmd = if self.sasl_open { None } else { Some(Command::parse(&buf[..MAX_COMMAND_LINE])) };
                self.client_overlong = Some(cmd);
                // Exactly the limit, so the framing does not depend on how
                // much happened to be read.
                Step::of(MAX_COMMAND_LINE, ClientEvent::OverlongStart)
            }
            None => Step::NEED_MORE,
        }
    }

    /// Records that `cmd` was sent to the server, so its response can be
    /// framed. Commands swallowed or answered by the proxy are not forwarded.
    /// Returns the command's sequence number, which its response carries.
    pub fn forwarded(&mut self, cmd: &Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Command::Auth { mechanism: Some(_), initial_response } = cmd {
            // Without an initial response the client's next line answers
            // the server's first "+ "; with one, the next line is SASL only
            // if the server asks for more (a continuation). Pipelined
            // commands after `AUTH PLAIN <response>` stay commands.
            self.sasl_open = !initial_response;
        }
        if self.pending.len() >= MAX_PENDING || self.untracked > 0 {
            // Past the bound the queue no longer matches the server's
            // answers: stop framing rather than misattribute (see desync).
            self.untracked += 1;
            return seq;
        }
        self.pending.push_back(Pending { cmd: cmd.clone(), seq, synthetic: false });
        seq
    }

    /// Records that the proxy will answer `cmd` itself instead of
    /// forwarding it. Its answer must go out in turn: call
    /// [`take_synthetic`](Pop3Codec::take_synthetic) before each
    /// `decode_server` and deliver the answer when it returns the command.
    /// `None` past [`MAX_PENDING`]: the answer cannot be placed in turn and
    /// the command is dropped instead.
    pub fn replied(&mut self, cmd: &Command) -> Option<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.pending.len() >= MAX_PENDING || self.untracked > 0 {
            self.untracked += 1;
            return None;
        }
        self.pending.push_back(Pending { cmd: cmd.clone(), seq, synthetic: true });
        Some(seq)
    }

    /// The command whose proxy-made answer is due now: at the head of the
    /// queue, with no server response in progress.
    pub fn take_synthetic(&mut self) -> Option<(Command, u64)> {
        if !matches!(self.server, ServerMode::Lines) || !self.pending.front().is_some_and(|p| p.synthetic) {
            return None;
        }
        self.pending.pop_front().map(|p| (p.cmd, p.seq))
    }

    /// The next server → client event in `buf`.
    pub fn decode_server(&mut self, buf: &[u8]) -> Step<ServerEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
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
                let limit = buf.len().min(MAX_STATUS_LINE);
                match memchr::memchr(b'\n', &buf[..limit]) {
                    Some(i) => Step::of(i + 1, self.status_line(&buf[..=i])),
                    None if buf.len() >= MAX_STATUS_LINE => {
                        // Frame it from its first MAX_STATUS_LINE bytes (the
                        // same whatever the reads), as if it were complete,
                        // so its command is answered and a body that follows
                        // an over-long +OK is still followed. The rest of the
                        // line comes as OverlongMore.
                        let mut ev = self.status_line(&buf[..MAX_STATUS_LINE]);
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
                            return Step::of(MAX_STATUS_LINE, ev);
                        }
                        // A body, if any, starts after the end of this line.
                        self.server = ServerMode::Overlong { then_body };
                        Step::of(MAX_STATUS_LINE, ev)
                    }
                    None => Step::NEED_MORE,
                }
            }
        }
    }

    fn status_line(&mut self, line: &[u8]) -> ServerEvent {
        let status = Status::parse(line);
        if !self.greeted {
            self.greeted = true;
            return ServerEvent::Greeting(status);
        }
        let Some(head) = self.pending.front() else {
            return ServerEvent::Unsolicited;
        };
        if head.cmd.is_sasl() && status.is_continuation() {
            self.sasl_open = true;
            return ServerEvent::Continuation;
        }
        let Some(Pending { cmd, seq, .. }) = self.pending.pop_front() else {
            return ServerEvent::Unsolicited;
        };
        if cmd.is_sasl() {
            self.sasl_open = false;
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
