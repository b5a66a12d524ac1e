//! The live terminal dashboard.
//!
//! Three layers, each usable alone:
//!
//! - [`Model`]: pure and bounded: the run's totals as the one fold
//!   ([`crate::stats::Stats`]) last handed them over, plus what only the
//!   screen needs (session rows, the event log, throughput samples). The
//!   aggregator writes it under the [`SharedModel`] lock ([`feed`] per
//!   batch, [`publish`] at most once a [`FRAME`]); nothing else does.
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
    Ended, LogKind, LogLine, MAX_ENDED, MAX_LIVE, MAX_LOG, MAX_SAMPLES, Model, Rate, SAMPLE_PERIOD, SessionRow,
};
pub use term::{FRAME, Input, Pane, TerminalInput, cycle_profile, run, run_on, run_panes, run_panes_on};
pub use view::{
    Areas, Dashboard, Header, fmt_bytes, fmt_bytes_short, fmt_micros, fmt_uptime, layout, outcome_style, render_footer,
    render_header, render_help, render_latency, render_log, render_outcomes, render_sessions, render_throughput,
    table_rows,
};

use crate::events::Event;
use crate::stats::{Folded, Totals};

/// The model shared by the aggregator (writer) and the dashboard (reader).
pub type SharedModel = Arc<Mutex<Model>>;

/// An empty shared model.
pub fn shared_model() -> SharedModel {
    Arc::new(Mutex::new(Model::new()))
}

/// Shows a batch of events under one lock, each with what the run's fold
/// answered for it ([`crate::stats::Stats::apply`]). `now` is the time
/// since [`Header::started`].
pub fn feed<'a>(model: &SharedModel, events: impl IntoIterator<Item = (&'a Event, Folded)>, now: Duration) {
    let mut m = lock(model);
    for (ev, folded) in events {
        m.apply(ev, folded, now);
    }
}

/// [`feed`] for the view of many proxies: each row learns which proxy its
/// session goes through.
pub fn feed_from<'a>(
    model: &SharedModel,
    proxy: &Arc<str>,
    events: impl IntoIterator<Item = (&'a Event, Folded)>,
    now: Duration,
) {
    let mut m = lock(model);
    for (ev, folded) in events {
        m.apply_from(proxy, ev, folded, now);
    }
}

/// Hands the fold's latest totals to the model: a pointer swapped under
/// the lock, so a snapshot shares them rather than copies them.
pub fn publish(model: &SharedModel, totals: Arc<Totals>) {
    lock(model).set_totals(totals);
}

fn lock(model: &SharedModel) -> std::sync::MutexGuard<'_, Model> {
    // A poisoned lock means a panic elsewhere; the model is still coherent
    // enough to show (every field is updated by plain assignments).
    model.lock().unwrap_or_else(PoisonError::into_inner)
}
