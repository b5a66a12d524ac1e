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
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};

use crate::codec::framer::{MAX_PENDING, NextServerLine};
use crate::codec::status::announced_size;
use crate::codec::{ClientEvent, Command, Pop3Codec, ServerEvent, Status};
use crate::events::{Event, SessionEnd, SessionSnapshot};
use crate::faults::engine::{jittered, rng_for};
use crate::faults::{Action, BodyCut, Decision, Engine, Facts, How, LineSoFar, Point, RefuseHow, Side};
use crate::session::Tracker;

/// Latency samples a session sends at once (and the rest when it ends):
/// each send may wake the aggregator, which costs more than the sample.
const LATENCY_BATCH: usize = 16;

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

/// What a session knows that does not change.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// Session number (1-based, in accept order).
    pub number: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// The upstream as configured.
    pub upstream: String,
    /// The run's seed.
    pub seed: u64,
    /// When the proxy started (for `window` rules).
    pub run_started: Instant,
    /// When the client connected.
    pub started: Instant,
    /// No byte either way for this long ends the session.
    pub idle_timeout: Duration,
    /// No greeting from upstream this long after accept ends the session.
    pub greeting_timeout: Duration,
    /// Someone draws live progress: send `Progress` events.
    pub wants_progress: bool,
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
#[derive(Debug, Default)]
struct Effects {
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
    /// Per direction: the line is busy with the last paced piece until then.
    paced_until: [Option<Instant>; 2],
    /// Added before each response: (ms, jitter ms).
    delay: Option<(u64, u64)>,
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
    /// Act on a decision made for this byte position (a body cut).
    Act(Decision),
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
}

/// What to do with a decision's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Go,
    Stop,
    Swallow,
    Reply(Vec<u8>),
}

/// One proxied session.
pub struct Driver {
    /// Boxed: read rarely, and every idle session carries the driver.
    info: Box<SessionInfo>,
    codec: Pop3Codec,
    tracker: Tracker,
    engine: Engine,
    /// Rule names that fired, in order.
    faults: Vec<String>,
    /// When each unanswered command was forwarded, oldest first.
    inflight: VecDeque<(u64, Instant)>,
    /// The multi-line response being delivered: (seq, command).
    answering: Option<(u64, Command)>,
    /// Fault effects in force; boxed, made when a fault first needs it.
    fx: Option<Box<Effects>>,
    /// Draws for fault effects, in the order they happen.
    rng: SmallRng,
    /// How a fault (or a person) cut the session.
    cut: Option<(Side, How, String)>,
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
    /// Timer rules not yet due: (delay from accept, rule).
    timers: VecDeque<(Duration, usize)>,
    paused: bool,
    /// Per direction: the event being carried out (boxed: idle sessions
    /// have none).
    plans: [Option<Box<Plan>>; 2],
    /// Per direction: a write handed out and not reported done.
    in_flight: [Option<InFlight>; 2],
    /// Per direction: the source sent FIN.
    eof: [bool; 2],
    events: Vec<Event>,
    /// Something was queued that the shell's other futures must see.
    wake: bool,
}

