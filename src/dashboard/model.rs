//! The dashboard's model: what the panels show. Pure (no I/O, no clock;
//! the caller says what time it is).
//!
//! It counts nothing. The counters and percentiles are a [`Totals`] of the
//! run's one fold ([`crate::stats::Stats`]), handed in whole now and then
//! ([`Model::set_totals`]); the model itself folds only what the screen
//! alone needs: live and recently ended session rows, the event log, the
//! throughput samples. A session's duplicates come from the fold's answer
//! ([`Folded`]), given with its end.
//!
//! Everything it holds is bounded whatever the load, and cloning it is cheap
//! (the totals, rows and log lines sit behind `Arc`s and are copied only
//! when written while a snapshot still shares them), so the UI can take a
//! snapshot ten times a second and draw without holding any lock.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Duration;

use crate::events::{Event, SessionEnd, SessionSnapshot};
use crate::session::{Outcome, State};
use crate::stats::{Folded, Percentiles, Totals};
use crate::text::escape;

/// Most recently ended sessions kept for the table.
pub const MAX_ENDED: usize = 200;
/// Most live sessions tracked. Past it the lowest-numbered one is forgotten:
/// events can be dropped when the queue is full, so a session whose end was
/// lost must not stay in memory for ever.
pub const MAX_LIVE: usize = 10_000;
/// Lines kept in the event log.
pub const MAX_LOG: usize = 200;
/// Sessions whose transcript the screen keeps (the newest), and lines kept
/// of each (the last): the session view's bound.
pub const MAX_TRANSCRIPTS: usize = 256;
/// See [`MAX_TRANSCRIPTS`].
pub const MAX_TRANSCRIPT_LINES: usize = 300;
/// Throughput samples kept (at [`SAMPLE_PERIOD`], about four minutes).
pub const MAX_SAMPLES: usize = 512;
/// Shortest time between two throughput samples: shorter ticks are folded
/// into the next sample so rates are not dominated by timer jitter.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(500);
/// Fault names kept per session row (the count stays exact).
const MAX_ROW_FAULTS: usize = 8;
/// Longest text kept from an event field (user names, commands, rules).
const MAX_TEXT: usize = 96;

/// How a session ended, as the table and log show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The outcome (docs/ARCHITECTURE.md, "Outcome mapping").
    pub outcome: Outcome,
    /// Messages at risk of a second download.
    pub at_risk: usize,
    /// Duplicate downloads observed in this session.
    pub duplicates: u64,
    /// How the connection ended, for humans.
    pub ended_by: String,
    /// When it ended (since the start of the run).
    pub at: Duration,
    /// STLS succeeded: the rest was not inspected.
    pub encrypted: bool,
}

/// One row of the sessions table: a live or recently ended session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// Session number.
    pub session: u64,
    /// The client's address, once known.
    pub client: Option<SocketAddr>,
    /// User name, if given.
    pub user: Option<String>,
    /// RFC 1939 state.
    pub state: State,
    /// Last command, redacted by the tracker.
    pub last_command: Option<String>,
    /// Complete downloads.
    pub downloaded: u64,
    /// Messages marked for deletion.
    pub marked: usize,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// Bytes server → client.
    pub bytes_down: u64,
    /// Names of fault rules that fired, oldest first (at most a few).
    pub faults: Vec<String>,
    /// Faults fired in total.
    pub fault_count: u64,
    /// The profile the session runs under.
    pub profile: String,
    /// The proxy it goes through, in the view of many proxies (`popfault
    /// api`); `None` with one proxy.
    pub proxy: Option<Arc<str>>,
    /// When it was first seen (since the start of the run).
    pub started: Duration,
    /// Set once it ended.
    pub end: Option<Ended>,
}

impl SessionRow {
    fn new(session: u64, now: Duration) -> SessionRow {
        SessionRow {
            session,
            client: None,
            user: None,
            state: State::Authorization,
            last_command: None,
            downloaded: 0,
            marked: 0,
            bytes_up: 0,
            bytes_down: 0,
            faults: Vec::new(),
            fault_count: 0,
            profile: String::new(),
            proxy: None,
            started: now,
            end: None,
        }
    }

    /// A row just seen, for tests of what shows it.
    #[cfg(test)]
    pub(crate) fn example(session: u64) -> SessionRow {
        SessionRow::new(session, Duration::ZERO)
    }

