//! The relay over real sockets: byte-exact, outcomes, pipelining, STLS.

use std::time::Duration;

use crate::support::*;
use popfault::client::{Mode, Pop3Client, UidMemory, WorkloadConfig, run_session};
use popfault::events::Event;
use popfault::session::Outcome;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// 10 full sessions through proxy and tap: the bytes the client sent are
/// the bytes the server got, and the other way round, by SHA-256.
#[tokio::test]
async fn ten_full_sessions_are_byte_exact() {
    let cfg = popfault::server::ServerConfig { users: 10, messages: 6, size: 3000, password: "secret".into() };
    let server = popfault::server::spawn(loopback(), popfault::server::Maildrop::new(&cfg)).await.unwrap();
    let (tap_addr, rec) = tap(server.addr).await;
    let (proxy, mut events) = proxy_to(&tap_addr.to_string()).await;
    for i in 1..=10 {
        let script = format!(
            "CAPA\r\nUSER user{i}\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL\r\nTOP 1 3\r\nRETR 1\r\nRETR 2\r\nRETR 3\r\nDELE 1\r\nNOOP\r\nRSET\r\nDELE 2\r\nQUIT\r\n"
        );
        let got = converse(proxy.local_addr, script.as_bytes()).await;
        let end = next_end(&mut events).await;
        // The tap may still be flushing its last read; wait for it.
        let r = take_recorded(&rec, got.len()).await;
        assert_eq!(sha256(&r.up), sha256(script.as_bytes()), "session {i}: client → server");
        assert_eq!(sha256(&r.down), sha256(&got), "session {i}: server → client");
        assert!(got.len() > 3 * 3000, "the session really downloaded");
        assert_eq!(end.outcome, Outcome::Committed);
        assert_eq!((end.downloaded, end.marked), (3, 1));
        assert_eq!(end.bytes_up, script.len() as u64);
        assert_eq!(end.bytes_down, got.len() as u64);
    }
    assert_eq!(server.maildrop.ledger().len(), 10);
}

/// 1 MiB of random non-POP3 bytes each way passes unchanged.
#[tokio::test]
async fn random_bytes_both_ways_are_byte_exact() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let to_client: Vec<u8> = (0..1 << 20).map(|_| rng.r#gen()).collect();
    let to_server: Vec<u8> = (0..1 << 20).map(|_| rng.r#gen()).collect();
    let upstream = TcpListener::bind(loopback()).await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let send_down = to_client.clone();
    let fake = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let (mut r, mut w) = s.split();
        let mut got = Vec::new();
        let (_, n) = tokio::join!(
            async {
                w.write_all(&send_down).await.unwrap();
                w.shutdown().await.unwrap();
            },
            r.read_to_end(&mut got)
        );
        n.unwrap();
        got
    });
    let (proxy, mut events) = proxy_to(&up_addr.to_string()).await;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let (mut r, mut w) = c.split();
    let mut got = Vec::new();
    let (_, n) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            async {
                w.write_all(&to_server).await.unwrap();
                w.shutdown().await.unwrap();
            },
            r.read_to_end(&mut got)
        )
    })
    .await
    .unwrap();
    n.unwrap();
    let server_got = tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap();
    assert_eq!(sha256(&got), sha256(&to_client), "server → client");
    assert_eq!(sha256(&server_got), sha256(&to_server), "client → server");
    let end = next_end(&mut events).await;
    assert_eq!((end.bytes_up, end.bytes_down), (1 << 20, 1 << 20));
}

fn workload(user: &str, mode: Mode) -> WorkloadConfig {
    WorkloadConfig {
        user: user.into(),
        password: "secret".into(),
        mode,
        timeout: Duration::from_secs(10),
        max_messages: None,
    }
}

