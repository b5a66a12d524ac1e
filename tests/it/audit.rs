//! `popfault audit`: the cut-point matrix against the embedded server (which
//! keeps RFC 1939), a deliberately broken server (expunges marked messages
//! on disconnect), and a real Dovecot; the JSON shape; bad input; and the
//! password never showing up in the output.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::dovecot::Dovecot;
use crate::support::loopback;
use popfault::cli::audit::{self, AuditConfig, Report, Verdict};
use popfault::cli::common::RunError;
use popfault::client::Pop3Client;
use popfault::server::{self, Maildrop, ServerConfig, ServerHandle};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::support::BIN;

/// Bound on one whole audit (in-process or the binary).
const AUDIT_LIMIT: Duration = Duration::from_secs(90);

/// Every scenario of a non-destructive audit, in order.
const NON_DESTRUCTIVE: [&str; 7] = [
    "cut-after-greeting",
    "cut-after-user",
    "cut-after-pass",
    "cut-after-dele",
    "cut-mid-download",
    "cut-after-rset",
    "quit-reply-lost",
];

async fn embedded(messages: usize, password: &str) -> ServerHandle {
    let cfg = ServerConfig { users: 1, messages, size: 1500, password: password.into() };
    server::spawn(loopback(), Maildrop::new(&cfg)).await.expect("embedded server")
}

fn config(server: SocketAddr, user: &str, password: &str, destructive: bool) -> AuditConfig {
    AuditConfig {
        server: server.to_string(),
        user: user.into(),
        password: password.into(),
        destructive,
        seed: 7,
        timeout: Duration::from_secs(5),
        lock_wait: Duration::from_secs(10),
        progress: false,
    }
}

async fn run_audit(cfg: &AuditConfig) -> Result<Report, RunError> {
    tokio::time::timeout(AUDIT_LIMIT, audit::audit(cfg)).await.expect("the audit finished in time")
}

fn names(r: &Report) -> Vec<&str> {
    r.scenarios.iter().map(|s| s.name.as_str()).collect()
}

fn verdict(r: &Report, name: &str) -> Verdict {
    r.scenario(name).unwrap_or_else(|| panic!("no scenario {name} in\n{}", r.to_table())).verdict
}

/// What the binary did: exit code, stdout, stderr.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `popfault ARGS` with `env` (and no POPFAULT_PASS unless given),
/// killing it after `limit`. Blocking: call through `spawn_blocking`.
fn run_bin(args: &[String], env: &[(&str, &str)], limit: Duration) -> Ran {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove(audit::PASS_ENV)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn popfault");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for popfault") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("popfault {args:?} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran { code: status.code(), stdout: out.join().expect("stdout"), stderr: err.join().expect("stderr") }
}

async fn run_bin_async(args: Vec<String>, env: Vec<(&'static str, String)>) -> Ran {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_bin(&args, &env, AUDIT_LIMIT)
    })
    .await
    .expect("the binary's runner")
}

fn audit_args(server: SocketAddr, user: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["audit", "--server", &server.to_string(), "--user", user, "--timeout", "5"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The table row (its first line) whose scenario cell starts with `title`.
fn row<'a>(table: &'a str, title: &str) -> &'a str {
    table.lines().find(|l| l.starts_with(title)).unwrap_or_else(|| panic!("no row {title:?} in\n{table}"))
}

/// Saves an audit's output under the test target dir and shows where.
fn save(name: &str, text: &str) {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, text).expect("save the audit output");
    eprintln!("audit output saved to {}", path.display());
}

