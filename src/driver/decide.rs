//! Decisions: the engine is asked at each point, and `act` is the one
//! place that interprets an action.

use std::time::Instant;

use rand::RngCore;

use super::{After, Dir, Driver, Effects, Fate, LATENCY_BATCH, LATENCY_MAX_HOLD, Sample};
use crate::codec::Command;
use crate::events::{Event, SessionSnapshot};
use crate::faults::engine::{jittered, rng_for};
use crate::faults::{
    Action, Corrupt, Decision, Delay, Disconnect, Facts, Limit, Linger, Noise, Point, Reply, Side, Stall, Throttle,
};
use crate::text::escape;

impl Driver {
    pub(super) fn facts(&self, seq: u64, now: Instant) -> Facts {
        Facts {
            state: self.tracker.state(),
            retrieved: self.tracker.downloads(),
            deleted: self.tracker.marked() as u64,
            run_elapsed: now.saturating_duration_since(self.info.run.run_started),
            seq,
        }
    }

    pub(super) fn fx(&mut self) -> &mut Effects {
        let (seed, number) = (self.info.seed, self.info.number);
        self.fx.get_or_insert_with(|| Box::new(Effects::new(rng_for(seed, number, usize::MAX, 0))))
    }

    /// Notes that `side` ended its connection, unless a peer's end was
    /// seen already: what follows a first end is its consequence.
    pub(super) fn note_end(&mut self, side: Side, reset: bool) {
        if self.first_end.is_none() {
            self.first_end = Some((side, reset));
        }
    }

    /// Emits the fault event of a decision and remembers the rule.
    pub(super) fn record(&mut self, d: &Decision, now: Instant) {
        self.faults.push(d.rule.clone());
        let action = if d.actions.is_empty() {
            "none".to_string()
        } else {
            d.actions.iter().map(Action::name).collect::<Vec<_>>().join("+")
        };
        self.note(now, format_args!("fault {}: {action} at {}", escape(&d.rule), d.point));
        self.events.push(Event::Fault {
            session: self.info.number,
            rule: d.rule.clone(),
            action,
            point: d.point.clone(),
        });
    }

    /// Runs the rules of `point`; the flow of the last that says anything.
    pub(super) fn decide_and_act(&mut self, point: Point<'_>, seq: u64, dir: Dir, now: Instant) -> Fate {
        if self.stopped {
            // Nothing is decided, or recorded, after a cut.
            return Fate::Stop;
        }
        if self.paused || self.engine.is_inert() {
            return Fate::Go;
        }
        let facts = self.facts(seq, now);
        let decisions = self.engine.decide(&point, &facts);
        let mut flow = Fate::Go;
        for d in decisions {
            self.record(&d, now);
            match self.act(d, dir, now) {
                Fate::Stop => return Fate::Stop,
                Fate::Go => {}
                f => flow = f,
            }
        }
        flow
    }

