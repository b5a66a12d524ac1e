//! The dashboard's panels rendered from a fixed model into a buffer.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use popfault::dashboard::*;
use popfault::events::{Event, SessionEnd, SessionSnapshot};
use popfault::session::{Fingerprint, MessageKey, Outcome, State};
use popfault::stats::Stats;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use crossterm::event::{Event as InputEvent, KeyCode, KeyEvent, KeyModifiers};
use popfault::control::Control;
use popfault::faults::Profile;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::widgets::Widget;
use tokio_util::sync::CancellationToken;

const S: Duration = Duration::from_secs(1);

fn client(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

fn start(n: u64, profile: &str) -> Event {
    Event::SessionStart {
        session: n,
        client: client(50000 + n as u16),
        upstream: "127.0.0.1:2110".into(),
        profile: profile.into(),
    }
}

fn progress(n: u64, state: State, user: &str, cmd: &str, dl: u64, mk: usize) -> Event {
    Event::Progress(Box::new(SessionSnapshot {
        session: n,
        state,
        user: Some(user.into()),
        last_command: Some(cmd.into()),
        downloaded: dl,
        marked: mk,
        bytes_up: 60 * dl,
        bytes_down: 2100 * dl,
    }))
}

struct End {
    n: u64,
    user: &'static str,
    outcome: Outcome,
    state: State,
    dl: u64,
    mk: usize,
    at_risk: usize,
    /// Downloads of a message seen before: the fold finds them in the
    /// fingerprints (the message downloaded `dup` + 1 times).
    dup: u64,
    faults: &'static [&'static str],
    ended_by: &'static str,
}

fn end(e: End) -> Event {
    Event::SessionEnd(Box::new(SessionEnd {
        session: e.n,
        client: client(50000 + e.n as u16),
        upstream: "127.0.0.1:2110".into(),
        user: if e.user.is_empty() { None } else { Some(e.user.into()) },
        outcome: e.outcome,
        state: e.state,
        downloaded: e.dl,
        marked: e.mk,
        at_risk: e.at_risk,
        // Not read: the count is the fold's answer.
        duplicates: 0,
        bytes_up: 60 * e.dl + 30,
        bytes_down: 2100 * e.dl + 40,
        duration_ms: 1000,
        faults: e.faults.iter().map(|f| f.to_string()).collect(),
        encrypted: false,
        tls: None,
        violations: 0,
        profile: "lost-carrier".into(),
        fingerprints: (0..if e.dup > 0 { e.dup + 1 } else { 0 })
            .map(|i| Fingerprint {
                number: i as u32 + 1,
                uid: None,
                key: MessageKey::message_id(format!("<{}@dup>", e.n).as_bytes()),
            })
            .collect::<Vec<_>>()
            .into(),
        delivery: Default::default(),
        ended_by: e.ended_by.into(),
    }))
}

/// What the aggregator does, in small: each event through the run's one
/// fold, then onto the screen with the fold's answer; the totals handed
/// over when the model is taken.
#[derive(Default)]
struct Run {
    stats: Stats,
    model: Model,
}

impl Run {
    fn apply(&mut self, ev: &Event, now: Duration) {
        let folded = self.stats.apply(ev);
        self.model.apply(ev, folded, now);
    }

    fn model(mut self) -> Model {
        self.model.set_totals(Arc::new(self.stats.totals()));
        self.model
    }
}

fn latency(n: u64, command: &str, micros: u64) -> Event {
    Event::Latency { session: n, seq: 1, command: command.into(), micros }
}

/// Six sessions: two live (2, 5), four ended with different outcomes.
fn model() -> Model {
    let mut r = Run::default();
    for (i, ev) in model_events().iter().enumerate() {
        r.apply(ev, S * i as u32);
    }
    let mut m = r.model();
    for i in 0..20u64 {
        m.sample_bytes(i * i * 100, i * 5000, Duration::from_millis(500) * i as u32);
    }
    m
}

