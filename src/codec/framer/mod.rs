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

mod server;

use server::ServerMode;

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
    /// Bytes after STLS succeeded, or a stream that opened with a TLS
    /// handshake record (POP3S sent to a plain port): relayed opaquely.
    Opaque,
    /// The start of a line whose end has not come yet, relayed before the
    /// line completes (see [`Pop3Codec::pass_client`]). The line's event
    /// comes with its last bytes.
    LinePart,
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
    /// Bytes after STLS succeeded, or a stream that opened with a TLS
    /// handshake record: relayed opaquely.
    Opaque,
    /// The start of a status line whose end has not come yet, relayed
    /// before the line completes (see [`Pop3Codec::pass_server`]).
    LinePart,
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

/// An open SASL exchange (RFC 5034): which client lines answer it.
///
/// Client lines may come before the server's continuations they answer
/// (a pipelining client sends `AUTH LOGIN`, the user and the password at
/// once), so a line is SASL data while the client has sent fewer than
/// the mechanism sends unprompted, or fewer than the continuations seen.
/// A mechanism we do not know makes every line SASL data until the
/// server's final answer: a secret is never taken for a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sasl {
    /// Lines the client may send without waiting for a challenge;
    /// `UNKNOWN_MECHANISM` for every line until the final answer.
    unprompted: u32,
    /// SASL lines the client has started.
    sent: u32,
    /// Continuations (`+ `) the server has sent.
    continuations: u32,
    /// The client sent `*`: its part of the exchange is over.
    cancelled: bool,
}

const UNKNOWN_MECHANISM: u32 = u32::MAX;

impl Sasl {
    fn open(mechanism: &str, initial_response: bool) -> Sasl {
        // What each mechanism sends before it needs anything from the
        // server. Those that answer a challenge (CRAM-MD5, DIGEST-MD5)
        // send only after a continuation.
        let lines: u32 = match mechanism {
            "PLAIN" | "XOAUTH2" | "OAUTHBEARER" | "EXTERNAL" | "ANONYMOUS" | "GSSAPI" | "NTLM" => 1,
            "LOGIN" => 2,
            m if m.starts_with("SCRAM-") => 1,
            "CRAM-MD5" | "DIGEST-MD5" => 0,
            _ => UNKNOWN_MECHANISM,
        };
        let unprompted =
            if lines == UNKNOWN_MECHANISM { lines } else { lines.saturating_sub(u32::from(initial_response)) };
        Sasl { unprompted, sent: 0, continuations: 0, cancelled: false }
    }

    fn next_line_is_sasl(&self) -> bool {
        !self.cancelled && (self.unprompted == UNKNOWN_MECHANISM || self.sent < self.unprompted.max(self.continuations))
    }
}

/// Lines whose start was relayed before their end came.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Parts {
    /// The client line so far, if it is a command: kept (fewer than
    /// [`MAX_COMMAND_LINE`] bytes) to parse it when it ends. A SASL line's
    /// bytes, a secret, are never kept.
    client: Vec<u8>,
    /// How many bytes of the client line went on.
    client_len: usize,
    /// The SASL line so far reads `*` (or `*` CR): it may be a cancel.
    star: bool,
    /// The status line so far (fewer than [`MAX_STATUS_LINE`] bytes).
    server: Vec<u8>,
}

/// The pure POP3 decoder for one session, both directions.
#[derive(Debug, Clone)]
pub struct Pop3Codec {
    pending: VecDeque<Pending>,
    greeted: bool,
    next_seq: u64,
    /// Commands past MAX_PENDING that were not tracked.
    untracked: u64,
    /// An AUTH exchange is open.
    sasl: Option<Sasl>,
    /// In an over-long line: the command it started (None: SASL data).
    client_overlong: Option<Option<Command>>,
    /// Whether the current client line is SASL data, decided when its
    /// first byte is seen, so that it does not depend on when the rest
    /// comes nor on whether its start was relayed early.
    client_sasl_line: Option<bool>,
    /// Lines relayed in part; boxed, as most sessions never have one.
    parts: Option<Box<Parts>>,
    /// The client has sent something: a TLS handshake is recognised only
    /// as a stream's first bytes.
    client_started: bool,
    server: ServerMode,
    /// STLS succeeded, or the stream opened with TLS: opaque from here on.
    opaque: bool,
    violations: u64,
}

