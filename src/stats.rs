//! The statistics fold: events in, totals out. Pure: no I/O, no clock.
//!
//! This is the one place that counts: the summary, the events file's
//! `session_end` lines and the dashboard all read their numbers from it.
//! It also turns each ended session's fingerprints into duplicate counts,
//! because only the fold sees across sessions; the count is its answer
//! ([`Folded`]), never written into the event it was given.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashSet};
use std::hash::{Hash, Hasher};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::codec::command;
use crate::events::{Event, FaultCounts, SessionEnd};
use crate::session::Outcome;
use crate::text::escape;

/// Most distinct downloaded messages remembered for duplicate detection.
/// Each costs one 64-bit hash in a hash set (9 bytes a slot, at most 2^21
/// slots: about 18 MiB at the bound). Past it, new messages are no longer
/// remembered (old ones are) and are counted in the summary's
/// `fingerprints_forgotten`, so duplicates can only be under-counted, never
/// invented.
pub const MAX_REMEMBERED_MESSAGES: usize = 1_000_000;

/// Highest latency recorded, in microseconds (an hour); longer is clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// What folding one event found that the event itself cannot carry.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// For a session's end: its downloads of messages downloaded before
    /// (earlier in the run or earlier in the session). 0 for other events.
    pub duplicates: u64,
}

/// Most profiles summarised one by one (a run switches profile by hand,
/// so a few); sessions of any further ones are summed as one.
const MAX_PROFILES: usize = 64;
const OTHER_PROFILES: &str = "(other profiles)";

/// What the sessions of one profile came to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProfileTotals {
    /// Sessions that ran under it.
    pub sessions: u64,
    /// Per outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Messages at risk of a second download.
    pub at_risk: u64,
    /// Duplicate downloads.
    pub duplicates: u64,
}

/// Running totals over a run.
#[derive(Debug, Clone)]
pub struct Stats {
    sessions: u64,
    /// In [`Outcome::ALL`] order.
    outcomes: [u64; Outcome::ALL.len()],
    at_risk: u64,
    duplicates: u64,
    downloaded: u64,
    bytes_up: u64,
    bytes_down: u64,
    faults: FaultCounts,
    damaged: u64,
    cut_midway: u64,
    /// Per profile the sessions ran under (more than one when it changed
    /// during the run).
    profiles: BTreeMap<String, ProfileTotals>,
    latency: BTreeMap<&'static str, Histogram<u64>>,
    durations: Histogram<u64>,
    seen: HashSet<u64>,
    forgotten: u64,
    fingerprints_dropped: u64,
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
    // one per known keyword at most, and the durations.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant bounds are valid")
}

