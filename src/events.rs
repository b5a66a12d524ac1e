//! The event stream: what sessions report, sent without ever waiting.
//!
//! Sessions push [`Event`]s into an [`EventSink`]; a single aggregator reads
//! them. The sink is a bounded channel used with `try_send`: when it is full
//! the event is dropped and counted, so a slow reader never slows the relay.
//! The JSON shape is documented in docs/EVENTS.md and is a stable interface.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::session::{Fingerprints, Outcome, State};

/// Events buffered between sessions and the aggregator before dropping.
pub const EVENT_QUEUE: usize = 65_536;

/// One thing that happened, as written to the events file.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A client connected.
    SessionStart {
        /// Session number (1-based, in accept order).
        session: u64,
        /// The client's address.
        client: SocketAddr,
        /// The upstream as configured (`host:port`).
        upstream: String,
        /// The fault profile the session runs under.
        profile: String,
    },
    /// A fault rule fired.
    Fault {
        /// Session number.
        session: u64,
        /// The rule's name (`manual` for a cut from the dashboard).
        rule: String,
        /// What it did (`disconnect`, `stall`, …).
        action: String,
        /// Where: trigger point and detail (`body RETR 3 #5 @1024`: message 3,
        /// the session's 5th command, body offset 1024).
        point: String,
    },
    /// A complete command was answered (for latency histograms).
    Latency {
        /// Session number.
        session: u64,
        /// The command's sequence number in the session (1-based).
        seq: u64,
        /// Command keyword.
        command: String,
        /// Microseconds from forwarding the command to the last byte of its
        /// response being delivered.
        micros: u64,
    },
    /// Live progress of a session (for the dashboard).
    Progress(Box<SessionSnapshot>),
    /// A line of a session's transcript (for the dashboard's session view;
    /// never written to the events file).
    Transcript {
        /// Session number.
        session: u64,
        /// What happened, secrets redacted (see `Driver::take_transcript`).
        line: String,
    },
    /// A session ended.
    SessionEnd(Box<SessionEnd>),
}

impl Event {
    /// Appends this event's line of the events file (docs/EVENTS.md),
    /// newline included. A session's end is written with `duplicates`, the
    /// run's count for it (the fold's answer), whatever its own field says.
    pub fn write_line(&self, duplicates: u64, out: &mut Vec<u8>) -> serde_json::Result<()> {
        match self {
            Event::SessionEnd(end) => serde_json::to_writer(&mut *out, &EndLine::new(end, duplicates))?,
            other => serde_json::to_writer(&mut *out, other)?,
        }
        out.push(b'\n');
        Ok(())
    }
}

/// A `session_end` line: the event's fields in the event's order, borrowed,
/// with the run's `duplicates` in place of the event's (no copy of the end,
/// and the event is not touched).
#[derive(Serialize)]
struct EndLine<'a> {
    event: &'static str,
    session: u64,
    client: SocketAddr,
    upstream: &'a str,
    user: Option<&'a str>,
    outcome: Outcome,
    state: State,
    downloaded: u64,
    marked: usize,
    at_risk: usize,
    duplicates: u64,
    bytes_up: u64,
    bytes_down: u64,
    duration_ms: u64,
    faults: &'a [String],
    encrypted: bool,
    tls: Option<&'a str>,
    violations: u64,
    profile: &'a str,
    #[serde(flatten)]
    fingerprints: &'a Fingerprints,
    #[serde(flatten)]
    delivery: Delivery,
    ended_by: &'a str,
}

