// The relay-like harness shared by the fuzz targets (fuzz/fuzz_targets/*.rs)
// and the regression test (tests/it/fuzz_regressions.rs), which both
// `include!` this file inside a module. It drives `Pop3Codec` and `Tracker`
// the way the relay does (append a read to the direction's buffer, take
// every complete event, keep the rest) and panics on any broken invariant:
//
// - no panic in the codec, the tracker or their accessors;
// - a step consumes 0 bytes exactly when it has no event, and never more
//   than offered;
// - every byte fed is consumed exactly once or still held, and the consumed
//   ranges concatenated are the prefix of what was fed;
// - held bytes stay under MAX_COMMAND_LINE (client) / MAX_STATUS_LINE
//   (server);
// - each event's bytes have its shape (a command or status line ends at its
//   first LF, an over-long start is exactly the limit, body offsets
//   continue, a body's end is a line end, opaque only after STLS);
// - the tracker counted exactly the bytes consumed each way;
// - split invariance (the same stream in any chunking gives the same
//   result): the same input with consecutive same-direction reads merged
//   gives the same events (pieces of a body / over-long line / opaque run
//   coalesced) and the same tracker and codec state;
// - holding or passing makes no difference: the same reads played with
//   every incomplete line relayed at once (`pass_client` / `pass_server`,
//   as the relay does when no rule needs the whole line) give the same
//   events, once each line's passed start is joined to its end.
//
// Input formats (chosen so that hand-written transcripts stay readable):
//
// - client (`run_client`): byte 0 = n; the next (n % 8) + 1 bytes are read
//   sizes, used in a cycle (a size byte of 0 means "all that is left"); the
//   rest is the client's byte stream.
// - session (`run_session`): a sequence of records `ctl, data...`; bit 7 of
//   ctl is the direction (1: client to server, 0: server to client), its low
//   7 bits the length of one read (capped at what is left).

use popfault::codec::{ClientEvent, MAX_COMMAND_LINE, MAX_STATUS_LINE, Pop3Codec, ServerEvent};
use popfault::session::{Fingerprint, Outcome, State, Tracker};
use std::collections::BTreeMap;

/// Bugs found in src/ and not fixed yet. The fuzz targets and the normal
/// regression replay tolerate them (narrowly, see each use) so that fuzzing
/// goes on past them; `tests/it/fuzz_regressions.rs` replays the reproducers
/// strictly in an ignored test. Remove a variant from [`TOLERATED`] once
/// its fix lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// `decode_client` parses an over-long line's command from whatever was
    /// read (`Command::parse(buf)`), so the command (`TOP 1 <spaces> 5` is
    /// `Top(1, 5)` or `Unknown("TOP")`) and the framing of its response
    /// depend on read sizes.
    OverlongCommandParse,
    /// `Retrieval::feed`: a header line over 1000 bytes ends the header scan
    /// when read whole (the overflowed line is judged empty) but not when
    /// read in pieces (later pieces are appended after the overflow), so
    /// the Message-ID after it is found or not depending on read sizes.
    HeaderLineOverflow,
    /// `Tracker::on_body`: a UIDL listing line over 128 bytes is dropped
    /// when read whole but truncated and learnt when read in pieces.
    UidlLineOverflow,
    /// `Tracker::on_client` counts an over-long command twice
    /// (`OverlongStart` and `Command { overlong: true }`); the codec once.
    ViolationsCountedTwice,
    /// An over-long status line pops its command from the queue but is
    /// reported as `OverlongStart`, so the tracker never sees the response
    /// (an over-long `+OK` to QUIT leaves the session in doubt).
    OverlongStatusUntracked,
}

impl Known {
    /// Every known bug.
    pub const ALL: [Known; 5] = [
        Known::OverlongCommandParse,
        Known::HeaderLineOverflow,
        Known::UidlLineOverflow,
        Known::ViolationsCountedTwice,
        Known::OverlongStatusUntracked,
    ];

    /// The name of its reproducer in fuzz/regressions/<target>/.
    pub fn file_name(self) -> &'static str {
        match self {
            Known::OverlongCommandParse => "overlong-command-parse",
            Known::HeaderLineOverflow => "header-line-overflow",
            Known::UidlLineOverflow => "uidl-line-overflow",
            Known::ViolationsCountedTwice => "violations-counted-twice",
            Known::OverlongStatusUntracked => "overlong-status-untracked",
        }
    }
}

