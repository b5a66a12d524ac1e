//! The POP3 client and its workloads against a scripted fake server: real
//! sockets on port 0, a fixed byte script, and a record of every line the
//! client sent. Every test is bounded so a regression fails instead of
//! hanging.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use popfault::client::{ClientError, Mode, Pop3Client, SessionReport, UidMemory, WorkloadConfig, run_session};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Upper bound on any one test.
const TEST_LIMIT: Duration = Duration::from_secs(20);

/// A short client timeout for tests where the server goes silent.
const SHORT: Duration = Duration::from_millis(300);

/// One step of the fake server's script.
enum Step {
    /// Write these bytes in one go.
    Send(Vec<u8>),
    /// Write these bytes one at a time, flushing each.
    Trickle(Vec<u8>),
    /// Read one line from the client and record it.
    Recv,
    /// Close the connection now (the rest of the script is ignored).
    Close,
    /// Keep the connection open and say nothing until the client leaves.
    Hang,
}

fn send(s: &str) -> Step {
    Step::Send(s.as_bytes().to_vec())
}

fn trickle(s: &str) -> Step {
    Step::Trickle(s.as_bytes().to_vec())
}

/// Starts a fake server for one connection. The handle yields the lines
/// the client sent, without CRLF.
async fn fake_server(script: Vec<Step>) -> (SocketAddr, JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let handle = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        stream.set_nodelay(true).expect("nodelay");
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        let mut seen = Vec::new();
        for step in script {
            match step {
                Step::Send(bytes) => {
                    if write.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Step::Trickle(bytes) => {
                    for b in bytes {
                        if write.write_all(&[b]).await.is_err() || write.flush().await.is_err() {
                            break;
                        }
                        tokio::task::yield_now().await;
                    }
                }
                Step::Recv => {
                    let mut line = String::new();
                    match read.read_line(&mut line).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => seen.push(line.trim_end_matches(['\r', '\n']).to_string()),
                    }
                }
                Step::Close => break,
                Step::Hang => {
                    let mut sink = Vec::new();
                    let _ = read.read_to_end(&mut sink).await;
                    break;
                }
            }
        }
        seen
    });
    (addr, handle)
}

/// Runs a test body under [`TEST_LIMIT`].
async fn bounded<F: Future>(body: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, body).await.expect("test exceeded its time limit")
}

const GREETING: &str = "+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n";

/// Greeting, then +OK to USER and PASS.
fn login_script() -> Vec<Step> {
    vec![
        send(GREETING),
        Step::Recv,
        send("+OK alice\r\n"),
        Step::Recv,
        send("+OK maildrop has 2 messages (320 octets)\r\n"),
    ]
}

fn msg(n: u32) -> String {
    format!("From: a@example.org\r\nMessage-ID: <m{n}@example.org>\r\nSubject: {n}\r\n\r\nbody {n}\r\n")
}

/// A RETR response for `msg(n)` (nothing in it needs stuffing).
fn retr_reply(n: u32) -> String {
    format!("+OK message follows\r\n{}.\r\n", msg(n))
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn config(mode: Mode) -> WorkloadConfig {
    WorkloadConfig {
        user: "alice".into(),
        password: "secret".into(),
        mode,
        timeout: Duration::from_secs(5),
        max_messages: None,
    }
}

// === client ===

#[tokio::test]
async fn greeting_and_login() {
    bounded(async {
        let mut script = login_script();
        script.extend([Step::Recv, send("+OK bye\r\n")]);
        let (addr, server) = fake_server(script).await;
        let (mut client, greeting) = Pop3Client::connect(addr).await.unwrap();
        assert_eq!(greeting, GREETING.trim_end());
        assert_eq!(client.greeting(), GREETING.trim_end());
        let text = client.login("alice", "secret").await.unwrap();
        assert_eq!(text, "maildrop has 2 messages (320 octets)");
        client.quit().await.unwrap();
        assert_eq!(server.await.unwrap(), ["USER alice", "PASS secret", "QUIT"]);
    })
    .await;
}

#[tokio::test]
async fn retr_unstuffs_dot_lines() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send(concat!(
                "+OK 60 octets\r\n",
                "Subject: dots\r\n",
                "\r\n",
                "..leading dot\r\n",
                "..\r\n",
                "...\r\n",
                "middle . dot\r\n",
                ".\r\n",
            )),
        ]);
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        client.login("alice", "secret").await.unwrap();
        let body = client.retr(1).await.unwrap();
        assert_eq!(body, b"Subject: dots\r\n\r\n.leading dot\r\n.\r\n..\r\nmiddle . dot\r\n");
        assert_eq!(server.await.unwrap()[2], "RETR 1");
    })
    .await;
}

