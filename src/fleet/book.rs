//! One proxy's books: the fold of its events (the same `Stats` as a
//! single proxy's summary), its live sessions and its recent ends, and the
//! event lines handed to `GET /events` subscribers. Written by the proxy's
//! fold task, read by API calls, each under a short lock.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc};

use crate::control::Control;
use crate::dashboard::{FRAME, Header, Pane, SharedModel};
use crate::events::{Event, EventSink, SessionSnapshot};
use crate::session::State;
use crate::stats::{Stats, Summary};

/// Ended sessions kept per proxy for `GET /proxies/{name}/sessions`.
pub const RECENT: usize = 1000;

/// Events read from a proxy's channel per lock of its books.
const BATCH: usize = 256;

/// An event line for `GET /events` subscribers: the events file's line
/// with the proxy's name added.
#[derive(Debug, Clone)]
pub struct Line {
    /// The proxy it came from.
    pub proxy: String,
    /// The event's type (`session_start`, `fault`, `session_end`).
    pub event: &'static str,
    /// The JSON object, one line, `"proxy"` first.
    pub json: String,
}

/// A live session as `GET /proxies/{name}/sessions` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveSession {
    /// The client's address.
    pub client: SocketAddr,
    /// The profile it runs under.
    pub profile: String,
    /// Where it stands: number, state, user, last command, counts (the
    /// dashboard's progress report, as last sent).
    #[serde(flatten)]
    pub now: SessionSnapshot,
}

/// Live and recently ended sessions of a proxy.
#[derive(Debug, Clone, Serialize)]
pub struct Sessions {
    /// In progress, by number.
    pub live: Vec<LiveSession>,
    /// The last [`RECENT`] ends, oldest first, each the events file's
    /// `session_end` object (duplicates as the fold found them).
    pub recent: Vec<serde_json::Value>,
}

#[derive(Debug, Default)]
struct Ledger {
    stats: Stats,
    live: BTreeMap<u64, LiveSession>,
    recent: VecDeque<serde_json::Value>,
}

/// Every proxy's sessions in one dashboard view (`*`): a model fed by each
/// proxy's fold, with a fold of its own for the totals it shows.
#[derive(Debug)]
pub struct AllView {
    pub model: SharedModel,
    stats: Mutex<(Stats, Instant)>,
    pub started: Instant,
}

impl AllView {
    pub fn new() -> AllView {
        AllView {
            model: crate::dashboard::shared_model(),
            stats: Mutex::new((Stats::new(), Instant::now())),
            started: Instant::now(),
        }
    }

    /// One proxy's batch of events; the totals reach the view at most once
    /// a frame (and at the next batch after that).
    fn feed(&self, proxy: &Arc<str>, batch: &[Event]) {
        let (answers, totals) = {
            let mut g = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            let answers: Vec<_> = batch.iter().map(|e| g.0.apply(e)).collect();
            let due = g.1.elapsed() >= FRAME;
            if due {
                g.1 = Instant::now();
            }
            (answers, due.then(|| g.0.totals()))
        };
        crate::dashboard::feed_from(&self.model, proxy, batch.iter().zip(answers), self.started.elapsed());
        if let Some(t) = totals {
            crate::dashboard::publish(&self.model, Arc::new(t));
        }
    }

    /// The totals now.
    pub fn publish(&self) {
        let totals = self.stats.lock().unwrap_or_else(|p| p.into_inner()).0.totals();
        crate::dashboard::publish(&self.model, Arc::new(totals));
    }
}

/// One proxy's books.
#[derive(Debug)]
pub struct Book {
    /// The proxy's name.
    pub name: String,
    /// Its live controls (cut, byte counters), kept across restarts.
    pub control: Arc<Control>,
    /// Whether it listens (for `/metrics`).
    pub enabled: AtomicBool,
    /// The proxy's sink, until it is deleted (the fold ends once every
    /// sink is gone); `dropped` keeps its count after that.
    sink: Mutex<Option<EventSink>>,
    dropped: AtomicU64,
    state: Mutex<Ledger>,
    /// The dashboard's model of this proxy, when a dashboard draws.
    pub model: Option<SharedModel>,
    /// The view of every proxy, fed too when a dashboard draws.
    all: Option<Arc<AllView>>,
    /// When the proxy was created (the dashboard's clock).
    pub started: Instant,
    /// Where it listens and its upstream, for the dashboard's header.
    addrs: Mutex<(String, String)>,
}