fn model_events() -> Vec<Event> {
    vec![
        start(1, "lost-carrier"),
        progress(1, State::Transaction, "alice", "RETR 3", 2, 2),
        Event::Fault {
            session: 1,
            rule: "cut-mid-retr".into(),
            action: "disconnect".into(),
            point: "body RETR 3 @1024".into(),
        },
        end(End {
            n: 1,
            user: "alice",
            outcome: Outcome::RolledBack,
            state: State::Transaction,
            dl: 2,
            mk: 2,
            at_risk: 3,
            dup: 0,
            faults: &["cut-mid-retr"],
            ended_by: "reset by server",
        }),
        start(2, "lost-carrier"),
        progress(2, State::Authorization, "bob", "PASS ***", 0, 0),
        start(3, "lost-carrier"),
        end(End {
            n: 3,
            user: "carol",
            outcome: Outcome::Committed,
            state: State::Update,
            dl: 5,
            mk: 5,
            at_risk: 0,
            dup: 2,
            faults: &[],
            ended_by: "client closed",
        }),
        start(4, "lost-carrier"),
        end(End {
            n: 4,
            user: "",
            outcome: Outcome::Refused,
            state: State::Authorization,
            dl: 0,
            mk: 0,
            at_risk: 0,
            dup: 0,
            faults: &[],
            ended_by: "upstream refused",
        }),
        start(5, "passthrough"),
        progress(5, State::Transaction, "dave", "DELE 4", 4, 3),
        start(6, "lost-carrier"),
        Event::Fault {
            session: 6,
            rule: "quit-lost".into(),
            action: "disconnect".into(),
            point: "forwarded QUIT".into(),
        },
        end(End {
            n: 6,
            user: "erin",
            outcome: Outcome::InDoubt,
            state: State::Update,
            dl: 1,
            mk: 4,
            at_risk: 4,
            dup: 1,
            faults: &["quit-lost"],
            ended_by: "client closed",
        }),
        latency(1, "RETR", 1_200),
        latency(3, "RETR", 1_250),
        latency(3, "RETR", 48_000),
        latency(3, "DELE", 310),
        latency(3, "QUIT", 820),
        latency(5, "USER", 150),
    ]
}

fn header() -> Header {
    Header { listen: "127.0.0.1:1110".into(), upstream: "127.0.0.1:2110".into(), seed: 4242, started: Instant::now() }
}

fn lines(buf: &Buffer) -> Vec<String> {
    let area = buf.area;
    (0..area.height)
        .map(|y| (0..area.width).map(|x| buf[(x, y)].symbol()).collect::<String>().trim_end().to_string())
        .collect()
}

/// Renders one panel (or the whole dashboard) of `w`×`h` and reads it back.
fn render(
    m: &Model,
    ui: &UiState,
    paused: bool,
    (w, h): (u16, u16),
    panel: impl FnOnce(Rect, &mut Buffer, &Dashboard),
) -> Vec<String> {
    let header = header();
    let d = Dashboard { model: m, header: &header, ui, profile: "lost-carrier", paused, uptime: S * 83 };
    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
    panel(buf.area, &mut buf, &d);
    lines(&buf)
}

fn whole(area: Rect, buf: &mut Buffer, d: &Dashboard) {
    d.render(area, buf);
}

/// A row chosen by hand: follow mode off, the selection on `session`.
fn selected(session: u64) -> UiState {
    UiState { selected: Some(session), follow: false, ..UiState::default() }
}

fn assert_lines(got: &[String], want: &[&str]) {
    assert_eq!(got.len(), want.len(), "line count\n{}", got.join("\n"));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w.trim_end(), "line {i} differs; whole buffer:\n{}", got.join("\n"));
    }
}

#[test]
fn whole_dashboard_at_80x24() {
    let got = render(&model(), &selected(2), false, (80, 24), whole);
    assert_lines(
        &got,
        &[
            "╭ popfault · up 00:01:23 ───────────────────────────────────────── ● faults on ╮",
            "│127.0.0.1:1110 → 127.0.0.1:2110  profile lost-carrier  seed 4242              │",
            "╰──────────────────────────────────────────────────────────────────────────────╯",
            "╭ outcomes · 4 ended · 2 live ──────────╮╭ latency per command ────────────────╮",
            "│committed         1 refused           1││cmd        p50    p99    max      n  │",
            "│commit-failed     0 clean-quit        0││RETR     1.3ms   48ms   48ms      3  │",
            "│rolled-back       1 at risk           7││DELE     311µs  311µs  311µs      1  │",
            "│in-doubt          1 duplicates        3││QUIT     823µs  823µs  823µs      1  │",
            "│nothing-at-stake  0 faults fired      2││USER     150µs  150µs  150µs      1  │",
            "│no-login          0                    ││                                     │",
            "╰───────────────────────────────────────╯╰─────────────────────────────────────╯",
            "╭ sessions · 2 live · 4 recent ────────────────────────────────────────────────╮",
            "│  #     user       state  last cmd   dl/mk fault          outcome             │",
            "│  5     dave       TRANS  DELE 4     4/3   -              ● live              │",
            "│▶ 2     bob        AUTH   PASS ***   0/0   -              ● live              │",
            "│  6     erin       UPDATE            1/4   quit-lost      in-doubt            │",
            "│  4                AUTH              0/0   -              refused             │",
            "│  3     carol      UPDATE            5/5   -              committed           │",
            "╰────────────────────────────────────────────────────────────── 2/6 · f follow ╯",
            "╭ throughput ──────────────────╮╭ events ──────────────────────────────────────╮",
            "│↑ 7.2 KiB/s   ▁▁▂▂▃▃▄▄▄▅▅▆▆▇▇█││00:14 #6   in-doubt · 4 at risk · 1 dup       │",
            "│↓ 9.8 KiB/s   ████████████████││      (client closed)                         │",
            "╰──────────── peak ↓ 9.8 KiB/s ╯╰──────────────────────────────────────────────╯",
            " q  quit   p  pause   tab  profile   k  cut   ↑↓  select   f  follow   ?  help",
        ],
    );
}