    /// Whether the session is still running.
    pub fn is_live(&self) -> bool {
        self.end.is_none()
    }

    /// Whether the table filter `needle` (lower case) matches this row: its
    /// user, outcome (or `live`), a fault rule, its state, or its proxy.
    pub fn matches(&self, needle: &str) -> bool {
        if needle.is_empty() {
            return true;
        }
        let has = |s: &str| s.to_lowercase().contains(needle);
        let outcome = self.end.as_ref().map_or("live", |e| e.outcome.as_str());
        // The table's short labels and the RFC's names.
        let state = match self.state {
            State::Authorization => "auth authorization",
            State::Transaction => "trans transaction",
            State::Update => "update",
        };
        self.user.as_deref().is_some_and(has)
            || has(outcome)
            || self.faults.iter().any(|f| has(f))
            || has(state)
            || self.proxy.as_deref().is_some_and(has)
    }

    /// The last fault fired, if any.
    pub fn last_fault(&self) -> Option<&str> {
        self.faults.last().map(String::as_str)
    }

    fn progress(&mut self, p: &SessionSnapshot) {
        self.state = p.state;
        if let Some(u) = &p.user {
            self.user = Some(clean(u));
        }
        if let Some(c) = &p.last_command {
            self.last_command = Some(clean(c));
        }
        self.downloaded = p.downloaded;
        self.marked = p.marked;
        self.bytes_up = p.bytes_up;
        self.bytes_down = p.bytes_down;
    }

    fn fault(&mut self, rule: &str) {
        self.fault_count += 1;
        if self.faults.len() == MAX_ROW_FAULTS {
            self.faults.remove(0);
        }
        self.faults.push(clean(rule));
    }

    fn finish(&mut self, e: &SessionEnd, duplicates: u64, now: Duration) {
        self.client = Some(e.client);
        if let Some(u) = &e.user {
            self.user = Some(clean(u));
        }
        self.state = e.state;
        self.downloaded = e.downloaded;
        self.marked = e.marked;
        self.bytes_up = e.bytes_up;
        self.bytes_down = e.bytes_down;
        self.profile = clean(&e.profile);
        // The end's list is authoritative (fault events may have been dropped).
        if !e.faults.is_empty() || self.fault_count == 0 {
            self.fault_count = e.faults.len() as u64;
            let skip = e.faults.len().saturating_sub(MAX_ROW_FAULTS);
            self.faults = e.faults[skip..].iter().map(|f| clean(f)).collect();
        }
        self.end = Some(Ended {
            outcome: e.outcome,
            at_risk: e.at_risk,
            duplicates,
            ended_by: clean(&e.ended_by),
            at: now,
            encrypted: e.encrypted,
        });
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// When (since the start of the run).
    pub at: Duration,
    /// Session number.
    pub session: u64,
    /// What happened.
    pub kind: LogKind,
}

/// What a log line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogKind {
    /// A fault rule fired.
    Fault {
        /// Rule name.
        rule: String,
        /// What it did.
        action: String,
        /// Where.
        point: String,
    },
    /// A session ended.
    End {
        /// Its outcome.
        outcome: Outcome,
        /// Messages at risk of a second download.
        at_risk: usize,
        /// Duplicate downloads observed.
        duplicates: u64,
        /// How the connection ended.
        ended_by: String,
    },
}

/// Throughput over one sample period, in bytes per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rate {
    /// Client → server.
    pub up: u64,
    /// Server → client.
    pub down: u64,
}

/// Everything the dashboard shows. See the module docs.
#[derive(Debug, Clone)]
pub struct Model {
    /// The fold's totals as last handed in.
    totals: Arc<Totals>,
    /// Live rows dropped past [`MAX_LIVE`]: the screen's own bound.
    forgotten: u64,
    live: BTreeMap<u64, Arc<SessionRow>>,
    /// Most recently ended last.
    ended: VecDeque<Arc<SessionRow>>,
    log: VecDeque<Arc<LogLine>>,
    samples: VecDeque<Rate>,
    last_sample: Option<(u64, u64, Duration)>,
    now: Duration,
    /// Sessions' transcripts, for the session view: shared with snapshots,
    /// copied on write.
    transcripts: BTreeMap<u64, Arc<VecDeque<Arc<str>>>>,
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

/// Event text made safe to draw and bounded: control characters (an
/// escape sequence in a rule name) would reach the terminal otherwise.
fn clean(s: &str) -> String {
    escape(s).chars().take(MAX_TEXT).collect()
}

// === impl Model ===

impl Model {
    /// An empty model.
    pub fn new() -> Model {
        Model {
            totals: Arc::default(),
            forgotten: 0,
            live: BTreeMap::new(),
            ended: VecDeque::new(),
            log: VecDeque::new(),
            samples: VecDeque::new(),
            last_sample: None,
            now: Duration::ZERO,
            transcripts: BTreeMap::new(),
        }
    }

