//! The aggregator: the one reader of the event stream. It folds each event
//! into [`Stats`] (the one place that counts), shows it on the dashboard's
//! model with the fold's answer, hands the JSON lines of the events file to
//! its writer, and hands the dashboard the fold's totals at most once a
//! frame.
//!
//! The events file is written by a thread of its own, off the runtime, fed
//! by a bounded queue: a sink that is slow, full or stalled (a disk that
//! fills, `/dev/full`, a FIFO whose reader stopped reading) never blocks a
//! runtime thread. When the queue is full the lines are dropped and
//! counted; after a write error nothing more is written (one warning, then
//! a count), and the run goes on. At the end the writer gets a bounded
//! time to finish; [`FileReport`] says what became of the file.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self as std_mpsc, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::dashboard::{FRAME, SharedModel};
use crate::events::{Event, EventSink};
use crate::stats::{Folded, Stats, Summary};

/// Events read from the channel at a time.
pub const BATCH: usize = 256;

/// Batches of lines (up to [`BATCH`] events each) waiting for the events file's
/// writer; more are dropped and counted.
pub const FILE_QUEUE: usize = 64;

/// At the end, the writer is given up on once it has written nothing for
/// this long (a stalled FIFO)…
pub const FILE_PATIENCE: Duration = Duration::from_secs(2);
/// …or after this long in all, however it goes.
pub const FILE_LIMIT: Duration = Duration::from_secs(10);

/// A running aggregator.
pub struct Aggregator {
    task: tokio::task::JoinHandle<Stats>,
    sink: EventSink,
    file: Option<FileWriter>,
}

/// The summary line of the events file.
#[derive(Serialize)]
struct SummaryLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    summary: &'a Summary,
}

/// What became of the events file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The file.
    pub path: PathBuf,
    /// Event lines written.
    pub written: u64,
    /// Event lines not written: the writer fell behind and its queue was
    /// full, a write failed, or it was given up on at the end.
    pub unwritten: u64,
    /// Of those, the lines dropped because the queue was full.
    pub dropped: u64,
    /// The first write error, if any.
    pub error: Option<String>,
    /// The `summary` line was written.
    pub summary_written: bool,
}

impl FileReport {
    /// Every event line and the summary line are in the file.
    pub fn complete(&self) -> bool {
        self.unwritten == 0 && self.summary_written
    }

    /// One line for the person at the terminal.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "events file incomplete ({}): {} event line(s) written, {} not written",
            self.path.display(),
            self.written,
            self.unwritten
        );
        if self.dropped > 0 {
            s.push_str(&format!(", {} of them dropped (the writer fell behind)", self.dropped));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!(" (write failed: {e})"));
        }
        if !self.summary_written {
            s.push_str("; no summary line");
        }
        s
    }
}

impl Aggregator {
    /// Starts reading events; writes them to `events_file` if given.
    pub fn start(events_file: Option<&Path>) -> io::Result<Aggregator> {
        Aggregator::with_model(events_file, None, false)
    }

    /// Also folds every event into the dashboard's `model` (timed from its
    /// instant); `keep_ends` keeps every session end for
    /// [`finish_with_stats`](Aggregator::finish_with_stats).
    ///
    /// The file is created (truncated) now, without blocking: a FIFO with
    /// no reader yet is opened by the writer once a reader comes.
    pub fn with_model(
        events_file: Option<&Path>,
        model: Option<(SharedModel, Instant)>,
        keep_ends: bool,
    ) -> io::Result<Aggregator> {
        // Under the dashboard a line on stderr would tear the screen.
        let quiet = model.is_some();
        let file = match events_file {
            Some(p) => Some(FileWriter::start(p, quiet)?),
            None => None,
        };
        let (sink, rx) = EventSink::channel(crate::events::EVENT_QUEUE);
        let sink = sink.with_progress(model.is_some()).with_transcripts(model.is_some());
        let stats = if keep_ends { Stats::keeping_ends() } else { Stats::new() };
        let queue = file.as_ref().map(FileWriter::queue);
        let task = tokio::spawn(run(rx, queue, model, stats));
        Ok(Aggregator { task, sink, file })
    }

    /// Where sessions send their events.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Waits for every sender to be gone, then writes the summary line and
    /// returns the summary. Drop every other [`EventSink`] clone first.
    /// An error says the events file is incomplete; `_events_file` is not
    /// used (the file is the one given at start).
    pub async fn finish(self, seed: u64, profile: &str, _events_file: Option<&Path>) -> io::Result<Summary> {
        Ok(self.finish_with_stats(seed, profile, None).await?.0)
    }