#[test]
fn wide_dashboard_shows_every_column_and_the_whole_log() {
    let got = render(&model(), &selected(1), true, (130, 36), whole);
    let text = got.join("\n");
    assert!(got[0].contains("‖ faults PAUSED"), "{}", got[0]);
    let head = got.iter().find(|l| l.contains("last cmd")).expect("table header");
    for col in ["#", "client", "user", "state", "last cmd", "dl/mk", "up/down", "fault", "outcome", "profile"] {
        assert!(head.contains(col), "column {col} missing: {head}");
    }
    let row = got.iter().find(|l| l.contains("▶ 1 ")).expect("selected row for session 1");
    let cells: Vec<&str> = row.trim_matches('│').split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "▶",
            "1",
            "127.0.0.1:50001",
            "alice",
            "TRANS",
            "RETR",
            "3",
            "2/2",
            "150/4.1K",
            "cut-mid-retr",
            "rolled-back",
            "lost-carrier"
        ]
    );
    let live = got.iter().find(|l| l.contains(" 5 ")).expect("row for session 5");
    assert!(live.contains("dave") && live.contains("● live") && live.contains("passthrough"), "{live}");
    assert!(text.contains("00:02 #1   fault cut-mid-retr: disconnect at body RETR 3 @1024"), "{text}");
    assert!(text.contains("00:03 #1   rolled-back · 3 at risk (reset by server)"), "{text}");
    assert!(text.contains("00:07 #3   committed · 2 dup (client closed)"), "{text}");
    assert!(text.contains(" 6/6 "), "selection position in the border");
    assert!(got[35].contains("p  resume"), "{}", got[35]);
}

#[test]
fn header_shows_addresses_profile_seed_uptime_and_pause() {
    let on = render(&model(), &UiState::default(), false, (80, 3), render_header);
    assert_lines(
        &on,
        &[
            "╭ popfault · up 00:01:23 ───────────────────────────────────────── ● faults on ╮",
            "│127.0.0.1:1110 → 127.0.0.1:2110  profile lost-carrier  seed 4242              │",
            "╰──────────────────────────────────────────────────────────────────────────────╯",
        ],
    );
    let paused = render(&model(), &UiState::default(), true, (100, 3), render_header);
    assert_eq!(
        paused[0],
        "╭ popfault · up 00:01:23 ───────────────────────────────────────────────────────── ‖ faults PAUSED ╮"
    );
    assert!(paused[1].contains("seed 4242") && paused[1].contains("profile lost-carrier"));
}

#[test]
fn outcome_counters_with_at_risk_and_duplicates() {
    let got = render(&model(), &UiState::default(), false, (41, 8), render_outcomes);
    assert_lines(
        &got,
        &[
            "╭ outcomes · 4 ended · 2 live ──────────╮",
            "│committed         1 refused           1│",
            "│commit-failed     0 clean-quit        0│",
            "│rolled-back       1 at risk           7│",
            "│in-doubt          1 duplicates        3│",
            "│nothing-at-stake  0 faults fired      2│",
            "│no-login          0                    │",
            "╰───────────────────────────────────────╯",
        ],
    );
}

#[test]
fn latency_percentiles_per_command() {
    let got = render(&model(), &UiState::default(), false, (40, 5), render_latency);
    assert_lines(
        &got,
        &[
            "╭ latency per command ─────────────────╮",
            "│cmd        p50    p99    max      n   │",
            "│RETR     1.3ms   48ms   48ms      3   │",
            "│DELE     311µs  311µs  311µs      1   │",
            "╰───────────────────────────── +2 more ╯",
        ],
    );
    // Wide enough for two groups: every command shows.
    let wide = render(&model(), &UiState::default(), false, (80, 5), render_latency).join("\n");
    for cmd in ["RETR", "DELE", "QUIT", "USER"] {
        assert!(wide.contains(cmd), "{wide}");
    }
    assert!(wide.contains("QUIT     823µs  823µs  823µs      1"), "{wide}");
}