// === against the embedded server (RFC 1939 kept) ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_non_destructive_passes_and_deletes_nothing() {
    let srv = embedded(5, "secret").await;
    let before: Vec<String> = srv.maildrop.remaining("user1").iter().map(|m| m.uid.clone()).collect();
    let report = run_audit(&config(srv.addr, "user1", "secret", false)).await.expect("the audit ran");
    let table = report.to_table();
    assert_eq!(names(&report), NON_DESTRUCTIVE, "{table}");
    for s in &report.scenarios {
        assert!(matches!(s.verdict, Verdict::Pass | Verdict::Info), "{}: {:?}\n{table}", s.name, s.verdict);
        assert_eq!(s.messages_before, Some(5), "{}", s.name);
        assert_eq!(s.messages_after, Some(5), "{}", s.name);
        assert!(s.removed.is_empty(), "{}", s.name);
    }
    assert_eq!((report.failed, report.skipped, report.exit_code()), (0, 0, 0), "{table}");
    assert_eq!(report.passed + report.info, 7);
    // The proxy's view of each cut session.
    let outcome = |n: &str| report.scenario(n).and_then(|s| s.proxy_outcome.clone()).unwrap_or_default();
    assert_eq!(outcome("cut-after-greeting"), "no-login");
    assert_eq!(outcome("cut-after-user"), "no-login");
    // Rolled back only where something was at stake (a mark, a download):
    // after PASS and after RSET nothing was, and the lost QUIT answer
    // concerned no mark either.
    for n in ["cut-after-dele", "cut-mid-download"] {
        assert_eq!(outcome(n), "rolled-back", "{n}");
    }
    for n in ["cut-after-pass", "cut-after-rset", "quit-reply-lost"] {
        assert_eq!(outcome(n), "nothing-at-stake", "{n}");
    }
    // Marks were made, in cut sessions only; the lost QUIT had none.
    assert_eq!(report.scenario("cut-after-dele").map(|s| s.marked.clone()), Some(vec!["user1-000001".to_string()]));
    assert!(report.scenario("quit-reply-lost").is_some_and(|s| s.marked.is_empty()));
    let dele = report.scenario("cut-after-dele").expect("listed");
    assert_eq!(
        (dele.rfc.as_str(), dele.expected.as_str()),
        ("§6", "marked messages survive a session that ends without QUIT")
    );
    assert!(
        row(&table, "after DELE before").starts_with("after DELE before  | §6: marked messages survive"),
        "{table}"
    );
    // Nothing deleted.
    assert!(srv.maildrop.ledger().is_empty(), "{:?}", srv.maildrop.ledger());
    let after: Vec<String> = srv.maildrop.remaining("user1").iter().map(|m| m.uid.clone()).collect();
    assert_eq!(after, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_server_destructive_commits_exactly_the_marked_messages() {
    let srv = embedded(5, "secret").await;
    let report = run_audit(&config(srv.addr, "user1", "secret", true)).await.expect("the audit ran");
    let table = report.to_table();
    let mut all = NON_DESTRUCTIVE.to_vec();
    all.push("quit-commit");
    assert_eq!(names(&report), all, "{table}");
    assert_eq!(verdict(&report, "quit-commit"), Verdict::Pass, "{table}");
    assert_eq!(report.exit_code(), 0, "{table}");
    let lost = report.scenario("quit-reply-lost").expect("quit-reply-lost");
    assert_eq!(lost.verdict, Verdict::Info, "{table}");
    assert_eq!(lost.server_committed, Some(true), "the embedded server commits on QUIT: {table}");
    assert_eq!(lost.proxy_outcome.as_deref(), Some("in-doubt"));
    let commit = report.scenario("quit-commit").expect("quit-commit");
    assert_eq!(commit.proxy_outcome.as_deref(), Some("committed"));
    // The ledger holds exactly what the two deleting scenarios marked.
    let expected: BTreeSet<String> = lost.removed.iter().chain(&commit.removed).cloned().collect();
    assert_eq!(expected.len(), 2, "{table}");
    assert_eq!(lost.removed, lost.marked);
    assert_eq!(commit.removed, commit.marked);
    let ledger: BTreeSet<String> = srv.maildrop.ledger().into_iter().map(|e| e.uid).collect();
    assert_eq!(ledger, expected);
    assert_eq!(srv.maildrop.remaining("user1").len(), 3);
    // Every other scenario removed nothing.
    for s in report.scenarios.iter().filter(|s| !["quit-reply-lost", "quit-commit"].contains(&s.name.as_str())) {
        assert_eq!(s.verdict, Verdict::Pass, "{}\n{table}", s.name);
        assert!(s.removed.is_empty());
    }
}

/// An empty mailbox: what needs a message is skipped, with why; the rest
/// passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_mailbox_skips_what_needs_a_message() {
    let srv = embedded(0, "secret").await;
    let report = run_audit(&config(srv.addr, "user1", "secret", true)).await.expect("the audit ran");
    let table = report.to_table();
    for name in ["cut-after-dele", "cut-mid-download", "quit-commit"] {
        let s = report.scenario(name).expect("listed");
        assert_eq!(s.verdict, Verdict::Skip, "{name}\n{table}");
        assert!(s.observed.contains("the mailbox is empty"), "{name}: {}", s.observed);
    }
    for name in ["cut-after-greeting", "cut-after-user", "cut-after-pass", "cut-after-rset", "quit-reply-lost"] {
        assert_eq!(verdict(&report, name), Verdict::Pass, "{name}\n{table}");
    }
    assert_eq!(report.exit_code(), 0);
    assert!(srv.maildrop.ledger().is_empty());
}