    /// Session `session`'s transcript so far (its last lines), if the
    /// screen has it.
    pub fn transcript(&self, session: u64) -> Option<&VecDeque<Arc<str>>> {
        self.transcripts.get(&session).map(|t| &**t)
    }

    /// Shows one event; `folded` is what the run's fold answered for it
    /// ([`crate::stats::Stats::apply`]), `now` the time since the run
    /// started. Counts nothing: see [`Model::set_totals`].
    /// [`apply`](Model::apply) in the view of many proxies: the session's
    /// row also learns which proxy it goes through (session numbers are
    /// unique across a fleet's proxies).
    pub fn apply_from(&mut self, proxy: &Arc<str>, ev: &Event, folded: Folded, now: Duration) {
        self.apply(ev, folded, now);
        let session = match ev {
            Event::SessionStart { session, .. } => *session,
            Event::Progress(p) => p.session,
            Event::SessionEnd(e) => e.session,
            _ => return,
        };
        let row = match self.live.get_mut(&session) {
            Some(row) => row,
            None => match self.ended.back_mut().filter(|r| r.session == session) {
                Some(row) => row,
                None => return,
            },
        };
        if row.proxy.is_none() {
            Arc::make_mut(row).proxy = Some(proxy.clone());
        }
    }

    pub fn apply(&mut self, ev: &Event, folded: Folded, now: Duration) {
        self.now = self.now.max(now);
        match ev {
            Event::SessionStart { session, client, profile, .. } => {
                let row = self.live_row(*session, now);
                row.client = Some(*client);
                row.profile = clean(profile);
            }
            Event::Progress(p) => {
                // A late progress report for a session that already ended
                // must not bring it back to life.
                if self.live.contains_key(&p.session) || !self.ended.iter().any(|r| r.session == p.session) {
                    self.live_row(p.session, now).progress(p);
                }
            }
            Event::Fault { session, rule, action, point } => {
                if let Some(row) = self.live.get_mut(session) {
                    Arc::make_mut(row).fault(rule);
                }
                self.log_line(LogLine {
                    at: now,
                    session: *session,
                    kind: LogKind::Fault { rule: clean(rule), action: clean(action), point: clean(point) },
                });
            }
            // Latency is counted by the fold alone; its totals show it.
            Event::Latency { .. } => {}
            Event::Transcript { session, line } => {
                if !self.transcripts.contains_key(session) && self.transcripts.len() >= MAX_TRANSCRIPTS {
                    // The oldest session makes room for a newer one.
                    match self.transcripts.keys().next().copied() {
                        Some(oldest) if oldest < *session => {
                            self.transcripts.remove(&oldest);
                        }
                        _ => return,
                    }
                }
                let lines = Arc::make_mut(self.transcripts.entry(*session).or_default());
                if lines.len() >= MAX_TRANSCRIPT_LINES {
                    lines.pop_front();
                }
                lines.push_back(Arc::from(escape(line).as_ref()));
            }
            Event::SessionEnd(e) => self.session_end(e, folded.duplicates, now),
        }
    }

    /// The fold's totals to show from now on (outcomes, sums, faults,
    /// latency): shared, not copied.
    pub fn set_totals(&mut self, totals: Arc<Totals>) {
        self.totals = totals;
    }

    /// Records the global byte counters (as returned by
    /// [`crate::control::Control::bytes`]); call once per UI tick. A rate
    /// sample is taken when at least [`SAMPLE_PERIOD`] has passed since the
    /// last one.
    pub fn sample_bytes(&mut self, up: u64, down: u64, now: Duration) {
        self.now = self.now.max(now);
        let Some((u0, d0, t0)) = self.last_sample else {
            self.last_sample = Some((up, down, now));
            return;
        };
        let dt = now.saturating_sub(t0);
        if dt < SAMPLE_PERIOD {
            return;
        }
        let per_sec = |delta: u64| (delta as u128 * 1_000_000 / dt.as_micros().max(1)) as u64;
        // saturating_sub: counters that went backwards (a new proxy) read as idle.
        let rate = Rate { up: per_sec(up.saturating_sub(u0)), down: per_sec(down.saturating_sub(d0)) };
        if self.samples.len() == MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(rate);
        self.last_sample = Some((up, down, now));
    }

