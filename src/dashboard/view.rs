//! Drawing: every panel renders from a [`Dashboard`] (a model snapshot plus
//! what the controls say now) into a ratatui [`Buffer`]. Pure: no I/O, no
//! clock, no lock; tests render into a buffer and read it back.

use std::time::{Duration, Instant};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, BorderType, Cell, Clear, HighlightSpacing, Paragraph, Row, Sparkline, StatefulWidget, Table, TableState,
    Widget,
};

use super::keys::{UiState, scroll};
use super::model::{LogKind, LogLine, Model, SessionRow};
use crate::session::{Outcome, State};
use crate::stats::Percentiles;

/// What the header shows that does not change during a run.
#[derive(Debug, Clone)]
pub struct Header {
    /// The proxy's listening address.
    pub listen: String,
    /// The upstream server (`host:port`).
    pub upstream: String,
    /// The run's seed (replay with `--seed`).
    pub seed: u64,
    /// When the run started: the origin of the `now` given to
    /// [`Model::apply`], and of the uptime shown.
    pub started: Instant,
}

/// One frame's worth of state: everything a panel needs to draw.
#[derive(Debug, Clone, Copy)]
pub struct Dashboard<'a> {
    /// The model snapshot.
    pub model: &'a Model,
    /// Fixed header facts.
    pub header: &'a Header,
    /// Selection, scroll, help, status message.
    pub ui: &'a UiState,
    /// The profile new sessions run under now.
    pub profile: &'a str,
    /// Whether faults are paused now.
    pub paused: bool,
    /// Time since the run started.
    pub uptime: Duration,
}

/// Where each panel goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Areas {
    /// Addresses, profile, seed, uptime, faults on/paused.
    pub header: Rect,
    /// Outcome counters.
    pub outcomes: Rect,
    /// Per-command latency.
    pub latency: Rect,
    /// The sessions table.
    pub sessions: Rect,
    /// Throughput sparklines.
    pub throughput: Rect,
    /// Event log.
    pub log: Rect,
    /// Key hints and status message.
    pub footer: Rect,
}

/// Width of the outcomes panel beside the latency panel: two columns of
/// counters.
const OUTCOMES_WIDTH: u16 = 41;
/// Narrowest latency panel worth drawing (one group of columns); below it
/// the outcomes take the whole width.
const LATENCY_MIN: u16 = 36;
/// Rows the sessions table spends on borders and its header line.
const TABLE_CHROME: u16 = 3;

/// Splits the screen. At 80×24 the sessions table gets five rows; taller
/// screens give it most of the extra height. The header grows a line when
/// its facts do not fit on one (a seed is never cut), the outcomes panel
/// when it has more counts than rows; short screens drop the throughput
/// and event panels rather than squeeze the counts.
pub fn layout(area: Rect, d: &Dashboard) -> Areas {
    let head = header_lines(d, area.width.saturating_sub(2)).len() as u16 + 2;
    let cells = outcome_cells(d.model);
    let beside = area.width >= OUTCOMES_WIDTH + LATENCY_MIN;
    let top = if beside {
        (cells.len().div_ceil(2) as u16).max(6) + 2
    } else {
        flow_cells(&cells, area.width.saturating_sub(2)).len() as u16 + 2
    };
    let rest = area.height.saturating_sub(head + top + 1);
    let bottom = if rest >= 10 { (rest * 2 / 5).max(4) } else { 0 };
    let [header, top, sessions, bottom, footer] = Layout::vertical([
        Constraint::Length(head),
        Constraint::Length(top),
        Constraint::Min(TABLE_CHROME + 1),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .areas(area);
    let [outcomes, latency] = if beside {
        Layout::horizontal([Constraint::Length(OUTCOMES_WIDTH), Constraint::Min(0)]).areas(top)
    } else {
        [top, Rect { x: top.right(), width: 0, ..top }]
    };
    let [throughput, log] = Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    Areas { header, outcomes, latency, sessions, throughput, log, footer }
}

/// Table rows visible in a sessions panel of this size.
pub fn table_rows(sessions: Rect) -> usize {
    sessions.height.saturating_sub(TABLE_CHROME) as usize
}

impl Widget for &Dashboard<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let a = layout(area, self);
        render_header(a.header, buf, self);
        render_outcomes(a.outcomes, buf, self);
        render_latency(a.latency, buf, self);
        render_sessions(a.sessions, buf, self);
        render_throughput(a.throughput, buf, self);
        render_log(a.log, buf, self);
        render_footer(a.footer, buf, self);
        if let Some(session) = self.ui.view {
            render_session_view(area, buf, self, session);
        }
        if self.ui.help {
            render_help(area, buf, self.ui.help_scroll);
        }
    }
}

/// A session's view, over the table: its transcript so far (commands with
/// secrets as `***`, status lines, body sizes, faults at their point, the
/// end and why), live while the session lives, the newest line at the
/// bottom unless scrolled up.
pub fn render_session_view(area: Rect, buf: &mut Buffer, d: &Dashboard<'_>, session: u64) {
    let m = d.model;
    let row = m.rows().find(|r| r.session == session);
    let mut title = format!(" session #{session} ");
    if let Some(r) = row {
        if let Some(user) = &r.user {
            title.push_str(&format!("· {user} "));
        }
        match &r.end {
            Some(end) => title.push_str(&format!("· {} ({}) ", end.outcome.as_str(), end.ended_by)),
            None => title.push_str("· ● live "),
        }
    }
    let popup = Rect {
        x: area.x + 1,
        y: area.y + 1,
        width: area.width.saturating_sub(2),
        height: area.height.saturating_sub(2),
    };
    Clear.render(popup, buf);
    let block = panel(title).title_bottom(Line::from(" ↑↓ scroll · End live end · Esc close ").right_aligned());
    let inner = block.inner(popup);
    block.render(popup, buf);
    let lines: Vec<&str> = m.transcript(session).map(|t| t.iter().map(|l| &**l).collect()).unwrap_or_default();
    if lines.is_empty() {
        Line::styled("no transcript for this session (kept for the newest sessions while the dashboard runs)", DIM)
            .render(inner, buf);
        return;
    }
    let room = inner.height as usize;
    let scroll = (d.ui.view_scroll as usize).min(lines.len().saturating_sub(room));
    let end = lines.len() - scroll;
    let start = end.saturating_sub(room);
    for (i, line) in lines[start..end].iter().enumerate() {
        let at = Rect { y: inner.y + i as u16, height: 1, ..inner };
        Line::raw(truncate(line, inner.width as usize)).render(at, buf);
    }
}

