//! The session driver: one proxied POP3 session's logic — decode, decide,
//! act, track — with no socket, no clock and no task (sans-I/O, in the
//! manner of quinn-proto and rustls). The relay is the thin shell around it.
//!
//! The shell tells the driver what happened, with the time as data:
//! [`Driver::read`] (bytes arrived, or EOF), [`Driver::written`] (a write it
//! was asked for is done), [`Driver::handle_timeout`], [`Driver::cut_manual`],
//! [`Driver::shutdown`], [`Driver::read_failed`] / [`Driver::write_failed`].
//! It asks what to do next, per direction, with [`Driver::poll_transmit`]:
//! write these bytes of the input (or these bytes of the proxy's own),
//! wait until an instant, hand back consumed input, read more, pass the
//! FIN on, or stop. [`Driver::poll_timeout`] says when to call
//! `handle_timeout`; [`Driver::take_events`] hands over the events to emit;
//! [`Driver::close`] says how to close each side after a cut.
//!
//! The input is the shell's read buffer for that direction: the driver
//! answers in ranges of it and never copies relayed bytes, except where a
//! fault changes them (`corrupt`). The shell keeps the buffer unchanged
//! while an event is being carried out, and drops the consumed bytes when
//! told ([`Transmit::Consumed`]).
//!
//! "Delivered" means written: the tracker learns bytes only from
//! `written`, so every count, rule filter and outcome is about what
//! reached a peer's socket.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;

use crate::codec::{ClientEvent, Command, Pop3Codec, ServerEvent, Status};
use crate::events::{Delivery, Event, SessionEnd};

use crate::faults::{
    Action, BodyCut, BodyLine, Decision, Disconnect, Engine, Facts, How, Point, Refuse, RefuseHow, Side,
};
use crate::session::Tracker;

/// Latency samples a session sends at once (and the rest when it ends):
/// each send may wake the aggregator, which costs more than the sample.
const LATENCY_BATCH: usize = 16;
/// Longest a session holds latency samples back once it has one to send:
/// a slow session's few answers reach the screen this late at most.
const LATENCY_MAX_HOLD: Duration = Duration::from_millis(250);

/// Which way bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client → server.
    Up = 0,
    /// Server → client.
    Down = 1,
}

impl Dir {
    /// The direction toward `side` (`Both` counts as the client).
    pub fn toward(side: Side) -> Dir {
        if side == Side::Server { Dir::Up } else { Dir::Down }
    }

    /// The side bytes going this way come from.
    pub fn source(self) -> Side {
        if self == Dir::Up { Side::Client } else { Side::Server }
    }

    /// The side bytes going this way are written to.
    pub fn destination(self) -> Side {
        if self == Dir::Up { Side::Server } else { Side::Client }
    }
}

/// What becomes of the client's `STLS` (RFC 2595).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientStls {
    /// Relayed to the server; if it succeeds, the rest of the session is
    /// relayed unread (`encrypted`).
    #[default]
    Relay,
    /// popfault ends the client's TLS itself (`--client-tls stls`): it
    /// offers `STLS` in CAPA answers before TLS, answers `STLS` in the
    /// server's stead and asks the shell for the handshake
    /// ([`Transmit::StartTls`]); the session stays readable after it.
    Answer,
    /// Never TLS with the client (`--client-tls none`, or the client's
    /// TLS is implicit): popfault answers `STLS` with `-ERR` itself.
    Refuse,
}

/// What every session of a run shares (one allocation for all of them).
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The upstream as configured.
    pub upstream: String,
    /// When the proxy started (for `window` rules).
    pub run_started: Instant,
    /// No byte either way for this long ends a session.
    pub idle_timeout: Duration,
    /// No greeting from upstream this long after accept ends a session.
    pub greeting_timeout: Duration,
    /// Someone draws live progress: send `Progress` events.
    pub wants_progress: bool,
    /// Keep a transcript of each session ([`Driver::take_transcript`]).
    pub transcripts: bool,
    /// What becomes of the client's `STLS`.
    pub client_stls: ClientStls,
}

