//! The library API as a Rust test suite uses it: nothing but `popfault::{Proxy,
//! Profile, Outcome, SessionEnd, Summary, server}`.

use std::time::Duration;

use popfault::{Outcome, Proxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(20);

/// A minimal POP3 client: sends `commands` one by one, reading each answer
/// (multi-line for RETR), until the server closes or QUIT is answered.
async fn converse(addr: std::net::SocketAddr, commands: &[&str]) -> Vec<String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    let mut lines = Vec::new();
    let mut line = String::new();
    if r.read_line(&mut line).await.unwrap_or(0) == 0 {
        return lines;
    }
    lines.push(std::mem::take(&mut line));
    for cmd in commands {
        if w.write_all(format!("{cmd}\r\n").as_bytes()).await.is_err() {
            break;
        }
        if r.read_line(&mut line).await.unwrap_or(0) == 0 {
            break;
        }
        let ok = line.starts_with("+OK");
        lines.push(std::mem::take(&mut line));
        if ok && cmd.starts_with("RETR") {
            loop {
                if r.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return lines;
                }
                let end = line == ".\r\n";
                line.clear();
                if end {
                    break;
                }
            }
        }
    }
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest).await;
    lines
}

#[tokio::test]
async fn a_test_suite_drives_popfault_in_process() {
    let cfg = popfault::server::ServerConfig { users: 1, messages: 3, size: 5000, ..Default::default() };
    let world = popfault::server::spawn("127.0.0.1:0".parse().unwrap(), popfault::server::Maildrop::new(&cfg))
        .await
        .expect("embedded server");
    // The 2nd RETR of a session is cut halfway: a lost carrier.
    let cut_second = "name = \"cut\"\n[[rule]]\nname = \"cut-2nd\"\nwhen = \"body\"\ncommand = \"RETR\"\nnth = 2\nfraction = 0.5\n\
                      actions = [{ do = \"disconnect\", side = \"both\", how = \"rst\" }]\n";
    let mut proxy =
        Proxy::builder(world.addr.to_string()).profile_toml(cut_second).unwrap().seed(7).start().await.unwrap();
    assert_eq!(proxy.seed(), 7);
    assert!(proxy.addr().port() != 0, "a real port");

    let login = ["USER user1", "PASS secret"];
    converse(proxy.addr(), &[&login[..], &["RETR 1", "DELE 1", "RETR 2", "DELE 2", "QUIT"]].concat()).await;
    let end = tokio::time::timeout(LIMIT, proxy.next_end()).await.unwrap().expect("a session end");
    assert_eq!((end.outcome, end.downloaded, end.marked, end.at_risk), (Outcome::RolledBack, 1, 1, 1));
    assert_eq!(end.ended_by, "fault: cut-2nd");

    // The next session downloads message 1 again: a duplicate the first
    // session's rollback put at risk. The profile changed: nothing is cut.
    proxy.set_profile(popfault::Profile::passthrough());
    converse(proxy.addr(), &[&login[..], &["RETR 1", "DELE 1", "QUIT"]].concat()).await;
    let end = tokio::time::timeout(LIMIT, proxy.next_end()).await.unwrap().expect("a session end");
    assert_eq!((end.outcome, end.duplicates), (Outcome::Committed, 1));
    assert!(proxy.try_next_end().is_none());

    let summary = proxy.stop().await;
    assert_eq!((summary.sessions, summary.duplicates, summary.at_risk), (2, 1, 1));
    assert_eq!(summary.outcomes.get("rolled-back"), Some(&1));
    assert_eq!(summary.outcomes.get("committed"), Some(&1));
    assert_eq!(summary.seed, 7);
}

#[tokio::test]
async fn stop_cuts_live_sessions_and_counts_them() {
    let world =
        popfault::server::spawn("127.0.0.1:0".parse().unwrap(), popfault::server::Maildrop::new(&Default::default()))
            .await
            .expect("embedded server");
    let proxy = Proxy::builder(world.addr.to_string()).builtin("passthrough").unwrap().start().await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut greeting = [0u8; 3];
    tokio::time::timeout(LIMIT, c.read_exact(&mut greeting)).await.unwrap().unwrap();
    assert_eq!(&greeting, b"+OK");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while proxy.live_sessions() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(proxy.live_sessions(), 1);
    let summary = tokio::time::timeout(LIMIT, proxy.stop()).await.expect("stop ends");
    assert_eq!(summary.sessions, 1);
    assert_eq!(summary.outcomes.get("no-login"), Some(&1));
    assert!(matches!(Proxy::builder("x:1").builtin("no-such"), Err(popfault::Error::UnknownProfile(_))));
}

/// A line a fault left open and silent (`disconnect how = "silent"`, and
/// `refuse how = "hang"`) is still a live session a person can cut: both
/// sides are reset at once, and the session's faults name `manual`.
#[tokio::test]
async fn a_cut_ends_a_line_held_silent() {
    use tokio::io::AsyncReadExt;
    let world = popfault::server::spawn(
        "127.0.0.1:0".parse().unwrap(),
        popfault::server::Maildrop::new(&popfault::server::ServerConfig::default()),
    )
    .await
    .unwrap();
    for (toml, rule) in [
        (
            "[[rule]]\nname = \"mute\"\nwhen = \"greeting\"\nactions = [{ do = \"disconnect\", how = \"silent\" }]\n",
            "mute",
        ),
        ("[[rule]]\nname = \"hang\"\nwhen = \"accept\"\nactions = [{ do = \"refuse\", how = \"hang\" }]\n", "hang"),
    ] {
        let mut proxy = Proxy::builder(world.addr.to_string()).profile_toml(toml).unwrap().start().await.unwrap();
        let mut client = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        let mut buf = [0u8; 64];
        // Held: nothing comes.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), client.read(&mut buf)).await.is_err(),
            "{rule}: silent"
        );
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while !proxy.cut(1) {
            assert!(std::time::Instant::now() < until, "{rule}: session 1 is live and can be cut");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let read = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
        let err = read.expect("the cut ended the hold at once").expect_err("a reset, not a close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{rule}");
        let end = tokio::time::timeout(Duration::from_secs(5), proxy.next_end()).await.unwrap().unwrap();
        assert_eq!(end.faults, vec![rule.to_string(), "manual".to_string()], "{rule}: {end:?}");
        proxy.stop().await;
    }
}