    fn live_row(&mut self, session: u64, now: Duration) -> &mut SessionRow {
        if !self.live.contains_key(&session) && self.live.len() >= MAX_LIVE {
            self.live.pop_first();
            self.forgotten += 1;
        }
        Arc::make_mut(self.live.entry(session).or_insert_with(|| Arc::new(SessionRow::new(session, now))))
    }

    fn session_end(&mut self, e: &SessionEnd, duplicates: u64, now: Duration) {
        let mut row = self.live.remove(&e.session).unwrap_or_else(|| Arc::new(SessionRow::new(e.session, now)));
        Arc::make_mut(&mut row).finish(e, duplicates, now);
        if self.ended.len() == MAX_ENDED {
            self.ended.pop_front();
        }
        self.ended.push_back(row);
        self.log_line(LogLine {
            at: now,
            session: e.session,
            kind: LogKind::End { outcome: e.outcome, at_risk: e.at_risk, duplicates, ended_by: clean(&e.ended_by) },
        });
    }

    fn log_line(&mut self, line: LogLine) {
        if self.log.len() == MAX_LOG {
            self.log.pop_front();
        }
        self.log.push_back(Arc::new(line));
    }

    // --- reading ---

    /// The latest time seen by `apply` or `sample_bytes`.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The fold's totals shown (see [`Model::set_totals`]); the readers
    /// below are views of them.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Sessions that ended with `outcome`.
    pub fn outcome_count(&self, outcome: Outcome) -> u64 {
        self.totals.outcome(outcome)
    }

    /// Sessions ended so far.
    pub fn ended_total(&self) -> u64 {
        self.totals.sessions
    }

    /// Sessions running now.
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// Messages at risk of a second download, all sessions.
    pub fn at_risk(&self) -> u64 {
        self.totals.at_risk
    }

    /// Duplicate downloads observed, all sessions.
    pub fn duplicates(&self) -> u64 {
        self.totals.duplicates
    }

    /// Complete downloads in ended sessions.
    pub fn downloaded(&self) -> u64 {
        self.totals.downloaded
    }

    /// Messages delivered whole that a fault changed on the way.
    pub fn damaged(&self) -> u64 {
        self.totals.damaged
    }

    /// Messages the client got part of.
    pub fn cut_midway(&self) -> u64 {
        self.totals.cut_midway
    }

    /// Faults fired, all sessions.
    pub fn faults_fired(&self) -> u64 {
        self.totals.faults()
    }

    /// Live sessions forgotten because more than [`MAX_LIVE`] were tracked
    /// (their end events were probably dropped).
    pub fn forgotten(&self) -> u64 {
        self.forgotten
    }

    /// Rows in table order: live sessions newest first, then ended ones,
    /// most recently ended first.
    pub fn rows(&self) -> impl Iterator<Item = &SessionRow> + '_ {
        self.live.values().rev().chain(self.ended.iter().rev()).map(|r| &**r)
    }

    /// Number of rows in the table.
    pub fn row_count(&self) -> usize {
        self.live.len() + self.ended.len()
    }

    /// The table position of `session`, if it has a row.
    pub fn row_index(&self, session: u64) -> Option<usize> {
        if self.live.contains_key(&session) {
            return Some(self.live.range((Bound::Excluded(session), Bound::Unbounded)).count());
        }
        let pos = self.ended.iter().rev().position(|r| r.session == session)?;
        Some(self.live.len() + pos)
    }

    /// The session number of the row at table position `index`.
    pub fn row_at(&self, index: usize) -> Option<u64> {
        self.rows().nth(index).map(|r| r.session)
    }

    /// A session's row, live or recently ended.
    pub fn session(&self, session: u64) -> Option<&SessionRow> {
        match self.live.get(&session) {
            Some(r) => Some(r),
            None => self.ended.iter().rev().find(|r| r.session == session).map(|r| &**r),
        }
    }

    /// Whether `session` is live (can be cut).
    pub fn is_live(&self, session: u64) -> bool {
        self.live.contains_key(&session)
    }

