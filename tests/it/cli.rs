//! The command line as a user meets it: clear errors with exit code 2,
//! the exposure warning, and a clean shutdown on SIGTERM.

use std::process::Command;
use std::time::Duration;

use crate::support::proc::Proc;
use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn popfault(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(crate::support::BIN).args(args).output().expect("run popfault");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_input_is_a_clear_error_with_exit_code_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["proxy"], "--upstream"),
        (&["proxy", "--upstream", "127.0.0.1:1", "--listen", "nonsense"], "invalid socket address"),
        (&["proxy", "--upstream", "127.0.0.1:1", "--duration=-3"], "not a positive number of seconds"),
        (&["proxy", "--upstream", "127.0.0.1:1", "--duration", "soon"], "not a positive number of seconds"),
        (&["proxy", "--upstream", "no-such-host.invalid:110"], "cannot resolve"),
        (&["proxy", "--upstream", "127.0.0.1"], "HOST:PORT"),
        (&["proxy", "--upstream", "127.0.0.1:1", "--profile", "no-such-profile"], "no built-in profile"),
        (&["serve", "--users", "0"], "users"),
        (&["frobnicate"], "unrecognized subcommand"),
        (&["check-profile", "/no/such/file.toml"], "cannot read profile"),
    ];
    for (args, needle) in cases {
        let (code, _, err) = popfault(args);
        assert_eq!(code, Some(2), "{args:?} exits 2; stderr:\n{err}");
        assert!(err.contains(needle), "{args:?}: stderr names the problem ({needle}):\n{err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn a_listen_address_in_use_is_one_line_and_exit_2() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, _, err) = popfault(&["proxy", "--headless", "--listen", &addr, "--upstream", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    let line = err.lines().find(|l| l.contains("cannot listen")).unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&addr) && line.contains("in use"), "{line}");
    let (code, _, err) = popfault(&["serve", "--listen", &addr]);
    assert_eq!(code, Some(2), "{err}");
}

#[test]
fn listening_beyond_loopback_warns() {
    // Nothing connects: only the warning is checked.
    let (code, _, err) =
        popfault(&["proxy", "--headless", "--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:1", "--duration", "0.2"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("WARNING") && err.contains("carrying passwords"), "{err}");
    let (_, _, err) =
        popfault(&["proxy", "--headless", "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1", "--duration", "0.2"]);
    assert!(!err.contains("WARNING"), "no warning on loopback: {err}");
}

/// SIGTERM: stop accepting, give live sessions --drain, cut the rest with
/// their outcomes recorded, write the summary and the events summary line.
#[tokio::test]
async fn sigterm_drains_cuts_and_summarises() {
    let w = World::start(1, 2).await;
    let dir = std::env::temp_dir().join(format!("popfault-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let (proxy, addr) = Proc::proxy(w.server.addr, &["--drain", "0.5", "--events", events.to_str().unwrap()]);
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greet = [0u8; 3];
    c.read_exact(&mut greet).await.unwrap();
    c.write_all(b"USER user1\r\nPASS secret\r\nDELE 1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();
    assert!(out.contains("draining live sessions"), "{out}");
    assert!(out.contains("popfault summary"), "{out}");
    let mut rest = Vec::new();
    // The read ends (EOF or reset): the proxy cut the client's line.
    let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest)).await.expect("the client's line was cut");
    let text = std::fs::read_to_string(&events).unwrap();
    let end = text.lines().find(|l| l.contains("\"session_end\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(end.contains("\"outcome\":\"rolled-back\"") && end.contains("cut at shutdown"), "{end}");
    assert!(text.lines().last().unwrap().contains("\"event\":\"summary\""), "{text}");
    // Marked, never committed: the server still has both messages.
    tokio::time::timeout(LIMIT, async {
        while w.maildrop().is_locked("user1") {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert_eq!(w.maildrop().remaining("user1").len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--listen` takes a host name as `--upstream` does, and says which
/// address it bound.
#[tokio::test]
async fn listen_takes_a_host_name_and_names_the_address_bound() {
    let w = World::start(1, 1).await;
    let up = w.server.addr.to_string();
    let mut proxy = Proc::spawn_with(&["proxy", "--headless", "--listen", "localhost:0", "--upstream", &up], &[], None);
    let addr = proxy.addr_after("popfault: proxy");
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greet = [0u8; 3];
    tokio::time::timeout(LIMIT, c.read_exact(&mut greet)).await.expect("greeted in time").unwrap();
    assert_eq!(&greet, b"+OK", "relayed through the address bound");
    drop(c);
    let out = tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();
    assert!(out.contains(&format!("--listen localhost:0 resolved to {addr}")), "{out}");
}

/// HOST:PORT whose host does not resolve is a name problem, not a syntax one.
#[test]
fn an_unresolvable_upstream_says_the_host_could_not_be_resolved() {
    let (code, _, err) = popfault(&["proxy", "--headless", "--upstream", "no-such-host.invalid:110"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot resolve the host 'no-such-host.invalid'"), "{err}");
    assert!(!err.contains("expected HOST:PORT"), "the input was HOST:PORT: {err}");
    let (code, _, err) =
        popfault(&["proxy", "--headless", "--listen", "no-such-host.invalid:1110", "--upstream", "127.0.0.1:1"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("cannot resolve the host 'no-such-host.invalid'"), "{err}");
}

/// An upstream that refuses at start: a warning, then the run goes on and
/// its sessions end `refused`.
#[tokio::test]
async fn a_closed_upstream_is_a_warning_at_start_and_the_proxy_keeps_running() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = closed.local_addr().unwrap().to_string();
    drop(closed);
    let dir = std::env::temp_dir().join(format!("popfault-cli-closed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let (proxy, addr) = Proc::proxy(&up, &["--events", events.to_str().unwrap()]);
    // Still listening after the warning: the connection is accepted, then
    // reset as the upstream refused it — which may already have happened
    // when the connect completes (a closed listener would say "refused").
    match tokio::net::TcpStream::connect(addr).await {
        Ok(mut c) => {
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest)).await.expect("the session ends");
        }
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "still listening after the warning: {e}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let out = tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();
    let warning = out.lines().find(|l| l.contains("warning: upstream")).unwrap_or_else(|| panic!("{out}"));
    assert!(warning.contains(&up) && warning.contains("not accepting connections"), "{warning}");
    assert!(warning.contains("refused"), "says what sessions will do: {warning}");
    let text = std::fs::read_to_string(&events).unwrap();
    let end = text.lines().find(|l| l.contains("\"session_end\"")).unwrap_or_else(|| panic!("{text}"));
    assert!(end.contains("\"outcome\":\"refused\""), "{end}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Headless, piped: `--progress` writes a status line every few seconds;
/// `-v` session-end lines are plain key=value, without colour or Rust debug.
#[tokio::test]
async fn headless_progress_and_plain_logs() {
    let w = World::start(1, 1).await;
    let (proxy, addr) = Proc::proxy(w.server.addr, &["--progress", "-v"]);
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut greet = [0u8; 3];
    c.read_exact(&mut greet).await.unwrap();
    c.write_all(b"USER user1\r\nPASS secret\r\nQUIT\r\n").await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(LIMIT, c.read_to_end(&mut rest)).await.expect("QUIT answered");
    drop(c);
    tokio::time::sleep(popfault::cli::common::PROGRESS_EVERY * 2).await;
    let out = tokio::task::spawn_blocking(move || proxy.stop()).await.unwrap();
    let progress: Vec<&str> = out.lines().filter(|l| l.starts_with("popfault: ") && l.contains(" live, ")).collect();
    assert!(!progress.is_empty(), "a progress line:\n{out}");
    let last = progress.last().unwrap();
    assert!(last.contains("0 live, 1 ended") && last.contains("clean-quit 1") && last.contains("faults 0"), "{last}");
    let end = out.lines().find(|l| l.contains("session ended")).unwrap_or_else(|| panic!("{out}"));
    assert!(end.contains("user=user1") && end.contains("outcome=clean-quit") && end.contains("session=1"), "{end}");
    assert!(!end.contains("Some(") && !end.contains('\x1b'), "plain text: {end:?}");
    assert!(end.contains("ended_by=\""), "a value with spaces is quoted: {end}");
}