/// What a session knows that does not change.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session number (1-based, in accept order).
    pub number: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The run's seed.
    pub seed: u64,
    /// When the client connected.
    pub started: Instant,
    /// What the run's sessions share.
    pub run: Arc<RunInfo>,
}

/// What to do next in one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// Write these bytes of the input toward the direction's destination,
    /// then call [`Driver::written`].
    Write(Range<usize>),
    /// Write these bytes (the proxy's own: noise, an answer, changed
    /// bytes), then call [`Driver::written`].
    Own(Vec<u8>),
    /// Nothing goes out before this instant (a stall, a line speed, a
    /// delay): ask again then.
    Wait(Instant),
    /// This many bytes at the front of the input are done: drop them.
    Consumed(usize),
    /// Read more (the input holds no whole event, or nothing).
    NeedMore,
    /// The source sent FIN and everything before it went on: pass the FIN
    /// on (half-close) and end this direction.
    Eof,
    /// The session is cut: relay nothing more.
    Stop,
    /// The client's `STLS` was answered (`ClientStls::Answer`): end this
    /// direction's pump; once both have ended, run the TLS handshake with
    /// the client and tell [`Driver::tls_started`]. The input's unread
    /// bytes stay the shell's to keep (after the handshake they are the
    /// server's, or, toward the server, TLS bytes the client sent early).
    StartTls,
}

/// What to do with a client that just connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accept {
    /// Connect upstream and relay (after [`Driver::hold_until`], if a
    /// stall fired).
    Connect,
    /// Server down: refuse the client this way.
    Refuse {
        /// How.
        how: RefuseHow,
        /// The `-ERR` line for `how = err`.
        text: String,
        /// The rule that refused.
        rule: String,
    },
    /// A fault cut the line before there was an upstream: close the client
    /// as [`Driver::close`] says.
    Cut,
}

/// A latency sample waiting to be sent: inline (no allocation), since an
/// idle session holds its last few.
#[derive(Debug, Clone, Copy)]
struct Sample {
    seq: u64,
    micros: u64,
    /// The command keyword (at most 16 bytes).
    name: [u8; 16],
    len: u8,
}

impl Sample {
    fn new(seq: u64, name: &str, micros: u64) -> Sample {
        let mut buf = [0u8; 16];
        let n = name.len().min(16);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        Sample { seq, micros, name: buf, len: n as u8 }
    }

    fn event(&self, session: u64) -> Event {
        let command = String::from_utf8_lossy(&self.name[..self.len as usize]).into_owned();
        Event::Latency { session, seq: self.seq, command, micros: self.micros }
    }
}

/// The effects of faults that outlast the decision that made them.
#[derive(Debug)]
struct Effects {
    /// Draws for fault effects (jitter, noise bytes, bit positions), in
    /// the order they happen; seeded per session, so a run replays.
    rng: SmallRng,
    /// Cuts planned in the body being delivered.
    body_cuts: VecDeque<BodyCut>,
    /// Answers the proxy makes itself (`reply`), in command order.
    replies: VecDeque<Vec<u8>>,
    /// Bytes to inject, per direction (line noise).
    inject: [Vec<u8>; 2],
    /// Flip a bit in each of this many next bytes, per direction.
    corrupt: [usize; 2],
    /// Nothing is written before this instant (stall).
    hold_until: Option<Instant>,
    /// Line speed in bytes per second (throttle).
    rate: Option<u64>,
    /// Per direction: bytes still relayed before the session is closed
    /// (`limit`), and the rule that set it.
    limit: [Option<(u64, Box<str>)>; 2],
    /// Per direction: a close is passed on this many ms after it came
    /// (`linger`), and when the one that came is due.
    linger: [Option<u64>; 2],
    close_at: [Option<Instant>; 2],
    /// Per direction: the line is busy with the last paced piece until then.
    paced_until: [Option<Instant>; 2],
    /// Added before each response: (ms, jitter ms).
    delay: Option<(u64, u64)>,
    /// A `truncate` step ran at the body cut being carried out.
    truncate: bool,
    /// Where the body delivered so far stands in its line: what a
    /// `truncate` must send to end it.
    body_line: BodyLine,
    /// A `truncate` ended the body for the client: the server's rest of it
    /// is read and dropped up to its real end.
    discard_body: bool,
}

