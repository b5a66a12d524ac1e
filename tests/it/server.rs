//! The embedded maildrop server over real sockets, speaking raw POP3 bytes.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use md5::{Digest, Md5};
use popfault::server::{self, Maildrop, ServerConfig, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Every test is bounded, so a protocol hang fails instead of stalling CI.
const LIMIT: Duration = Duration::from_secs(20);

async fn bounded<F: Future<Output = ()>>(test: F) {
    tokio::time::timeout(LIMIT, test).await.expect("test timed out");
}

fn config() -> ServerConfig {
    ServerConfig { users: 3, messages: 5, size: 1500, password: "secret".into() }
}

async fn start() -> ServerHandle {
    let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    server::spawn(addr, Maildrop::new(&config())).await.unwrap()
}

/// A raw POP3 connection.
struct Pop {
    rd: BufReader<OwnedReadHalf>,
    wr: OwnedWriteHalf,
    greeting: String,
}

impl Pop {
    async fn connect(addr: SocketAddr) -> Pop {
        let (rd, wr) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut pop = Pop { rd: BufReader::new(rd), wr, greeting: String::new() };
        pop.greeting = pop.line().await;
        assert!(pop.greeting.starts_with("+OK popfault maildrop ready <"), "{}", pop.greeting);
        pop
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
    }

    /// One response line, which must end in CRLF; returned without it.
    async fn line(&mut self) -> String {
        let mut buf = Vec::new();
        self.rd.read_until(b'\n', &mut buf).await.unwrap();
        assert!(buf.ends_with(b"\r\n"), "line not CRLF-terminated: {buf:?}");
        buf.truncate(buf.len() - 2);
        String::from_utf8(buf).unwrap()
    }

    /// Sends one command and returns the status line of its answer.
    async fn cmd(&mut self, command: &str) -> String {
        self.send(format!("{command}\r\n").as_bytes()).await;
        self.line().await
    }

    /// A multi-line body up to the terminating `.`, dot-unstuffed, CRLFs kept.
    async fn body(&mut self) -> Vec<u8> {
        let mut body = Vec::new();
        loop {
            let mut line = Vec::new();
            self.rd.read_until(b'\n', &mut line).await.unwrap();
            assert!(line.ends_with(b"\r\n"), "body line not CRLF-terminated: {line:?}");
            if line == b".\r\n" {
                return body;
            }
            let unstuffed = if line.starts_with(b".") { &line[1..] } else { &line[..] };
            body.extend_from_slice(unstuffed);
        }
    }

    async fn body_lines(&mut self) -> Vec<String> {
        let body = self.body().await;
        String::from_utf8(body).unwrap().lines().map(str::to_string).collect()
    }

    async fn login(&mut self, user: &str) {
        assert_eq!(self.cmd(&format!("USER {user}")).await, "+OK send PASS");
        let ok = self.cmd("PASS secret").await;
        assert!(ok.starts_with(&format!("+OK {user}'s maildrop has")), "{ok}");
    }

    /// Reads until the server closes; true on a clean EOF.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.rd.read_to_end(&mut rest).await.is_ok() && rest.is_empty()
    }

    /// The APOP timestamp from the greeting, angle brackets included.
    fn timestamp(&self) -> String {
        let start = self.greeting.find('<').unwrap();
        let end = self.greeting.rfind('>').unwrap();
        self.greeting[start..=end].to_string()
    }
}

/// Waits until no session holds `user`'s mailbox (the server saw the disconnect).
async fn unlocked(maildrop: &Maildrop, user: &str) {
    while maildrop.is_locked(user) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}

