//! Credentials never leave the process: the real binaries (server and
//! proxy, logging at trace level) carry USER/PASS, APOP and AUTH PLAIN
//! sessions, and no secret appears in their output or the events file.

use std::time::Duration;

use popfault::client::{Pop3Client, apop_digest, apop_timestamp};

mod support;
use support::b64;
use support::proc::Proc;

const SECRET: &str = "Zebra-Tangerine-4417";

#[test]
fn no_secret_in_logs_events_or_summary() {
    let dir = std::env::temp_dir().join(format!("popfault-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let mut server = Proc::spawn_traced(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--users",
        "2",
        "--messages",
        "2",
        "--password",
        SECRET,
    ]);
    let upstream = server.addr_after("POP3 server on");
    let mut proxy = Proc::spawn_traced(&[
        "proxy",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &upstream.to_string(),
        "--headless",
        "--drain",
        "1",
        "--events",
        events.to_str().unwrap(),
        "-vvv",
    ]);
    let addr = proxy.addr_after("popfault: proxy");

    let rt = tokio::runtime::Runtime::new().unwrap();
    let digests = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut digests = Vec::new();
            // USER / PASS
            let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
            c.login("user1", SECRET).await.unwrap();
            c.retr(1).await.unwrap();
            c.quit().await.unwrap();
            // APOP
            let (mut c, greeting) = Pop3Client::connect(addr).await.unwrap();
            digests.push(apop_digest(apop_timestamp(&greeting).unwrap(), SECRET));
            c.apop("user2", SECRET).await.unwrap();
            c.quit().await.unwrap();
            // AUTH PLAIN with an initial response, and after a continuation
            for initial in [true, false] {
                let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
                c.auth_plain("user1", SECRET, initial).await.unwrap();
                c.quit().await.unwrap();
            }
            // A failed login, and a cancelled AUTH exchange
            let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
            assert!(c.login("user1", &format!("{SECRET}-wrong")).await.is_err());
            c.send_raw(b"AUTH PLAIN\r\n").await.unwrap();
            let _ = c.read_line().await.unwrap();
            c.send_raw(b"*\r\n").await.unwrap();
            let _ = c.read_line().await;
            c.quit().await.unwrap();
            digests
        })
        .await
        .expect("sessions in time")
    });

    let proxy_out = proxy.stop();
    let server_out = server.stop();
    let events_text = std::fs::read_to_string(&events).unwrap();
    let plain = b64(format!("\0user1\0{SECRET}").as_bytes());
    let mut needles = vec![SECRET.to_string(), plain, b64(SECRET.as_bytes())];
    needles.extend(digests);
    for (what, text) in [("proxy output", &proxy_out), ("server output", &server_out), ("events file", &events_text)] {
        for n in &needles {
            assert!(!text.contains(n.as_str()), "{what} contains a secret ({n})");
        }
    }
    // The output is real: trace logging happened and the summary was printed.
    assert!(proxy_out.contains("session ended"), "trace logs present");
    assert!(proxy_out.contains("popfault summary"), "summary printed at SIGTERM:\n{proxy_out}");
    assert!(events_text.lines().last().unwrap_or_default().contains("\"event\":\"summary\""));
    assert_eq!(events_text.lines().filter(|l| l.contains("session_end")).count(), 5);
    let _ = std::fs::remove_dir_all(&dir);
}