/// What the tracker learns once a range is written.
#[derive(Debug, Clone)]
enum Track {
    /// A client event; `forwarded` as `Tracker::on_client` takes it.
    Client(ClientEvent),
    /// A server event (body pieces are told as they go; lines once whole).
    Server(ServerEvent),
    /// A status line of `split` bytes and the body bytes after it, in one
    /// write.
    StatusAndBody(ServerEvent, usize, ServerEvent),
    /// Bytes outside any frame (an incomplete line at EOF).
    Unframed,
}

/// What happens after an event's bytes went out.
#[derive(Debug, Clone)]
enum After {
    /// The command was forwarded: progress, then the `forwarded` point.
    Forwarded(Command, u64),
    /// A `truncate` ended the body for the client; `end`: the server's
    /// real end was in the same event (nothing more to drop).
    Truncated { end: bool },
    /// A single-line response was delivered.
    Response(u64, Command),
    /// A multi-line response's last byte was delivered.
    BodyEnd,
}

/// One step of carrying out an event.
#[derive(Debug)]
enum Step {
    /// Nothing goes out before this instant.
    Wait(Instant),
    /// Write `range` of the input; `done` bytes of it are written.
    Relay { range: Range<usize>, track: Track, done: usize },
    /// Act on a decision made for body offset `at` of a body event
    /// (`end`: the body's real end is in that event).
    Act { decision: Decision, at: u64, end: bool },
    /// Write the proxy's own `bytes`, which end the body for the client at
    /// body offset `at` (`truncate`).
    Terminator { line: BodyLine, at: u64 },
    /// Write the proxy's own bytes inside a response (`STLS` offered in a
    /// CAPA answer).
    Insert(&'static [u8]),
    /// Run what follows the event's delivery.
    After(After),
}

/// How one event of the input is carried out.
#[derive(Debug, Default)]
struct Plan {
    /// Input bytes the event covers, handed back when the steps are done.
    consumed: usize,
    steps: VecDeque<Step>,
}

/// A write handed to the shell and not yet reported done.
#[derive(Debug, Clone)]
enum InFlight {
    /// Injected noise of this many bytes.
    Noise(usize),
    /// The proxy's own answer to `cmd` (boxed: rare, and every session
    /// carries the slot).
    Reply(Box<(Command, u64, Vec<u8>)>),
    /// The next `n` bytes of the current `Relay` step.
    Piece(usize),
    /// A truncate's terminator, ending the body at offset `at`.
    Terminator(BodyLine, u64),
    /// Bytes the proxy inserted in a response.
    Insert(usize),
}

/// What to do with a decision's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Fate {
    Go,
    Stop,
    Swallow,
    Reply(Vec<u8>),
}

impl Effects {
    fn new(rng: SmallRng) -> Effects {
        Effects {
            rng,
            body_cuts: VecDeque::new(),
            replies: VecDeque::new(),
            inject: [Vec::new(), Vec::new()],
            corrupt: [0, 0],
            hold_until: None,
            rate: None,
            limit: [None, None],
            linger: [None, None],
            close_at: [None, None],
            paced_until: [None, None],
            delay: None,
            truncate: false,
            body_line: BodyLine::Start,
            discard_body: false,
        }
    }

    /// Follows where the body stands in its line, for a `truncate`.
    fn delivered_body(&mut self, part: &[u8]) {
        self.body_line = self.body_line.after(part);
    }
}

