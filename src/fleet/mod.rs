//! Many named proxies in one process, driven as Toxiproxy drives its own:
//! the state behind `popfault api` (docs/API.md), and its Rust API.
//!
//! ```no_run
//! # async fn example() -> Result<(), popfault::FleetError> {
//! use popfault::{Fleet, ProxySpec, ToxicSpec};
//!
//! let fleet = Fleet::new(Some(7));
//! let proxy = fleet.create(ProxySpec::new("pop3", "127.0.0.1:0", "127.0.0.1:110")).await?;
//! let _client_connects_to = proxy.listen;
//! fleet.add_toxic("pop3", ToxicSpec::new("latency").attribute("latency", 200)).await?;
//! // ... run the client under test, then:
//! let sessions = fleet.sessions("pop3")?;
//! let summary = fleet.summary("pop3")?;
//! # let _ = (sessions, summary);
//! fleet.reset().await?;
//! # Ok(()) }
//! ```
//!
//! Each proxy is a relay (`relay::start`) with its own `Control`; its
//! toxics and its profile make one popfault profile, swapped in with
//! `Control::set_profile`, so sessions accepted from then on run it. Every
//! call takes the fleet's lock only for bookkeeping and binding or closing
//! a listener: none waits for a session (a session's end is awaited by a
//! task of its own).

mod book;
pub mod metrics;
pub mod toxic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;
use tracing::warn;

use book::{AllView, Book};
pub use book::{Line, LiveSession, RECENT, Sessions};
use toxic::Toxic;

use crate::control::Control;
use crate::dashboard::{Header, Pane};
use crate::events::EventSink;
use crate::faults::{Profile, ProfileError};
use crate::relay::{self, ProxyConfig, ProxyHandle};
use crate::stats::Summary;

/// Events buffered per proxy between its sessions and its books.
const EVENT_QUEUE: usize = 65_536;

/// Event lines buffered per `GET /events` subscriber before the oldest go.
const LINE_QUEUE: usize = 4096;

/// How long closing a listener may take before the call goes on anyway.
const CLOSE_LIMIT: Duration = Duration::from_secs(2);

/// Why a call was refused; [`FleetError::status`] is its HTTP status, as
/// Toxiproxy answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// 404: `proxy not found`, `toxic not found`, `session not found`.
    #[error("{0}")]
    NotFound(&'static str),
    /// 409: `proxy already exists`, `toxic already exists`.
    #[error("{0}")]
    Conflict(&'static str),
    /// 400: the request cannot be carried out as it is.
    #[error("{0}")]
    BadRequest(String),
    /// 400: a profile or `pop3` rule failed `check-profile`'s checks.
    #[error("{error}")]
    Profile {
        /// Where and what, as `check-profile` says it (boxed: errors stay
        /// small on the way up).
        error: Box<ProfileError>,
        /// The TOML that was checked (for a `pop3` toxic, the rule its
        /// attributes make).
        toml: String,
    },
    /// 500: the system said no (a listener could not be bound).
    #[error("{0}")]
    Failed(String),
}

impl FleetError {
    pub(crate) fn bad(message: impl Into<String>) -> FleetError {
        FleetError::BadRequest(message.into())
    }

    pub(crate) fn profile(error: ProfileError, toml: String) -> FleetError {
        FleetError::Profile { error: Box::new(error), toml }
    }

    /// The HTTP status Toxiproxy gives this error.
    pub fn status(&self) -> u16 {
        match self {
            FleetError::NotFound(_) => 404,
            FleetError::Conflict(_) => 409,
            FleetError::BadRequest(_) | FleetError::Profile { .. } => 400,
            FleetError::Failed(_) => 500,
        }
    }
}

const NO_PROXY: FleetError = FleetError::NotFound("proxy not found");

/// A proxy to create: Toxiproxy's fields.
#[derive(Debug, Clone, Deserialize)]
pub struct ProxySpec {
    /// Its name, unique in the fleet.
    #[serde(default)]
    pub name: String,
    /// Where clients connect (`127.0.0.1:0` when empty: a free port).
    #[serde(default)]
    pub listen: String,
    /// The POP3 server, `host:port`.
    #[serde(default)]
    pub upstream: String,
    /// Listening from the start (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
}

impl ProxySpec {
    /// An enabled proxy `name` on `listen` in front of `upstream`.
    pub fn new(name: &str, listen: &str, upstream: &str) -> ProxySpec {
        ProxySpec { name: name.into(), listen: listen.into(), upstream: upstream.into(), enabled: Some(true) }
    }
}

/// A proxy as the API shows it (Toxiproxy's shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProxyInfo {
    /// Its name.
    pub name: String,
    /// Where it listens: the bound address (the real port for port 0).
    pub listen: String,
    /// The POP3 server.
    pub upstream: String,
    /// Whether it listens.
    pub enabled: bool,
    /// Its toxics, in the order they were added.
    pub toxics: Vec<Toxic>,
}