/// One message: mid-download cuts RETR 1 with nothing marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_downloads_it_without_marking() {
    let srv = embedded(1, "secret").await;
    let report = run_audit(&config(srv.addr, "user1", "secret", false)).await.expect("the audit ran");
    let mid = report.scenario("cut-mid-download").expect("listed");
    assert_eq!(mid.verdict, Verdict::Pass, "{}", report.to_table());
    assert!(mid.marked.is_empty());
    assert!(mid.client_saw.contains("RETR 1: connection reset inside the message"), "{}", mid.client_saw);
    assert!(srv.maildrop.ledger().is_empty());
    assert_eq!(srv.maildrop.remaining("user1").len(), 1);
}

/// Another session holds the maildrop: the audit's logins are answered
/// `-ERR [IN-USE]` and retried until it is free, or given up after the
/// lock wait with a clear usage error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_use_is_retried_then_reported() {
    let srv = embedded(2, "secret").await;
    let (mut holder, _) = Pop3Client::connect(srv.addr).await.expect("connect");
    holder.login("user1", "secret").await.expect("login");

    let mut short = config(srv.addr, "user1", "secret", false);
    short.lock_wait = Duration::from_millis(600);
    match run_audit(&short).await {
        Err(RunError::Usage(msg)) => {
            assert!(msg.contains("locked") && msg.contains("[IN-USE]"), "{msg}");
            assert!(!msg.contains("secret"), "{msg}");
        }
        other => panic!("expected a usage error, got {other:?}"),
    }

    let cfg = config(srv.addr, "user1", "secret", false);
    let started = Instant::now();
    let audit = tokio::spawn(async move { run_audit(&cfg).await });
    tokio::time::sleep(Duration::from_millis(800)).await;
    holder.quit().await.expect("QUIT");
    let report = audit.await.expect("audit task").expect("the audit ran once the lock was free");
    assert!(started.elapsed() >= Duration::from_millis(800));
    assert_eq!(report.exit_code(), 0, "{}", report.to_table());
    assert!(srv.maildrop.ledger().is_empty());
}

// === a broken server ===

/// A tiny POP3 server that breaks RFC 1939 §6: when the connection drops
/// in TRANSACTION it expunges the marked messages as if QUIT had been
/// sent. It locks the maildrop (`-ERR [IN-USE]`) while a session is in
/// TRANSACTION, and only unlocks after that expunge.
struct Broken {
    /// (UID, content) of the messages left.
    messages: Mutex<Vec<(String, Vec<u8>)>>,
    locked: AtomicBool,
}

impl Broken {
    fn remaining(&self) -> Vec<String> {
        self.messages.lock().unwrap().iter().map(|(u, _)| u.clone()).collect()
    }

    fn expunge(&self, uids: &BTreeSet<String>) {
        self.messages.lock().unwrap().retain(|(u, _)| !uids.contains(u));
    }
}

async fn broken_server(messages: usize) -> (SocketAddr, Arc<Broken>) {
    let content = |i: usize| {
        let mut m = format!("Subject: message {i}\r\nMessage-ID: <broken-{i}@popfault.test>\r\n\r\n");
        for k in 0..30 {
            m.push_str(&format!("line {k} of message {i}\r\n"));
        }
        m.into_bytes()
    };
    let state = Arc::new(Broken {
        messages: Mutex::new((1..=messages).map(|i| (format!("broken-{i}"), content(i))).collect()),
        locked: AtomicBool::new(false),
    });
    let listener = TcpListener::bind(loopback()).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let st = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(broken_session(stream, st.clone()));
        }
    });
    (addr, state)
}