#[tokio::test]
async fn whole_session_survives_one_byte_writes() {
    bounded(async {
        let script = vec![
            trickle(GREETING),
            Step::Recv,
            trickle("+OK\r\n"),
            Step::Recv,
            trickle("+OK\r\n"),
            Step::Recv,
            trickle("+OK Capability list follows\r\nUSER\r\nUIDL\r\nTOP\r\n.\r\n"),
            Step::Recv,
            trickle("+OK 2 320\r\n"),
            Step::Recv,
            trickle("+OK 2 messages\r\n1 120\r\n2 200\r\n.\r\n"),
            Step::Recv,
            trickle("+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"),
            Step::Recv,
            trickle("+OK\r\nSubject: x\r\n\r\n..\r\n..stuffed\r\n.\r\n"),
            Step::Recv,
            trickle("+OK\r\nSubject: x\r\n\r\n.\r\n"),
            Step::Recv,
            trickle("+OK\r\n"),
        ];
        let (addr, server) = fake_server(script).await;
        let (mut client, greeting) = Pop3Client::connect(addr).await.unwrap();
        assert_eq!(greeting, GREETING.trim_end());
        client.login("alice", "secret").await.unwrap();
        assert_eq!(client.capa().await.unwrap(), ["USER", "UIDL", "TOP"]);
        assert_eq!(client.stat().await.unwrap(), (2, 320));
        assert_eq!(client.list().await.unwrap(), [(1, 120), (2, 200)]);
        assert_eq!(
            client.uidl().await.unwrap(),
            [(1, "whqtswO00WBw418f9t5JxYwZ".to_string()), (2, "QhdPYR:00WBw1Ph7x7".to_string())]
        );
        assert_eq!(client.retr(1).await.unwrap(), b"Subject: x\r\n\r\n.\r\n.stuffed\r\n");
        assert_eq!(client.top(2, 0).await.unwrap(), b"Subject: x\r\n\r\n");
        client.dele(1).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            ["USER alice", "PASS secret", "CAPA", "STAT", "LIST", "UIDL", "RETR 1", "TOP 2 0", "DELE 1"]
        );
    })
    .await;
}

#[tokio::test]
async fn apop_sends_rfc1939_digest() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, send("+OK mrose's maildrop\r\n")];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        // RFC 1939 §7: shared secret "tanstaaf".
        client.apop("mrose", "tanstaaf").await.unwrap();
        assert_eq!(server.await.unwrap(), ["APOP mrose c4c9334bac560ecc979e58001b3e22fb"]);
    })
    .await;
}

#[tokio::test]
async fn apop_without_timestamp_is_protocol_error() {
    bounded(async {
        let (addr, _server) = fake_server(vec![send("+OK ready\r\n"), Step::Hang]).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let err = client.apop("mrose", "x").await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn auth_plain_with_initial_response() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, send("+OK welcome\r\n")];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        client.auth_plain("alice", "secret", true).await.unwrap();
        assert_eq!(server.await.unwrap(), ["AUTH PLAIN AGFsaWNlAHNlY3JldA=="]);
    })
    .await;
}

#[tokio::test]
async fn auth_plain_after_continuation() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, send("+ \r\n"), Step::Recv, send("+OK welcome\r\n")];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let text = client.auth_plain("alice", "secret", false).await.unwrap();
        assert_eq!(text, "welcome");
        assert_eq!(server.await.unwrap(), ["AUTH PLAIN", "AGFsaWNlAHNlY3JldA=="]);
    })
    .await;
}

