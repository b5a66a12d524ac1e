//! The statistics fold: events in, totals out. Pure: no I/O, no clock.
//!
//! It also turns each ended session's fingerprints into duplicate counts,
//! because only the fold sees across sessions.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::events::{Event, FaultCounts, SessionEnd};
use crate::session::Outcome;

/// Most distinct downloaded messages remembered for duplicate detection.
/// Each costs one 64-bit hash (~16 bytes in the set): about 16 MiB at the
/// bound. Past it, new messages are no longer remembered (old ones are), so
/// duplicates can only be under-counted, never invented.
pub const MAX_REMEMBERED_MESSAGES: usize = 1_000_000;

/// Highest latency recorded, in microseconds (an hour); longer is clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Command keywords with a histogram of their own (the RFC's and a few
/// more); others are counted under [`OTHER_COMMANDS`].
pub const MAX_COMMANDS: usize = 32;
/// Where latencies of further keywords go.
pub const OTHER_COMMANDS: &str = "(other)";

/// Running totals over a run.
#[derive(Debug, Clone)]
pub struct Stats {
    sessions: u64,
    outcomes: BTreeMap<Outcome, u64>,
    at_risk: u64,
    duplicates: u64,
    downloaded: u64,
    bytes_up: u64,
    bytes_down: u64,
    faults: FaultCounts,
    latency: BTreeMap<String, Histogram<u64>>,
    durations: Histogram<u64>,
    seen: HashSet<u64>,
    forgotten: u64,
    /// Every session end, kept only when asked (the demo checks them
    /// against its clients' records).
    ends: Option<Vec<SessionEnd>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram() -> Histogram<u64> {
    // 2 significant figures (1%) from 1 µs to an hour: about 25 KiB each,
    // at most MAX_COMMANDS + 2 of them.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant bounds are valid")
}

impl Stats {
    /// Empty totals.
    pub fn new() -> Stats {
        Stats {
            sessions: 0,
            outcomes: BTreeMap::new(),
            at_risk: 0,
            duplicates: 0,
            downloaded: 0,
            bytes_up: 0,
            bytes_down: 0,
            faults: FaultCounts::new(),
            latency: BTreeMap::new(),
            durations: histogram(),
            seen: HashSet::new(),
            forgotten: 0,
            ends: None,
        }
    }

    /// Empty totals that also keep every session end, with its fingerprints:
    /// the demo's checks tell sessions at a reused client address apart by
    /// the messages they relayed.
    pub fn keeping_ends() -> Stats {
        Stats { ends: Some(Vec::new()), ..Stats::new() }
    }

    /// The kept session ends, in the order they ended.
    pub fn ends(&self) -> &[SessionEnd] {
        self.ends.as_deref().unwrap_or(&[])
    }

    /// Folds one event in. A `SessionEnd` gets its `duplicates` filled in.
    pub fn apply(&mut self, event: &mut Event) {
        match event {
            Event::SessionStart { .. } | Event::Progress(_) => {}
            Event::Fault { rule, .. } => *self.faults.entry(rule.clone()).or_default() += 1,
            Event::Latency { command, micros, .. } => {
                // Keywords come from clients: bound how many get their own
                // histogram; the rest share one.
                let key = if self.latency.contains_key(command) || self.latency.len() < MAX_COMMANDS {
                    command.clone()
                } else {
                    OTHER_COMMANDS.to_string()
                };
                let h = self.latency.entry(key).or_insert_with(histogram);
                let _ = h.record((*micros).clamp(1, MAX_LATENCY_US));
            }
            Event::SessionEnd(end) => self.session_end(end),
        }
    }

    fn session_end(&mut self, end: &mut SessionEnd) {
        let mut dups = 0;
        for f in &end.fingerprints {
            // Scope by (upstream, user): the same message in another
            // mailbox is another message.
            let mut h = DefaultHasher::new();
            (&end.upstream, &end.user, &f.key).hash(&mut h);
            let key = h.finish();
            if self.seen.contains(&key) {
                dups += 1;
            } else if self.seen.len() < MAX_REMEMBERED_MESSAGES {
                self.seen.insert(key);
            } else {
                self.forgotten += 1;
            }
        }
        end.duplicates = dups;
        self.sessions += 1;
        *self.outcomes.entry(end.outcome).or_default() += 1;
        self.at_risk += end.at_risk as u64;
        self.duplicates += dups;
        self.downloaded += end.downloaded;
        self.bytes_up += end.bytes_up;
        self.bytes_down += end.bytes_down;
        let _ = self.durations.record(end.duration_ms.saturating_mul(1000).clamp(1, MAX_LATENCY_US));
        if let Some(ends) = &mut self.ends {
            ends.push(end.clone());
        }
    }