#[test]
fn sessions_table_scrolls_to_the_selection() {
    let mut r = Run::default();
    for n in 1..=30 {
        r.apply(&start(n, "p"), S);
        r.apply(&progress(n, State::Transaction, &format!("user{n}"), "STAT", 0, 0), S);
    }
    let m = r.model();
    let mut ui = UiState::default();
    handle_key(&mut ui, &m, KeyEvent::new(KeyCode::End, KeyModifiers::NONE));
    ui.settle(&m, 5);
    let got = render(&m, &ui, false, (80, 8), render_sessions);
    assert_lines(
        &got,
        &[
            "╭ sessions · 30 live · 0 recent ───────────────────────────────────────────────╮",
            "│  #     user       state  last cmd   dl/mk fault          outcome             │",
            "│  5     user5      TRANS  STAT       0/0   -              ● live              │",
            "│  4     user4      TRANS  STAT       0/0   -              ● live              │",
            "│  3     user3      TRANS  STAT       0/0   -              ● live              │",
            "│  2     user2      TRANS  STAT       0/0   -              ● live              │",
            "│▶ 1     user1      TRANS  STAT       0/0   -              ● live              │",
            "╰──────────────────────────────────────────────────────────── 30/30 · f follow ╯",
        ],
    );
    // Following, the newest row is selected and the border says so.
    let top = render(&m, &UiState::default(), false, (80, 8), render_sessions);
    assert!(top[2].starts_with("│▶ 30 "), "{}", top[2]);
    assert!(top[7].contains(" following · 1/30 "), "{}", top[7]);
    // With nothing selected, the border says which rows are shown.
    let none = UiState { follow: false, ..UiState::default() };
    let top = render(&m, &none, false, (80, 8), render_sessions);
    assert!(top[2].contains("  30 "), "{}", top[2]);
    assert!(top[7].contains(" 1–5 of 30 "), "{}", top[7]);
}