/// What the next server line will be, for a caller that must decide
/// whether to wait for the whole of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextServerLine<'a> {
    /// The greeting.
    Greeting,
    /// The answer (or a continuation) to this command.
    Answer(&'a Command),
    /// Not a line the caller can act on: body bytes, an over-long line's
    /// rest, an unsolicited line, opaque or untracked bytes.
    Other,
}

/// A TLS record of type handshake (a ClientHello) starts with 0x16 and the
/// major version 3: no POP3 line does.
fn is_tls_start(buf: &[u8]) -> bool {
    buf.first() == Some(&0x16) && buf.get(1).is_none_or(|&b| b == 0x03)
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
            sasl: None,
            client_overlong: None,
            client_sasl_line: None,
            parts: None,
            client_started: false,
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

    /// Whether the server's greeting line has arrived (or the stream turned
    /// out to be TLS from its first byte, so no greeting will be seen).
    pub fn greeted(&self) -> bool {
        self.greeted || self.opaque
    }

    /// Whether the start of the current client line was already relayed
    /// ([`pass_client`](Pop3Codec::pass_client)): its command can no longer
    /// be held back, swallowed or answered.
    pub fn client_line_started(&self) -> bool {
        self.parts.as_ref().is_some_and(|p| p.client_len > 0)
    }

    /// Whether the start of the current server line was already relayed.
    pub fn server_line_started(&self) -> bool {
        self.parts.as_ref().is_some_and(|p| !p.server.is_empty())
    }

    /// Whether the next client line is SASL data (never a command).
    pub fn next_client_line_is_sasl(&self) -> bool {
        match (&self.client_overlong, self.client_sasl_line) {
            (Some(cmd), _) => cmd.is_none(),
            (None, Some(sasl)) => sasl,
            (None, None) => self.sasl.is_some_and(|s| s.next_line_is_sasl()),
        }
    }

    /// What the next server line will be (see [`NextServerLine`]).
    pub fn next_server_line(&self) -> NextServerLine<'_> {
        if self.opaque || !matches!(self.server, ServerMode::Lines) {
            return NextServerLine::Other;
        }
        if !self.greeted {
            return NextServerLine::Greeting;
        }
        match self.pending.front() {
            Some(p) if !p.synthetic => NextServerLine::Answer(&p.cmd),
            _ => NextServerLine::Other,
        }
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

    /// Whether a command waiting for its answer is a login (`PASS`,
    /// `APOP`, `AUTH`): its answer may end the AUTHORIZATION state.
    pub fn login_pending(&self) -> bool {
        self.pending.iter().any(|p| matches!(p.cmd, Command::Pass | Command::Apop(_) | Command::Auth { .. }))
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
    /// command's bytes have been sent upstream. [`Step::NEED_MORE`] means an
    /// incomplete line: the caller either keeps it and offers it again with
    /// more bytes, or relays it now with [`pass_client`].
    ///
    /// [`forwarded`]: Pop3Codec::forwarded
    /// [`pass_client`]: Pop3Codec::pass_client
    pub fn decode_client(&mut self, buf: &[u8]) -> Step<ClientEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
        }
        if !self.client_started && !self.greeted && is_tls_start(buf) {
            // POP3S sent to a plain port: a TLS ClientHello before any
            // greeting. Nothing in it is POP3.
            self.opaque = true;
        }
        self.client_started = true;
        if self.opaque {
            return Step::of(buf.len(), ClientEvent::Opaque);
        }
        if let Some(cmd) = &self.client_overlong {
            // Continuing an over-long line: pass through to its LF.
            return match memchr::memchr(b'\n', buf) {
                Some(i) => {
                    let ev = match cmd {
                        Some(cmd) => ClientEvent::Command { cmd: cmd.clone(), overlong: true },
                        // A long SASL response (GSSAPI tokens are): still
                        // SASL, never a command.
                        None => ClientEvent::SaslResponse { cancel: false },
                    };
                    self.client_overlong = None;
                    Step::of(i + 1, ev)
                }
                None => Step::of(buf.len(), ClientEvent::OverlongMore),
            };
        }
        let sasl_line = self.client_line_kind();
        let have = self.parts.as_ref().map_or(0, |p| p.client_len);
        let limit = buf.len().min(MAX_COMMAND_LINE - have);
        match memchr::memchr(b'\n', &buf[..limit]) {
            Some(i) => {
                let ev = self.client_line(&buf[..=i]);
                Step::of(i + 1, ev)
            }
            None if have + buf.len() >= MAX_COMMAND_LINE => {
                self.violations += 1;
                // Exactly the limit, so the framing does not depend on how
                // much happened to be read; keep only the parsed command (no
                // secrets) for the line's end.
                let take = MAX_COMMAND_LINE - have;
                let (mut line, _, _) = self.end_client_line();
                let cmd = (!sasl_line).then(|| {
                    line.extend_from_slice(&buf[..take]);
                    Command::parse(&line)
                });
                self.client_overlong = Some(cmd);
                Step::of(take, ClientEvent::OverlongStart)
            }
            None => Step::NEED_MORE,
        }
    }

    /// Relays the start of a line now, before its end: `buf` is what
    /// [`decode_client`](Pop3Codec::decode_client) just answered
    /// [`Step::NEED_MORE`] for. The codec keeps what it needs to parse the
    /// line when it ends (at most [`MAX_COMMAND_LINE`] bytes of a command;
    /// of a SASL line, a secret, only its length).
    pub fn pass_client(&mut self, buf: &[u8]) -> Step<ClientEvent> {
        if buf.is_empty() {
            return Step::NEED_MORE;
        }
        let sasl_line = self.client_line_kind();
        let parts = self.parts.get_or_insert_default();
        if sasl_line {
            let star_so_far = parts.client_len == 0 || parts.star;
            parts.star = star_so_far && matches!((parts.client_len, buf), (0, b"*" | b"*\r") | (1, b"\r"));
        } else {
            parts.client.extend_from_slice(buf);
        }
        parts.client_len += buf.len();
        Step::of(buf.len(), ClientEvent::LinePart)
    }

    /// Whether the current client line is SASL data: decided (and counted)
    /// when its first byte is seen.
    fn client_line_kind(&mut self) -> bool {
        if let Some(kind) = self.client_sasl_line {
            return kind;
        }
        let kind = match &mut self.sasl {
            Some(sasl) if sasl.next_line_is_sasl() => {
                sasl.sent += 1;
                true
            }
            _ => false,
        };
        self.client_sasl_line = Some(kind);
        kind
    }

    /// Ends the current client line: what was passed of it (a command's
    /// bytes, its length, whether a SASL line read `*` so far).
    fn end_client_line(&mut self) -> (Vec<u8>, usize, bool) {
        self.client_sasl_line = None;
        let Some(parts) = self.parts.as_deref_mut() else { return (Vec::new(), 0, true) };
        let out = (std::mem::take(&mut parts.client), std::mem::take(&mut parts.client_len), parts.star);
        parts.star = false;
        if parts.server.is_empty() {
            self.parts = None;
        }
        out
    }

    /// A whole client line, `tail` being its last bytes (all of it unless
    /// its start was passed on already).
    fn client_line(&mut self, tail: &[u8]) -> ClientEvent {
        let sasl_line = self.client_line_kind();
        let (mut line, len, star) = self.end_client_line();
        if sasl_line {
            // One client line answers one continuation; `*` cancels.
            let cancel = (len == 0 || star) && {
                let mut whole = b"*\r".get(..len).unwrap_or_default().to_vec();
                whole.extend_from_slice(tail);
                trim_eol(&whole) == b"*"
            };
            if let (true, Some(sasl)) = (cancel, &mut self.sasl) {
                sasl.cancelled = true;
            }
            return ClientEvent::SaslResponse { cancel };
        }
        let cmd = if line.is_empty() {
            Command::parse(tail)
        } else {
            line.extend_from_slice(tail);
            Command::parse(&line)
        };
        ClientEvent::Command { cmd, overlong: false }
    }

    /// Records that `cmd` was sent to the server, so its response can be
    /// framed. Commands swallowed or answered by the proxy are not forwarded.
    /// Returns the command's sequence number, which its response carries.
    pub fn forwarded(&mut self, cmd: &Command) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Command::Auth { mechanism: Some(mechanism), initial_response } = cmd {
            // Pipelined commands after `AUTH PLAIN <response>` stay
            // commands; the lines that answer the mechanism never are.
            self.sasl = Some(Sasl::open(mechanism, *initial_response));
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
        if !self.synthetic_due() {
            return None;
        }
        self.pending.pop_front().map(|p| (p.cmd, p.seq))
    }

    /// Whether [`take_synthetic`](Pop3Codec::take_synthetic) has an answer
    /// to give now.
    pub fn synthetic_due(&self) -> bool {
        // Never in the middle of a server line, whole or passed on in part.
        matches!(self.server, ServerMode::Lines)
            && !self.server_line_started()
            && self.pending.front().is_some_and(|p| p.synthetic)
    }
}