async fn broken_session(stream: tokio::net::TcpStream, st: Arc<Broken>) {
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    if w.write_all(b"+OK broken pop3 ready\r\n").await.is_err() {
        return;
    }
    // The session's view: fixed at login, with marks.
    let mut view: Option<Vec<(String, Vec<u8>)>> = None;
    let mut marked: BTreeSet<String> = BTreeSet::new();
    loop {
        let line = match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            _ => break,
        };
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or("").to_ascii_uppercase();
        let arg: Option<usize> = words.next().and_then(|a| a.parse().ok());
        let live = |v: &Vec<(String, Vec<u8>)>, m: &BTreeSet<String>| -> Vec<(usize, String, usize)> {
            v.iter()
                .enumerate()
                .filter(|(_, (u, _))| !m.contains(u))
                .map(|(i, (u, c))| (i + 1, u.clone(), c.len()))
                .collect()
        };
        let msg = |n: Option<usize>, v: &Option<Vec<(String, Vec<u8>)>>, m: &BTreeSet<String>| {
            let v = v.as_ref()?;
            let (uid, content) = v.get(n?.checked_sub(1)?)?;
            (!m.contains(uid)).then(|| (uid.clone(), content.clone()))
        };
        let reply: Vec<u8> = match (cmd.as_str(), &view) {
            ("QUIT", _) => {
                st.expunge(&marked);
                if view.is_some() {
                    st.locked.store(false, Ordering::SeqCst);
                }
                let _ = w.write_all(b"+OK bye\r\n").await;
                return;
            }
            ("USER", None) => b"+OK\r\n".to_vec(),
            ("PASS", None) => {
                if st.locked.swap(true, Ordering::SeqCst) {
                    b"-ERR [IN-USE] maildrop locked\r\n".to_vec()
                } else {
                    view = Some(st.messages.lock().unwrap().clone());
                    b"+OK logged in\r\n".to_vec()
                }
            }
            ("STAT", Some(v)) => {
                let l = live(v, &marked);
                format!("+OK {} {}\r\n", l.len(), l.iter().map(|(_, _, s)| s).sum::<usize>()).into_bytes()
            }
            ("LIST", Some(v)) => {
                let mut out = b"+OK\r\n".to_vec();
                for (n, _, size) in live(v, &marked) {
                    out.extend_from_slice(format!("{n} {size}\r\n").as_bytes());
                }
                out.extend_from_slice(b".\r\n");
                out
            }
            ("UIDL", Some(v)) => {
                let mut out = b"+OK\r\n".to_vec();
                for (n, uid, _) in live(v, &marked) {
                    out.extend_from_slice(format!("{n} {uid}\r\n").as_bytes());
                }
                out.extend_from_slice(b".\r\n");
                out
            }
            ("RETR", Some(_)) => match msg(arg, &view, &marked) {
                Some((_, content)) => {
                    let mut out = format!("+OK {} octets\r\n", content.len()).into_bytes();
                    out.extend_from_slice(&content);
                    out.extend_from_slice(b".\r\n");
                    out
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            ("DELE", Some(_)) => match msg(arg, &view, &marked) {
                Some((uid, _)) => {
                    marked.insert(uid);
                    b"+OK marked\r\n".to_vec()
                }
                None => b"-ERR no such message\r\n".to_vec(),
            },
            ("RSET", Some(_)) => {
                marked.clear();
                b"+OK\r\n".to_vec()
            }
            ("NOOP", Some(_)) => b"+OK\r\n".to_vec(),
            _ => b"-ERR unknown command\r\n".to_vec(),
        };
        if w.write_all(&reply).await.is_err() {
            break;
        }
    }
    // The bug: the line dropped, and the marked messages go anyway.
    if view.is_some() {
        st.expunge(&marked);
        st.locked.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_expunging_on_disconnect_fails_after_dele() {
    let (addr, broken) = broken_server(5).await;
    let ran = run_bin_async(audit_args(addr, "u", &["--pass", "pw"]), vec![]).await;
    assert_eq!(ran.code, Some(1), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    let dele = row(&ran.stdout, "after DELE before");
    assert!(dele.trim_end().ends_with("FAIL"), "{dele}\n{}", ran.stdout);
    assert!(ran.stdout.contains("broken-1 (marked)"), "{}", ran.stdout);
    assert!(ran.stdout.contains(" 1 failed"), "{}", ran.stdout);
    // After the first loss the audit marks nothing more: only that one
    // message was lost, and the other scenarios pass.
    assert_eq!(broken.remaining(), ["broken-2", "broken-3", "broken-4", "broken-5"]);
    for title in ["before login", "after USER", "after PASS", "mid-download", "after RSET", "QUIT reply lost"] {
        assert!(row(&ran.stdout, title).trim_end().ends_with("PASS"), "{title}\n{}", ran.stdout);
    }
}

// === the table's width ===

/// The table part of a report: its header, rules and rows.
fn table_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains(" | ") || l.contains("-+-")).collect()
}

/// Piped, the table is 100 columns at most; in narrower terminals its cells
/// wrap, and no word of a cell is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_fits_the_width_it_is_given() {
    let srv = embedded(3, "secret").await;
    let ran = run_bin_async(audit_args(srv.addr, "user1", &["--pass", "secret"]), vec![]).await;
    assert_eq!(ran.code, Some(0), "{}\n{}", ran.stdout, ran.stderr);
    let rows = table_lines(&ran.stdout);
    assert!(rows.len() > 10, "{}", ran.stdout);
    for line in ran.stdout.lines().filter(|l| !l.starts_with("  greeting:")) {
        assert!(line.chars().count() <= 100, "piped: {} columns:\n{line}\n{}", line.chars().count(), ran.stdout);
    }
    let report = run_audit(&config(srv.addr, "user1", "secret", false)).await.expect("the audit ran");
    for width in [80, 100] {
        let table = report.to_table_width(width);
        for line in table_lines(&table) {
            assert!(line.chars().count() <= width, "at {width}: {} columns:\n{line}\n{table}", line.chars().count());
        }
        let words: BTreeSet<&str> = table_lines(&table).iter().flat_map(|l| l.split([' ', '|'])).collect();
        for s in &report.scenarios {
            let cells =
                [s.title.as_str(), s.expected.as_str(), s.observed.as_str(), s.proxy_outcome.as_deref().unwrap_or("-")];
            for word in cells.iter().flat_map(|c| c.split_whitespace()) {
                assert!(words.contains(word), "at {width}: {word:?} of {} lost or cut:\n{table}", s.name);
            }
        }
    }
    assert!(
        table_lines(&report.to_table_width(80)).len() > table_lines(&report.to_table_width(100)).len(),
        "narrower wraps more"
    );
}

// === the JSON report, bad input, secrets ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_has_the_documented_fields_and_never_the_password() {
    const SECRET: &str = "Quokka-Marmalade-9931";
    let srv = embedded(3, SECRET).await;
    // The password from the environment, logging at trace level.
    let mut args = audit_args(srv.addr, "user1", &["--json", "--seed", "42"]);
    args.push("-vvv".into());
    let ran = run_bin_async(args, vec![(audit::PASS_ENV, SECRET.into()), ("POPFAULT_LOG", "trace".into())]).await;
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}", ran.stdout, ran.stderr);
    assert!(!ran.stdout.contains(SECRET) && !ran.stderr.contains(SECRET), "the password leaked");
    assert!(ran.stderr.contains("PASS ***") || !ran.stderr.contains("PASS "), "trace logs redact PASS");

    let v: serde_json::Value = serde_json::from_str(&ran.stdout).expect("stdout is one JSON object");
    assert_eq!(v["server"], srv.addr.to_string());
    assert_eq!(v["seed"], 42);
    assert_eq!(v["destructive"], false);
    assert_eq!(v["messages"], 3);
    for key in ["passed", "failed", "info", "skipped"] {
        assert!(v[key].is_u64(), "{key}: {}", v[key]);
    }
    assert_eq!(v["failed"], 0);
    let scenarios = v["scenarios"].as_array().expect("scenarios");
    assert_eq!(scenarios.len(), 7);
    let count = |verdict: &str| scenarios.iter().filter(|s| s["verdict"] == verdict).count() as u64;
    assert_eq!(v["passed"].as_u64(), Some(count("PASS")));
    assert_eq!(v["info"].as_u64(), Some(count("INFO")));
    for s in scenarios {
        for key in ["name", "rfc", "expected", "observed", "verdict", "client_saw"] {
            assert!(s[key].is_string(), "{key} in {s}");
        }
        assert!(s["proxy_outcome"].is_string(), "{s}");
        assert!(s["marked"].is_array() && s["removed"].is_array(), "{s}");
        assert!(s.get("server_committed").is_some(), "{s}");
        assert!(s["rfc"].as_str().is_some_and(|r| r.starts_with('§')), "{s}");
    }
    let names: Vec<&str> = scenarios.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, NON_DESTRUCTIVE);
    assert!(srv.maildrop.ledger().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_exits_2_with_a_clear_message() {
    const SECRET: &str = "Wombat-Periscope-5120";
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let ran = run_bin_async(audit_args(closed, "user1", &["--pass", SECRET]), vec![]).await;
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("cannot connect") && ran.stderr.contains("connection refused"), "{}", ran.stderr);
    assert!(ran.stdout.is_empty());

    // A wrong password: refused before any scenario ran.
    let srv = embedded(2, "right").await;
    let ran = run_bin_async(audit_args(srv.addr, "user1", &["--pass", SECRET]), vec![]).await;
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
    assert!(ran.stderr.contains("login refused") && ran.stderr.contains("check --user and --pass"), "{}", ran.stderr);
    assert!(!ran.stderr.contains(SECRET) && !ran.stdout.contains(SECRET));
    assert!(ran.stdout.is_empty(), "{}", ran.stdout);

    // No password at all.
    let ran = run_bin_async(audit_args(srv.addr, "user1", &[]), vec![]).await;
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("--pass") && ran.stderr.contains(audit::PASS_ENV), "{}", ran.stderr);

    // Not HOST:PORT.
    let ran = run_bin_async(
        ["audit", "--server", "127.0.0.1", "--user", "u", "--pass", SECRET].map(String::from).to_vec(),
        vec![],
    )
    .await;
    assert_eq!(ran.code, Some(2));
    assert!(ran.stderr.contains("expected HOST:PORT"), "{}", ran.stderr);
    assert!(srv.maildrop.ledger().is_empty());
}

