//! The aggregator: the one reader of the event stream. It folds events into
//! [`Stats`], writes the JSON-lines events file, and keeps the latest
//! totals for whoever asks (the summary, later the dashboard).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::dashboard::SharedModel;
use crate::events::{Event, EventSink};
use crate::stats::{Stats, Summary};

/// A running aggregator.
pub struct Aggregator {
    task: tokio::task::JoinHandle<io::Result<Stats>>,
    sink: EventSink,
    latest: Arc<Mutex<Summary>>,
}

/// The summary line of the events file.
#[derive(Serialize)]
struct SummaryLine<'a> {
    event: &'static str,
    #[serde(flatten)]
    summary: &'a Summary,
}

impl Aggregator {
    /// Starts reading events; writes them to `events_file` if given.
    pub fn start(events_file: Option<&Path>) -> io::Result<Aggregator> {
        Aggregator::with_model(events_file, None)
    }

    /// Also folds every event into the dashboard's `model`, timed from
    /// `started`.
    pub fn with_model(
        events_file: Option<&Path>,
        model: Option<(SharedModel, std::time::Instant)>,
    ) -> io::Result<Aggregator> {
        let out =
            match events_file {
                Some(p) => Some(BufWriter::new(File::create(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create events file {}: {e}", p.display()))
                })?)),
                None => None,
            };
        let (sink, rx) = EventSink::channel(crate::events::EVENT_QUEUE);
        let latest = Arc::new(Mutex::new(Stats::new().summary(0, "", 0)));
        let task = tokio::spawn(run(rx, out, latest.clone(), model));
        Ok(Aggregator { task, sink, latest })
    }

    /// Where sessions send their events.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// The totals so far (seed and profile not filled in).
    pub fn totals(&self) -> Option<Summary> {
        self.latest.lock().ok().map(|s| s.clone())
    }

    /// Waits for every sender to be gone, then writes the summary line and
    /// returns the summary. Drop every other [`EventSink`] clone first.
    pub async fn finish(self, seed: u64, profile: &str, events_file: Option<&Path>) -> io::Result<Summary> {
        let dropped = self.sink.dropped();
        drop(self.sink);
        let stats = self.task.await.map_err(io::Error::other)??;
        let summary = stats.summary(seed, profile, dropped);
        if let Some(p) = events_file {
            let mut f = std::fs::OpenOptions::new().append(true).open(p)?;
            serde_json::to_writer(&mut f, &SummaryLine { event: "summary", summary: &summary })?;
            f.write_all(b"\n")?;
        }
        Ok(summary)
    }
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    mut out: Option<BufWriter<File>>,
    latest: Arc<Mutex<Summary>>,
    model: Option<(SharedModel, std::time::Instant)>,
) -> io::Result<Stats> {
    let mut stats = Stats::new();
    let mut batch = Vec::with_capacity(256);
    while rx.recv_many(&mut batch, 256).await > 0 {
        for ev in batch.iter_mut() {
            // The fold fills in duplicates before anyone else sees the end.
            stats.apply(ev);
        }
        if let Some((m, started)) = &model {
            crate::dashboard::feed(m, batch.iter(), started.elapsed());
        }
        for ev in batch.drain(..) {
            if let Some(w) = &mut out {
                // Progress and per-command latency feed the dashboard and
                // the histograms; the file keeps sessions and faults.
                if !matches!(ev, Event::Progress(_) | Event::Latency { .. }) {
                    serde_json::to_writer(&mut *w, &ev)?;
                    w.write_all(b"\n")?;
                }
            }
        }
        if let Some(w) = &mut out {
            w.flush()?;
        }
        if let Ok(mut l) = latest.lock() {
            *l = stats.summary(0, "", 0);
        }
    }
    if let Some(w) = &mut out {
        w.flush()?;
    }
    Ok(stats)
}
