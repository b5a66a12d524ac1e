//! The fault engine: pure. It is told protocol points and session facts,
//! and answers with decisions; the relay carries them out at the exact
//! byte. No sockets, no clock: time comes in as numbers.
//!
//! Randomness is deterministic per (run seed, session, rule, match): every
//! draw has its own RNG seeded from those, so a session's faults replay
//! identically whatever other sessions do and however bytes were chunked.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::action::Action;
use super::profile::{Millis, Profile, Rule};
use super::trigger::{LineSoFar, Point, Trigger};
use crate::codec::Command;
use crate::session::State;

/// What the session looks like at the point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    /// RFC 1939 state.
    pub state: State,
    /// Complete downloads so far in the session.
    pub retrieved: u64,
    /// Messages marked deleted now.
    pub deleted: u64,
    /// Time since the proxy started (for down windows).
    pub run_elapsed: Duration,
    /// The command's sequence number in the session, where there is one.
    pub seq: u64,
}

impl Facts {
    /// Facts at accept, `run_elapsed` into the run.
    pub fn at_accept(run_elapsed: Duration) -> Facts {
        Facts { state: State::Authorization, retrieved: 0, deleted: 0, run_elapsed, seq: 0 }
    }
}

/// A rule fired: what to do, and where it was, for the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The rule's name.
    pub rule: String,
    /// The trigger point with detail, e.g. `body RETR 3 #4 @1024`: the
    /// command with the message it names, its sequence number in the
    /// session, the body offset.
    pub point: String,
    /// The steps that won their probability roll, in order.
    pub actions: Vec<Action>,
}

/// A planned cut inside a body: act after exactly `at` body bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyCut {
    /// Body offset (bytes as on the wire, from the first byte after the
    /// status line).
    pub at: u64,
    /// What to do there.
    pub decision: Decision,
}

/// One session's fault engine.
#[derive(Debug, Clone)]
pub struct Engine {
    profile: Arc<Profile>,
    seed: u64,
    session: u64,
    selected: Vec<bool>,
    /// No rule applies to this session.
    inert: bool,
    matches: Vec<u32>,
    fired: Vec<u32>,
}

/// SplitMix64: a good 64-bit mixer, to derive independent seeds.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The RNG for one draw site: (seed, session, rule, match number).
pub fn rng_for(seed: u64, session: u64, rule: usize, n: u64) -> SmallRng {
    SmallRng::seed_from_u64(mix(mix(mix(seed) ^ session) ^ (rule as u64).wrapping_mul(0x100_0000_01b3)) ^ n)
}

/// Draws `ms ± jitter` milliseconds.
pub fn jittered(rng: &mut SmallRng, ms: u64, jitter_ms: u64) -> Duration {
    let j = if jitter_ms > 0 { rng.gen_range(0..=2 * jitter_ms) as i64 - jitter_ms as i64 } else { 0 };
    Duration::from_millis((ms as i64 + j).max(0) as u64)
}