#[tokio::test]
async fn quit_commits_and_the_ledger_shows_it() {
    let mut w = World::start(1, 4).await;
    let report =
        run_session(w.proxy.local_addr, &workload("user1", Mode::DownloadAndDelete), &mut UidMemory::new()).await;
    assert_eq!(report.quit_ok, Some(true), "{report:?}");
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::Committed);
    assert_eq!((end.downloaded, end.marked, end.at_risk), (4, 4, 0));
    assert_eq!(end.user.as_deref(), Some("user1"));
    assert_eq!(w.maildrop().ledger().len(), 4);
    assert!(w.maildrop().remaining("user1").is_empty());
}

#[tokio::test]
async fn drop_after_deles_rolls_back_and_keeps_every_message() {
    let mut w = World::start(1, 5).await;
    let mut c = tokio::time::timeout(LIMIT, async {
        let (mut c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
        c.login("user1", "secret").await.unwrap();
        for n in 1..=3 {
            c.retr(n).await.unwrap();
            c.dele(n).await.unwrap();
        }
        c
    })
    .await
    .unwrap();
    c.send_raw(b"").await.unwrap();
    drop(c); // the line drops before QUIT
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::RolledBack);
    assert_eq!((end.downloaded, end.marked, end.at_risk), (3, 3, 3));
    // Give the server a moment to notice; then nothing may be deleted.
    tokio::time::timeout(LIMIT, async {
        while w.maildrop().is_locked("user1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(w.maildrop().ledger().is_empty());
    assert_eq!(w.maildrop().remaining("user1").len(), 5);
}

#[tokio::test]
async fn drop_before_login_is_no_login() {
    let mut w = World::start(1, 1).await;
    tokio::time::timeout(LIMIT, async {
        let (mut c, _) = Pop3Client::connect(w.proxy.local_addr).await.unwrap();
        c.user("user1").await.unwrap();
    })
    .await
    .unwrap();
    let end = w.next_end().await;
    assert_eq!(end.outcome, Outcome::NoLogin);
}

#[tokio::test]
async fn closed_upstream_port_is_refused() {
    // Bind then drop: a port on loopback that nobody listens on.
    let port = TcpListener::bind(loopback()).await.unwrap().local_addr().unwrap();
    let (proxy, mut events) = proxy_to(&port.to_string()).await;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(LIMIT, c.read_to_end(&mut buf)).await.unwrap();
    // A refusing server resets; the client sees the reset (or at least no data).
    assert!(r.is_err() || buf.is_empty());
    let end = next_end(&mut events).await;
    assert_eq!(end.outcome, Outcome::Refused);
    assert!(end.ended_by.contains("refused"), "{}", end.ended_by);
}

/// 50 pipelined commands in one write: the client gets 50 right answers and
/// the proxy attributes each response to its command, in order.
#[tokio::test]
async fn fifty_pipelined_commands_are_attributed() {
    let mut w = World::start(1, 10).await;
    let mut script = b"USER user1\r\nPASS secret\r\n".to_vec();
    let mut expect = vec!["USER".to_string(), "PASS".to_string()];
    for i in 0..50u32 {
        let n = i % 10 + 1;
        let (cmd, name) = match i % 5 {
            0 => (format!("RETR {n}\r\n"), "RETR"),
            1 => ("UIDL\r\n".into(), "UIDL"),
            2 => (format!("LIST {n}\r\n"), "LIST"),
            3 => (format!("TOP {n} 2\r\n"), "TOP"),
            _ => ("NOOP\r\n".into(), "NOOP"),
        };
        script.extend_from_slice(cmd.as_bytes());
        expect.push(name.into());
    }
    script.extend_from_slice(b"QUIT\r\n");
    expect.push("QUIT".into());
    let got = converse(w.proxy.local_addr, &script).await;
    let events = events_until_end(&mut w.events).await;
    let answered: Vec<(u64, String)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Latency { seq, command, .. } => Some((*seq, command.clone())),
            _ => None,
        })
        .collect();
    let want: Vec<(u64, String)> = expect.iter().enumerate().map(|(i, c)| (i as u64 + 1, c.clone())).collect();
    assert_eq!(answered, want);
    // The client got one status line per command (+OK each).
    let text = String::from_utf8_lossy(&got);
    assert!(!text.contains("-ERR"), "{text}");
    let Some(Event::SessionEnd(end)) = events.last() else { panic!("no end") };
    assert_eq!(end.downloaded, 10);
    assert_eq!(end.outcome, Outcome::CleanQuit);
}

/// After STLS +OK, bytes pass untouched and the session is marked encrypted.
#[tokio::test]
async fn stls_then_opaque_bytes_pass_untouched() {
    let upstream = TcpListener::bind(loopback()).await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let hello_back: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let reply = hello_back.clone();
    let fake = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(b"+OK ready\r\n").await.unwrap();
        let mut line = [0u8; 6];
        s.read_exact(&mut line).await.unwrap();
        assert_eq!(&line, b"STLS\r\n");
        s.write_all(b"+OK begin TLS\r\n").await.unwrap();
        s.write_all(&reply).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let (proxy, mut events) = proxy_to(&up_addr.to_string()).await;
    let client_hello: Vec<u8> =
        b"\x16\x03\x01\x00\xffQUIT\r\nRETR 1\r\n.\r\n".iter().copied().cycle().take(3000).collect();
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let got = tokio::time::timeout(LIMIT, async {
        let mut greet = [0u8; 11];
        c.read_exact(&mut greet).await.unwrap();
        c.write_all(b"STLS\r\n").await.unwrap();
        let mut ok = [0u8; 15];
        c.read_exact(&mut ok).await.unwrap();
        assert_eq!(&ok, b"+OK begin TLS\r\n");
        c.write_all(&client_hello).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .unwrap();
    assert_eq!(got, hello_back);
    assert_eq!(tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap(), client_hello);
    let end = next_end(&mut events).await;
    assert!(end.encrypted);
}

/// A FIN from the client reaches the server as a FIN while the server can
/// still answer (half-close); a reset from the server reaches the client.
#[tokio::test]
async fn half_close_and_reset_are_passed_on() {
    let upstream = TcpListener::bind(loopback()).await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        // First connection: read to EOF, then answer after it.
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(b"+OK late answer\r\n").await.unwrap();
        drop(s);
        // Second: reset right after the greeting.
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut noop = [0u8; 6];
        s.read_exact(&mut noop).await.unwrap();
        s.set_zero_linger().unwrap();
        drop(s);
        got
    });
    let (proxy, mut events) = proxy_to(&up_addr.to_string()).await;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let got = tokio::time::timeout(LIMIT, async {
        c.write_all(b"NOOP\r\n").await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .unwrap();
    assert_eq!(got, b"+OK hi\r\n+OK late answer\r\n");
    assert_eq!(next_end(&mut events).await.ended_by, "closed by client");

    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    let mut greet = [0u8; 8];
    tokio::time::timeout(LIMIT, c.read_exact(&mut greet)).await.unwrap().unwrap();
    c.write_all(b"NOOP\r\n").await.unwrap();
    let end = next_end(&mut events).await;
    assert_eq!(end.ended_by, "reset by server");
    let mut buf = Vec::new();
    let r = tokio::time::timeout(LIMIT, c.read_to_end(&mut buf)).await.unwrap();
    assert_eq!(r.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionReset), "got {buf:?}");
    assert_eq!(tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap(), b"NOOP\r\n");
}

/// Reads from `s` until `want` bytes came (bounded by LIMIT).
async fn read_n(s: &mut TcpStream, want: usize) -> Vec<u8> {
    let mut got = vec![0u8; want];
    tokio::time::timeout(LIMIT, s.read_exact(&mut got)).await.expect("bytes in time").expect("read");
    got
}

/// Bytes go on as they arrive: a server that sends the start of a line and
/// waits for the client, and a client that does the same, both get the
/// other's partial line at once. Before, each side's partial line was held
/// until its LF, and both waited for ever (a TLS handshake sent to a plain
/// listener is exactly that).
#[tokio::test]
async fn partial_lines_go_on_at_once_both_ways() {
    let upstream = TcpListener::bind(loopback()).await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(b"+OK hel").await.unwrap();
        let got = read_n(&mut s, 2).await;
        s.write_all(b"lo\r\n+OK").await.unwrap();
        let more = read_n(&mut s, 6).await;
        (got, more)
    });
    let (proxy, _events) = proxy_to(&up_addr.to_string()).await;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    assert_eq!(read_n(&mut c, 7).await, b"+OK hel", "the greeting's start");
    c.write_all(b"ab").await.unwrap();
    assert_eq!(read_n(&mut c, 7).await, b"lo\r\n+OK");
    c.write_all(b"c\r\nQUI").await.unwrap();
    let (got, more) = tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap();
    assert_eq!((&got[..], &more[..]), (&b"ab"[..], &b"c\r\nQUI"[..]));
}

