//! Faults over real sockets: every built-in profile against the embedded
//! server and client, byte precision, rst/fin/silent, seeded replay.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;
use popfault::client::{ClientError, Mode, Pop3Client, UidMemory, WorkloadConfig, run_session};
use popfault::codec::Command;
use popfault::events::Event;
use popfault::faults::{Engine, Facts, Profile};
use popfault::session::{Outcome, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SIZE: usize = 2000;

fn dnd(user: &str) -> WorkloadConfig {
    WorkloadConfig {
        user: user.into(),
        password: "secret".into(),
        mode: Mode::DownloadAndDelete,
        timeout: Duration::from_secs(10),
        max_messages: None,
    }
}

fn facts(seq: u64, retrieved: u64) -> Facts {
    Facts { state: State::Transaction, retrieved, deleted: retrieved, run_elapsed: Duration::ZERO, seq }
}

/// The first seed under which session 1's engine plans a body cut on the
/// `nth` RETR (so a probabilistic built-in is tested as shipped).
fn seed_cutting_retr(p: &Profile, nth: u32) -> (u64, u64) {
    let p = Arc::new(p.clone());
    for seed in 0..10_000 {
        let mut e = Engine::new(p.clone(), seed, 1);
        let mut cut = None;
        for n in 1..=nth {
            let cuts = e.plan_body(&Command::Retr(n), Some(SIZE as u64), &facts(n as u64, n as u64 - 1));
            if n == nth {
                cut = cuts.first().map(|c| c.at);
            }
        }
        if let Some(at) = cut {
            return (seed, at);
        }
    }
    panic!("no seed cuts RETR {nth}");
}

fn faults_of(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Fault { rule, action, point, .. } => Some((rule.clone(), action.clone(), point.clone())),
            _ => None,
        })
        .collect()
}

fn end_of(events: &[Event]) -> &popfault::events::SessionEnd {
    match events.last() {
        Some(Event::SessionEnd(e)) => e,
        other => panic!("last event is not a session end: {other:?}"),
    }
}

async fn until_unlocked(w: &World, user: &str) {
    tokio::time::timeout(LIMIT, async {
        while w.maildrop().is_locked(user) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the server noticed the end of the session");
}

// === built-in profiles ===

#[tokio::test]
async fn lost_carrier_rolls_back_mid_download() {
    let p = builtin("lost-carrier");
    let (seed, at) = seed_cutting_retr(&p, 3);
    assert_eq!(at, SIZE as u64 / 2);
    let mut w = World::with(p, seed, 1, 5, SIZE).await;
    let report = run_session(w.proxy.local_addr, &dnd("user1"), &mut UidMemory::new()).await;
    // The client got two messages whole and lost the line in the third.
    assert_eq!(report.received.len(), 2, "{report:?}");
    assert_eq!(report.marked, vec![1, 2]);
    assert_eq!(report.quit_ok, None);
    let events = events_until_end(&mut w.events).await;
    let faults = faults_of(&events);
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].0, "carrier-lost-mid-retr");
    assert!(faults[0].2.starts_with("body RETR") && faults[0].2.ends_with(&format!("@{at}")), "{faults:?}");
    let end = end_of(&events);
    assert_eq!(end.outcome, Outcome::RolledBack);
    assert_eq!((end.downloaded, end.marked, end.at_risk), (2, 2, 2));
    assert_eq!(end.faults, vec!["carrier-lost-mid-retr".to_string()]);
    // The server deleted nothing: no QUIT was answered +OK.
    until_unlocked(&w, "user1").await;
    assert!(w.maildrop().ledger().is_empty());
    assert_eq!(w.maildrop().remaining("user1").len(), 5);
}

#[tokio::test]
async fn lost_carrier_at_quit_is_in_doubt_and_the_server_committed() {
    let mut w = World::with(builtin("lost-carrier-at-quit"), 7, 1, 3, SIZE).await;
    let report = run_session(w.proxy.local_addr, &dnd("user1"), &mut UidMemory::new()).await;
    assert_eq!(report.received.len(), 3);
    assert_eq!(report.quit_ok, None, "the QUIT answer never reached the client: {report:?}");
    let events = events_until_end(&mut w.events).await;
    // USER PASS STAT (RETR DELE)×3 QUIT: QUIT is the 10th command.
    assert_eq!(faults_of(&events)[0].2, "status QUIT #10");
    let end = end_of(&events);
    assert_eq!(end.outcome, Outcome::InDoubt);
    assert_eq!(end.at_risk, 3);
    // The server did answer +OK, so it did delete: the client cannot know.
    until_unlocked(&w, "user1").await;
    assert_eq!(w.maildrop().ledger().len(), 3);
}

