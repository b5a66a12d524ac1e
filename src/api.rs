//! The library API: popfault in-process, for a Rust test suite.
//!
//! ```no_run
//! # async fn example() -> Result<(), popfault::Error> {
//! use popfault::{Outcome, Proxy};
//!
//! // The POP3 server under test (here the embedded one) ...
//! let maildrop = popfault::server::Maildrop::new(&Default::default());
//! let world = popfault::server::spawn("127.0.0.1:0".parse().unwrap(), maildrop).await?;
//! // ... behind a proxy on a free port that cuts the 3rd RETR halfway.
//! let mut proxy = Proxy::builder(world.addr.to_string()).builtin("lost-carrier")?.seed(7).start().await?;
//! let _client_connects_to = proxy.addr();
//! // ... run the client under test against `proxy.addr()` ...
//! if let Some(end) = proxy.next_end().await {
//!     assert_ne!(end.outcome, Outcome::Committed);
//! }
//! let summary = proxy.stop().await;
//! println!("{} sessions, {} messages at risk", summary.sessions, summary.at_risk);
//! # Ok(()) }
//! ```
//!
//! A [`Proxy`] relays every client to the upstream with the faults of its
//! profile. [`Proxy::next_end`] hands out each session's end as it happens
//! (outcome, counts, duplicates across the run), [`Proxy::stop`] cuts what
//! is still live and returns the run's [`Summary`]. Everything else in the
//! crate is internal: public only for popfault's own tests, benchmarks and
//! fuzz targets, hidden from the docs, with no stability promise.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::control::Control;
use crate::events::{Event, EventSink, SessionEnd};
use crate::faults::Profile;
use crate::relay::{self, ProxyConfig, ProxyHandle};
use crate::stats::{Stats, Summary};

/// Session ends kept for [`Proxy::next_end`] when nobody reads them; the
/// newest are dropped past this (the summary still counts them).
const KEPT_ENDS: usize = 65_536;

/// Events between the sessions and the fold; past this they are dropped,
/// counted in the summary's `dropped_events`, and sessions never wait.
const EVENT_QUEUE: usize = 65_536;

/// Why a proxy could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No built-in profile has this name.
    #[error("no built-in profile named `{0}` (see `popfault profiles`)")]
    UnknownProfile(String),
    /// A profile did not parse or check.
    #[error(transparent)]
    Profile(#[from] crate::faults::ProfileError),
    /// The listener (or the embedded server) could not be set up.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// How to start a [`Proxy`]: [`Proxy::builder`], the options, then
/// [`start`](Builder::start).
#[derive(Debug, Clone)]
pub struct Builder {
    cfg: ProxyConfig,
    profile: Profile,
    seed: Option<u64>,
}

impl Builder {
    /// Listen here instead of on a free port of 127.0.0.1.
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        self.cfg.listen = addr;
        self
    }

    /// Run this profile (default: `passthrough`).
    pub fn profile(mut self, profile: Profile) -> Builder {
        self.profile = profile;
        self
    }

    /// Run the built-in profile `name` (`lost-carrier`, …).
    pub fn builtin(self, name: &str) -> Result<Builder, Error> {
        let profile = crate::faults::builtin::builtin(name).ok_or_else(|| Error::UnknownProfile(name.into()))??;
        Ok(self.profile(profile))
    }

    /// Run a profile given as TOML text (the format of docs/PROFILES.md).
    pub fn profile_toml(self, text: &str) -> Result<Builder, Error> {
        Ok(self.profile(Profile::from_toml(text, "profile", "profile")?))
    }

    /// Seed the faults' draws, so that a run replays exactly (default: one
    /// is drawn; [`Proxy::seed`] says which).
    pub fn seed(mut self, seed: u64) -> Builder {
        self.seed = Some(seed);
        self
    }

    /// Give up connecting upstream after this long (default 10 s).
    pub fn connect_timeout(mut self, limit: Duration) -> Builder {
        self.cfg.connect_timeout = limit;
        self
    }

    /// End a session with no byte either way for this long (default 600 s).
    pub fn idle_timeout(mut self, limit: Duration) -> Builder {
        self.cfg.idle_timeout = limit;
        self
    }

    /// Binds and starts relaying. Needs a tokio runtime with I/O and time.
    pub async fn start(self) -> Result<Proxy, Error> {
        let seed = self.seed.unwrap_or_else(rand::random);
        let profile_name = self.profile.name.clone();
        let control = Arc::new(Control::new(Arc::new(self.profile), seed));
        let (sink, events) = EventSink::channel(EVENT_QUEUE);
        let handle = relay::start(self.cfg, control, sink.clone()).await?;
        let (ends_tx, ends) = mpsc::channel(KEPT_ENDS);
        let fold = tokio::spawn(fold(events, ends_tx));
        Ok(Proxy { handle, ends, fold, sink, seed, profile_name })
    }
}