/// What the fuzz targets and the normal replay tolerate today.
pub const TOLERATED: &[Known] = &[
    // All fixed in src/; their reproducers stay as regressions.
];

/// One event with the bytes it covered, in the order the relay saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    /// Client to server.
    C(ClientEvent, Vec<u8>),
    /// Server to client.
    S(ServerEvent, Vec<u8>),
}

/// What one byte stream of one direction has become so far.
#[derive(Debug, Default)]
struct Side {
    /// The relay's read buffer: bytes fed, not yet consumed.
    buf: Vec<u8>,
    /// Every byte fed, in order.
    fed: Vec<u8>,
    /// How many of `fed` were consumed.
    consumed: usize,
}

impl Side {
    fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
        self.fed.extend_from_slice(chunk);
    }

    /// Takes `n` bytes from the front of the buffer, checking they are the
    /// next bytes of what was fed.
    fn take(&mut self, n: usize) -> Vec<u8> {
        assert!(n <= self.buf.len(), "consumed {n} of {} offered", self.buf.len());
        let bytes: Vec<u8> = self.buf.drain(..n).collect();
        assert_eq!(bytes[..], self.fed[self.consumed..self.consumed + n], "consumed bytes are not the next fed bytes");
        self.consumed += n;
        bytes
    }

    fn check_accounting(&self, who: &str) {
        assert_eq!(self.consumed + self.buf.len(), self.fed.len(), "{who}: bytes lost or duplicated");
        assert_eq!(self.buf[..], self.fed[self.consumed..], "{who}: held bytes are not the unconsumed suffix");
    }
}

/// Where the checker believes each direction is, to check event shapes.
#[derive(Debug, Default)]
struct Shape {
    client_overlong: bool,
    server_overlong: bool,
    /// The current line's bytes already passed on, per direction.
    client_part: Vec<u8>,
    server_part: Vec<u8>,
    /// Offset the next body piece must start at (`Some` inside a body).
    body_next: Option<u64>,
}

/// A codec and a tracker driven like the relay, with its record of events.
pub struct Sim {
    codec: Pop3Codec,
    tracker: Tracker,
    client: Side,
    server: Side,
    shape: Shape,
    events: Vec<Ev>,
    tolerate: Vec<Known>,
    /// Sequence number of the last response reported.
    last_seq: u64,
    /// Relay incomplete lines at once instead of holding them.
    pass: bool,
}

/// Everything observable at the end, for split-invariance comparisons.
#[derive(Debug, PartialEq)]
pub struct Summary {
    state: State,
    outcome: Outcome,
    at_risk: usize,
    at_risk_if_lost: usize,
    downloads: u64,
    marked: usize,
    rsets: u64,
    bytes_up: u64,
    bytes_down: u64,
    commands: u64,
    encrypted: bool,
    tracker_violations: u64,
    fingerprints: Vec<Fingerprint>,
    uids: BTreeMap<u32, String>,
    user: Option<String>,
    last_command: Option<String>,
    codec_violations: u64,
    pending: usize,
    opaque: bool,
    in_body: bool,
    held_client: Vec<u8>,
    held_server: Vec<u8>,
}

fn lf_count(bytes: &[u8]) -> usize {
    bytes.iter().filter(|&&b| b == b'\n').count()
}

/// A complete line: one LF, at its end, within `max` bytes.
fn assert_line(bytes: &[u8], max: usize, what: &str) {
    assert!(bytes.ends_with(b"\n") && lf_count(bytes) == 1, "{what}: not exactly one line: {bytes:?}");
    assert!(bytes.len() <= max, "{what}: {} bytes, over the {max} limit", bytes.len());
}

impl Sim {
    /// A session just accepted, tolerating the `tolerate` bugs.
    pub fn new(tolerate: &[Known]) -> Sim {
        Sim {
            codec: Pop3Codec::new(),
            tracker: Tracker::new(),
            client: Side::default(),
            server: Side::default(),
            shape: Shape::default(),
            events: Vec::new(),
            tolerate: tolerate.to_vec(),
            last_seq: 0,
            pass: false,
        }
    }

    /// A session that relays every incomplete line at once.
    pub fn passing(tolerate: &[Known]) -> Sim {
        Sim { pass: true, ..Sim::new(tolerate) }
    }