#[tokio::test]
async fn call_waiting_stalls_injects_noise_and_sometimes_drops() {
    let p = builtin("call-waiting");
    let (seed, at) = seed_cutting_retr(&p, 1);
    assert_eq!(at, (0.3 * SIZE as f64) as u64);
    let mut w = World::with(p, seed, 1, 1, SIZE).await;
    let stored = w.maildrop().remaining("user1")[0].content.to_vec();
    let (mut c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
    c.login("user1", "secret").await.unwrap();
    let got = tokio::time::timeout(LIMIT, c.retr(1)).await.unwrap();
    drop(c);
    let events = events_until_end(&mut w.events).await;
    let faults = faults_of(&events);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].0, "call-waiting-tone");
    assert!(faults[0].1.starts_with("stall+noise"), "{faults:?}");
    let dropped = faults[0].1.ends_with("+disconnect");
    match got {
        // Noise went into the middle of the message: the client got the
        // first 30% intact, then garbage.
        Ok(body) => {
            assert!(!dropped);
            assert_ne!(body, stored, "24 bytes of noise were injected");
            assert_eq!(body[..at as usize - 40], stored[..at as usize - 40]);
            assert_eq!(end_of(&events).outcome, Outcome::RolledBack);
        }
        Err(e) => {
            assert!(dropped, "{e}");
            assert_eq!(end_of(&events).outcome, Outcome::RolledBack);
        }
    }
}

#[tokio::test]
async fn server_down_resets_without_contacting_the_server() {
    let mut w = World::with(builtin("server-down"), 1, 1, 1, SIZE).await;
    let r = Pop3Client::connect(w.proxy.local_addr).await;
    assert!(r.is_err());
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::Refused);
    assert_eq!(end.faults, vec!["connection-refused".to_string()]);
    assert_eq!(w.server.sessions_served(), 0);
}

#[tokio::test]
async fn server_down_hang_never_greets() {
    let mut w = World::with(builtin("server-down-hang"), 1, 1, 1, SIZE).await;
    let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
    let mut buf = [0u8; 16];
    let r = tokio::time::timeout(Duration::from_millis(300), c.read(&mut buf)).await;
    assert!(r.is_err(), "no greeting, no close: the read times out");
    drop(c);
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::Refused);
    assert_eq!(w.server.sessions_served(), 0);
}

#[tokio::test]
async fn server_down_err_greets_with_err() {
    let mut w = World::with(builtin("server-down-err"), 1, 1, 1, SIZE).await;
    let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"-ERR [SYS/TEMP] server down for maintenance\r\n");
    assert_eq!(w.next_end().await.outcome, Outcome::Refused);
}

#[tokio::test]
async fn server_flapping_is_down_at_the_start_of_its_period() {
    // Down for the first 3 s of every 10 s since the proxy started.
    let mut w = World::with(builtin("server-flapping"), 1, 1, 1, SIZE).await;
    assert!(Pop3Client::connect(w.proxy.local_addr).await.is_err());
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::Refused);
    assert_eq!(end.faults, vec!["down-window".to_string()]);
}

#[tokio::test]
async fn modem_28k8_is_slow_but_exact() {
    let mut w = World::with(builtin("modem-28k8"), 3, 1, 1, SIZE).await;
    let stored = w.maildrop().remaining("user1")[0].content.to_vec();
    let (mut c, _) = tokio::time::timeout(LIMIT, Pop3Client::connect(w.proxy.local_addr)).await.unwrap().unwrap();
    tokio::time::timeout(LIMIT, async {
        c.login("user1", "secret").await.unwrap();
        assert_eq!(c.retr(1).await.unwrap(), stored);
        c.quit().await.unwrap();
    })
    .await
    .unwrap();
    let events = events_until_end(&mut w.events).await;
    assert_eq!(faults_of(&events), vec![("modem-line".into(), "throttle+delay".into(), "greeting".into())]);
    // Every response waited at least the delay's lower bound (150 - 50 ms).
    for e in &events {
        if let Event::Latency { command, micros, .. } = e {
            assert!(*micros >= 100_000, "{command} answered in {micros} µs");
        }
    }
    assert_eq!(end_of(&events).outcome, Outcome::CleanQuit, "{:#?}", events);
}

