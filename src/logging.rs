//! Logging for the shell: `tracing` to stderr (or to a file under the
//! dashboard), in colour only on a terminal, with repeated warnings folded.
//!
//! A warning or error from one place in the code is written once per
//! [`INTERVAL`]; the ones after it in that interval are only counted, and
//! the count is written as one line when the interval ends ("… (and 8754
//! more in the last 1.0 s)"). A flood of clients past `--max-sessions`
//! once wrote 87,590 lines in 11 s; folded, it writes two a second.
//! Information and debug lines are never folded: they are asked for.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tracing::callsite::Identifier;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// How often folded warnings are counted out.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The target of the count lines, which are never folded themselves.
const TARGET: &str = "popfault::log";

/// The warnings written in the current interval, by call site.
static FOLDED: OnceLock<Arc<Folded>> = OnceLock::new();

#[derive(Default)]
struct Folded {
    slots: Mutex<HashMap<Identifier, Slot>>,
    /// Held while counts are taken and written, so that the flush at exit
    /// waits for one the interval thread has started.
    flushing: Mutex<()>,
}

/// A call site that warned in this interval.
struct Slot {
    level: Level,
    message: String,
    since: Instant,
    more: u64,
}

impl Folded {
    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<Identifier, Slot>> {
        // A panic elsewhere while holding it leaves counts that are still good.
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a count line for every call site that was folded and starts a
    /// new interval.
    fn flush(&self) {
        let _one_at_a_time = self.flushing.lock().unwrap_or_else(|e| e.into_inner());
        let ended = std::mem::take(&mut *self.slots());
        for slot in ended.into_values().filter(|s| s.more > 0) {
            let secs = slot.since.elapsed().as_secs_f64();
            let (message, more) = (slot.message, slot.more);
            if slot.level == Level::ERROR {
                tracing::error!(target: TARGET, "{message} (and {more} more in the last {secs:.1} s)");
            } else {
                tracing::warn!(target: TARGET, "{message} (and {more} more in the last {secs:.1} s)");
            }
        }
    }
}

/// The layer that folds repeated warnings: its `event_enabled` lets the
/// first of an interval through and counts the rest.
struct Fold(Arc<Folded>);

impl<S: Subscriber> Layer<S> for Fold {
    fn event_enabled(&self, event: &Event<'_>, _: Context<'_, S>) -> bool {
        let meta = event.metadata();
        // Levels order by verbosity: anything above WARN is INFO or finer.
        if *meta.level() > Level::WARN || meta.target() == TARGET {
            return true;
        }
        match self.0.slots().entry(meta.callsite()) {
            Entry::Occupied(mut e) => {
                e.get_mut().more += 1;
                false
            }
            Entry::Vacant(v) => {
                let mut message = Message(String::new());
                event.record(&mut message);
                v.insert(Slot { level: *meta.level(), message: message.0, since: Instant::now(), more: 0 });
                true
            }
        }
    }
}

/// An event's `message` field, as text.
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }
}

/// Sets up logging at `verbose` (0 warn … 3 trace; `POPFAULT_LOG`
/// overrides). With the dashboard on the terminal, logs go to
/// `popfault.log` and only when asked for (-v or `POPFAULT_LOG`): lines on
/// stderr would tear the screen.
pub fn init(verbose: u8, dashboard: bool) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter =
        EnvFilter::try_from_env("POPFAULT_LOG").unwrap_or_else(|_| EnvFilter::new(format!("popfault={default}")));
    let folded = FOLDED.get_or_init(Arc::default).clone();
    let started = if !dashboard {
        let colour = io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let fmt = tracing_subscriber::fmt::layer().with_writer(io::stderr).with_ansi(colour);
        tracing_subscriber::registry().with(filter).with(Fold(folded.clone())).with(fmt).try_init().is_ok()
    } else if verbose > 0 || std::env::var_os("POPFAULT_LOG").is_some() {
        match std::fs::OpenOptions::new().create(true).append(true).open("popfault.log") {
            Ok(file) => {
                let fmt = tracing_subscriber::fmt::layer().with_writer(Mutex::new(file)).with_ansi(false);
                tracing_subscriber::registry().with(filter).with(Fold(folded.clone())).with(fmt).try_init().is_ok()
            }
            Err(e) => {
                let _ = writeln!(io::stderr(), "popfault: cannot open popfault.log for logging: {e}");
                false
            }
        }
    } else {
        false
    };
    if started {
        // Counts go out every interval, even when the warnings stop.
        let _ = std::thread::Builder::new().name("popfault-log".into()).spawn(move || {
            loop {
                std::thread::sleep(INTERVAL);
                folded.flush();
            }
        });
    }
}

/// Writes the counts of warnings folded so far (at exit, so none is lost).
pub fn flush() {
    if let Some(f) = FOLDED.get() {
        f.flush();
    }
}
