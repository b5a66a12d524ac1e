//! `popfault demo --headless` for every built-in profile: the invariants
//! hold (exit 0), and under lost-carrier download-and-delete gets
//! duplicates while the UIDL-tracking client gets none.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use popfault::codec::Command as Pop3;
use popfault::faults::builtin::{BUILTIN, builtin};
use popfault::faults::{Engine, Facts};
use popfault::session::State;

/// Runs the demo; returns (exit code, stdout).
fn demo(profile: &str, seed: u64, secs: &str) -> (Option<i32>, String) {
    let out = Command::new(crate::support::BIN)
        .args(["demo", "--headless", "--duration", secs, "--seed", &seed.to_string(), "--profile", profile])
        .args(["--users", "4", "--messages", "8"])
        .output()
        .expect("run the demo");
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The duplicate count a workload's line reports.
fn duplicates(out: &str, workload: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(workload))
        .unwrap_or_else(|| panic!("no {workload} line:\n{out}"));
    let after = line.split("duplicates").nth(1).expect("a duplicates figure");
    after.trim().parse().expect("a number")
}

#[test]
fn every_builtin_profile_keeps_the_invariants() {
    // Two at a time: the machine has two cores.
    let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
    for pair in names.chunks(2) {
        let runs: Vec<_> = pair
            .iter()
            .map(|name| {
                let name = name.to_string();
                std::thread::spawn(move || (name.clone(), demo(&name, 11, "3")))
            })
            .collect();
        for r in runs {
            let (name, (code, out)) = r.join().expect("demo thread");
            assert_eq!(code, Some(0), "demo under {name} broke an invariant:\n{out}");
            assert!(out.contains("[ok] no message lost"), "{name}:\n{out}");
            assert!(!out.contains("BROKEN"), "{name}:\n{out}");
            assert_eq!(duplicates(&out, "leave-on-server"), 0, "{name}: the UIDL client never downloads twice");
        }
    }
}

/// The first seed under which sessions 1 to 4 all lose the carrier in the
/// 3rd RETR: every first session of a mailbox is cut, whichever client
/// gets which session number.
fn seed_cutting_first_sessions() -> u64 {
    let p = Arc::new(builtin("lost-carrier").unwrap().unwrap());
    let facts =
        |n: u64| Facts { state: State::Transaction, retrieved: n, deleted: n, run_elapsed: Duration::ZERO, seq: n };
    (0..100_000)
        .find(|&seed| {
            (1..=4).all(|session| {
                let mut e = Engine::new(p.clone(), seed, session);
                (1..=3)
                    .map(|n| e.plan_body(&Pop3::Retr(n), Some(2048), &facts(n as u64)))
                    .last()
                    .is_some_and(|c| !c.is_empty())
            })
        })
        .expect("a seed")
}

#[test]
fn lost_carrier_duplicates_download_and_delete_only() {
    let seed = seed_cutting_first_sessions();
    let (code, out) = demo("lost-carrier", seed, "4");
    assert_eq!(code, Some(0), "{out}");
    assert!(duplicates(&out, "download-and-delete") > 0, "the KB Q141343 case duplicates:\n{out}");
    assert_eq!(duplicates(&out, "leave-on-server"), 0, "{out}");
    assert!(out.contains("rolled-back"), "{out}");
}

/// Reads one line (a status line or a line of a listing), CRLF stripped.
fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("a line from the proxy");
    line.trim_end().to_string()
}

/// Sends one POP3 command; returns its status line.
fn command(r: &mut BufReader<TcpStream>, cmd: &str) -> String {
    r.get_mut().write_all(format!("{cmd}\r\n").as_bytes()).expect("send");
    read_line(r)
}

/// Reads a multi-line answer's lines up to the terminating ".".
fn read_multiline(r: &mut BufReader<TcpStream>) {
    while read_line(r) != "." {}
}