/// One user with `messages` messages behind a proxy whose line runs at
/// 8 000 bit/s: 50-byte pieces, each followed by 50 ms of pacing.
async fn slow_line(messages: usize) -> World {
    let slow = profile(
        r#"
name = "slow"
[[rule]]
name = "slow-line"
when = "greeting"
actions = [{ do = "throttle", bps = 8000 }]
"#,
    );
    World::with(slow, 1, 1, messages, 200).await
}

#[tokio::test]
async fn a_body_fully_delivered_on_a_slow_line_counts_though_the_cut_comes_while_pacing() {
    // The client reads the terminator and the proxy is shut down at once, while
    // it paces after the last piece: the message was delivered whole.
    let w = slow_line(1).await;
    let stored = w.maildrop().remaining("user1")[0].content.to_vec();
    let World { server: _server, proxy, mut events } = w;
    let (mut c, _) = tokio::time::timeout(LIMIT, Pop3Client::connect(proxy.local_addr)).await.unwrap().unwrap();
    tokio::time::timeout(LIMIT, async {
        c.login("user1", "secret").await.unwrap();
        assert_eq!(c.retr(1).await.unwrap(), stored);
    })
    .await
    .unwrap();
    tokio::time::timeout(LIMIT, proxy.shutdown()).await.unwrap();
    let end = next_end(&mut events).await;
    assert_eq!(end.ended_by, "cut at shutdown");
    assert_eq!((end.outcome, end.downloaded, end.at_risk), (Outcome::RolledBack, 1, 1));
}

#[tokio::test]
async fn nothing_goes_out_after_a_cut_that_came_while_pacing() {
    // Two pipelined RETRs on a slow line; the proxy is shut down while it
    // paces after the last piece of the first message. The first counts
    // (it went out whole); nothing of the second may follow the cut.
    let w = slow_line(2).await;
    let World { server: _server, proxy, mut events } = w;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut read_until = async |c: &mut TcpStream, got: &mut Vec<u8>, needle: &[u8], count: usize| {
        while got.windows(needle.len()).filter(|w| *w == needle).count() < count {
            let n = tokio::time::timeout(LIMIT, c.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    };
    read_until(&mut c, &mut got, b"\r\n", 1).await;
    c.write_all(b"USER user1\r\nPASS secret\r\n").await.unwrap();
    read_until(&mut c, &mut got, b"\r\n", 3).await;
    c.write_all(b"RETR 1\r\nRETR 2\r\n").await.unwrap();
    read_until(&mut c, &mut got, b"\r\n.\r\n", 1).await;
    let before_cut = got.len();
    tokio::time::timeout(LIMIT, proxy.shutdown()).await.unwrap();
    let end = next_end(&mut events).await;
    // Whatever the socket still yields: none of it is the second answer.
    let mut rest = Vec::new();
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(2), c.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        rest.extend_from_slice(&buf[..n]);
    }
    assert!(rest.is_empty(), "{} bytes after the cut: {:?}", rest.len(), String::from_utf8_lossy(&rest));
    assert!(!got[before_cut..].windows(3).any(|w| w == b"+OK"));
    assert_eq!((end.outcome, end.downloaded), (Outcome::RolledBack, 1), "{end:?}");
}

#[tokio::test]
async fn busy_mailbox_answers_pass_itself() {
    let mut w = World::with(builtin("busy-mailbox"), 1, 1, 1, SIZE).await;
    let (mut c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
    c.user("user1").await.unwrap();
    match c.pass("secret").await {
        Err(ClientError::Err(text)) => assert_eq!(text, "[IN-USE] maildrop locked by another session"),
        other => panic!("{other:?}"),
    }
    // The session goes on: the server is still in AUTHORIZATION.
    c.quit().await.unwrap();
    let events = events_until_end(&mut w.events).await;
    assert_eq!(faults_of(&events)[0].0, "maildrop-locked");
    assert_eq!(end_of(&events).outcome, Outcome::CleanQuit);
    assert!(!w.maildrop().is_locked("user1"), "PASS never reached the server");
}

#[tokio::test]
async fn flaky_line_deletes_only_what_a_quit_committed() {
    let mut w = World::with(builtin("flaky-line"), 42, 1, 80, SIZE).await;
    let mut marked_by_committing = 0;
    let mut outcomes = BTreeSet::new();
    let cfg = WorkloadConfig { max_messages: Some(2), ..dnd("user1") };
    for _ in 0..30 {
        let _ = run_session(w.proxy.local_addr, &cfg, &mut UidMemory::new()).await;
        let end = w.next_end().await;
        outcomes.insert(end.outcome);
        // lost QUIT answers (in-doubt) were answered +OK by the server
        if matches!(end.outcome, Outcome::Committed | Outcome::InDoubt)
            && end.faults.iter().all(|f| f != "drop-before-quit")
        {
            marked_by_committing += end.marked;
        }
        until_unlocked(&w, "user1").await;
    }
    assert!(outcomes.len() >= 2, "a flaky line gives several outcomes: {outcomes:?}");
    assert_eq!(w.maildrop().ledger().len(), marked_by_committing);
}

// === precision ===

/// A scripted server: greeting, then answers `RETR 1` with `body`, and
/// returns what it received.
async fn scripted(body: &'static [u8]) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut got = vec![0u8; 8];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(b"+OK 99 octets\r\n").await.unwrap();
        s.write_all(body).await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        got.extend_from_slice(&rest);
        got
    });
    (addr, h)
}

