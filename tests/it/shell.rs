//! The shell under stress, through the real binary: an events sink that
//! fails or stalls, the drain after a signal, every ending signal, a
//! connection flood's logs, and the listen backlog.
//!
//! The upstream is `popfault serve` (the embedded server) in its own
//! process, so every test is plain blocking code with bounded waits.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::proc::Proc;

/// Every wait is bounded by this.
const LIMIT: Duration = Duration::from_secs(20);
/// The exit code of a run whose events file is incomplete (docs/RELIABILITY.md).
const EVENTS_INCOMPLETE: i32 = 3;

/// `popfault serve` on an ephemeral port.
fn upstream(users: u32) -> (Proc, SocketAddr) {
    let users = users.to_string();
    let mut s = Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--users", &users, "--messages", "2"]);
    let addr = s.addr_after("POP3 server on");
    (s, addr)
}

/// A POP3 conversation, one line at a time.
struct Pop {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Pop {
    /// Connects and reads the greeting.
    fn connect(addr: SocketAddr) -> Pop {
        let s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(LIMIT)).unwrap();
        let mut p = Pop { w: s.try_clone().unwrap(), r: BufReader::new(s) };
        let greeting = p.line();
        assert!(greeting.starts_with("+OK"), "greeting: {greeting:?}");
        p
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.r.read_line(&mut l).expect("a line");
        l
    }

    fn cmd(&mut self, c: &str) -> String {
        self.w.write_all(format!("{c}\r\n").as_bytes()).expect("send");
        self.line()
    }

    fn login(addr: SocketAddr, user: &str) -> Pop {
        let mut p = Pop::connect(addr);
        assert!(p.cmd(&format!("USER {user}")).starts_with("+OK"));
        assert!(p.cmd("PASS secret").starts_with("+OK"));
        p
    }
}

/// A whole session: log in, STAT, QUIT.
fn full_session(addr: SocketAddr, user: &str) {
    let mut p = Pop::login(addr, user);
    assert!(p.cmd("STAT").starts_with("+OK"));
    assert!(p.cmd("QUIT").starts_with("+OK"));
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("popfault-shell-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Session numbers of the events file's `session_start` and `session_end`
/// lines; panics unless the last line is the summary.
fn starts_and_ends(events: &Path) -> (Vec<u64>, Vec<u64>) {
    let text = std::fs::read_to_string(events).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.last().is_some_and(|l| l.contains("\"event\":\"summary\"")), "{text}");
    let mut starts = Vec::new();
    let mut ends = Vec::new();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        match v["event"].as_str() {
            Some("session_start") => starts.push(v["session"].as_u64().unwrap()),
            Some("session_end") => ends.push(v["session"].as_u64().unwrap()),
            _ => {}
        }
    }
    starts.sort_unstable();
    ends.sort_unstable();
    (starts, ends)
}