    /// Like [`finish`](Aggregator::finish), also returning the final totals.
    pub async fn finish_with_stats(
        self,
        seed: u64,
        profile: &str,
        _events_file: Option<&Path>,
    ) -> io::Result<(Summary, Stats)> {
        let (summary, stats, report) = self.finish_report(seed, profile).await?;
        match report {
            Some(r) if !r.complete() => Err(io::Error::other(r.describe())),
            _ => Ok((summary, stats)),
        }
    }

    /// Like [`finish_with_stats`](Aggregator::finish_with_stats), but an
    /// incomplete events file is reported, not an error: the summary is
    /// there whatever became of the file. Waits for the writer at most
    /// [`FILE_LIMIT`], and [`FILE_PATIENCE`] without progress.
    pub async fn finish_report(self, seed: u64, profile: &str) -> io::Result<(Summary, Stats, Option<FileReport>)> {
        let dropped = self.sink.dropped();
        drop(self.sink);
        let stats = self.task.await.map_err(io::Error::other)?;
        let summary = stats.summary(seed, profile, dropped);
        let report = match self.file {
            Some(w) => {
                let mut line = serde_json::to_vec(&SummaryLine { event: "summary", summary: &summary })?;
                line.push(b'\n');
                Some(w.finish(line).await)
            }
            None => None,
        };
        Ok((summary, stats, report))
    }
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    file: Option<FileQueue>,
    model: Option<(SharedModel, Instant)>,
    mut stats: Stats,
) -> Stats {
    let mut batch = Vec::with_capacity(BATCH);
    let mut answers: Vec<Folded> = Vec::with_capacity(BATCH);
    let mut totals = TotalsPace::new();
    loop {
        let received = match (&model, totals.due()) {
            // Totals the screen has not seen yet: hand them over when due
            // even if no other event comes.
            (Some((m, _)), Some(due)) => tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => n,
                () = tokio::time::sleep_until(due) => {
                    totals.publish(m, &stats);
                    continue;
                }
            },
            _ => rx.recv_many(&mut batch, BATCH).await,
        };
        if received == 0 {
            break;
        }
        // The fold answers; nobody writes its answer into an event.
        answers.clear();
        answers.extend(batch.iter().map(|ev| stats.apply(ev)));
        if let Some((m, started)) = &model {
            crate::dashboard::feed(m, batch.iter().zip(answers.iter().copied()), started.elapsed());
            if batch
                .iter()
                .any(|ev| !matches!(ev, Event::SessionStart { .. } | Event::Progress(_) | Event::Transcript { .. }))
            {
                totals.changed();
            }
            if totals.due().is_some_and(|due| due <= tokio::time::Instant::now()) {
                totals.publish(m, &stats);
            }
        }
        if let Some(q) = &file {
            let mut lines = Vec::new();
            let mut count = 0;
            // Progress and per-command latency feed the dashboard and the
            // histograms; the file keeps sessions and faults.
            for (ev, folded) in batch.iter().zip(&answers) {
                if matches!(ev, Event::Progress(_) | Event::Latency { .. } | Event::Transcript { .. }) {
                    continue;
                }
                let mark = lines.len();
                match ev.write_line(folded.duplicates, &mut lines) {
                    Ok(()) => count += 1,
                    // Never half a line.
                    Err(_) => lines.truncate(mark),
                }
            }
            q.send(lines, count);
        }
        batch.clear();
    }
    if let Some((m, _)) = &model {
        totals.publish(m, &stats);
    }
    stats
}

/// When the dashboard next gets the fold's totals: working out percentiles
/// walks every histogram, so at most once a [`FRAME`], and only after a
/// change.
struct TotalsPace {
    /// Something was folded that the dashboard's totals do not show yet.
    changed: bool,
    /// Not before this.
    next: tokio::time::Instant,
}

impl TotalsPace {
    fn new() -> TotalsPace {
        TotalsPace { changed: false, next: tokio::time::Instant::now() }
    }

    fn changed(&mut self) {
        self.changed = true;
    }

    /// When to hand totals over, if there is anything new.
    fn due(&self) -> Option<tokio::time::Instant> {
        self.changed.then_some(self.next)
    }

    fn publish(&mut self, model: &SharedModel, stats: &Stats) {
        crate::dashboard::publish(model, Arc::new(stats.totals()));
        self.changed = false;
        self.next = tokio::time::Instant::now() + FRAME;
    }
}