/// Changes to a proxy (absent fields stay).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyUpdate {
    /// A new listen address (restarts the proxy).
    pub listen: Option<String>,
    /// A new upstream (restarts the proxy).
    pub upstream: Option<String>,
    /// Listen (true) or close the listener and cut the sessions (false).
    pub enabled: Option<bool>,
}

/// A toxic to add: Toxiproxy's fields.
#[derive(Debug, Clone, Deserialize)]
pub struct ToxicSpec {
    /// Its name (default `TYPE_STREAM`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its type (`latency`, …, `pop3`).
    #[serde(rename = "type", default)]
    pub kind: String,
    /// `upstream` or `downstream` (default).
    #[serde(default)]
    pub stream: Option<String>,
    /// The chance a session gets it (default 1).
    #[serde(default)]
    pub toxicity: Option<f64>,
    /// Its attributes.
    #[serde(default)]
    pub attributes: Map<String, Value>,
}

impl ToxicSpec {
    /// A downstream toxic of type `kind`, no attributes yet.
    pub fn new(kind: &str) -> ToxicSpec {
        ToxicSpec { name: None, kind: kind.into(), stream: None, toxicity: None, attributes: Map::new() }
    }

    /// Names it.
    pub fn name(mut self, name: &str) -> ToxicSpec {
        self.name = Some(name.into());
        self
    }

    /// `upstream` or `downstream`.
    pub fn stream(mut self, stream: &str) -> ToxicSpec {
        self.stream = Some(stream.into());
        self
    }

    /// The chance a session gets it.
    pub fn toxicity(mut self, toxicity: f64) -> ToxicSpec {
        self.toxicity = Some(toxicity);
        self
    }

    /// Sets one attribute.
    pub fn attribute(mut self, key: &str, value: impl Into<Value>) -> ToxicSpec {
        self.attributes.insert(key.into(), value.into());
        self
    }
}

/// Changes to a toxic: attributes merged over the old ones, and toxicity.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToxicUpdate {
    /// Attributes to set.
    #[serde(default)]
    pub attributes: Option<Map<String, Value>>,
    /// A new toxicity.
    #[serde(default)]
    pub toxicity: Option<f64>,
}

/// Timeouts and limits every proxy of a fleet runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Give up connecting upstream after this long.
    pub connect_timeout: Duration,
    /// Cut a session with no byte either way for this long.
    pub idle_timeout: Duration,
    /// Give up on an upstream that does not greet within this long.
    pub greeting_timeout: Duration,
    /// Most sessions at once per proxy.
    pub max_sessions: usize,
    /// Keep a dashboard model per proxy ([`Fleet::panes`]).
    pub dashboard: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        let d = ProxyConfig::new(([127, 0, 0, 1], 0).into(), "");
        Settings {
            connect_timeout: d.connect_timeout,
            idle_timeout: d.idle_timeout,
            greeting_timeout: d.greeting_timeout,
            max_sessions: d.max_sessions,
            dashboard: false,
        }
    }
}

