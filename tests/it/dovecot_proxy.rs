//! popfault in front of a real Dovecot: full sessions pass byte-exact, a
//! lost carrier before QUIT rolls back (Dovecot keeps every message), and a
//! lost QUIT answer is in doubt (the test records what Dovecot did).
//! Skips with a SKIPPED line without Dovecot unless POPFAULT_REQUIRE_DOVECOT=1.

use std::time::Duration;

use crate::support::dovecot::Dovecot;
use crate::support::*;
use popfault::client::{Mode, UidMemory, WorkloadConfig, run_session};
use popfault::session::Outcome;

fn workload(d: &Dovecot) -> WorkloadConfig {
    WorkloadConfig {
        user: d.user.clone(),
        password: d.password.clone().into(),
        mode: Mode::DownloadAndDelete,
        timeout: Duration::from_secs(10),
        max_messages: None,
    }
}

/// Sessions through a recording tap: what the client sent is what Dovecot
/// got, and what Dovecot sent is what the client got (SHA-256), for
/// USER/PASS, AUTH PLAIN, CAPA, UIDL, TOP and a pipelined batch.
#[tokio::test]
async fn full_sessions_through_popfault_are_byte_exact() {
    let Some(d) = Dovecot::start(4) else { return };
    let (tap_addr, rec) = tap(d.addr).await;
    let (proxy, mut events) = proxy_to(&tap_addr.to_string()).await;
    let plain = b64(format!("\0{}\0{}", d.user, d.password).as_bytes());
    let scripts = [
        format!(
            "CAPA\r\nUSER {}\r\nPASS {}\r\nSTAT\r\nUIDL\r\nTOP 1 3\r\nRETR 2\r\nLIST\r\nQUIT\r\n",
            d.user, d.password
        ),
        format!("AUTH PLAIN {plain}\r\nUIDL 1\r\nRETR 1\r\nRETR 3\r\nNOOP\r\nQUIT\r\n"),
        format!("USER {}\r\nPASS {}\r\nRETR 4\r\nDELE 4\r\nRSET\r\nQUIT\r\n", d.user, d.password),
    ];
    for script in &scripts {
        // Everything in one write: Dovecot pipelines (CAPA says PIPELINING).
        let got = converse(proxy.local_addr, script.as_bytes()).await;
        let end = next_end(&mut events).await;
        let r = take_recorded(&rec, got.len()).await;
        assert_eq!(sha256(&r.up), sha256(script.as_bytes()), "client → Dovecot");
        assert_eq!(sha256(&r.down), sha256(&got), "Dovecot → client");
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("-ERR"), "Dovecot accepted every command:\n{text}");
        assert_eq!(end.outcome, Outcome::CleanQuit, "{text}");
        assert!(end.downloaded >= 1);
    }
    d.wait_idle().await;
    assert_eq!(d.remaining(), 4, "nothing was committed");
}

#[tokio::test]
async fn lost_carrier_before_quit_rolls_back_and_dovecot_keeps_everything() {
    let Some(d) = Dovecot::start(5) else { return };
    let p = profile(
        "[[rule]]\nname = \"carrier-lost\"\nwhen = \"body\"\ncommand = \"RETR\"\nnth = 3\nfraction = 0.5\n\
         actions = [{ do = \"disconnect\", how = \"rst\" }]\n",
    );
    let (proxy, mut events) = proxy_with(&d.addr.to_string(), p, 1).await;
    let report = run_session(proxy.local_addr, &workload(&d), &mut UidMemory::new()).await;
    assert_eq!((report.received.len(), report.marked.len(), report.quit_ok), (2, 2, None), "{report:?}");
    let end = next_end(&mut events).await;
    assert_eq!(end.outcome, Outcome::RolledBack);
    assert_eq!((end.downloaded, end.marked, end.at_risk), (2, 2, 2));
    d.wait_idle().await;
    assert_eq!(d.remaining(), 5, "Dovecot kept every message (RFC 1939 §6)");
}

#[tokio::test]
async fn lost_quit_answer_is_in_doubt_and_dovecot_had_committed() {
    let Some(d) = Dovecot::start(3) else { return };
    let (proxy, mut events) = proxy_with(&d.addr.to_string(), builtin("lost-carrier-at-quit"), 1).await;
    let report = run_session(proxy.local_addr, &workload(&d), &mut UidMemory::new()).await;
    assert_eq!(report.received.len(), 3);
    assert_eq!(report.quit_ok, None, "the client never got QUIT's answer");
    let end = next_end(&mut events).await;
    assert_eq!(end.outcome, Outcome::InDoubt);
    assert_eq!(end.at_risk, 3);
    d.wait_idle().await;
    // What Dovecot did: it expunges before it answers QUIT, so its +OK
    // (which the proxy held back) meant the deletions had happened.
    let left = d.remaining();
    eprintln!("RECORD lost QUIT answer: Dovecot kept {left} of 3 messages");
    assert_eq!(left, 0, "Dovecot commits before answering QUIT");
}

/// Runs curl (blocking, bounded by `--max-time`) and returns its stdout, or
/// `None` after a SKIPPED line when curl is not installed (a failure when
/// POPFAULT_REQUIRE_DOVECOT is set: CI installs it with Dovecot).
fn curl(args: &[String]) -> Option<Vec<u8>> {
    if crate::support::dovecot::which("curl").is_none() {
        let required = std::env::var("POPFAULT_REQUIRE_DOVECOT").is_ok_and(|v| !v.is_empty() && v != "0");
        assert!(!required, "POPFAULT_REQUIRE_DOVECOT is set but curl is not installed");
        eprintln!("SKIPPED: curl not installed");
        return None;
    }
    let out = std::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run curl");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    Some(out.stdout)
}

/// POP3S (implicit TLS) sent to a plain popfault listener in front of
/// Dovecot's POP3S port. The ClientHello has no line end, so a proxy that
/// holds incomplete lines waits for the rest while the client waits for the
/// ServerHello: 0 of 6 such downloads completed before. popfault sees a TLS
/// handshake, relays both ways opaquely, and the mail is byte-identical to
/// a direct download.
#[tokio::test]
async fn pop3s_through_a_plain_listener_is_relayed_opaquely() {
    let Some(d) = Dovecot::start_tls(3) else { return };
    let pop3s = d.pop3s.expect("a POP3S listener");
    let (proxy, mut events) = proxy_to(&pop3s.to_string()).await;
    let user = format!("{}:{}", d.user, d.password);
    let fetch = move |addr: std::net::SocketAddr, n: usize| {
        let args = vec!["--insecure".into(), "--user".into(), user.clone(), format!("pop3s://{addr}/{n}")];
        tokio::task::spawn_blocking(move || curl(&args))
    };
    for n in 1..=3 {
        let Some(direct) = fetch(pop3s, n).await.unwrap() else { return };
        let proxied = fetch(proxy.local_addr, n).await.unwrap().expect("curl ran once");
        assert!(String::from_utf8_lossy(&direct).contains(&Dovecot::message_id(n)), "message {n} came directly");
        assert_eq!(sha256(&proxied), sha256(&direct), "message {n} through popfault is byte-identical");
        let end = next_end(&mut events).await;
        assert!(end.encrypted, "session {} is marked encrypted", end.session);
        assert_eq!(end.outcome, Outcome::NoLogin, "what popfault can tell of a session it cannot read");
        assert!(end.bytes_down > direct.len() as u64, "the TLS records were relayed");
    }
}