/// One proxied session.
pub struct Driver {
    info: SessionInfo,
    codec: Pop3Codec,
    tracker: Tracker,
    engine: Engine,
    /// Rule names that fired, in order.
    faults: Vec<String>,
    /// When each unanswered command was forwarded, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    /// The multi-line response being delivered: (seq, command).
    answering: Option<(u64, Command)>,
    /// A fault changed bytes of the response being delivered.
    damaging: bool,
    /// Some of the body being delivered reached the client.
    body_out: bool,
    /// Messages delivered whole that a fault changed (a u32: every idle
    /// session carries the driver; no session delivers 2^32 messages).
    damaged: u32,
    /// Fault effects in force; boxed, made when a fault first needs it.
    fx: Option<Box<Effects>>,
    /// How a fault (or a person) cut the session.
    /// Boxed: rare, and every session's state counts.
    cut: Option<Box<(Side, How, String)>>,
    /// Nothing more is relayed (a cut, a timeout, shutdown, a peer reset).
    stopped: bool,
    /// The proxy is shutting down.
    shutting_down: bool,
    last_activity: Instant,
    idle: bool,
    no_greeting: bool,
    /// The first end a peer made: its side, and whether it reset.
    first_end: Option<(Side, bool)>,
    /// Latency samples not yet sent.
    latencies: Vec<Sample>,
    /// When latency samples were last sent (at first: the accept).
    latencies_sent: Instant,
    /// Timer rules not yet due: (delay from accept, rule).
    /// Boxed: most profiles have no timer rule, and every session counts.
    #[allow(clippy::box_collection)]
    timers: Option<Box<VecDeque<(Duration, usize)>>>,
    paused: bool,
    /// Per direction: the event being carried out (boxed: idle sessions
    /// have none).
    plans: [Option<Box<Plan>>; 2],
    /// Per direction: a write handed out and not reported done.
    in_flight: [Option<InFlight>; 2],
    /// Per direction: the source sent FIN.
    eof: [bool; 2],
    events: Vec<Event>,
    /// Transcript lines not yet handed over, when transcripts are on.
    /// Boxed: 8 bytes in every session, not a `Vec`'s 24.
    #[allow(clippy::box_collection)]
    transcript: Option<Box<Vec<String>>>,
    /// Body bytes of the response being delivered, for the transcript.
    body_len: u32,
    /// Something was queued that the shell's other futures must see.
    wake: bool,
    /// Where the client's TLS stands when popfault ends it (`ClientStls::Answer`).
    stls: Stls,
    /// The TLS popfault spoke, for the session's end (boxed: rare, and
    /// every session carries the slot).
    #[allow(clippy::box_collection)]
    tls: Option<Box<String>>,
}

/// The client's STLS, when popfault answers it (`ClientStls::Answer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stls {
    /// Plaintext: STLS is offered.
    Offered,
    /// The client asked; the `+OK` is queued.
    Asked,
    /// The `+OK` went out: the handshake is the shell's to run.
    Answered,
    /// TLS is up with the client.
    Done,
}

impl Driver {
    /// A session just accepted, running `engine`; emits `session_start`.
    pub fn new(info: SessionInfo, engine: Engine) -> Driver {
        let timers = engine.timers();
        let timers = (!timers.is_empty()).then(|| Box::new(timers.into()));
        let started = info.started;
        let start = Event::SessionStart {
            session: info.number,
            client: info.peer,
            upstream: info.run.upstream.clone(),
            profile: engine.profile().name.clone(),
        };
        Driver {
            last_activity: info.started,
            info,
            codec: Pop3Codec::new(),
            tracker: Tracker::new(),
            engine,
            faults: Vec::new(),
            inflight: VecDeque::new(),
            answering: None,
            damaging: false,
            body_out: false,
            damaged: 0,
            fx: None,
            cut: None,
            stopped: false,
            shutting_down: false,
            idle: false,
            no_greeting: false,
            first_end: None,
            latencies: Vec::new(),
            latencies_sent: started,
            timers,
            paused: false,
            plans: [None, None],
            in_flight: [None, None],
            eof: [false, false],
            events: vec![start],
            transcript: None,
            body_len: 0,
            wake: false,
            stls: Stls::Offered,
            tls: None,
        }
    }

    // === impl Driver: getters ===

    /// Nothing more is relayed.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The session number.
    pub fn number(&self) -> u64 {
        self.info.number
    }

    /// How to close each side after a cut by a fault or a person:
    /// `how` for the side named, FIN for the other (`both`: `how` for both).
    pub fn close(&self) -> Option<(How, How)> {
        let (side, how, _) = self.cut.as_deref()?;
        let for_side = |s: Side| if *side == Side::Both || *side == s { *how } else { How::Fin };
        Some((for_side(Side::Client), for_side(Side::Server)))
    }

    /// Nothing may be written before this instant (a stall in force).
    pub fn hold_until(&self) -> Option<Instant> {
        self.fx.as_deref().and_then(|f| f.hold_until)
    }