#[tokio::test]
async fn login_stat_list_uidl_retr_match_the_store() {
    bounded(async {
        let server = start().await;
        let stored = server.maildrop.remaining("user1");
        let total: usize = stored.iter().map(|m| m.size).sum();
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;

        assert_eq!(pop.cmd("STAT").await, format!("+OK 5 {total}"));

        assert_eq!(pop.cmd("LIST").await, format!("+OK 5 messages ({total} octets)"));
        let expected: Vec<String> = stored.iter().enumerate().map(|(i, m)| format!("{} {}", i + 1, m.size)).collect();
        assert_eq!(pop.body_lines().await, expected);
        assert_eq!(pop.cmd("LIST 2").await, format!("+OK 2 {}", stored[1].size));

        assert!(pop.cmd("UIDL").await.starts_with("+OK"));
        let expected: Vec<String> = stored.iter().enumerate().map(|(i, m)| format!("{} {}", i + 1, m.uid)).collect();
        assert_eq!(pop.body_lines().await, expected);
        assert_eq!(pop.cmd("UIDL 5").await, "+OK 5 user1-000005");

        for (i, m) in stored.iter().enumerate() {
            assert_eq!(pop.cmd(&format!("RETR {}", i + 1)).await, format!("+OK {} octets", m.size));
            let content = pop.body().await;
            assert_eq!(content, &m.content[..], "message {}", i + 1);
            assert_eq!(content.len(), m.size, "LIST size is the CRLF octet count");
            let text = String::from_utf8(content).unwrap();
            assert!(text.contains(&format!("Message-ID: {}\r\n", m.message_id)));
            assert!(text.contains("\r\n.\r\n"), "a lone-dot line survives the round trip");
        }
        assert_eq!(pop.cmd("RETR 6").await, "-ERR no such message");
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));
        assert!(pop.closed().await);
        assert!(server.maildrop.ledger().is_empty(), "reading deletes nothing");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dele_and_quit_expunge_into_the_ledger_with_the_session_number() {
    bounded(async {
        let server = start().await;
        let before = server.maildrop.remaining("user2");

        let mut pop = Pop::connect(server.addr).await;
        pop.login("user2").await;
        assert_eq!(pop.cmd("DELE 1").await, "+OK message 1 deleted");
        assert_eq!(pop.cmd("DELE 3").await, "+OK message 3 deleted");
        assert_eq!(pop.cmd("DELE 3").await, "-ERR no such message", "DELE twice");
        assert_eq!(pop.cmd("RETR 3").await, "-ERR no such message", "marked messages are invisible");
        assert_eq!(pop.cmd("LIST 1").await, "-ERR no such message");
        let left: usize = [1, 3, 4].iter().map(|&i| before[i].size).sum();
        assert_eq!(pop.cmd("STAT").await, format!("+OK 3 {left}"));
        assert!(server.maildrop.ledger().is_empty(), "nothing expunged before QUIT");
        assert_eq!(pop.cmd("QUIT").await, "+OK popfault signing off (3 messages left)");
        assert!(pop.closed().await);

        // The deletions were durable before the +OK was sent.
        let ledger = server.maildrop.ledger();
        let got: Vec<(u64, &str, &str, &str, u64)> =
            ledger.iter().map(|e| (e.seq, e.user.as_str(), e.uid.as_str(), e.message_id.as_str(), e.session)).collect();
        assert_eq!(
            got,
            [
                (1, "user2", before[0].uid.as_str(), before[0].message_id.as_str(), 1),
                (2, "user2", before[2].uid.as_str(), before[2].message_id.as_str(), 1),
            ]
        );
        let after: Vec<String> = server.maildrop.remaining("user2").into_iter().map(|m| m.uid).collect();
        assert_eq!(after, [before[1].uid.clone(), before[3].uid.clone(), before[4].uid.clone()]);
        assert_eq!(server.maildrop.delivered().len(), 15, "delivered never shrinks");

        // A second connection is session 2, and renumbers the survivors from 1.
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user2").await;
        assert_eq!(pop.cmd("UIDL 1").await, format!("+OK 1 {}", before[1].uid));
        assert_eq!(pop.cmd("DELE 1").await, "+OK message 1 deleted");
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));
        let last = server.maildrop.ledger().pop().unwrap();
        assert_eq!((last.seq, last.uid, last.session), (3, before[1].uid.clone(), 2));
        assert!(ledger[1].at <= last.at);
        assert_eq!(server.sessions_served(), 2);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dele_then_disconnect_deletes_nothing() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        assert!(pop.cmd("DELE 2").await.starts_with("+OK"));
        assert!(server.maildrop.is_locked("user1"));
        drop(pop);
        unlocked(&server.maildrop, "user1").await;
        assert!(server.maildrop.ledger().is_empty());
        assert_eq!(server.maildrop.remaining("user1").len(), 5);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn dele_rset_quit_deletes_nothing() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        assert!(pop.cmd("DELE 5").await.starts_with("+OK"));
        assert!(pop.cmd("RSET").await.starts_with("+OK maildrop has 5 messages"));
        assert!(pop.cmd("RETR 5").await.starts_with("+OK"), "RSET unmarks");
        pop.body().await;
        assert_eq!(pop.cmd("QUIT").await, "+OK popfault signing off (5 messages left)");
        assert!(server.maildrop.ledger().is_empty());
        assert_eq!(server.maildrop.remaining("user1").len(), 5);
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn second_login_to_a_held_mailbox_is_in_use() {
    bounded(async {
        let server = start().await;
        let mut first = Pop::connect(server.addr).await;
        first.login("user3").await;

        let mut second = Pop::connect(server.addr).await;
        assert_eq!(second.cmd("USER user3").await, "+OK send PASS");
        assert_eq!(second.cmd("PASS secret").await, "-ERR [IN-USE] maildrop locked");
        // Another mailbox is not affected.
        second.login("user1").await;
        assert!(second.cmd("QUIT").await.starts_with("+OK"));

        let mut third = Pop::connect(server.addr).await;
        assert_eq!(third.cmd("USER user3").await, "+OK send PASS");
        assert_eq!(third.cmd("PASS secret").await, "-ERR [IN-USE] maildrop locked");
        assert!(first.cmd("QUIT").await.starts_with("+OK"));
        // QUIT releases the lock before its +OK, so the retry cannot race it.
        third.login("user3").await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn wrong_password_and_unknown_user_are_auth_errors() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        assert_eq!(pop.cmd("PASS secret").await, "-ERR USER first");
        pop.cmd("USER user1").await;
        assert_eq!(pop.cmd("PASS wrong").await, "-ERR [AUTH] invalid credentials");
        pop.cmd("USER nobody").await;
        assert_eq!(pop.cmd("PASS secret").await, "-ERR [AUTH] invalid credentials");
        assert_eq!(pop.cmd("STAT").await, "-ERR not logged in");
        assert!(!server.maildrop.is_locked("user1"));
        pop.login("user1").await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn apop_right_and_wrong_digest() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        let ts = pop.timestamp();
        let digest: String = Md5::digest(format!("{ts}secret").as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        let wrong: String = Md5::digest(format!("{ts}Secret").as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(pop.cmd(&format!("APOP user1 {wrong}")).await, "-ERR [AUTH] invalid credentials");
        assert_eq!(pop.cmd("APOP user1").await, "-ERR invalid arguments");
        assert_eq!(
            pop.cmd(&format!("APOP user1 {digest}")).await.split(' ').take(2).collect::<Vec<_>>(),
            ["+OK", "user1's"]
        );
        assert!(pop.cmd("STAT").await.starts_with("+OK 5 "));

        // Each greeting has its own timestamp, so a captured digest cannot be replayed.
        let mut other = Pop::connect(server.addr).await;
        assert_ne!(other.timestamp(), ts);
        assert_eq!(other.cmd(&format!("APOP user2 {digest}")).await, "-ERR [AUTH] invalid credentials");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn auth_plain_with_and_without_initial_response() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        assert_eq!(pop.cmd("AUTH").await, "+OK SASL mechanisms follow");
        assert_eq!(pop.body_lines().await, ["PLAIN"]);
        // Without initial response: continuation, then the response line.
        assert_eq!(pop.cmd("AUTH PLAIN").await, "+ ");
        assert!(pop.cmd(&base64(b"\0user1\0secret")).await.starts_with("+OK user1's maildrop"));
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));

        let mut pop = Pop::connect(server.addr).await;
        // Cancelled, then a wrong password, then a good initial response.
        assert_eq!(pop.cmd("AUTH PLAIN").await, "+ ");
        assert_eq!(pop.cmd("*").await, "-ERR authentication cancelled");
        let wrong = base64(b"\0user2\0nope");
        assert_eq!(pop.cmd(&format!("AUTH PLAIN {wrong}")).await, "-ERR [AUTH] invalid credentials");
        let good = base64(b"user2\0user2\0secret");
        assert!(pop.cmd(&format!("AUTH PLAIN {good}")).await.starts_with("+OK user2's maildrop"));
        assert!(pop.cmd("STAT").await.starts_with("+OK 5 "));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn capa_in_both_states() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        let expected = [
            "TOP",
            "USER",
            "UIDL",
            "PIPELINING",
            "SASL PLAIN",
            "RESP-CODES",
            "AUTH-RESP-CODE",
            "IMPLEMENTATION popfault",
        ];
        assert!(pop.cmd("CAPA").await.starts_with("+OK"));
        assert_eq!(pop.body_lines().await, expected);
        pop.login("user1").await;
        assert!(pop.cmd("CAPA").await.starts_with("+OK"));
        assert_eq!(pop.body_lines().await, expected);
        assert_eq!(pop.cmd("STLS").await, "-ERR STLS not available");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn fifty_pipelined_commands_in_one_write_are_answered_in_order() {
    bounded(async {
        let server = start().await;
        let stored = server.maildrop.remaining("user1");
        let mut pop = Pop::connect(server.addr).await;

        let mut batch = String::from("USER user1\r\nPASS secret\r\n");
        let mut expected = vec!["+OK send PASS".to_string(), "LOGIN".to_string()];
        for i in 0..47 {
            let n = i % 5 + 1;
            let m = &stored[n - 1];
            match i % 3 {
                0 => {
                    batch += &format!("UIDL {n}\r\n");
                    expected.push(format!("+OK {n} {}", m.uid));
                }
                1 => {
                    batch += &format!("LIST {n}\r\n");
                    expected.push(format!("+OK {n} {}", m.size));
                }
                _ => {
                    batch += "NOOP\r\n";
                    expected.push("+OK".to_string());
                }
            }
        }
        batch += "QUIT\r\n";
        expected.push("+OK popfault signing off (5 messages left)".to_string());
        assert_eq!(expected.len(), 50);

        pop.send(batch.as_bytes()).await;
        for (i, want) in expected.iter().enumerate() {
            let got = pop.line().await;
            if want == "LOGIN" {
                assert!(got.starts_with("+OK user1's maildrop has 5 messages"), "answer {i}: {got}");
            } else {
                assert_eq!(&got, want, "answer {i}");
            }
        }
        assert!(pop.closed().await, "nothing after the QUIT answer");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn pipelined_multiline_answers_stay_framed() {
    bounded(async {
        let server = start().await;
        let stored = server.maildrop.remaining("user2");
        let mut pop = Pop::connect(server.addr).await;
        pop.send(b"USER user2\r\nPASS secret\r\nRETR 1\r\nTOP 2 1\r\nLIST\r\nRETR 3\r\nNOOP\r\n").await;
        pop.line().await;
        assert!(pop.line().await.starts_with("+OK user2's"));
        assert!(pop.line().await.starts_with("+OK"));
        assert_eq!(pop.body().await, &stored[0].content[..]);
        assert!(pop.line().await.starts_with("+OK"));
        pop.body().await;
        assert!(pop.line().await.starts_with("+OK 5 messages"));
        assert_eq!(pop.body_lines().await.len(), 5);
        assert!(pop.line().await.starts_with("+OK"));
        assert_eq!(pop.body().await, &stored[2].content[..]);
        assert_eq!(pop.line().await, "+OK");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn over_long_line_gets_an_error_and_the_session_continues() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        // 255 octets with CRLF is the limit (RFC 2449); 256 is over it.
        let at_limit = format!("USER {}\r\n", "a".repeat(255 - 7));
        assert_eq!(at_limit.len(), 255);
        assert_eq!(pop.cmd(at_limit.trim_end()).await, "+OK send PASS");
        let over = format!("USER {}\r\n", "a".repeat(256 - 7));
        pop.send(over.as_bytes()).await;
        assert_eq!(pop.line().await, "-ERR line too long");

        // A huge line in many writes: one error, nothing buffered, then normal service.
        for _ in 0..64 {
            pop.send(&[b'x'; 4096]).await;
        }
        pop.send(b"\r\nCAPA\r\n").await;
        assert_eq!(pop.line().await, "-ERR line too long");
        assert!(pop.line().await.starts_with("+OK"));
        pop.body().await;
        pop.login("user1").await;
        assert!(pop.cmd("STAT").await.starts_with("+OK 5 "));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn top_sends_headers_and_the_first_lines() {
    bounded(async {
        let server = start().await;
        let stored = server.maildrop.remaining("user1");
        let content = &stored[0].content[..];
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;

        let header_end = content.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert!(pop.cmd("TOP 1 0").await.starts_with("+OK"));
        assert_eq!(pop.body().await, &content[..header_end]);

        assert!(pop.cmd("TOP 1 3").await.starts_with("+OK"));
        let top = pop.body().await;
        assert!(content.starts_with(&top));
        let body_lines = top[header_end..].split_inclusive(|&b| b == b'\n').collect::<Vec<_>>();
        assert_eq!(body_lines.len(), 3);
        assert_eq!(body_lines[2], b".\r\n", "the third body line is a lone dot, unstuffed");

        assert!(pop.cmd("TOP 1 100000").await.starts_with("+OK"));
        assert_eq!(pop.body().await, content);
        assert_eq!(pop.cmd("TOP 9 1").await, "-ERR no such message");
        assert_eq!(pop.cmd("TOP 1").await, "-ERR invalid arguments");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_and_malformed_commands_are_errors() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        assert_eq!(pop.cmd("XYZZY").await, "-ERR unknown command");
        assert_eq!(pop.cmd("").await, "-ERR unknown command");
        pop.login("user1").await;
        assert_eq!(pop.cmd("RETR one").await, "-ERR invalid arguments");
        assert_eq!(pop.cmd("DELE 0").await, "-ERR no such message");
        assert_eq!(pop.cmd("USER user2").await, "-ERR already logged in");
        assert_eq!(pop.cmd("NOOP").await, "+OK");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn new_mail_is_invisible_to_a_running_session() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        let uid = server.maildrop.add_message("user1", b"Subject: late\n\nhello\n".to_vec()).unwrap();
        assert_eq!(uid, "user1-000006");
        assert!(pop.cmd("STAT").await.starts_with("+OK 5 "));
        assert_eq!(pop.cmd("LIST 6").await, "-ERR no such message");
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));

        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert_eq!(pop.cmd("UIDL 5").await, "+OK 5 user1-000006");
        assert!(pop.cmd("RETR 5").await.starts_with("+OK"));
        let body = pop.body().await;
        assert!(body.ends_with(b"Subject: late\r\n\r\nhello\r\n"), "stored with CRLF line endings");
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn garbage_input_never_kills_the_server() {
    bounded(async {
        let server = start().await;
        let mut pop = Pop::connect(server.addr).await;
        // Deterministic noise: NULs, high bytes, bare CRs, LFs and long runs.
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut noise = Vec::new();
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.push(match x % 10 {
                0 => b'\n',
                1 => b'\r',
                2 => 0,
                _ => (x >> 32) as u8,
            });
        }
        for chunk in noise.chunks(777) {
            pop.send(chunk).await;
        }
        pop.send(b"\r\nQUIT\r\n").await;
        let mut rest = Vec::new();
        pop.rd.read_to_end(&mut rest).await.unwrap();
        assert!(rest.ends_with(b"+OK popfault signing off\r\n"), "server answered through the noise");

        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("STAT").await.starts_with("+OK 5 "));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_live_sessions_without_update() {
    bounded(async {
        let server = start().await;
        let maildrop = server.maildrop.clone();
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        server.shutdown().await;
        assert!(!maildrop.is_locked("user1"), "shutdown waits for sessions to end");
        assert!(maildrop.ledger().is_empty());
        assert_eq!(maildrop.remaining("user1").len(), 5);
        assert!(pop.closed().await);
    })
    .await;
}

#[tokio::test]
async fn serve_runs_until_its_shutdown_future() {
    bounded(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let maildrop = Maildrop::new(&config());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server::serve(listener, maildrop.clone(), async {
            let _ = stopped.await;
        }));
        let mut pop = Pop::connect(addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("DELE 2").await.starts_with("+OK"));
        assert!(pop.cmd("QUIT").await.starts_with("+OK"));
        stop.send(()).unwrap();
        task.await.unwrap();
        assert_eq!(maildrop.ledger().len(), 1);
        assert!(TcpStream::connect(addr).await.is_err(), "listener closed");
    })
    .await;
}

/// The idle timer ends a session without UPDATE (RFC 1939 §3). Time is
/// paused only once the session is idle, so the real exchanges are not
/// raced by auto-advancing time.
#[tokio::test]
async fn idle_timeout_closes_without_update() {
    let server = start().await;
    let mut pop = tokio::time::timeout(LIMIT, async {
        let mut pop = Pop::connect(server.addr).await;
        pop.login("user1").await;
        assert!(pop.cmd("DELE 1").await.starts_with("+OK"));
        pop
    })
    .await
    .expect("test timed out");

    tokio::time::pause();
    // Virtual time: the server's 10-minute timer fires long before this bound.
    let closed = tokio::time::timeout(server::IDLE_TIMEOUT * 2, pop.closed()).await;
    assert_eq!(closed.ok(), Some(true), "closed silently by the idle timer");
    unlocked(&server.maildrop, "user1").await;
    assert!(server.maildrop.ledger().is_empty());
    assert_eq!(server.maildrop.remaining("user1").len(), 5);
    server.shutdown().await;
}
