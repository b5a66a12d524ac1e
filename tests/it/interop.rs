//! The interop matrix (docs/INTEROP.md): real clients through popfault
//! against real servers, one test per server × client × scenario:
//!
//! - (a) passthrough: the client delivers through popfault exactly what it
//!   delivers from a twin server directly;
//! - (b) the line drops right after the 2nd download (`RETR`, or `TOP` for
//!   fetchmail's default mode) of the first session, then a rerun with no
//!   fault;
//! - (c) QUIT's answer is lost (`lost-carrier-at-quit`), twice in a row.
//!
//! The truth is counted from what the client stored in each run (the
//! message each file holds, found by its body's marker line; curl also says
//! which connection brought it) and what the server kept, never from
//! popfault; then each session's outcome, `downloaded`, `at_risk` and
//! `duplicates` as popfault reported them must equal it, and so must its
//! `user`: the name the client logged in with, whatever the mechanism. How a session ended
//! is the scenario's: completed, line dropped before QUIT, or QUIT sent and
//! its answer lost. Each test is one cell: it prints its row
//! (`--nocapture`) and fails saying how popfault's report differs from the
//! truth.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use popfault::events::SessionEnd;
use popfault::server::{self, Maildrop, ServerConfig, ServerHandle};
use popfault::{Profile, Proxy};

use crate::support::clients::{Account, Client, Kind, Run};
use crate::support::dovecot::Dovecot;
use crate::support::mailutils::{Mailutils, skip_interop};
use crate::support::{LIMIT, builtin, loopback};

/// Messages per mailbox: enough for a cut after the 2nd and one after it.
const MESSAGES: usize = 3;

/// The seeded messages: each body starts with a marker line naming its
/// number; the last has no Message-ID (servers that allow it keep it so, and
/// popfault then has to match it by content).
fn seeded() -> Vec<Vec<u8>> {
    (1..=MESSAGES)
        .map(|n| {
            let id = if n < MESSAGES { format!("Message-ID: <interop-{n}@popfault.test>\r\n") } else { String::new() };
            format!(
                "From: sender@popfault.test\r\nTo: popfault@popfault.test\r\nSubject: interop {n}\r\n\
                 Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n{id}\r\n{}\r\n.\r\n..two dots\r\n\
                 Line 2 of message {n}.\r\nEnd of message {n}.\r\n",
                marker(n)
            )
            .into_bytes()
        })
        .collect()
}

fn marker(n: usize) -> String {
    format!("This is interop test message {n}.")
}

/// Which seeded message some bytes are (a client's file or a server's copy).
fn identify(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes);
    (1..=MESSAGES).find(|&n| text.contains(&marker(n))).unwrap_or_else(|| panic!("not a seeded message:\n{text}"))
}

#[derive(Debug, Clone, Copy)]
enum ServerKind {
    Dovecot,
    Mailutils,
    Embedded,
}

impl ServerKind {
    fn name(self) -> &'static str {
        match self {
            ServerKind::Dovecot => "Dovecot",
            ServerKind::Mailutils => "mailutils",
            ServerKind::Embedded => "embedded",
        }
    }
}

enum Backend {
    Dovecot(Dovecot),
    Mailutils(Mailutils),
    Embedded(ServerHandle),
}

/// A freshly seeded server.
struct Upstream {
    account: Account,
    backend: Backend,
}

impl Upstream {
    async fn start(kind: ServerKind) -> Option<Upstream> {
        let messages = seeded();
        let (account, backend) = match kind {
            ServerKind::Dovecot => {
                let Some(d) = Dovecot::start_seeded(&messages) else {
                    return skip_interop("Dovecot is not installed");
                };
                (Account { addr: d.addr, user: d.user.clone(), password: d.password.clone() }, Backend::Dovecot(d))
            }
            ServerKind::Mailutils => {
                let m = Mailutils::start(&messages)?;
                (Account { addr: m.addr, user: m.user.clone(), password: m.password.clone() }, Backend::Mailutils(m))
            }
            ServerKind::Embedded => {
                let cfg = ServerConfig { users: 1, messages: 0, size: 0, password: "popfault-secret".into() };
                let s = server::spawn(loopback(), Maildrop::new(&cfg)).await.expect("embedded server");
                for m in messages {
                    s.maildrop.add_message("user1", m).expect("user1 exists");
                }
                let account = Account { addr: s.addr, user: "user1".into(), password: "popfault-secret".into() };
                (account, Backend::Embedded(s))
            }
        };
        Some(Upstream { account, backend })
    }