    /// Per-command latency in microseconds, by command name.
    pub fn latency_percentiles(&self) -> Vec<(&str, Percentiles)> {
        self.totals.latency_us.iter().map(|(k, p)| (*k, *p)).collect()
    }

    /// Throughput samples, oldest first.
    pub fn throughput(&self) -> &VecDeque<Rate> {
        &self.samples
    }

    /// The event log, oldest first.
    pub fn log(&self) -> impl DoubleEndedIterator<Item = &LogLine> + ExactSizeIterator + '_ {
        self.log.iter().map(|l| &**l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Fingerprint, MessageKey};
    use crate::stats::Stats;

    fn addr() -> SocketAddr {
        ([127, 0, 0, 1], 40000).into()
    }

    fn start(n: u64) -> Event {
        Event::SessionStart { session: n, client: addr(), upstream: "up:110".into(), profile: "p".into() }
    }

    /// An end whose session downloaded one message twice: the fold finds
    /// one duplicate (the event's own field says 0 and is not read).
    fn end(n: u64, outcome: Outcome) -> Event {
        let key = MessageKey::message_id(format!("<{n}@x>").as_bytes());
        Event::SessionEnd(Box::new(SessionEnd {
            client: addr(),
            user: Some("alice".into()),
            outcome,
            state: State::Transaction,
            downloaded: 2,
            marked: 1,
            at_risk: 2,
            bytes_up: 10,
            bytes_down: 100,
            duration_ms: 5,
            faults: vec!["cut".into()],
            fingerprints: vec![Fingerprint { number: 1, uid: None, key }, Fingerprint { number: 2, uid: None, key }]
                .into(),
            ..SessionEnd::example(n)
        }))
    }

    /// The aggregator's part, in small: each event through the run's fold,
    /// then onto the screen; the totals are handed over when read.
    #[derive(Default)]
    struct Run {
        stats: Stats,
        m: Model,
    }

    impl Run {
        fn apply(&mut self, ev: &Event, now: Duration) {
            let folded = self.stats.apply(ev);
            self.m.apply(ev, folded, now);
        }

        fn model(&mut self) -> &mut Model {
            self.m.set_totals(Arc::new(self.stats.totals()));
            &mut self.m
        }
    }

    const T: Duration = Duration::from_secs(1);

    #[test]
    fn live_then_ended() {
        let mut r = Run::default();
        r.apply(&start(1), T);
        let m = r.model();
        assert!(m.is_live(1));
        assert_eq!((m.live_count(), m.row_count()), (1, 1));
        r.apply(&end(1, Outcome::RolledBack), T * 2);
        let m = r.model();
        assert!(!m.is_live(1));
        assert_eq!((m.live_count(), m.row_count(), m.ended_total()), (0, 1, 1));
        let row = m.session(1).expect("row kept");
        assert_eq!(row.end.as_ref().map(|e| (e.outcome, e.at)), Some((Outcome::RolledBack, T * 2)));
        assert_eq!(row.started, T);
        assert_eq!(row.end.as_ref().map(|e| e.duplicates), Some(1), "the fold's answer");
        assert_eq!((m.outcome_count(Outcome::RolledBack), m.at_risk(), m.duplicates()), (1, 2, 1));
        // A late progress report does not resurrect it.
        r.apply(&progress(1, "NOOP"), T * 3);
        assert_eq!(r.model().live_count(), 0);
    }

    fn progress(n: u64, cmd: &str) -> Event {
        Event::Progress(Box::new(SessionSnapshot {
            session: n,
            state: State::Transaction,
            user: Some("bob".into()),
            last_command: Some(cmd.into()),
            downloaded: 1,
            marked: 0,
            bytes_up: 1,
            bytes_down: 2,
        }))
    }

