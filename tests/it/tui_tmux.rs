//! The real dashboard, driven through a real terminal: `popfault demo` runs
//! inside a detached tmux session (100x30, its own server socket so parallel
//! tests and the developer's own tmux never meet), keys go in with
//! `send-keys`, and the screen comes back with `capture-pane`.
//!
//! Skipped with a message when tmux is not installed, unless
//! `POPFAULT_REQUIRE_TMUX=1` (then missing tmux is a failure). Every wait is
//! bounded; every step prints the screen it saw, so a failure shows what
//! was on the terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::support::BIN;
/// Terminal size the dashboard is drawn at.
const WIDTH: u16 = 100;
const HEIGHT: u16 = 30;
/// Longest any single wait may take.
const WAIT: Duration = Duration::from_secs(15);
/// Longest a whole test may take, waits included.
const BUDGET: Duration = Duration::from_secs(50);
/// Time between two looks at the screen.
const POLL: Duration = Duration::from_millis(100);
/// What the shell prints after popfault exits, followed by its exit code.
const EXITED: &str = "POPFAULT-EXITED-";

/// Whether tmux can be used; prints why not (and fails if it is required).
fn tmux_available() -> bool {
    let ok = Command::new("tmux").arg("-V").output().is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("POPFAULT_REQUIRE_TMUX").is_ok_and(|v| v == "1") {
            panic!("tmux is not installed and POPFAULT_REQUIRE_TMUX=1");
        }
        eprintln!("SKIPPED: tmux not installed");
    }
    ok
}

/// A tmux server of our own running one session, killed (with its files
/// removed) when dropped: on success, on failure, on panic.
struct Tmux {
    socket: String,
    session: String,
    dir: PathBuf,
    /// No wait goes past this.
    deadline: Instant,
    /// The server's socket file (tmux leaves it behind on kill-server).
    socket_path: Option<PathBuf>,
}

impl Tmux {
    /// Starts `sh -c "<command> ; echo POPFAULT-EXITED-$?"` in a fresh
    /// 100x30 session whose working directory is a scratch directory
    /// that `command` is given to put files in (it returns the command).
    fn start(tag: &str, command: impl FnOnce(&Path) -> String) -> Tmux {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = format!("popfault-tui-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::SeqCst));
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&unique);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let mut t =
            Tmux { socket: unique.clone(), session: unique, dir, deadline: Instant::now() + BUDGET, socket_path: None };
        let shell = format!("{} ; echo {EXITED}$?", command(&t.dir));
        let (w, h) = (WIDTH.to_string(), HEIGHT.to_string());
        let dir = t.dir.to_str().expect("utf-8 path").to_string();
        // The pane stays after the shell exits, so the summary can be read.
        let out = t.tmux(&[
            "new-session",
            "-d",
            "-s",
            &t.session,
            "-x",
            &w,
            "-y",
            &h,
            "-c",
            &dir,
            "sh",
            "-c",
            &shell,
            ";",
            "set-option",
            "-g",
            "remain-on-exit",
            "on",
        ]);
        assert!(out.status.success(), "tmux new-session failed: {}", String::from_utf8_lossy(&out.stderr));
        let path = t.tmux(&["display-message", "-p", "#{socket_path}"]).stdout;
        let path = String::from_utf8_lossy(&path).trim().to_string();
        t.socket_path = (!path.is_empty()).then(|| PathBuf::from(path));
        eprintln!("tmux -L {} : sh -c {shell:?}", t.socket);
        t
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env_remove("TMUX")
            .env("TERM", "xterm-256color")
            .output()
            .expect("run tmux")
    }