impl<'a> EndLine<'a> {
    fn new(end: &'a SessionEnd, duplicates: u64) -> EndLine<'a> {
        // Every field named, no `..`: a field added to `SessionEnd` does not
        // compile until it is added here too.
        let SessionEnd {
            session,
            client,
            upstream,
            user,
            outcome,
            state,
            downloaded,
            marked,
            at_risk,
            duplicates: _,
            bytes_up,
            bytes_down,
            duration_ms,
            faults,
            encrypted,
            tls,
            violations,
            profile,
            fingerprints,
            delivery,
            ended_by,
        } = end;
        EndLine {
            event: "session_end",
            session: *session,
            client: *client,
            upstream,
            user: user.as_deref(),
            outcome: *outcome,
            state: *state,
            downloaded: *downloaded,
            marked: *marked,
            at_risk: *at_risk,
            duplicates,
            bytes_up: *bytes_up,
            bytes_down: *bytes_down,
            duration_ms: *duration_ms,
            faults,
            encrypted: *encrypted,
            tls: tls.as_deref(),
            violations: *violations,
            profile,
            fingerprints,
            delivery: *delivery,
            ended_by,
        }
    }
}

/// A session's state at a moment, for the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct SessionSnapshot {
    /// Session number.
    pub session: u64,
    /// RFC 1939 state.
    pub state: State,
    /// User name, if given.
    pub user: Option<String>,
    /// Last command, redacted.
    pub last_command: Option<String>,
    /// Complete downloads so far.
    pub downloaded: u64,
    /// Messages marked now.
    pub marked: usize,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// Bytes server → client.
    pub bytes_down: u64,
}

/// Everything known about a session when it ended.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEnd {
    /// Session number.
    pub session: u64,
    /// The client's address.
    pub client: SocketAddr,
    /// The upstream as configured.
    pub upstream: String,
    /// User name, if the client gave one.
    pub user: Option<String>,
    /// The outcome (docs/ARCHITECTURE.md, "Outcome mapping").
    pub outcome: Outcome,
    /// The RFC 1939 state it ended in.
    pub state: State,
    /// Complete RETRs delivered to the client.
    pub downloaded: u64,
    /// Messages marked for deletion at the end.
    pub marked: usize,
    /// Messages at risk of a second download.
    pub at_risk: usize,
    /// Downloads in this session of messages downloaded before. Only the
    /// fold sees across sessions: a session sends 0, and the run's count is
    /// the fold's answer (`stats::Stats::apply`), which the events file
    /// writes here ([`Event::write_line`]).
    pub duplicates: u64,
    /// Bytes client → server.
    pub bytes_up: u64,
    /// Bytes server → client.
    pub bytes_down: u64,
    /// Session duration.
    pub duration_ms: u64,
    /// Names of the fault rules that fired, in order.
    pub faults: Vec<String>,
    /// STLS succeeded: the rest was not inspected.
    pub encrypted: bool,
    /// The TLS popfault itself spoke, with each side that had it (`client
    /// TLS 1.3 (TLS13_AES_256_GCM_SHA384), upstream …`); `None`: none.
    pub tls: Option<String>,
    /// Over-long lines seen.
    pub violations: u64,
    /// The profile the session ran under.
    pub profile: String,
    /// Messages fully downloaded, identified: the aggregator turns them
    /// into `duplicates`. In the JSON only `fingerprints_dropped`, the
    /// downloads past the session's cap.
    #[serde(flatten)]
    pub fingerprints: Fingerprints,
    /// Messages that reached the client damaged or in part.
    #[serde(flatten)]
    pub delivery: Delivery,
    /// How the connection ended, for humans (`client closed`, `reset by
    /// server`, `upstream refused: …`).
    pub ended_by: String,
}

#[cfg(test)]
impl SessionEnd {
    /// A session that ended quietly before a login, nothing moved: tests
    /// name over it the fields they are about, so a new field is added here
    /// once.
    pub(crate) fn example(session: u64) -> SessionEnd {
        SessionEnd {
            session,
            client: ([127, 0, 0, 1], 1).into(),
            upstream: "up:110".into(),
            user: None,
            outcome: Outcome::NoLogin,
            state: State::Authorization,
            downloaded: 0,
            marked: 0,
            at_risk: 0,
            duplicates: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration_ms: 0,
            faults: Vec::new(),
            encrypted: false,
            tls: None,
            violations: 0,
            profile: "p".into(),
            fingerprints: Fingerprints::default(),
            delivery: Delivery::default(),
            ended_by: "client closed".into(),
        }
    }
}