#[test]
fn help_overlay_lists_keys_and_outcomes() {
    let ui = UiState { help: true, ..UiState::default() };
    let got = render(&model(), &ui, false, (80, 24), whole);
    let text = got.join("\n");
    // Keys, outcomes and counts fill an 80×24 screen top to bottom.
    assert!(got[0].contains("╭ help ─"), "{}", got[0]);
    for want in [
        "q  Ctrl-C        quit (stops the run, restores the terminal)",
        "p                pause / resume fault injection",
        "tab  ⇧tab        choose the next / previous profile (shown below)",
        "  Enter  Esc     apply it to new sessions / keep the current one",
        "k                cut the selected live session (lost carrier)",
        "f                follow: keep the top row (newest live) selected",
        "/                filter rows: user, outcome, fault, state; Esc clears",
        "committed        QUIT +OK: marked messages deleted",
        "dl/mk            messages downloaded / marked for deletion",
        "up/down          bytes client → server / server → client",
        "in-doubt         QUIT sent, answer lost: nobody knows",
        "? or Esc to close",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    // Taller than 24 rows: it says there is more, and scrolls to the rest,
    // which explains every number on the screen.
    assert!(text.contains("↓ more"), "{text}");
    let scrolled = UiState { help: true, help_scroll: 100, ..UiState::default() };
    let rest = render(&model(), &scrolled, false, (80, 24), whole).join("\n");
    for want in [
        "fault            the last rule that fired; +N: N more fired before it",
        "nothing-at-stake dropped with nothing marked or downloaded",
        "at risk ",
        "duplicates ",
        "damaged ",
        "cut midway ",
        "lost track       live sessions forgotten",
        "p50 p99 max n    answer time per command",
        "↑ ↓ peak         bytes per second each way now; the highest ↓ seen",
    ] {
        assert!(rest.contains(want), "missing {want:?}:\n{rest}");
    }
    assert!(!rest.contains("↓ more"), "{rest}");
    let closed = render(&model(), &UiState::default(), false, (80, 24), whole).join("\n");
    assert!(!closed.contains("Ctrl-C"));
}

#[test]
fn passwords_are_shown_redacted_only() {
    let mut r = Run::default();
    r.apply(&start(1, "p"), S);
    r.apply(&progress(1, State::Authorization, "alice", "PASS ***", 0, 0), S);
    let m = r.model();
    let got = render(&m, &selected(1), false, (120, 30), whole).join("\n");
    assert_eq!(got.matches("PASS").count(), 1, "{got}");
    let after = got.split("PASS ").nth(1).unwrap_or_default();
    assert!(after.starts_with("***  "), "{after}");
}

#[test]
fn empty_model_renders_placeholders() {
    let got = render(&Model::new(), &UiState::default(), false, (80, 24), whole).join("\n");
    for want in [
        "0 ended · 0 live",
        "no commands answered yet",
        "waiting for the first client…",
        "no faults or outcomes yet",
        "↑ 0 B/s",
    ] {
        assert!(got.contains(want), "missing {want:?}:\n{got}");
    }
}

#[test]
fn tiny_and_odd_sizes_do_not_panic() {
    let m = model();
    let ui = UiState { help: true, selected: Some(3), ..UiState::default() };
    for (w, h) in [(1, 1), (10, 5), (40, 12), (79, 23), (80, 24), (200, 60), (300, 10)] {
        render(&m, &ui, true, (w, h), whole);
    }
}

#[test]
fn ended_sessions_stay_bounded() {
    let mut r = Run::default();
    for n in 1..=10_000 {
        r.apply(&start(n, "p"), S);
        r.apply(
            &end(End {
                n,
                user: "u",
                outcome: Outcome::RolledBack,
                state: State::Transaction,
                dl: 1,
                mk: 1,
                at_risk: 1,
                dup: 0,
                faults: &["f"],
                ended_by: "x",
            }),
            S,
        );
    }
    let m = r.model();
    assert_eq!(m.ended_total(), 10_000);
    assert_eq!(m.outcome_count(Outcome::RolledBack), 10_000);
    assert_eq!(m.at_risk(), 10_000);
    assert!(m.row_count() <= MAX_ENDED);
    assert_eq!(m.live_count(), 0);
    assert_eq!(m.rows().next().map(|r| r.session), Some(10_000), "newest first");
}

// === the terminal loop, on a test backend ===

/// Input from a script: `None` waits out the timeout (so a frame is drawn).
struct Script(VecDeque<Option<InputEvent>>);

impl Input for Script {
    fn next(&mut self, timeout: Duration) -> io::Result<Option<InputEvent>> {
        match self.0.pop_front() {
            Some(Some(ev)) => Ok(Some(ev)),
            Some(None) => {
                std::thread::sleep(timeout);
                Ok(None)
            }
            // Out of script: quit rather than spin.
            None => Ok(Some(key(KeyCode::Char('q')))),
        }
    }
}

fn key(code: KeyCode) -> InputEvent {
    InputEvent::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn profiles() -> Vec<Arc<Profile>> {
    ["passthrough", "lost-carrier", "call-waiting"]
        .iter()
        .map(|n| Arc::new(Profile { name: n.to_string(), summary: format!("{n} summary"), ..Profile::passthrough() }))
        .collect()
}

#[test]
fn loop_runs_keys_against_control_and_quits() {
    let ps = profiles();
    let control = Control::new(ps[0].clone(), 4242);
    let shared = shared_model();
    let events = [start(1, "passthrough"), progress(1, State::Transaction, "alice", "RETR 1", 1, 0)];
    let mut stats = Stats::new();
    feed(&shared, events.iter().map(|ev| (ev, stats.apply(ev))), S);
    let stop = CancellationToken::new();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    let mut script = Script(VecDeque::from([
        None,
        Some(key(KeyCode::Char('p'))),
        Some(key(KeyCode::Tab)),
        Some(key(KeyCode::Tab)),
        Some(InputEvent::Key(KeyEvent::new(KeyCode::BackTab, KeyModifiers::SHIFT))),
        Some(key(KeyCode::Enter)),
        Some(key(KeyCode::Down)),
        Some(key(KeyCode::Char('k'))),
        None,
        Some(InputEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))),
    ]));
    run_on(&mut terminal, &mut script, &shared, &control, &header(), &ps, &stop).expect("loop");
    assert!(script.0.is_empty(), "the loop stopped at Ctrl-C");
    assert!(stop.is_cancelled(), "quitting stops the run");
    assert!(control.paused());
    assert_eq!(control.profile().name, "lost-carrier");
    let screen = lines(terminal.backend().buffer());
    assert!(screen[0].contains("faults PAUSED"), "{}", screen[0]);
    assert!(screen[1].contains("profile lost-carrier"), "{}", screen[1]);
    assert!(screen.iter().any(|l| l.contains("▶ 1") && l.contains("alice")), "{}", screen.join("\n"));
    // Session 1 was never registered with this Control: the cut is refused.
    assert!(screen[23].ends_with(" session #1 is no longer live"), "{}", screen[23]);
}

