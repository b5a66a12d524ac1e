//! The terminal side, kept thin: raw mode and the alternate screen behind a
//! Drop guard and a panic hook, and a loop that polls input, snapshots the
//! model at most ten times a second and draws from the snapshot.

use std::io::{self, Stdout};
use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use crossterm::cursor::{Hide, Show};
use crossterm::event::{self, Event as InputEvent, KeyCode};
use crossterm::execute;
use crossterm::terminal::{EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode};
use ratatui::Terminal;
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::Rect;
use tokio_util::sync::CancellationToken;

use super::SharedModel;
use super::keys::{UiCommand, UiState, handle_key};
use super::model::Model;
use super::view::{Dashboard, Header, layout, table_rows};
use crate::control::Control;
use crate::faults::Profile;

/// Time between frames: at most ten a second.
pub const FRAME: Duration = Duration::from_millis(100);

/// The terminal is in raw mode on the alternate screen (ours to restore).
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// A panic hook restored the terminal while the dashboard was running (a
/// panic on another thread): the loop must enter it again.
static KNOCKED_OUT: AtomicBool = AtomicBool::new(false);

fn enter() -> io::Result<()> {
    enable_raw_mode()?;
    // Set before the rest so that a failure below still undoes raw mode.
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(io::stdout(), EnterAlternateScreen, Hide)
}

/// Leaves raw mode and the alternate screen if we entered them. Safe to
/// call any number of times, from any thread.
fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// Restores the terminal when dropped: on return, on error, on unwinding.
struct TerminalGuard;

impl TerminalGuard {
    fn enter() -> io::Result<TerminalGuard> {
        let guard = TerminalGuard;
        enter()?;
        Ok(guard)
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

type Hook = dyn Fn(&PanicHookInfo<'_>) + Send + Sync + 'static;

/// A panic hook that restores the terminal before the previous hook prints
/// the message (otherwise it is lost in the alternate screen, in raw mode).
/// Dropping it puts the previous behaviour back.
struct PanicHook {
    previous: Arc<Hook>,
}

impl PanicHook {
    fn install() -> PanicHook {
        let previous: Arc<Hook> = Arc::from(std::panic::take_hook());
        let chained = previous.clone();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) {
                restore();
                KNOCKED_OUT.store(true, Ordering::SeqCst);
            }
            chained(info);
        }));
        PanicHook { previous }
    }
}

impl Drop for PanicHook {
    fn drop(&mut self) {
        // The hook cannot be changed while this thread panics; ours stays,
        // and it only acts while the terminal is active.
        if std::thread::panicking() {
            return;
        }
        let previous = self.previous.clone();
        std::panic::set_hook(Box::new(move |info| previous(info)));
    }
}

/// Where the loop reads input from: the terminal, or a script in tests.
pub trait Input {
    /// The next input event, waiting at most `timeout`; `None` if none came.
    fn next(&mut self, timeout: Duration) -> io::Result<Option<InputEvent>>;
}

/// Input from the terminal, via crossterm.
#[derive(Debug, Default)]
pub struct TerminalInput;

impl Input for TerminalInput {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<InputEvent>> {
        if event::poll(timeout)? { event::read().map(Some) } else { Ok(None) }
    }
}

/// Runs the dashboard on the terminal until q / Ctrl-C (which also cancels
/// `stop`, so the rest of the run shuts down) or until `stop` is cancelled
/// from outside (SIGTERM, end of a timed demo). Blocking: run it on its own
/// thread. The terminal is restored on return, on error and on panic.
///
/// `model` is fed by the aggregator; `profiles` are the ones tab / shift-tab
/// cycle through.
pub fn run(
    model: SharedModel,
    control: Arc<Control>,
    header: Header,
    profiles: Vec<Arc<Profile>>,
    stop: CancellationToken,
) -> io::Result<()> {
    on_terminal(|terminal| run_on(terminal, &mut TerminalInput, &model, &control, &header, &profiles, &stop))
}

/// Runs `draw_loop` on the real terminal, in raw mode on the alternate
/// screen; the terminal is restored however it ends (a panic too).
fn on_terminal(draw_loop: impl FnOnce(&mut Terminal<CrosstermBackend<Stdout>>) -> io::Result<()>) -> io::Result<()> {
    KNOCKED_OUT.store(false, Ordering::SeqCst);
    let _hook = PanicHook::install();
    let _guard = TerminalGuard::enter()?;
    let mut terminal: Terminal<CrosstermBackend<Stdout>> = Terminal::new(CrosstermBackend::new(io::stdout()))?;
    terminal.clear()?;
    draw_loop(&mut terminal)
}

