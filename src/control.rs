//! Live control of a running proxy, shared by the relay, the dashboard and
//! the CLI: pause faults, switch profile, cut a session, global byte
//! counters. Everything here is lock-free or holds a lock only for a copy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::faults::Profile;

/// Shared controls of one proxy.
#[derive(Debug)]
pub struct Control {
    paused: AtomicBool,
    profile: Mutex<Arc<Profile>>,
    cuts: Mutex<HashMap<u64, Arc<Notify>>>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    seed: u64,
}

impl Control {
    /// Controls starting with `profile`, faults on, and the run's seed.
    pub fn new(profile: Arc<Profile>, seed: u64) -> Control {
        Control {
            paused: AtomicBool::new(false),
            profile: Mutex::new(profile),
            cuts: Mutex::new(HashMap::new()),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            seed,
        }
    }

    /// The run's seed (every session's faults derive from it).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Pauses (true) or resumes (false) fault injection; paused, the proxy
    /// is a plain relay.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Whether faults are paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// The profile new sessions run under.
    pub fn profile(&self) -> Arc<Profile> {
        self.profile.lock().map(|p| p.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Switches the profile for sessions accepted from now on.
    pub fn set_profile(&self, profile: Arc<Profile>) {
        match self.profile.lock() {
            Ok(mut p) => *p = profile,
            Err(p) => *p.into_inner() = profile,
        }
    }

    /// Cuts a live session now (reset both sides; its outcome records the
    /// rule `manual`). False if no such live session.
    pub fn cut(&self, session: u64) -> bool {
        let n = self.cuts.lock().ok().and_then(|m| m.get(&session).cloned());
        match n {
            Some(n) => {
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// Registers a live session; the returned handle is notified by `cut`.
    pub(crate) fn register(&self, session: u64) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        if let Ok(mut m) = self.cuts.lock() {
            m.insert(session, n.clone());
        }
        n
    }

    /// Forgets a session that ended.
    pub(crate) fn unregister(&self, session: u64) {
        if let Ok(mut m) = self.cuts.lock() {
            m.remove(&session);
        }
    }

    /// Counts relayed bytes (client → server when `up`).
    pub(crate) fn count(&self, up: bool, n: usize) {
        let c = if up { &self.bytes_up } else { &self.bytes_down };
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Bytes relayed so far: (client → server, server → client). Sample it
    /// twice to get a rate.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_up.load(Ordering::Relaxed), self.bytes_down.load(Ordering::Relaxed))
    }
}