struct Entry {
    listen: String,
    upstream: String,
    toxics: Vec<Toxic>,
    /// The profile set with `set_profile`, under the toxics' rules.
    base: Arc<Profile>,
    /// The profile it was created with (`reset` goes back to it).
    initial: Arc<Profile>,
    handle: Option<ProxyHandle>,
    numbering: Arc<AtomicU64>,
    book: Arc<Book>,
    fold: Option<tokio::task::JoinHandle<()>>,
}

impl Entry {
    fn info(&self, name: &str) -> ProxyInfo {
        ProxyInfo {
            name: name.into(),
            listen: self.listen.clone(),
            upstream: self.upstream.clone(),
            enabled: self.handle.is_some(),
            toxics: self.toxics.clone(),
        }
    }

    /// The base profile with every toxic's rules after its own.
    fn effective(&self) -> Profile {
        let mut p = (*self.base).clone();
        if self.toxics.is_empty() {
            return p;
        }
        let mut names = vec![p.name.clone()];
        for t in &self.toxics {
            // Checked when the toxic was made: parsing again cannot fail.
            let Ok(text) = t.rules_toml() else { continue };
            if text.is_empty() {
                continue;
            }
            let Ok(rules) = Profile::from_toml(&text, &t.name, &t.name) else { continue };
            p.rules.extend(rules.rules);
            if !p.source.is_empty() {
                p.source.push('\n');
            }
            p.source.push_str(&text);
            names.push(t.name.clone());
        }
        p.name = names.join("+");
        p
    }

    fn apply(&self) {
        self.book.control.set_profile(Arc::new(self.effective()));
    }

    /// Closes the listener (the call waits for that alone) and cuts the
    /// live sessions in a task of their own.
    async fn stop(&mut self) {
        if let Some(mut h) = self.handle.take() {
            let _ = tokio::time::timeout(CLOSE_LIMIT, h.stop_accepting()).await;
            tokio::spawn(h.shutdown());
        }
        self.book.enabled.store(false, Ordering::Relaxed);
    }

    async fn start(&mut self, settings: &Settings) -> Result<(), FleetError> {
        if self.handle.is_some() {
            return Ok(());
        }
        let addrs = resolve(&self.listen).await?;
        let mut last = String::new();
        for addr in addrs {
            let mut cfg = ProxyConfig::new(addr, self.upstream.clone());
            cfg.connect_timeout = settings.connect_timeout;
            cfg.idle_timeout = settings.idle_timeout;
            cfg.greeting_timeout = settings.greeting_timeout;
            cfg.max_sessions = settings.max_sessions;
            cfg.numbering = self.numbering.clone();
            let Some(sink) = self.book.sink() else { break };
            match relay::start(cfg, self.book.control.clone(), sink).await {
                Ok(h) => {
                    if !h.local_addr.ip().is_loopback() {
                        warn!(
                            proxy = %self.book.name, listen = %h.local_addr,
                            "listening on an address that is not loopback: popfault is a man in the middle \
                             carrying passwords; anyone who can reach this address can use it"
                        );
                    }
                    self.listen = h.local_addr.to_string();
                    self.book.set_addrs(&self.listen, &self.upstream);
                    self.handle = Some(h);
                    self.book.enabled.store(true, Ordering::Relaxed);
                    return Ok(());
                }
                Err(e) => last = format!("listen tcp {addr}: {e}"),
            }
        }
        Err(FleetError::Failed(last))
    }
}

/// `host:port` (a name is resolved now; empty is a free port on loopback).
async fn resolve(listen: &str) -> Result<Vec<SocketAddr>, FleetError> {
    let listen = if listen.is_empty() { "127.0.0.1:0" } else { listen };
    if let Ok(a) = listen.parse::<SocketAddr>() {
        return Ok(vec![a]);
    }
    let bad = || FleetError::bad(format!("bad request body: listen: '{listen}' is not HOST:PORT"));
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen).await.map_err(|_| bad())?.collect();
    if addrs.is_empty() { Err(bad()) } else { Ok(addrs) }
}

