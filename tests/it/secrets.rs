//! Credentials never leave the process: the real binaries (server and
//! proxy, logging at trace level) carry USER/PASS, APOP and AUTH PLAIN
//! sessions, and no secret appears in their output or the events file.

use std::time::Duration;

use popfault::client::{Pop3Client, apop_digest, apop_timestamp};

use crate::support::proc::Proc;
use crate::support::{b64, line_server};

const SECRET: &str = "Zebra-Tangerine-4417";

/// The proxy to `upstream`, logging at trace level, writing `events`.
fn traced_proxy(upstream: std::net::SocketAddr, events: &std::path::Path) -> (Proc, std::net::SocketAddr) {
    let extra = ["--drain", "1", "--events", events.to_str().unwrap(), "-vvv"];
    Proc::proxy_with(upstream, &extra, &[("POPFAULT_LOG", "trace")], None)
}

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
    let (proxy, addr) = traced_proxy(upstream, &events);

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

/// Whether `text` holds `needle` in any case (a keyword is upper-cased on
/// the way in, so a leak may come out in either).
fn contains_any_case(text: &str, needle: &str) -> bool {
    text.to_ascii_lowercase().contains(&needle.to_ascii_lowercase())
}

/// Every form a secret may leak in: as typed, base64, and as a SASL PLAIN
/// response for `user`; compared in any case.
fn forms(secret: &str, user: &str) -> Vec<String> {
    vec![secret.to_string(), b64(secret.as_bytes()), b64(format!("\0{user}\0{secret}").as_bytes())]
}

fn assert_no_forms(outputs: &[(&str, &str)], needles: &[String]) {
    for (what, text) in outputs {
        for n in needles {
            assert!(!contains_any_case(text, n), "{what} contains a secret ({n}):\n{text}");
        }
    }
}

/// The user name of each `session_end` line, in order.
/// The `user` of each session's end, in session order (a session may end
/// after the next one began and ended: its close is seen later).
fn users(events: &str) -> Vec<serde_json::Value> {
    let mut ends: Vec<serde_json::Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "session_end")
        .collect();
    ends.sort_by_key(|v| v["session"].as_u64());
    ends.into_iter().map(|v| v["user"].clone()).collect()
}