    /// Waits until the server serves no session, so that what it kept is
    /// final (a server notices a dropped line a moment later).
    async fn wait_idle(&self) {
        match &self.backend {
            Backend::Dovecot(d) => d.wait_idle().await,
            Backend::Mailutils(m) => m.wait_idle().await,
            Backend::Embedded(s) => {
                let deadline = Instant::now() + LIMIT;
                while s.maildrop.is_locked("user1") {
                    assert!(Instant::now() < deadline, "the embedded server kept its lock");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// The seeded messages the server still holds.
    fn kept(&self) -> BTreeSet<usize> {
        let contents = match &self.backend {
            Backend::Dovecot(d) => d.contents(),
            Backend::Mailutils(m) => m.contents(),
            Backend::Embedded(s) => s.maildrop.remaining("user1").iter().map(|m| m.content.to_vec()).collect(),
        };
        contents.iter().map(|c| identify(c)).collect()
    }
}

/// How a session ended, by the scenario.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    /// The client got QUIT's answer.
    Completed,
    /// The line dropped before QUIT.
    Dropped,
    /// QUIT reached the server, its answer never reached the client.
    QuitLost,
}

/// What popfault should report for a session (or did).
#[derive(Debug, Clone, PartialEq)]
struct Figures {
    /// The name the client logged in with.
    user: Option<String>,
    outcome: String,
    downloaded: u64,
    at_risk: usize,
    duplicates: u64,
}

impl Figures {
    fn of(end: &SessionEnd) -> Figures {
        Figures {
            user: end.user.clone(),
            outcome: end.outcome.as_str().to_string(),
            downloaded: end.downloaded,
            at_risk: end.at_risk,
            duplicates: end.duplicates,
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} d{} r{} dup{}", self.outcome, self.downloaded, self.at_risk, self.duplicates)?;
        match &self.user {
            Some(_) => Ok(()),
            None => f.write_str(" (no user)"),
        }
    }
}

/// One client run through popfault, with the truth and the report.
struct RunRecord {
    delivered: Vec<usize>,
    code: Option<i32>,
    kept: BTreeSet<usize>,
    truth: Vec<Figures>,
    reported: Vec<Figures>,
}

/// The messages delivered through this proxy so far, for duplicates.
#[derive(Default)]
struct History {
    seen: BTreeSet<usize>,
}

/// Runs `client` once through `proxy` and works out the truth of each of
/// its sessions; `first` is how the run's first session ends (a later one,
/// curl's reconnection, completes).
async fn run_through(
    proxy: &mut Proxy,
    up: &Upstream,
    client: &mut Client,
    first: Ending,
    history: &mut History,
) -> (RunRecord, Run) {
    let before = up.kept();
    let account = Account { addr: proxy.addr(), ..up.account.clone() };
    let run = client.run(&account, before.len()).await;
    let reported = session_ends(proxy).await;
    up.wait_idle().await;
    let kept = up.kept();
    let removed: BTreeSet<usize> = before.difference(&kept).copied().collect();

    // The client's sessions: one per connection it reports (curl), else one.
    let delivered: Vec<usize> = run.delivered.iter().map(|d| identify(&d.bytes)).collect();
    let groups: Vec<Vec<usize>> = if run.connections.is_empty() {
        vec![delivered.clone()]
    } else {
        run.connections
            .iter()
            .map(|port| run.delivered.iter().filter(|d| d.port == Some(*port)).map(|d| identify(&d.bytes)).collect())
            .collect()
    };
    let last = groups.len() - 1;
    let mut truth = Vec::new();
    for (i, got) in groups.iter().enumerate() {
        let ending = if i == 0 { first } else { Ending::Completed };
        let duplicates = got.iter().filter(|n| !history.seen.insert(**n)).count() as u64;
        // What the session marked: what the server removed (it removes on
        // QUIT, answered or not), counted for the run's last session; a
        // session cut before QUIT marked at most what it downloaded (every
        // client here deletes only what it downloaded in the same session).
        let marked: BTreeSet<usize> =
            if i == last && ending != Ending::Dropped { removed.clone() } else { BTreeSet::new() };
        let stakes: BTreeSet<usize> = got.iter().copied().chain(marked.iter().copied()).collect();
        let outcome = match ending {
            Ending::Completed if !marked.is_empty() => "committed",
            Ending::Completed => "clean-quit",
            Ending::Dropped | Ending::QuitLost if stakes.is_empty() => "nothing-at-stake",
            Ending::Dropped => "rolled-back",
            Ending::QuitLost => "in-doubt",
        };
        let at_risk = if matches!(outcome, "rolled-back" | "in-doubt") { stakes.len() } else { 0 };
        let user = Some(up.account.user.clone());
        truth.push(Figures { user, outcome: outcome.into(), downloaded: got.len() as u64, at_risk, duplicates });
    }
    let reported = reported.iter().map(Figures::of).collect();
    (RunRecord { delivered, code: run.code, kept, truth, reported }, run)
}

/// The sessions that ended since the last call, in session order: waits
/// until the proxy has none live, then for the fold to hand over the ends.
async fn session_ends(proxy: &mut Proxy) -> Vec<SessionEnd> {
    let deadline = Instant::now() + LIMIT;
    while proxy.live_sessions() > 0 {
        assert!(Instant::now() < deadline, "popfault still has live sessions after the client exited");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ends = Vec::new();
    while let Ok(Some(end)) = tokio::time::timeout(Duration::from_millis(250), proxy.next_end()).await {
        ends.push(end);
    }
    ends.sort_by_key(|e| e.session);
    ends
}

async fn proxy(up: &Upstream, profile: Profile) -> Proxy {
    Proxy::builder(up.account.addr.to_string())
        .profile(profile)
        .seed(1)
        .idle_timeout(Duration::from_secs(30))
        .start()
        .await
        .expect("popfault starts")
}

/// One row of the matrix.
struct Cell {
    scenario: &'static str,
    runs: Vec<RunRecord>,
    /// Scenario (a): whether the deliveries equal the direct run's.
    same_as_direct: Option<Result<(), String>>,
}

impl Cell {
    fn mismatches(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(Err(why)) = &self.same_as_direct {
            out.push(why.clone());
        }
        for (i, r) in self.runs.iter().enumerate() {
            if r.truth != r.reported {
                out.push(format!("run {}: truth [{}], popfault [{}]", i + 1, join(&r.truth), join(&r.reported)));
            }
        }
        out
    }

    fn row(&self, server: ServerKind, client: Kind) -> String {
        let did = self
            .runs
            .iter()
            .map(|r| format!("{:?} exit {}", r.delivered, r.code.map_or("signal".into(), |c| c.to_string())))
            .collect::<Vec<_>>()
            .join("; ");
        let kept = self.runs.iter().map(|r| format!("{:?}", r.kept)).collect::<Vec<_>>().join("; ");
        let truth = self.runs.iter().map(|r| join(&r.truth)).collect::<Vec<_>>().join("; ");
        let reported = self.runs.iter().map(|r| join(&r.reported)).collect::<Vec<_>>().join("; ");
        let verdict = if self.mismatches().is_empty() { "PASS" } else { "FAIL" };
        format!(
            "| {} | {} | {} | {did} | {kept} | {truth} | {reported} | {verdict} |",
            server.name(),
            client.name(),
            self.scenario
        )
    }
}

fn join(figures: &[Figures]) -> String {
    figures.iter().map(|f| f.to_string()).collect::<Vec<_>>().join(", ")
}

/// What a client stored, comparable between two runs: fetchmail's
/// `Received:` header names the time and the port; everything else is kept.
fn comparable(kind: Kind, bytes: &[u8]) -> Vec<u8> {
    if !matches!(kind, Kind::Fetchmail | Kind::FetchmailAll) || !bytes.starts_with(b"Received:") {
        return bytes.to_vec();
    }
    let mut lines = bytes.split_inclusive(|&b| b == b'\n');
    let _ = lines.next();
    let rest: Vec<&[u8]> = lines.skip_while(|l| l.starts_with(b" ") || l.starts_with(b"\t")).collect();
    rest.concat()
}

async fn passthrough(server: ServerKind, kind: Kind) -> Option<Cell> {
    let direct_up = Upstream::start(server).await?;
    let mut direct_client = Client::new(kind)?;
    let direct = direct_client.run(&direct_up.account, MESSAGES).await;
    let up = Upstream::start(server).await?;
    let mut client = Client::new(kind)?;
    let mut proxy = proxy(&up, Profile::passthrough()).await;
    let (record, run) = run_through(&mut proxy, &up, &mut client, Ending::Completed, &mut History::default()).await;
    let a: Vec<Vec<u8>> = direct.delivered.iter().map(|d| comparable(kind, &d.bytes)).collect();
    let b: Vec<Vec<u8>> = run.delivered.iter().map(|d| comparable(kind, &d.bytes)).collect();
    let same = if direct.delivered.len() != MESSAGES {
        Err(format!("the direct run delivered {} of {MESSAGES} messages:\n{}", direct.delivered.len(), direct.log))
    } else if a != b {
        Err(format!(
            "through popfault the client stored other bytes than directly ({} vs {} messages):\n{}",
            b.len(),
            a.len(),
            run.log
        ))
    } else {
        Ok(())
    };
    Some(Cell { scenario: "a passthrough", runs: vec![record], same_as_direct: Some(same) })
}

async fn cut_then_rerun(server: ServerKind, kind: Kind) -> Option<Cell> {
    let up = Upstream::start(server).await?;
    let mut client = Client::new(kind)?;
    // FIN, not RST: a reset makes the client's kernel drop what it had
    // received but not yet read, so what popfault wrote would not be what
    // the client got (mpop, pipelining, then stores nothing).
    let rule = format!(
        "[[rule]]\nname = \"cut-after-2nd\"\nwhen = \"response\"\ncommand = \"{}\"\nnth = 2\n\
         sessions = {{ first = 1 }}\nactions = [{{ do = \"disconnect\", side = \"both\", how = \"fin\" }}]\n",
        kind.download_command()
    );
    let profile = Profile::from_toml(&rule, "cut-after-2nd", "interop").expect("a valid profile");
    let mut proxy = proxy(&up, profile).await;
    let mut history = History::default();
    let (first, _) = run_through(&mut proxy, &up, &mut client, Ending::Dropped, &mut history).await;
    proxy.set_profile(Profile::passthrough());
    let (second, _) = run_through(&mut proxy, &up, &mut client, Ending::Completed, &mut history).await;
    Some(Cell { scenario: "b cut after 2nd, rerun", runs: vec![first, second], same_as_direct: None })
}

async fn quit_lost_twice(server: ServerKind, kind: Kind) -> Option<Cell> {
    let up = Upstream::start(server).await?;
    let mut client = Client::new(kind)?;
    let profile = builtin("lost-carrier-at-quit");
    let mut proxy = proxy(&up, profile).await;
    let mut history = History::default();
    let (first, _) = run_through(&mut proxy, &up, &mut client, Ending::QuitLost, &mut history).await;
    let (second, _) = run_through(&mut proxy, &up, &mut client, Ending::QuitLost, &mut history).await;
    Some(Cell { scenario: "c QUIT answer lost, twice", runs: vec![first, second], same_as_direct: None })
}

#[derive(Debug, Clone, Copy)]
enum Scenario {
    Passthrough,
    CutThenRerun,
    QuitLostTwice,
}

/// Runs one scenario for one server and client, prints its row, and fails
/// saying how popfault's report differs from the truth.
async fn cell(server: ServerKind, kind: Kind, scenario: Scenario) {
    let cell = match scenario {
        Scenario::Passthrough => passthrough(server, kind).await,
        Scenario::CutThenRerun => cut_then_rerun(server, kind).await,
        Scenario::QuitLostTwice => quit_lost_twice(server, kind).await,
    };
    let Some(c) = cell else { return };
    println!("MATRIX {}", c.row(server, kind));
    let mut failures = String::new();
    for m in c.mismatches() {
        let _ = writeln!(failures, "{} × {} × {}: {m}", server.name(), kind.name(), c.scenario);
    }
    assert!(failures.is_empty(), "popfault's report is not the truth:\n{failures}");
}

/// A module per server × client, a test per scenario:
/// `interop::dovecot_mpop::cut_then_rerun`.
macro_rules! cells {
    ($($name:ident: $server:ident, $client:ident;)*) => {$(
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn passthrough() {
                cell(ServerKind::$server, Kind::$client, Scenario::Passthrough).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cut_then_rerun() {
                cell(ServerKind::$server, Kind::$client, Scenario::CutThenRerun).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn quit_lost_twice() {
                cell(ServerKind::$server, Kind::$client, Scenario::QuitLostTwice).await;
            }
        }
    )*};
}

cells! {
    dovecot_fetchmail: Dovecot, Fetchmail;
    dovecot_fetchmail_fetchall: Dovecot, FetchmailAll;
    dovecot_mpop: Dovecot, Mpop;
    dovecot_getmail: Dovecot, Getmail;
    dovecot_curl: Dovecot, Curl;
    dovecot_poplib: Dovecot, Poplib;
    mailutils_fetchmail: Mailutils, Fetchmail;
    mailutils_fetchmail_fetchall: Mailutils, FetchmailAll;
    mailutils_mpop: Mailutils, Mpop;
    mailutils_getmail: Mailutils, Getmail;
    mailutils_curl: Mailutils, Curl;
    mailutils_poplib: Mailutils, Poplib;
    embedded_fetchmail: Embedded, Fetchmail;
    embedded_fetchmail_fetchall: Embedded, FetchmailAll;
    embedded_mpop: Embedded, Mpop;
    embedded_getmail: Embedded, Getmail;
    embedded_curl: Embedded, Curl;
    embedded_poplib: Embedded, Poplib;
}
