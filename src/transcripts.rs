//! Per-session transcripts on disk (`--transcripts DIR`): what each
//! session did, in order — commands (secrets redacted), status lines, body
//! sizes, faults at their point, the end and why — one file a session
//! (`session-000042.txt`), written when the session ends, for a bug report.
//!
//! Sessions hand their lines over with `try_send` (never waiting); one std
//! thread keeps each live session's lines (bounded) and writes the file at
//! its end, off the runtime.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

/// Lines kept of one session; past it they are counted, and the file says
/// how many were left out.
const MAX_LINES: usize = 5_000;
/// Messages queued for the writer; past it lines are dropped, counted.
const QUEUE: usize = 65_536;

enum Msg {
    Line(u64, String),
    End(u64),
}

/// Where sessions send their transcript lines. Cloning is cheap; sending
/// never waits.
#[derive(Clone)]
pub struct TranscriptSink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for TranscriptSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscriptSink").field("dropped", &self.dropped.load(Ordering::Relaxed)).finish()
    }
}

impl TranscriptSink {
    /// One line of session `session`.
    pub fn line(&self, session: u64, line: String) {
        self.send(Msg::Line(session, line));
    }

    /// Session `session` ended: its file is written.
    pub fn end(&self, session: u64) {
        self.send(Msg::End(session));
    }

    fn send(&self, msg: Msg) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(msg) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The writer thread; [`finish`](Transcripts::finish) once every session
/// has ended (or been cut) writes what is left and says how it went.
pub struct Transcripts {
    sink: TranscriptSink,
    thread: JoinHandle<io::Result<u64>>,
}

impl Transcripts {
    /// Creates `dir` if need be and starts the writer.
    pub fn start(dir: &Path) -> io::Result<Transcripts> {
        fs::create_dir_all(dir)?;
        let (tx, rx) = sync_channel(QUEUE);
        let dir = dir.to_path_buf();
        let thread = std::thread::Builder::new().name("transcripts".into()).spawn(move || write_all(&dir, rx))?;
        Ok(Transcripts { sink: TranscriptSink { tx, dropped: Arc::new(AtomicU64::new(0)) }, thread })
    }

    /// Where sessions send their lines.
    pub fn sink(&self) -> TranscriptSink {
        self.sink.clone()
    }

    /// Waits for the writer once the sessions are gone (their sinks
    /// dropped): the files written, and the lines that never made it.
    pub fn finish(self) -> io::Result<(u64, u64)> {
        let Transcripts { sink, thread } = self;
        let dropped = sink.dropped.load(Ordering::Relaxed);
        drop(sink);
        let files = thread.join().map_err(|_| io::Error::other("the transcript writer panicked"))??;
        Ok((files, dropped))
    }
}

struct Session {
    lines: Vec<String>,
    left_out: u64,
}

fn write_all(dir: &Path, rx: Receiver<Msg>) -> io::Result<u64> {
    let mut live: HashMap<u64, Session> = HashMap::new();
    let mut files = 0;
    let mut first_error = None;
    let write = |n: u64, s: Session| -> io::Result<()> {
        let path: PathBuf = dir.join(format!("session-{n:06}.txt"));
        let mut out = io::BufWriter::new(fs::File::create(path)?);
        for line in &s.lines {
            writeln!(out, "{line}")?;
        }
        if s.left_out > 0 {
            writeln!(out, "… {} more lines left out (at most {MAX_LINES} a session)", s.left_out)?;
        }
        out.flush()
    };
    // Ends when every sink is gone.
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Line(n, line) => {
                let s = live.entry(n).or_insert_with(|| Session { lines: Vec::new(), left_out: 0 });
                if s.lines.len() < MAX_LINES {
                    s.lines.push(line);
                } else {
                    s.left_out += 1;
                }
            }
            Msg::End(n) => {
                let s = live.remove(&n).unwrap_or(Session { lines: Vec::new(), left_out: 0 });
                match write(n, s) {
                    Ok(()) => files += 1,
                    Err(e) => first_error = first_error.or(Some(e)),
                }
            }
        }
    }
    // Sessions whose end never came (dropped lines): what there is.
    for (n, s) in live {
        match write(n, s) {
            Ok(()) => files += 1,
            Err(e) => first_error = first_error.or(Some(e)),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(files),
    }
}