    fn tolerates(&self, bug: Known) -> bool {
        self.tolerate.contains(&bug)
    }

    /// One read from the client, relayed as far as it frames.
    pub fn feed_client(&mut self, chunk: &[u8]) {
        self.client.push(chunk);
        loop {
            let step = self.codec.decode_client(&self.client.buf);
            assert_eq!(step.consumed == 0, step.event.is_none(), "client step: consumed 0 iff no event: {step:?}");
            let Some(ev) = step.event else { break };
            let bytes = self.client.take(step.consumed);
            self.check_client_event(&ev, &bytes);
            if let ClientEvent::Command { cmd, .. } = &ev {
                let before = self.codec.pending_len();
                let tracking = !self.codec.lost_track();
                self.codec.forwarded(cmd);
                let grew = usize::from(tracking && before < popfault::codec::framer::MAX_PENDING);
                assert_eq!(self.codec.pending_len(), before + grew, "a forwarded command is queued (up to the bound)");
            }
            self.tracker.on_client(&ev, &bytes, true);
            self.events.push(Ev::C(ev, bytes));
        }
        if self.pass && !self.client.buf.is_empty() {
            let n = self.client.buf.len();
            let step = self.codec.pass_client(&self.client.buf);
            assert_eq!((step.consumed, &step.event), (n, &Some(ClientEvent::LinePart)), "pass takes it all");
            let bytes = self.client.take(n);
            self.shape.client_part.extend_from_slice(&bytes);
            assert!(self.shape.client_part.len() < MAX_COMMAND_LINE, "a passed client line reached the limit");
            self.tracker.on_client(&ClientEvent::LinePart, &bytes, true);
            self.events.push(Ev::C(ClientEvent::LinePart, bytes));
        }
        self.client.check_accounting("client");
        assert!(
            self.client.buf.len() < MAX_COMMAND_LINE,
            "client holds {} bytes, the limit is {MAX_COMMAND_LINE}",
            self.client.buf.len()
        );
        self.check_tracker();
    }

    /// One read from the server, relayed as far as it frames.
    pub fn feed_server(&mut self, chunk: &[u8]) {
        self.server.push(chunk);
        loop {
            let pending_before = self.codec.pending_len();
            let step = self.codec.decode_server(&self.server.buf);
            assert_eq!(step.consumed == 0, step.event.is_none(), "server step: consumed 0 iff no event: {step:?}");
            let Some(ev) = step.event else { break };
            let bytes = self.server.take(step.consumed);
            self.check_server_event(&ev, &bytes);
            let popped = pending_before - self.codec.pending_len();
            let answers = usize::from(matches!(ev, ServerEvent::Status { .. }));
            assert!(
                popped == answers,
                "{popped} command(s) left the queue on {ev:?}: every answered command is reported as its Status"
            );
            self.tracker.on_server(&ev, &bytes);
            self.events.push(Ev::S(ev, bytes));
        }
        if self.pass && !self.server.buf.is_empty() {
            let n = self.server.buf.len();
            let step = self.codec.pass_server(&self.server.buf);
            assert_eq!((step.consumed, &step.event), (n, &Some(ServerEvent::LinePart)), "pass takes it all");
            let bytes = self.server.take(n);
            self.shape.server_part.extend_from_slice(&bytes);
            assert!(self.shape.server_part.len() < MAX_STATUS_LINE, "a passed status line reached the limit");
            self.tracker.on_server(&ServerEvent::LinePart, &bytes);
            self.events.push(Ev::S(ServerEvent::LinePart, bytes));
        }
        self.server.check_accounting("server");
        assert!(
            self.server.buf.len() < MAX_STATUS_LINE,
            "server holds {} bytes, the limit is {MAX_STATUS_LINE}",
            self.server.buf.len()
        );
        self.check_tracker();
    }

