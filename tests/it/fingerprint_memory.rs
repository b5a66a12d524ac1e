//! A client that RETRs one message with a 979-character Message-ID again
//! and again costs the proxy a bounded amount of memory: a session keeps a
//! fixed-size digest per download, at most `MAX_FINGERPRINTS` of them, and
//! counts the rest (`fingerprints_dropped`). Figures are printed (see
//! docs/RELIABILITY.md); `POPFAULT_FP_RETRS` and `POPFAULT_FP_SESSIONS`
//! scale the run for measuring.

use std::time::Duration;

use crate::support::proc::Proc;
use crate::support::*;
use popfault::server::{self, Maildrop, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// RETRs pipelined at a time.
const BATCH: usize = 250;
/// Resident memory the proxy may gain over the RETRs of one session.
/// Keeping the Message-ID text took about 1 KiB per RETR (20 MiB for
/// 20,000); digests under the cap take a few hundred KiB.
const GROWTH_LIMIT_KIB: u64 = 6 * 1024;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn read_exact_in_time(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(LIMIT, s.read_exact(&mut buf)).await.expect("answers in time").expect("read");
    buf
}

/// Reads one multi-line response (up to its terminator) byte-exactly.
async fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut b = [0u8; 1024];
    while !(got.starts_with(b"-ERR") && got.ends_with(b"\r\n") || got.ends_with(b"\r\n.\r\n")) {
        let n = tokio::time::timeout(LIMIT, s.read(&mut b)).await.expect("a response in time").expect("read");
        assert!(n > 0, "closed early");
        got.extend_from_slice(&b[..n]);
    }
    got
}

/// One session: log in, RETR 1 `retrs` times, pipelined in batches;
/// `at_warm` is told when the first batch is done and `at_end` when all
/// are, before QUIT.
async fn hammer(
    addr: std::net::SocketAddr,
    user: usize,
    retrs: usize,
    at_warm: tokio::sync::mpsc::Sender<()>,
    mut go: tokio::sync::watch::Receiver<bool>,
    at_end: tokio::sync::mpsc::Sender<()>,
    mut quit: tokio::sync::watch::Receiver<bool>,
) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut lines = Vec::new();
    s.write_all(format!("USER user{user}\r\nPASS secret\r\n").as_bytes()).await.unwrap();
    // The greeting and the two answers.
    while lines.iter().filter(|&&b| b == b'\n').count() < 3 {
        lines.extend(read_exact_in_time(&mut s, 1).await);
    }
    assert!(lines.starts_with(b"+OK") && !lines.windows(4).any(|w| w == b"-ERR"), "logged in");
    s.write_all(b"RETR 1\r\n").await.unwrap();
    let one = read_response(&mut s).await.len();
    let batch = b"RETR 1\r\n".repeat(BATCH);
    let mut done = 1;
    while done < retrs {
        let k = BATCH.min(retrs - done);
        s.write_all(&batch[..k * 8]).await.unwrap();
        let _ = read_exact_in_time(&mut s, k * one).await;
        done += k;
        if done == 1 + BATCH {
            at_warm.send(()).await.unwrap();
            let _ = go.wait_for(|g| *g).await;
        }
    }
    at_end.send(()).await.unwrap();
    let _ = quit.wait_for(|q| *q).await;
    s.write_all(b"QUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, s.read_to_end(&mut rest)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retr_of_a_long_message_id_again_and_again_stays_bounded() {
    let retrs = env_or("POPFAULT_FP_RETRS", 20_000);
    let sessions = env_or("POPFAULT_FP_SESSIONS", 1);
    let cfg = ServerConfig { users: sessions, messages: 0, size: 100, password: "secret".into() };
    let maildrop = Maildrop::new(&cfg);
    let id = format!("<{}@example.net>", "m".repeat(979 - 14));
    assert_eq!(id.len(), 979);
    for u in 1..=sessions {
        let msg = format!("Message-ID: {id}\r\nSubject: the same again\r\n\r\nbody\r\n");
        maildrop.add_message(&format!("user{u}"), msg.into_bytes()).expect("a user");
    }
    let srv = server::spawn(loopback(), maildrop).await.unwrap();
    let dir = std::env::temp_dir().join(format!("popfault-fp-mem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let (proxy, addr) = Proc::proxy(srv.addr, &["--drain", "1", "--events", events.to_str().unwrap()]);
    let start_kib = proxy.status_kib("VmRSS");

    let (warm_tx, mut warm_rx) = tokio::sync::mpsc::channel(sessions);
    let (end_tx, mut end_rx) = tokio::sync::mpsc::channel(sessions);
    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let (quit_tx, quit_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for u in 1..=sessions {
        let (warm, end, go, quit) = (warm_tx.clone(), end_tx.clone(), go_rx.clone(), quit_rx.clone());
        tasks.push(tokio::spawn(hammer(addr, u, retrs, warm, go, end, quit)));
    }
    let bounded = Duration::from_secs(600);
    for _ in 0..sessions {
        tokio::time::timeout(bounded, warm_rx.recv()).await.expect("warm in time");
    }
    let warm_kib = proxy.status_kib("VmRSS");
    go_tx.send(true).unwrap();
    for _ in 0..sessions {
        tokio::time::timeout(bounded, end_rx.recv()).await.expect("all RETRs in time");
    }
    let loaded_kib = proxy.status_kib("VmRSS");
    quit_tx.send(true).unwrap();
    for t in tasks {
        tokio::time::timeout(bounded, t).await.expect("sessions ended").unwrap();
    }
    // The ends reach the aggregator and the fingerprints are freed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kib = proxy.status_kib("VmRSS");
    let peak_kib = proxy.status_kib("VmHWM");
    let out = proxy.stop();
    eprintln!(
        "FIGURE {sessions} session(s) x {retrs} RETRs of a 979-char Message-ID: proxy RSS {start_kib} KiB at start, \
         {warm_kib} after {} RETRs each, {loaded_kib} after all, {after_kib} after the sessions ended; peak {peak_kib}",
        1 + BATCH
    );
    let growth = loaded_kib.saturating_sub(warm_kib);
    assert!(
        loaded_kib > 0 && growth < GROWTH_LIMIT_KIB * sessions as u64,
        "RSS grew {growth} KiB over {retrs} RETRs in {sessions} session(s)"
    );

    let text = std::fs::read_to_string(&events).unwrap();
    let ends: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "session_end")
        .collect();
    assert_eq!(ends.len(), sessions, "{out}");
    let cap = popfault::session::MAX_FINGERPRINTS;
    for e in &ends {
        assert_eq!(e["downloaded"], retrs as u64, "{e}");
        let dropped = retrs.saturating_sub(cap) as u64;
        assert_eq!(e["fingerprints_dropped"], dropped, "past the cap, counted: {e}");
        assert_eq!(e["duplicates"], retrs.min(cap) as u64 - 1, "{e}");
    }
    let summary: serde_json::Value = serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["fingerprints_dropped"], (retrs.saturating_sub(cap) * sessions) as u64, "{summary}");
    if retrs > cap {
        assert!(out.contains("fingerprints"), "the summary table says some were dropped:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