/// A batch of event lines for the writer.
struct Chunk {
    bytes: Vec<u8>,
    lines: u64,
}

/// What the writer thread and the rest share.
#[derive(Default)]
struct Shared {
    /// Event lines handed to the writer's queue.
    queued: AtomicU64,
    /// Event lines dropped: the queue was full.
    dropped: AtomicU64,
    /// Event lines written.
    written: AtomicU64,
    /// Bytes written (to tell a slow writer from a stalled one).
    bytes: AtomicU64,
    error: Mutex<Option<String>>,
    /// The summary line, for the writer to write last.
    summary: Mutex<Option<Vec<u8>>>,
    summary_written: AtomicBool,
    /// Stop waiting for the sink: count the rest as unwritten.
    give_up: AtomicBool,
    done: AtomicBool,
}

/// The aggregator's end of the writer's queue.
struct FileQueue {
    tx: SyncSender<Chunk>,
    shared: Arc<Shared>,
}

impl FileQueue {
    /// Queues `bytes` without waiting: a full queue drops them (counted).
    fn send(&self, bytes: Vec<u8>, lines: u64) {
        if lines == 0 {
            return;
        }
        match self.tx.try_send(Chunk { bytes, lines }) {
            Ok(()) => {
                self.shared.queued.fetch_add(lines, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.shared.dropped.fetch_add(lines, Ordering::Relaxed);
            }
        }
    }
}

/// The events file's writer thread.
struct FileWriter {
    path: PathBuf,
    tx: SyncSender<Chunk>,
    shared: Arc<Shared>,
}

impl FileWriter {
    /// Creates the file (an error here is a usage error: exit 2) and starts
    /// the thread. `quiet`: no line on stderr (the dashboard owns it).
    fn start(path: &Path, quiet: bool) -> io::Result<FileWriter> {
        let file = match open(path, true) {
            Ok(f) => Some(f),
            Err(e) if no_reader(&e) => {
                if !quiet {
                    eprintln_lossy(&format!(
                        "popfault: events FIFO {} has no reader yet; events wait for one (then are dropped and counted)",
                        path.display()
                    ));
                }
                None
            }
            Err(e) => {
                return Err(io::Error::new(e.kind(), format!("cannot create events file {}: {e}", path.display())));
            }
        };
        let (tx, rx) = std_mpsc::sync_channel(FILE_QUEUE);
        let shared = Arc::new(Shared::default());
        let writer = Writer { path: path.to_path_buf(), file, shared: shared.clone(), quiet, good: 0, broken: false };
        std::thread::Builder::new().name("popfault-events".into()).spawn(move || writer.run(rx))?;
        Ok(FileWriter { path: path.to_path_buf(), tx, shared })
    }

    fn queue(&self) -> FileQueue {
        FileQueue { tx: self.tx.clone(), shared: self.shared.clone() }
    }

