//! Key handling: pure. A key changes the [`UiState`] (selection, follow
//! mode, filter, help, a profile being chosen) and may ask for a
//! [`UiCommand`], which the terminal loop carries out against
//! [`crate::control::Control`].

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use super::model::{Model, SessionRow};

/// How long a status message stays in the footer, in frames (~3 s).
const FLASH_FRAMES: u16 = 30;
/// Rows PgUp/PgDn move before the first frame says how tall the table is.
const DEFAULT_PAGE: usize = 10;
/// Longest filter text kept: enough for any user or rule name worth typing.
const MAX_FILTER: usize = 40;

/// What the user asked for that the UI cannot do by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UiCommand {
    /// Leave the dashboard (and stop the run).
    Quit,
    /// Pause or resume fault injection.
    TogglePause,
    /// Move the profile choice to the next built-in profile (nothing
    /// changes for sessions until it is applied).
    NextProfile,
    /// Move the profile choice to the previous built-in profile.
    PrevProfile,
    /// Switch new sessions to this profile (the choice, confirmed).
    ApplyProfile(String),
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
    /// First help line shown (the help is taller than small screens).
    pub help_scroll: u16,
    /// A short status message for the footer, and frames left to show it.
    pub flash: Option<(String, u16)>,
    /// Follow mode: the selection is the newest row, whatever comes. On
    /// until a row is selected by hand; `f` turns it back on.
    pub follow: bool,
    /// Rows shown are those matching this text (empty: all).
    pub filter: String,
    /// The filter is being typed: keys go to it.
    pub editing: bool,
    /// A profile chosen with tab and not applied yet: name and summary.
    pub choice: Option<(String, String)>,
    /// The session whose view (its transcript) is open, over the table.
    pub view: Option<u64>,
    /// Lines scrolled up from the transcript's end (0: its live end).
    pub view_scroll: u16,
}

impl Default for UiState {
    fn default() -> Self {
        UiState {
            selected: None,
            index: 0,
            offset: 0,
            page: DEFAULT_PAGE,
            help: false,
            help_scroll: 0,
            flash: None,
            follow: true,
            filter: String::new(),
            editing: false,
            choice: None,
            view: None,
            view_scroll: 0,
        }
    }
}