#[test]
fn many_proxies_show_one_at_a_time_and_keys_act_on_the_one_shown() {
    let ps = profiles();
    let pane = |name: &str, user: &str, listen: &str| {
        let shared = shared_model();
        let events = [start(1, "passthrough"), progress(1, State::Transaction, user, "RETR 1", 1, 0)];
        let mut stats = Stats::new();
        feed(&shared, events.iter().map(|ev| (ev, stats.apply(ev))), S);
        let control = Arc::new(Control::new(ps[0].clone(), 4242));
        Pane {
            name: name.into(),
            model: shared,
            control,
            header: Header { listen: listen.into(), ..header() },
            every: Vec::new(),
        }
    };
    let panes = vec![pane("alpha", "alice", "127.0.0.1:1110"), pane("beta", "bob", "127.0.0.1:1111")];
    let (first, second) = (panes[0].control.clone(), panes[1].control.clone());
    let list = move || panes.clone();
    let stop = CancellationToken::new();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    let mut script = Script(VecDeque::from([
        None,
        Some(key(KeyCode::Char(']'))),
        None,
        Some(key(KeyCode::Char('p'))),
        None,
        Some(InputEvent::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))),
    ]));
    run_panes_on(&mut terminal, &mut script, &list, &ps, &stop).expect("loop");
    let screen = lines(terminal.backend().buffer());
    assert!(screen[1].contains("[beta 2/2] 127.0.0.1:1111"), "{}", screen[1]);
    assert!(screen.iter().any(|l| l.contains("bob")), "{}", screen.join("\n"));
    assert!(!screen.iter().any(|l| l.contains("alice")), "{}", screen.join("\n"));
    assert!(second.paused() && !first.paused(), "p paused the proxy shown");
    // With no proxy yet, the loop still draws and quits.
    let none = || Vec::new();
    let mut script = Script(VecDeque::from([None, Some(key(KeyCode::Char('q')))]));
    run_panes_on(&mut terminal, &mut script, &none, &ps, &CancellationToken::new()).expect("loop");
    let screen = lines(terminal.backend().buffer());
    assert!(screen[1].contains("no proxy yet"), "{}", screen[1]);
}

#[test]
fn loop_returns_when_stopped_from_outside() {
    let ps = profiles();
    let control = Control::new(ps[0].clone(), 1);
    let stop = CancellationToken::new();
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    // Cancel from "another thread" after the first wait.
    let canceller = stop.clone();
    struct CancelAfterWait(CancellationToken);
    impl Input for CancelAfterWait {
        fn next(&mut self, _: Duration) -> io::Result<Option<InputEvent>> {
            self.0.cancel();
            Ok(None)
        }
    }
    run_on(&mut terminal, &mut CancelAfterWait(canceller), &shared_model(), &control, &header(), &ps, &stop)
        .expect("loop");
    assert!(!control.paused());
    let screen = lines(terminal.backend().buffer());
    assert!(screen[0].contains("popfault"), "a frame was drawn before stopping");
}

// === every size: nothing cut without a mark, no number cut at all ===

/// The fixture with what got cut before: a 16-digit seed, a long profile
/// and rule name, an offset at the end of a fault line, four-digit session
/// numbers, and damaged / cut-midway counts.
fn crowded() -> (Model, Header) {
    let mut r = Run::default();
    let base = model_events();
    for (i, ev) in base.iter().enumerate() {
        r.apply(ev, S * i as u32);
    }
    let evs = [
        start(1016, "server-down-hang"),
        progress(1016, State::Transaction, "mallory.longname", "RETR 1016", 12, 118),
        Event::Fault {
            session: 1016,
            rule: "carrier-lost-mid-retr".into(),
            action: "disconnect".into(),
            point: "body RETR 3 @1016".into(),
        },
        Event::Fault {
            session: 1016,
            rule: "carrier-lost-mid-retr".into(),
            action: "disconnect".into(),
            point: "body RETR 4 @1016".into(),
        },
    ];
    for ev in &evs {
        r.apply(ev, S * 30);
    }
    let header = Header {
        listen: "127.0.0.1:11100".into(),
        upstream: "127.0.0.1:21100".into(),
        seed: 2981755550743193,
        started: Instant::now(),
    };
    (r.model(), header)
}

fn render_with(m: &Model, header: &Header, ui: &UiState, (w, h): (u16, u16)) -> Vec<String> {
    let d = Dashboard { model: m, header, ui, profile: "server-down-hang", paused: false, uptime: S * 83 };
    let mut buf = Buffer::empty(Rect::new(0, 0, w, h));
    d.render(buf.area, &mut buf);
    lines(&buf)
}