fn check_upstream(upstream: &str) -> Result<(), FleetError> {
    match upstream.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => Ok(()),
        _ => Err(FleetError::bad(format!("bad request body: upstream: '{upstream}' is not HOST:PORT"))),
    }
}

fn check_name(name: &str, what: &str) -> Result<(), FleetError> {
    if name.is_empty() {
        return Err(FleetError::bad(format!("missing required field: {what}")));
    }
    if name.chars().any(char::is_control) {
        return Err(FleetError::bad(format!("bad request body: {what} holds a control character")));
    }
    Ok(())
}

struct Inner {
    proxies: tokio::sync::Mutex<BTreeMap<String, Entry>>,
    /// The books by proxy name, readable without the lock above.
    books: Mutex<BTreeMap<String, Arc<Book>>>,
    lines: broadcast::Sender<Arc<Line>>,
    seed: u64,
    settings: Settings,
    /// Session numbers, shared by every proxy: unique across the fleet,
    /// so the view of every proxy (and a cut from it) knows each session.
    numbering: Arc<AtomicU64>,
    /// The dashboard's view of every proxy, when a dashboard draws.
    all: Option<Arc<AllView>>,
}

/// Many named proxies; cheap to clone (one shared state).
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet").field("seed", &self.inner.seed).finish_non_exhaustive()
    }
}

impl Fleet {
    /// An empty fleet; `seed` seeds every proxy's draws (drawn when `None`).
    pub fn new(seed: Option<u64>) -> Fleet {
        Fleet::with_settings(seed, Settings::default())
    }

    /// An empty fleet whose proxies run with `settings`.
    pub fn with_settings(seed: Option<u64>, settings: Settings) -> Fleet {
        let (lines, _) = broadcast::channel(LINE_QUEUE);
        Fleet {
            inner: Arc::new(Inner {
                proxies: tokio::sync::Mutex::new(BTreeMap::new()),
                books: Mutex::new(BTreeMap::new()),
                lines,
                seed: seed.unwrap_or_else(rand::random),
                numbering: Arc::new(AtomicU64::new(0)),
                all: settings.dashboard.then(|| Arc::new(AllView::new())),
                settings,
            }),
        }
    }

    /// The seed of every proxy's draws.
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    fn book(&self, name: &str) -> Result<Arc<Book>, FleetError> {
        let books = self.inner.books.lock().unwrap_or_else(|p| p.into_inner());
        books.get(name).cloned().ok_or(NO_PROXY)
    }