    /// Whether `dir` has something of the proxy's own to write now (noise,
    /// a due answer) although its source sent nothing.
    pub fn has_output(&self, dir: Dir) -> bool {
        if self.stopped {
            return false;
        }
        let noise = self.fx.as_deref().is_some_and(|f| !f.inject[dir as usize].is_empty());
        noise || (dir == Dir::Down && self.plans[1].is_none() && self.codec.synthetic_due())
    }

    /// Whether something was queued since the last call that the shell's
    /// other direction must see (it is then woken).
    pub fn take_wake(&mut self) -> bool {
        std::mem::take(&mut self.wake)
    }

    /// The events to emit, in order.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// The transcript lines written since the last call (none unless the
    /// run keeps transcripts): what the session did, secrets redacted.
    pub fn take_transcript(&mut self) -> Vec<String> {
        self.transcript.as_deref_mut().map(std::mem::take).unwrap_or_default()
    }

    /// Notes a transcript line, `now` into the session.
    fn note(&mut self, now: Instant, text: std::fmt::Arguments<'_>) {
        if !self.info.run.transcripts {
            return;
        }
        let t = now.saturating_duration_since(self.info.started).as_secs_f64();
        self.transcript.get_or_insert_default().push(format!("{t:>9.3}s  {text}"));
    }

