//! Hostile peers against the real binary: memory stays bounded whatever a
//! peer sends or withholds, and thousands of sessions are held. Figures
//! are printed (see docs/RELIABILITY.md).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::support::proc::Proc;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
/// Peak resident memory allowed for a proxy pushed 100 MiB by one peer:
/// far below what buffering it would take.
const PEAK_LIMIT_KIB: u64 = 48 * 1024;

fn proxy_to(upstream: std::net::SocketAddr, extra: &[&str], nofile: Option<u64>) -> (Proc, std::net::SocketAddr) {
    Proc::proxy_with(upstream, &[&["--drain", "0"], extra].concat(), &[], nofile)
}

/// The session's connection: `popfault proxy` also tries the upstream once
/// at start-up (to warn when it is down) and closes that connection at
/// once. The probe goes out after the listening line is printed, so it may
/// come before or after the session's: a connection the peer closes
/// within a second is the probe.
async fn accept_past_probe(l: &TcpListener) -> (TcpStream, std::net::SocketAddr) {
    for _ in 0..2 {
        let (s, peer) = l.accept().await.unwrap();
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(1), s.peek(&mut b)).await {
            Ok(Ok(0)) | Ok(Err(_)) => continue,
            _ => return (s, peer),
        }
    }
    panic!("two connections closed at once: no session")
}

async fn read_line(s: &mut TcpStream) -> Vec<u8> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while !line.ends_with(b"\n") {
        if tokio::time::timeout(LIMIT, s.read(&mut b)).await.expect("a line in time").expect("read") == 0 {
            break;
        }
        line.push(b[0]);
    }
    line
}

#[tokio::test]
async fn client_sending_100_mib_without_crlf_is_relayed_in_bounded_memory() {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let up = l.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = accept_past_probe(&l).await;
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut n = 0u64;
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return n,
                Ok(k) => n += k as u64,
            }
        }
    });
    let (proxy, addr) = proxy_to(up, &[], None);
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut c).await, b"+OK hi\r\n");
    let chunk = vec![b'x'; 1 << 20];
    tokio::time::timeout(Duration::from_secs(120), async {
        for _ in 0..100 {
            c.write_all(&chunk).await.unwrap();
        }
        c.shutdown().await.unwrap();
    })
    .await
    .expect("100 MiB sent in time");
    let got = tokio::time::timeout(Duration::from_secs(60), server).await.unwrap().unwrap();
    assert_eq!(got, 100 * MIB, "every byte relayed");
    let peak = proxy.status_kib("VmHWM");
    eprintln!("FIGURE client 100 MiB without CRLF: proxy peak RSS {peak} KiB");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak RSS {peak} KiB");
    drop(c);
    proxy.stop();
}

#[tokio::test]
async fn endless_body_from_the_server_streams_in_bounded_memory() {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let up = l.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = accept_past_probe(&l).await;
        s.write_all(b"+OK hi\r\n").await.unwrap();
        let mut cmd = [0u8; 8];
        s.read_exact(&mut cmd).await.unwrap();
        s.write_all(b"+OK here it comes\r\n").await.unwrap();
        // A body that never ends: 100 MiB of lines, no terminator.
        let lines = b"never ending line of a body\r\n..stuffed\r\n".repeat(1 << 14);
        let mut sent = 0u64;
        while sent < 100 * MIB {
            if s.write_all(&lines).await.is_err() {
                return;
            }
            sent += lines.len() as u64;
        }
    });
    let (proxy, addr) = proxy_to(up, &[], None);
    let mut c = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_line(&mut c).await, b"+OK hi\r\n");
    c.write_all(b"RETR 1\r\n").await.unwrap();
    let mut n = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    tokio::time::timeout(Duration::from_secs(120), async {
        loop {
            match c.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => n += k as u64,
            }
        }
    })
    .await
    .expect("the body streamed in time");
    assert!(n >= 100 * MIB, "all of it reached the client ({n} bytes)");
    let peak = proxy.status_kib("VmHWM");
    eprintln!("FIGURE endless body 100 MiB: proxy peak RSS {peak} KiB");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak RSS {peak} KiB");
    proxy.stop();
}

#[tokio::test]
async fn a_client_that_never_reads_gets_backpressure_not_buffering() {
    let l = TcpListener::bind(loopback()).await.unwrap();
    let up = l.local_addr().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    tokio::spawn(async move {
        let (mut s, _) = accept_past_probe(&l).await;
        let chunk = vec![b'y'; 1 << 16];
        let _ = s.write_all(b"+OK hi\r\n").await;
        while w.load(Ordering::Relaxed) < 100_000_000 {
            if s.write_all(&chunk).await.is_err() {
                return;
            }
            w.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    });
    let (proxy, addr) = proxy_to(up, &[], None);
    let c = TcpStream::connect(addr).await.unwrap();
    // Wait until the server's writes stop advancing: the line is full.
    let mut last = u64::MAX;
    let stalled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = written.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    })
    .await
    .expect("the server was held back");
    let peak = proxy.status_kib("VmHWM");
    eprintln!("FIGURE client never reads: server got {stalled} of 100000000 bytes out; proxy peak RSS {peak} KiB");
    assert!(stalled < 100_000_000, "the server could not push everything: backpressure");
    assert!(peak > 0 && peak < PEAK_LIMIT_KIB, "peak RSS {peak} KiB");
    drop(c);
    proxy.stop();
}