    fn books(&self) -> Vec<Arc<Book>> {
        self.inner.books.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    /// Creates a proxy (409 if the name is taken); enabled unless told
    /// otherwise, with `passthrough` as its profile.
    pub async fn create(&self, spec: ProxySpec) -> Result<ProxyInfo, FleetError> {
        self.create_with(spec, Profile::passthrough()).await
    }

    /// Creates a proxy running `profile` under its toxics (reset goes back
    /// to it).
    pub async fn create_with(&self, spec: ProxySpec, profile: Profile) -> Result<ProxyInfo, FleetError> {
        check_name(&spec.name, "name")?;
        if spec.upstream.is_empty() {
            return Err(FleetError::bad("missing required field: upstream"));
        }
        check_upstream(&spec.upstream)?;
        let mut proxies = self.inner.proxies.lock().await;
        if proxies.contains_key(&spec.name) {
            return Err(FleetError::Conflict("proxy already exists"));
        }
        let (entry, info) = self.make(spec, profile).await?;
        self.insert(&mut proxies, entry, &info.name);
        Ok(info)
    }

    async fn make(&self, spec: ProxySpec, profile: Profile) -> Result<(Entry, ProxyInfo), FleetError> {
        let profile = Arc::new(profile);
        let control = Arc::new(Control::new(profile.clone(), self.inner.seed));
        let channel = EventSink::channel(EVENT_QUEUE);
        let all = self.inner.all.clone();
        let (book, fold) = Book::start(&spec.name, control, channel, self.inner.lines.clone(), all);
        book.set_addrs(&spec.listen, &spec.upstream);
        let mut entry = Entry {
            listen: spec.listen,
            upstream: spec.upstream,
            toxics: Vec::new(),
            base: profile.clone(),
            initial: profile,
            handle: None,
            numbering: self.inner.numbering.clone(),
            book,
            fold: Some(fold),
        };
        let started = if spec.enabled.unwrap_or(true) {
            entry.start(&self.inner.settings).await
        } else {
            // Shown as given until it binds; checked now, so a bad one is
            // a bad request, not a later failure.
            resolve(&entry.listen).await.map(|_| ())
        };
        if let Err(e) = started {
            entry.book.close();
            return Err(e);
        }
        let info = entry.info(&spec.name);
        Ok((entry, info))
    }

    fn insert(&self, proxies: &mut BTreeMap<String, Entry>, entry: Entry, name: &str) {
        let mut books = self.inner.books.lock().unwrap_or_else(|p| p.into_inner());
        books.insert(name.into(), entry.book.clone());
        proxies.insert(name.into(), entry);
    }

    /// Creates or replaces several proxies (Toxiproxy's `/populate`): one
    /// whose listen and upstream are unchanged is kept as it is. The whole
    /// list is checked before anything changes.
    pub async fn populate(&self, specs: Vec<ProxySpec>) -> Result<Vec<ProxyInfo>, (FleetError, Vec<ProxyInfo>)> {
        let mut seen = std::collections::BTreeSet::new();
        for (i, s) in specs.iter().enumerate() {
            let n = i + 1;
            if s.name.is_empty() {
                return Err((FleetError::bad(format!("missing required field: name at proxy {n}")), Vec::new()));
            }
            if s.upstream.is_empty() {
                return Err((FleetError::bad(format!("missing required field: upstream at proxy {n}")), Vec::new()));
            }
            check_name(&s.name, "name").map_err(|e| (e, Vec::new()))?;
            check_upstream(&s.upstream).map_err(|e| (e, Vec::new()))?;
            if !seen.insert(s.name.clone()) {
                return Err((FleetError::bad(format!("duplicate proxy name \"{}\"", s.name)), Vec::new()));
            }
        }
        let mut done = Vec::new();
        let mut proxies = self.inner.proxies.lock().await;
        for spec in specs {
            if let Some(e) = proxies.get(&spec.name) {
                let same_listen = e.listen == spec.listen || spec.listen.is_empty();
                if same_listen && e.upstream == spec.upstream {
                    done.push(e.info(&spec.name));
                    continue;
                }
            }
            if let Some(mut old) = proxies.remove(&spec.name) {
                old.stop().await;
                old.book.close();
                self.forget(&spec.name);
            }
            match self.make(spec, Profile::passthrough()).await {
                Ok((entry, info)) => {
                    self.insert(&mut proxies, entry, &info.name);
                    done.push(info);
                }
                Err(e) => return Err((e, done)),
            }
        }
        Ok(done)
    }

    fn forget(&self, name: &str) {
        self.inner.books.lock().unwrap_or_else(|p| p.into_inner()).remove(name);
    }

    /// Every proxy, by name.
    pub async fn list(&self) -> BTreeMap<String, ProxyInfo> {
        let proxies = self.inner.proxies.lock().await;
        proxies.iter().map(|(n, e)| (n.clone(), e.info(n))).collect()
    }

    /// One proxy.
    pub async fn get(&self, name: &str) -> Result<ProxyInfo, FleetError> {
        let proxies = self.inner.proxies.lock().await;
        proxies.get(name).map(|e| e.info(name)).ok_or(NO_PROXY)
    }

    /// Changes a proxy: a new listen or upstream restarts it (its live
    /// sessions are cut); `enabled` opens or closes its listener (closing
    /// cuts its sessions too).
    pub async fn update(&self, name: &str, u: ProxyUpdate) -> Result<ProxyInfo, FleetError> {
        if let Some(up) = &u.upstream {
            check_upstream(up)?;
        }
        if let Some(l) = &u.listen {
            resolve(l).await?;
        }
        let mut proxies = self.inner.proxies.lock().await;
        let e = proxies.get_mut(name).ok_or(NO_PROXY)?;
        let want = u.enabled.unwrap_or(e.handle.is_some());
        let listen = u.listen.unwrap_or_else(|| e.listen.clone());
        let upstream = u.upstream.unwrap_or_else(|| e.upstream.clone());
        if listen != e.listen || upstream != e.upstream {
            e.stop().await;
            e.listen = listen;
            e.upstream = upstream;
        }
        if want {
            e.start(&self.inner.settings).await?;
        } else {
            e.stop().await;
        }
        Ok(e.info(name))
    }

    /// Deletes a proxy: its listener is closed now, its sessions cut.
    pub async fn delete(&self, name: &str) -> Result<(), FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let mut e = proxies.remove(name).ok_or(NO_PROXY)?;
        self.forget(name);
        e.stop().await;
        e.book.close();
        Ok(())
    }