impl Driver {
    /// A session just accepted, running `engine`; emits `session_start`.
    pub fn new(info: SessionInfo, engine: Engine) -> Driver {
        let rng = rng_for(info.seed, info.number, usize::MAX, 0);
        let timers = engine.timers().into();
        let start = Event::SessionStart {
            session: info.number,
            client: info.peer,
            upstream: info.upstream.clone(),
            profile: engine.profile().name.clone(),
        };
        Driver {
            last_activity: info.started,
            info: Box::new(info),
            codec: Pop3Codec::new(),
            tracker: Tracker::new(),
            engine,
            faults: Vec::new(),
            inflight: VecDeque::new(),
            answering: None,
            fx: None,
            rng,
            cut: None,
            stopped: false,
            shutting_down: false,
            idle: false,
            no_greeting: false,
            first_end: None,
            latencies: Vec::new(),
            timers,
            paused: false,
            plans: [None, None],
            in_flight: [None, None],
            eof: [false, false],
            events: vec![start],
            wake: false,
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
        let (side, how, _) = self.cut.as_ref()?;
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

    /// Whether there are events to emit.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// When [`handle_timeout`](Driver::handle_timeout) is next due: a timer
    /// rule, the idle timeout, or the greeting timeout.
    pub fn poll_timeout(&self) -> Instant {
        let idle = self.last_activity + self.info.idle_timeout;
        let mut at = self.timers.front().map_or(idle, |(after, _)| idle.min(self.info.started + *after));
        if !self.codec.greeted() {
            at = at.min(self.info.started + self.info.greeting_timeout);
        }
        at
    }

    /// How the session ended, for humans: the side seen ending first, else
    /// shutdown or a timeout (a fault's cut names itself).
    pub fn ended_by(&self) -> String {
        if let Some((_, _, why)) = &self.cut {
            return why.clone();
        }
        match self.first_end {
            Some((side, reset)) => {
                let who = if side == Side::Client { "client" } else { "server" };
                format!("{} by {who}", if reset { "reset" } else { "closed" })
            }
            None if self.shutting_down => "cut at shutdown".into(),
            None if self.no_greeting => format!("no greeting from upstream within {:?}", self.info.greeting_timeout),
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
        let facts = Facts::at_accept(now.saturating_duration_since(self.info.run_started));
        let decisions = self.engine.decide(&Point::Accept, &facts);
        for d in &decisions {
            self.record(d);
            for a in &d.actions {
                if let Action::Refuse { how, text, .. } = a {
                    self.tracker.set_refused();
                    return Accept::Refuse { how: *how, text: text.clone(), rule: d.rule.clone() };
                }
            }
        }
        for d in decisions {
            if self.act(d, Dir::Up, now) == Flow::Stop {
                self.tracker.set_refused();
                return Accept::Cut;
            }
        }
        Accept::Connect
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

    /// A person cut the session (the dashboard's `k`): a lost carrier now.
    pub fn cut_manual(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        let disconnect = Action::Disconnect { side: Side::Both, how: How::Rst, probability: None };
        let d = Decision { rule: "manual".into(), point: "manual".into(), actions: vec![disconnect] };
        self.record(&d);
        self.act(d, Dir::Down, now);
    }

    /// Timer rules, the idle timeout and the greeting timeout, as of `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.stopped {
            return;
        }
        if !self.codec.greeted() && self.info.started + self.info.greeting_timeout <= now {
            self.no_greeting = true;
            self.stopped = true;
            return;
        }
        if self.last_activity + self.info.idle_timeout <= now {
            self.idle = true;
            self.stopped = true;
            return;
        }
        while let Some(&(after, rule)) = self.timers.front() {
            if self.info.started + after > now {
                break;
            }
            self.timers.pop_front();
            if self.paused {
                continue;
            }
            let facts = self.facts(0, now);
            if let Some(d) = self.engine.timer_due(rule, after, &facts) {
                self.record(&d);
                if self.act(d, Dir::Down, now) == Flow::Stop {
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
            InFlight::Noise(n) => self.tracker.on_unframed(dir == Dir::Up, n),
            InFlight::Reply(reply) => {
                let (cmd, seq, reply) = *reply;
                let status = Status::parse(&reply);
                self.tracker.on_server(&ServerEvent::Status { cmd, seq, status, multiline: false }, &reply);
            }
            InFlight::Piece(n) => self.piece_written(dir, input, n, now),
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
        let t = &self.tracker;
        let end = SessionEnd {
            session: self.info.number,
            client: self.info.peer,
            upstream: self.info.upstream.clone(),
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
            violations: t.violations(),
            profile: self.engine.profile().name.clone(),
            fingerprints: self.tracker.take_fingerprints(),
            ended_by: ended_by.unwrap_or_else(|| self.ended_by()),
        };
        let mut events = std::mem::take(&mut self.events);
        events.extend(self.latencies.drain(..).map(|s| s.event(self.info.number)));
        events.push(Event::SessionEnd(Box::new(end)));
        events
    }

    // === impl Driver: what to do next ===

    /// What `dir` should do next, given its `input` (bytes read and not
    /// yet consumed).
    pub fn poll_transmit(&mut self, dir: Dir, input: &[u8], now: Instant) -> Transmit {
        if self.stopped {
            return Transmit::Stop;
        }
        debug_assert!(self.in_flight[dir as usize].is_none(), "a write was handed out and not reported");
        if let Some(noise) = self.take_noise(dir) {
            return noise;
        }
        if self.plans[dir as usize].is_some() {
            return self.advance(dir, input, now);
        }
        // Between events: the proxy's own answers that are due, in turn.
        if dir == Dir::Down
            && let Some((cmd, seq)) = self.codec.take_synthetic()
            && let Some(reply) = self.fx.as_deref_mut().and_then(|f| f.replies.pop_front())
        {
            self.in_flight[1] = Some(InFlight::Reply(Box::new((cmd, seq, reply.clone()))));
            return Transmit::Own(reply);
        }
        if input.is_empty() {
            return if self.eof[dir as usize] { Transmit::Eof } else { Transmit::NeedMore };
        }
        match self.plan(dir, input, now) {
            Some(plan) => {
                self.plans[dir as usize] = Some(plan);
                self.advance(dir, input, now)
            }
            None if self.stopped => Transmit::Stop,
            None => Transmit::NeedMore,
        }
    }

    /// Injected noise goes out before the next relayed bytes, even inside
    /// an event.
    fn take_noise(&mut self, dir: Dir) -> Option<Transmit> {
        let fx = self.fx.as_deref_mut()?;
        if fx.inject[dir as usize].is_empty() {
            return None;
        }
        let noise = std::mem::take(&mut fx.inject[dir as usize]);
        self.in_flight[dir as usize] = Some(InFlight::Noise(noise.len()));
        Some(Transmit::Own(noise))
    }

    /// Carries out the current plan of `dir` up to its next write or wait.
    fn advance(&mut self, dir: Dir, input: &[u8], now: Instant) -> Transmit {
        loop {
            if self.stopped {
                return Transmit::Stop;
            }
            let Some(plan) = self.plans[dir as usize].as_deref_mut() else { return Transmit::NeedMore };
            match plan.steps.front_mut() {
                None => {
                    let n = plan.consumed;
                    self.plans[dir as usize] = None;
                    return Transmit::Consumed(n);
                }
                Some(Step::Wait(at)) => {
                    if *at > now {
                        return Transmit::Wait(*at);
                    }
                    plan.steps.pop_front();
                }
                Some(Step::Act(_)) => {
                    let Some(Step::Act(d)) = plan.steps.pop_front() else { continue };
                    self.record(&d);
                    if self.act(d, dir, now) == Flow::Stop {
                        return Transmit::Stop;
                    }
                }
                Some(Step::After(_)) => {
                    let Some(Step::After(after)) = plan.steps.pop_front() else { continue };
                    if self.after(after, now) == Flow::Stop {
                        return Transmit::Stop;
                    }
                }
                Some(Step::Relay { range, done, .. }) => {
                    let rest = range.start + *done..range.end;
                    if rest.is_empty() {
                        plan.steps.pop_front();
                        continue;
                    }
                    if let Some(noise) = self.take_noise(dir) {
                        return noise;
                    }
                    return self.transmit_piece(dir, input, rest, now);
                }
            }
        }
    }

    /// The next piece of a relayed range, shaped by the effects in force:
    /// a stall, a line speed, corruption.
    fn transmit_piece(&mut self, dir: Dir, input: &[u8], rest: Range<usize>, now: Instant) -> Transmit {
        let Some(fx) = self.fx.as_deref_mut() else {
            self.in_flight[dir as usize] = Some(InFlight::Piece(rest.len()));
            return Transmit::Write(rest);
        };
        if let Some(h) = fx.hold_until.filter(|h| *h > now) {
            return Transmit::Wait(h);
        }
        if let Some(p) = fx.paced_until[dir as usize].filter(|p| *p > now) {
            return Transmit::Wait(p);
        }
        // At a line speed, write in slices of ~50 ms worth.
        let n = fx.rate.map_or(rest.len(), |r| rest.len().min((r as usize / 20).max(1)));
        let piece = rest.start..rest.start + n;
        self.in_flight[dir as usize] = Some(InFlight::Piece(n));
        let flip = fx.corrupt[dir as usize];
        if flip == 0 {
            return Transmit::Write(piece);
        }
        let mut owned = input[piece].to_vec();
        let k = flip.min(owned.len());
        for b in &mut owned[..k] {
            *b ^= 1 << self.rng.gen_range(0..8);
        }
        if let Some(fx) = self.fx.as_deref_mut() {
            fx.corrupt[dir as usize] -= k;
        }
        Transmit::Own(owned)
    }

    /// `n` more bytes of the current relayed range were written.
    fn piece_written(&mut self, dir: Dir, input: &[u8], n: usize, now: Instant) {
        if let Some(fx) = self.fx.as_deref_mut()
            && let Some(r) = fx.rate
        {
            fx.paced_until[dir as usize] = Some(now + Duration::from_secs_f64(n as f64 / r as f64));
        }
        let Some(Step::Relay { range, track, done }) =
            self.plans[dir as usize].as_deref_mut().and_then(|p| p.steps.front_mut())
        else {
            return;
        };
        let (a, b) = (*done, *done + n);
        *done = b;
        let whole = b == range.len();
        let range = range.clone();
        let track = track.clone();
        self.track(dir, &track, &input[range], a..b, whole);
    }

    /// Tells the tracker about bytes `a..b` of `line` (an event's whole
    /// range): body bytes as they go, a line once it is whole.
    fn track(&mut self, dir: Dir, track: &Track, line: &[u8], piece: Range<usize>, whole: bool) {
        match track {
            Track::Unframed => self.tracker.on_unframed(dir == Dir::Up, piece.len()),
            Track::Server(ServerEvent::Body { offset, end }) => {
                let ev = ServerEvent::Body { offset: offset + piece.start as u64, end: *end && whole };
                self.tracker.on_server(&ev, &line[piece]);
            }
            Track::StatusAndBody(status, split, body) => {
                let split = *split;
                if piece.start < split && piece.end >= split {
                    self.tracker.on_server(status, &line[..split]);
                }
                let from = piece.start.max(split);
                if from < piece.end
                    && let ServerEvent::Body { offset, end } = body
                {
                    let ev = ServerEvent::Body { offset: offset + (from - split) as u64, end: *end && whole };
                    self.tracker.on_server(&ev, &line[from..piece.end]);
                }
            }
            Track::Client(ev) if whole => self.tracker.on_client(ev, line, true),
            Track::Server(ev) if whole => self.tracker.on_server(ev, line),
            Track::Client(_) | Track::Server(_) => {}
        }
    }

    // === impl Driver: planning an event ===

    /// Decodes the next event of `dir` in `input` and plans it; `None`
    /// when it needs more input (or the session stopped).
    fn plan(&mut self, dir: Dir, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        match dir {
            Dir::Up => self.plan_client(input, now),
            Dir::Down => self.plan_server(input, now),
        }
    }

    fn plan_client(&mut self, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        let started = self.codec.client_line_started();
        let step = self.codec.decode_client(input);
        let Some(ev) = step.event else {
            return self.incomplete(Dir::Up, input, now);
        };
        let n = step.consumed;
        let mut plan = Box::new(Plan { consumed: n, steps: VecDeque::new() });
        let ClientEvent::Command { cmd, overlong } = &ev else {
            plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Client(ev), done: 0 });
            return Some(plan);
        };
        // A line partly relayed already (over-long, or passed on before its
        // end because no rule wanted it whole) can only go on.
        if !*overlong && !started {
            let next = self.codec.next_seq();
            match self.decide_and_act(Point::Command(cmd), next, Dir::Up, now) {
                Flow::Stop => return None,
                Flow::Go => {}
                Flow::Swallow => {
                    self.tracker.on_client(&ev, &input[..n], false);
                    self.progress();
                    return Some(plan);
                }
                Flow::Reply(line) => {
                    if self.codec.replied(cmd).is_some() {
                        self.fx().replies.push_back(line);
                    }
                    self.tracker.on_client(&ev, &input[..n], false);
                    self.wake = true;
                    self.progress();
                    return Some(plan);
                }
            }
        }
        // Queued for framing before it is written: the answer can arrive
        // (and be decoded by the other direction) while a paced write of
        // the command is still going on.
        let seq = self.codec.forwarded(cmd);
        if self.inflight.len() < MAX_PENDING {
            self.inflight.push_back((seq, now));
        }
        let cmd = cmd.clone();
        plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Client(ev), done: 0 });
        plan.steps.push_back(Step::After(After::Forwarded(cmd, seq)));
        Some(plan)
    }

    fn plan_server(&mut self, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        let started = self.codec.server_line_started();
        let step = self.codec.decode_server(input);
        let Some(ev) = step.event else {
            return self.incomplete(Dir::Down, input, now);
        };
        let n = step.consumed;
        let mut plan = Box::new(Plan { consumed: n, steps: VecDeque::new() });
        match &ev {
            ServerEvent::Greeting(_) => {
                if self.decide_and_act(Point::Greeting, 0, Dir::Down, now) == Flow::Stop {
                    return None;
                }
                plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 });
            }
            ServerEvent::Status { cmd, seq, multiline, .. } => {
                let (cmd, seq, multiline) = (cmd.clone(), *seq, *multiline);
                if self.decide_and_act(Point::Status(&cmd), seq, Dir::Down, now) == Flow::Stop {
                    return None;
                }
                // A line passed on in parts was delayed before its start.
                if !started && let Some(wait) = self.delay_now() {
                    plan.steps.push_back(Step::Wait(now + wait));
                }
                if !multiline {
                    plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 });
                    plan.steps.push_back(Step::After(After::Response(seq, cmd)));
                    return Some(plan);
                }
                self.answering = Some((seq, cmd.clone()));
                // Plan the body's cuts first: they depend on nothing the
                // status line changes. An inert engine never plans one.
                if !self.paused && !self.engine.is_inert() {
                    let facts = self.facts(seq, now);
                    // Only RETR's "+OK n octets" is a message size.
                    let size = if matches!(cmd, Command::Retr(_)) { announced_size(&input[..n]) } else { None };
                    let cuts = self.engine.plan_body(&cmd, size, &facts);
                    if !cuts.is_empty() {
                        self.fx().body_cuts = cuts.into();
                    } else if let Some(f) = self.fx.as_deref_mut() {
                        f.body_cuts.clear();
                    }
                }
                let plain = self.fx.as_deref().is_none_or(|f| f.body_cuts.is_empty());
                // With nothing planned inside the body, the status line and
                // the body bytes already read go out in one write.
                let body = if plain { self.codec.decode_server(&input[n..]) } else { crate::codec::Step::NEED_MORE };
                match body.event {
                    Some(body_ev @ ServerEvent::Body { end, .. }) => {
                        let total = n + body.consumed;
                        plan.consumed = total;
                        let track = Track::StatusAndBody(ev, n, body_ev);
                        plan.steps.push_back(Step::Relay { range: 0..total, track, done: 0 });
                        if end {
                            plan.steps.push_back(Step::After(After::BodyEnd));
                        }
                    }
                    _ => plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 }),
                }
            }
            ServerEvent::Body { offset, end } => {
                let (offset, end) = (*offset, *end);
                let mut done = 0usize;
                while let Some(cut) = self.next_cut(offset + n as u64) {
                    // Exactly `cut.at` body bytes reach the client before it acts.
                    let upto = (cut.at.saturating_sub(offset) as usize).clamp(done, n);
                    if upto > done {
                        let track = Track::Server(ServerEvent::Body { offset: offset + done as u64, end: false });
                        let range = done..upto;
                        plan.steps.push_back(Step::Relay { range, track, done: 0 });
                        done = upto;
                    }
                    plan.steps.push_back(Step::Act(cut.decision));
                }
                let track = Track::Server(ServerEvent::Body { offset: offset + done as u64, end });
                plan.steps.push_back(Step::Relay { range: done..n, track, done: 0 });
                if end {
                    plan.steps.push_back(Step::After(After::BodyEnd));
                }
            }
            _ => plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 }),
        }
        Some(plan)
    }

    /// The next body cut before body offset `before`, if any.
    fn next_cut(&mut self, before: u64) -> Option<BodyCut> {
        let cuts = &mut self.fx.as_deref_mut()?.body_cuts;
        if cuts.front().is_some_and(|c| c.at < before) { cuts.pop_front() } else { None }
    }

    /// An incomplete line in `input`: held while a rule may want it whole,
    /// else relayed now (at EOF: relayed as it is).
    fn incomplete(&mut self, dir: Dir, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        let n = input.len();
        if self.eof[dir as usize] {
            let steps = VecDeque::from([Step::Relay { range: 0..n, track: Track::Unframed, done: 0 }]);
            return Some(Box::new(Plan { consumed: n, steps }));
        }
        if self.must_hold(dir, input) {
            return None;
        }
        let mut steps = VecDeque::new();
        let track = match dir {
            Dir::Up => Track::Client(self.codec.pass_client(input).event.unwrap_or(ClientEvent::LinePart)),
            Dir::Down => {
                // A delay in force is waited before a status line: before
                // its first byte when it goes on in parts.
                let answer = !self.codec.server_line_started()
                    && matches!(self.codec.next_server_line(), NextServerLine::Answer(_));
                if answer && let Some(wait) = self.delay_now() {
                    steps.push_back(Step::Wait(now + wait));
                }
                Track::Server(self.codec.pass_server(input).event.unwrap_or(ServerEvent::LinePart))
            }
        };
        steps.push_back(Step::Relay { range: 0..n, track, done: 0 });
        Some(Box::new(Plan { consumed: n, steps }))
    }

    /// Whether the incomplete line `rest` must wait for its end: a rule at
    /// the point it will reach may still want to act before any of it
    /// goes on. Never once part of it went on, never for SASL data, never
    /// while paused or with no rule in force.
    fn must_hold(&self, dir: Dir, rest: &[u8]) -> bool {
        if self.paused || self.engine.is_inert() {
            return false;
        }
        let line = match dir {
            Dir::Up if self.codec.client_line_started() || self.codec.next_client_line_is_sasl() => return false,
            Dir::Up => LineSoFar::Command(rest),
            Dir::Down if self.codec.server_line_started() => return false,
            Dir::Down => match self.codec.next_server_line() {
                NextServerLine::Greeting => LineSoFar::Greeting,
                NextServerLine::Answer(cmd) => LineSoFar::Status(cmd),
                NextServerLine::Other => return false,
            },
        };
        // The window of a `window` rule is not rolled here (see
        // `wants_whole_line`), so the run's clock does not matter.
        let facts = Facts {
            state: self.tracker.state(),
            retrieved: self.tracker.downloads(),
            deleted: self.tracker.marked() as u64,
            run_elapsed: Duration::ZERO,
            seq: self.codec.next_seq(),
        };
        self.engine.wants_whole_line(line, &facts)
    }

    /// A delay in force, drawn now.
    fn delay_now(&mut self) -> Option<Duration> {
        let (ms, jitter) = self.fx.as_deref().and_then(|f| f.delay)?;
        Some(jittered(&mut self.rng, ms, jitter))
    }

    // === impl Driver: decisions ===

    fn facts(&self, seq: u64, now: Instant) -> Facts {
        Facts {
            state: self.tracker.state(),
            retrieved: self.tracker.downloads(),
            deleted: self.tracker.marked() as u64,
            run_elapsed: now.saturating_duration_since(self.info.run_started),
            seq,
        }
    }

    fn fx(&mut self) -> &mut Effects {
        self.fx.get_or_insert_default()
    }

    /// Notes that `side` ended its connection, unless a peer's end was
    /// seen already: what follows a first end is its consequence.
    fn note_end(&mut self, side: Side, reset: bool) {
        if self.first_end.is_none() {
            self.first_end = Some((side, reset));
        }
    }

    /// Emits the fault event of a decision and remembers the rule.
    fn record(&mut self, d: &Decision) {
        self.faults.push(d.rule.clone());
        let action = if d.actions.is_empty() {
            "none".to_string()
        } else {
            d.actions.iter().map(Action::name).collect::<Vec<_>>().join("+")
        };
        self.events.push(Event::Fault {
            session: self.info.number,
            rule: d.rule.clone(),
            action,
            point: d.point.clone(),
        });
    }

    /// Runs the rules of `point`; the flow of the last that says anything.
    fn decide_and_act(&mut self, point: Point<'_>, seq: u64, dir: Dir, now: Instant) -> Flow {
        if self.stopped {
            // Nothing is decided, or recorded, after a cut.
            return Flow::Stop;
        }
        if self.paused || self.engine.is_inert() {
            return Flow::Go;
        }
        let facts = self.facts(seq, now);
        let decisions = self.engine.decide(&point, &facts);
        let mut flow = Flow::Go;
        for d in decisions {
            self.record(&d);
            match self.act(d, dir, now) {
                Flow::Stop => return Flow::Stop,
                Flow::Go => {}
                f => flow = f,
            }
        }
        flow
    }

    /// Carries out a decision's steps, in order. `dir` is the direction of
    /// the bytes that triggered it (`corrupt` acts on those). This is the
    /// one place that interprets an action.
    fn act(&mut self, d: Decision, dir: Dir, now: Instant) -> Flow {
        let mut flow = Flow::Go;
        for a in d.actions {
            match a {
                Action::Disconnect { side, how, .. } => {
                    self.cut = Some((side, how, format!("fault: {}", d.rule)));
                    self.stopped = true;
                    return Flow::Stop;
                }
                Action::Stall { ms, jitter_ms, .. } => {
                    let until = now + jittered(&mut self.rng, ms, jitter_ms);
                    let fx = self.fx();
                    fx.hold_until = Some(fx.hold_until.map_or(until, |h| h.max(until)));
                }
                Action::Noise { bytes, toward, .. } => {
                    let mut noise = vec![0u8; bytes];
                    self.rng.fill_bytes(&mut noise);
                    self.fx().inject[Dir::toward(toward) as usize].extend_from_slice(&noise);
                    self.wake = true;
                }
                Action::Corrupt { bytes, .. } => self.fx().corrupt[dir as usize] += bytes,
                Action::Throttle { bps, .. } => self.fx().rate = Some((bps / 8).max(1)),
                Action::Delay { ms, jitter_ms, .. } => self.fx().delay = Some((ms, jitter_ms)),
                Action::Reply { text, .. } => {
                    let mut line = text.into_bytes();
                    line.extend_from_slice(b"\r\n");
                    flow = Flow::Reply(line);
                }
                Action::Swallow { .. } => flow = Flow::Swallow,
                // Refusals happen at accept, before there is a stream.
                Action::Refuse { .. } => {}
            }
        }
        flow
    }

    /// What follows an event's delivery.
    fn after(&mut self, after: After, now: Instant) -> Flow {
        match after {
            After::Forwarded(cmd, seq) => {
                self.progress();
                self.decide_and_act(Point::Forwarded(&cmd), seq, Dir::Up, now)
            }
            After::Response(seq, cmd) => self.response_done(seq, &cmd, now),
            After::BodyEnd => {
                if let Some(f) = self.fx.as_deref_mut() {
                    f.body_cuts.clear();
                }
                match self.answering.take() {
                    Some((seq, cmd)) => self.response_done(seq, &cmd, now),
                    None => Flow::Go,
                }
            }
        }
    }

    /// A response was delivered in full: latency, then `response` faults.
    fn response_done(&mut self, seq: u64, cmd: &Command, now: Instant) -> Flow {
        if let Some(micros) = self.answered(seq, now) {
            self.latencies.push(Sample::new(seq, cmd.name(), micros));
        }
        if self.latencies.len() >= LATENCY_BATCH {
            let number = self.info.number;
            self.events.extend(self.latencies.drain(..).map(|s| s.event(number)));
        }
        self.decide_and_act(Point::Response(cmd), seq, Dir::Down, now)
    }

    /// Microseconds since `seq` was forwarded, once its response is
    /// delivered in full.
    fn answered(&mut self, seq: u64, now: Instant) -> Option<u64> {
        while let Some(&(s, at)) = self.inflight.front() {
            if s > seq {
                return None;
            }
            self.inflight.pop_front();
            if s == seq {
                return Some(now.saturating_duration_since(at).as_micros() as u64);
            }
        }
        None
    }

    fn progress(&mut self) {
        if !self.info.wants_progress {
            return;
        }
        let t = &self.tracker;
        self.events.push(Event::Progress(Box::new(SessionSnapshot {
            session: self.info.number,
            state: t.state(),
            user: t.user().map(str::to_owned),
            last_command: t.last_command(),
            downloaded: t.downloads(),
            marked: t.marked(),
            bytes_up: t.bytes_up(),
            bytes_down: t.bytes_down(),
        })));
    }
}

#[cfg(test)]
mod tests;