/// The number shown right after `name` on some line (its count), if any.
fn count_after(screen: &[String], name: &str) -> Option<String> {
    screen.iter().find_map(|l| {
        let rest = &l[l.find(name)? + name.len()..];
        let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
        Some(digits)
    })
}

#[test]
fn every_size_cuts_text_with_a_mark_and_never_a_number() {
    let (m, header) = crowded();
    for (w, h) in [(60, 15), (80, 24), (120, 35), (200, 50)] {
        let got = render_with(&m, &header, &UiState::default(), (w, h));
        let text = got.join("\n");
        eprintln!("--- {w}x{h} ---\n{text}");
        assert!(text.contains("seed 2981755550743193"), "{w}x{h}: the whole seed:\n{text}");
        // Every outcome count, whole.
        for o in Outcome::ALL {
            let want = m.outcome_count(o).to_string();
            assert_eq!(count_after(&got, o.as_str()).as_deref(), Some(want.as_str()), "{w}x{h}: {o:?}:\n{text}");
        }
        for (name, n) in [("at risk", m.at_risk()), ("duplicates", m.duplicates()), ("faults fired", m.faults_fired())]
        {
            assert_eq!(count_after(&got, name), Some(n.to_string()), "{w}x{h}: {name}:\n{text}");
        }
        // Session 1016 (live, newest, selected by follow mode): its number
        // and counts whole; its rule name whole or cut with a mark.
        let row = got.iter().find(|l| l.contains("▶ 1016 ")).unwrap_or_else(|| panic!("{w}x{h}: row 1016:\n{text}"));
        assert!(row.contains("12/118"), "{w}x{h}: dl/mk whole: {row}");
        for line in &got {
            for (i, _) in line.match_indices("carrier-lo") {
                let shown: String = line[i..].chars().take_while(|c| !c.is_whitespace() && *c != ':').collect();
                assert!(
                    shown == "carrier-lost-mid-retr" || shown.ends_with('…'),
                    "{w}x{h}: a rule name cut without a mark: {shown:?} in {line}"
                );
            }
            // An offset is whole, or not on this line at all.
            if let Some(i) = line.find('@') {
                let digits: String = line[i + 1..].chars().take_while(char::is_ascii_digit).collect();
                assert!(digits == "1016" || digits == "1024", "{w}x{h}: {line}");
            }
        }
        if w >= 80 {
            assert!(text.contains("@1016"), "{w}x{h}: the log shows the offset:\n{text}");
        }
        // The outcomes panel has room for every count (not one row).
        let outcomes = got.iter().filter(|l| l.contains("committed") || l.contains("no-login")).count();
        assert!(outcomes >= 1 && text.contains("clean-quit"), "{w}x{h}:\n{text}");
        // No column stretched with blanks: the fault column is at most its
        // cap (32) plus a space wide.
        let head = got.iter().find(|l| l.contains("dl/mk") && l.contains("outcome")).expect("table header");
        if let (Some(f), Some(o)) = (head.find("fault"), head.find("outcome")) {
            assert!(o - f <= 33, "{w}x{h}: fault column {} wide: {head}", o - f);
        }
    }
}

#[test]
fn a_cut_fault_name_keeps_its_count() {
    let (m, header) = crowded();
    let got = render_with(&m, &header, &UiState::default(), (80, 24));
    let row = got.iter().find(|l| l.contains("▶ 1016 ")).expect("row 1016");
    assert!(row.contains("… +1") || row.contains("carrier-lost-mid-retr +1"), "{row}");
}

#[test]
fn the_filter_shows_matching_rows_and_their_count() {
    let ui = UiState { filter: "CAROL".into(), editing: true, ..UiState::default() };
    let got = render(&model(), &ui, false, (80, 24), whole);
    let text = got.join("\n");
    assert!(got[11].starts_with("╭ sessions · 2 live · 4 recent · /CAROL · 1 match ─"), "{}", got[11]);
    let rows: Vec<&String> = got[13..18].iter().filter(|l| l.trim_matches('│').trim() != "").collect();
    assert_eq!(rows.len(), 1, "{text}");
    assert!(rows[0].starts_with("│▶ 3 ") && rows[0].contains("carol"), "{text}");
    // Typing: the footer shows the text and how to keep or clear it.
    assert!(got[23].starts_with(" /  CAROL▏  user, outcome, fault, state"), "{}", got[23]);
    // By outcome, fault and state too.
    for (filter, want) in [("in-doubt", 1), ("quit-lost", 1), ("trans", 2), ("live", 2), ("zzz", 0)] {
        let ui = UiState { filter: filter.into(), ..UiState::default() };
        let got = render(&model(), &ui, false, (80, 24), whole);
        assert!(got[11].contains(&format!("/{filter} · {want} match ")), "{filter}: {}", got[11]);
        if want == 0 {
            assert!(got[13].contains("no session matches /zzz (Esc clears)"), "{}", got[13]);
        }
    }
}