    /// A proxy's toxics.
    pub async fn toxics(&self, name: &str) -> Result<Vec<Toxic>, FleetError> {
        Ok(self.get(name).await?.toxics)
    }

    /// One toxic.
    pub async fn toxic(&self, name: &str, toxic: &str) -> Result<Toxic, FleetError> {
        let t = self.toxics(name).await?;
        t.into_iter().find(|t| t.name == toxic).ok_or(FleetError::NotFound("toxic not found"))
    }

    /// Adds a toxic; sessions accepted from now on get it.
    pub async fn add_toxic(&self, name: &str, spec: ToxicSpec) -> Result<Toxic, FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let e = proxies.get_mut(name).ok_or(NO_PROXY)?;
        let t = Toxic::new(spec.name, spec.kind, spec.stream, spec.toxicity, spec.attributes)?;
        if e.toxics.iter().any(|x| x.name == t.name) {
            return Err(FleetError::Conflict("toxic already exists"));
        }
        e.toxics.push(t.clone());
        e.apply();
        Ok(t)
    }

    /// Changes a toxic's attributes (merged) or toxicity.
    pub async fn update_toxic(&self, name: &str, toxic: &str, u: ToxicUpdate) -> Result<Toxic, FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let e = proxies.get_mut(name).ok_or(NO_PROXY)?;
        let slot = e.toxics.iter_mut().find(|t| t.name == toxic).ok_or(FleetError::NotFound("toxic not found"))?;
        let t = slot.updated(u.attributes, u.toxicity)?;
        *slot = t.clone();
        e.apply();
        Ok(t)
    }

    /// Removes a toxic; sessions accepted from now on are without it.
    pub async fn remove_toxic(&self, name: &str, toxic: &str) -> Result<(), FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let e = proxies.get_mut(name).ok_or(NO_PROXY)?;
        let before = e.toxics.len();
        e.toxics.retain(|t| t.name != toxic);
        if e.toxics.len() == before {
            return Err(FleetError::NotFound("toxic not found"));
        }
        e.apply();
        Ok(())
    }

    /// Every proxy enabled, every toxic removed, every profile back to the
    /// one it was created with (Toxiproxy's `/reset`, and popfault's part).
    pub async fn reset(&self) -> Result<(), FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let mut failed = None;
        for e in proxies.values_mut() {
            e.toxics.clear();
            e.base = e.initial.clone();
            e.apply();
            if let Err(err) = e.start(&self.inner.settings).await {
                failed.get_or_insert(err);
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Sets a proxy's profile from TOML (docs/PROFILES.md), checked as
    /// `check-profile` checks a file; its toxics' rules follow its own.
    pub async fn set_profile_toml(&self, name: &str, text: &str) -> Result<ProxyInfo, FleetError> {
        let profile = Profile::from_toml(text, "profile", name).map_err(|e| FleetError::profile(e, text.into()))?;
        self.set_profile(name, profile).await
    }

    /// Sets a proxy's profile; its toxics' rules follow its own.
    pub async fn set_profile(&self, name: &str, profile: Profile) -> Result<ProxyInfo, FleetError> {
        let mut proxies = self.inner.proxies.lock().await;
        let e = proxies.get_mut(name).ok_or(NO_PROXY)?;
        e.base = Arc::new(profile);
        e.apply();
        Ok(e.info(name))
    }

    /// The profile new sessions of the proxy run: its own and its toxics'.
    pub fn profile(&self, name: &str) -> Result<Arc<Profile>, FleetError> {
        Ok(self.book(name)?.control.profile())
    }

    /// Live and recently ended sessions.
    pub fn sessions(&self, name: &str) -> Result<Sessions, FleetError> {
        Ok(self.book(name)?.sessions())
    }

    /// Cuts live session `id` (both sides reset; its outcome records the
    /// rule `manual`).
    pub fn cut(&self, name: &str, id: u64) -> Result<(), FleetError> {
        if self.book(name)?.control.cut(id) { Ok(()) } else { Err(FleetError::NotFound("session not found")) }
    }

    /// The proxy's summary since it was created or last reset.
    pub fn summary(&self, name: &str) -> Result<Summary, FleetError> {
        let book = self.book(name)?;
        Ok(book.summary(&book.control.profile().name))
    }

    /// Starts the proxy's counts afresh.
    pub fn reset_summary(&self, name: &str) -> Result<(), FleetError> {
        self.book(name)?.reset();
        Ok(())
    }

    /// Every proxy's event lines from now on (session starts, faults,
    /// ends), as `GET /events` streams them.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Line>> {
        self.inner.lines.subscribe()
    }

    /// Every proxy as the dashboard shows it, by name (none unless
    /// [`Settings::dashboard`]).
    /// With more than one proxy the first is `*`, every proxy at once, its
    /// table with a proxy column.
    pub fn panes(&self) -> Vec<Pane> {
        let books = self.books();
        let mut panes: Vec<Pane> = books.iter().filter_map(|b| b.pane()).collect();
        if let Some(all) = self.inner.all.as_ref().filter(|_| panes.len() > 1) {
            let every: Vec<Arc<Control>> = books.iter().map(|b| b.control.clone()).collect();
            // Shown in the header: paused when every proxy is.
            let shown = Profile { name: "(each proxy its own)".into(), ..Profile::passthrough() };
            let control = Arc::new(Control::new(Arc::new(shown), self.inner.seed));
            control.set_paused(every.iter().all(|c| c.paused()));
            let header = Header {
                listen: format!("every proxy ({})", panes.len()),
                upstream: "-".into(),
                seed: self.inner.seed,
                started: all.started,
            };
            panes.insert(0, Pane { name: "*".into(), model: all.model.clone(), control, header, every });
        }
        panes
    }

    /// `/metrics`: the Prometheus text format.
    pub fn metrics(&self) -> String {
        metrics::render(&self.books())
    }

    /// Stops every proxy (listeners closed, live sessions cut, every event
    /// counted) and returns each one's summary, by name.
    pub async fn shutdown(&self) -> Vec<(String, Summary)> {
        let mut proxies = self.inner.proxies.lock().await;
        let mut out = Vec::new();
        for (name, mut e) in std::mem::take(&mut *proxies) {
            if let Some(h) = e.handle.take() {
                h.shutdown().await;
            }
            e.book.close();
            if let Some(fold) = e.fold.take() {
                let _ = tokio::time::timeout(Duration::from_secs(5), fold).await;
            }
            out.push((name.clone(), e.book.summary(&e.book.control.profile().name)));
            self.forget(&name);
        }
        out
    }
}