impl Stats {
    /// Empty totals.
    pub fn new() -> Stats {
        Stats {
            sessions: 0,
            outcomes: [0; Outcome::ALL.len()],
            at_risk: 0,
            duplicates: 0,
            downloaded: 0,
            bytes_up: 0,
            bytes_down: 0,
            faults: FaultCounts::new(),
            damaged: 0,
            cut_midway: 0,
            profiles: BTreeMap::new(),
            latency: BTreeMap::new(),
            durations: histogram(),
            seen: HashSet::new(),
            forgotten: 0,
            fingerprints_dropped: 0,
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

    /// Folds one event in and says what it found; the event is left as
    /// it was sent (a `SessionEnd`'s own `duplicates` is not read).
    pub fn apply(&mut self, event: &Event) -> Folded {
        match event {
            Event::SessionStart { .. } | Event::Progress(_) | Event::Transcript { .. } => Folded::default(),
            Event::Fault { rule, .. } => {
                // `get_mut` first: a rule that fired before costs no allocation.
                match self.faults.get_mut(rule) {
                    Some(n) => *n += 1,
                    None => {
                        self.faults.insert(rule.clone(), 1);
                    }
                }
                Folded::default()
            }
            Event::Latency { command, micros, .. } => {
                // Only a known keyword is a key (anything else is OTHER),
                // so the map is bounded and holds no client text.
                let h = self.latency.entry(command::label(command)).or_insert_with(histogram);
                let _ = h.record((*micros).clamp(1, MAX_LATENCY_US));
                Folded::default()
            }
            Event::SessionEnd(end) => Folded { duplicates: self.session_end(end) },
        }
    }

    fn session_end(&mut self, end: &SessionEnd) -> u64 {
        let mut dups = 0;
        self.fingerprints_dropped += end.fingerprints.dropped;
        for f in end.fingerprints.iter() {
            // Scope by mailbox (upstream, user): the same message in another
            // mailbox is another message. A message is known by its UIDL
            // where the session learnt it (a server that rewrites a message
            // between sessions keeps its UID), and always by its Message-ID
            // or content too, so that a session that never asked for the
            // listing still finds it.
            let key = |k: &dyn Fn(&mut DefaultHasher)| {
                let mut h = DefaultHasher::new();
                (&end.upstream, &end.user).hash(&mut h);
                k(&mut h);
                h.finish()
            };
            let by_content = key(&|h| (0u8, &f.key).hash(h));
            let by_uid = f.uid.as_deref().map(|uid| key(&|h| (1u8, uid).hash(h)));
            let keys = [Some(by_content), by_uid];
            if keys.iter().flatten().any(|k| self.seen.contains(k)) {
                dups += 1;
            }
            let mut lost = false;
            for k in keys.into_iter().flatten() {
                if self.seen.contains(&k) {
                    continue;
                }
                if self.seen.len() < MAX_REMEMBERED_MESSAGES {
                    self.seen.insert(k);
                } else {
                    lost = true;
                }
            }
            self.forgotten += u64::from(lost);
        }
        self.sessions += 1;
        self.outcomes[outcome_index(end.outcome)] += 1;
        self.at_risk += end.at_risk as u64;
        self.duplicates += dups;
        self.downloaded += end.downloaded;
        self.damaged += end.delivery.damaged;
        self.cut_midway += end.delivery.cut_midway;
        // Profile names come from profiles, and a run has few of them; past
        // the bound further ones share one row rather than grow the map.
        let name = if self.profiles.len() < MAX_PROFILES || self.profiles.contains_key(&end.profile) {
            end.profile.clone()
        } else {
            OTHER_PROFILES.to_string()
        };
        let p = self.profiles.entry(name).or_default();
        p.sessions += 1;
        p.outcomes[outcome_index(end.outcome)] += 1;
        p.at_risk += end.at_risk as u64;
        p.duplicates += dups;
        self.bytes_up += end.bytes_up;
        self.bytes_down += end.bytes_down;
        let _ = self.durations.record(end.duration_ms.saturating_mul(1000).clamp(1, MAX_LATENCY_US));
        if let Some(ends) = &mut self.ends {
            // The kept copy is the fold's own record: it carries the answer.
            ends.push(SessionEnd { duplicates: dups, ..end.clone() });
        }
        dups
    }

    /// Sessions ended so far.
    pub fn sessions(&self) -> u64 {
        self.sessions
    }

    /// Sessions that ended with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome_index(outcome)]
    }

    /// Messages at risk of a second download, all sessions.
    pub fn at_risk(&self) -> u64 {
        self.at_risk
    }

    /// Duplicate downloads observed, all sessions.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Everything counted so far, with percentiles worked out: what the
    /// summary and the dashboard show. Costs a walk of each histogram, so
    /// a live reader asks at most once a frame.
    pub fn totals(&self) -> Totals {
        let ms = Percentiles::of(&self.durations);
        Totals {
            sessions: self.sessions,
            outcomes: self.outcomes,
            at_risk: self.at_risk,
            duplicates: self.duplicates,
            downloaded: self.downloaded,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            faults_fired: self.faults.clone(),
            damaged: self.damaged,
            cut_midway: self.cut_midway,
            profiles: self.profiles.clone(),
            latency_us: self.latency.iter().map(|(k, h)| (*k, Percentiles::of(h))).collect(),
            session_ms: Percentiles { p50: ms.p50 / 1000, p99: ms.p99 / 1000, max: ms.max / 1000, count: ms.count },
            fingerprints_dropped: self.fingerprints_dropped,
            fingerprints_forgotten: self.forgotten,
        }
    }

    /// Per-command latency as cumulative bucket counts for `bounds_us`
    /// (upper bounds, ascending), with the count and the sum in µs: what a
    /// Prometheus histogram exposes. The sum is the histogram's mean times
    /// its count, so it is as precise as the histogram (1%).
    pub fn latency_buckets(&self, bounds_us: &[u64]) -> Vec<LatencyBuckets> {
        self.latency
            .iter()
            .map(|(command, h)| LatencyBuckets {
                command,
                cumulative: bounds_us.iter().map(|&le| h.count_between(0, le)).collect(),
                count: h.len(),
                sum_us: h.mean() * h.len() as f64,
            })
            .collect()
    }

    /// The summary as written to the events file and printed.
    pub fn summary(&self, seed: u64, profile: &str, dropped_events: u64) -> Summary {
        self.totals().summary(seed, profile, dropped_events)
    }
}

fn outcome_index(o: Outcome) -> usize {
    Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0)
}