#[tokio::test]
async fn auth_plain_refused_is_err() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, send("-ERR [AUTH] mechanism not supported\r\n")];
        let (addr, _server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let err = client.auth_plain("alice", "secret", false).await.unwrap_err();
        assert!(matches!(&err, ClientError::Err(t) if t == "[AUTH] mechanism not supported"), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn err_reply_surfaces_with_its_text() {
    bounded(async {
        let script = vec![
            send(GREETING),
            Step::Recv,
            send("+OK\r\n"),
            Step::Recv,
            send("-ERR [IN-USE] maildrop locked\r\n"),
            Step::Recv,
            send("+OK bye\r\n"),
        ];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let err = client.login("alice", "secret").await.unwrap_err();
        assert!(matches!(&err, ClientError::Err(t) if t == "[IN-USE] maildrop locked"), "{err:?}");
        assert!(err.connection_usable());
        // The connection still answers after -ERR.
        client.quit().await.unwrap();
        assert_eq!(server.await.unwrap().len(), 3);
    })
    .await;
}

#[tokio::test]
async fn err_greeting_is_err() {
    bounded(async {
        let (addr, _server) = fake_server(vec![send("-ERR go away\r\n")]).await;
        let err = Pop3Client::connect(addr).await.unwrap_err();
        assert!(matches!(&err, ClientError::Err(t) if t == "go away"), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn eof_mid_body_is_an_error_not_a_hang() {
    bounded(async {
        let script =
            vec![send(GREETING), Step::Recv, send("+OK message follows\r\nSubject: x\r\n\r\npart"), Step::Close];
        let (addr, _server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let err = client.retr(1).await.unwrap_err();
        assert!(matches!(err, ClientError::Disconnected), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn silent_server_times_out() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, Step::Hang];
        let (addr, _server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect_with_timeout(addr, SHORT).await.unwrap();
        let err = client.noop().await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn missing_greeting_times_out() {
    bounded(async {
        let (addr, _server) = fake_server(vec![Step::Hang]).await;
        let err = Pop3Client::connect_with_timeout(addr, SHORT).await.unwrap_err();
        assert!(matches!(err, ClientError::Timeout), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn overlong_line_is_refused() {
    bounded(async {
        let mut flood = GREETING.as_bytes().to_vec();
        flood.extend(std::iter::repeat_n(b'x', 200 * 1024));
        let (addr, _server) = fake_server(vec![Step::Send(flood), Step::Hang]).await;
        let (mut client, _) = Pop3Client::connect_with_timeout(addr, SHORT).await.unwrap();
        let err = client.read_line().await.unwrap_err();
        assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn line_breaks_in_arguments_are_refused_before_sending() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, send("+OK\r\n")];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        let err = client.login("alice\r\nDELE 1", "x").await.unwrap_err();
        assert!(matches!(err, ClientError::InvalidArgument(_)), "{err:?}");
        client.noop().await.unwrap();
        assert_eq!(server.await.unwrap(), ["NOOP"]);
    })
    .await;
}

#[tokio::test]
async fn hand_pipelined_commands() {
    bounded(async {
        let script = vec![send(GREETING), Step::Recv, Step::Recv, send("+OK\r\n+OK\r\nHello\r\n.\r\n")];
        let (addr, server) = fake_server(script).await;
        let (mut client, _) = Pop3Client::connect(addr).await.unwrap();
        client.send_raw(b"NOOP\r\nRETR 1\r\n").await.unwrap();
        assert_eq!(client.read_line().await.unwrap(), "+OK");
        client.read_status().await.unwrap();
        assert_eq!(client.read_multiline().await.unwrap(), b"Hello\r\n");
        assert_eq!(server.await.unwrap(), ["NOOP", "RETR 1"]);
    })
    .await;
}

// === workloads ===

#[tokio::test]
async fn download_and_delete_interleaves_retr_and_dele() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK 2 320\r\n"),
            Step::Recv,
            send(&retr_reply(1)),
            Step::Recv,
            send("+OK message 1 deleted\r\n"),
            Step::Recv,
            send(&retr_reply(2)),
            Step::Recv,
            send("+OK message 2 deleted\r\n"),
            Step::Recv,
            send("+OK bye\r\n"),
        ]);
        let (addr, server) = fake_server(script).await;
        let mut memory = UidMemory::new();
        let report = run_session(addr, &config(Mode::DownloadAndDelete), &mut memory).await;
        assert_eq!(
            server.await.unwrap(),
            ["USER alice", "PASS secret", "STAT", "RETR 1", "DELE 1", "RETR 2", "DELE 2", "QUIT"]
        );
        assert!(report.logged_in);
        assert_eq!(report.error, None);
        assert_eq!(report.quit_ok, Some(true));
        assert_eq!(report.marked, [1, 2]);
        assert_eq!(report.received.len(), 2);
        for (i, got) in report.received.iter().enumerate() {
            let n = i as u32 + 1;
            assert_eq!(got.number, n);
            assert_eq!(got.uid, None);
            assert_eq!(got.message_id, Some(format!("<m{n}@example.org>")));
            assert_eq!(got.digest, sha(msg(n).as_bytes()));
            assert_eq!(got.size, msg(n).len());
        }
        assert!(memory.is_empty(), "download-and-delete keeps no UIDs");
    })
    .await;
}

#[tokio::test]
async fn download_and_delete_respects_max_messages() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK 2 320\r\n"),
            Step::Recv,
            send(&retr_reply(1)),
            Step::Recv,
            send("+OK\r\n"),
            Step::Recv,
            send("+OK bye\r\n"),
        ]);
        let (addr, server) = fake_server(script).await;
        let cfg = WorkloadConfig { max_messages: Some(1), ..config(Mode::DownloadAndDelete) };
        let report = run_session(addr, &cfg, &mut UidMemory::new()).await;
        assert_eq!(report.marked, [1]);
        assert_eq!(report.quit_ok, Some(true));
        let sent = server.await.unwrap();
        assert_eq!(sent[2..], ["STAT", "RETR 1", "DELE 1", "QUIT"]);
    })
    .await;
}

#[tokio::test]
async fn leave_on_server_skips_remembered_uids_and_never_deletes() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK\r\n1 uid-a\r\n2 uid-b\r\n3 uid-c\r\n.\r\n"),
            Step::Recv,
            send(&retr_reply(2)),
            Step::Recv,
            send(&retr_reply(3)),
            Step::Recv,
            send("+OK bye\r\n"),
        ]);
        let (addr, server) = fake_server(script).await;
        let mut memory = UidMemory::new();
        memory.insert("uid-a".to_string());
        let report = run_session(addr, &config(Mode::LeaveOnServer), &mut memory).await;
        let sent = server.await.unwrap();
        assert_eq!(sent, ["USER alice", "PASS secret", "UIDL", "RETR 2", "RETR 3", "QUIT"]);
        assert!(!sent.iter().any(|l| l.starts_with("DELE")));
        assert_eq!(report.error, None);
        assert_eq!(report.quit_ok, Some(true));
        assert!(report.marked.is_empty());
        let uids: Vec<_> = report.received.iter().map(|m| m.uid.as_deref()).collect();
        assert_eq!(uids, [Some("uid-b"), Some("uid-c")]);
        assert_eq!(report.received[0].digest, sha(msg(2).as_bytes()));
        assert!(memory.contains("uid-a") && memory.contains("uid-b") && memory.contains("uid-c"));
    })
    .await;
}