/// The `sessions` figure of the summary table.
fn summary_sessions(stdout: &str) -> u64 {
    let line = stdout.lines().find(|l| l.trim_start().starts_with("sessions ")).unwrap_or_else(|| panic!("{stdout}"));
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

/// `--events /dev/full`: one warning, the run goes on, and the summary
/// still reaches stdout with the documented exit code.
#[test]
fn events_to_dev_full_warn_once_and_the_summary_still_prints() {
    let (_up, up) = upstream(2);
    let (p, addr) = Proc::proxy(up, &["--drain", "1", "--events", "/dev/full"]);
    for _ in 0..5 {
        full_session(addr, "user1");
    }
    // The run went on after the failure: a session still relays.
    thread::sleep(Duration::from_millis(300));
    full_session(addr, "user2");
    p.signal("TERM");
    let end = p.wait(LIMIT);
    assert_eq!(end.code, Some(EVENTS_INCOMPLETE), "{end:?}");
    assert!(end.stdout.contains("popfault summary"), "{end:?}");
    assert_eq!(summary_sessions(&end.stdout), 6, "every session counted: {}", end.stdout);
    assert!(end.stdout.contains("events file incomplete"), "{}", end.stdout);
    let warnings = end.stderr.lines().filter(|l| l.contains("cannot write events")).count();
    assert_eq!(warnings, 1, "one warning, then only a count:\n{}", end.stderr);
    assert!(end.stderr.contains("No space left on device"), "{}", end.stderr);
    assert!(!end.stderr.contains("panicked"), "{}", end.stderr);
}

/// A FIFO whose reader never reads fills up; shutdown still ends within
/// the drain and a few seconds, with the summary.
#[test]
fn a_stalled_events_fifo_cannot_hold_up_shutdown() {
    let dir = temp_dir("fifo-stalled");
    let fifo = dir.join("events.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    // Opened read-write (Linux never blocks on that): a reader that never reads.
    let _reader = std::fs::OpenOptions::new().read(true).write(true).open(&fifo).expect("open the fifo");
    let (_up, up) = upstream(4);
    let (p, addr) = Proc::proxy(up, &["--drain", "0.5", "--events", fifo.to_str().unwrap()]);
    // Far more than a pipe's 64 KiB of event lines.
    let workers: Vec<_> = (1..=4)
        .map(|u| {
            thread::spawn(move || {
                for _ in 0..100 {
                    full_session(addr, &format!("user{u}"));
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("sessions relayed while the events sink is stalled");
    }
    let t = Instant::now();
    p.signal("TERM");
    let end = p.wait(Duration::from_secs(15));
    eprintln!("stalled fifo: ended {:?} after SIGTERM", t.elapsed());
    assert_eq!(end.code, Some(EVENTS_INCOMPLETE), "{end:?}");
    assert!(end.stdout.contains("popfault summary"), "{end:?}");
    assert_eq!(summary_sessions(&end.stdout), 400, "{}", end.stdout);
    assert!(end.stdout.contains("events file incomplete"), "{}", end.stdout);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A FIFO nobody opened for reading blocks neither start-up nor shutdown.
#[test]
fn an_events_fifo_without_a_reader_blocks_neither_start_nor_shutdown() {
    let dir = temp_dir("fifo-noreader");
    let fifo = dir.join("events.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().expect("mkfifo").success());
    let (_up, up) = upstream(1);
    let (p, addr) = Proc::proxy(up, &["--drain", "0.5", "--events", fifo.to_str().unwrap()]);
    full_session(addr, "user1");
    p.signal("TERM");
    let end = p.wait(Duration::from_secs(15));
    assert_eq!(end.code, Some(EVENTS_INCOMPLETE), "{end:?}");
    assert!(end.stdout.contains("popfault summary"), "{end:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// After SIGTERM the listener is closed at once: a new client is refused
/// while a live session still has its drain time, and finishes in it.
#[test]
fn after_sigterm_new_connects_are_refused_while_a_session_drains() {
    let dir = temp_dir("refuse");
    let events = dir.join("events.jsonl");
    let (_up, up) = upstream(1);
    let (mut p, addr) = Proc::proxy(up, &["--drain", "60", "--events", events.to_str().unwrap()]);
    let mut live = Pop::login(addr, "user1");
    p.signal("TERM");
    p.line_with("draining");
    match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(s) => panic!("a connect after SIGTERM was accepted: {:?}", s.local_addr()),
    }
    // The live session was not cut: it goes on and ends cleanly.
    assert!(live.cmd("STAT").starts_with("+OK"));
    assert!(live.cmd("QUIT").starts_with("+OK"));
    drop(live);
    // Its end ends the drain long before the 60 s.
    let end = p.wait(LIMIT);
    assert_eq!(end.code, Some(0), "{end:?}");
    assert!(end.stdout.contains("popfault summary"), "{end:?}");
    let text = std::fs::read_to_string(&events).unwrap();
    let session_end = text.lines().find(|l| l.contains("\"session_end\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(session_end.contains("\"outcome\":\"clean-quit\""), "{session_end}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A second SIGTERM (or Ctrl-C) during the drain ends it now: live
/// sessions are cut and the summary printed.
#[test]
fn a_second_signal_ends_the_drain_now() {
    let dir = temp_dir("second");
    let events = dir.join("events.jsonl");
    let (_up, up) = upstream(1);
    let (mut p, addr) = Proc::proxy(up, &["--drain", "300", "--events", events.to_str().unwrap()]);
    let _live = Pop::login(addr, "user1");
    p.signal("TERM");
    p.line_with("draining");
    p.signal("INT");
    let end = p.wait(LIMIT);
    assert_eq!(end.code, Some(0), "{end:?}");
    assert!(end.stdout.contains("popfault summary"), "{end:?}");
    let text = std::fs::read_to_string(&events).unwrap();
    let session_end = text.lines().find(|l| l.contains("\"session_end\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(session_end.contains("cut at shutdown"), "{session_end}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// SIGHUP (a closing terminal), SIGQUIT, SIGUSR1 and SIGUSR2 end the run as
/// SIGTERM does: summary on stdout, exit 0, and every session that started
/// has its end in the events file.
#[test]
fn hangup_quit_and_user_signals_end_the_run_with_a_summary() {
    let (_up, up) = upstream(2);
    for sig in ["HUP", "QUIT", "USR1", "USR2"] {
        let dir = temp_dir(&format!("sig-{sig}"));
        let events = dir.join("events.jsonl");
        let (mut p, addr) = Proc::proxy(up, &["--drain", "0.5", "--events", events.to_str().unwrap()]);
        full_session(addr, "user1");
        let _live = Pop::login(addr, "user2");
        p.signal(sig);
        p.line_with("stopping");
        let end = p.wait(LIMIT);
        assert_eq!((end.code, end.signal), (Some(0), None), "SIG{sig}: {end:?}");
        assert!(end.stdout.contains("popfault summary"), "SIG{sig}: {end:?}");
        let (starts, ends) = starts_and_ends(&events);
        assert_eq!(starts, vec![1, 2], "SIG{sig}");
        assert_eq!(starts, ends, "SIG{sig}: every session_start has its session_end");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// A flood past --max-sessions: the repeated warning is one line per
/// interval with a count, and the counts add up to every client turned away.
#[test]
fn a_flood_past_max_sessions_logs_counts_not_a_line_per_client() {
    const FLOOD: usize = 2000;
    let (_up, up) = upstream(10);
    let (p, addr) = Proc::proxy(up, &["--drain", "0", "--max-sessions", "10"]);
    let held: Vec<Pop> = (1..=10).map(|u| Pop::login(addr, &format!("user{u}"))).collect();
    let floods: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                for _ in 0..FLOOD / 4 {
                    let mut s = TcpStream::connect(addr).expect("connect");
                    s.set_read_timeout(Some(LIMIT)).unwrap();
                    let mut got = String::new();
                    let _ = s.read_to_string(&mut got);
                    assert!(got.starts_with("-ERR [SYS/TEMP]"), "turned away: {got:?}");
                }
            })
        })
        .collect();
    for f in floods {
        f.join().expect("every flooding client was turned away");
    }
    p.signal("TERM");
    let end = p.wait(LIMIT);
    drop(held);
    assert_eq!(end.code, Some(0), "{end:?}");
    let lines: Vec<&str> = end.stderr.lines().filter(|l| l.contains("too many sessions")).collect();
    eprintln!("flood of {FLOOD}: {} warning lines", lines.len());
    assert!(lines.len() < 100, "{} lines for {FLOOD} clients:\n{}", lines.len(), lines.join("\n"));
    let counted: usize = lines
        .iter()
        .map(|l| match l.split_once("(and ") {
            Some((_, rest)) => rest.split(' ').next().and_then(|n| n.parse::<usize>().ok()).expect("a count"),
            None => 1,
        })
        .sum();
    assert_eq!(counted, FLOOD, "every client turned away is counted:\n{}", lines.join("\n"));
    assert!(!end.stderr.contains("\x1b["), "no colour on a pipe");
}

/// Logs written to a pipe are plain text: no ANSI colour codes.
#[test]
fn logs_on_a_pipe_carry_no_colour() {
    let (_up, up) = upstream(1);
    let (mut p, addr) = Proc::proxy(up, &["-v", "--drain", "0"]);
    full_session(addr, "user1");
    p.line_with("session ended");
    p.signal("TERM");
    let end = p.wait(LIMIT);
    assert!(end.stderr.contains("INFO"), "{}", end.stderr);
    assert!(!end.stderr.contains('\x1b'), "{:?}", end.stderr);
}

/// `--backlog` is an option of `proxy` and `serve`, and reaches the
/// listening socket (checked with `ss` where it is installed).
#[test]
fn the_listen_backlog_is_an_option_with_a_large_default() {
    for cmd in ["proxy", "serve"] {
        let out = Command::new(crate::support::BIN).args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(help.contains("--backlog"), "{cmd} --help:\n{help}");
    }
    let (_up, up) = upstream(1);
    let (p, addr) = Proc::proxy(up, &["--drain", "0", "--backlog", "1500"]);
    full_session(addr, "user1");
    let (d, daddr) = Proc::proxy(up, &["--drain", "0"]);
    let (s, saddr) = {
        let mut s = Proc::spawn(&["serve", "--listen", "127.0.0.1:0", "--backlog", "1234"]);
        let a = s.addr_after("POP3 server on");
        (s, a)
    };
    for (addr, want) in [(addr, Some(1500)), (daddr, None), (saddr, Some(1234))] {
        match listen_backlog(addr) {
            None => eprintln!("SKIPPED: ss not available, backlog of {addr} not read"),
            Some(n) => match want {
                Some(w) => assert_eq!(n, w, "{addr}"),
                None => assert!(n >= 1024, "default backlog {n}"),
            },
        }
    }
    for r in [p, d, s] {
        r.signal("TERM");
        assert_eq!(r.wait(LIMIT).code, Some(0));
    }
}

/// The backlog of the socket listening on `addr`, from `ss` (its Send-Q
/// column for a listening socket).
fn listen_backlog(addr: SocketAddr) -> Option<u64> {
    let out = Command::new("ss").args(["-ltnH", &format!("sport = :{}", addr.port())]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// `--transcripts DIR` through the real binary: each session leaves its
/// file, in order, with the password shown as `***`.
#[test]
fn transcripts_are_written_one_file_a_session() {
    let (_up, up) = upstream(2);
    let dir = temp_dir("transcripts");
    let (p, addr) = Proc::proxy(up, &["--drain", "1", "--transcripts", dir.to_str().expect("utf-8 path")]);
    full_session(addr, "user1");
    full_session(addr, "user2");
    thread::sleep(Duration::from_millis(200));
    p.signal("TERM");
    let end = p.wait(LIMIT);
    assert_eq!(end.code, Some(0), "{end:?}");
    assert!(end.stderr.contains("2 transcript(s) written"), "{}", end.stderr);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let first = std::fs::read_to_string(&files[0]).unwrap();
    for want in ["S: +OK", "C: USER user1", "C: PASS ***", "C: STAT", "C: QUIT", "end: clean-quit"] {
        assert!(first.contains(want), "{want:?} in:\n{first}");
    }
    assert!(!first.contains("PASS secret"), "{first}");
    assert!(std::fs::read_to_string(&files[1]).unwrap().contains("C: USER user2"));
}