// === fitting text ===

/// A piece of a line that moves to the next line whole when it does not
/// fit: a word, a `name count` pair, a header fact. `sep` goes before it
/// unless it starts a line.
struct Atom {
    sep: String,
    spans: Vec<Span<'static>>,
}

impl Atom {
    fn new(sep: &str, spans: Vec<Span<'static>>) -> Atom {
        Atom { sep: sep.to_string(), spans }
    }

    fn width(&self) -> usize {
        self.spans.iter().map(Span::width).sum()
    }
}

/// Lays atoms out in lines of `width`, continuation lines indented by
/// `indent`. Nothing is cut: an atom wider than a line is broken across
/// lines, so a long number wraps rather than loses digits.
fn pack(atoms: Vec<Atom>, width: usize, indent: usize) -> Vec<Line<'static>> {
    if width == 0 {
        return Vec::new();
    }
    let indent = if indent * 2 > width { 0 } else { indent };
    let mut lines = Vec::new();
    let mut cur: Vec<Span<'static>> = Vec::new();
    let (mut used, mut empty) = (0, true);
    let mut newline = |cur: &mut Vec<Span<'static>>, used: &mut usize, empty: &mut bool| {
        lines.push(Line::from(std::mem::take(cur)));
        if indent > 0 {
            cur.push(Span::raw(" ".repeat(indent)));
        }
        (*used, *empty) = (indent, true);
    };
    for a in atoms {
        let w = a.width();
        if !empty && used + a.sep.chars().count() + w > width {
            newline(&mut cur, &mut used, &mut empty);
        }
        if !empty {
            used += a.sep.chars().count();
            cur.push(Span::raw(a.sep));
        }
        if used + w <= width {
            used += w;
            cur.extend(a.spans);
        } else {
            for span in a.spans {
                let mut piece = String::new();
                for ch in span.content.chars() {
                    if used + 1 > width {
                        cur.push(Span::styled(std::mem::take(&mut piece), span.style));
                        newline(&mut cur, &mut used, &mut empty);
                    }
                    piece.push(ch);
                    used += 1;
                }
                cur.push(Span::styled(piece, span.style));
            }
        }
        empty = false;
    }
    if !cur.is_empty() && !empty {
        lines.push(Line::from(cur));
    }
    lines
}

/// Splits styled text into words (atoms), keeping the spaces between them
/// as separators, so that [`pack`] can wrap it.
fn words(spans: Vec<Span<'static>>) -> Vec<Atom> {
    let mut atoms = Vec::new();
    let (mut sep, mut cur) = (String::new(), Vec::new());
    for s in spans {
        let mut word = String::new();
        for ch in s.content.chars() {
            if ch == ' ' {
                if !word.is_empty() {
                    cur.push(Span::styled(std::mem::take(&mut word), s.style));
                }
                if !cur.is_empty() {
                    atoms.push(Atom { sep: std::mem::take(&mut sep), spans: std::mem::take(&mut cur) });
                }
                sep.push(' ');
            } else {
                word.push(ch);
            }
        }
        if !word.is_empty() {
            cur.push(Span::styled(word, s.style));
        }
    }
    if !cur.is_empty() {
        atoms.push(Atom { sep, spans: cur });
    }
    atoms
}

/// `spans` cut to `width` columns, with `…` where text was cut.
fn cut_line(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let total: usize = spans.iter().map(Span::width).sum();
    if total <= width {
        return Line::from(spans);
    }
    let mut out = Vec::new();
    let mut left = width.saturating_sub(1);
    for s in spans {
        if left == 0 {
            break;
        }
        let text: String = s.content.chars().take(left).collect();
        left -= text.chars().count();
        out.push(Span::styled(text, s.style));
    }
    if width > 0 {
        out.push(Span::raw("…"));
    }
    Line::from(out)
}

// === styles and formats ===

const ACCENT: Color = Color::Cyan;
const DIM: Style = Style::new().fg(Color::DarkGray);

fn panel(title: impl Into<Line<'static>>) -> Block<'static> {
    Block::bordered()
        .border_type(BorderType::Rounded)
        .border_style(Style::new().fg(Color::Gray))
        .title(title.into().bold().fg(ACCENT))
}

/// The colour that says how an outcome went.
pub fn outcome_style(o: Outcome) -> Style {
    let s = Style::new();
    match o {
        Outcome::Committed => s.fg(Color::Green).bold(),
        Outcome::CleanQuit => s.fg(Color::Cyan),
        Outcome::CommitFailed => s.fg(Color::Red).bold(),
        Outcome::RolledBack => s.fg(Color::Yellow).bold(),
        Outcome::InDoubt => s.fg(Color::LightRed).bold(),
        Outcome::NothingAtStake => s.fg(Color::Gray),
        Outcome::NoLogin => s.fg(Color::Blue),
        Outcome::Refused => s.fg(Color::Magenta),
    }
}

fn state_label(s: State) -> (&'static str, Style) {
    match s {
        State::Authorization => ("AUTH", Style::new().fg(Color::Gray)),
        State::Transaction => ("TRANS", Style::new().fg(Color::White)),
        State::Update => ("UPDATE", Style::new().fg(Color::Yellow)),
    }
}

/// `HH:MM:SS`.
pub fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// `MM:SS`, or `H:MM:SS` past an hour: log timestamps.
fn fmt_clock(d: Duration) -> String {
    let s = d.as_secs();
    if s < 3600 {
        format!("{:02}:{:02}", s / 60, s % 60)
    } else {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    }
}

/// Microseconds in at most six characters: `850µs`, `1.2ms`, `123ms`, `1.23s`.
pub fn fmt_micros(us: u64) -> String {
    match us {
        0..1_000 => format!("{us}µs"),
        1_000..10_000 => format!("{:.1}ms", us as f64 / 1e3),
        10_000..1_000_000 => format!("{}ms", us / 1_000),
        1_000_000..10_000_000 => format!("{:.2}s", us as f64 / 1e6),
        10_000_000..100_000_000 => format!("{:.1}s", us as f64 / 1e6),
        _ => format!("{}s", us / 1_000_000),
    }
}

/// Bytes with a binary unit: `512 B`, `1.5 KiB`, `12.0 MiB`.
pub fn fmt_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 100.0 { format!("{v:.1} {}", UNITS[unit]) } else { format!("{v:.0} {}", UNITS[unit]) }
}

