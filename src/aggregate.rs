//! The aggregator: the one reader of the event stream. It folds events into
//! [`Stats`], feeds the dashboard's model, writes the JSON-lines events
//! file, and keeps the latest totals for whoever asks.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use crate::dashboard::SharedModel;
use crate::events::{Event, EventSink};
use crate::stats::{Stats, Summary};

/// A running aggregator.
pub struct Aggregator {
    task: tokio::task::JoinHandle<io::Result<Stats>>,
    sink: EventSink,
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
        Aggregator::with_model(events_file, None, false)
    }

    /// Also folds every event into the dashboard's `model` (timed from its
    /// instant); `keep_ends` keeps every session end for
    /// [`finish_with_stats`](Aggregator::finish_with_stats).
    pub fn with_model(
        events_file: Option<&Path>,
        model: Option<(SharedModel, Instant)>,
        keep_ends: bool,
    ) -> io::Result<Aggregator> {
        let out =
            match events_file {
                Some(p) => Some(BufWriter::new(File::create(p).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create events file {}: {e}", p.display()))
                })?)),
                None => None,
            };
        let (sink, rx) = EventSink::channel(crate::events::EVENT_QUEUE);
        let sink = sink.with_progress(model.is_some());
        let stats = if keep_ends { Stats::keeping_ends() } else { Stats::new() };
        let task = tokio::spawn(run(rx, out, model, stats));
        Ok(Aggregator { task, sink })
    }

    /// Where sessions send their events.
    pub fn sink(&self) -> EventSink {
        self.sink.clone()
    }

    /// Waits for every sender to be gone, then writes the summary line and
    /// returns the summary. Drop every other [`EventSink`] clone first.
    pub async fn finish(self, seed: u64, profile: &str, events_file: Option<&Path>) -> io::Result<Summary> {
        Ok(self.finish_with_stats(seed, profile, events_file).await?.0)
    }

    /// Like [`finish`](Aggregator::finish), also returning the final totals.
    pub async fn finish_with_stats(
        self,
        seed: u64,
        profile: &str,
        events_file: Option<&Path>,
    ) -> io::Result<(Summary, Stats)> {
        let dropped = self.sink.dropped();
        drop(self.sink);
        let stats = self.task.await.map_err(io::Error::other)??;
        let summary = stats.summary(seed, profile, dropped);
        if let Some(p) = events_file {
            let mut f = std::fs::OpenOptions::new().append(true).open(p)?;
            serde_json::to_writer(&mut f, &SummaryLine { event: "summary", summary: &summary })?;
            f.write_all(b"\n")?;
        }
        Ok((summary, stats))
    }
}

async fn run(
    mut rx: mpsc::Receiver<Event>,
    mut out: Option<BufWriter<File>>,
    model: Option<(SharedModel, Instant)>,
    mut stats: Stats,
) -> io::Result<Stats> {
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
    }
    if let Some(w) = &mut out {
        w.flush()?;
    }
    Ok(stats)
}