#[tokio::test]
async fn leave_on_server_remembers_only_completed_retrs() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK\r\n1 uid-a\r\n2 uid-b\r\n.\r\n"),
            Step::Recv,
            send(&retr_reply(1)),
            Step::Recv,
            send("+OK message follows\r\nFrom: a@example.org\r\n"),
            Step::Close,
        ]);
        let (addr, _server) = fake_server(script).await;
        let mut memory = UidMemory::new();
        let report = run_session(addr, &config(Mode::LeaveOnServer), &mut memory).await;
        assert_eq!(report.received.len(), 1);
        assert!(memory.contains("uid-a"));
        assert!(!memory.contains("uid-b"));
        assert_eq!(report.quit_ok, None);
        assert!(report.error.is_some());
    })
    .await;
}

#[tokio::test]
async fn cut_mid_session_leaves_quit_unanswered() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK 2 320\r\n"),
            Step::Recv,
            send(&retr_reply(1)),
            Step::Recv,
            send("+OK\r\n"),
            Step::Recv,
            send("+OK message follows\r\nFrom: a@example.org\r\nSubj"),
            Step::Close,
        ]);
        let (addr, server) = fake_server(script).await;
        let report = run_session(addr, &config(Mode::DownloadAndDelete), &mut UidMemory::new()).await;
        assert!(report.logged_in);
        assert_eq!(report.received.len(), 1, "only the completed RETR counts");
        assert_eq!(report.marked, [1]);
        assert_eq!(report.quit_ok, None);
        assert!(report.error.is_some());
        let sent = server.await.unwrap();
        assert!(!sent.iter().any(|l| l == "QUIT"), "no QUIT after a lost line");
    })
    .await;
}