/// The same for every built-in profile but those that act on every line:
/// each gets its own fake server.
#[tokio::test]
async fn partial_lines_go_on_at_once_under_each_profile() {
    for profile in ["passthrough", "lost-carrier", "lost-carrier-at-quit", "call-waiting", "flaky-line"] {
        let upstream = TcpListener::bind(loopback()).await.unwrap();
        let up_addr = upstream.local_addr().unwrap();
        let fake = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            s.write_all(b"+OK hi\r\n").await.unwrap();
            let got = read_n(&mut s, 3).await;
            s.write_all(b"-ERR no").await.unwrap();
            got
        });
        let (proxy, _events) = proxy_with(&up_addr.to_string(), builtin(profile), 1).await;
        let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
        assert_eq!(read_n(&mut c, 8).await, b"+OK hi\r\n", "{profile}");
        // "XYZ" cannot be a command any built-in rule names.
        c.write_all(b"XYZ").await.unwrap();
        assert_eq!(tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap(), b"XYZ", "{profile}");
        assert_eq!(read_n(&mut c, 7).await, b"-ERR no", "{profile}: an answer's start");
    }
}

/// A rule that must see a whole command before it is forwarded holds a
/// partial line while it could still be that command, and only then:
/// "QU" waits (QUIT is swallowed whole, the server never sees a byte of
/// it), "NO" goes on at once.
#[tokio::test]
async fn a_partial_line_is_held_only_while_a_rule_could_want_it() {
    let upstream = TcpListener::bind(loopback()).await.unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let fake = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let first = read_n(&mut s, 2).await;
        let rest = read_n(&mut s, 4).await;
        (first, rest)
    });
    let swallow_quit =
        "[[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nrepeat = true\nactions = [{ do = \"swallow\" }]\n";
    let (proxy, _events) = proxy_with(&up_addr.to_string(), profile(swallow_quit), 1).await;
    let mut c = TcpStream::connect(proxy.local_addr).await.unwrap();
    assert_eq!(read_n(&mut c, 8).await, b"+OK hi\r\n");
    c.write_all(b"QU").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.write_all(b"IT\r\n").await.unwrap();
    c.write_all(b"NO").await.unwrap();
    let ((first, rest), ()) =
        tokio::join!(async { tokio::time::timeout(LIMIT, fake).await.unwrap().unwrap() }, async {
            // The rest of NOOP only after "NO" got through on its own.
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(b"OP\r\n").await.unwrap();
        });
    assert_eq!(first, b"NO", "QUIT was swallowed whole; NO went on before its end");
    assert_eq!(rest, b"OP\r\n");
}