    fn check_client_event(&mut self, ev: &ClientEvent, tail: &[u8]) {
        // A line whose start was passed on is checked whole.
        let mut bytes = std::mem::take(&mut self.shape.client_part);
        bytes.extend_from_slice(tail);
        let bytes = &bytes[..];
        match ev {
            ClientEvent::Command { overlong: false, .. } => {
                assert!(!self.shape.client_overlong, "a plain command inside an over-long line");
                assert_line(bytes, MAX_COMMAND_LINE, "command");
            }
            ClientEvent::Command { overlong: true, .. } => {
                assert!(self.shape.client_overlong, "an over-long command's end without its start");
                assert!(bytes.ends_with(b"\n") && lf_count(bytes) == 1, "over-long command end: {bytes:?}");
                self.shape.client_overlong = false;
            }
            ClientEvent::OverlongStart => {
                assert!(!self.shape.client_overlong, "over-long start inside an over-long line");
                assert_eq!(bytes.len(), MAX_COMMAND_LINE, "over-long start is exactly the limit");
                assert_eq!(lf_count(bytes), 0, "over-long start holds a line end");
                self.shape.client_overlong = true;
            }
            ClientEvent::OverlongMore => {
                assert!(self.shape.client_overlong, "over-long piece outside an over-long line");
                assert_eq!(lf_count(bytes), 0, "over-long piece holds a line end");
            }
            ClientEvent::SaslResponse { .. } if self.shape.client_overlong => {
                // The end of an over-long SASL response (still SASL).
                assert!(bytes.ends_with(b"\n") && lf_count(bytes) == 1, "over-long SASL end: {bytes:?}");
                self.shape.client_overlong = false;
            }
            ClientEvent::SaslResponse { cancel } => {
                assert_line(bytes, MAX_COMMAND_LINE, "SASL response");
                let text = bytes.strip_suffix(b"\n").unwrap_or(bytes);
                let text = text.strip_suffix(b"\r").unwrap_or(text);
                assert_eq!(*cancel, text == b"*", "SASL cancel flag for {bytes:?}");
            }
            ClientEvent::Opaque => assert!(self.codec.is_opaque(), "client opaque before STLS succeeded"),
            ClientEvent::LinePart => panic!("decode_client returned LinePart"),
        }
    }

    fn check_server_event(&mut self, ev: &ServerEvent, tail: &[u8]) {
        let mut bytes = std::mem::take(&mut self.shape.server_part);
        bytes.extend_from_slice(tail);
        let bytes = &bytes[..];
        let in_line = self.shape.server_overlong;
        if !matches!(ev, ServerEvent::Body { .. } | ServerEvent::Opaque) {
            assert!(self.shape.body_next.is_none(), "{ev:?} inside a body");
        }
        let overlong_line = match ev {
            ServerEvent::Greeting(st) | ServerEvent::Status { status: st, .. } => st.overlong,
            ServerEvent::Continuation => !bytes.ends_with(b"\n"),
            _ => false,
        };
        if overlong_line {
            // Framed from exactly its first MAX_STATUS_LINE bytes; the rest
            // follows as OverlongMore.
            assert!(!in_line, "{ev:?} inside an over-long line");
            assert_eq!(bytes.len(), MAX_STATUS_LINE, "an over-long status line is framed from exactly the limit");
            assert_eq!(lf_count(bytes), 0, "an over-long status start holds no line end");
            if let ServerEvent::Status { cmd, seq, status, multiline } = ev {
                assert!(*seq > self.last_seq, "responses out of order: seq {seq} after {}", self.last_seq);
                self.last_seq = *seq;
                assert_eq!(*multiline, status.ok && cmd.multiline_on_ok(), "multi-line iff +OK to such a command");
            }
            self.shape.server_overlong = !self.codec.is_opaque();
            return;
        }
        match ev {
            ServerEvent::Untracked => {}
            ServerEvent::Greeting(_)
            | ServerEvent::Status { .. }
            | ServerEvent::Continuation
            | ServerEvent::Unsolicited => {
                assert!(!in_line, "{ev:?} inside an over-long line");
                assert_line(bytes, MAX_STATUS_LINE, "status line");
                if let ServerEvent::Status { cmd, seq, status, multiline } = ev {
                    assert!(*seq > self.last_seq, "responses out of order: seq {seq} after {}", self.last_seq);
                    self.last_seq = *seq;
                    assert_eq!(*multiline, status.ok && cmd.multiline_on_ok(), "multi-line iff +OK to such a command");
                    if *multiline {
                        self.shape.body_next = Some(0);
                    }
                }
            }
            ServerEvent::Body { offset, end } => {
                assert!(!in_line, "body inside an over-long line");
                assert_eq!(Some(*offset), self.shape.body_next, "body offsets must continue");
                if *end {
                    assert!(bytes.ends_with(b"\n"), "a body ends at a line end: {bytes:?}");
                    self.shape.body_next = None;
                } else {
                    self.shape.body_next = Some(offset + bytes.len() as u64);
                }
            }
            ServerEvent::OverlongStart => {
                assert!(!in_line, "over-long start inside an over-long line");
                assert_eq!(bytes.len(), MAX_STATUS_LINE, "over-long status start is exactly the limit");
                assert_eq!(lf_count(bytes), 0, "over-long status start holds a line end");
                self.shape.server_overlong = true;
            }
            ServerEvent::OverlongMore => {
                assert!(in_line, "over-long piece outside an over-long line");
                match lf_count(bytes) {
                    0 => {}
                    1 if bytes.ends_with(b"\n") => {
                        self.shape.server_overlong = false;
                        // A body follows an over-long multi-line +OK.
                        if self.codec.in_body() {
                            self.shape.body_next = Some(0);
                        }
                    }
                    _ => panic!("over-long status piece runs past its line end: {bytes:?}"),
                }
            }
            ServerEvent::Opaque => assert!(self.codec.is_opaque(), "server opaque before STLS succeeded"),
            ServerEvent::LinePart => panic!("decode_server returned LinePart"),
        }
    }