// A lone "." in the message is stuffed to "..": only the last ".\r\n" ends it.
const BODY: &[u8] = b"Subject: t\r\n\r\nline one\r\n..stuffed line\r\n..\r\nlast\r\n.\r\n";

async fn read_all_until_cut(c: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(LIMIT, c.read(&mut buf)).await.expect("the cut ends the read") {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test]
async fn body_cut_delivers_exactly_n_bytes() {
    let stuffed = BODY.windows(2).position(|w| w == b"..").unwrap();
    let cr = BODY.iter().position(|&b| b == b'\r').unwrap();
    // At the start, one byte in, between CR and LF, between a stuffed
    // line's two dots, and on the last byte before the terminator.
    for n in [0, 1, cr + 1, stuffed + 1, BODY.len() - 4] {
        for how in ["fin", "rst"] {
            let p = profile(&format!(
                "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\noffset = {n}\nactions = [{{ do = \"disconnect\", how = \"{how}\" }}]\n"
            ));
            let (up, server) = scripted(BODY).await;
            let (proxy, mut events) = proxy_with(&up.to_string(), p, 1).await;
            let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
            c.write_all(b"RETR 1\r\n").await.unwrap();
            let got = read_all_until_cut(&mut c).await;
            let want = [&b"+OK hi\r\n+OK 99 octets\r\n"[..], &BODY[..n]].concat();
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "offset {n}, {how}");
            assert_eq!(tokio::time::timeout(LIMIT, server).await.unwrap().unwrap(), b"RETR 1\r\n");
            let events = events_until_end(&mut events).await;
            assert_eq!(faults_of(&events)[0].2, format!("body RETR #1 @{n}"));
            assert_eq!(end_of(&events).bytes_down as usize, want.len());
        }
    }
}

/// A scripted server for `truncate`: greeting, `RETR 1` answered with
/// `body` in two writes (split at `split`, a pause between, so the rest
/// comes in a later read), then `NOOP` answered; returns what it received.
async fn scripted_then_noop(
    body: &'static [u8],
    split: usize,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<u8>>) {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let addr = l.local_addr().unwrap();
    let h = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut got = vec![0u8; 8];
        s.read_exact(&mut got).await.unwrap();
        s.write_all(b"+OK 99 octets\r\n").await.unwrap();
        s.write_all(&body[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(30)).await;
        s.write_all(&body[split..]).await.unwrap();
        let mut noop = vec![0u8; 6];
        s.read_exact(&mut noop).await.unwrap();
        got.extend_from_slice(&noop);
        s.write_all(b"+OK noop\r\n").await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        got.extend_from_slice(&rest);
        got
    });
    (addr, h)
}