    /// Hands over the summary line, closes the queue and waits (bounded)
    /// for the writer.
    async fn finish(self, summary: Vec<u8>) -> FileReport {
        let FileWriter { path, tx, shared } = self;
        *lock(&shared.summary) = Some(summary);
        drop(tx);
        let started = Instant::now();
        let mut last = (Instant::now(), shared.bytes.load(Ordering::Relaxed));
        while !shared.done.load(Ordering::Acquire) {
            let now = Instant::now();
            let bytes = shared.bytes.load(Ordering::Relaxed);
            if bytes != last.1 {
                last = (now, bytes);
            }
            if now.duration_since(last.0) >= FILE_PATIENCE || now.duration_since(started) >= FILE_LIMIT {
                shared.give_up.store(true, Ordering::Relaxed);
                // The thread notices within one retry; past that it is
                // stuck in the kernel, and is left behind.
                for _ in 0..10 {
                    if shared.done.load(Ordering::Acquire) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let written = shared.written.load(Ordering::Relaxed);
        FileReport {
            path,
            written,
            unwritten: shared.queued_or_dropped().saturating_sub(written),
            dropped: shared.dropped.load(Ordering::Relaxed),
            error: lock(&shared.error).clone(),
            summary_written: shared.summary_written.load(Ordering::Acquire),
        }
    }
}

impl Shared {
    /// Every event line the aggregator had for the file.
    fn queued_or_dropped(&self) -> u64 {
        self.queued.load(Ordering::Relaxed) + self.dropped.load(Ordering::Relaxed)
    }
}

/// The writer thread's state.
struct Writer {
    path: PathBuf,
    /// `None` until a FIFO has a reader.
    file: Option<File>,
    shared: Arc<Shared>,
    quiet: bool,
    /// Bytes written by whole batches: a failed write is cut back to here.
    good: u64,
    /// A write failed: nothing more is written.
    broken: bool,
}

impl Writer {
    fn run(mut self, rx: Receiver<Chunk>) {
        while let Ok(chunk) = rx.recv() {
            if self.write(&chunk.bytes) {
                self.shared.written.fetch_add(chunk.lines, Ordering::Relaxed);
            }
        }
        // The queue is closed: the run is over.
        let summary = lock(&self.shared.summary).take();
        if let Some(line) = summary {
            if self.write(&line) {
                self.shared.summary_written.store(true, Ordering::Release);
            }
        }
        self.shared.done.store(true, Ordering::Release);
    }

    /// Writes all of `bytes`, or nothing more after a failure; true if
    /// written.
    fn write(&mut self, bytes: &[u8]) -> bool {
        if self.broken || self.shared.give_up.load(Ordering::Relaxed) {
            return false;
        }
        if !self.open() {
            return false;
        }
        let Some(file) = self.file.as_mut() else { return false };
        match write_patiently(file, bytes, &self.shared) {
            Ok(true) => {
                self.good += bytes.len() as u64;
                true
            }
            Ok(false) => false,
            Err(e) => {
                // A regular file loses the partial batch rather than end in
                // half a line; a FIFO or a device cannot, and need not.
                let _ = file.set_len(self.good);
                self.broken = true;
                let text = e.to_string();
                let warning = format!(
                    "popfault: WARNING: cannot write events to {}: {text}; the run goes on, \
                     events are counted, not written (see the summary)",
                    self.path.display()
                );
                if self.quiet {
                    tracing::warn!("{warning}");
                } else {
                    eprintln_lossy(&warning);
                }
                *lock(&self.shared.error) = Some(text);
                false
            }
        }
    }

    /// The file, opening a FIFO once it has a reader (looking again every
    /// 50 ms until the end gives up on it).
    fn open(&mut self) -> bool {
        while self.file.is_none() {
            if self.shared.give_up.load(Ordering::Relaxed) {
                return false;
            }
            match open(&self.path, false) {
                Ok(f) => self.file = Some(f),
                Err(e) if no_reader(&e) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => {
                    self.broken = true;
                    *lock(&self.shared.error) = Some(e.to_string());
                    return false;
                }
            }
        }
        true
    }
}

/// Writes all of `bytes` to a non-blocking `file`, waiting while it is full
/// (a FIFO whose reader is slow). `Ok(false)`: given up at the end.
fn write_patiently(file: &mut File, mut bytes: &[u8], shared: &Shared) -> io::Result<bool> {
    let mut pause = Duration::from_millis(1);
    while !bytes.is_empty() {
        match file.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                pause = Duration::from_millis(1);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if shared.give_up.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Opens the events file for writing without blocking: a FIFO with no
/// reader fails with `ENXIO` (see [`no_reader`]) instead of waiting.
fn open(path: &Path, create: bool) -> io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(create).truncate(create);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NONBLOCK);
    }
    o.open(path)
}

/// The error of opening a FIFO that has no reader, without blocking.
fn no_reader(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(libc::ENXIO)
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Nothing is left half-done under these locks.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A line on stderr; a closed stderr is no reason to stop.
fn eprintln_lossy(line: &str) {
    let _ = writeln!(io::stderr(), "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::shared_model;
    use crate::events::SessionEnd;
    use crate::session::{Fingerprints, Outcome, State};

    fn end(session: u64, outcome: Outcome, ids: &[&str]) -> Event {
        Event::SessionEnd(Box::new(SessionEnd {
            client: ([127, 0, 0, 1], 4000).into(),
            user: Some("u".into()),
            outcome,
            state: State::Transaction,
            downloaded: ids.len() as u64,
            marked: 1,
            at_risk: session as usize % 3,
            bytes_up: 10 * session,
            bytes_down: 100 * session,
            duration_ms: 7 * session,
            fingerprints: Fingerprints::from_message_ids(ids),
            ended_by: "closed by client".into(),
            ..SessionEnd::example(session)
        }))
    }

    /// Sessions 1..=6: faults, latencies, progress, and messages that come
    /// back in later sessions (duplicates: 0, 1, 2, 1, 0, 3).
    fn events() -> Vec<Event> {
        let ids: [&[&str]; 6] =
            [&["<a>", "<b>"], &["<a>"], &["<a>", "<b>", "<c>"], &["<c>", "<d>"], &[], &["<a>", "<d>", "<d>"]];
        let outcomes =
            [Outcome::RolledBack, Outcome::Committed, Outcome::InDoubt, Outcome::Committed, Outcome::Refused];
        let mut evs = Vec::new();
        for (i, ids) in ids.iter().enumerate() {
            let n = i as u64 + 1;
            evs.push(Event::SessionStart {
                session: n,
                client: ([127, 0, 0, 1], 4000).into(),
                upstream: "up:110".into(),
                profile: "p".into(),
            });
            evs.push(Event::Latency { session: n, seq: 1, command: "RETR".into(), micros: 100 * n });
            evs.push(Event::Latency { session: n, seq: 2, command: ["QUIT", "DELE"][i % 2].into(), micros: 9 * n });
            if n % 2 == 0 {
                evs.push(Event::Fault {
                    session: n,
                    rule: format!("r{}", n % 4),
                    action: "stall".into(),
                    point: "x".into(),
                });
            }
            evs.push(end(n, outcomes[i % outcomes.len()], ids));
        }
        evs
    }

    #[tokio::test]
    async fn the_dashboard_shows_the_summarys_numbers() {
        let path = std::env::temp_dir().join(format!("popfault-fold-{}.jsonl", std::process::id()));
        let model = shared_model();
        let agg = Aggregator::with_model(Some(&path), Some((model.clone(), Instant::now())), false).expect("start");
        let sink = agg.sink();
        for ev in events() {
            sink.emit(ev);
        }
        drop(sink);
        let summary = agg.finish(1, "p", None).await.expect("finish");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);

        let m = model.lock().expect("model").clone();
        assert_eq!(summary.duplicates, 7);
        assert_eq!(m.ended_total(), summary.sessions);
        for o in Outcome::ALL {
            assert_eq!(m.outcome_count(o), summary.outcomes[o.as_str()], "{o:?}");
        }
        assert_eq!(
            (m.at_risk(), m.duplicates(), m.downloaded()),
            (summary.at_risk, summary.duplicates, summary.downloaded)
        );
        assert_eq!(m.faults_fired(), summary.faults_fired.values().sum::<u64>());
        let latency: Vec<(String, _)> = m.latency_percentiles().into_iter().map(|(k, p)| (k.to_string(), p)).collect();
        assert_eq!(latency, summary.latency_us.into_iter().collect::<Vec<_>>());
        // Per session: the row, the log and the file's line carry the same
        // answer of the fold.
        let rows: Vec<(u64, u64)> =
            m.rows().map(|r| (r.session, r.end.as_ref().map_or(99, |e| e.duplicates))).collect();
        assert_eq!(rows, [(6, 3), (5, 0), (4, 1), (3, 2), (2, 1), (1, 0)]);
        let logged: u64 = m
            .log()
            .map(|l| match l.kind {
                crate::dashboard::LogKind::End { duplicates, .. } => duplicates,
                _ => 0,
            })
            .sum();
        assert_eq!(logged, summary.duplicates);
        let mut in_file: Vec<(u64, u64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "session_end")
            .map(|v| (v["session"].as_u64().unwrap_or(0), v["duplicates"].as_u64().unwrap_or(99)))
            .collect();
        in_file.sort_by(|a, b| b.cmp(a));
        assert_eq!(in_file, rows);
    }

    #[tokio::test]
    async fn totals_reach_the_dashboard_without_waiting_for_more_events() {
        let model = shared_model();
        let agg = Aggregator::with_model(None, Some((model.clone(), Instant::now())), false).expect("start");
        let sink = agg.sink();
        let ended = || model.lock().expect("model").ended_total();
        let wait_for = |n: u64| async move {
            let deadline = Instant::now() + 20 * FRAME;
            while ended() < n {
                assert!(Instant::now() < deadline, "totals never reached the dashboard");
                tokio::time::sleep(FRAME / 10).await;
            }
        };
        let mut evs = events();
        let rest = evs.split_off(evs.len() / 2);
        // The first batch's totals go out at once...
        for ev in evs {
            sink.emit(ev);
        }
        wait_for(3).await;
        // ...so the next batch's wait for the next frame; no event follows,
        // and the run goes on: they still come.
        for ev in rest {
            sink.emit(ev);
        }
        wait_for(6).await;
        assert_eq!(model.lock().expect("model").duplicates(), 7);
        drop(sink);
        let _ = agg.finish(1, "p", None).await;
    }
}