    /// The visible screen, as text.
    fn screen(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The screen with up to 200 lines of scrollback above it.
    fn history(&self) -> String {
        let out = self.tmux(&["capture-pane", "-p", "-S", "-200", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Presses a key (tmux key names: `p`, `Tab`, `Down`, ...).
    fn press(&self, key: &str) {
        let out = self.tmux(&["send-keys", "-t", &self.session, key]);
        assert!(out.status.success(), "send-keys {key}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Polls `look` (the visible screen, or with scrollback) until `done`
    /// holds, at most [`WAIT`] (and never past the test's deadline); prints
    /// and returns the screen that satisfied it, or panics with the last
    /// screen seen. Panics at once if popfault exited unexpectedly.
    fn wait_in(&self, step: &str, look: fn(&Tmux) -> String, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        let until = (start + WAIT).min(self.deadline);
        loop {
            let screen = look(self);
            if done(&screen) {
                eprintln!("--- {step} (after {:?}) ---\n{screen}", start.elapsed());
                return screen;
            }
            if screen.contains(EXITED) {
                panic!("popfault exited while waiting for: {step}\n--- pane ---\n{}", self.history());
            }
            if Instant::now() > until {
                panic!("timed out after {:?} waiting for: {step}\n--- last screen ---\n{screen}", start.elapsed());
            }
            sleep(POLL);
        }
    }

    fn wait(&self, step: &str, done: impl Fn(&str) -> bool) -> String {
        self.wait_in(step, Tmux::screen, done)
    }

    /// Presses q and waits for the shell to report popfault's exit code;
    /// returns everything on the pane, scrollback included.
    fn quit(&self) -> String {
        self.press("q");
        let all = self.wait_in("q: popfault exited", Tmux::history, |s| s.contains(EXITED));
        assert!(all.contains(&format!("{EXITED}0")), "popfault did not exit 0:\n{all}");
        all
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
        if let Some(socket) = &self.socket_path {
            let _ = std::fs::remove_file(socket);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A single-quoted shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The header: the first three rows (the bordered title bar).
fn header(screen: &str) -> String {
    screen.lines().take(3).collect::<Vec<_>>().join("\n")
}

/// The footer: the last non-empty row, without trailing blanks.
fn footer(screen: &str) -> &str {
    screen.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim_end()
}

/// The word after `key` in the header (`profile` → its name).
fn header_value(screen: &str, key: &str) -> Option<String> {
    let h = header(screen);
    let words: Vec<&str> = h.split_whitespace().collect();
    words.windows(2).find(|w| w[0] == key).map(|w| w[1].trim_matches('│').to_string())
}

/// Whether the dashboard is fully drawn (title, header facts and footer).
fn drawn(screen: &str) -> bool {
    let h = header(screen);
    h.contains("popfault") && h.contains("· up ") && footer(screen).contains("quit") && screen.contains("sessions")
}

/// The built-in profile names, from `popfault profiles`.
fn builtin_names() -> Vec<String> {
    let out = Command::new(BIN).arg("profiles").output().expect("popfault profiles");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// The sessions-table row of session `n`: `│  4     127.0.0.1:...` or
/// `│▶ 4 ...` when selected.
fn session_row(screen: &str, n: u64) -> Option<&str> {
    screen.lines().find(|l| {
        let t = l.trim_start_matches('│').trim_start_matches('▶').trim_start();
        t.split_whitespace().next() == Some(&n.to_string()) && l.contains("127.0.0.1:")
    })
}

/// The number of the table's first row.
fn first_row(screen: &str) -> Option<u64> {
    let row = screen.lines().find(|l| l.starts_with('│') && l.contains("127.0.0.1:") && !l.contains(" → "))?;
    row.trim_start_matches('│').trim_start_matches('▶').split_whitespace().next()?.parse().ok()
}

/// The selected session's number (the row marked `▶`).
fn selected(screen: &str) -> Option<u64> {
    let row = screen.lines().find(|l| l.starts_with("│▶"))?;
    row.trim_start_matches("│▶").split_whitespace().next()?.parse().ok()
}

/// Header, p (pause / resume), tab (next built-in profile), q (summary).
#[test]
fn dashboard_pause_profile_and_quit_in_tmux() {
    if !tmux_available() {
        return;
    }
    let began = Instant::now();
    let names = builtin_names();
    assert!(names.iter().any(|n| n == "demo") && names.len() > 1, "built-ins: {names:?}");
    let t = Tmux::start("keys", |_| format!("{} demo --seed 7", quote(BIN)));

    // 1. The dashboard is drawn, with the run's facts in the header.
    let s = t.wait("1. dashboard drawn", |s| {
        drawn(s) && header(s).contains("● faults on") && header_value(s, "profile").as_deref() == Some("demo")
    });
    assert_eq!(header_value(&s, "seed").as_deref(), Some("7"), "the seed given with --seed:\n{s}");
    assert_eq!(s.lines().count(), HEIGHT as usize, "one frame fills the 100x30 terminal:\n{s}");
    assert!(s.lines().all(|l| l.chars().count() <= WIDTH as usize));

    // 2. p pauses faults, p again resumes them.
    t.press("p");
    let s = t.wait("2a. p: faults PAUSED", |s| header(s).contains("faults PAUSED"));
    assert!(!header(&s).contains("faults on"), "{s}");
    assert!(footer(&s).contains("resume"), "the footer offers resume while paused:\n{s}");
    t.press("p");
    let s = t.wait("2b. p again: faults on", |s| header(s).contains("● faults on"));
    assert!(!header(&s).contains("PAUSED"), "{s}");

    // 3. Tab: a profile is chosen, shown with its summary, and nothing
    // changes until Enter applies it.
    t.press("Tab");
    let s = t.wait("3a. tab: a profile chosen, not applied", |s| {
        footer(s).contains("Enter  apply") && footer(s).contains("profile ")
    });
    assert_eq!(header_value(&s, "profile").as_deref(), Some("demo"), "not applied yet:\n{s}");
    let chosen = footer(&s).split("profile ").nth(1).and_then(|r| r.split(':').next()).expect("a name").to_string();
    assert!(names.contains(&chosen) && chosen != "demo", "'{chosen}' is not another built-in ({names:?}):\n{s}");
    t.press("Enter");
    let s = t.wait("3b. Enter: the profile applied", |s| {
        header_value(s, "profile").is_some_and(|p| p != "demo") && footer(s).contains("new sessions:")
    });
    assert_eq!(header_value(&s, "profile").as_deref(), Some(chosen.as_str()), "{s}");
    assert!(footer(&s).contains(&format!("new sessions: {chosen}")), "the footer names the new profile:\n{s}");
    // Esc cancels a choice.
    t.press("Tab");
    t.wait("3c. tab again: a choice", |s| footer(s).contains("Enter  apply"));
    t.press("Escape");
    let s = t.wait("3d. Esc: cancelled", |s| footer(s).contains("profile unchanged"));
    assert_eq!(header_value(&s, "profile").as_deref(), Some(chosen.as_str()), "{s}");

    // 5. q leaves the dashboard; the summary is printed on the normal screen.
    let all = t.quit();
    eprintln!("--- 5. after q (with scrollback) ---\n{all}");
    assert!(all.contains("popfault summary"), "summary printed:\n{all}");
    assert!(all.contains("invariant") && all.contains("no message lost"), "invariant printed:\n{all}");
    assert!(!t.screen().contains("· up "), "the alternate screen was left:\n{}", t.screen());
    eprintln!("dashboard_pause_profile_and_quit_in_tmux took {:?}", began.elapsed());
}

/// The session numbers of the table's rows, top first.
fn row_ids(screen: &str) -> Vec<u64> {
    screen
        .lines()
        .filter(|l| l.contains("127.0.0.1:"))
        .filter_map(|l| l.trim_start_matches('│').trim_start_matches('▶').split_whitespace().next()?.parse().ok())
        .collect()
}

/// Follow mode: on at start (the newest row selected, as sessions come),
/// off once a row is chosen (the selection stays on that session as rows
/// re-sort, and k on it once it ended cuts nothing), on again with f.
#[test]
fn dashboard_follows_the_newest_until_a_row_is_chosen_in_tmux() {
    if !tmux_available() {
        return;
    }
    let t = Tmux::start("follow", |_| format!("{} demo --seed 7", quote(BIN)));
    let top_selected = |s: &str| row_ids(s).first().is_some_and(|&top| selected(s) == Some(top));
    let s =
        t.wait("1. following: the newest row selected", |s| drawn(s) && s.contains(" following · ") && top_selected(s));
    let first = selected(&s).expect("a selected row");
    t.wait("1b. a newer session came: the selection moved to it", |s| {
        s.contains(" following · ") && top_selected(s) && selected(s).is_some_and(|n| n > first)
    });

    t.press("Down");
    let s = t.wait("2. Down: follow off", |s| s.contains("· f follow ") && selected(s).is_some());
    let n = selected(&s).expect("a selected row");
    let s = t.wait(&format!("2b. #{n} still selected, ended, newer rows above it"), |s| {
        selected(s) == Some(n)
            && row_ids(s).first().is_some_and(|&top| top > n)
            && session_row(s, n).is_some_and(|r| !r.contains("● live"))
    });
    assert!(s.contains("· f follow "), "{s}");

    t.press("k");
    let s =
        t.wait(&format!("3. k on the ended #{n}"), |s| footer(s).contains(&format!("session #{n} has already ended")));
    assert!(footer(&s).ends_with("nothing cut"), "{s}");
    assert!(!s.contains("manual"), "nothing was cut:\n{s}");

    t.press("f");
    t.wait("4. f: following again", |s| s.contains(" following · ") && top_selected(s) && selected(s) != Some(n));
    t.quit();
}

/// k cuts the selected live session: its outcome names the fault `manual`.
#[test]
fn dashboard_k_cuts_the_selected_live_session_in_tmux() {
    if !tmux_available() {
        return;
    }
    let began = Instant::now();
    // A greeting held for a minute keeps every session live (AUTHORIZATION,
    // no greeting yet) well past this test.
    let t = Tmux::start("cut", |dir| {
        let file = dir.join("hold-greeting.toml");
        std::fs::write(
            &file,
            "name = \"hold-greeting\"\nsummary = \"greeting held for a minute\"\n\n[[rule]]\nname = \"hold\"\n\
             when = \"greeting\"\nactions = [{ do = \"stall\", ms = 60000 }]\n",
        )
        .expect("write profile");
        format!("{} demo --seed 7 --profile {}", quote(BIN), quote(file.to_str().expect("utf-8 path")))
    });

    // 1. Drawn, with live sessions in the table.
    let s = t.wait("4a. dashboard drawn with live sessions", |s| drawn(s) && s.contains("● live"));
    assert_eq!(header_value(&s, "profile").as_deref(), Some("hold-greeting"), "{s}");
    assert_eq!(header_value(&s, "seed").as_deref(), Some("7"), "{s}");
    assert!(!s.contains("manual"), "nothing cut yet:\n{s}");

    // 4. Select a live row and press k. A session can end between the
    // selection and the key (not with this profile, but be sure): retry.
    let mut cut = None;
    for attempt in 1..=3 {
        // With nothing selected Down selects the top row; Up keeps it
        // there: the newest session, live ones are listed first.
        t.press("Down");
        t.press("Up");
        // Read once both keys are applied (the top row selected): a screen
        // caught between Down and Up shows the second row, which Up leaves.
        let s = t.wait(&format!("4b. a live session selected (attempt {attempt})"), |s| {
            selected(s)
                .is_some_and(|n| first_row(s) == Some(n) && session_row(s, n).is_some_and(|r| r.contains("● live")))
        });
        let n = selected(&s).expect("a selected row");
        t.press("k");
        // The footer flashes "cut session #n", or why not ("session #n has
        // already ended" / "is no longer live").
        let done = format!("cut session #{n}");
        let s = t.wait(&format!("4c. k on session #{n}"), |s| {
            footer(s).ends_with(&done) || footer(s).contains(&format!("session #{n} "))
        });
        if footer(&s).ends_with(&done) {
            cut = Some(n);
            break;
        }
    }
    let n = cut.expect("k cut a live session within 3 attempts");
    let s = t.wait(&format!("4d. session #{n} ended by the manual cut"), |s| {
        session_row(s, n).is_some_and(|r| r.contains("manual") && !r.contains("● live"))
    });
    assert!(
        s.lines().any(|l| l.contains(&format!("#{n} ")) && l.contains("manual")),
        "the event log names the manual cut of #{n}:\n{s}"
    );

    // 5. q: the summary counts the manual fault.
    let all = t.quit();
    eprintln!("--- 5. after q (with scrollback) ---\n{all}");
    assert!(all.contains("popfault summary"), "summary printed:\n{all}");
    assert!(all.contains("invariant") && all.contains("no message lost"), "invariant printed:\n{all}");
    assert!(all.lines().any(|l| l.trim_start().starts_with("manual")), "the summary counts the manual fault:\n{all}");
    eprintln!("dashboard_k_cuts_the_selected_live_session_in_tmux took {:?}", began.elapsed());
}

/// SIGHUP (a terminal closing), SIGTERM and SIGQUIT under the dashboard:
/// the terminal is restored, the summary printed, exit 0.
#[test]
fn dashboard_restores_the_terminal_on_hangup_term_and_quit_in_tmux() {
    if !tmux_available() {
        return;
    }
    for sig in ["HUP", "TERM", "QUIT"] {
        // The inner shell's pid becomes popfault's with exec.
        let t = Tmux::start(&format!("sig-{sig}"), |dir| {
            let pid = quote(dir.join("pid").to_str().expect("utf-8 path"));
            format!("sh -c {}", quote(&format!("echo $$ > {pid}; exec {} demo --seed 7", quote(BIN))))
        });
        t.wait(&format!("SIG{sig}: dashboard drawn"), drawn);
        let pid = std::fs::read_to_string(t.dir.join("pid")).expect("pid file");
        let kill = Command::new("kill").args([&format!("-{sig}"), pid.trim()]).status().expect("kill");
        assert!(kill.success());
        let all = t.wait_in(&format!("SIG{sig}: popfault exited"), Tmux::history, |s| s.contains(EXITED));
        assert!(all.contains(&format!("{EXITED}0")), "SIG{sig}: popfault did not exit 0:\n{all}");
        assert!(all.contains("popfault summary"), "SIG{sig}: summary printed:\n{all}");
        assert!(!t.screen().contains("· up "), "SIG{sig}: the alternate screen was left:\n{}", t.screen());
    }
}