/// `truncate` at exact offsets: the client gets the body up to the cut and
/// the terminator that closes the line in progress, nothing of the rest,
/// and the answer to its next command right after.
#[tokio::test]
async fn truncate_ends_the_body_early_and_the_session_goes_on() {
    let stuffed = BODY.windows(2).position(|w| w == b"..").unwrap();
    let cr = BODY.iter().position(|&b| b == b'\r').unwrap();
    let line = BODY.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let cases: &[(usize, &[u8])] = &[
        (0, b".\r\n"),
        (1, b"\r\n.\r\n"),
        (cr, b"\r\n.\r\n"),
        (cr + 1, b"\n.\r\n"),
        (line, b".\r\n"),
        (stuffed + 1, b"\r\n"),
        (stuffed + 2, b"\r\n.\r\n"),
        (BODY.len() - 4, b"\n.\r\n"),
        (BODY.len() - 3, b".\r\n"),
        // Between the real terminator's dot and its CR: completes it.
        (BODY.len() - 2, b"\r\n"),
    ];
    for &(n, terminator) in cases {
        // The rest of the body in the same read as the cut, or in a later one.
        for split in [BODY.len(), n + 1] {
            let p = profile(&format!(
                "[[rule]]\nwhen = \"body\"\ncommand = \"RETR\"\noffset = {n}\nactions = [{{ do = \"truncate\" }}]\n"
            ));
            let (up, server) = scripted_then_noop(BODY, split).await;
            let (proxy, mut events) = proxy_with(&up.to_string(), p, 1).await;
            let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
            c.write_all(b"RETR 1\r\n").await.unwrap();
            let want = [&b"+OK hi\r\n+OK 99 octets\r\n"[..], &BODY[..n], terminator].concat();
            let mut got = vec![0u8; want.len()];
            tokio::time::timeout(LIMIT, c.read_exact(&mut got)).await.unwrap().unwrap();
            assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want), "offset {n}, split {split}");
            // Nothing of the dropped rest follows: the next bytes answer NOOP.
            c.write_all(b"NOOP\r\n").await.unwrap();
            let mut next = [0u8; 10];
            tokio::time::timeout(LIMIT, c.read_exact(&mut next)).await.unwrap().unwrap();
            assert_eq!(&next, b"+OK noop\r\n", "offset {n}, split {split}");
            drop(c);
            assert_eq!(tokio::time::timeout(LIMIT, server).await.unwrap().unwrap(), b"RETR 1\r\nNOOP\r\n");
            let events = events_until_end(&mut events).await;
            let faults = faults_of(&events);
            assert_eq!(faults, [("body-1".into(), "truncate".into(), format!("body RETR #1 @{n}"))]);
            let end = end_of(&events);
            assert_eq!(end.bytes_down as usize, want.len() + next.len(), "what the client got, no more");
            assert_eq!(end.downloaded, 1, "a whole response, as far as the client knows");
        }
    }
}