/// Lines the parser cannot know are secrets: a password typed on a line of
/// its own (or its base64, an AUTH LOGIN answer out of step), `PASS` with a
/// tab, a user name with spaces and an unknown keyword that is a password.
/// None of them reaches the stderr log at -vvv, the events file or the
/// summary: unknown keywords are the one label `OTHER`, the odd user name
/// is `(invalid)`.
#[test]
fn unrecognised_lines_and_odd_user_names_leak_nothing() {
    const ALONE: &str = "Wq4Lime-Otter-82";
    const TABBED: &str = "Tx8Garnet-Heron";
    const SPACED: [&str; 2] = ["Zq7Kx9", "Wv3Tp"];
    const KEYWORD: &str = "Kp2Vx7Nw";
    const B64_ALONE: &str = "Rb5Cobalt-Finch";
    let dir = std::env::temp_dir().join(format!("popfault-secrets-lines-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let mut server = Proc::spawn_traced(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--users",
        "1",
        "--messages",
        "1",
        "--password",
        SECRET,
    ]);
    let upstream = server.addr_after("POP3 server on");
    let (proxy, addr) = traced_proxy(upstream, &events);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let scripts: Vec<Vec<String>> = vec![
                vec!["USER user1".into(), ALONE.into()],
                vec!["USER user1".into(), format!("PASS\t{TABBED}")],
                vec![format!("USER user1 {} {}", SPACED[0], SPACED[1])],
                vec![format!("{KEYWORD} {SECRET}")],
                vec!["USER user1".into(), b64(B64_ALONE.as_bytes())],
            ];
            for script in scripts {
                let (mut c, _) = Pop3Client::connect(addr).await.unwrap();
                for line in script {
                    c.send_raw(format!("{line}\r\n").as_bytes()).await.unwrap();
                    let _ = c.read_line().await.unwrap();
                }
                c.quit().await.unwrap();
            }
        })
        .await
        .expect("sessions in time")
    });

    let proxy_out = proxy.stop();
    let server_out = server.stop();
    let events_text = std::fs::read_to_string(&events).unwrap();
    let mut needles = Vec::new();
    for s in [ALONE, TABBED, SPACED[0], SPACED[1], KEYWORD, B64_ALONE, SECRET] {
        needles.extend(forms(s, "user1"));
    }
    assert_no_forms(
        &[("proxy stdout and stderr", &proxy_out), ("events file", &events_text), ("server output", &server_out)],
        &needles,
    );
    // The output is real, and says what the new contract says.
    assert!(proxy_out.contains("session ended"), "trace logs present");
    assert!(proxy_out.contains("popfault summary"), "summary printed at SIGTERM:\n{proxy_out}");
    let summary: serde_json::Value = serde_json::from_str(events_text.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["event"], "summary");
    let keys: Vec<&str> = summary["latency_us"].as_object().unwrap().keys().map(String::as_str).collect();
    assert!(keys.contains(&"OTHER") && keys.contains(&"PASS"), "unknown lines are OTHER, PASS<TAB> is PASS: {keys:?}");
    assert!(keys.iter().all(|k| popfault::codec::command::is_label(k)), "only known labels: {keys:?}");
    let users = users(&events_text);
    assert_eq!(users.len(), 5);
    assert_eq!(users[2], "(invalid)", "a user name with spaces is not kept: {users:?}");
    assert!(users.iter().all(|u| u.is_null() || u == "user1" || u == "(invalid)"), "{users:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A server that speaks AUTH LOGIN: `AUTH LOGIN`, `+ VXNlcm5hbWU6`, the
/// user, `+ UGFzc3dvcmQ6`, the password, `+OK`; `QUIT` gets `+OK` and the
/// connection is closed.
async fn auth_login_server() -> std::net::SocketAddr {
    line_server("+OK login server\r\n".into(), |lines| {
        let reply = match (lines.len() - 1, lines.last().unwrap().as_str()) {
            (_, "QUIT") => "+OK bye\r\n",
            (0, "AUTH LOGIN") => "+ VXNlcm5hbWU6\r\n",
            (1, _) => "+ UGFzc3dvcmQ6\r\n",
            (2, _) => "+OK logged in\r\n",
            _ => "-ERR what\r\n",
        };
        reply.into()
    })
    .await
}

/// AUTH LOGIN with the user and password pipelined behind it (before the
/// continuations arrive): the lines are SASL data all the same, so the
/// base64 password is never a keyword, and the session that got `+OK` to
/// its QUIT is a clean quit, not in doubt.
#[test]
fn pipelined_auth_login_leaks_nothing_and_quits_clean() {
    const PASSWORD: &str = "Vy6Marble-Puffin";
    let dir = std::env::temp_dir().join(format!("popfault-secrets-pipelined-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(auth_login_server());
    let (proxy, addr) = traced_proxy(upstream, &events);
    let got = rt.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::time::timeout(Duration::from_secs(30), async {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let script = format!("AUTH LOGIN\r\n{}\r\n{}\r\nQUIT\r\n", b64(b"loginuser"), b64(PASSWORD.as_bytes()));
            s.write_all(script.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            String::from_utf8_lossy(&got).into_owned()
        })
        .await
        .expect("the session ended in time")
    });
    assert!(got.ends_with("+OK logged in\r\n+OK bye\r\n"), "the client saw:\n{got}");
    let proxy_out = proxy.stop();
    let events_text = std::fs::read_to_string(&events).unwrap();
    assert_no_forms(
        &[("proxy stdout and stderr", &proxy_out), ("events file", &events_text)],
        &forms(PASSWORD, "loginuser"),
    );
    let end: serde_json::Value = events_text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["event"] == "session_end")
        .expect("a session_end line");
    assert_eq!(end["outcome"], "clean-quit", "{end}");
    let _ = std::fs::remove_dir_all(&dir);
}