/// The loop behind [`run`], on any backend and input (the test seam). It
/// does not touch terminal modes. Returns when a key asks to quit (after
/// cancelling `stop`) or when `stop` is cancelled.
pub fn run_on<B: Backend>(
    terminal: &mut Terminal<B>,
    input: &mut impl Input,
    model: &SharedModel,
    control: &Control,
    header: &Header,
    profiles: &[Arc<Profile>],
    stop: &CancellationToken,
) -> io::Result<()> {
    let mut ui = UiState::default();
    let mut snap = Model::new();
    let mut next_frame = Instant::now();
    while !stop.is_cancelled() {
        if KNOCKED_OUT.swap(false, Ordering::SeqCst) {
            enter()?;
            terminal.clear()?;
        }
        let now = Instant::now();
        if now >= next_frame {
            snap = snapshot(model, control, header);
            draw(terminal, &mut ui, &snap, control, header)?;
            next_frame = now + FRAME;
        }
        let wait = next_frame.saturating_duration_since(Instant::now()).min(FRAME);
        // Keys act on the snapshot on screen: what the user sees is what k cuts.
        if let Some(InputEvent::Key(key)) = input.next(wait)? {
            if let Some(cmd) = handle_key(&mut ui, &snap, key) {
                if execute(cmd, &mut ui, control, profiles) == AfterKey::Quit {
                    stop.cancel();
                    break;
                }
            }
        }
        // A resize needs nothing here: the next draw adapts to the new size.
    }
    Ok(())
}

/// One proxy of many (`popfault api`) as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct Pane {
    /// The proxy's name, shown first in the header.
    pub name: String,
    /// Its model, fed by its own fold.
    pub model: SharedModel,
    /// Its controls (pause, profile, cut act on the proxy shown).
    pub control: Arc<Control>,
    /// Its addresses and the run's seed and start.
    pub header: Header,
    /// The view of every proxy at once: their controls (a cut goes to the
    /// proxy whose session it is, pause to all); empty for one proxy.
    pub every: Vec<Arc<Control>>,
}

/// [`run`] over many proxies: `panes` says which exist now (they come and
/// go over the API; the first may be the view of every proxy); `]` and `[`
/// show the next or previous one, whose name leads the header, and every
/// key acts on the one shown.
pub fn run_panes(
    panes: &(dyn Fn() -> Vec<Pane> + Send + Sync),
    profiles: Vec<Arc<Profile>>,
    stop: CancellationToken,
) -> io::Result<()> {
    on_terminal(|terminal| run_panes_on(terminal, &mut TerminalInput, panes, &profiles, &stop))
}

