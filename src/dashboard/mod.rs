//! The live terminal dashboard.
//!
//! Three layers, each usable alone:
//!
//! - [`Model`]: a pure, bounded fold of [`crate::events::Event`]s. The
//!   aggregator applies each event under the [`SharedModel`] lock; nothing
//!   else writes it.
//! - [`handle_key`] and the `render_*` functions: pure functions of a model
//!   snapshot and a [`UiState`]; tests drive them without a terminal.
//! - [`run`]: the thin terminal loop. It copies the model out under the lock
//!   at most ten times a second and draws from the copy, so the relay (which
//!   only ever `try_send`s events) is never held back by the screen.

mod keys;
mod model;
mod term;
mod view;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

pub use keys::{UiCommand, UiState, handle_key, scroll};
pub use model::{
    Ended, LogKind, LogLine, MAX_COMMANDS, MAX_ENDED, MAX_LIVE, MAX_LOG, MAX_SAMPLES, Model, OTHER_COMMANDS, Rate,
    SAMPLE_PERIOD, SessionRow,
};
pub use term::{FRAME, Input, TerminalInput, cycle_profile, run, run_on};
pub use view::{
    Areas, Dashboard, Header, fmt_bytes, fmt_bytes_short, fmt_micros, fmt_uptime, layout, outcome_style, render_footer,
    render_header, render_help, render_latency, render_log, render_outcomes, render_sessions, render_throughput,
    table_rows,
};

use crate::events::Event;

/// The model shared by the aggregator (writer) and the dashboard (reader).
pub type SharedModel = Arc<Mutex<Model>>;

/// An empty shared model.
pub fn shared_model() -> SharedModel {
    Arc::new(Mutex::new(Model::new()))
}

/// Folds a batch of events into the shared model under one lock: what the
/// aggregator calls after [`crate::stats::Stats::apply`] has filled in
/// duplicates. `now` is the time since [`Header::started`].
pub fn feed<'a>(model: &SharedModel, events: impl IntoIterator<Item = &'a Event>, now: Duration) {
    // A poisoned lock means a panic elsewhere; the model is still coherent
    // enough to show (every field is updated by plain assignments).
    let mut m = model.lock().unwrap_or_else(PoisonError::into_inner);
    for ev in events {
        m.apply(ev, now);
    }
}