    /// Whether there are events to emit.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`handle_timeout`](Driver::handle_timeout) is next due: a timer
    /// rule, the idle timeout, or the greeting timeout.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_activity + self.info.run.idle_timeout;
        let next = self.timers.as_deref().and_then(VecDeque::front);
        let mut at = next.map_or(idle, |(after, _)| idle.min(self.info.started + *after));
        if !self.codec.greeted() {
            at = at.min(self.info.started + self.info.run.greeting_timeout);
        }
        at
    }

    /// How the session ended, for humans: the side seen ending first, else
    /// shutdown or a timeout (a fault's cut names itself).
    pub fn ended_by(&self) -> String {
        if let Some((_, _, why)) = self.cut.as_deref() {
            return why.clone();
        }
        match self.first_end {
            Some((side, reset)) => {
                let who = if side == Side::Client { "client" } else { "server" };
                format!("{} by {who}", if reset { "reset" } else { "closed" })
            }
            None if self.shutting_down => "cut at shutdown".into(),
            None if self.no_greeting => {
                format!("no greeting from upstream within {:?}", self.info.run.greeting_timeout)
            }
            None if self.idle => "idle timeout".into(),
            None => "closed".into(),
        }
    }

    /// Whether a peer reset (so the other side should be reset too).
    pub fn peer_reset(&self) -> bool {
        self.first_end.is_some_and(|(_, reset)| reset)
    }

    // === impl Driver: what happened ===

    /// Faults are paused (no new decisions) or not.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// A client connected: accept-time decisions (refuse, cut, stall).
    pub fn accept(&mut self, now: Instant) -> Accept {
        if self.paused {
            return Accept::Connect;
        }
        let facts = Facts::at_accept(now.saturating_duration_since(self.info.run.run_started));
        let decisions = self.engine.decide(&Point::Accept, &facts);
        for d in &decisions {
            self.record(d, now);
            for a in &d.actions {
                if let Action::Refuse(Refuse { how, text }) = a {
                    self.tracker.set_refused();
                    return Accept::Refuse { how: *how, text: text.clone(), rule: d.rule.clone() };
                }
            }
        }
        for d in decisions {
            if self.act(d, Dir::Up, now) == Fate::Stop {
                self.tracker.set_refused();
                return Accept::Cut;
            }
        }
        Accept::Connect
    }

    /// The TLS handshake with the client, asked for by
    /// [`Transmit::StartTls`], is done: relaying goes on, inside TLS.
    pub fn tls_started(&mut self, now: Instant) {
        self.stls = Stls::Done;
        self.last_activity = now;
    }

    /// popfault's own TLS with `side` is up: `what` (version, suite) goes
    /// into the session's end.
    pub fn tls_up(&mut self, side: Side, what: &str, now: Instant) {
        let side = if side == Side::Client { "client" } else { "upstream" };
        self.note(now, format_args!("(TLS with the {side}: {what})"));
        let t = self.tls.get_or_insert_default();
        if !t.is_empty() {
            t.push_str(", ");
        }
        t.push_str(side);
        t.push(' ');
        t.push_str(what);
    }

    /// The upstream could not be reached (or the client was refused).
    pub fn refused(&mut self) {
        self.tracker.set_refused();
    }

    /// A refuse `-ERR` greeting of `len` bytes went to the client.
    pub fn refused_with(&mut self, len: usize) {
        self.tracker.on_unframed(false, len);
    }

    /// `n` bytes were read from `dir`'s source (0: EOF).
    pub fn read(&mut self, dir: Dir, n: usize, now: Instant) {
        self.last_activity = now;
        if n == 0 {
            self.eof[dir as usize] = true;
            if !self.stopped {
                self.note_end(dir.source(), false);
            }
        }
    }

    /// Reading from `dir`'s source failed: it reset.
    pub fn read_failed(&mut self, dir: Dir) {
        self.note_end(dir.source(), true);
        self.stopped = true;
    }

    /// Writing toward `dir`'s destination failed: it is gone (reset, or
    /// closed and then sent data), unless a peer ended first.
    pub fn write_failed(&mut self, dir: Dir) {
        self.in_flight[dir as usize] = None;
        self.note_end(dir.destination(), true);
        self.stopped = true;
    }

    /// The proxy is shutting down: stop relaying.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        self.stopped = true;
    }

    /// A person cut the session (the dashboard's `k`, or `Proxy::cut`): a
    /// lost carrier now.
    pub fn cut_manual(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        let disconnect = Action::Disconnect(Disconnect { side: Side::Both, how: How::Rst });
        // Read as "fault manual: disconnect at k (dashboard)": the point
        // says who cut, where a rule's says where in the protocol.
        let d = Decision { rule: "manual".into(), point: MANUAL_POINT.into(), actions: vec![disconnect] };
        self.record(&d, now);
        self.act(d, Dir::Down, now);
    }

    /// A person cut a line a fault had left open and silent (`silent`,
    /// `refuse how = "hang"`): both sides are reset now. The session's
    /// faults say so; how it ended stays the fault's.
    pub fn cut_held(&mut self, now: Instant) {
        let disconnect = Action::Disconnect(Disconnect { side: Side::Both, how: How::Rst });
        let d = Decision { rule: "manual".into(), point: MANUAL_POINT.into(), actions: vec![disconnect] };
        self.record(&d, now);
    }

    /// Timer rules, the idle timeout and the greeting timeout, as of `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if !self.codec.greeted() && self.info.started + self.info.run.greeting_timeout <= now {
            self.no_greeting = true;
            self.stopped = true;
            return;
        }
        if self.last_activity + self.info.run.idle_timeout <= now {
            self.idle = true;
            self.stopped = true;
            return;
        }
        while let Some(&(after, rule)) = self.timers.as_deref().and_then(VecDeque::front) {
            if self.info.started + after > now {
                break;
            }
            if let Some(t) = self.timers.as_deref_mut() {
                t.pop_front();
            }
            if self.paused {
                continue;
            }
            let facts = self.facts(0, now);
            if let Some(d) = self.engine.timer_due(rule, after, &facts) {
                self.record(&d, now);
                if self.act(d, Dir::Down, now) == Fate::Stop {
                    return;
                }
            }
        }
    }

    /// The write last handed out for `dir` is done. `input` is the same
    /// input `poll_transmit` was given.
    pub fn written(&mut self, dir: Dir, input: &[u8], now: Instant) {
        let Some(what) = self.in_flight[dir as usize].take() else { return };
        match what {
            InFlight::Noise(n) => {
                self.tracker.on_unframed(dir == Dir::Up, n);
                // Noise inside a message the client is receiving damages it.
                self.damaging |= dir == Dir::Down && self.answering.is_some();
            }
            InFlight::Reply(reply) => {
                let (cmd, seq, reply) = *reply;
                let status = Status::parse(&reply);
                // popfault's own +OK (not a `reply` rule's answer to an
                // earlier STLS).
                if cmd == Command::Stls && self.stls == Stls::Asked && reply == plan::STLS_OK {
                    // Not the server's STLS: the session stays readable.
                    self.tracker.on_unframed(false, reply.len());
                    self.stls = Stls::Answered;
                    self.wake = true;
                } else {
                    self.tracker.on_server(&ServerEvent::Status { cmd, seq, status, multiline: false }, &reply);
                }
            }
            InFlight::Insert(n) => self.tracker.on_unframed(false, n),
            InFlight::Piece(n) => self.piece_written(dir, input, n, now),
            InFlight::Terminator(line, at) => {
                let bytes = line.terminator();
                self.tracker.on_server(&ServerEvent::Body { offset: at, end: true }, bytes);
                if let Some(Some(Step::Terminator { .. })) = self.plans[1].as_deref_mut().map(|p| p.steps.front()) {
                    self.plans[1].as_deref_mut().map(|p| p.steps.pop_front());
                }
            }
        }
    }

    /// Gives back memory an idle session does not need.
    pub fn shed(&mut self) {
        self.codec.shed();
        if self.inflight.is_empty() {
            self.inflight = VecDeque::new();
        }
    }

    /// Ends the session: the remaining latency samples and `session_end`.
    /// `ended_by` overrides [`ended_by`](Driver::ended_by) (a refusal, a
    /// failed connect).
    pub fn finish(&mut self, ended_by: Option<String>, now: Instant) -> Vec<Event> {
        // Bytes of a line cut midway reached the peer: count them.
        for dir in [Dir::Up, Dir::Down] {
            if let Some(Step::Relay { done, track, .. }) =
                self.plans[dir as usize].as_ref().and_then(|p| p.steps.front())
                && *done > 0
                && !matches!(
                    track,
                    Track::Server(ServerEvent::Body { .. }) | Track::StatusAndBody(..) | Track::Unframed
                )
            {
                self.tracker.on_unframed(dir == Dir::Up, *done);
            }
        }
        let cut_midway = self.body_out && self.answering.as_ref().is_some_and(|(_, cmd)| is_message(cmd));
        if self.info.run.transcripts {
            if self.body_out && self.answering.is_some() {
                let len = self.body_len;
                self.note(now, format_args!("S: (body cut off after {len} bytes)"));
            }
            let (outcome, by) = (self.tracker.outcome(), ended_by.clone().unwrap_or_else(|| self.ended_by()));
            let (d, m) = (self.tracker.downloads(), self.tracker.marked());
            self.note(now, format_args!("end: {outcome} ({by}); {d} downloaded, {m} marked"));
        }
        let t = &self.tracker;
        let end = SessionEnd {
            session: self.info.number,
            client: self.info.peer,
            upstream: self.info.run.upstream.clone(),
            user: t.user().map(str::to_owned),
            outcome: t.outcome(),
            state: t.state(),
            downloaded: t.downloads(),
            marked: t.marked(),
            at_risk: t.at_risk(),
            duplicates: 0,
            bytes_up: t.bytes_up(),
            bytes_down: t.bytes_down(),
            duration_ms: now.saturating_duration_since(self.info.started).as_millis() as u64,
            faults: std::mem::take(&mut self.faults),
            encrypted: t.encrypted(),
            tls: self.tls.take().map(|t| *t),
            violations: t.violations(),
            profile: self.engine.profile().name.clone(),
            fingerprints: self.tracker.take_fingerprints(),
            delivery: Delivery { damaged: u64::from(self.damaged), cut_midway: u64::from(cut_midway) },
            ended_by: ended_by.unwrap_or_else(|| self.ended_by()),
        };
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.latencies.drain(..).map(|s| s.event(self.info.number)));
        events.push(Event::SessionEnd(Box::new(end)));
        events
    }
}

mod decide;
mod plan;
mod transmit;

#[cfg(test)]
mod tests;

/// Whether a multi-line answer to `cmd` is (all or part of) a message.
fn is_message(cmd: &Command) -> bool {
    matches!(cmd, Command::Retr(_) | Command::Top(..))
}

/// The `point` of a manual cut's fault event (docs/EVENTS.md).
pub const MANUAL_POINT: &str = "k (dashboard)";