impl Engine {
    /// The engine for session number `session` of a run seeded `seed`.
    /// Per-rule session filters are rolled here, once.
    pub fn new(profile: Arc<Profile>, seed: u64, session: u64) -> Engine {
        let selected = profile
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let s = r.sessions;
                s.every.is_none_or(|e| session % e == 0)
                    && s.first.is_none_or(|f| session <= f)
                    && s.probability.is_none_or(|p| rng_for(seed, session, i, u64::MAX).gen_bool(p.clamp(0.0, 1.0)))
            })
            .collect::<Vec<bool>>();
        let n = profile.rules.len();
        let inert = !selected.contains(&true);
        Engine { profile, seed, session, selected, inert, matches: vec![0; n], fired: vec![0; n] }
    }

    /// Whether no rule applies to this session (an empty profile, or
    /// `sessions` filters that left this one out): every decision is then
    /// empty, and a caller need not gather the facts for one.
    pub fn is_inert(&self) -> bool {
        self.inert
    }

    /// The profile this engine runs.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// Rules that fire at `point`, in rule order.
    pub fn decide(&mut self, point: &Point<'_>, facts: &Facts) -> Vec<Decision> {
        let when = point.trigger();
        let mut out = Vec::new();
        for i in 0..self.profile.rules.len() {
            let rule = &self.profile.rules[i];
            if rule.when != when || !self.applies(i, point.command(), facts) {
                continue;
            }
            let detail = match point.command() {
                Some(c) => format!("{} {} #{}", when.as_str(), shown(c), facts.seq),
                None => when.as_str().to_string(),
            };
            if let Some(d) = self.roll(i, detail) {
                out.push(d);
            }
        }
        out
    }

    /// For a multi-line response to `cmd` whose status line just arrived:
    /// the body cuts to make, sorted by offset. `size` is the message size
    /// the status line announced (`+OK 1234 octets`), for `fraction`.
    pub fn plan_body(&mut self, cmd: &Command, size: Option<u64>, facts: &Facts) -> Vec<BodyCut> {
        let mut out = Vec::new();
        for i in 0..self.profile.rules.len() {
            let rule = &self.profile.rules[i];
            if rule.when != Trigger::Body || !self.applies(i, Some(cmd), facts) {
                continue;
            }
            let at = match (rule.offset, rule.fraction, size) {
                (Some(o), _, _) => o,
                (None, Some(f), Some(size)) => (f * size as f64).floor() as u64,
                // A fraction of an unknown size: nothing to aim at.
                _ => continue,
            };
            let detail = format!("body {} #{} @{at}", shown(cmd), facts.seq);
            if let Some(decision) = self.roll(i, detail) {
                out.push(BodyCut { at, decision });
            }
        }
        out.sort_by_key(|c| c.at);
        out
    }

    /// Timer rules of this session: (delay from session start, rule index),
    /// delays drawn now.
    pub fn timers(&self) -> Vec<(Duration, usize)> {
        let mut out = Vec::new();
        for (i, rule) in self.profile.rules.iter().enumerate() {
            if rule.when != Trigger::Timer || !self.selected[i] {
                continue;
            }
            let ms = match rule.after_ms {
                Some(Millis::Fixed(ms)) => ms,
                Some(Millis::Range([lo, hi])) => rng_for(self.seed, self.session, i, u64::MAX - 1).gen_range(lo..=hi),
                None => continue,
            };
            out.push((Duration::from_millis(ms), i));
        }
        out.sort();
        out
    }

    /// A timer from [`timers`](Engine::timers) is due: does its rule fire?
    pub fn timer_due(&mut self, rule: usize, after: Duration, facts: &Facts) -> Option<Decision> {
        if self.profile.rules.get(rule)?.when != Trigger::Timer || !self.applies(rule, None, facts) {
            return None;
        }
        self.roll(rule, format!("timer @{}ms", after.as_millis()))
    }

    /// Whether a rule could still fire at the point this unfinished line
    /// will reach (`command`, `greeting` or `status`). Such a rule acts
    /// before the line goes on, so the caller must hold the line until it
    /// ends; otherwise it relays the bytes now. A rule that has fired its
    /// last, is out of this session, or names another command or state
    /// holds nothing; probabilities are not rolled here, so a rule that
    /// may fire holds the line.
    pub fn wants_whole_line(&self, line: LineSoFar<'_>, facts: &Facts) -> bool {
        if self.inert {
            return false;
        }
        let when = line.trigger();
        let command_fits: &dyn Fn(&str) -> bool = match &line {
            LineSoFar::Command(start) => &|want: &str| keyword_may_be(start, want),
            LineSoFar::Greeting => &|_: &str| false,
            LineSoFar::Status(cmd) => &|want: &str| cmd.name() == want,
        };
        self.profile.rules.iter().enumerate().any(|(i, rule)| {
            rule.when == when
                && self.selected[i]
                && (rule.repeat || self.fired[i] == 0)
                && rule.nth.is_none_or(|nth| self.matches[i] < nth)
                && rule.command.as_deref().is_none_or(command_fits)
                && rule.state.is_none_or(|s| s == facts.state)
                && facts.retrieved >= rule.min_retrieved
                && facts.deleted >= rule.min_deleted
        })
    }

    /// Filters other than the trigger point itself.
    fn applies(&self, i: usize, cmd: Option<&Command>, facts: &Facts) -> bool {
        let rule: &Rule = &self.profile.rules[i];
        if !self.selected[i] {
            return false;
        }
        if let Some(want) = &rule.command {
            if cmd.is_none_or(|c| c.name() != want) {
                return false;
            }
        }
        if rule.state.is_some_and(|s| s != facts.state) {
            return false;
        }
        if facts.retrieved < rule.min_retrieved || facts.deleted < rule.min_deleted {
            return false;
        }
        if let Some(w) = rule.window {
            let t = facts.run_elapsed.as_millis() as u64 % w.every_ms.max(1);
            if t >= w.down_ms {
                return false;
            }
        }
        true
    }

    /// Counts a match of rule `i` and rolls for it.
    fn roll(&mut self, i: usize, point: String) -> Option<Decision> {
        // Saturating: a peer can drive a repeat rule's count arbitrarily.
        self.matches[i] = self.matches[i].saturating_add(1);
        let n = self.matches[i];
        let rule = &self.profile.rules[i];
        if rule.nth.is_some_and(|nth| nth != n) {
            return None;
        }
        if !rule.repeat && self.fired[i] > 0 {
            return None;
        }
        let mut rng = rng_for(self.seed, self.session, i, n as u64);
        if rule.probability < 1.0 && !rng.gen_bool(rule.probability.clamp(0.0, 1.0)) {
            return None;
        }
        // Each step rolls in order; a certain one draws nothing, so adding
        // `probability = 1` changes no other draw.
        let actions: Vec<Action> = rule
            .actions
            .iter()
            .filter(|s| s.probability >= 1.0 || rng.gen_bool(s.probability.clamp(0.0, 1.0)))
            .map(|s| s.action.clone())
            .collect();
        self.fired[i] = self.fired[i].saturating_add(1);
        Some(Decision { rule: rule.name.clone(), point, actions })
    }
}

/// Whether a command line that starts with `start` may turn out to be the
/// command `want`: its keyword so far is a prefix of `want` (or all of it,
/// once a separator came). `OTHER` (any line that is not a known keyword)
/// may be anything until the line ends.
fn keyword_may_be(start: &[u8], want: &str) -> bool {
    if want == crate::codec::command::OTHER || !want.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return true;
    }
    let end = start.iter().position(|&b| b.is_ascii_whitespace() || b.is_ascii_control());
    let keyword = &start[..end.unwrap_or(start.len())];
    match end {
        Some(_) => keyword.eq_ignore_ascii_case(want.as_bytes()),
        None => keyword.len() <= want.len() && keyword.eq_ignore_ascii_case(&want.as_bytes()[..keyword.len()]),
    }
}

/// A command as a fault point names it: its label and the message number
/// it names, if any (`RETR 3`), never an argument that could be a secret.
fn shown(cmd: &Command) -> String {
    match cmd.message() {
        Some(n) => format!("{} {n}", cmd.name()),
        None => cmd.name().to_string(),
    }
}