    /// Carries out a decision's steps, in order. `dir` is the direction of
    /// the bytes that triggered it (`corrupt` acts on those). This is the
    /// one place that interprets an action.
    pub(super) fn act(&mut self, d: Decision, dir: Dir, now: Instant) -> Fate {
        let mut flow = Fate::Go;
        for a in d.actions {
            match a {
                Action::Disconnect(Disconnect { side, how }) => {
                    self.cut = Some(Box::new((side, how, format!("fault: {}", d.rule))));
                    self.stopped = true;
                    return Fate::Stop;
                }
                Action::Stall(Stall { ms, jitter_ms }) => {
                    let until = now + jittered(&mut self.fx().rng, ms, jitter_ms);
                    let fx = self.fx();
                    fx.hold_until = Some(fx.hold_until.map_or(until, |h| h.max(until)));
                }
                Action::Noise(Noise { bytes, toward }) => {
                    let mut noise = vec![0u8; bytes];
                    self.fx().rng.fill_bytes(&mut noise);
                    self.fx().inject[Dir::toward(toward) as usize].extend_from_slice(&noise);
                    self.wake = true;
                }
                Action::Corrupt(Corrupt { bytes }) => self.fx().corrupt[dir as usize] += bytes,
                Action::Throttle(Throttle { bps }) => self.fx().rate = Some((bps / 8).max(1)),
                Action::Delay(Delay { ms, jitter_ms }) => self.fx().delay = Some((ms, jitter_ms)),
                Action::Reply(Reply { text }) => {
                    let mut line = text.into_bytes();
                    line.extend_from_slice(b"\r\n");
                    flow = Fate::Reply(line);
                }
                Action::Swallow(_) => flow = Fate::Swallow,
                // Refusals happen at accept, before there is a stream.
                Action::Refuse(_) => {}
                // Carried out once the cut's steps have run (`Driver::truncate`).
                Action::Truncate(_) => self.fx().truncate = true,
                Action::Linger(Linger { ms, toward }) => self.fx().linger[Dir::toward(toward) as usize] = Some(ms),
                Action::Limit(Limit { bytes, toward }) => {
                    self.fx().limit[Dir::toward(toward) as usize] = Some((bytes, d.rule.as_str().into()));
                }
            }
        }
        flow
    }

    /// What follows an event's delivery.
    pub(super) fn after(&mut self, after: After, now: Instant) -> Fate {
        match after {
            After::Forwarded(cmd, seq) => {
                self.progress();
                self.decide_and_act(Point::Forwarded(&cmd), seq, Dir::Up, now)
            }
            After::Response(seq, cmd) => self.response_done(seq, &cmd, now),
            After::Truncated { end } => {
                let fx = self.fx();
                // Cuts planned further in are past the end the client saw.
                fx.body_cuts.clear();
                fx.discard_body = !end;
                self.message_done(true, now);
                match self.answering.take() {
                    Some((seq, cmd)) => self.response_done(seq, &cmd, now),
                    None => Fate::Go,
                }
            }
            After::BodyEnd => {
                if let Some(f) = self.fx.as_deref_mut() {
                    f.body_cuts.clear();
                }
                self.message_done(false, now);
                match self.answering.take() {
                    Some((seq, cmd)) => self.response_done(seq, &cmd, now),
                    None => Fate::Go,
                }
            }
        }
    }

    /// The response being delivered ended (`truncated`: early, by a
    /// fault): count it if a fault changed it.
    fn message_done(&mut self, truncated: bool, now: Instant) {
        if (self.damaging || truncated) && self.answering.as_ref().is_some_and(|(_, cmd)| super::is_message(cmd)) {
            self.damaged = self.damaged.saturating_add(1);
        }
        self.damaging = false;
        self.body_out = false;
        let len = std::mem::take(&mut self.body_len);
        if self.info.run.transcripts {
            let how = if truncated { ", then ended early by truncate" } else { "" };
            self.note(now, format_args!("S: (body, {len} bytes{how})"));
        }
    }

    /// A response was delivered in full: latency, then `response` faults.
    pub(super) fn response_done(&mut self, seq: u64, cmd: &Command, now: Instant) -> Fate {
        if let Some(micros) = self.answered(seq, now) {
            self.latencies.push(Sample::new(seq, cmd.name(), micros));
        }
        // In bursts, so that a busy session does not wake the aggregator per
        // answer; but a slow one's answers still reach the screen soon.
        let held = now.saturating_duration_since(self.latencies_sent);
        if self.latencies.len() >= LATENCY_BATCH || !self.latencies.is_empty() && held >= LATENCY_MAX_HOLD {
            let number = self.info.number;
            self.events.extend(self.latencies.drain(..).map(|s| s.event(number)));
            self.latencies_sent = now;
        }
        self.decide_and_act(Point::Response(cmd), seq, Dir::Down, now)
    }

    /// Microseconds since `seq` was forwarded, once its response is
    /// delivered in full.
    pub(super) fn answered(&mut self, seq: u64, now: Instant) -> Option<u64> {
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

    pub(super) fn progress(&mut self) {
        if !self.info.run.wants_progress {
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