    fn check_tracker(&self) {
        let t = &self.tracker;
        assert_eq!(t.bytes_up(), self.client.consumed as u64, "tracker bytes up");
        assert_eq!(t.bytes_down(), self.server.consumed as u64, "tracker bytes down");
        let outcome = t.outcome();
        let at_risk = t.at_risk();
        assert!(at_risk <= t.at_risk_if_lost(), "at risk {at_risk} > at risk if lost");
        if !outcome.puts_at_risk() {
            assert_eq!(at_risk, 0, "{outcome} puts nothing at risk");
        }
        assert!(t.marked() <= popfault::session::MAX_TRACKED_MESSAGES);
        if !self.tolerates(Known::ViolationsCountedTwice) {
            assert_eq!(t.violations(), self.codec.violations(), "tracker and codec count violations alike");
        }
        // Exercised for panics only.
        let _ = (t.state(), t.user(), t.last_command(), t.downloads(), t.rsets(), t.commands());
        let _ = (t.encrypted(), t.violations(), t.fingerprints().len(), t.uids().len());
        let _ = (self.codec.violations(), self.codec.pending_len(), self.codec.in_body(), self.codec.is_opaque());
    }

    /// The state at the end, for comparisons.
    pub fn summary(&self) -> Summary {
        let t = &self.tracker;
        Summary {
            state: t.state(),
            outcome: t.outcome(),
            at_risk: t.at_risk(),
            at_risk_if_lost: t.at_risk_if_lost(),
            downloads: t.downloads(),
            marked: t.marked(),
            rsets: t.rsets(),
            bytes_up: t.bytes_up(),
            bytes_down: t.bytes_down(),
            commands: t.commands(),
            encrypted: t.encrypted(),
            tracker_violations: t.violations(),
            fingerprints: t.fingerprints().to_vec(),
            uids: t.uids(),
            user: t.user().map(str::to_owned),
            last_command: t.last_command(),
            codec_violations: self.codec.violations(),
            pending: self.codec.pending_len(),
            opaque: self.codec.is_opaque(),
            in_body: self.codec.in_body(),
            held_client: self.client.buf.clone(),
            held_server: self.server.buf.clone(),
        }
    }

    /// The events, as relayed.
    pub fn events(&self) -> &[Ev] {
        &self.events
    }

    /// The session tracker.
    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// The events with the pieces that only chunking decides merged.
    pub fn coalesced(&self) -> Vec<Ev> {
        coalesce(&self.events)
    }
}