impl UiState {
    /// The table's rows as shown: the model's order, filtered.
    pub fn rows<'m>(&self, model: &'m Model) -> Vec<&'m SessionRow> {
        let needle = self.filter.to_lowercase();
        model.rows().filter(|r| r.matches(&needle)).collect()
    }

    /// The selected position in `rows` (as [`UiState::rows`] gave them):
    /// the top when following; else the selected session, or if it left
    /// the table the same position, clamped.
    pub fn index_in(&self, rows: &[&SessionRow]) -> Option<usize> {
        if rows.is_empty() {
            return None;
        }
        if self.follow {
            return Some(0);
        }
        let id = self.selected?;
        Some(rows.iter().position(|r| r.session == id).unwrap_or(self.index.min(rows.len() - 1)))
    }

    /// The selected row's position in `model`'s table, if any is selected.
    pub fn selected_index(&self, model: &Model) -> Option<usize> {
        self.index_in(&self.rows(model))
    }

    /// Resolves the selection against a new snapshot and scrolls so that it
    /// is visible in `visible` rows. Called once per frame before drawing.
    pub fn settle(&mut self, model: &Model, visible: usize) {
        self.page = visible.max(1);
        let rows = self.rows(model);
        match self.index_in(&rows) {
            Some(i) => {
                self.index = i;
                self.selected = Some(rows[i].session);
                self.offset = scroll(self.offset, i, self.page);
            }
            None => {
                if rows.is_empty() {
                    self.selected = None;
                }
                self.offset = 0;
            }
        }
        let last = rows.len().saturating_sub(self.page);
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

    fn select(&mut self, rows: &[&SessionRow], index: usize) {
        if let Some(r) = rows.get(index) {
            self.selected = Some(r.session);
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

/// Applies one key: moves the selection, edits the filter or toggles help
/// in `ui`, and returns what else must happen, if anything.
pub fn handle_key(ui: &mut UiState, model: &Model, key: KeyEvent) -> Option<UiCommand> {
    // Windows reports releases too; only presses (and auto-repeat) count.
    if key.kind == KeyEventKind::Release {
        return None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        return Some(UiCommand::Quit);
    }
    if ui.editing {
        // Typing a filter: letters are text, not commands.
        match key.code {
            KeyCode::Esc => {
                ui.filter.clear();
                ui.editing = false;
            }
            KeyCode::Enter => ui.editing = false,
            KeyCode::Backspace => {
                ui.filter.pop();
            }
            KeyCode::Char(c) if !c.is_control() && ui.filter.chars().count() < MAX_FILTER => ui.filter.push(c),
            code => navigate(ui, model, code),
        }
        return None;
    }
    if ui.view.is_some() {
        // A session's view covers the table: keys scroll it or close it.
        match key.code {
            KeyCode::Esc | KeyCode::Enter => ui.view = None,
            KeyCode::Up => ui.view_scroll = ui.view_scroll.saturating_add(1),
            KeyCode::Down => ui.view_scroll = ui.view_scroll.saturating_sub(1),
            KeyCode::PageUp => ui.view_scroll = ui.view_scroll.saturating_add(10),
            KeyCode::PageDown => ui.view_scroll = ui.view_scroll.saturating_sub(10),
            KeyCode::End => ui.view_scroll = 0,
            KeyCode::Char('q') | KeyCode::Char('Q') => return Some(UiCommand::Quit),
            _ => {}
        }
        return None;
    }
    if ui.help {
        // The help covers the screen: keys scroll it or close it.
        match key.code {
            KeyCode::Char('?') | KeyCode::Esc => ui.help = false,
            KeyCode::Up => ui.help_scroll = ui.help_scroll.saturating_sub(1),
            KeyCode::Down => ui.help_scroll = ui.help_scroll.saturating_add(1),
            KeyCode::PageUp => ui.help_scroll = ui.help_scroll.saturating_sub(10),
            KeyCode::PageDown => ui.help_scroll = ui.help_scroll.saturating_add(10),
            KeyCode::Char('q') | KeyCode::Char('Q') => return Some(UiCommand::Quit),
            _ => {}
        }
        return None;
    }
    match key.code {
        KeyCode::Char('q') | KeyCode::Char('Q') => return Some(UiCommand::Quit),
        KeyCode::Char('?') => {
            ui.help = true;
            ui.help_scroll = 0;
        }
        KeyCode::Esc if ui.choice.is_some() => {
            ui.choice = None;
            ui.flash("profile unchanged");
        }
        KeyCode::Esc => ui.filter.clear(),
        KeyCode::Enter if ui.choice.is_some() => {
            return ui.choice.take().map(|(name, _)| UiCommand::ApplyProfile(name));
        }
        // Enter on a row: that session's view.
        KeyCode::Enter => {
            let rows = ui.rows(model);
            match ui.index_in(&rows) {
                Some(i) => {
                    ui.view = Some(rows[i].session);
                    ui.view_scroll = 0;
                }
                None => ui.flash("select a session first (↑/↓), then Enter"),
            }
        }
        KeyCode::Char('/') => ui.editing = true,
        KeyCode::Char('f') | KeyCode::Char('F') => {
            ui.follow = true;
            ui.flash("following the top row");
        }
        KeyCode::Char('p') | KeyCode::Char('P') => return Some(UiCommand::TogglePause),
        KeyCode::Tab => return Some(UiCommand::NextProfile),
        KeyCode::BackTab => return Some(UiCommand::PrevProfile),
        KeyCode::Char('k') | KeyCode::Char('K') => return cut(ui, model),
        code => navigate(ui, model, code),
    }
    None
}

fn cut(ui: &mut UiState, model: &Model) -> Option<UiCommand> {
    // The row highlighted on screen, never whatever took its place.
    let rows = ui.rows(model);
    let Some(i) = ui.index_in(&rows) else {
        ui.flash("select a live session first (↑/↓)");
        return None;
    };
    let id = rows[i].session;
    if model.is_live(id) {
        Some(UiCommand::Cut(id))
    } else {
        ui.flash(format!("session #{id} has already ended: nothing cut"));
        None
    }
}

fn navigate(ui: &mut UiState, model: &Model, code: KeyCode) {
    let rows = ui.rows(model);
    if rows.is_empty() {
        return;
    }
    let last = rows.len() - 1;
    let current = ui.index_in(&rows);
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
    // Choosing a row by hand stops following: it stays on that session.
    ui.follow = false;
    ui.select(&rows, target);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::events::{Event, SessionEnd, SessionSnapshot};
    use crate::session::State;
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
            let end = SessionEnd { client, upstream: "u".into(), ..SessionEnd::example(n) };
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
        assert_eq!(handle_key(&mut ui, &Model::new(), key(KeyCode::Char('k'))), None, "nothing to select");
        assert!(ui.flash.is_some());
        // Following: the newest row is the one highlighted, and k cuts it.
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), Some(UiCommand::Cut(5)));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, Some(4));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), Some(UiCommand::Cut(4)));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!(ui.selected, Some(2));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None, "session 2 has ended");
        assert_eq!(ui.flash.as_ref().map(|f| f.0.as_str()), Some("session #2 has already ended: nothing cut"));
    }

    fn start(m: &mut Model, n: u64) {
        let client = ([127, 0, 0, 1], 5000).into();
        let ev = Event::SessionStart { session: n, client, upstream: "u".into(), profile: "p".into() };
        m.apply(&ev, Folded::default(), Duration::ZERO);
    }

    #[test]
    fn selection_follows_the_session() {
        let (mut ui, mut m) = (UiState::default(), model());
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!((ui.selected, ui.index, ui.follow), (Some(4), 1, false));
        start(&mut m, 6);
        ui.settle(&m, 10);
        assert_eq!((ui.selected, ui.index), (Some(4), 2), "the same session, one row lower");
    }

    #[test]
    fn follow_mode_tracks_the_newest_until_a_row_is_chosen_and_f_resumes_it() {
        let (mut ui, mut m) = (UiState::default(), model());
        assert!(ui.follow, "on by default");
        ui.settle(&m, 10);
        assert_eq!(ui.selected, Some(5));
        start(&mut m, 6);
        ui.settle(&m, 10);
        assert_eq!((ui.selected, ui.index, ui.offset), (Some(6), 0, 0), "the newest, at the top");
        // Choosing a row stops following; the choice survives re-sorting.
        handle_key(&mut ui, &m, key(KeyCode::End));
        assert_eq!((ui.selected, ui.follow), (Some(1), false));
        start(&mut m, 7);
        start(&mut m, 8);
        ui.settle(&m, 3);
        assert_eq!(ui.selected, Some(1), "still session 1, not the row that took its place");
        assert_eq!(ui.index, m.row_count() - 1);
        assert_eq!(ui.offset, m.row_count() - 3, "scrolled to keep it visible");
        // An ended session stays selected, and k says so.
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None);
        assert!(ui.flash.as_ref().is_some_and(|f| f.0.contains("#1 has already ended")));
        // f: back to the newest.
        handle_key(&mut ui, &m, key(KeyCode::Char('f')));
        ui.settle(&m, 3);
        assert_eq!((ui.selected, ui.offset, ui.follow), (Some(8), 0, true));
    }

    #[test]
    fn the_filter_takes_text_and_esc_clears_it() {
        let (mut ui, mut m) = (UiState::default(), model());
        handle_key(&mut ui, &m, key(KeyCode::Char('/')));
        assert!(ui.editing);
        for c in "no-L".chars() {
            assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char(c))), None, "{c} is text, not a command");
        }
        assert_eq!(ui.filter, "no-L");
        let shown: Vec<u64> = ui.rows(&m).iter().map(|r| r.session).collect();
        assert_eq!(shown, [2, 1], "the ended no-login sessions, case-insensitively");
        handle_key(&mut ui, &m, key(KeyCode::Enter));
        assert!(!ui.editing && ui.filter == "no-L", "Enter keeps the filter");
        // The selection and k act on the filtered rows.
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None, "#2 has ended");
        handle_key(&mut ui, &m, key(KeyCode::Esc));
        assert_eq!(ui.filter, "");
        assert_eq!(ui.rows(&m).len(), 5);
        // Esc while typing clears too; Backspace deletes.
        handle_key(&mut ui, &m, key(KeyCode::Char('/')));
        handle_key(&mut ui, &m, key(KeyCode::Char('x')));
        handle_key(&mut ui, &m, key(KeyCode::Char('y')));
        handle_key(&mut ui, &m, key(KeyCode::Backspace));
        assert_eq!(ui.filter, "x");
        handle_key(&mut ui, &m, key(KeyCode::Esc));
        assert!(!ui.editing && ui.filter.is_empty());
        // Matches the user, state, fault rule and outcome of live rows too.
        start(&mut m, 9);
        let snap = SessionSnapshot {
            session: 9,
            state: State::Transaction,
            user: Some("Alice".into()),
            last_command: None,
            downloaded: 0,
            marked: 0,
            bytes_up: 0,
            bytes_down: 0,
        };
        m.apply(&Event::Progress(Box::new(snap)), Folded::default(), Duration::ZERO);
        let fault = Event::Fault { session: 9, rule: "cut-mid-retr".into(), action: "x".into(), point: "y".into() };
        m.apply(&fault, Folded::default(), Duration::ZERO);
        for text in ["alice", "trans", "mid-retr", "live"] {
            ui.filter = text.into();
            assert!(ui.rows(&m).iter().any(|r| r.session == 9), "{text}");
        }
    }

    #[test]
    fn tab_chooses_and_enter_applies_esc_cancels() {
        let (mut ui, m) = (UiState::default(), model());
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Tab)), Some(UiCommand::NextProfile));
        // The loop records the choice; nothing is applied yet.
        ui.choice = Some(("b".into(), "summary of b".into()));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Enter)), Some(UiCommand::ApplyProfile("b".into())));
        assert_eq!(ui.choice, None);
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Enter)), None, "nothing chosen: nothing applied");
        // With nothing chosen, Enter opens the selected session's view;
        // Esc closes it.
        assert!(ui.view.is_some(), "Enter on a row opens its session");
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Esc)), None);
        assert_eq!(ui.view, None);
        ui.choice = Some(("c".into(), "summary of c".into()));
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Esc)), None);
        assert_eq!(ui.choice, None);
        assert_eq!(ui.flash.as_ref().map(|f| f.0.as_str()), Some("profile unchanged"));
    }

    #[test]
    fn help_scrolls_and_swallows_other_keys() {
        let (mut ui, m) = (UiState::default(), model());
        handle_key(&mut ui, &m, key(KeyCode::Char('?')));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        handle_key(&mut ui, &m, key(KeyCode::Down));
        assert_eq!((ui.help_scroll, ui.follow), (2, true), "Down scrolls the help, not the table");
        assert_eq!(handle_key(&mut ui, &m, key(KeyCode::Char('k'))), None);
        handle_key(&mut ui, &m, key(KeyCode::Esc));
        assert!(!ui.help);
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