/// One session as `user`: USER/PASS, then `work`, then QUIT. `None` when it
/// did not get past PASS (refused in a server-down window, or the mailbox
/// locked by the demo's own client).
fn pop3_session(addr: &str, user: &str, work: impl FnOnce(&mut BufReader<TcpStream>)) -> Option<String> {
    let stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut r = BufReader::new(stream);
    let mut greeting = String::new();
    if r.read_line(&mut greeting).ok()? == 0 || !greeting.starts_with("+OK") {
        return None;
    }
    assert!(command(&mut r, &format!("USER {user}")).starts_with("+OK"));
    if !command(&mut r, "PASS secret").starts_with("+OK") {
        return None;
    }
    work(&mut r);
    Some(command(&mut r, "QUIT"))
}

#[test]
fn your_own_client_can_join_the_demo() {
    let mut child = Command::new(crate::support::BIN)
        .args(["demo", "--headless", "--duration", "5", "--listen", "127.0.0.1:0", "--seed", "5"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the demo");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    // The address, the users and the password are printed at start.
    let mut said = String::new();
    let join = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).expect("stderr") > 0, "no join line:\n{said}");
        said.push_str(&line);
        if line.contains("join") {
            break line;
        }
    };
    assert!(join.contains("user user5") && join.contains("password secret") && join.contains("user1"), "{join}");
    // "… at 127.0.0.1:PORT: user …"
    let addr = join.split(" at ").nth(1).and_then(|s| s.split(": ").next()).unwrap_or_default().to_string();
    assert!(addr.parse::<std::net::SocketAddr>().is_ok_and(|a| a.port() != 0), "{addr} from {join}");

    // The visitor's own mailbox: USER/PASS/STAT/QUIT. Retried: the demo
    // starts in a server-down window.
    let quit = (0..60)
        .find_map(|_| {
            let r = pop3_session(&addr, "user5", |r| assert!(command(r, "STAT").starts_with("+OK")));
            if r.is_none() {
                std::thread::sleep(Duration::from_millis(100));
            }
            r
        })
        .expect("a session as user5 within 6 s");
    assert!(quit.starts_with("+OK") || quit.is_empty(), "{quit}");
    // A demo user's mailbox, shared with the demo's download-and-delete
    // client: take one message for good. The demo must not call it lost.
    let _ = (0..20).find_map(|_| {
        let r = pop3_session(&addr, "user1", |r| {
            if command(r, "RETR 1").starts_with("+OK") {
                read_multiline(r);
                command(r, "DELE 1");
            }
        });
        if r.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        r
    });

    let out = child.wait_with_output().expect("the demo ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let visitors = stdout.lines().find(|l| l.contains("your own clients")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(visitors.contains("user5"), "the visitor's session is in the summary: {visitors}");
    assert!(stdout.contains("[ok] no message lost"), "{stdout}");
    assert!(!stdout.contains("BROKEN"), "{stdout}");
}

/// Share of the run's sessions that downloaded something (in full or in
/// part), from the events file's `session_end` lines: the demo is meant to
/// show downloads, not empty mailboxes.
fn download_share(events: &std::path::Path) -> (usize, usize) {
    let text = std::fs::read_to_string(events).expect("the events file");
    let ends: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "session_end")
        .collect();
    let downloading =
        ends.iter().filter(|e| e["downloaded"].as_u64() > Some(0) || e["cut_midway"].as_u64() > Some(0)).count();
    (downloading, ends.len())
}

#[test]
fn most_demo_sessions_download_mail() {
    let events = std::env::temp_dir().join(format!("popfault-demo-share-{}.jsonl", std::process::id()));
    let out = Command::new(crate::support::BIN)
        .args(["demo", "--headless", "--duration", "10", "--seed", "1", "--events"])
        .arg(&events)
        .output()
        .expect("run the demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let (downloading, sessions) = download_share(&events);
    let _ = std::fs::remove_file(&events);
    // Sessions refused in the server-down window (2 s of the first 10) can
    // download nothing; most of the rest should.
    assert!(sessions >= 20, "{sessions} sessions in 10 s:\n{stdout}");
    assert!(downloading * 2 > sessions, "{downloading} of {sessions} sessions downloaded:\n{stdout}");
    assert!(duplicates(&stdout, "download-and-delete") > 0, "{stdout}");
    assert_eq!(duplicates(&stdout, "leave-on-server"), 0, "{stdout}");
    assert!(!stdout.contains("BROKEN"), "{stdout}");
}