/// Merges consecutive pieces of one body, one over-long line or one opaque
/// run (how many pieces there are depends only on how the bytes were read).
pub fn coalesce(events: &[Ev]) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    // A passed line start, waiting for the event of its line's end.
    let (mut client_part, mut server_part) = (Vec::new(), Vec::new());
    for ev in events {
        let joined;
        let ev = match ev {
            Ev::C(ClientEvent::LinePart, b) => {
                client_part.extend_from_slice(b);
                continue;
            }
            Ev::S(ServerEvent::LinePart, b) => {
                server_part.extend_from_slice(b);
                continue;
            }
            Ev::C(e, b) if !client_part.is_empty() => {
                client_part.extend_from_slice(b);
                joined = Ev::C(e.clone(), std::mem::take(&mut client_part));
                &joined
            }
            Ev::S(e, b) if !server_part.is_empty() => {
                server_part.extend_from_slice(b);
                joined = Ev::S(e.clone(), std::mem::take(&mut server_part));
                &joined
            }
            ev => ev,
        };
        if let Some(last) = out.last_mut() {
            match (last, ev) {
                (Ev::S(ServerEvent::Body { end: e1, .. }, b1), Ev::S(ServerEvent::Body { end, .. }, b2)) if !*e1 => {
                    *e1 = *end;
                    b1.extend_from_slice(b2);
                    continue;
                }
                (
                    Ev::S(ServerEvent::OverlongStart | ServerEvent::OverlongMore, b1),
                    Ev::S(ServerEvent::OverlongMore, b2),
                )
                | (
                    Ev::C(ClientEvent::OverlongStart | ClientEvent::OverlongMore, b1),
                    Ev::C(ClientEvent::OverlongMore, b2),
                )
                | (Ev::S(ServerEvent::Opaque, b1), Ev::S(ServerEvent::Opaque, b2))
                | (Ev::C(ClientEvent::Opaque, b1), Ev::C(ClientEvent::Opaque, b2)) => {
                    b1.extend_from_slice(b2);
                    continue;
                }
                // The pieces of an over-long command end in the command.
                (
                    last @ Ev::C(ClientEvent::OverlongStart | ClientEvent::OverlongMore, _),
                    Ev::C(cmd @ (ClientEvent::Command { overlong: true, .. } | ClientEvent::SaslResponse { .. }), b2),
                ) => {
                    let Ev::C(_, b1) = last else { unreachable!() };
                    let mut bytes = std::mem::take(b1);
                    bytes.extend_from_slice(b2);
                    *last = Ev::C(cmd.clone(), bytes);
                    continue;
                }
                _ => {}
            }
        }
        out.push(ev.clone());
    }
    out
}

/// One read: which direction, which bytes.
pub type Read<'a> = (bool, &'a [u8]);

/// Splits a client-target input into reads (see the format above).
pub fn client_reads(data: &[u8]) -> Vec<Read<'_>> {
    let Some((&n, rest)) = data.split_first() else { return Vec::new() };
    let k = (usize::from(n) % 8 + 1).min(rest.len());
    let (sizes, mut stream) = rest.split_at(k);
    let mut reads = Vec::new();
    let mut i = 0;
    while !stream.is_empty() {
        let size = match sizes.get(i % sizes.len().max(1)) {
            Some(&0) | None => stream.len(),
            Some(&s) => usize::from(s).min(stream.len()),
        };
        let (read, tail) = stream.split_at(size);
        reads.push((true, read));
        stream = tail;
        i += 1;
    }
    reads
}

/// Splits a session-target input into reads (see the format above).
pub fn session_reads(mut data: &[u8]) -> Vec<Read<'_>> {
    let mut reads = Vec::new();
    while let Some((&ctl, rest)) = data.split_first() {
        let len = usize::from(ctl & 0x7f).min(rest.len());
        let (read, tail) = rest.split_at(len);
        reads.push((ctl & 0x80 != 0, read));
        data = tail;
    }
    reads
}