/// One command's latency histogram in Prometheus terms
/// ([`Stats::latency_buckets`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyBuckets {
    /// The command keyword.
    pub command: &'static str,
    /// Responses at or under each bound, in the bounds' order.
    pub cumulative: Vec<u64>,
    /// Every response counted.
    pub count: u64,
    /// Their total, in microseconds.
    pub sum_us: f64,
}

/// A run's totals at one moment ([`Stats::totals`]): small, and cheap to
/// share with a reader that draws them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions ended.
    pub sessions: u64,
    /// Sessions per outcome, in [`Outcome::ALL`] order.
    pub outcomes: [u64; Outcome::ALL.len()],
    /// Messages at risk of a second download.
    pub at_risk: u64,
    /// Duplicate downloads observed.
    pub duplicates: u64,
    /// Complete downloads in ended sessions.
    pub downloaded: u64,
    /// Bytes client → server, ended sessions.
    pub bytes_up: u64,
    /// Bytes server → client, ended sessions.
    pub bytes_down: u64,
    /// Times each fault rule fired.
    pub faults_fired: FaultCounts,
    /// Messages delivered whole that a fault changed (`Delivery::damaged`).
    pub damaged: u64,
    /// Messages the client got part of (`Delivery::cut_midway`).
    pub cut_midway: u64,
    /// Per profile the sessions ran under.
    pub profiles: BTreeMap<String, ProfileTotals>,
    /// Per-command latency in microseconds, by command label.
    pub latency_us: BTreeMap<&'static str, Percentiles>,
    /// Session durations in milliseconds.
    pub session_ms: Percentiles,
    /// See [`Summary::fingerprints_dropped`].
    pub fingerprints_dropped: u64,
    /// See [`Summary::fingerprints_forgotten`].
    pub fingerprints_forgotten: u64,
}

impl Totals {
    /// Sessions that ended with `outcome`.
    pub fn outcome(&self, outcome: Outcome) -> u64 {
        self.outcomes[outcome_index(outcome)]
    }

    /// Faults fired, all rules.
    pub fn faults(&self) -> u64 {
        self.faults_fired.values().sum()
    }

    /// These totals as the run's summary.
    pub fn summary(self, seed: u64, profile: &str, dropped_events: u64) -> Summary {
        Summary {
            sessions: self.sessions,
            outcomes: Outcome::ALL.iter().map(|o| (o.as_str().to_string(), self.outcome(*o))).collect(),
            at_risk: self.at_risk,
            duplicates: self.duplicates,
            downloaded: self.downloaded,
            bytes_up: self.bytes_up,
            bytes_down: self.bytes_down,
            faults_fired: self.faults_fired,
            damaged: self.damaged,
            cut_midway: self.cut_midway,
            profiles: self
                .profiles
                .into_iter()
                .map(|(name, p)| {
                    let outcomes =
                        Outcome::ALL.iter().zip(p.outcomes).map(|(o, n)| (o.as_str().to_string(), n)).collect();
                    (
                        name,
                        ProfileSummary { sessions: p.sessions, outcomes, at_risk: p.at_risk, duplicates: p.duplicates },
                    )
                })
                .collect(),
            latency_us: self.latency_us.into_iter().map(|(k, p)| (k.to_string(), p)).collect(),
            session_ms: self.session_ms,
            dropped_events,
            fingerprints_dropped: self.fingerprints_dropped,
            fingerprints_forgotten: self.fingerprints_forgotten,
            seed,
            profile: profile.to_string(),
        }
    }
}