/// The loop behind [`run_panes`], on any backend and input.
pub fn run_panes_on<B: Backend>(
    terminal: &mut Terminal<B>,
    input: &mut impl Input,
    panes: &(dyn Fn() -> Vec<Pane> + Send + Sync),
    profiles: &[Arc<Profile>],
    stop: &CancellationToken,
) -> io::Result<()> {
    let mut ui = UiState::default();
    let mut snap = Model::new();
    let mut shown: Option<String> = None;
    let mut next_frame = Instant::now();
    let idle = Arc::new(Control::new(Arc::new(Profile::passthrough()), 0));
    let started = Instant::now();
    while !stop.is_cancelled() {
        if KNOCKED_OUT.swap(false, Ordering::SeqCst) {
            enter()?;
            terminal.clear()?;
        }
        let list = panes();
        let at = shown.as_ref().and_then(|n| list.iter().position(|p| &p.name == n)).unwrap_or(0);
        let pane = list.get(at);
        shown = pane.map(|p| p.name.clone());
        let control = pane.map_or(&idle, |p| &p.control);
        let header = match pane {
            Some(p) => Header {
                listen: format!("[{} {}/{}] {}", p.name, at + 1, list.len(), p.header.listen),
                ..p.header.clone()
            },
            None => Header {
                listen: "(no proxy yet: create one over the API)".into(),
                upstream: "-".into(),
                seed: 0,
                started,
            },
        };
        let now = Instant::now();
        if now >= next_frame {
            snap = match pane {
                Some(p) if !p.every.is_empty() => {
                    let sum = p.every.iter().map(|c| c.bytes()).fold((0, 0), |(u, d), (a, b)| (u + a, d + b));
                    snapshot_with(&p.model, sum, &header)
                }
                Some(p) => snapshot(&p.model, control, &header),
                None => Model::new(),
            };
            draw(terminal, &mut ui, &snap, control, &header)?;
            next_frame = now + FRAME;
        }
        let wait = next_frame.saturating_duration_since(Instant::now()).min(FRAME);
        if let Some(InputEvent::Key(key)) = input.next(wait)? {
            let step = match key.code {
                KeyCode::Char(']') if !ui.editing && !list.is_empty() => Some(at + 1),
                KeyCode::Char('[') if !ui.editing && !list.is_empty() => Some(at + list.len() - 1),
                _ => None,
            };
            if let Some(i) = step {
                // Another proxy's rows: the selection and filter start afresh.
                shown = Some(list[i % list.len()].name.clone());
                ui = UiState::default();
                next_frame = Instant::now();
                continue;
            }
            if let Some(cmd) = handle_key(&mut ui, &snap, key) {
                let every = pane.map_or(&[][..], |p| &p.every[..]);
                let after = if every.is_empty() {
                    execute(cmd, &mut ui, control, profiles)
                } else {
                    for_every(cmd, &mut ui, every)
                };
                if after == AfterKey::Quit {
                    stop.cancel();
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Copies the model out under its lock (sampling the byte counters on the
/// way), so that drawing holds no lock at all.
fn snapshot(model: &SharedModel, control: &Control, header: &Header) -> Model {
    snapshot_with(model, control.bytes(), header)
}

/// [`snapshot`] with the byte counters given (the view of every proxy
/// sums theirs).
fn snapshot_with(model: &SharedModel, (up, down): (u64, u64), header: &Header) -> Model {
    let now = header.started.elapsed();
    // A panic in the aggregator while it held the lock leaves a model that
    // is still worth showing.
    let mut m = model.lock().unwrap_or_else(PoisonError::into_inner);
    m.sample_bytes(up, down, now);
    m.clone()
}

fn draw<B: Backend>(
    terminal: &mut Terminal<B>,
    ui: &mut UiState,
    snap: &Model,
    control: &Control,
    header: &Header,
) -> io::Result<()> {
    let size = terminal.size()?;
    let profile = control.profile();
    let paused = control.paused();
    let uptime = header.started.elapsed();
    // The layout depends on what is shown (the header may wrap), not on the
    // selection: measured with the state as it stands, then settled.
    let area = Rect::new(0, 0, size.width, size.height);
    let rows = {
        let probe = Dashboard { model: snap, header, ui, profile: &profile.name, paused, uptime };
        table_rows(layout(area, &probe).sessions)
    };
    ui.settle(snap, rows);
    ui.tick();
    let view = Dashboard { model: snap, header, ui, profile: &profile.name, paused, uptime };
    terminal.draw(|f| f.render_widget(&view, f.area()))?;
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum AfterKey {
    Continue,
    Quit,
}

fn execute(cmd: UiCommand, ui: &mut UiState, control: &Control, profiles: &[Arc<Profile>]) -> AfterKey {
    match cmd {
        UiCommand::Quit => return AfterKey::Quit,
        UiCommand::TogglePause => {
            let paused = !control.paused();
            control.set_paused(paused);
            ui.flash(if paused { "faults paused: relaying untouched" } else { "faults resumed" });
        }
        UiCommand::NextProfile | UiCommand::PrevProfile => {
            // Only a choice: a profile passed on the way (one that stalls
            // everything, say) never reaches a session.
            let forward = cmd == UiCommand::NextProfile;
            let from = ui.choice.as_ref().map_or_else(|| control.profile().name.clone(), |c| c.0.clone());
            match cycle_profile(profiles, &from, forward) {
                Some(p) => ui.choice = Some((p.name.clone(), p.summary.clone())),
                None => ui.flash("no built-in profiles to switch to"),
            }
        }
        UiCommand::ApplyProfile(name) => match profiles.iter().find(|p| p.name == name) {
            Some(p) => {
                ui.flash(format!("new sessions: {} ({})", p.name, p.summary));
                control.set_profile(p.clone());
            }
            None => ui.flash(format!("no profile named {name}")),
        },
        UiCommand::Cut(n) => {
            if control.cut(n) {
                ui.flash(format!("cut session #{n}"));
            } else {
                ui.flash(format!("session #{n} is no longer live"));
            }
        }
    }
    AfterKey::Continue
}

/// A key in the view of every proxy: a cut goes to the proxy whose session
/// it is (numbers are unique across them), pause to all of them; a profile
/// is switched in one proxy's own view.
fn for_every(cmd: UiCommand, ui: &mut UiState, every: &[Arc<Control>]) -> AfterKey {
    match cmd {
        UiCommand::Quit => return AfterKey::Quit,
        UiCommand::TogglePause => {
            let paused = !every.iter().all(|c| c.paused());
            for c in every {
                c.set_paused(paused);
            }
            ui.flash(if paused { "faults paused in every proxy" } else { "faults resumed in every proxy" });
        }
        UiCommand::NextProfile | UiCommand::PrevProfile | UiCommand::ApplyProfile(_) => {
            ui.choice = None;
            ui.flash("each proxy has its own profile: ] or [ to one, then tab");
        }
        UiCommand::Cut(n) => {
            if every.iter().any(|c| c.cut(n)) {
                ui.flash(format!("cut session #{n}"));
            } else {
                ui.flash(format!("session #{n} is no longer live"));
            }
        }
    }
    AfterKey::Continue
}

/// The profile after (or before) `current` in `profiles`, wrapping around.
/// A current profile not in the list (a TOML file) is followed by the
/// first and preceded by the last.
pub fn cycle_profile(profiles: &[Arc<Profile>], current: &str, forward: bool) -> Option<Arc<Profile>> {
    let n = profiles.len();
    if n == 0 {
        return None;
    }
    let next = match profiles.iter().position(|p| p.name == current) {
        Some(i) if forward => (i + 1) % n,
        Some(i) => (i + n - 1) % n,
        None if forward => 0,
        None => n - 1,
    };
    profiles.get(next).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles() -> Vec<Arc<Profile>> {
        ["a", "b", "c"].iter().map(|n| Arc::new(Profile { name: n.to_string(), ..Profile::passthrough() })).collect()
    }

    #[test]
    fn profiles_cycle_both_ways() {
        let ps = profiles();
        let name = |p: Option<Arc<Profile>>| p.map(|p| p.name.clone());
        assert_eq!(name(cycle_profile(&ps, "a", true)).as_deref(), Some("b"));
        assert_eq!(name(cycle_profile(&ps, "c", true)).as_deref(), Some("a"));
        assert_eq!(name(cycle_profile(&ps, "a", false)).as_deref(), Some("c"));
        assert_eq!(name(cycle_profile(&ps, "my.toml", true)).as_deref(), Some("a"));
        assert_eq!(name(cycle_profile(&ps, "my.toml", false)).as_deref(), Some("c"));
        assert!(cycle_profile(&[], "a", true).is_none());
    }

    #[test]
    fn commands_act_on_control() {
        let ps = profiles();
        let control = Control::new(ps[0].clone(), 7);
        let mut ui = UiState::default();
        assert_eq!(execute(UiCommand::TogglePause, &mut ui, &control, &ps), AfterKey::Continue);
        assert!(control.paused());
        execute(UiCommand::TogglePause, &mut ui, &control, &ps);
        assert!(!control.paused());
        execute(UiCommand::NextProfile, &mut ui, &control, &ps);
        execute(UiCommand::NextProfile, &mut ui, &control, &ps);
        assert_eq!(control.profile().name, "a", "choosing changes nothing");
        assert_eq!(ui.choice.as_ref().map(|c| c.0.as_str()), Some("c"));
        execute(UiCommand::PrevProfile, &mut ui, &control, &ps);
        assert_eq!(ui.choice.as_ref().map(|c| c.0.as_str()), Some("b"), "moves from the choice");
        execute(UiCommand::ApplyProfile("b".into()), &mut ui, &control, &ps);
        assert_eq!(control.profile().name, "b");
        ui.choice = None;
        execute(UiCommand::PrevProfile, &mut ui, &control, &ps);
        execute(UiCommand::PrevProfile, &mut ui, &control, &ps);
        execute(UiCommand::ApplyProfile("c".into()), &mut ui, &control, &ps);
        assert_eq!(control.profile().name, "c");
        execute(UiCommand::Cut(9), &mut ui, &control, &ps);
        assert_eq!(ui.flash.as_ref().map(|f| f.0.as_str()), Some("session #9 is no longer live"));
        assert_eq!(execute(UiCommand::Quit, &mut ui, &control, &ps), AfterKey::Quit);
    }

    #[test]
    fn restore_is_idempotent_when_inactive() {
        // Never entered: restoring must not touch the terminal.
        restore();
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
    }
}