/// Through the embedded server and client: the first RETR is cut short at
/// a line, the client takes it for the message, and the session goes on.
#[tokio::test]
async fn a_truncated_retr_is_a_shorter_message_and_the_next_command_works() {
    let p = profile(
        "[[rule]]\nname = \"short\"\nwhen = \"body\"\ncommand = \"RETR\"\nnth = 1\nfraction = 0.5\nactions = [{ do = \"truncate\" }]\n",
    );
    let mut w = World::with(p, 1, 1, 2, SIZE).await;
    let stored: Vec<Vec<u8>> = w.maildrop().remaining("user1").iter().map(|m| m.content.to_vec()).collect();
    let (mut c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
    c.login("user1", "secret").await.unwrap();
    let first = tokio::time::timeout(LIMIT, c.retr(1)).await.unwrap().unwrap();
    assert!(first.len() < stored[0].len(), "{} of {} bytes", first.len(), stored[0].len());
    // The part before the cut is the message's own; only its last line may be cut short.
    let whole_lines = first.len() - first.iter().rev().skip(2).position(|&b| b == b'\n').unwrap_or(0) - 2;
    assert_eq!(first[..whole_lines], stored[0][..whole_lines]);
    let second = tokio::time::timeout(LIMIT, c.retr(2)).await.unwrap().unwrap();
    assert_eq!(second, stored[1], "the next RETR is whole: the session is in step");
    c.quit().await.unwrap();
    let events = events_until_end(&mut w.events).await;
    let faults = faults_of(&events);
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!((faults[0].0.as_str(), faults[0].1.as_str()), ("short", "truncate"));
    assert!(faults[0].2.starts_with("body RETR #"), "{faults:?}");
    let end = end_of(&events);
    assert_eq!(end.outcome, Outcome::CleanQuit);
    assert_eq!(end.downloaded, 2);
}

/// rst, fin and silent are each observable by the client: a reset, an EOF,
/// or nothing at all.
#[tokio::test]
async fn rst_fin_and_silent_are_observable() {
    for how in ["rst", "fin", "silent"] {
        let p = profile(&format!(
            "[[rule]]\nwhen = \"command\"\ncommand = \"NOOP\"\nactions = [{{ do = \"disconnect\", side = \"client\", how = \"{how}\" }}]\n"
        ));
        let mut w = World::with(p, 1, 1, 1, SIZE).await;
        let (c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
        drop(c);
        let _ = w.next_end().await;
        let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
        let mut greet = Vec::new();
        while !greet.ends_with(b"\r\n") {
            let mut b = [0u8; 1];
            tokio::time::timeout(LIMIT, c.read_exact(&mut b)).await.unwrap().unwrap();
            greet.push(b[0]);
        }
        assert!(greet.starts_with(b"+OK"));
        c.write_all(b"NOOP\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        let r = tokio::time::timeout(Duration::from_millis(400), c.read(&mut buf)).await;
        match how {
            "rst" => assert_eq!(r.unwrap().map_err(|e| e.kind()).unwrap_err(), std::io::ErrorKind::ConnectionReset),
            "fin" => assert_eq!(r.unwrap().unwrap(), 0, "EOF"),
            _ => assert!(r.is_err(), "silent: the read times out ({r:?})"),
        }
        drop(c);
        let end = w.next_end().await;
        assert_eq!(end.outcome, Outcome::NoLogin, "{how}");
        assert_eq!(end.faults, vec!["command-1".to_string()]);
    }
}

// === replay ===

/// Runs 200 sessions, 20 at a time, each the same workload (leave on
/// server, nothing remembered), and returns the faults fired.
async fn flaky_run(seed: u64) -> BTreeSet<(u64, String, String)> {
    let mut w = World::with(builtin("flaky-line"), seed, 20, 3, SIZE).await;
    let addr = w.proxy.local_addr;
    let mut workers = tokio::task::JoinSet::new();
    for u in 1..=20 {
        let maildrop = w.maildrop().clone();
        workers.spawn(async move {
            for _ in 0..10 {
                // Like a real client's next poll, start once the server has
                // noticed the previous session's end (else [IN-USE]).
                while maildrop.is_locked(&format!("user{u}")) {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                let cfg = WorkloadConfig {
                    user: format!("user{u}"),
                    password: "secret".into(),
                    mode: Mode::LeaveOnServer,
                    timeout: Duration::from_secs(10),
                    max_messages: None,
                };
                let _ = run_session(addr, &cfg, &mut UidMemory::new()).await;
            }
        });
    }
    let mut fired = BTreeSet::new();
    let mut ended = 0;
    tokio::time::timeout(Duration::from_secs(120), async {
        while ended < 200 {
            match w.events.recv().await {
                Some(Event::Fault { session, rule, point, .. }) => {
                    fired.insert((session, rule, point));
                }
                Some(Event::SessionEnd(_)) => ended += 1,
                Some(_) => {}
                None => panic!("events closed"),
            }
        }
    })
    .await
    .expect("200 sessions in time");
    while workers.join_next().await.is_some() {}
    fired
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_seed_replays_the_same_faults() {
    let a = flaky_run(1234).await;
    let b = flaky_run(1234).await;
    let c = flaky_run(4321).await;
    assert!(a.len() > 20, "flaky-line fired {} times in 200 sessions", a.len());
    assert_eq!(a, b, "same seed, same faults");
    assert_ne!(a, c, "another seed, other faults");
}