    #[test]
    fn bounded_whatever_the_load() {
        let mut r = Run::default();
        for n in 1..=10_000 {
            r.apply(&start(n), T);
            r.apply(&Event::Fault { session: n, rule: "r".into(), action: "disconnect".into(), point: "x".into() }, T);
            r.apply(&Event::Latency { session: n, seq: 1, command: format!("X{n}"), micros: n }, T);
            r.apply(&end(n, Outcome::Committed), T);
        }
        let m = r.model();
        assert_eq!(m.ended_total(), 10_000);
        assert_eq!(m.row_count(), MAX_ENDED);
        assert_eq!(m.log().len(), MAX_LOG);
        // Invented keywords are all OTHER.
        let names: Vec<&str> = m.latency_percentiles().iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["OTHER"]);
        // Starts whose ends were lost.
        for n in 20_000..20_000 + MAX_LIVE as u64 + 50 {
            r.apply(&start(n), T);
        }
        let m = r.model();
        assert_eq!((m.live_count(), m.forgotten()), (MAX_LIVE, 50));
        for i in 0..2 * MAX_SAMPLES as u64 {
            m.sample_bytes(i, i, SAMPLE_PERIOD * i as u32);
        }
        assert_eq!(m.throughput().len(), MAX_SAMPLES);
    }

    #[test]
    fn row_order_and_lookup() {
        let mut r = Run::default();
        for n in 1..=4 {
            r.apply(&start(n), T);
        }
        r.apply(&end(2, Outcome::Committed), T);
        r.apply(&end(1, Outcome::Refused), T);
        let m = r.model();
        let order: Vec<u64> = m.rows().map(|r| r.session).collect();
        assert_eq!(order, [4, 3, 1, 2]);
        for (i, n) in order.iter().enumerate() {
            assert_eq!(m.row_index(*n), Some(i));
            assert_eq!(m.row_at(i), Some(*n));
        }
        assert_eq!(m.row_index(9), None);
    }

    #[test]
    fn throughput_rates_per_second() {
        let mut m = Model::new();
        m.sample_bytes(0, 0, Duration::ZERO);
        m.sample_bytes(50, 50, Duration::from_millis(100)); // too soon: folded into the next
        m.sample_bytes(500, 2000, Duration::from_millis(500));
        m.sample_bytes(100, 2000, Duration::from_secs(1)); // went backwards
        let rates: Vec<Rate> = m.throughput().iter().copied().collect();
        assert_eq!(rates, [Rate { up: 1000, down: 4000 }, Rate { up: 0, down: 0 }]);
    }

    #[test]
    fn peer_text_is_cleaned_and_bounded() {
        let mut r = Run::default();
        r.apply(&progress(1, &format!("X\x1b[2J{}", "a".repeat(500))), T);
        let cmd = r.model().session(1).and_then(|r| r.last_command.clone()).unwrap_or_default();
        assert!(!cmd.contains('\x1b'));
        assert!(cmd.starts_with("X\\x1b[2Jaaa"), "{cmd}");
        assert_eq!(cmd.chars().count(), MAX_TEXT);
        let rule = "r\u{9b}1m\x07";
        r.apply(&Event::Fault { session: 1, rule: rule.into(), action: "stall".into(), point: rule.into() }, T);
        let Some(LogKind::Fault { rule: shown, point, .. }) = r.model().log().last().map(|l| &l.kind) else {
            panic!("a fault line")
        };
        assert_eq!((shown.as_str(), point.as_str()), ("r\\u{9b}1m\\x07", "r\\u{9b}1m\\x07"));
    }

    #[test]
    fn snapshot_is_independent_of_later_events() {
        let mut r = Run::default();
        r.apply(&progress(1, "RETR 1"), T);
        let snap = r.model().clone();
        r.apply(&progress(1, "DELE 1"), T);
        r.apply(&end(1, Outcome::Committed), T);
        assert_eq!(snap.session(1).and_then(|r| r.last_command.as_deref()), Some("RETR 1"));
        assert_eq!(snap.ended_total(), 0, "the snapshot keeps the totals it was given");
        let m = r.model();
        assert_eq!(m.session(1).and_then(|r| r.last_command.as_deref()), Some("DELE 1"));
        assert_eq!(m.ended_total(), 1);
    }

    #[test]
    fn the_model_counts_nothing_itself() {
        let mut m = Model::new();
        m.apply(&end(1, Outcome::Committed), Folded { duplicates: 1 }, T);
        m.apply(
            &Event::Fault { session: 1, rule: "r".into(), action: "stall".into(), point: "x".into() },
            Folded::default(),
            T,
        );
        m.apply(&Event::Latency { session: 1, seq: 1, command: "RETR".into(), micros: 5 }, Folded::default(), T);
        // Rows and the log show the events; the counts wait for the totals.
        assert_eq!((m.row_count(), m.log().len()), (1, 2));
        assert_eq!((m.ended_total(), m.duplicates(), m.faults_fired()), (0, 0, 0));
        assert!(m.latency_percentiles().is_empty());
    }
}