/// A popfault proxy running in this process.
#[derive(Debug)]
pub struct Proxy {
    handle: ProxyHandle,
    ends: mpsc::Receiver<SessionEnd>,
    fold: JoinHandle<Stats>,
    /// Kept to read how many events were dropped; sessions hold the others.
    sink: EventSink,
    seed: u64,
    profile_name: String,
}

impl Proxy {
    /// A proxy in front of `upstream` (`host:port`), on a free port of
    /// 127.0.0.1, running `passthrough` until told otherwise.
    pub fn builder(upstream: impl Into<String>) -> Builder {
        let cfg = ProxyConfig::new(([127, 0, 0, 1], 0).into(), upstream);
        Builder { cfg, profile: Profile::passthrough(), seed: None }
    }

    /// Where clients connect (the real port when asked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    /// The seed of this run's fault draws.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sessions in progress.
    pub fn live_sessions(&self) -> usize {
        self.handle.live_sessions()
    }

    /// The next session to end, in the order they end; `None` once the
    /// proxy has stopped and every end was handed out.
    pub async fn next_end(&mut self) -> Option<SessionEnd> {
        self.ends.recv().await
    }

    /// A session that has ended and not been handed out yet, if any.
    pub fn try_next_end(&mut self) -> Option<SessionEnd> {
        self.ends.try_recv().ok()
    }

    /// Cuts session `number` now, as a lost carrier (both sides reset);
    /// false if it is not live.
    pub fn cut(&self, number: u64) -> bool {
        self.handle.control.cut(number)
    }

    /// Pauses or resumes the faults (no new decisions while paused).
    pub fn pause(&self, paused: bool) {
        self.handle.control.set_paused(paused);
    }

    /// Sessions accepted from now on run `profile`.
    pub fn set_profile(&self, profile: Profile) {
        self.handle.control.set_profile(Arc::new(profile));
    }

    /// Stops: no new client is accepted, live sessions are cut (reset both
    /// ways, their outcomes recorded) and the run's summary is returned.
    /// Session ends not yet read are dropped.
    pub async fn stop(self) -> Summary {
        let Proxy { handle, ends, fold, sink, seed, profile_name } = self;
        drop(ends);
        handle.shutdown().await;
        let dropped = sink.dropped();
        drop(sink);
        // The fold ends once every sink is gone, which shutdown saw to.
        let stats = fold.await.unwrap_or_default();
        stats.summary(seed, &profile_name, dropped)
    }
}

/// The one fold of the run's events: each session end goes out with the
/// duplicates the fold found, and the fold's state is the summary.
async fn fold(mut events: mpsc::Receiver<Event>, ends: mpsc::Sender<SessionEnd>) -> Stats {
    let mut stats = Stats::new();
    while let Some(ev) = events.recv().await {
        let folded = stats.apply(&ev);
        if let Event::SessionEnd(end) = ev {
            let mut end = *end;
            end.duplicates = folded.duplicates;
            // Never wait on a test that does not read its ends.
            let _ = ends.try_send(end);
        }
    }
    stats
}