/// Who ended a session is the side seen ending first: a client that resets
/// mid-download is "reset by client" every time (it was "reset by server" in
/// 4 runs of 6: the write toward the gone client failed and was blamed on the
/// server), and a client's FIN is "closed by client".
#[tokio::test]
async fn the_side_that_ended_first_is_named() {
    let mut w = World::with(popfault::faults::Profile::passthrough(), 1, 1, 2, 4_000_000).await;
    for run in 0..6 {
        let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
        c.write_all(b"USER user1\r\nPASS secret\r\nRETR 1\r\n").await.unwrap();
        // Some of the 4 MB, then a reset mid-download.
        let _ = read_n(&mut c, 100_000).await;
        c.set_zero_linger().unwrap();
        drop(c);
        let end = w.next_end().await;
        assert_eq!(end.ended_by, "reset by client", "run {run}");
        // Cut mid-download with nothing marked: nothing rolled back.
        assert_eq!(end.outcome, Outcome::NothingAtStake, "run {run}");
    }
    let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
    c.write_all(b"USER user1\r\nPASS secret\r\nRETR 2\r\n").await.unwrap();
    let _ = read_n(&mut c, 100_000).await;
    // An orderly close: FIN, then read what is still coming, so that no
    // unread data turns the close into a reset.
    c.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest)).await.unwrap();
    assert_eq!(w.next_end().await.ended_by, "closed by client");
}