/// What faults did to the messages that crossed the wire: counts of
/// responses to RETR or TOP, as the client received them (what a client
/// then does with them is its own: fetchmail and mpop store a fragment
/// cut midway as a message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Messages delivered whole whose bytes a fault changed on the way:
    /// `noise` injected or bits flipped by `corrupt` inside them, or the
    /// rest dropped by `truncate`.
    pub damaged: u64,
    /// Messages the client got part of: the line was cut in their body.
    pub cut_midway: u64,
}

/// Where sessions send events. Cloning is cheap; sending never waits.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Event>>,
    dropped: Arc<AtomicU64>,
    /// Someone draws live sessions (the dashboard): send `Progress`.
    progress: bool,
    /// Someone shows sessions' transcripts: send `Transcript` events.
    transcripts: bool,
}

impl EventSink {
    /// A sink and the receiver the aggregator reads.
    pub fn channel(capacity: usize) -> (EventSink, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity);
        (EventSink { tx: Some(tx), dropped: Arc::new(AtomicU64::new(0)), progress: true, transcripts: false }, rx)
    }

    /// The same sink, sending `Progress` only if `progress` (it feeds the
    /// dashboard alone, and costs an allocation per command).
    /// The same sink, sending `Transcript` events if `transcripts`.
    pub fn with_transcripts(mut self, transcripts: bool) -> EventSink {
        self.transcripts = transcripts;
        self
    }

    /// Whether `Transcript` events are wanted.
    pub fn wants_transcripts(&self) -> bool {
        self.transcripts && self.is_live()
    }

    pub fn with_progress(mut self, progress: bool) -> EventSink {
        self.progress = progress;
        self
    }

    /// A sink that discards everything (nobody is listening).
    pub fn discard() -> EventSink {
        EventSink { tx: None, dropped: Arc::new(AtomicU64::new(0)), progress: false, transcripts: false }
    }

    /// Sends without waiting; a full queue drops the event and counts it.
    pub fn emit(&self, event: Event) {
        if let Some(tx) = &self.tx {
            if tx.try_send(event).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether anybody reads the events (so callers can skip building them).
    pub fn is_live(&self) -> bool {
        self.tx.as_ref().is_some_and(|tx| !tx.is_closed())
    }

    /// Whether `Progress` events are wanted.
    pub fn wants_progress(&self) -> bool {
        self.progress && self.is_live()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Fault counts by rule name, ordered for stable output.
pub type FaultCounts = BTreeMap<String, u64>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Fingerprint, MessageKey};

    #[test]
    fn an_end_line_is_the_event_with_the_runs_duplicates() {
        let key = MessageKey::message_id(b"<a@x>");
        let mut end = SessionEnd {
            user: Some("u".into()),
            outcome: Outcome::Committed,
            state: State::Update,
            downloaded: 1,
            marked: 1,
            bytes_up: 2,
            bytes_down: 3,
            duration_ms: 4,
            faults: vec!["r".into()],
            violations: 5,
            fingerprints: vec![Fingerprint { number: 1, uid: None, key }].into(),
            ended_by: "closed by client".into(),
            ..SessionEnd::example(7)
        };
        let mut line = Vec::new();
        let ev = Event::SessionEnd(Box::new(end.clone()));
        ev.write_line(3, &mut line).unwrap_or_default();
        // Byte for byte what the event says once its field holds the count:
        // same fields, same order.
        end.duplicates = 3;
        let mut want = serde_json::to_vec(&Event::SessionEnd(Box::new(end))).unwrap_or_default();
        want.push(b'\n');
        assert_eq!(String::from_utf8_lossy(&line), String::from_utf8_lossy(&want));
        let Event::SessionEnd(sent) = ev else { unreachable!() };
        assert_eq!(sent.duplicates, 0, "the event is untouched");
    }
}