    /// Sessions ended so far.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Sessions that ended with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes.get(&outcome).copied().unwrap_or(0)
    }

    /// Messages at risk of a second download, all sessions.
    pub fn at_risk(&self) -> u64 {
        self.at_risk
    }

    /// Duplicate downloads observed, all sessions.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// The summary as written to the events file and printed.
    pub fn summary(&self, seed: u64, profile: &str, dropped_events: u64) -> Summary {
        let pct = |h: &Histogram<u64>| Percentiles {
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            count: h.len(),
        };
        Summary {
            sessions: self.sessions,
            outcomes: Outcome::ALL.iter().map(|o| (o.as_str().to_string(), self.outcome(*o))).collect(),
            at_risk: self.at_risk,
            duplicates: self.duplicates,
            downloaded: self.downloaded,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            faults_fired: self.faults.clone(),
            latency_us: self.latency.iter().map(|(k, h)| (k.clone(), pct(h))).collect(),
            session_ms: {
                let p = pct(&self.durations);
                Percentiles { p50: p.p50 / 1000, p99: p.p99 / 1000, max: p.max / 1000, count: p.count }
            },
            dropped_events,
            seed,
            profile: profile.to_string(),
        }
    }
}

/// p50 / p99 / max of a histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Largest value recorded.
    pub max: u64,
    /// Values recorded.
    pub count: u64,
}

/// The end-of-run summary (the events file's last line, `"event":"summary"`).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Sessions ended.
    pub sessions: u64,
    /// Count per outcome, every outcome present (0 included).
    pub outcomes: BTreeMap<String, u64>,
    /// Messages at risk of a second download.
    pub at_risk: u64,
    /// Duplicate downloads observed.
    pub duplicates: u64,
    /// Complete downloads.
    pub downloaded: u64,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// Bytes server → client.
    pub bytes_down: u64,
    /// Times each fault rule fired.
    pub faults_fired: FaultCounts,
    /// Per-command latency in microseconds.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Session durations in milliseconds.
    pub session_ms: Percentiles,
    /// Events dropped because the aggregator fell behind.
    pub dropped_events: u64,
    /// The run's seed (replay with `--seed`).
    pub seed: u64,
    /// The profile.
    pub profile: String,
}

impl Summary {
    /// A plain-text table for the terminal.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "popfault summary — profile {}, seed {}", self.profile, self.seed);
        let _ = writeln!(s, "  sessions      {:>8}", self.sessions);
        for (name, n) in &self.outcomes {
            let _ = writeln!(s, "  {name:<13} {n:>8}");
        }
        let _ = writeln!(s, "  downloaded    {:>8}", self.downloaded);
        let _ = writeln!(
            s,
            "  at risk       {:>8}   (downloaded or marked in rolled-back / in-doubt sessions)",
            self.at_risk
        );
        let _ = writeln!(s, "  duplicates    {:>8}   (messages downloaded again)", self.duplicates);
        let _ = writeln!(s, "  bytes         {:>8} up, {} down", self.bytes_up, self.bytes_down);
        if !self.faults_fired.is_empty() {
            let _ = writeln!(s, "  faults fired:");
            for (rule, n) in &self.faults_fired {
                let _ = writeln!(s, "    {rule:<24} {n:>6}");
            }
        }
        if !self.latency_us.is_empty() {
            let _ = writeln!(s, "  latency (µs)   {:>8} {:>8} {:>8} {:>8}", "p50", "p99", "max", "count");
            for (cmd, p) in &self.latency_us {
                let _ = writeln!(s, "    {cmd:<12} {:>8} {:>8} {:>8} {:>8}", p.p50, p.p99, p.max, p.count);
            }
        }
        if self.dropped_events > 0 {
            let _ = writeln!(s, "  WARNING: {} events dropped (aggregator fell behind)", self.dropped_events);
        }
        s
    }
}