/// Bytes in at most five characters for table cells: `512`, `1.5K`, `120M`.
pub fn fmt_bytes_short(n: u64) -> String {
    const UNITS: [char; 6] = ['K', 'M', 'G', 'T', 'P', 'E'];
    if n < 1000 {
        return n.to_string();
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 999.5 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 9.95 { format!("{v:.1}{}", UNITS[unit]) } else { format!("{v:.0}{}", UNITS[unit]) }
}

// === header ===

/// The header's facts, wrapped to `width`: the seed (the replay key) and
/// the addresses move to the next line whole; only a profile name too long
/// for a whole line is cut, with `…`.
fn header_lines(d: &Dashboard, width: u16) -> Vec<Line<'static>> {
    let width = width as usize;
    let label = Style::new().fg(Color::Gray);
    let value = Style::new().fg(Color::White).bold();
    let atoms = vec![
        Atom::new("", vec![Span::styled(d.header.listen.clone(), value), Span::styled(" →", Style::new().fg(ACCENT))]),
        Atom::new(" ", vec![Span::styled(d.header.upstream.clone(), value)]),
        Atom::new(
            "  ",
            vec![
                Span::styled("profile ", label),
                Span::styled(truncate(d.profile, width.saturating_sub(8)), Style::new().fg(ACCENT).bold()),
            ],
        ),
        Atom::new("  ", vec![Span::styled("seed ", label), Span::styled(d.header.seed.to_string(), value)]),
    ];
    pack(atoms, width, 0)
}

/// Title bar: listen → upstream, profile, seed, uptime, faults on/PAUSED.
pub fn render_header(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let status = if d.paused {
        Span::styled(" ‖ faults PAUSED ", Style::new().fg(Color::Black).bg(Color::Yellow).bold())
    } else {
        Span::styled(" ● faults on ", Style::new().fg(Color::Green).bold())
    };
    let block = panel(Line::from(vec![
        Span::raw(" "),
        Span::styled("popfault", Style::new().fg(ACCENT).bold()),
        Span::styled(" · up ", DIM),
        Span::styled(fmt_uptime(d.uptime), Style::new().fg(Color::White)),
        Span::raw(" "),
    ]))
    .title_top(Line::from(status).right_aligned());
    // Paused, the whole bar says so: faults are off until p is pressed again.
    let block = if d.paused { block.border_style(Style::new().fg(Color::Yellow)) } else { block };
    let lines = header_lines(d, area.width.saturating_sub(2));
    Paragraph::new(lines).block(block).render(area, buf);
}

// === outcomes ===