#[test]
fn a_narrow_screen_keeps_the_match_count() {
    let ui = UiState { filter: "a-rather-long-filter-text".into(), ..UiState::default() };
    let got = render(&model(), &ui, false, (40, 8), render_sessions);
    assert!(got[0].starts_with("╭ sessions · /a-rather-lon… · 0 match ─╮"), "{}", got[0]);
}

#[test]
fn tab_shows_the_chosen_profile_and_its_summary_before_applying() {
    let summary = "the upstream accepts and then never answers: every client hangs until its own timeout";
    let ui = UiState { choice: Some(("server-down-hang".into(), summary.into())), ..UiState::default() };
    let got = render(&model(), &ui, false, (80, 24), whole);
    let footer = &got[23];
    assert!(
        footer.starts_with(" Enter  apply   Esc  cancel   tab  next  profile server-down-hang: the upstream"),
        "{footer}"
    );
    assert!(footer.ends_with('…'), "the summary cut with a mark: {footer}");
    assert!(got[1].contains("profile lost-carrier"), "nothing applied yet: {}", got[1]);
    let wide = render(&model(), &ui, false, (200, 24), whole);
    assert!(wide[23].ends_with(summary), "{}", wide[23]);
}

#[test]
fn the_event_log_keeps_the_newest_entry_on_the_last_row() {
    let mut r = Run::default();
    r.apply(
        &Event::Fault {
            session: 1,
            rule: "a-rule-with-a-long-name".into(),
            action: "disconnect".into(),
            point: "body RETR 12 #5 @123456".into(),
        },
        S,
    );
    r.apply(
        &Event::Fault { session: 2, rule: "short".into(), action: "stall".into(), point: "greeting".into() },
        S * 2,
    );
    let m = r.model();
    let got = render(&m, &UiState::default(), false, (40, 5), render_log);
    assert_lines(
        &got,
        &[
            "╭ events ──────────────────────────────╮",
            "│                                      │",
            "│00:02 #2   fault short: stall at      │",
            "│      greeting                        │",
            "╰──────────────────────────────────────╯",
        ],
    );
    // Taller: the older entry too, its offset wrapped whole to a line of its own.
    let tall = render(&m, &UiState::default(), false, (40, 8), render_log);
    assert_eq!(tall[4], "│      @123456                         │", "{}", tall.join("\n"));
    assert!(tall[1].starts_with("│00:01 #1   fault"), "{}", tall.join("\n"));
}

/// Enter on a row opens that session's view: its transcript, newest line
/// at the bottom, scrollable, closed with Esc.
#[test]
fn enter_opens_the_selected_sessions_transcript() {
    let mut m = model();
    for i in 0..40 {
        m.apply(
            &Event::Transcript { session: 2, line: format!("{:>9.3}s  C: NOOP {i}", i as f64) },
            Default::default(),
            std::time::Duration::from_secs(1),
        );
    }
    m.apply(
        &Event::Transcript { session: 2, line: "   40.000s  C: PASS ***".into() },
        Default::default(),
        std::time::Duration::from_secs(1),
    );
    let mut ui = selected(2);
    let enter = crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Enter);
    assert!(popfault::dashboard::handle_key(&mut ui, &m, enter).is_none());
    assert_eq!(ui.view, Some(2));
    let got = render(&m, &ui, false, (80, 24), whole);
    let text = got.join("\n");
    assert!(got[1].contains("session #2") && got[1].contains("bob") && got[1].contains("live"), "{}", got[1]);
    assert!(text.contains("C: PASS ***"), "the newest line shows:\n{text}");
    assert!(!text.contains("C: NOOP 0 "), "the oldest are scrolled off:\n{text}");
    // Scrolled up: older lines.
    for _ in 0..30 {
        popfault::dashboard::handle_key(&mut ui, &m, crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Up));
    }
    let text = render(&m, &ui, false, (80, 24), whole).join("\n");
    assert!(text.contains("C: NOOP 0"), "scrolled to the start:\n{text}");
    popfault::dashboard::handle_key(&mut ui, &m, crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Esc));
    assert_eq!(ui.view, None);
}