impl Book {
    /// Books for proxy `name`, and the fold task that keeps them; the task
    /// ends once every sink of the proxy is gone.
    pub fn start(
        name: &str,
        control: Arc<Control>,
        (sink, events): (EventSink, mpsc::Receiver<Event>),
        lines: broadcast::Sender<Arc<Line>>,
        all: Option<Arc<AllView>>,
    ) -> (Arc<Book>, tokio::task::JoinHandle<()>) {
        let dashboard = all.is_some();
        let book = Arc::new(Book {
            name: name.to_string(),
            control,
            enabled: AtomicBool::new(false),
            sink: Mutex::new(Some(sink)),
            dropped: AtomicU64::new(0),
            state: Mutex::new(Ledger::default()),
            model: dashboard.then(crate::dashboard::shared_model),
            all,
            started: Instant::now(),
            addrs: Mutex::new((String::new(), String::new())),
        });
        let task = tokio::spawn(fold(book.clone(), events, lines));
        (book, task)
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes where the proxy listens and its upstream (for the dashboard).
    pub fn set_addrs(&self, listen: &str, upstream: &str) {
        *self.addrs.lock().unwrap_or_else(|p| p.into_inner()) = (listen.into(), upstream.into());
    }

    /// The proxy as the dashboard shows it, if one draws.
    pub fn pane(&self) -> Option<Pane> {
        let model = self.model.clone()?;
        let (listen, upstream) = self.addrs.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let header = Header { listen, upstream, seed: self.control.seed(), started: self.started };
        Some(Pane { name: self.name.clone(), model, control: self.control.clone(), header, every: Vec::new() })
    }

    /// A sink for the proxy's relay; `None` once the proxy is closed.
    pub fn sink(&self) -> Option<EventSink> {
        self.sink.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Lets go of the proxy's sink: its fold ends once its sessions have.
    pub fn close(&self) {
        if let Some(s) = self.sink.lock().unwrap_or_else(|p| p.into_inner()).take() {
            self.dropped.store(s.dropped(), Ordering::Relaxed);
        }
    }

    /// Events dropped because the proxy's queue was full.
    pub fn dropped_events(&self) -> u64 {
        let s = self.sink.lock().unwrap_or_else(|p| p.into_inner());
        s.as_ref().map_or_else(|| self.dropped.load(Ordering::Relaxed), EventSink::dropped)
    }

    /// Live and recent sessions.
    pub fn sessions(&self) -> Sessions {
        let s = self.lock();
        Sessions { live: s.live.values().cloned().collect(), recent: s.recent.iter().cloned().collect() }
    }

    /// Sessions in progress.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    /// The summary of what was counted since the start or the last reset.
    pub fn summary(&self, profile: &str) -> Summary {
        let dropped = self.dropped_events();
        self.lock().stats.summary(self.control.seed(), profile, dropped)
    }

    /// Runs `f` on the fold (for `/metrics`), under the lock.
    pub fn with_stats<T>(&self, f: impl FnOnce(&Stats) -> T) -> T {
        f(&self.lock().stats)
    }

    /// Forgets the counts and the recent ends (live sessions stay listed;
    /// their ends will count).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.stats = Stats::new();
        s.recent.clear();
    }

    /// Whether the proxy listens.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }
}

async fn fold(book: Arc<Book>, mut events: mpsc::Receiver<Event>, lines: broadcast::Sender<Arc<Line>>) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut answers = Vec::with_capacity(BATCH);
    let prefix = format!("{{\"proxy\":{},", serde_json::Value::String(book.name.clone()));
    let name: Arc<str> = book.name.as_str().into();
    // The dashboard gets the fold's totals at most once a frame, and once
    // more after the last change.
    let mut published = Instant::now();
    let mut unpublished = false;
    loop {
        let received = match &book.model {
            Some(m) if unpublished => match tokio::time::timeout(FRAME, events.recv_many(&mut batch, BATCH)).await {
                Ok(n) => n,
                Err(_) => {
                    publish(&book, m);
                    (published, unpublished) = (Instant::now(), false);
                    continue;
                }
            },
            _ => events.recv_many(&mut batch, BATCH).await,
        };
        if received == 0 {
            break;
        }
        let mut out = Vec::new();
        answers.clear();
        {
            let mut s = book.lock();
            for ev in &batch {
                let folded = s.stats.apply(ev);
                answers.push(folded);
                let kind = match ev {
                    Event::SessionStart { session, client, profile, .. } => {
                        let now = SessionSnapshot {
                            session: *session,
                            state: State::Authorization,
                            user: None,
                            last_command: None,
                            downloaded: 0,
                            marked: 0,
                            bytes_up: 0,
                            bytes_down: 0,
                        };
                        let live = LiveSession { client: *client, profile: profile.clone(), now };
                        s.live.insert(*session, live);
                        "session_start"
                    }
                    Event::Progress(p) => {
                        if let Some(l) = s.live.get_mut(&p.session) {
                            l.now.clone_from(p);
                        }
                        continue;
                    }
                    Event::Fault { .. } => "fault",
                    Event::SessionEnd(end) => {
                        s.live.remove(&end.session);
                        "session_end"
                    }
                    Event::Latency { .. } | Event::Transcript { .. } => continue,
                };
                let mut line = Vec::new();
                if ev.write_line(folded.duplicates, &mut line).is_err() {
                    continue;
                }
                if kind == "session_end" {
                    if let Ok(v) = serde_json::from_slice(&line) {
                        if s.recent.len() == RECENT {
                            s.recent.pop_front();
                        }
                        s.recent.push_back(v);
                    }
                }
                if lines.receiver_count() > 0 {
                    out.push((kind, line));
                }
            }
        }
        // Sent outside the lock; a subscriber that falls behind loses the
        // oldest lines (and is told), never holds up the fold.
        for (event, line) in out {
            let text = String::from_utf8_lossy(&line);
            let body = text.trim_end().strip_prefix('{').unwrap_or(&text);
            let json = format!("{prefix}{body}");
            let _ = lines.send(Arc::new(Line { proxy: book.name.clone(), event, json }));
        }
        if let Some(all) = &book.all {
            all.feed(&name, &batch);
        }
        if let Some(m) = &book.model {
            crate::dashboard::feed(m, batch.iter().zip(answers.iter().copied()), book.started.elapsed());
            unpublished = true;
            if published.elapsed() >= FRAME {
                publish(&book, m);
                (published, unpublished) = (Instant::now(), false);
            }
        }
        batch.clear();
    }
    if let Some(m) = &book.model {
        publish(&book, m);
    }
    if let Some(all) = &book.all {
        all.publish();
    }
}

fn publish(book: &Book, model: &SharedModel) {
    let totals = book.lock().stats.totals();
    crate::dashboard::publish(model, Arc::new(totals));
}