/// p50 / p99 / max of a histogram.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

impl Percentiles {
    /// Of one histogram.
    pub fn of(h: &Histogram<u64>) -> Percentiles {
        Percentiles { p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99), max: h.max(), count: h.len() }
    }
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
    /// Messages delivered whole whose bytes a fault changed (noise,
    /// corruption, a `truncate`).
    pub damaged: u64,
    /// Messages the client got part of: the line was cut in their body.
    pub cut_midway: u64,
    /// Per profile the sessions ran under (more than one when the profile
    /// was switched during the run).
    pub profiles: BTreeMap<String, ProfileSummary>,
    /// Per-command latency in microseconds.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Session durations in milliseconds.
    pub session_ms: Percentiles,
    /// Events dropped because the aggregator fell behind.
    pub dropped_events: u64,
    /// Downloads not checked for duplicates because their session's
    /// fingerprint list was full ([`crate::session::MAX_FINGERPRINTS`]).
    pub fingerprints_dropped: u64,
    /// Messages not remembered for duplicate detection because the run's
    /// index was full ([`MAX_REMEMBERED_MESSAGES`]).
    pub fingerprints_forgotten: u64,
    /// The run's seed (replay with `--seed`).
    pub seed: u64,
    /// The profile.
    pub profile: String,
}

/// What the sessions that ran under one profile came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProfileSummary {
    /// Sessions that ran under it.
    pub sessions: u64,
    /// Count per outcome, every outcome present.
    pub outcomes: BTreeMap<String, u64>,
    /// Messages at risk of a second download.
    pub at_risk: u64,
    /// Duplicate downloads.
    pub duplicates: u64,
}

