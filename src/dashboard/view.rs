//! Drawing: every panel renders from a [`Dashboard`] (a model snapshot plus
//! what the controls say now) into a ratatui [`Buffer`]. Pure: no I/O, no
//! clock, no lock; tests render into a buffer and read it back.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span, Text};
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

/// Width of the outcomes panel: two columns of counters.
const OUTCOMES_WIDTH: u16 = 41;
/// Rows the sessions table spends on borders and its header line.
const TABLE_CHROME: u16 = 3;

/// Splits the screen. At 80×24 the sessions table gets five rows; taller
/// screens give it most of the extra height.
pub fn layout(area: Rect) -> Areas {
    // The outcomes panel: eight outcomes and three totals, two columns.
    let rest = area.height.saturating_sub(3 + 8 + 1);
    let bottom = (rest * 2 / 5).max(4);
    let [header, top, sessions, bottom, footer] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(8),
        Constraint::Min(TABLE_CHROME + 1),
        Constraint::Length(bottom),
        Constraint::Length(1),
    ])
    .areas(area);
    let [outcomes, latency] = Layout::horizontal([Constraint::Length(OUTCOMES_WIDTH), Constraint::Min(0)]).areas(top);
    let [throughput, log] = Layout::horizontal([Constraint::Percentage(40), Constraint::Percentage(60)]).areas(bottom);
    Areas { header, outcomes, latency, sessions, throughput, log, footer }
}

/// Table rows visible in a sessions panel of this size.
pub fn table_rows(sessions: Rect) -> usize {
    sessions.height.saturating_sub(TABLE_CHROME) as usize
}

impl Widget for &Dashboard<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let a = layout(area);
        render_header(a.header, buf, self);
        render_outcomes(a.outcomes, buf, self);
        render_latency(a.latency, buf, self);
        render_sessions(a.sessions, buf, self);
        render_throughput(a.throughput, buf, self);
        render_log(a.log, buf, self);
        render_footer(a.footer, buf, self);
        if self.ui.help {
            render_help(area, buf);
        }
    }
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
    let label = Style::new().fg(Color::Gray);
    let value = Style::new().fg(Color::White).bold();
    let line = Line::from(vec![
        Span::styled(d.header.listen.clone(), value),
        Span::styled(" → ", Style::new().fg(ACCENT)),
        Span::styled(d.header.upstream.clone(), value),
        Span::styled("  profile ", label),
        Span::styled(d.profile.to_string(), Style::new().fg(ACCENT).bold()),
        Span::styled("  seed ", label),
        Span::styled(d.header.seed.to_string(), value),
    ]);
    Paragraph::new(line).block(block).render(area, buf);
}

// === outcomes ===

