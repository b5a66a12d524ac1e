//! What to do next, per direction: the current event's plan handed out
//! one `Transmit` at a time (writes shaped by the effects in force, waits,
//! acts at a byte), and what the tracker learns as each piece is written.

use std::ops::Range;
use std::time::{Duration, Instant};

use rand::Rng;

use super::{After, Dir, Driver, Fate, InFlight, Step, Stls, Track, Transmit};
use crate::codec::ServerEvent;
use crate::faults::{BodyLine, How, Side};

impl Driver {
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
        // Between events: the proxy's own answers that are due, in turn
        // (after a stall in force, as relayed answers are).
        if dir == Dir::Down
            && let Some(h) = self.hold_until().filter(|h| *h > now)
            && self.codec.synthetic_due()
        {
            return Transmit::Wait(h);
        }
        if dir == Dir::Down
            && let Some((cmd, seq)) = self.codec.take_synthetic()
            && let Some(reply) = self.fx.as_deref_mut().and_then(|f| f.replies.pop_front())
        {
            self.in_flight[1] = Some(InFlight::Reply(Box::new((cmd, seq, reply.clone()))));
            return Transmit::Own(reply);
        }
        // STLS answered by popfault: the client's next bytes are a TLS
        // handshake, for the shell; the server's wait until it is done.
        if (dir == Dir::Up && self.stls == Stls::Asked) || self.stls == Stls::Answered {
            return Transmit::StartTls;
        }
        if input.is_empty() {
            if !self.eof[dir as usize] {
                return Transmit::NeedMore;
            }
            if let Some(fx) = self.fx.as_deref_mut()
                && let Some(ms) = fx.linger[dir as usize]
            {
                // The close waits (`linger`); the bytes before it went on.
                let at = *fx.close_at[dir as usize].get_or_insert(now + Duration::from_millis(ms));
                if at > now {
                    return Transmit::Wait(at);
                }
            }
            return Transmit::Eof;
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
    pub(super) fn take_noise(&mut self, dir: Dir) -> Option<Transmit> {
        let fx = self.fx.as_deref_mut()?;
        if fx.inject[dir as usize].is_empty() {
            return None;
        }
        let noise = std::mem::take(&mut fx.inject[dir as usize]);
        self.in_flight[dir as usize] = Some(InFlight::Noise(noise.len()));
        Some(Transmit::Own(noise))
    }

    /// Carries out the current plan of `dir` up to its next write or wait.
    pub(super) fn advance(&mut self, dir: Dir, input: &[u8], now: Instant) -> Transmit {
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
                Some(Step::Act { .. }) => {
                    let Some(Step::Act { decision, at, end }) = plan.steps.pop_front() else { continue };
                    self.record(&decision, now);
                    if self.act(decision, dir, now) == Fate::Stop {
                        return Transmit::Stop;
                    }
                    if self.fx.as_deref_mut().is_some_and(|f| std::mem::take(&mut f.truncate)) {
                        self.truncate(dir, at, end);
                    }
                }
                Some(Step::Terminator { line, at }) => {
                    let (line, at) = (*line, *at);
                    let bytes = line.terminator();
                    self.in_flight[dir as usize] = Some(InFlight::Terminator(line, at));
                    return Transmit::Own(bytes.to_vec());
                }
                Some(Step::Insert(bytes)) => {
                    let bytes = *bytes;
                    plan.steps.pop_front();
                    self.in_flight[dir as usize] = Some(InFlight::Insert(bytes.len()));
                    return Transmit::Own(bytes.to_vec());
                }
                Some(Step::After(_)) => {
                    let Some(Step::After(after)) = plan.steps.pop_front() else { continue };
                    if self.after(after, now) == Fate::Stop {
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

    /// `truncate` at body offset `at`: the rest of this body event is
    /// dropped, and the terminator that closes the line in progress goes
    /// out instead (unshaped, like noise), so the client has a whole,
    /// short response. What follows of the server's body up to its real
    /// end is dropped too (`discard_body`), so the next answer the client
    /// reads is the server's next answer.
    pub(super) fn truncate(&mut self, dir: Dir, at: u64, end: bool) {
        let line = self.fx.as_deref().map_or(BodyLine::Start, |f| f.body_line);
        if let Some(plan) = self.plans[dir as usize].as_deref_mut() {
            plan.steps.clear();
            plan.steps.push_back(Step::Terminator { line, at });
            plan.steps.push_back(Step::After(After::Truncated { end }));
        }
    }

    /// The next piece of a relayed range, shaped by the effects in force:
    /// a stall, a line speed, corruption.
    pub(super) fn transmit_piece(&mut self, dir: Dir, input: &[u8], rest: Range<usize>, now: Instant) -> Transmit {
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
        let mut n = fx.rate.map_or(rest.len(), |r| rest.len().min((r as usize / 20).max(1)));
        if let Some((left, rule)) = &fx.limit[dir as usize] {
            if *left == 0 {
                // The limit was reached: close in order, as Toxiproxy's
                // limit_data closes the link.
                let why = format!("fault: {rule}");
                self.cut = Some(Box::new((Side::Both, How::Fin, why)));
                self.stopped = true;
                return Transmit::Stop;
            }
            n = n.min(usize::try_from(*left).unwrap_or(usize::MAX));
        }
        let piece = rest.start..rest.start + n;
        self.in_flight[dir as usize] = Some(InFlight::Piece(n));
        let flip = fx.corrupt[dir as usize];
        if flip == 0 {
            return Transmit::Write(piece);
        }
        // Bits flipped in a message the client is receiving damage it.
        self.damaging |= dir == Dir::Down && self.answering.is_some();
        let mut owned = input[piece].to_vec();
        let k = flip.min(owned.len());
        let fx = self.fx();
        for b in &mut owned[..k] {
            *b ^= 1 << fx.rng.gen_range(0..8);
        }
        fx.corrupt[dir as usize] -= k;
        Transmit::Own(owned)
    }

    /// `n` more bytes of the current relayed range were written.
    pub(super) fn piece_written(&mut self, dir: Dir, input: &[u8], n: usize, now: Instant) {
        if let Some(fx) = self.fx.as_deref_mut()
            && let Some(r) = fx.rate
        {
            fx.paced_until[dir as usize] = Some(now + Duration::from_secs_f64(n as f64 / r as f64));
        }
        if let Some(fx) = self.fx.as_deref_mut()
            && let Some((left, rule)) = &mut fx.limit[dir as usize]
        {
            *left = left.saturating_sub(n as u64);
            if *left == 0 {
                // Closed as soon as the limit is reached, not at the next byte.
                let why = format!("fault: {rule}");
                self.cut = Some(Box::new((Side::Both, How::Fin, why)));
                self.stopped = true;
            }
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
    pub(super) fn track(&mut self, dir: Dir, track: &Track, line: &[u8], piece: Range<usize>, whole: bool) {
        match track {
            Track::Unframed => self.tracker.on_unframed(dir == Dir::Up, piece.len()),
            Track::Server(ServerEvent::Body { offset, end }) => {
                let ev = ServerEvent::Body { offset: offset + piece.start as u64, end: *end && whole };
                self.tracker.on_server(&ev, &line[piece.clone()]);
                self.body_out = true;
                self.body_len = self.body_len.saturating_add(piece.len() as u32);
                if let Some(fx) = self.fx.as_deref_mut() {
                    fx.delivered_body(&line[piece]);
                }
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
                    self.body_out = true;
                    self.body_len = self.body_len.saturating_add((piece.end - from) as u32);
                    if let Some(fx) = self.fx.as_deref_mut() {
                        fx.delivered_body(&line[from..piece.end]);
                    }
                }
            }
            Track::Client(ev) if whole => self.tracker.on_client(ev, line, true),
            Track::Server(ev) if whole => self.tracker.on_server(ev, line),
            Track::Client(_) | Track::Server(_) => {}
        }
    }
}
