//! Key handling: pure. A key changes the [`UiState`] (selection, help) and
//! may ask for a [`UiCommand`], which the terminal loop carries out against
//! [`crate::control::Control`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::Model;

/// How long a status message stays in the footer, in frames (~3 s).
const FLASH_FRAMES: u16 = 30;
/// Rows PgUp/PgDn move before the first frame says how tall the table is.
const DEFAULT_PAGE: usize = 10;

/// What the user asked for that the UI cannot do by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiCommand {
    /// Leave the dashboard (and stop the run).
    Quit,
    /// Pause or resume fault injection.
    TogglePause,
    /// Switch new sessions to the next built-in profile.
    NextProfile,
    /// Switch new sessions to the previous built-in profile.
    PrevProfile,
    /// Cut this live session now (a manual lost carrier).
    Cut(u64),
}

/// The dashboard's own state: selection, scroll, help, status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiState {
    /// The selected session. The selection follows the session, not the
    /// row position, as rows come and go.
    pub selected: Option<u64>,
    /// The selected row's position when last resolved (the fallback when
    /// the selected session leaves the table).
    pub index: usize,
    /// First table row shown.
    pub offset: usize,
    /// Table rows visible (PgUp/PgDn step), set by the terminal loop.
    pub page: usize,
    /// Whether the help overlay is shown.
    pub help: bool,
    /// A short status message for the footer, and frames left to show it.
    pub flash: Option<(String, u16)>,
}

impl Default for UiState {
    fn default() -> Self {
        UiState { selected: None, index: 0, offset: 0, page: DEFAULT_PAGE, help: false, flash: None }
    }
}

impl UiState {
    /// The selected row's position in `model`'s table, if any is selected.
    /// A selected session that left the table falls back to the same
    /// position, clamped.
    pub fn selected_index(&self, model: &Model) -> Option<usize> {
        let id = self.selected?;
        match model.row_index(id) {
            Some(i) => Some(i),
            None if model.row_count() > 0 => Some(self.index.min(model.row_count() - 1)),
            None => None,
        }
    }

    /// Resolves the selection against a new snapshot and scrolls so that it
    /// is visible in `visible` rows. Called once per frame before drawing.
    pub fn settle(&mut self, model: &Model, visible: usize) {
        self.page = visible.max(1);
        match self.selected_index(model) {
            Some(i) => {
                self.index = i;
                self.selected = model.row_at(i);
                self.offset = scroll(self.offset, i, self.page);
            }
            None => {
                self.selected = None;
                self.offset = 0;
            }
        }
        let last = model.row_count().saturating_sub(self.page);
        self.offset = self.offset.min(last);
    }

    /// Shows `text` in the footer for a few seconds.
    pub fn flash(&mut self, text: impl Into<String>) {
        self.flash = Some((text.into(), FLASH_FRAMES));
    }

    /// Counts one frame down (expires the status message).
    pub fn tick(&mut self) {
        if let Some((_, left)) = &mut self.flash {
            *left = left.saturating_sub(1);
            if *left == 0 {
                self.flash = None;
            }
        }
    }

    fn select(&mut self, model: &Model, index: usize) {
        if let Some(id) = model.row_at(index) {
            self.selected = Some(id);
            self.index = index;
            self.offset = scroll(self.offset, index, self.page.max(1));
        }
    }
}

/// The first visible row so that `selected` is visible in `visible` rows,
/// moving as little as possible from `offset`.
pub fn scroll(offset: usize, selected: usize, visible: usize) -> usize {
    if selected < offset {
        selected
    } else if selected >= offset + visible {
        selected + 1 - visible
    } else {
        offset
    }
}

/// Applies one key: moves the selection or toggles help in `ui`, and
/// returns what else must happen, if anything.
pub fn handle_key(ui: &mut UiState, model: &Model, key: KeyEvent) -> Option<UiCommand> {
    // Windows reports releases too; only presses (and auto-repeat) count.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => return Some(UiCommand::Quit),
        KeyCode::Char('q') | KeyCode::Char('Q') => return Some(UiCommand::Quit),
        KeyCode::Char('?') => ui.help = !ui.help,
        KeyCode::Esc if ui.help => ui.help = false,
        KeyCode::Char('p') | KeyCode::Char('P') => return Some(UiCommand::TogglePause),
        KeyCode::Tab => return Some(UiCommand::NextProfile),
        KeyCode::BackTab => return Some(UiCommand::PrevProfile),
        KeyCode::Char('k') | KeyCode::Char('K') => return cut(ui, model),
        code => navigate(ui, model, code),
    }
    None
}

fn cut(ui: &mut UiState, model: &Model) -> Option<UiCommand> {
    // The selected session itself, never whatever row took its place.
    let Some(id) = ui.selected else {
        ui.flash("select a live session first (↑/↓)");
        return None;
    };
    if model.is_live(id) {
        Some(UiCommand::Cut(id))
    } else {
        ui.flash(format!("session #{id} has already ended"));
        None
    }
}