/// Outcome counters in two columns, with at-risk and duplicate totals.
pub fn render_outcomes(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let m = d.model;
    let mut title = format!(" outcomes · {} ended · {} live ", m.ended_total(), m.live_count());
    if m.forgotten() > 0 {
        let _ = write!(title, "· {} lost track ", m.forgotten());
    }
    if m.damaged() > 0 {
        let _ = write!(title, "· {} damaged ", m.damaged());
    }
    if m.cut_midway() > 0 {
        let _ = write!(title, "· {} cut midway ", m.cut_midway());
    }
    let block = panel(title);
    let inner = block.inner(area);
    block.render(area, buf);

    let warn = |n: u64, s: Style| if n > 0 { s } else { DIM };
    let mut cells: Vec<(String, u64, Style)> = Outcome::ALL
        .iter()
        .map(|o| {
            let n = m.outcome_count(*o);
            (o.as_str().to_string(), n, if n > 0 { outcome_style(*o) } else { DIM })
        })
        .collect();
    cells.push(("at risk".into(), m.at_risk(), warn(m.at_risk(), Style::new().fg(Color::Yellow).bold())));
    cells.push(("duplicates".into(), m.duplicates(), warn(m.duplicates(), Style::new().fg(Color::LightRed).bold())));
    cells.push(("faults fired".into(), m.faults_fired(), warn(m.faults_fired(), Style::new().fg(Color::Red))));

    // Column-major: the outcomes read top to bottom, totals come last.
    let rows = inner.height.max(1) as usize;
    let col_width = inner.width.saturating_sub(1) / 2;
    for (i, (name, n, style)) in cells.iter().enumerate() {
        let (col, row) = (i / rows, i % rows);
        if col > 1 {
            break;
        }
        let x = inner.x + col as u16 * (col_width + 1);
        let cell = Rect { x, y: inner.y + row as u16, width: col_width, height: 1 };
        let count = n.to_string();
        let gap = (col_width as usize).saturating_sub(name.chars().count() + count.len()).max(1);
        let count_style = if *n > 0 { Style::new().fg(Color::White).bold() } else { DIM };
        Line::from(vec![
            Span::styled(name.clone(), *style),
            Span::raw(" ".repeat(gap)),
            Span::styled(count, count_style),
        ])
        .render(cell, buf);
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

/// A sessions-table column: header, width, and the order columns are given
/// up in when the screen is narrow (0 = never).
struct Column {
    title: &'static str,
    width: u16,
    priority: u8,
    cell: fn(&SessionRow) -> Cell<'static>,
}

const COLUMNS: [Column; 10] = [
    Column { title: "#", width: 5, priority: 0, cell: |r| Cell::from(r.session.to_string()) },
    Column {
        title: "client",
        width: 15,
        priority: 6,
        cell: |r| Cell::from(r.client.map(|c| c.to_string()).unwrap_or_default()),
    },
    Column { title: "user", width: 10, priority: 1, cell: |r| Cell::from(r.user.clone().unwrap_or_default()) },
    Column {
        title: "state",
        width: 6,
        priority: 2,
        cell: |r| {
            let (label, style) = state_label(r.state);
            // Ended rows stay dim; only the live state is worth a colour.
            if r.is_live() { Cell::from(label).style(style) } else { Cell::from(label) }
        },
    },
    Column {
        title: "last cmd",
        width: 10,
        priority: 3,
        cell: |r| Cell::from(r.last_command.clone().unwrap_or_default()),
    },
    Column { title: "dl/mk", width: 5, priority: 2, cell: |r| Cell::from(format!("{}/{}", r.downloaded, r.marked)) },
    Column {
        title: "up/down",
        width: 9,
        priority: 5,
        cell: |r| Cell::from(format!("{}/{}", fmt_bytes_short(r.bytes_up), fmt_bytes_short(r.bytes_down))),
    },
    Column {
        title: "fault",
        width: 14,
        priority: 2,
        cell: |r| match r.last_fault() {
            None => Cell::from(Span::styled("-", DIM)),
            Some(f) if r.fault_count > 1 => Cell::from(format!("{f} +{}", r.fault_count - 1)).fg(Color::LightRed),
            Some(f) => Cell::from(f.to_string()).fg(Color::LightRed),
        },
    },
    Column {
        title: "outcome",
        width: 13,
        priority: 0,
        cell: |r| match &r.end {
            None => Cell::from("● live").style(Style::new().fg(Color::LightBlue).bold()),
            Some(e) => Cell::from(e.outcome.as_str()).style(outcome_style(e.outcome)),
        },
    },
    Column { title: "profile", width: 14, priority: 7, cell: |r| Cell::from(r.profile.clone()) },
];

/// The columns that fit in `width`, in display order.
fn fit_columns(width: u16) -> Vec<&'static Column> {
    let mut by_priority: Vec<&Column> = COLUMNS.iter().collect();
    by_priority.sort_by_key(|c| c.priority);
    let mut used = 0u16;
    let mut keep = Vec::new();
    for c in by_priority {
        let need = c.width + u16::from(!keep.is_empty());
        if c.priority == 0 || used + need <= width {
            used += need;
            keep.push(c.title);
        }
    }
    COLUMNS.iter().filter(|c| keep.contains(&c.title)).collect()
}

const HIGHLIGHT: &str = "▶ ";

/// The table of live and recent sessions, scrolled to keep the selection
/// visible; columns drop out by priority on narrow screens.
pub fn render_sessions(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let m = d.model;
    let len = m.row_count();
    let visible = table_rows(area).max(1);
    let selected = d.ui.selected_index(m);
    let offset = match selected {
        Some(i) => scroll(d.ui.offset, i, visible),
        None => d.ui.offset,
    }
    .min(len.saturating_sub(visible));

    let position = match selected {
        Some(i) => format!(" {}/{} ", i + 1, len),
        None if len > visible => format!(" {}–{} of {} ", offset + 1, (offset + visible).min(len), len),
        None => String::new(),
    };
    let block = panel(format!(" sessions · {} live · {} recent ", m.live_count(), len - m.live_count()))
        .title_bottom(Line::styled(position, DIM).right_aligned());
    let inner_width = block.inner(area).width;
    let columns = fit_columns(inner_width.saturating_sub(HIGHLIGHT.chars().count() as u16));
    let header = Row::new(columns.iter().map(|c| Cell::from(c.title)))
        .style(Style::new().fg(Color::Gray).add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let rows: Vec<Row> = m
        .rows()
        .skip(offset)
        .take(visible)
        .map(|r| {
            let style = if r.is_live() { Style::new().fg(Color::White) } else { DIM };
            Row::new(columns.iter().map(|c| (c.cell)(r))).style(style)
        })
        .collect();
    let widths: Vec<Constraint> = columns
        .iter()
        .map(|c| if c.title == "fault" { Constraint::Min(c.width) } else { Constraint::Length(c.width) })
        .collect();
    let table = Table::new(rows, widths)
        .header(header)
        .block(block)
        .row_highlight_style(Style::new().bg(Color::DarkGray).add_modifier(Modifier::BOLD))
        .highlight_symbol(HIGHLIGHT)
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::default().with_selected(selected.map(|i| i - offset));
    StatefulWidget::render(table, area, buf, &mut state);
    if len == 0 {
        let hint = Rect { y: area.y + 2, height: 1, ..area.inner(ratatui::layout::Margin::new(3, 0)) };
        Paragraph::new(Span::styled("waiting for the first client…", DIM)).render(hint.intersection(area), buf);
    }
}

// === throughput ===

/// Bytes per second each way: the latest rate and a sparkline of recent ones.
pub fn render_throughput(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let samples = d.model.throughput();
    let peak_down = samples.iter().map(|r| r.down).max().unwrap_or(0);
    let block = panel(" throughput ")
        .title_bottom(Line::styled(format!(" peak ↓ {}/s ", fmt_bytes(peak_down)), DIM).right_aligned());
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

fn log_line(l: &LogLine) -> Line<'static> {
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
    Line::from(spans)
}

/// Faults and outcomes, newest at the bottom.
pub fn render_log(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let block = panel(" events ");
    let inner = block.inner(area);
    block.render(area, buf);
    let log = d.model.log();
    let skip = log.len().saturating_sub(inner.height as usize);
    let lines: Vec<Line> = log.skip(skip).map(log_line).collect();
    if lines.is_empty() {
        Paragraph::new(Span::styled("no faults or outcomes yet", DIM)).render(inner, buf);
        return;
    }
    Paragraph::new(lines).render(inner, buf);
}

// === footer and help ===

/// Key hints, and a status message on the right when there is one.
pub fn render_footer(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    let key = Style::new().fg(Color::Black).bg(ACCENT).bold();
    let text = Style::new().fg(Color::Gray);
    let hints = [
        ("q", "quit"),
        ("p", if d.paused { "resume" } else { "pause" }),
        ("tab", "profile"),
        ("k", "cut"),
        ("↑↓", "select"),
        ("?", "help"),
    ];
    // A flash message takes the right end, at most 60% of the width; the
    // hints that still fit whole are drawn, never a hint cut mid-word.
    let flash = d.ui.flash.as_ref().map(|(msg, _)| {
        let max = (area.width as usize * 3 / 5).max(10);
        let mut msg: String = format!(" {msg} ");
        if msg.chars().count() > max {
            msg = msg.chars().take(max.saturating_sub(2)).collect::<String>() + "… ";
        }
        msg
    });
    let room = area.width as usize - flash.as_ref().map_or(0, |m| m.chars().count());
    let mut spans = Vec::new();
    let mut used = 0;
    for (k, what) in hints {
        let (a, b) = (format!(" {k} "), format!(" {what}  "));
        let w = a.chars().count() + b.chars().count();
        if used + w > room {
            break;
        }
        used += w;
        spans.push(Span::styled(a, key));
        spans.push(Span::styled(b, text));
    }
    Line::from(spans).render(area, buf);
    if let Some(msg) = flash {
        let width = (msg.chars().count() as u16).min(area.width);
        let at = Rect { x: area.right() - width, width, ..area };
        Line::styled(msg, Style::new().fg(Color::Black).bg(Color::Yellow)).render(at, buf);
    }
}

/// The keys and what each outcome means, over everything else.
pub fn render_help(area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(ACCENT).bold();
    let head = Style::new().fg(Color::White).bold().add_modifier(Modifier::UNDERLINED);
    let mut lines = vec![Line::styled("Keys", head)];
    for (k, what) in [
        ("q  Ctrl-C", "quit (stops the run, restores the terminal)"),
        ("p", "pause / resume fault injection"),
        ("tab  ⇧tab", "next / previous profile (new sessions)"),
        ("k", "cut the selected live session (lost carrier)"),
        ("↑↓ PgUp PgDn", "select a session (Home / End)"),
        ("?  Esc", "close this help"),
        ("dl/mk", "column: downloaded / marked for deletion"),
    ] {
        lines.push(Line::from(vec![Span::styled(format!("  {k:<14}"), key), Span::raw(what)]));
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
            Span::styled(format!("{:<14}", o.as_str()), outcome_style(o)),
            Span::raw(what),
        ]));
    }
    lines.push(Line::styled("Counts", head));
    for (name, what) in [
        ("at risk", "got or marked in rolled-back/in-doubt sessions: come again"),
        ("duplicates", "downloads of a message already downloaded (same mailbox)"),
        ("damaged", "messages a fault changed: noise, corruption, truncate"),
        ("cut midway", "messages the client got part of (dropped in the body)"),
    ] {
        lines.push(Line::from(vec![Span::styled(format!("  {name:<14}"), key), Span::raw(what)]));
    }
    let text = Text::from(lines);
    let width = (text.width() as u16 + 4).min(area.width);
    let height = (text.height() as u16 + 2).min(area.height);
    let popup = Rect { x: area.x + (area.width - width) / 2, y: area.y + (area.height - height) / 2, width, height };
    Clear.render(popup, buf);
    let block = panel(" help ")
        .title_bottom(Line::styled(" ? or Esc to close ", DIM).right_aligned())
        .border_style(Style::new().fg(ACCENT));
    Paragraph::new(text).block(block.padding(ratatui::widgets::Padding::horizontal(1))).render(popup, buf);
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
        let titles = |w| fit_columns(w).iter().map(|c| c.title).collect::<Vec<_>>();
        assert_eq!(titles(76), ["#", "user", "state", "last cmd", "dl/mk", "fault", "outcome"]);
        assert_eq!(titles(200).len(), COLUMNS.len());
        assert_eq!(titles(10), ["#", "outcome"]);
        for w in [20, 40, 76, 100, 140] {
            let used: u16 = fit_columns(w).iter().map(|c| c.width + 1).sum::<u16>() - 1;
            assert!(used <= w || w < 19, "width {w}: {used}");
        }
    }

    #[test]
    fn layout_at_80x24() {
        let a = layout(Rect::new(0, 0, 80, 24));
        assert_eq!(table_rows(a.sessions), 5);
        assert_eq!(a.footer, Rect::new(0, 23, 80, 1));
        assert_eq!(a.outcomes.width + a.latency.width, 80);
    }
}