// === against Dovecot ===

/// A real server: the non-destructive audit passes and deletes nothing. The
/// table is saved (target/tmp/audit-dovecot.txt) for docs/REAL-SERVERS.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_non_destructive_audit_passes() {
    let Some(dovecot) = Dovecot::start(5) else { return };
    let ids = dovecot.message_ids();
    let ran = run_bin_async(
        audit_args(dovecot.addr, &dovecot.user, &["--seed", "1"]),
        vec![(audit::PASS_ENV, dovecot.password.clone())],
    )
    .await;
    save("audit-dovecot.txt", &format!("Dovecot {}\n\n{}", dovecot.version, ran.stdout));
    assert_eq!(ran.code, Some(0), "stdout:\n{}\nstderr:\n{}\nlog:\n{}", ran.stdout, ran.stderr, dovecot.log());
    assert!(ran.stdout.contains(" 0 failed"), "{}", ran.stdout);
    assert!(!ran.stdout.contains("SKIP"), "{}", ran.stdout);
    assert!(!ran.stdout.contains(&dovecot.password) && !ran.stderr.contains(&dovecot.password));
    tokio::time::timeout(crate::support::LIMIT, dovecot.wait_idle()).await.expect("dovecot idle");
    assert_eq!(dovecot.message_ids(), ids, "nothing deleted");
}

/// With --destructive: Dovecot commits a QUIT whose answer was lost (it
/// expunges before answering), and the normal commit passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_destructive_audit_commits() {
    let Some(dovecot) = Dovecot::start(5) else { return };
    let mut cfg = config(dovecot.addr, &dovecot.user, &dovecot.password, true);
    cfg.seed = 1;
    let report = run_audit(&cfg).await.expect("the audit ran");
    let table = report.to_table();
    save("audit-dovecot-destructive.txt", &format!("Dovecot {}\n\n{table}", dovecot.version));
    assert_eq!(report.exit_code(), 0, "{table}\nlog:\n{}", dovecot.log());
    assert_eq!(verdict(&report, "quit-commit"), Verdict::Pass, "{table}");
    let lost = report.scenario("quit-reply-lost").expect("listed");
    assert_eq!(lost.server_committed, Some(true), "{table}");
    tokio::time::timeout(crate::support::LIMIT, dovecot.wait_idle()).await.expect("dovecot idle");
    assert_eq!(dovecot.remaining(), 3, "{table}");
    assert_eq!(dovecot.message_ids(), [3, 4, 5].map(Dovecot::message_id));
}