/// Plays reads through a fresh session.
pub fn play(reads: &[Read<'_>], tolerate: &[Known]) -> Sim {
    play_with(Sim::new(tolerate), reads)
}

fn play_with(mut sim: Sim, reads: &[Read<'_>]) -> Sim {
    for &(from_client, bytes) in reads {
        if from_client {
            sim.feed_client(bytes);
        } else {
            sim.feed_server(bytes);
        }
    }
    sim
}

/// The same reads with consecutive reads of one direction merged.
pub fn merged(reads: &[Read<'_>]) -> Vec<(bool, Vec<u8>)> {
    let mut out: Vec<(bool, Vec<u8>)> = Vec::new();
    for &(dir, bytes) in reads {
        match out.last_mut() {
            Some((d, b)) if *d == dir => b.extend_from_slice(bytes),
            _ => out.push((dir, bytes.to_vec())),
        }
    }
    out
}

/// Longest line (LF included) in any body relayed.
fn longest_body_line(events: &[Ev]) -> usize {
    let mut body = Vec::new();
    for ev in events {
        if let Ev::S(ServerEvent::Body { .. }, b) = ev {
            body.extend_from_slice(b);
        }
    }
    body.split_inclusive(|&b| b == b'\n').map(<[u8]>::len).max().unwrap_or(0)
}

/// Plays the reads as given and merged, and checks both agree.
pub fn check_reads(reads: &[Read<'_>], tolerate: &[Known]) {
    let chunked = play(reads, tolerate);
    let merged = merged(reads);
    let merged: Vec<Read<'_>> = merged.iter().map(|(d, b)| (*d, &b[..])).collect();
    let whole = play(&merged, tolerate);
    let (a, b) = (chunked.coalesced(), whole.coalesced());
    if a != b && tolerate.contains(&Known::OverlongCommandParse) {
        // Tolerated only when the first difference is an over-long
        // command's parse (everything after it may follow from it).
        let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        if let (
            Some(Ev::C(ClientEvent::Command { overlong: true, .. }, x)),
            Some(Ev::C(ClientEvent::Command { overlong: true, .. }, y)),
        ) = (a.get(i), b.get(i))
        {
            if x == y {
                return;
            }
        }
    }
    assert_eq!(a, b, "events depend on how the reads were split");
    // Relaying each incomplete line at once changes nothing but when its
    // start goes out.
    let passing = play_with(Sim::passing(tolerate), reads);
    assert_eq!(passing.coalesced(), a, "events depend on whether incomplete lines were held");
    let mut held = chunked.summary();
    // What the holding relay still holds, the passing one relayed.
    held.bytes_up += held.held_client.len() as u64;
    held.bytes_down += held.held_server.len() as u64;
    held.held_client.clear();
    held.held_server.clear();
    assert_eq!(passing.summary(), held, "end state depends on whether incomplete lines were held");
    let (mut sa, mut sb) = (chunked.summary(), whole.summary());
    let longest = longest_body_line(&b);
    for s in [&mut sa, &mut sb] {
        if longest > 1000 && tolerate.contains(&Known::HeaderLineOverflow) {
            for f in &mut s.fingerprints {
                f.key = popfault::session::MessageKey::Hash([0; 16]);
            }
        }
        if longest > 128 && tolerate.contains(&Known::UidlLineOverflow) {
            s.uids.clear();
            for f in &mut s.fingerprints {
                f.uid = None;
            }
        }
    }
    assert_eq!(sa, sb, "end state depends on how the reads were split");
}

/// What a fuzz target's input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `fuzz_client`: chunk sizes, then the client's stream.
    Client,
    /// `fuzz_server`: (direction, read) records.
    Session,
    /// `fuzz_profile`: a profile's TOML text.
    Profile,
}

impl Target {
    /// The target named `name` (a fuzz/corpus-seed/ directory's name).
    pub fn named(name: &str) -> Option<Target> {
        match name {
            "fuzz_client" => Some(Target::Client),
            "fuzz_server" => Some(Target::Session),
            "fuzz_profile" => Some(Target::Profile),
            _ => None,
        }
    }
}

/// Runs one input of `target`, tolerating the `tolerate` bugs.
pub fn run(target: Target, data: &[u8], tolerate: &[Known]) {
    match target {
        Target::Client => check_reads(&client_reads(data), tolerate),
        Target::Session => check_reads(&session_reads(data), tolerate),
        Target::Profile => run_profile(data),
    }
}

/// The `fuzz_profile` target: any text parses into a profile or is refused
/// with an error located inside it; never a panic.
pub fn run_profile(data: &[u8]) {
    use popfault::faults::Profile;
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Profile::from_toml(text, "fuzz.toml", "fuzz") {
        Ok(profile) => {
            assert_eq!(profile.source, text, "a profile keeps its text");
            assert_eq!(Profile::from_toml(text, "fuzz.toml", "fuzz").ok(), Some(profile.clone()), "parsing is pure");
            let _ = (format!("{profile:?}"), profile.has_accept_rules());
        }
        Err(err) => {
            let lines = text.split('\n').count();
            assert!(err.line >= 1 && err.line <= lines, "error line {} outside 1..={lines}", err.line);
            assert!(err.column >= 1, "error column {}", err.column);
            assert_eq!(err.origin, "fuzz.toml", "errors name their file");
            assert!(err.to_string().starts_with("fuzz.toml:"), "errors render as file:line:column");
        }
    }
}