/// bytes_down is what was written to the client, also when a cut comes in
/// the middle of a paced (throttled) write: it said 146 where the client
/// had received 7 179 bytes.
#[tokio::test]
async fn bytes_down_counts_what_a_cut_throttled_write_delivered() {
    let slow_then_cut = "[[rule]]\nname = \"slow\"\nwhen = \"greeting\"\nactions = [{ do = \"throttle\", bps = 400000 }]\n\n\
                         [[rule]]\nname = \"cut\"\nwhen = \"timer\"\nafter_ms = 400\n\
                         actions = [{ do = \"disconnect\", side = \"both\", how = \"fin\" }]\n";
    let mut w = World::with(profile(slow_then_cut), 1, 1, 1, 200_000).await;
    let mut c = TcpStream::connect(w.proxy.local_addr).await.unwrap();
    c.write_all(b"USER user1\r\nPASS secret\r\nRETR 1\r\n").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, c.read_to_end(&mut got)).await.unwrap().unwrap();
    let end = w.next_end().await;
    assert_eq!(end.ended_by, "fault: cut");
    assert!(got.len() > 2_000 && got.len() < 200_000, "cut while the body was paced: {} bytes", got.len());
    assert_eq!(end.bytes_down, got.len() as u64, "bytes_down is what the client received");
}

/// `--transcripts DIR` as the relay does it: one file a session, written
/// when it ends, telling what happened in order, with no password in it.
#[tokio::test]
async fn each_session_leaves_a_transcript_without_secrets() {
    let dir = std::env::temp_dir().join(format!("popfault-transcripts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let transcripts = popfault::transcripts::Transcripts::start(&dir).unwrap();
    let cfg = popfault::server::ServerConfig { users: 1, messages: 2, size: 800, password: "Gannet-Olive-515".into() };
    let srv = popfault::server::spawn(loopback(), popfault::server::Maildrop::new(&cfg)).await.unwrap();
    let (sink, mut events) = popfault::events::EventSink::channel(1000);
    let control = std::sync::Arc::new(popfault::control::Control::new(std::sync::Arc::new(builtin("passthrough")), 1));
    let mut pc = popfault::relay::ProxyConfig::new(loopback(), srv.addr.to_string());
    pc.transcripts = Some(transcripts.sink());
    let proxy = popfault::relay::start(pc, control, sink).await.unwrap();
    let got = converse(proxy.local_addr, b"USER user1\r\nPASS Gannet-Olive-515\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n").await;
    assert!(String::from_utf8_lossy(&got).contains("+OK"));
    let end = next_end(&mut events).await;
    proxy.shutdown().await;
    let (files, dropped) = transcripts.finish().unwrap();
    assert_eq!((files, dropped), (1, 0));
    let text = std::fs::read_to_string(dir.join(format!("session-{:06}.txt", end.session))).unwrap();
    // In the order the proxy saw them: the client pipelined its commands,
    // so they come before the answers; each side in its own order.
    for want in [
        &["C: USER user1", "C: PASS ***", "C: RETR 1", "C: DELE 1", "C: QUIT"][..],
        &["S: +OK popfault", "S: +OK 800 octets", "S: (body, ", "end: committed"][..],
    ] {
        let mut at = 0;
        for w in want {
            let i = text[at..].find(w).unwrap_or_else(|| panic!("{w:?} after byte {at} in:\n{text}"));
            at += i + w.len();
        }
    }
    assert!(!text.contains("Gannet-Olive-515"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