fn navigate(ui: &mut UiState, model: &Model, code: KeyCode) {
    let len = model.row_count();
    if len == 0 {
        return;
    }
    let last = len - 1;
    let current = ui.selected_index(model);
    let page = ui.page.max(1);
    let target = match (code, current) {
        // With nothing selected, any move starts at the top.
        (KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown, None) | (KeyCode::Home, _) => 0,
        (KeyCode::End, _) => last,
        (KeyCode::Up, Some(i)) => i.saturating_sub(1),
        (KeyCode::Down, Some(i)) => (i + 1).min(last),
        (KeyCode::PageUp, Some(i)) => i.saturating_sub(page),
        (KeyCode::PageDown, Some(i)) => (i + page).min(last),
        _ => return,
    };
    ui.select(model, target);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::{Event, SessionEnd};
    use crate::session::{Outcome, State};
    use crate::stats::Folded;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// Sessions 1..=5, of which 1 and 2 have ended: rows [5, 4, 3, 2, 1].
    fn model() -> Model {
        let mut m = Model::new();
        let t = Duration::from_secs(1);
        let client = ([127, 0, 0, 1], 5000).into();
        for n in 1..=5 {
            let ev = Event::SessionStart { session: n, client, upstream: "u".into(), profile: "p".into() };
            m.apply(&ev, Folded::default(), t);
        }
        for n in [1, 2] {
            let end = SessionEnd {
                session: n,
                client,
                upstream: "u".into(),
                user: None,
                outcome: Outcome::NoLogin,
                state: State::Authorization,
                downloaded: 0,
                marked: 0,
                at_risk: 0,
                duplicates: 0,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                faults: Vec::new(),
                encrypted: false,
                violations: 0,
                profile: "p".into(),
                fingerprints: Default::default(),
                delivery: Default::default(),
                ended_by: "client closed".into(),
            };
            // Keys see rows only: no fold needed for the counts.
            m.apply(&Event::SessionEnd(Box::new(end)), Folded::default(), t);
        }
        m
    }

    #[test]
    fn commands() {
        let (mut ui, m) = (UiState::default(), model());
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('q'))), Some(UiCommand::Quit));
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(handle_key(&mut ui, &m, ctrl_c), Some(UiCommand::Quit));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('c'))), None);
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('p'))), Some(UiCommand::TogglePause));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Tab)), Some(UiCommand::NextProfile));
        let backtab = KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT);
        assert_eq!(handle_key(&mut ui, &m, backtab), Some(UiCommand::PrevProfile));
        assert_eq!(ui, UiState::default());
    }

    #[test]
    fn releases_are_ignored() {
        let (mut ui, m) = (UiState::default(), model());
        let mut q = key(KeyCode::Char('q'));
        q.kind = KeyEventKind::Release;
        assert_eq!(handle_key(&mut ui, &m, q), None);
    }

    #[test]
    fn help_toggles() {
        let (mut ui, m) = (UiState::default(), model());
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('?'))), None);
        assert!(ui.help);
        handle_key(&mut ui, &m, key(KeyCode::Char('?')));
        assert!(!ui.help);
        handle_key(&mut ui, &m, key(KeyCode::Char('?')));
        handle_key(&mut ui, &m, key(KeyCode::Esc));
        assert!(!ui.help);
    }

    #[test]
    fn arrows_move_and_clamp() {
        let (mut ui, m) = (UiState::default(), model());
        handle_key(&mut ui, &m, key(KeyCode::Up));
        assert_eq!(ui.selected, Some(5), "the first move selects the top row");
        handle_key(&mut ui, &m, key(KeyCode::Up));
        assert_eq!(ui.selected, Some(5), "clamped at the top");
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!((ui.selected, ui.index), (Some(4), 1));
        handle_key(&mut ui, &m, key(KeyCode::End));
        assert_eq!(ui.selected, Some(1));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, Some(1), "clamped at the bottom");
        handle_key(&mut ui, &m, key(KeyCode::Home));
        assert_eq!(ui.selected, Some(5));
        ui.page = 3;
        handle_key(&mut ui, &m, key(KeyCode::PageDown));
        assert_eq!(ui.selected, Some(2));
        handle_key(&mut ui, &m, key(KeyCode::PageDown));
        assert_eq!(ui.selected, Some(1));
        assert_eq!(ui.offset, 2, "scrolled to keep the selection visible");
        handle_key(&mut ui, &m, key(KeyCode::PageUp));
        assert_eq!(ui.selected, Some(4));
        handle_key(&mut ui, &m, key(KeyCode::PageUp));
        assert_eq!((ui.selected, ui.offset), (Some(5), 0));
    }

    #[test]
    fn arrows_on_an_empty_table_do_nothing() {
        let (mut ui, m) = (UiState::default(), Model::new());
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, None);
    }

    #[test]
    fn k_cuts_only_a_live_selected_session() {
        let (mut ui, m) = (UiState::default(), model());
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None, "nothing selected");
        assert!(ui.flash.is_some());
        handle_key(&mut ui, &m, key(KeyCode::Down));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, Some(4));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), Some(UiCommand::Cut(4)));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, Some(2));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None, "session 2 has ended");
        assert_eq!(ui.flash.as_ref().map(|f| f.0.as_str()), Some("session #2 has already ended"));
    }

    #[test]
    fn selection_follows_the_session() {
        let (mut ui, mut m) = (UiState::default(), model());
        handle_key(&mut ui, &m, key(KeyCode::Down));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!((ui.selected, ui.index), (Some(4), 1));
        let client = ([127, 0, 0, 1], 5000).into();
        let ev = Event::SessionStart { session: 6, client, upstream: "u".into(), profile: "p".into() };
        m.apply(&ev, Folded::default(), Duration::ZERO);
        ui.settle(&m, 10);
        assert_eq!((ui.selected, ui.index), (Some(4), 2));
    }

    #[test]
    fn flash_expires() {
        let mut ui = UiState::default();
        ui.flash("hello");
        for _ in 0..FLASH_FRAMES {
            assert!(ui.flash.is_some());
            ui.tick();
        }
        assert!(ui.flash.is_none());
    }

    #[test]
    fn scroll_moves_least() {
        assert_eq!(scroll(0, 3, 5), 0);
        assert_eq!(scroll(0, 7, 5), 3);
        assert_eq!(scroll(4, 2, 5), 2);
    }
}