#[tokio::test]
async fn cut_after_quit_is_in_doubt() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK 1 160\r\n"),
            Step::Recv,
            send(&retr_reply(1)),
            Step::Recv,
            send("+OK\r\n"),
            Step::Recv,
            Step::Close,
        ]);
        let (addr, server) = fake_server(script).await;
        let report = run_session(addr, &config(Mode::DownloadAndDelete), &mut UidMemory::new()).await;
        assert_eq!(server.await.unwrap().last().map(String::as_str), Some("QUIT"));
        assert_eq!(report.marked, [1]);
        assert_eq!(report.quit_ok, None);
        assert!(report.error.is_some());
    })
    .await;
}

#[tokio::test]
async fn quit_err_is_reported() {
    bounded(async {
        let mut script = login_script();
        script.extend([
            Step::Recv,
            send("+OK 0 0\r\n"),
            Step::Recv,
            send("-ERR some deleted messages not removed\r\n"),
        ]);
        let (addr, _server) = fake_server(script).await;
        let report = run_session(addr, &config(Mode::DownloadAndDelete), &mut UidMemory::new()).await;
        assert_eq!(report.quit_ok, Some(false));
        assert!(report.received.is_empty());
        assert!(report.error.is_some());
    })
    .await;
}

#[tokio::test]
async fn failed_login_still_quits_politely() {
    bounded(async {
        let script = vec![
            send(GREETING),
            Step::Recv,
            send("+OK\r\n"),
            Step::Recv,
            send("-ERR [AUTH] invalid password\r\n"),
            Step::Recv,
            send("+OK bye\r\n"),
        ];
        let (addr, server) = fake_server(script).await;
        let report: SessionReport = run_session(addr, &config(Mode::LeaveOnServer), &mut UidMemory::new()).await;
        assert!(!report.logged_in);
        assert_eq!(report.quit_ok, Some(true));
        let error = report.error.unwrap_or_default();
        assert!(error.contains("[AUTH] invalid password"), "{error}");
        assert_eq!(server.await.unwrap().last().map(String::as_str), Some("QUIT"));
    })
    .await;
}

#[tokio::test]
async fn unreachable_server_gives_a_report() {
    bounded(async {
        // Bind then drop to get a port nobody listens on.
        let addr = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let cfg = WorkloadConfig { timeout: SHORT, ..config(Mode::DownloadAndDelete) };
        let report = run_session(addr, &cfg, &mut UidMemory::new()).await;
        assert!(!report.logged_in);
        assert_eq!(report.quit_ok, None);
        assert!(report.error.is_some());
    })
    .await;
}