/// Raises this process's open-file limit to `want` if the hard limit
/// allows; returns the soft limit in force.
fn raise_nofile(want: u64) -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    let cur = l.current.unwrap_or(u64::MAX);
    if cur < want {
        l.current = Some(l.maximum.map_or(want, |m| m.min(want)));
        let _ = setrlimit(Resource::Nofile, l);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// `n` clients logged in through a proxy to an embedded server, each then
/// sent `then`, with the proxy's RSS before they came and how long they
/// took to come.
struct Held {
    server: Proc,
    proxy: Proc,
    rss_before: u64,
    clients: Vec<TcpStream>,
    opened_in: Duration,
}

async fn held_sessions(n: usize, then: &'static [u8]) -> Held {
    let limit = raise_nofile(2 * n as u64 + 512);
    assert!(limit >= n as u64 + 256, "need {n}+ open files, the hard limit allows {limit}");
    let users = n.to_string();
    let mut server = Proc::spawn_with(
        &["serve", "--listen", "127.0.0.1:0", "--users", &users, "--messages", "1", "--size", "200"],
        &[],
        Some(3 * n as u64),
    );
    let up = server.addr_after("POP3 server on");
    let (proxy, addr) = proxy_to(up, &["--max-sessions", "6000"], Some(3 * n as u64));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss_before = proxy.status_kib("VmRSS");
    let mut clients = Vec::with_capacity(n);
    let started = std::time::Instant::now();
    for chunk in (1..=n).collect::<Vec<_>>().chunks(250) {
        let mut set = tokio::task::JoinSet::new();
        for &i in chunk {
            set.spawn(async move {
                let mut c = TcpStream::connect(addr).await.expect("connect");
                assert!(read_line(&mut c).await.starts_with(b"+OK"));
                c.write_all(format!("USER user{i}\r\nPASS secret\r\n").as_bytes()).await.unwrap();
                assert!(read_line(&mut c).await.starts_with(b"+OK"));
                let pass = read_line(&mut c).await;
                assert!(pass.starts_with(b"+OK"), "user{i}: {}", String::from_utf8_lossy(&pass));
                c.write_all(then).await.unwrap();
                c
            });
        }
        while let Some(c) = set.join_next().await {
            clients.push(c.expect("a logged-in session"));
        }
    }
    assert_eq!(clients.len(), n);
    Held { server, proxy, rss_before, clients, opened_in: started.elapsed() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_logged_in_sessions_are_held() {
    const N: usize = 5000;
    let Held { server, proxy, rss_before: before, mut clients, opened_in } = held_sessions(N, b"").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = proxy.status_kib("VmRSS");
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    eprintln!(
        "FIGURE {N} logged-in sessions held (opened in {opened_in:?}): proxy RSS {before} -> {after} KiB, {per:.2} KiB per session"
    );
    // Every session still answers through the proxy.
    for c in clients.iter_mut().step_by(500) {
        c.write_all(b"NOOP\r\n").await.unwrap();
        assert!(read_line(c).await.starts_with(b"+OK"));
    }
    assert!(per < 32.0, "{per:.2} KiB per idle session");
    drop(clients);
    proxy.stop();
    server.stop();
}

/// Slowloris: sessions that send the start of a command and then nothing.
/// The start goes on at once and the session holds no read buffer while it
/// waits: 17.6 KiB each before (a 16 KiB buffer was kept for the incomplete
/// line), about what an idle session costs now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_sessions_cost_what_idle_ones_do() {
    const N: usize = 2000;
    // The start of a command, then silence.
    let Held { server, proxy, rss_before: before, mut clients, .. } = held_sessions(N, b"NO").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = proxy.status_kib("VmRSS");
    let per = (after.saturating_sub(before)) as f64 / N as f64;
    eprintln!(
        "FIGURE {N} slowloris sessions (\"NO\" and silence): proxy RSS {before} -> {after} KiB, {per:.2} KiB per session"
    );
    // Each still completes its command through the proxy.
    for c in clients.iter_mut().step_by(250) {
        c.write_all(b"OP\r\n").await.unwrap();
        assert!(read_line(c).await.starts_with(b"+OK"));
    }
    assert!(per < 8.0, "{per:.2} KiB per slowloris session");
    drop(clients);
    proxy.stop();
    server.stop();
}