/// The outcome counters, then the totals: (name, count, style). Totals
/// that are usually zero come only when they are not.
fn outcome_cells(m: &Model) -> Vec<(&'static str, u64, Style)> {
    let warn = |n: u64, s: Style| if n > 0 { s } else { DIM };
    let mut cells: Vec<(&'static str, u64, Style)> = Outcome::ALL
        .iter()
        .map(|o| {
            let n = m.outcome_count(*o);
            (o.as_str(), n, if n > 0 { outcome_style(*o) } else { DIM })
        })
        .collect();
    cells.push(("at risk", m.at_risk(), warn(m.at_risk(), Style::new().fg(Color::Yellow).bold())));
    cells.push(("duplicates", m.duplicates(), warn(m.duplicates(), Style::new().fg(Color::LightRed).bold())));
    cells.push(("faults fired", m.faults_fired(), warn(m.faults_fired(), Style::new().fg(Color::Red))));
    for (name, n, color) in [
        ("damaged", m.damaged(), Color::LightRed),
        ("cut midway", m.cut_midway(), Color::LightRed),
        ("lost track", m.forgotten(), Color::Yellow),
    ] {
        if n > 0 {
            cells.push((name, n, Style::new().fg(color)));
        }
    }
    cells
}

fn count_style(n: u64) -> Style {
    if n > 0 { Style::new().fg(Color::White).bold() } else { DIM }
}

/// The cells as `name count` pairs flowed across lines of `width`: the
/// compact form for narrow screens, every count shown.
fn flow_cells(cells: &[(&'static str, u64, Style)], width: u16) -> Vec<Line<'static>> {
    let atoms = cells
        .iter()
        .map(|(name, n, style)| {
            Atom::new(
                "  ",
                vec![Span::styled(*name, *style), Span::raw(" "), Span::styled(n.to_string(), count_style(*n))],
            )
        })
        .collect();
    pack(atoms, width as usize, 0)
}

/// Outcome counters in two columns (or flowed, when the panel has the
/// whole width of a narrow screen), with the totals after them. A count
/// is never cut: the name before it is, with `…`.
pub fn render_outcomes(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let m = d.model;
    let title = format!(" outcomes · {} ended · {} live ", m.ended_total(), m.live_count());
    let block = panel(title);
    let inner = block.inner(area);
    block.render(area, buf);
    let cells = outcome_cells(m);
    let rows = inner.height.max(1) as usize;
    if cells.len() <= rows * 2 && inner.width >= OUTCOMES_WIDTH - 2 {
        // Column-major: the outcomes read top to bottom, totals come last.
        let col_width = inner.width.saturating_sub(1) / 2;
        for (i, (name, n, style)) in cells.iter().enumerate() {
            let (col, row) = (i / rows, i % rows);
            if col > 1 {
                break;
            }
            let x = inner.x + col as u16 * (col_width + 1);
            let cell = Rect { x, y: inner.y + row as u16, width: col_width, height: 1 };
            let count = n.to_string();
            let name = truncate(name, (col_width as usize).saturating_sub(count.len() + 1));
            let gap = (col_width as usize).saturating_sub(name.chars().count() + count.len()).max(1);
            Line::from(vec![
                Span::styled(name, *style),
                Span::raw(" ".repeat(gap)),
                Span::styled(count, count_style(*n)),
            ])
            .render(cell, buf);
        }
    } else {
        Paragraph::new(flow_cells(&cells, inner.width)).render(inner, buf);
    }
}

// === latency ===

/// Commands in the order the latency panel lists them: what matters most to
/// a download-and-delete first, so it survives a small screen.
const COMMAND_ORDER: [&str; 15] = [
    "RETR", "DELE", "QUIT", "LIST", "UIDL", "STAT", "TOP", "USER", "PASS", "APOP", "AUTH", "CAPA", "NOOP", "RSET",
    "STLS",
];

fn command_rank(cmd: &str) -> usize {
    COMMAND_ORDER.iter().position(|c| *c == cmd).unwrap_or(COMMAND_ORDER.len())
}

/// Per-command latency p50 / p99 / max, in as many column groups as fit.
pub fn render_latency(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    if area.width == 0 {
        return;
    }
    let block = panel(" latency per command ");
    let inner = block.inner(area);
    block.render(area, buf);
    let mut rows: Vec<(&str, Percentiles)> = d.model.latency_percentiles();
    if rows.is_empty() {
        Paragraph::new(Span::styled("no commands answered yet", DIM)).render(inner, buf);
        return;
    }
    rows.sort_by(|a, b| command_rank(a.0).cmp(&command_rank(b.0)).then(a.0.cmp(b.0)));

    const GROUP: u16 = 36;
    let groups = (inner.width / GROUP).max(1);
    let per_group = inner.height.saturating_sub(1) as usize;
    if per_group == 0 {
        return;
    }
    let head = Style::new().fg(Color::Gray).add_modifier(Modifier::UNDERLINED);
    for g in 0..groups {
        let chunk: Vec<_> = rows.iter().skip(g as usize * per_group).take(per_group).collect();
        if chunk.is_empty() {
            break;
        }
        let x = inner.x + g * GROUP;
        let width = GROUP.min(inner.right().saturating_sub(x));
        let mut lines = vec![Line::styled(format!("{:<7}{:>7}{:>7}{:>7}{:>7}", "cmd", "p50", "p99", "max", "n"), head)];
        for (cmd, p) in chunk {
            lines.push(Line::from(vec![
                Span::styled(format!("{:<7}", truncate(cmd, 6)), Style::new().fg(ACCENT).bold()),
                Span::styled(format!("{:>7}", fmt_micros(p.p50)), Style::new().fg(Color::Green)),
                Span::styled(format!("{:>7}", fmt_micros(p.p99)), Style::new().fg(Color::Yellow)),
                Span::styled(format!("{:>7}", fmt_micros(p.max)), Style::new().fg(Color::LightRed)),
                Span::styled(format!("{:>7}", p.count), DIM),
            ]));
        }
        Paragraph::new(lines).render(Rect { x, y: inner.y, width, height: inner.height }, buf);
    }
    let shown = groups as usize * per_group;
    if rows.len() > shown {
        let more = format!(" +{} more ", rows.len() - shown);
        Line::styled(more, DIM)
            .right_aligned()
            .render(Rect { y: area.bottom().saturating_sub(1), height: 1, ..inner }, buf);
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

// === sessions ===

/// What a table cell shows: `text`, cut with `…` when the column is
/// narrow, then `keep` (a number), never cut.
struct CellText {
    text: String,
    keep: String,
    style: Style,
}

impl CellText {
    fn text(text: impl Into<String>, style: Style) -> CellText {
        CellText { text: text.into(), keep: String::new(), style }
    }

    fn number(keep: String) -> CellText {
        CellText { text: String::new(), keep, style: Style::new() }
    }

    fn width(&self) -> usize {
        self.text.chars().count() + self.keep.chars().count()
    }

    fn fit(self, width: u16) -> Cell<'static> {
        let room = (width as usize).saturating_sub(self.keep.chars().count());
        Cell::from(format!("{}{}", truncate(&self.text, room), self.keep)).style(self.style)
    }
}

/// A sessions-table column: header, width (at least `min`, at most `cap`
/// when there is room and the text needs it), and the order columns are
/// given up in when the screen is narrow (0 = never). A `number` column is
/// as wide as its widest value, whatever `cap` says.
struct Column {
    title: &'static str,
    min: u16,
    cap: u16,
    number: bool,
    priority: u8,
    cell: fn(&SessionRow) -> CellText,
}

/// A command with a numeric argument keeps the argument whole.
fn command_cell(cmd: &str) -> CellText {
    match cmd.split_once(' ') {
        Some((verb, arg)) if arg.chars().all(|c| c.is_ascii_digit() || c == ' ') => {
            CellText { text: verb.to_string(), keep: format!(" {arg}"), style: Style::new() }
        }
        _ => CellText::text(cmd, Style::new()),
    }
}

const COLUMNS: [Column; 11] = [
    Column { title: "#", min: 5, cap: 5, number: true, priority: 0, cell: |r| CellText::number(r.session.to_string()) },
    // Only in the view of many proxies (`popfault api`), where it comes
    // right after the outcome.
    Column {
        title: "proxy",
        min: 8,
        cap: 20,
        number: false,
        priority: 1,
        cell: |r| CellText::text(r.proxy.as_deref().unwrap_or_default(), Style::new().fg(Color::Cyan)),
    },
    Column {
        title: "client",
        min: 15,
        cap: 47,
        number: false,
        priority: 6,
        cell: |r| CellText::text(r.client.map(|c| c.to_string()).unwrap_or_default(), Style::new()),
    },
    Column {
        title: "user",
        min: 10,
        cap: 24,
        number: false,
        priority: 1,
        cell: |r| CellText::text(r.user.clone().unwrap_or_default(), Style::new()),
    },
    Column {
        title: "state",
        min: 6,
        cap: 6,
        number: false,
        priority: 2,
        cell: |r| {
            let (label, style) = state_label(r.state);
            // Ended rows stay dim; only the live state is worth a colour.
            CellText::text(label, if r.is_live() { style } else { Style::new() })
        },
    },
    Column {
        title: "last cmd",
        min: 10,
        cap: 20,
        number: false,
        priority: 3,
        cell: |r| command_cell(r.last_command.as_deref().unwrap_or_default()),
    },
    Column {
        title: "dl/mk",
        min: 5,
        cap: 5,
        number: true,
        priority: 2,
        cell: |r| CellText::number(format!("{}/{}", r.downloaded, r.marked)),
    },
    Column {
        title: "up/down",
        min: 9,
        cap: 9,
        number: true,
        priority: 5,
        cell: |r| CellText::number(format!("{}/{}", fmt_bytes_short(r.bytes_up), fmt_bytes_short(r.bytes_down))),
    },
    Column {
        title: "fault",
        min: 14,
        cap: 32,
        number: false,
        priority: 2,
        // The last rule that fired, and how many fired before it.
        cell: |r| match r.last_fault() {
            None => CellText::text("-", DIM),
            Some(f) => CellText {
                text: f.to_string(),
                keep: if r.fault_count > 1 { format!(" +{}", r.fault_count - 1) } else { String::new() },
                style: Style::new().fg(Color::LightRed),
            },
        },
    },
    Column {
        title: "outcome",
        min: 13,
        cap: 16,
        number: false,
        priority: 0,
        cell: |r| match &r.end {
            None => CellText::text("● live", Style::new().fg(Color::LightBlue).bold()),
            Some(e) => CellText::text(e.outcome.as_str(), outcome_style(e.outcome)),
        },
    },
    Column {
        title: "profile",
        min: 14,
        cap: 24,
        number: false,
        priority: 7,
        cell: |r| CellText::text(r.profile.clone(), Style::new()),
    },
];

/// The columns that fit in `width` for these rows, in display order, with
/// their widths. Columns come in by priority at their least width; the
/// width left over goes to the text columns whose rows need it (up to
/// their cap), so a wide screen does not stretch one column with blanks.
fn fit_columns(width: u16, rows: &[&SessionRow]) -> Vec<(&'static Column, u16)> {
    let need: Vec<u16> = COLUMNS
        .iter()
        .map(|c| {
            let widest = rows.iter().map(|r| (c.cell)(r).width()).max().unwrap_or(0);
            widest.max(c.title.chars().count()) as u16
        })
        .collect();
    let least: Vec<u16> = COLUMNS
        .iter()
        .zip(&need)
        .map(|(c, &n)| {
            let keep = rows.iter().map(|r| (c.cell)(r).keep.chars().count()).max().unwrap_or(0) as u16;
            // A number is never cut; text keeps room for one letter and `…`.
            if c.number { c.min.max(n) } else { c.min.max(keep + 2) }
        })
        .collect();
    let mut order: Vec<usize> = (0..COLUMNS.len()).collect();
    order.sort_by_key(|&i| COLUMNS[i].priority);
    let mut widths = [0u16; COLUMNS.len()];
    let mut kept = [false; COLUMNS.len()];
    let mut used = 0u16;
    let proxies = rows.iter().any(|r| r.proxy.is_some());
    for &i in &order {
        if COLUMNS[i].title == "proxy" && !proxies {
            continue;
        }
        let add = least[i] + u16::from(used > 0);
        if COLUMNS[i].priority == 0 || used + add <= width {
            used += add;
            kept[i] = true;
            widths[i] = least[i];
        }
    }
    let mut spare = width.saturating_sub(used);
    for &i in &order {
        if kept[i] && !COLUMNS[i].number {
            let grow = need[i].min(COLUMNS[i].cap.max(least[i])).saturating_sub(widths[i]).min(spare);
            widths[i] += grow;
            spare -= grow;
        }
    }
    COLUMNS.iter().enumerate().filter(|(i, _)| kept[*i]).map(|(i, c)| (c, widths[i])).collect()
}

const HIGHLIGHT: &str = "▶ ";

/// The table of live and recent sessions (those matching the filter),
/// scrolled to keep the selection visible; columns drop out by priority
/// on narrow screens.
pub fn render_sessions(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let m = d.model;
    let all = d.ui.rows(m);
    let len = all.len();
    let visible = table_rows(area).max(1);
    let selected = d.ui.index_in(&all);
    let offset = match selected {
        Some(i) => scroll(d.ui.offset, i, visible),
        None => d.ui.offset,
    }
    .min(len.saturating_sub(visible));

    let mut position = match selected {
        Some(i) => format!(" {}/{} ", i + 1, len),
        None if len > visible => format!(" {}–{} of {} ", offset + 1, (offset + visible).min(len), len),
        None => String::new(),
    };
    if selected.is_some() {
        position = if d.ui.follow { format!(" following ·{position}") } else { format!("{position}· f follow ") };
    }
    let counts = format!(" sessions · {} live · {} recent ", m.live_count(), m.row_count() - m.live_count());
    let title = if d.ui.filter.is_empty() {
        counts
    } else {
        // The match count is what the filter is for: on a narrow screen
        // the live/recent counts give way to it, then the filter's text.
        let room = area.width.saturating_sub(2) as usize;
        let matched = format!(" · {len} match ");
        let with_counts = format!("{}· /{}{matched}", counts, truncate(&d.ui.filter, 20));
        if with_counts.chars().count() <= room {
            with_counts
        } else {
            let filter_room = room.saturating_sub(" sessions · /".len() + matched.chars().count());
            format!(" sessions · /{}{matched}", truncate(&d.ui.filter, filter_room.max(1)))
        }
    };
    let block = panel(title).title_bottom(Line::styled(position, DIM).right_aligned());
    let inner_width = block.inner(area).width;
    let shown: Vec<&SessionRow> = all.iter().skip(offset).take(visible).copied().collect();
    let columns = fit_columns(inner_width.saturating_sub(HIGHLIGHT.chars().count() as u16), &shown);
    let header = Row::new(columns.iter().map(|(c, w)| Cell::from(truncate(c.title, *w as usize))))
        .style(Style::new().fg(Color::Gray).add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<Row> = shown
        .iter()
        .map(|r| {
            let style = if r.is_live() { Style::new().fg(Color::White) } else { DIM };
            Row::new(columns.iter().map(|(c, w)| (c.cell)(r).fit(*w))).style(style)
        })
        .collect();
    let widths: Vec<Constraint> = columns.iter().map(|(_, w)| Constraint::Length(*w)).collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .flex(Flex::Start)
        .row_highlight_style(Style::new().bg(Color::DarkGray).add_modifier(Modifier::BOLD))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(selected.map(|i| i - offset));
    StatefulWidget::render(table, area, buf, &mut state);
    if len == 0 {
        let hint = Rect { y: area.y + 2, height: 1, ..area.inner(ratatui::layout::Margin::new(3, 0)) };
        let text = if d.ui.filter.is_empty() {
            "waiting for the first client…".to_string()
        } else {
            format!("no session matches /{} (Esc clears)", d.ui.filter)
        };
        Paragraph::new(cut_line(vec![Span::styled(text, DIM)], hint.width as usize))
            .render(hint.intersection(area), buf);
    }
}

// === throughput ===

/// Bytes per second each way: the latest rate and a sparkline of recent ones.
pub fn render_throughput(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let samples = d.model.throughput();
    let peak_down = samples.iter().map(|r| r.down).max().unwrap_or(0);
    let peak = format!(" peak ↓ {}/s ", fmt_bytes(peak_down));
    let block = panel(" throughput ");
    // Left out rather than cut when the panel is too narrow for it.
    let block = if peak.chars().count() + 2 <= area.width as usize {
        block.title_bottom(Line::styled(peak, DIM).right_aligned())
    } else {
        block
    };
    let inner = block.inner(area);
    block.render(area, buf);
    if inner.height == 0 {
        return;
    }
    let last = samples.back().copied().unwrap_or_default();
    let up_h = (inner.height / 2).max(1);
    let [up_area, down_area] = Layout::vertical([Constraint::Length(up_h), Constraint::Min(0)]).areas::<2>(inner);
    let series = [
        ("↑", last.up, Color::Cyan, up_area, samples.iter().map(|r| r.up).collect::<Vec<_>>()),
        ("↓", last.down, Color::Green, down_area, samples.iter().map(|r| r.down).collect::<Vec<_>>()),
    ];
    for (arrow, now, color, area, data) in series {
        if area.height == 0 {
            continue;
        }
        const LABEL: u16 = 14;
        let [label, spark] = Layout::horizontal([Constraint::Length(LABEL), Constraint::Min(0)]).areas(area);
        Line::from(vec![
            Span::styled(format!("{arrow} "), Style::new().fg(color).bold()),
            Span::styled(format!("{}/s", fmt_bytes(now)), Style::new().fg(Color::White)),
        ])
        .render(label, buf);
        // The newest samples that fit, right-aligned so the line scrolls left.
        let skip = data.len().saturating_sub(spark.width as usize);
        let data = &data[skip..];
        let max = data.iter().copied().max().unwrap_or(0).max(1);
        Sparkline::default().data(data).max(max).style(Style::new().fg(color)).render(
            Rect { x: spark.right().saturating_sub(data.len() as u16), width: data.len() as u16, ..spark },
            buf,
        );
    }
}

// === event log ===

fn log_line(l: &LogLine) -> Vec<Span<'static>> {
    let mut spans = vec![
        Span::styled(fmt_clock(l.at), DIM),
        Span::raw(" "),
        Span::styled(format!("#{:<3}", l.session), Style::new().fg(Color::White).bold()),
        Span::raw(" "),
    ];
    match &l.kind {
        LogKind::Fault { rule, action, point } => {
            spans.push(Span::styled("fault ", Style::new().fg(Color::Red).bold()));
            spans.push(Span::styled(rule.clone(), Style::new().fg(Color::LightRed)));
            spans.push(Span::styled(format!(": {action} at {point}"), Style::new().fg(Color::Gray)));
        }
        LogKind::End { outcome, at_risk, duplicates, ended_by } => {
            spans.push(Span::styled(outcome.as_str(), outcome_style(*outcome)));
            if *at_risk > 0 {
                spans.push(Span::styled(format!(" · {at_risk} at risk"), Style::new().fg(Color::Yellow)));
            }
            if *duplicates > 0 {
                spans.push(Span::styled(format!(" · {duplicates} dup"), Style::new().fg(Color::LightRed)));
            }
            spans.push(Span::styled(format!(" ({ended_by})"), DIM));
        }
    }
    spans
}

/// Indent of a log entry's continuation lines: under the session number.
const LOG_INDENT: usize = 6;

/// Faults and outcomes, newest at the bottom. An entry too long for the
/// panel wraps (an offset like `@1016` moves to the next line whole), and
/// only whole entries are shown.
pub fn render_log(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let block = panel(" events ");
    let inner = block.inner(area);
    block.render(area, buf);
    if d.model.log().len() == 0 {
        Paragraph::new(Span::styled("no faults or outcomes yet", DIM)).render(inner, buf);
        return;
    }
    let mut lines: Vec<Line> = Vec::new();
    for l in d.model.log().rev() {
        let entry = pack(words(log_line(l)), inner.width as usize, LOG_INDENT);
        if lines.len() + entry.len() > inner.height as usize {
            break;
        }
        lines.splice(0..0, entry);
    }
    // Bottom-aligned: the newest entry stays on the last row even when an
    // older one too tall for the room left is not shown.
    let gap = inner.height.saturating_sub(lines.len() as u16);
    Paragraph::new(lines).render(Rect { y: inner.y + gap, height: inner.height - gap, ..inner }, buf);
}

// === footer and help ===

/// Key hints, and a status message on the right when there is one; while
/// a filter is typed, the filter; while a profile is being chosen, the
/// choice and its summary.
pub fn render_footer(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let key = Style::new().fg(Color::Black).bg(ACCENT).bold();
    let text = Style::new().fg(Color::Gray);
    let width = area.width as usize;
    if d.ui.editing {
        let spans = vec![
            Span::styled(" / ", key),
            Span::styled(format!(" {}", d.ui.filter), Style::new().fg(Color::White).bold()),
            Span::styled("▏", Style::new().fg(ACCENT)),
            Span::styled("  user, outcome, fault, state · ", text),
            Span::styled(" Enter ", key),
            Span::styled(" keep  ", text),
            Span::styled(" Esc ", key),
            Span::styled(" clear", text),
        ];
        cut_line(spans, width).render(area, buf);
        return;
    }
    if let Some((name, summary)) = &d.ui.choice {
        // The keys first: whatever the summary's length, how to apply or
        // cancel stays on screen.
        let spans = vec![
            Span::styled(" Enter ", key),
            Span::styled(" apply  ", text),
            Span::styled(" Esc ", key),
            Span::styled(" cancel  ", text),
            Span::styled(" tab ", key),
            Span::styled(" next  ", text),
            Span::styled("profile ", text),
            Span::styled(name.clone(), Style::new().fg(ACCENT).bold()),
            Span::styled(format!(": {summary}"), Style::new().fg(Color::White)),
        ];
        cut_line(spans, width).render(area, buf);
        return;
    }
    let hints = [
        ("q", "quit"),
        ("p", if d.paused { "resume" } else { "pause" }),
        ("tab", "profile"),
        ("k", "cut"),
        ("↑↓", "select"),
        ("f", "follow"),
        ("/", "filter"),
        ("?", "help"),
    ];
    // A flash message takes the right end, at most 60% of the width; the
    // hints that still fit whole are drawn, never a hint cut mid-word, and
    // help is always offered when it fits.
    let flash = d.ui.flash.as_ref().map(|(msg, _)| {
        let max = (width * 3 / 5).max(10);
        let mut msg: String = format!(" {msg} ");
        if msg.chars().count() > max {
            msg = msg.chars().take(max.saturating_sub(2)).collect::<String>() + "… ";
        }
        msg
    });
    let room = width.saturating_sub(flash.as_ref().map_or(0, |m| m.chars().count()));
    let hint_width = |(k, what): &(&str, &str)| k.chars().count() + what.chars().count() + 5;
    let help_width = hint_width(&hints[hints.len() - 1]);
    let mut spans = Vec::new();
    let mut used = 0;
    for (i, h) in hints.iter().enumerate() {
        let last = i == hints.len() - 1;
        let reserve = if last { 0 } else { help_width };
        if used + hint_width(h) + reserve > room && !(last && used + hint_width(h) <= room) {
            continue;
        }
        used += hint_width(h);
        spans.push(Span::styled(format!(" {} ", h.0), key));
        spans.push(Span::styled(format!(" {}  ", h.1), text));
    }
    Line::from(spans).render(area, buf);
    if let Some(msg) = flash {
        let width = (msg.chars().count() as u16).min(area.width);
        let at = Rect { x: area.right() - width, width, ..area };
        Line::styled(msg, Style::new().fg(Color::Black).bg(Color::Yellow)).render(at, buf);
    }
}

/// The help's lines: every key, every column, every outcome and every
/// number on the screen.
fn help_lines() -> Vec<Line<'static>> {
    let key = Style::new().fg(ACCENT).bold();
    let head = Style::new().fg(Color::White).bold().add_modifier(Modifier::UNDERLINED);
    let row =
        |k: &str, what: &str| Line::from(vec![Span::styled(format!("  {k:<17}"), key), Span::raw(what.to_string())]);
    let mut lines = vec![Line::styled("Keys", head)];
    for (k, what) in [
        ("q  Ctrl-C", "quit (stops the run, restores the terminal)"),
        ("p", "pause / resume fault injection"),
        ("tab  ⇧tab", "choose the next / previous profile (shown below)"),
        ("  Enter  Esc", "apply it to new sessions / keep the current one"),
        ("k", "cut the selected live session (lost carrier)"),
        ("Enter", "open the selected session: what it did, in order"),
        ("↑↓ PgUp PgDn", "select a session (Home / End); stops following"),
        ("f", "follow: keep the top row (newest live) selected"),
        ("/", "filter rows: user, outcome, fault, state; Esc clears"),
        ("?  Esc", "close this help (↑↓ scroll it)"),
    ] {
        lines.push(row(k, what));
    }
    lines.push(Line::styled("Columns", head));
    for (k, what) in [
        ("dl/mk", "messages downloaded / marked for deletion"),
        ("up/down", "bytes client → server / server → client (K, M: ×1024)"),
        ("fault", "the last rule that fired; +N: N more fired before it"),
        ("last cmd", "the client's last command (passwords as ***)"),
    ] {
        lines.push(row(k, what));
    }
    lines.push(Line::styled("Outcomes", head));
    for (o, what) in [
        (Outcome::Committed, "QUIT +OK: marked messages deleted"),
        (Outcome::CommitFailed, "QUIT -ERR in UPDATE: deletions failed"),
        (Outcome::RolledBack, "no QUIT: marks kept, mail comes again"),
        (Outcome::InDoubt, "QUIT sent, answer lost: nobody knows"),
        (Outcome::NothingAtStake, "dropped with nothing marked or downloaded"),
        (Outcome::NoLogin, "ended before logging in"),
        (Outcome::Refused, "upstream down, refused, no greeting"),
        (Outcome::CleanQuit, "QUIT with nothing marked"),
    ] {
        lines.push(Line::from(vec![
            Span::raw("  "),
            Span::styled(format!("{:<17}", o.as_str()), outcome_style(o)),
            Span::raw(what),
        ]));
    }
    lines.push(Line::styled("Counts", head));
    for (name, what) in [
        ("ended / live", "sessions finished / running now"),
        ("at risk", "got/marked in rolled-back or in-doubt sessions: come again"),
        ("duplicates", "downloads of a message already downloaded (same mailbox)"),
        ("faults fired", "fault rules that acted, all sessions"),
        ("damaged", "messages a fault changed: noise, corruption, truncate"),
        ("cut midway", "messages the client got part of (dropped in the body)"),
        ("lost track", "live sessions forgotten: their end was never reported"),
        ("p50 p99 max n", "answer time per command: median, 99th pct, max, count"),
        ("↑ ↓ peak", "bytes per second each way now; the highest ↓ seen"),
        ("n/m", "sessions border: the selected row / rows shown"),
    ] {
        lines.push(row(name, what));
    }
    lines
}

/// The keys, columns, outcomes and counts explained, over everything else;
/// scrolled by `scroll` lines when taller than the screen.
pub fn render_help(area: Rect, buf: &mut Buffer, scroll: u16) {
    let lines = help_lines();
    let text_width = lines.iter().map(Line::width).max().unwrap_or(0) as u16;
    let width = (text_width + 4).min(area.width);
    let height = (lines.len() as u16 + 2).min(area.height);
    let room = height.saturating_sub(2) as usize;
    let scroll = (scroll as usize).min(lines.len().saturating_sub(room));
    let more = lines.len() > scroll + room;
    let inner = width.saturating_sub(4) as usize;
    let shown: Vec<Line> = lines.into_iter().skip(scroll).take(room).map(|l| cut_line(l.spans, inner)).collect();
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    Clear.render(popup, buf);
    let hint = if more { " ↓ more · ? or Esc to close " } else { " ? or Esc to close " };
    let block =
        panel(" help ").title_bottom(Line::styled(hint, DIM).right_aligned()).border_style(Style::new().fg(ACCENT));
    Paragraph::new(shown).block(block.padding(ratatui::widgets::Padding::horizontal(1))).render(popup, buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_micros(850), "850µs");
        assert_eq!(fmt_micros(1_234), "1.2ms");
        assert_eq!(fmt_micros(123_456), "123ms");
        assert_eq!(fmt_micros(1_234_567), "1.23s");
        assert_eq!(fmt_micros(3_600_000_000), "3600s");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(1536), "1.5 KiB");
        assert_eq!(fmt_bytes(300 * 1024 * 1024), "300 MiB");
        assert_eq!(fmt_bytes_short(999), "999");
        assert_eq!(fmt_bytes_short(1536), "1.5K");
        assert_eq!(fmt_bytes_short(120 * 1024 * 1024), "120M");
        assert_eq!(fmt_bytes_short(u64::MAX), "16E");
        assert_eq!(fmt_uptime(Duration::from_secs(3723)), "01:02:03");
        assert_eq!(fmt_clock(Duration::from_secs(83)), "01:23");
    }

    #[test]
    fn columns_fit_the_width() {
        let titles = |w| fit_columns(w, &[]).iter().map(|c| c.0.title).collect::<Vec<_>>();
        assert_eq!(titles(76), ["#", "user", "state", "last cmd", "dl/mk", "fault", "outcome"]);
        // The proxy column is there only when a row has a proxy.
        assert_eq!(titles(200).len(), COLUMNS.len() - 1);
        let mut row = crate::dashboard::model::SessionRow::example(1);
        row.proxy = Some("mail".into());
        let with = fit_columns(200, &[&row]).iter().map(|c| c.0.title).collect::<Vec<_>>();
        assert_eq!(with.len(), COLUMNS.len());
        assert_eq!(&with[..2], ["#", "proxy"]);
        let narrow = fit_columns(76, &[&row]).iter().map(|c| c.0.title).collect::<Vec<_>>();
        assert!(narrow.contains(&"proxy"), "{narrow:?}");
        assert_eq!(titles(10), ["#", "outcome"]);
        for w in [20, 40, 76, 100, 140] {
            let used: u16 = fit_columns(w, &[]).iter().map(|c| c.1 + 1).sum::<u16>() - 1;
            assert!(used <= w || w < 19, "width {w}: {used}");
        }
    }

    #[test]
    fn layout_at_80x24() {
        let (m, ui) = (Model::new(), UiState::default());
        let header = Header { listen: "l:1".into(), upstream: "u:2".into(), seed: 7, started: Instant::now() };
        let d = Dashboard { model: &m, header: &header, ui: &ui, profile: "p", paused: false, uptime: Duration::ZERO };
        let a = layout(Rect::new(0, 0, 80, 24), &d);
        assert_eq!(table_rows(a.sessions), 5);
        assert_eq!(a.footer, Rect::new(0, 23, 80, 1));
        assert_eq!(a.outcomes.width + a.latency.width, 80);
    }
}