impl Summary {
    /// A plain-text table for the terminal. Names (profile, rules,
    /// commands) are escaped: a profile may name a rule with anything.
    pub fn to_table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "popfault summary — profile {}, seed {}", escape(&self.profile), self.seed);
        if self.profiles.len() > 1 {
            // The profile was switched during the run: each one's share.
            let _ = writeln!(s, "  per profile (switched during the run):");
            for (name, p) in &self.profiles {
                let outcomes: Vec<String> =
                    p.outcomes.iter().filter(|(_, n)| **n > 0).map(|(o, n)| format!("{o} {n}")).collect();
                let _ = writeln!(
                    s,
                    "    {:<22} sessions {:>6}: {}; at risk {}, duplicates {}",
                    escape(name),
                    p.sessions,
                    outcomes.join(", "),
                    p.at_risk,
                    p.duplicates
                );
            }
        }
        let _ = writeln!(s, "  sessions         {:>8}", self.sessions);
        for (name, n) in &self.outcomes {
            let _ = writeln!(s, "  {name:<16} {n:>8}");
        }
        let _ = writeln!(s, "  downloaded       {:>8}", self.downloaded);
        let _ = writeln!(
            s,
            "  at risk          {:>8}   (downloaded or marked in rolled-back / in-doubt sessions)",
            self.at_risk
        );
        let _ = writeln!(s, "  duplicates       {:>8}   (messages downloaded again)", self.duplicates);
        if self.damaged + self.cut_midway > 0 {
            let _ = writeln!(
                s,
                "  damaged          {:>8}   (messages a fault changed on the way: noise, corruption, truncate)",
                self.damaged
            );
            let _ = writeln!(s, "  cut midway       {:>8}   (messages the client got part of)", self.cut_midway);
        }
        let _ = writeln!(s, "  bytes            {:>8} up, {} down", self.bytes_up, self.bytes_down);
        if !self.faults_fired.is_empty() {
            let _ = writeln!(s, "  faults fired:");
            for (rule, n) in &self.faults_fired {
                let _ = writeln!(s, "    {:<24} {n:>6}", escape(rule));
            }
        }
        if !self.latency_us.is_empty() {
            let _ = writeln!(s, "  latency (µs)   {:>8} {:>8} {:>8} {:>8}", "p50", "p99", "max", "count");
            for (cmd, p) in &self.latency_us {
                let cmd = escape(cmd);
                let _ = writeln!(s, "    {cmd:<12} {:>8} {:>8} {:>8} {:>8}", p.p50, p.p99, p.max, p.count);
            }
        }
        if self.fingerprints_dropped > 0 || self.fingerprints_forgotten > 0 {
            let _ = writeln!(
                s,
                "  NOTE: {} downloads past a session's {} fingerprints and {} past the run's {} not checked for \
                 duplicates",
                self.fingerprints_dropped,
                crate::session::MAX_FINGERPRINTS,
                self.fingerprints_forgotten,
                MAX_REMEMBERED_MESSAGES
            );
        }
        if self.dropped_events > 0 {
            let _ = writeln!(s, "  WARNING: {} events dropped (aggregator fell behind)", self.dropped_events);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Fingerprint, Fingerprints, MAX_FINGERPRINTS, MessageKey, State};

    fn end(fingerprints: Fingerprints) -> Event {
        Event::SessionEnd(Box::new(SessionEnd {
            user: Some("u".into()),
            outcome: Outcome::Committed,
            state: State::Update,
            duration_ms: 1,
            faults: vec!["r\x1b[2J".into()],
            fingerprints,
            ended_by: "closed".into(),
            ..SessionEnd::example(1)
        }))
    }

    #[test]
    fn a_message_is_known_by_its_uid_and_by_its_content() {
        use crate::session::{Fingerprint, MessageKey};
        let fp = |uid: Option<&str>, key: u8| Fingerprint {
            number: 1,
            uid: uid.map(Box::from),
            key: MessageKey::Hash([key; 16]),
        };
        let with = |list: Vec<Fingerprint>| {
            let mut f = Fingerprints::default();
            for x in list {
                f.push(x);
            }
            end(f)
        };
        let mut stats = Stats::new();
        // First seen with its UID and content A.
        assert_eq!(stats.apply(&with(vec![fp(Some("uid-1"), 0xA)])).duplicates, 0);
        // The server rewrote it (content B) but its UID is the same.
        assert_eq!(stats.apply(&with(vec![fp(Some("uid-1"), 0xB)])).duplicates, 1);
        // A session that never asked for UIDs still finds it by content.
        assert_eq!(stats.apply(&with(vec![fp(None, 0xA)])).duplicates, 1);
        // Another message: another UID and content.
        assert_eq!(stats.apply(&with(vec![fp(Some("uid-2"), 0xC)])).duplicates, 0);
    }

    #[test]
    fn profiles_switched_during_a_run_are_summarised_each() {
        let mut stats = Stats::new();
        for (profile, outcome) in
            [("demo", Outcome::RolledBack), ("demo", Outcome::Committed), ("lost-carrier", Outcome::InDoubt)]
        {
            let Event::SessionEnd(mut e) = end(Fingerprints::default()) else { unreachable!() };
            e.profile = profile.into();
            e.outcome = outcome;
            e.at_risk = 2;
            e.delivery = crate::events::Delivery { damaged: 1, cut_midway: 0 };
            stats.apply(&Event::SessionEnd(e));
        }
        let summary = stats.summary(1, "demo", 0);
        assert_eq!(summary.profiles.len(), 2);
        let demo = &summary.profiles["demo"];
        assert_eq!((demo.sessions, demo.at_risk), (2, 4));
        assert_eq!((demo.outcomes["rolled-back"], demo.outcomes["committed"]), (1, 1));
        assert_eq!(summary.profiles["lost-carrier"].outcomes["in-doubt"], 1);
        assert_eq!((summary.damaged, summary.cut_midway), (3, 0));
        let table = summary.to_table();
        assert!(table.contains("per profile (switched during the run):"), "{table}");
        assert!(table.contains("lost-carrier") && table.contains("in-doubt 1"), "{table}");
        assert!(table.contains("damaged                 3"), "{table}");
        // One profile: no per-profile section.
        let mut one = Stats::new();
        one.apply(&end(Fingerprints::default()));
        assert!(!one.summary(1, "p", 0).to_table().contains("per profile"));
    }

    #[test]
    fn latency_keys_are_known_keywords_or_other() {
        let mut stats = Stats::new();
        for command in ["RETR", "Zq7Kx9Wv3Tp", "\x1b[2J", "retr", "OTHER"] {
            stats.apply(&Event::Latency { session: 1, seq: 1, command: command.into(), micros: 5 });
        }
        let s = stats.summary(1, "p", 0);
        let keys: Vec<&str> = s.latency_us.keys().map(String::as_str).collect();
        assert_eq!(keys, ["OTHER", "RETR"]);
        assert_eq!(s.latency_us["OTHER"].count, 4);
    }

    #[test]
    fn the_table_escapes_names() {
        let mut stats = Stats::new();
        stats.apply(&Event::Fault {
            session: 1,
            rule: "r\x1b[2J\u{9b}".into(),
            action: "stall".into(),
            point: "x".into(),
        });
        let table = stats.summary(1, "p\x1b]0;t\x07", 0).to_table();
        assert!(!table.chars().any(|c| c.is_control() && c != '\n'), "{table:?}");
        assert!(table.contains("r\\x1b[2J\\u{9b}") && table.contains("p\\x1b]0;t\\x07"), "{table}");
    }

    #[test]
    fn fingerprints_past_the_caps_are_counted() {
        let mut stats = Stats::new();
        let mut list = Fingerprints::default();
        for n in 0..MAX_FINGERPRINTS as u32 + 3 {
            list.push(Fingerprint { number: n, uid: None, key: MessageKey::message_id(format!("<{n}@x>").as_bytes()) });
        }
        stats.apply(&end(list.clone()));
        let again = end(list);
        assert_eq!(stats.apply(&again).duplicates, MAX_FINGERPRINTS as u64);
        let Event::SessionEnd(e) = again else { unreachable!() };
        let s = stats.summary(1, "p", 0);
        assert_eq!((s.fingerprints_dropped, s.fingerprints_forgotten), (6, 0));
        assert!(s.to_table().contains("NOTE: 6 downloads"), "{}", s.to_table());
        let json = serde_json::to_value(&*e).unwrap_or_default();
        assert_eq!(json["fingerprints_dropped"], 3);
        assert!(json.get("fingerprints").is_none());
    }

    #[test]
    fn the_fold_answers_and_leaves_its_event_alone() {
        let key = |id: &str| Fingerprint { number: 1, uid: None, key: MessageKey::message_id(id.as_bytes()) };
        let first = end(vec![key("<a@x>"), key("<b@x>")].into());
        // Twice <a@x>, once <b@x> seen before; the field says otherwise
        // and is not read.
        let second = match end(vec![key("<a@x>"), key("<b@x>"), key("<a@x>")].into()) {
            Event::SessionEnd(mut e) => {
                e.duplicates = 99;
                Event::SessionEnd(e)
            }
            _ => unreachable!(),
        };
        let before = serde_json::to_string(&second).unwrap_or_default();
        let mut stats = Stats::keeping_ends();
        assert_eq!(stats.apply(&first), Folded { duplicates: 0 });
        assert_eq!(stats.apply(&second), Folded { duplicates: 3 });
        assert_eq!(serde_json::to_string(&second).unwrap_or_default(), before, "the event is unchanged");
        assert_eq!(stats.duplicates(), 3);
        // The fold's own records carry its answers.
        let kept: Vec<u64> = stats.ends().iter().map(|e| e.duplicates).collect();
        assert_eq!(kept, [0, 3]);
        let fault = Event::Fault { session: 1, rule: "r".into(), action: "stall".into(), point: "x".into() };
        assert_eq!(stats.apply(&fault), Folded::default());
    }

    #[test]
    fn the_summary_is_the_totals() {
        let mut stats = Stats::new();
        stats.apply(&end(Fingerprints::default()));
        stats.apply(&Event::Latency { session: 1, seq: 1, command: "RETR".into(), micros: 1234 });
        stats.apply(&Event::Fault { session: 1, rule: "r".into(), action: "stall".into(), point: "x".into() });
        let (t, s) = (stats.totals(), stats.summary(1, "p", 0));
        assert_eq!((t.sessions, t.outcome(Outcome::Committed), t.faults()), (1, 1, 1));
        assert_eq!(s.outcomes["committed"], t.outcome(Outcome::Committed));
        assert_eq!(s.latency_us["RETR"], t.latency_us["RETR"]);
        assert_eq!((s.session_ms, s.faults_fired), (t.session_ms, t.faults_fired));
    }
}
