//! Planning an event: what the bytes of the next client or server event
//! become (writes, waits, acts at a byte, what follows), decided once when
//! the event is decoded and carried out by `Driver::advance`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::{After, ClientStls, Dir, Driver, Fate, Plan, Step, Stls, Track};
use crate::codec::command::trim_eol;
use crate::codec::framer::{MAX_PENDING, NextServerLine};
use crate::codec::status::announced_size;
use crate::codec::{ClientEvent, Command, ServerEvent};
use crate::faults::engine::jittered;
use crate::faults::{BodyCut, BodyLine, Facts, LineSoFar, Point};
use crate::session::State;
use crate::text::escape;

impl Driver {
    /// Decodes the next event of `dir` in `input` and plans it; `None`
    /// when it needs more input (or the session stopped).
    pub(super) fn plan(&mut self, dir: Dir, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        match dir {
            Dir::Up => self.plan_client(input, now),
            Dir::Down => self.plan_server(input, now),
        }
    }

    pub(super) fn plan_client(&mut self, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        let started = self.codec.client_line_started();
        let step = self.codec.decode_client(input);
        let Some(ev) = step.event else {
            return self.incomplete(Dir::Up, input, now);
        };
        let n = step.consumed;
        let mut plan = Box::new(Plan { consumed: n, steps: VecDeque::new() });
        let ClientEvent::Command { cmd, overlong } = &ev else {
            match &ev {
                ClientEvent::SaslResponse { cancel: true } => self.note(now, format_args!("C: * (SASL cancelled)")),
                ClientEvent::SaslResponse { .. } => self.note(now, format_args!("C: (SASL response, {n} bytes)")),
                ClientEvent::Opaque if !self.tracker.encrypted() => {
                    self.note(now, format_args!("C: (TLS from here on, relayed without looking)"))
                }
                _ => {}
            }
            plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Client(ev), done: 0 });
            return Some(plan);
        };
        // A line partly relayed already (over-long, or passed on before its
        // end because no rule wanted it whole) can only go on.
        if !*overlong && !started {
            let next = self.codec.next_seq();
            let mut fate = self.decide_and_act(Point::Command(cmd), next, Dir::Up, now);
            if fate == Fate::Go && *cmd == Command::Stls && self.info.run.client_stls != ClientStls::Relay {
                fate = Fate::Reply(self.answer_stls());
            }
            match fate {
                Fate::Stop => return None,
                Fate::Go => {}
                Fate::Swallow => {
                    self.note(now, format_args!("C: {cmd} (swallowed: never forwarded, never answered)"));
                    self.tracker.on_client(&ev, &input[..n], false);
                    self.progress();
                    return Some(plan);
                }
                Fate::Reply(line) => {
                    let answer = escape(&String::from_utf8_lossy(trim_eol(&line))).into_owned();
                    self.note(now, format_args!("C: {cmd} (answered by popfault: {answer})"));
                    if self.codec.replied(cmd).is_some() {
                        self.fx().replies.push_back(line);
                    } else if self.stls == Stls::Asked {
                        // Past the pipeline's bound nothing is answered:
                        // no handshake follows either.
                        self.stls = Stls::Offered;
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
        self.note(now, format_args!("C: {cmd}"));
        let seq = self.codec.forwarded(cmd);
        if self.inflight.len() < MAX_PENDING {
            self.inflight.push_back((seq, now));
        }
        let cmd = cmd.clone();
        plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Client(ev), done: 0 });
        plan.steps.push_back(Step::After(After::Forwarded(cmd, seq)));
        Some(plan)
    }

    pub(super) fn plan_server(&mut self, input: &[u8], now: Instant) -> Option<Box<Plan>> {
        let started = self.codec.server_line_started();
        let step = self.codec.decode_server(input);
        let Some(ev) = step.event else {
            return self.incomplete(Dir::Down, input, now);
        };
        let n = step.consumed;
        let mut plan = Box::new(Plan { consumed: n, steps: VecDeque::new() });
        if self.info.run.transcripts
            && matches!(
                ev,
                ServerEvent::Greeting(_)
                    | ServerEvent::Status { .. }
                    | ServerEvent::Continuation
                    | ServerEvent::Unsolicited
            )
        {
            // The status line as the server sent it (its start, when it
            // went on in parts), shown safely and not too long.
            let text = String::from_utf8_lossy(trim_eol(&input[..n]));
            let text: String = text.chars().take(200).collect();
            let part = if started { "…" } else { "" };
            let text = escape(&text).into_owned();
            self.note(now, format_args!("S: {part}{text}"));
        }
        match &ev {
            ServerEvent::Greeting(_) => {
                if self.decide_and_act(Point::Greeting, 0, Dir::Down, now) == Fate::Stop {
                    return None;
                }
                plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 });
            }
            ServerEvent::Status { cmd, seq, multiline, .. } => {
                let (cmd, seq, multiline) = (cmd.clone(), *seq, *multiline);
                if self.decide_and_act(Point::Status(&cmd), seq, Dir::Down, now) == Fate::Stop {
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
                // The client's TLS ends here: STLS is offered in the CAPA
                // answer, whatever the server says (a server that lists it
                // too is listed twice, which clients read as once).
                let offer = cmd == Command::Capa
                    && self.info.run.client_stls == ClientStls::Answer
                    && self.stls == Stls::Offered
                    && self.tracker.state() == State::Authorization;
                // Plan the body's cuts first: they depend on nothing the
                // status line changes. An inert engine never plans one.
                if !self.paused && !self.engine.is_inert() {
                    let facts = self.facts(seq, now);
                    // Only RETR's "+OK n octets" is a message size.
                    let size = if matches!(cmd, Command::Retr(_)) { announced_size(&input[..n]) } else { None };
                    let cuts = self.engine.plan_body(&cmd, size, &facts);
                    if !cuts.is_empty() {
                        let fx = self.fx();
                        fx.body_cuts = cuts.into();
                        fx.body_line = BodyLine::Start;
                    } else if let Some(f) = self.fx.as_deref_mut() {
                        f.body_cuts.clear();
                    }
                }
                let plain = self.fx.as_deref().is_none_or(|f| f.body_cuts.is_empty());
                // With nothing planned inside the body, the status line and
                // the body bytes already read go out in one write.
                let body =
                    if plain && !offer { self.codec.decode_server(&input[n..]) } else { crate::codec::Step::NEED_MORE };
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
                    _ => {
                        plan.steps.push_back(Step::Relay { range: 0..n, track: Track::Server(ev), done: 0 });
                        if offer {
                            plan.steps.push_back(Step::Insert(b"STLS\r\n"));
                        }
                    }
                }
            }
            ServerEvent::Body { offset, end } => {
                let (offset, end) = (*offset, *end);
                if let Some(f) = self.fx.as_deref_mut().filter(|f| f.discard_body) {
                    // Truncated: the client has seen this body end already.
                    f.discard_body = !end;
                    return Some(plan);
                }
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
                    let at = offset + done as u64;
                    plan.steps.push_back(Step::Act { decision: cut.decision, at, end });
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

    /// popfault's own answer to the client's STLS (`ClientStls::Answer`,
    /// `Refuse`): yes once,
    /// in the AUTHORIZATION state (RFC 2595 §4), no otherwise.
    fn answer_stls(&mut self) -> Vec<u8> {
        if self.info.run.client_stls == ClientStls::Refuse {
            return b"-ERR STLS not available here\r\n".to_vec();
        }
        if self.stls != Stls::Offered {
            return b"-ERR TLS is already active\r\n".to_vec();
        }
        // Decided now, answered in turn: a login pipelined before it may
        // still end the AUTHORIZATION state.
        if self.tracker.state() != State::Authorization || self.codec.login_pending() {
            return b"-ERR STLS only before login\r\n".to_vec();
        }
        self.stls = Stls::Asked;
        STLS_OK.to_vec()
    }

    /// The next body cut before body offset `before`, if any.
    pub(super) fn next_cut(&mut self, before: u64) -> Option<BodyCut> {
        let cuts = &mut self.fx.as_deref_mut()?.body_cuts;
        if cuts.front().is_some_and(|c| c.at < before) { cuts.pop_front() } else { None }
    }

    /// An incomplete line in `input`: held while a rule may want it whole,
    /// else relayed now (at EOF: relayed as it is).
    pub(super) fn incomplete(&mut self, dir: Dir, input: &[u8], now: Instant) -> Option<Box<Plan>> {
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
    pub(super) fn must_hold(&self, dir: Dir, rest: &[u8]) -> bool {
        // A line that may yet be STLS waits whole when popfault answers it.
        if dir == Dir::Up
            && self.info.run.client_stls != ClientStls::Relay
            && !self.codec.client_line_started()
            && could_be_stls(rest)
        {
            return true;
        }
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
    pub(super) fn delay_now(&mut self) -> Option<Duration> {
        let (ms, jitter) = self.fx.as_deref().and_then(|f| f.delay)?;
        Some(jittered(&mut self.fx().rng, ms, jitter))
    }
}

/// Whether `rest` (a client line so far, without its end) may still be
/// `STLS`: a case-insensitive prefix of `STLS`, or `STLS` and then only
/// blanks (the codec reads `STLS ` as STLS too).
fn could_be_stls(rest: &[u8]) -> bool {
    let n = rest.len().min(4);
    rest[..n].eq_ignore_ascii_case(&b"STLS"[..n]) && rest[n..].iter().all(|b| matches!(b, b' ' | b'\t' | b'\r'))
}

/// popfault's `+OK` to a client's STLS (`ClientStls::Answer`).
pub(super) const STLS_OK: &[u8] = b"+OK Begin TLS negotiation now\r\n";
