//! `popfault audit`: does a real POP3 server keep RFC 1939 when the line
//! drops at the protocol points that matter?
//!
//! The audit drives its own [`Pop3Client`] through an internal proxy
//! (started in-process on 127.0.0.1:0, one per scenario, each with a
//! one-rule fault profile) and cuts the line at a chosen point: after the
//! greeting, after USER, after PASS, after DELE, inside a RETR body, after
//! RSET, and between QUIT and its reply; with `--destructive` it also checks
//! the normal QUIT commit. Before and after each cut it looks at the
//! maildrop in a fresh session straight to the server (STAT, UIDL, LIST,
//! QUIT with nothing marked), never through the fault, and compares message
//! counts and UIDs.
//!
//! Without `--destructive` the audit deletes nothing on a correct server:
//! it marks messages (DELE) only in sessions it then cuts before QUIT, and
//! loses QUIT's answer only with nothing marked. A server that does expunge
//! on a lost line would lose the marked message; after the first such loss
//! the audit marks nothing more.
//!
//! The password is only ever sent to the server: it is not printed, not
//! logged (the client logs `PASS ***`, the proxy redacts it) and not in the
//! report.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cli::{RunError, seed_or_draw};
use crate::client::{ClientError, Pop3Client};
use crate::control::Control;
use crate::events::{Event, EventSink, SessionEnd};
use crate::faults::Profile;
use crate::relay::{self, ProxyConfig};
use crate::secret::Secret;

/// The environment variable read for the password when `--pass` is not
/// given (keeps it out of `ps` and the shell history).
pub const PASS_ENV: &str = "POPFAULT_PASS";

/// The name of the one fault rule of every scenario's profile.
const RULE: &str = "audit-cut";

/// Pause after a cut session ended before looking at the maildrop, so a
/// server that does something on disconnect has done it.
const SETTLE: Duration = Duration::from_millis(300);

/// First pause between login attempts answered `-ERR [IN-USE]`; it doubles
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between login attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Width of the text table's columns: scenario, expected, observed,
/// outcome, verdict.
const WIDTHS: [usize; 5] = [18, 40, 40, 12, 7];

/// `popfault audit`
#[derive(Args, Debug)]
pub struct AuditArgs {
    /// The real server, HOST:PORT (plain POP3). Use a test mailbox.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: String,
    /// The mailbox's user name.
    #[arg(long, value_name = "USER")]
    pub user: String,
    /// Its password; only ever sent to the server, never printed or logged.
    /// Default: the POPFAULT_PASS environment variable.
    #[arg(long, value_name = "PASSWORD")]
    pub pass: Option<Secret>,
    /// Also check the QUIT commit and lose QUIT's answer with a message
    /// marked: deletes up to two messages (on a correct server).
    #[arg(long)]
    pub destructive: bool,
    /// Print the report as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Seed of the internal proxy (drawn and printed when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seconds to wait for each connect, read and write.
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub timeout: f64,
    /// Seconds to keep retrying a login answered -ERR [IN-USE] (the server
    /// may hold the maildrop lock for a moment after a cut).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    pub lock_wait: f64,
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v <= 3600.0 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds between 0 and 3600")),
    }
}

/// What to audit and how, resolved from [`AuditArgs`].
#[derive(Clone, Debug)]
pub struct AuditConfig {
    /// The server, `HOST:PORT`, as given.
    pub server: String,
    /// User name.
    pub user: String,
    /// Password.
    pub password: Secret,
    /// Whether the scenarios that delete may run.
    pub destructive: bool,
    /// The internal proxy's seed.
    pub seed: u64,
    /// Bound on each connect, read and write.
    pub timeout: Duration,
    /// How long a login answered `-ERR [IN-USE]` is retried.
    pub lock_wait: Duration,
    /// Print one line per scenario on stderr as it finishes.
    pub progress: bool,
}

impl AuditConfig {
    /// Resolves the command line: the password from `--pass` or
    /// [`PASS_ENV`], the seed drawn when not given.
    pub fn from_args(a: AuditArgs) -> Result<AuditConfig, RunError> {
        let password = match a.pass {
            Some(p) => p,
            None => std::env::var(PASS_ENV).map(Secret::from).map_err(|_| {
                RunError::Usage(format!("audit: no password: give --pass or set the {PASS_ENV} environment variable"))
            })?,
        };
        Ok(AuditConfig {
            server: a.server,
            user: a.user,
            password,
            destructive: a.destructive,
            seed: seed_or_draw(a.seed),
            timeout: Duration::from_secs_f64(a.timeout),
            lock_wait: Duration::from_secs_f64(a.lock_wait),
            progress: true,
        })
    }
}

/// Runs the audit as the CLI asked: the table (or `--json`) on stdout;
/// exit 0 when no scenario FAILs, 1 when one does, 2 for bad input (no
/// password, unreachable server, refused login…).
pub async fn run(a: AuditArgs) -> Result<ExitCode, RunError> {
    let json = a.json;
    let cfg = AuditConfig::from_args(a)?;
    let report = audit(&cfg).await?;
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
    Ok(ExitCode::from(report.exit_code()))
}

// === the report ===

/// A scenario's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The server behaved as RFC 1939 requires.
    Pass,
    /// It did not: messages were lost, or kept after QUIT +OK.
    Fail,
    /// RFC 1939 allows either outcome (in doubt); what happened is recorded.
    Info,
    /// Not run, or the cut did not happen as planned: why is in `observed`.
    Skip,
}

impl Verdict {
    /// `PASS`, `FAIL`, `INFO` or `SKIP`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Info => "INFO",
            Verdict::Skip => "SKIP",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One scenario's result. The JSON field names are a stable interface.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Stable identifier (`cut-after-dele`).
    pub name: String,
    /// For humans (`after DELE before QUIT`).
    pub title: String,
    /// The RFC 1939 section(s) (`§6`).
    pub rfc: String,
    /// What RFC 1939 requires here.
    pub expected: String,
    /// What a fresh session straight to the server saw afterwards: message
    /// count and UIDs before vs after.
    pub observed: String,
    /// The proxy's outcome for the cut session (`rolled-back`, `in-doubt`…).
    pub proxy_outcome: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// What the audit's client saw in the cut session.
    pub client_saw: String,
    /// UIDs of the messages marked (DELE) in the cut session (`#N`, the
    /// message number, when the server has no UIDL).
    pub marked: Vec<String>,
    /// UIDs gone from the maildrop after the scenario.
    pub removed: Vec<String>,
    /// Only for a lost QUIT answer with a message marked: whether the server
    /// deleted it anyway.
    pub server_committed: Option<bool>,
    /// Messages before the scenario.
    pub messages_before: Option<u32>,
    /// Messages after it.
    pub messages_after: Option<u32>,
}

/// The whole audit. Serialized by [`Report::to_json`]; the field names are
/// a stable interface (docs/REAL-SERVERS.md).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The server, as given.
    pub server: String,
    /// Its greeting line (control characters replaced).
    pub greeting: String,
    /// Whether the deleting scenarios ran.
    pub destructive: bool,
    /// The internal proxy's seed.
    pub seed: u64,
    /// Messages in the mailbox at the start.
    pub messages: u32,
    /// Whether the server answers UIDL (else counts are compared).
    pub uidl: bool,
    /// Every scenario, in the order run.
    pub scenarios: Vec<ScenarioResult>,
    /// Scenarios that passed.
    pub passed: usize,
    /// Scenarios that failed.
    pub failed: usize,
    /// Scenarios in doubt (recorded, not judged).
    pub info: usize,
    /// Scenarios not run or not conclusive.
    pub skipped: usize,
}

impl Report {
    /// 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.failed > 0 { 1 } else { 0 }
    }

    /// The scenario called `name`, if it is in the report.
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    /// The report as a text table, for humans.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let mode = if self.destructive { "destructive" } else { "non-destructive" };
        out.push_str(&format!("popfault audit of {} ({mode}, seed {})\n", self.server, self.seed));
        out.push_str(&format!("  greeting: {}\n", self.greeting));
        let uidl = if self.uidl { "UIDL supported" } else { "no UIDL: counts compared" };
        out.push_str(&format!("  mailbox:  {} message(s) at the start; {uidl}\n\n", self.messages));
        let header = ["scenario", "expected (RFC 1939)", "observed (fresh session)", "outcome", "verdict"];
        push_row(&mut out, &header.map(String::from));
        let rule: Vec<String> = WIDTHS.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&rule.join("-+-"));
        out.push('\n');
        for s in &self.scenarios {
            let cells = [
                s.title.clone(),
                format!("{}: {}", s.rfc, s.expected),
                s.observed.clone(),
                s.proxy_outcome.clone().unwrap_or_else(|| "-".into()),
                s.verdict.to_string(),
            ];
            push_row(&mut out, &cells);
            out.push_str(&rule.join("-+-"));
            out.push('\n');
        }
        out.push_str(&format!(
            "\n{} passed, {} failed, {} info (in doubt: the RFC allows either), {} skipped\n",
            self.passed, self.failed, self.info, self.skipped
        ));
        out.push_str("\nwhat the audit's client saw in each cut session:\n");
        for s in &self.scenarios {
            out.push_str(&format!("  {:<24} {}\n", format!("{}:", s.name), s.client_saw));
        }
        if !self.destructive {
            out.push_str(
                "\nnot checked: the QUIT commit itself, and a lost QUIT answer with a message marked \
                 (they delete mail: --destructive)\n",
            );
        }
        out
    }
}

/// Writes one row, each cell wrapped to its column width.
fn push_row(out: &mut String, cells: &[String; 5]) {
    let wrapped: Vec<Vec<String>> = cells.iter().zip(WIDTHS).map(|(c, w)| wrap(c, w)).collect();
    let lines = wrapped.iter().map(Vec::len).max().unwrap_or(1);
    for i in 0..lines {
        let parts: Vec<String> = wrapped
            .iter()
            .zip(WIDTHS)
            .map(|(cell, w)| format!("{:<w$}", cell.get(i).map(String::as_str).unwrap_or("")))
            .collect();
        out.push_str(parts.join(" | ").trim_end());
        out.push('\n');
    }
}

/// Splits `text` into lines of at most `width` characters at spaces
/// (longer words are cut).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let len = line.chars().count();
            let need = if len == 0 { word.len() } else { len + 1 + word.len() };
            if need <= width {
                if len > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                continue;
            }
            // A word longer than the column on its own line: cut it.
            let rest = word.split_off(width.min(word.len()));
            lines.push(word.iter().collect());
            word = rest;
            if word.is_empty() {
                break;
            }
        }
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Peer text made safe to print: control characters escaped
/// ([`crate::text::escape`]), at most 120 characters.
fn clean(text: &str) -> String {
    let shown = crate::text::escape(text);
    let mut s: String = shown.chars().take(120).collect();
    if shown.chars().count() > 120 {
        s.push('…');
    }
    s
}

// === the scenarios ===

/// The cut points, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    AfterGreeting,
    AfterUser,
    AfterPass,
    AfterDele,
    MidDownload,
    AfterRset,
    QuitReplyLost,
    QuitCommit,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::AfterGreeting => "cut-after-greeting",
            Kind::AfterUser => "cut-after-user",
            Kind::AfterPass => "cut-after-pass",
            Kind::AfterDele => "cut-after-dele",
            Kind::MidDownload => "cut-mid-download",
            Kind::AfterRset => "cut-after-rset",
            Kind::QuitReplyLost => "quit-reply-lost",
            Kind::QuitCommit => "quit-commit",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::AfterGreeting => "before login (cut after greeting)",
            Kind::AfterUser => "after USER",
            Kind::AfterPass => "after PASS",
            Kind::AfterDele => "after DELE before QUIT",
            Kind::MidDownload => "mid-download (inside a RETR body)",
            Kind::AfterRset => "after RSET",
            Kind::QuitReplyLost => "QUIT reply lost",
            Kind::QuitCommit => "QUIT commit",
        }
    }

    fn rfc(self) -> &'static str {
        match self {
            Kind::AfterGreeting | Kind::AfterUser => "§4",
            Kind::AfterPass => "§3, §4",
            Kind::AfterDele | Kind::MidDownload => "§6",
            Kind::AfterRset => "§5, §6",
            Kind::QuitReplyLost | Kind::QuitCommit => "§6",
        }
    }

    /// The scenario's one fault rule (TOML), if it has one.
    fn rule(self, offset: u64) -> Option<String> {
        let (point, filters, side) = match self {
            Kind::AfterGreeting => ("command", "command = \"USER\"".to_string(), "both"),
            Kind::AfterUser => ("response", "command = \"USER\"".to_string(), "both"),
            Kind::AfterPass => ("response", "command = \"PASS\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::AfterDele => ("response", "command = \"DELE\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::MidDownload => ("body", format!("command = \"RETR\"\noffset = {offset}"), "both"),
            Kind::AfterRset => ("response", "command = \"RSET\"\nstate = \"TRANSACTION\"".to_string(), "both"),
            Kind::QuitReplyLost => ("status", "command = \"QUIT\"\nstate = \"UPDATE\"".to_string(), "client"),
            Kind::QuitCommit => return None,
        };
        Some(format!(
            "[[rule]]\nname = \"{RULE}\"\nwhen = \"{point}\"\n{filters}\n\
             actions = [{{ do = \"disconnect\", side = \"{side}\", how = \"rst\" }}]\n"
        ))
    }
}

/// What one scenario will do.
struct Plan {
    kind: Kind,
    /// Message numbers to mark with DELE before the cut.
    marks: Vec<u32>,
    /// The message to download (mid-download).
    retr: Option<u32>,
    /// Its size (LIST) and where in its body to cut (half of it).
    size: u64,
    offset: u64,
    /// What RFC 1939 requires, for this plan.
    expected: String,
}

/// A look at the maildrop from a fresh session.
#[derive(Debug, Clone)]
struct Snapshot {
    count: u32,
    /// (number, UID) from UIDL; `None` if the server refused UIDL.
    uids: Option<Vec<(u32, String)>>,
    /// (number, size) from LIST (empty if refused).
    sizes: Vec<(u32, u64)>,
    /// Total octets from STAT.
    octets: u64,
    /// Login attempts answered `-ERR [IN-USE]` before this one got in.
    locked: u32,
    /// How long getting in took, retries included.
    waited: Duration,
}

impl Snapshot {
    /// How message `n` is named in the report: its UID, else `#n`.
    fn ident(&self, n: u32) -> String {
        self.uids
            .as_ref()
            .and_then(|u| u.iter().find(|(m, _)| *m == n))
            .map_or_else(|| format!("#{n}"), |(_, uid)| clean(uid))
    }

    fn size(&self, n: u32) -> u64 {
        self.sizes
            .iter()
            .find(|(m, _)| *m == n)
            .map(|(_, s)| *s)
            .unwrap_or_else(|| if self.count > 0 { self.octets / u64::from(self.count) } else { 0 })
    }
}

/// Why a session to the server could not be opened.
#[derive(Debug)]
enum OpenError {
    /// No connection or no `+OK` greeting.
    Connect(ClientError),
    /// USER or PASS answered `-ERR` (other than `[IN-USE]`).
    Refused(String),
    /// `[IN-USE]` for longer than the lock wait.
    Locked(String, Duration),
    /// The connection broke or timed out during login or a command.
    Lost(ClientError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Connect(ClientError::Err(text)) => write!(f, "greeted with -ERR {}", clean(text)),
            OpenError::Connect(e) => write!(f, "cannot connect: {}", describe(e)),
            OpenError::Refused(text) => write!(f, "login refused: -ERR {}", clean(text)),
            OpenError::Locked(text, waited) => {
                write!(f, "maildrop still locked after {:.1} s: -ERR {}", waited.as_secs_f64(), clean(text))
            }
            OpenError::Lost(e) => write!(f, "connection lost: {}", describe(e)),
        }
    }
}

/// A client error in a few words, for the report.
fn describe(e: &ClientError) -> String {
    match e {
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionReset => "connection reset".into(),
        ClientError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        ClientError::Io(io) => format!("i/o error ({})", io.kind()),
        ClientError::Disconnected => "connection closed (EOF)".into(),
        ClientError::Timeout => "no answer (timed out)".into(),
        ClientError::Err(text) => format!("-ERR {}", clean(text)),
        ClientError::Protocol(p) => format!("protocol violation ({})", clean(p)),
        ClientError::InvalidArgument(a) => format!("invalid argument ({a})"),
    }
}

/// Whether a `-ERR` to a login means "try again in a moment".
fn retryable(text: &str) -> bool {
    let t = text.to_ascii_uppercase();
    t.contains("[IN-USE]") || t.contains("[SYS/TEMP]")
}

/// A logged-in session.
struct Opened {
    client: Pop3Client,
    locked: u32,
    waited: Duration,
}

/// What the cut session did, from the client's side.
#[derive(Default)]
struct Played {
    /// The client's address (to find the proxy's record of the session).
    local: Option<SocketAddr>,
    /// In words.
    saw: Vec<String>,
    /// QUIT's answer: `Some(true)` +OK, `Some(false)` -ERR, `None` none.
    quit: Option<bool>,
}

struct Auditor<'a> {
    cfg: &'a AuditConfig,
    addr: SocketAddr,
    /// Set (non-destructive only) once a scenario showed the server
    /// removing marked messages without QUIT: mark nothing more.
    lost_marked: Option<&'static str>,
}

/// Runs the whole audit. Errors before the first scenario (unresolvable or
/// unreachable server, refused login) are [`RunError::Usage`].
pub async fn audit(cfg: &AuditConfig) -> Result<Report, RunError> {
    for (what, value) in [("--user", cfg.user.as_str()), ("the password", cfg.password.expose())] {
        if value.is_empty() || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(RunError::Usage(format!("audit: {what} is empty or contains CR, LF or NUL")));
        }
    }
    let addr = resolve(&cfg.server, cfg.timeout).await?;
    let mut a = Auditor { cfg, addr, lost_marked: None };
    let (mut current, greeting) = a.first_look().await?;
    let start_count = current.count;
    if cfg.progress {
        eprintln!(
            "popfault audit: {}: {} message(s), {}, seed {}",
            cfg.server,
            current.count,
            if cfg.destructive { "destructive" } else { "non-destructive" },
            cfg.seed
        );
    }
    let mut kinds = vec![
        Kind::AfterGreeting,
        Kind::AfterUser,
        Kind::AfterPass,
        Kind::AfterDele,
        Kind::MidDownload,
        Kind::AfterRset,
        Kind::QuitReplyLost,
    ];
    if cfg.destructive {
        kinds.push(Kind::QuitCommit);
    }
    let mut results = Vec::new();
    let mut broken: Option<String> = None;
    for (i, kind) in kinds.iter().copied().enumerate() {
        let result = match &broken {
            Some(why) => skipped(kind, &format!("not run: {why}")),
            None => {
                let limit = cfg.timeout * 6 + cfg.lock_wait * 2 + Duration::from_secs(10);
                match tokio::time::timeout(limit, a.scenario(kind, &current)).await {
                    Ok(Ok((result, after))) => {
                        current = after;
                        result
                    }
                    Ok(Err((result, why))) => {
                        broken = Some(why);
                        result
                    }
                    Err(_) => {
                        broken = Some(format!("{} did not finish in {} s", kind.title(), limit.as_secs()));
                        skipped(kind, &format!("did not finish in {} s", limit.as_secs()))
                    }
                }
            }
        };
        if cfg.progress {
            eprintln!("  [{}/{}] {:<36} {}", i + 1, kinds.len(), result.title, result.verdict);
        }
        results.push(result);
    }
    let count = |v: Verdict| results.iter().filter(|r| r.verdict == v).count();
    Ok(Report {
        server: cfg.server.clone(),
        greeting: clean(&greeting),
        destructive: cfg.destructive,
        seed: cfg.seed,
        messages: start_count,
        uidl: current.uids.is_some(),
        passed: count(Verdict::Pass),
        failed: count(Verdict::Fail),
        info: count(Verdict::Info),
        skipped: count(Verdict::Skip),
        scenarios: results,
    })
}

/// `HOST:PORT` to its first address; a clear usage error otherwise.
async fn resolve(server: &str, limit: Duration) -> Result<SocketAddr, RunError> {
    let looked_up = tokio::time::timeout(limit, tokio::net::lookup_host(server))
        .await
        .map_err(|_| RunError::Usage(format!("audit: server {server}: name lookup timed out")))?;
    match looked_up.map(|mut a| a.next()) {
        Ok(Some(addr)) => Ok(addr),
        Ok(None) => Err(RunError::Usage(format!("audit: server {server}: no address"))),
        Err(e) => Err(RunError::Usage(format!("audit: server {server}: cannot resolve ({e}); expected HOST:PORT"))),
    }
}

/// A result for a scenario that did not run.
fn skipped(kind: Kind, why: &str) -> ScenarioResult {
    ScenarioResult {
        name: kind.name().into(),
        title: kind.title().into(),
        rfc: kind.rfc().into(),
        expected: "-".into(),
        observed: why.into(),
        proxy_outcome: None,
        verdict: Verdict::Skip,
        client_saw: "-".into(),
        marked: Vec::new(),
        removed: Vec::new(),
        server_committed: None,
        messages_before: None,
        messages_after: None,
    }
}

impl Auditor<'_> {
    /// The first look at the maildrop; any failure is bad input (exit 2).
    async fn first_look(&self) -> Result<(Snapshot, String), RunError> {
        let server = &self.cfg.server;
        let usage = |e: OpenError| {
            let hint = match e {
                OpenError::Refused(_) => " (check --user and --pass)",
                OpenError::Locked(..) => " (is another client logged in to this mailbox?)",
                _ => "",
            };
            RunError::Usage(format!("audit: {server}: {e}{hint}"))
        };
        let opened = self.open(self.addr).await.map_err(usage)?;
        let greeting = opened.client.greeting().to_string();
        let snapshot = self.look(opened).await.map_err(usage)?;
        Ok((snapshot, greeting))
    }

    /// Connects to `addr` and logs in, retrying for up to the lock wait
    /// while the server answers `-ERR [IN-USE]` (or `[SYS/TEMP]`).
    async fn open(&self, addr: SocketAddr) -> Result<Opened, OpenError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        let mut locked = 0;
        loop {
            let (mut client, _) =
                Pop3Client::connect_with_timeout(addr, self.cfg.timeout).await.map_err(OpenError::Connect)?;
            match client.login(&self.cfg.user, self.cfg.password.expose()).await {
                Ok(_) => return Ok(Opened { client, locked, waited: started.elapsed() }),
                Err(ClientError::Err(text)) if retryable(&text) => {
                    locked += 1;
                    let _ = client.quit().await;
                    if started.elapsed() + backoff > self.cfg.lock_wait {
                        return Err(OpenError::Locked(text, started.elapsed()));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
                Err(ClientError::Err(text)) => {
                    let _ = client.quit().await;
                    return Err(OpenError::Refused(text));
                }
                Err(e) => return Err(OpenError::Lost(e)),
            }
        }
    }

    /// STAT, UIDL and LIST in a logged-in session, then QUIT (nothing is
    /// marked, so QUIT removes nothing).
    async fn look(&self, opened: Opened) -> Result<Snapshot, OpenError> {
        let Opened { mut client, locked, waited } = opened;
        let (count, octets) = client.stat().await.map_err(OpenError::Lost)?;
        let uids = match client.uidl().await {
            Ok(list) => Some(list),
            Err(ClientError::Err(_)) => None,
            Err(e) => return Err(OpenError::Lost(e)),
        };
        let sizes = match client.list().await {
            Ok(list) => list,
            Err(ClientError::Err(_)) => Vec::new(),
            Err(e) => return Err(OpenError::Lost(e)),
        };
        let _ = client.quit().await;
        Ok(Snapshot { count, uids, sizes, octets, locked, waited })
    }

    /// A fresh session straight to the server.
    async fn snapshot(&self) -> Result<Snapshot, OpenError> {
        let opened = self.open(self.addr).await?;
        self.look(opened).await
    }

    /// What the scenario will do given the maildrop now, or why it can't run.
    fn plan(&self, kind: Kind, now: &Snapshot) -> Result<Plan, String> {
        let n = now.count;
        // Marking is safe on a correct server; after a server lost a marked
        // message, the non-destructive audit marks nothing more.
        let may_mark = self.cfg.destructive || self.lost_marked.is_none();
        let guard = self
            .lost_marked
            .map(|s| format!(" (nothing marked: \"{s}\" showed this server removes marked messages without QUIT)"))
            .unwrap_or_default();
        let plan = |marks: Vec<u32>, retr: Option<u32>, expected: String| Plan {
            kind,
            marks,
            retr,
            size: retr.map_or(0, |r| now.size(r)),
            offset: retr.map_or(0, |r| now.size(r) / 2),
            expected,
        };
        Ok(match kind {
            Kind::AfterGreeting => plan(
                vec![],
                None,
                "a session cut before any command (AUTHORIZATION) changes nothing; the next login works".into(),
            ),
            Kind::AfterUser => plan(
                vec![],
                None,
                "a session cut after USER, before PASS, changes nothing and leaves no lock behind".into(),
            ),
            Kind::AfterPass => plan(
                vec![],
                None,
                "a session cut right after login does not enter UPDATE: nothing removed; the maildrop lock is \
                 released"
                    .into(),
            ),
            Kind::AfterDele => {
                if n == 0 {
                    return Err("the mailbox is empty: nothing to mark".into());
                }
                if !may_mark {
                    return Err(format!("not marking more{guard}"));
                }
                plan(vec![1], None, "marked messages survive a session that ends without QUIT".into())
            }
            Kind::MidDownload => {
                if n == 0 {
                    return Err("the mailbox is empty: nothing to download".into());
                }
                if n >= 2 && may_mark {
                    plan(
                        vec![1],
                        Some(2),
                        "a line lost inside RETR (after DELE 1) removes nothing: the marked message and the one \
                         being downloaded survive"
                            .into(),
                    )
                } else {
                    plan(
                        vec![],
                        Some(1),
                        format!(
                            "a line lost inside RETR removes nothing: the message being downloaded survives{guard}"
                        ),
                    )
                }
            }
            Kind::AfterRset => {
                if n >= 1 && may_mark {
                    plan(vec![1], None, "RSET unmarks (DELE 1, RSET); a session cut after it removes nothing".into())
                } else {
                    plan(vec![], None, format!("a session cut after RSET removes nothing{guard}"))
                }
            }
            Kind::QuitReplyLost => {
                if self.cfg.destructive && n >= 1 {
                    plan(
                        vec![1],
                        None,
                        "QUIT reached the server, its answer was lost: the server enters UPDATE and removes the \
                         marked message (only it); the client cannot know (in doubt)"
                            .into(),
                    )
                } else {
                    plan(
                        vec![],
                        None,
                        "QUIT reached the server with nothing marked, its answer was lost: nothing is removed".into(),
                    )
                }
            }
            Kind::QuitCommit => {
                if n == 0 {
                    return Err("the mailbox is empty: nothing to delete".into());
                }
                plan(vec![1], None, "after QUIT +OK the marked message is gone, and only it".into())
            }
        })
    }

    /// Runs one scenario from `before`. `Ok` carries the result and the
    /// maildrop afterwards; `Err` the result and why the audit cannot go on
    /// (the maildrop could not be looked at).
    async fn scenario(
        &mut self,
        kind: Kind,
        before: &Snapshot,
    ) -> Result<(ScenarioResult, Snapshot), (ScenarioResult, String)> {
        let plan = match self.plan(kind, before) {
            Ok(p) => p,
            Err(why) => return Ok((skipped(kind, &why), before.clone())),
        };
        let played = self.cut_session(&plan).await;
        let (played, end) = match played {
            Ok(x) => x,
            Err(why) => {
                // The proxy could not start: nothing happened on the server.
                let mut r = skipped(kind, &format!("internal proxy: {why}"));
                r.expected = plan.expected;
                return Err((r, why));
            }
        };
        tokio::time::sleep(SETTLE).await;
        let marked: Vec<String> = plan.marks.iter().map(|&m| before.ident(m)).collect();
        let mut result = ScenarioResult {
            name: kind.name().into(),
            title: kind.title().into(),
            rfc: kind.rfc().into(),
            expected: plan.expected.clone(),
            observed: String::new(),
            proxy_outcome: end.as_ref().map(|e| e.outcome.as_str().to_string()),
            verdict: Verdict::Skip,
            client_saw: played.saw.join(", "),
            marked: marked.clone(),
            removed: Vec::new(),
            server_committed: None,
            messages_before: Some(before.count),
            messages_after: None,
        };
        let after = match self.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                result.verdict = Verdict::Fail;
                result.observed = format!("could not look at the maildrop after the cut: {e}");
                let why = format!("the maildrop could not be looked at after \"{}\"", kind.title());
                return Err((result, why));
            }
        };
        result.messages_after = Some(after.count);
        let cut = kind == Kind::QuitCommit || end.as_ref().is_some_and(|e| e.faults.iter().any(|f| f == RULE));
        judge(&mut result, &plan, &played, cut, before, &after);
        if !self.cfg.destructive
            && self.lost_marked.is_none()
            && result.verdict == Verdict::Fail
            && !result.removed.is_empty()
        {
            self.lost_marked = Some(kind.title());
        }
        Ok((result, after))
    }

    /// Starts a proxy with the scenario's profile, plays the client's part
    /// through it and returns what the client saw and the proxy's record of
    /// the session (if it was found).
    async fn cut_session(&self, plan: &Plan) -> Result<(Played, Option<SessionEnd>), String> {
        let toml = plan.kind.rule(plan.offset).unwrap_or_default();
        let name = format!("audit-{}", plan.kind.name());
        let profile = Profile::from_toml(&toml, &name, &name).map_err(|e| format!("bad internal profile: {e}"))?;
        let (sink, mut events) = EventSink::channel(4096);
        let control = Arc::new(Control::new(Arc::new(profile), self.cfg.seed));
        let mut pcfg = ProxyConfig::new(([127, 0, 0, 1], 0).into(), self.addr.to_string());
        pcfg.connect_timeout = self.cfg.timeout;
        pcfg.greeting_timeout = self.cfg.timeout;
        let proxy = relay::start(pcfg, control, sink).await.map_err(|e| format!("cannot listen on loopback: {e}"))?;
        let played = self.play(plan, proxy.local_addr).await;
        let end = match played.local {
            Some(local) => session_end(&mut events, local, self.cfg.timeout + Duration::from_secs(5)).await,
            None => None,
        };
        proxy.shutdown().await;
        Ok((played, end))
    }

    /// The client's part of a scenario, through the proxy at `proxy`.
    async fn play(&self, plan: &Plan, proxy: SocketAddr) -> Played {
        let mut p = Played::default();
        let mut client = match plan.kind {
            Kind::AfterGreeting | Kind::AfterUser => {
                match Pop3Client::connect_with_timeout(proxy, self.cfg.timeout).await {
                    Ok((c, _)) => {
                        p.local = c.local_addr().ok();
                        p.saw.push("greeting".into());
                        c
                    }
                    Err(e) => {
                        p.saw.push(format!("no session: {}", describe(&e)));
                        return p;
                    }
                }
            }
            _ => match self.open(proxy).await {
                Ok(o) => {
                    p.local = o.client.local_addr().ok();
                    p.saw.push(if o.locked > 0 {
                        format!("logged in (after {} [IN-USE] answer(s))", o.locked)
                    } else {
                        "logged in".into()
                    });
                    o.client
                }
                Err(e) => {
                    p.saw.push(format!("no session: {e}"));
                    return p;
                }
            },
        };
        // Where a cut-at-command or cut-inside-response lands, the call
        // fails; after a cut at `response` the client notices when it next
        // reads: it waits for the line to drop instead of sending more.
        match plan.kind {
            Kind::AfterGreeting => match client.user(&self.cfg.user).await {
                Err(e) => p.saw.push(format!("USER: {}", describe(&e))),
                Ok(_) => p.saw.push("USER +OK (no cut)".into()),
            },
            Kind::AfterUser => match client.user(&self.cfg.user).await {
                Ok(_) => {
                    p.saw.push("USER +OK".into());
                    p.saw.push(line_drop(&mut client).await);
                }
                Err(e) => p.saw.push(format!("USER: {}", describe(&e))),
            },
            Kind::AfterPass => p.saw.push(line_drop(&mut client).await),
            Kind::AfterDele | Kind::AfterRset | Kind::MidDownload | Kind::QuitReplyLost | Kind::QuitCommit => {
                for &m in &plan.marks {
                    match client.dele(m).await {
                        Ok(_) => p.saw.push(format!("DELE {m} +OK")),
                        Err(e) => {
                            p.saw.push(format!("DELE {m}: {}", describe(&e)));
                            return p;
                        }
                    }
                }
                match plan.kind {
                    Kind::AfterDele => p.saw.push(line_drop(&mut client).await),
                    Kind::AfterRset => match client.rset().await {
                        Ok(_) => {
                            p.saw.push("RSET +OK".into());
                            p.saw.push(line_drop(&mut client).await);
                        }
                        Err(e) => p.saw.push(format!("RSET: {}", describe(&e))),
                    },
                    Kind::MidDownload => {
                        let r = plan.retr.unwrap_or(1);
                        match client.retr(r).await {
                            Err(e) => p.saw.push(format!(
                                "RETR {r}: {} inside the message (cut planned at byte {} of {})",
                                describe(&e),
                                plan.offset,
                                plan.size
                            )),
                            Ok(body) => p.saw.push(format!("RETR {r}: all {} bytes (no cut)", body.len())),
                        }
                    }
                    _ => match client.quit().await {
                        Ok(_) => {
                            p.quit = Some(true);
                            p.saw.push("QUIT +OK".into());
                        }
                        Err(ClientError::Err(text)) => {
                            p.quit = Some(false);
                            p.saw.push(format!("QUIT -ERR {}", clean(&text)));
                        }
                        Err(e) => p.saw.push(format!("QUIT sent; {} instead of its answer", describe(&e))),
                    },
                }
            }
        }
        p
    }
}

/// Waits for the line to drop (a cut after a delivered response): what the
/// client saw.
async fn line_drop(client: &mut Pop3Client) -> String {
    match client.read_line().await {
        Err(e) => describe(&e),
        Ok(line) => format!("unexpected line {:?} (no cut)", clean(&line)),
    }
}

/// The proxy's record of the session from `local`, waiting up to `limit`.
async fn session_end(events: &mut mpsc::Receiver<Event>, local: SocketAddr, limit: Duration) -> Option<SessionEnd> {
    tokio::time::timeout(limit, async {
        while let Some(event) = events.recv().await {
            if let Event::SessionEnd(end) = event {
                if end.client == local {
                    return Some(*end);
                }
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
}

/// Compares the maildrop before and after and decides the verdict.
fn judge(r: &mut ScenarioResult, plan: &Plan, played: &Played, cut: bool, before: &Snapshot, after: &Snapshot) {
    let marked: HashSet<&str> = r.marked.iter().map(String::as_str).collect();
    // Gone messages, and how many of them were not marked.
    let (removed, added, gone_other) = match (&before.uids, &after.uids) {
        (Some(b), Some(a)) => {
            let now: HashSet<&str> = a.iter().map(|(_, u)| u.as_str()).collect();
            let then: HashSet<&str> = b.iter().map(|(_, u)| u.as_str()).collect();
            let removed: Vec<String> =
                b.iter().filter(|(_, u)| !now.contains(u.as_str())).map(|(_, u)| clean(u)).collect();
            let added = a.iter().filter(|(_, u)| !then.contains(u.as_str())).count();
            let other = removed.iter().filter(|u| !marked.contains(u.as_str())).count();
            (removed, added, other)
        }
        // No UIDL: by count; the marked ones are assumed to go first.
        _ => {
            let gone = before.count.saturating_sub(after.count) as usize;
            let added = after.count.saturating_sub(before.count) as usize;
            let removed: Vec<String> = r.marked.iter().take(gone).cloned().collect();
            let other = gone - removed.len();
            let mut all = removed;
            all.extend((0..other).map(|_| "?".to_string()));
            (all, added, other)
        }
    };
    let gone_marked = removed.len() - gone_other;
    let uid_word = if before.uids.is_some() { "UIDs" } else { "count (no UIDL)" };
    let mut observed = format!("{} → {} messages", before.count, after.count);
    if removed.is_empty() {
        observed.push_str(&format!(", same {uid_word}"));
    } else {
        let names: Vec<String> = removed
            .iter()
            .map(|u| if marked.contains(u.as_str()) { format!("{u} (marked)") } else { format!("{u} (NOT marked)") })
            .collect();
        observed.push_str(&format!("; gone: {}", names.join(", ")));
    }
    if added > 0 {
        observed.push_str(&format!("; {added} new"));
    }
    r.removed = removed;
    let kept_marked: Vec<&String> = r.marked.iter().filter(|m| !r.removed.contains(m)).collect();
    let lock = if after.locked > 0 {
        format!("; fresh login waited {:.1} s ([IN-USE] × {})", after.waited.as_secs_f64(), after.locked)
    } else {
        "; fresh login at once".into()
    };

    let (verdict, note) = if gone_other > 0 {
        (Verdict::Fail, "messages that were never marked are gone".to_string())
    } else if !cut {
        (Verdict::Skip, format!("the planned cut did not happen (client: {})", played.saw.join(", ")))
    } else {
        match plan.kind {
            Kind::QuitReplyLost if !r.marked.is_empty() => {
                let committed = gone_marked == r.marked.len();
                r.server_committed = Some(committed);
                let what = if committed {
                    "server committed: yes (the marked message is gone)"
                } else if gone_marked == 0 {
                    "server committed: no (the marked message is still there)"
                } else {
                    "server committed: partly"
                };
                (Verdict::Info, what.to_string())
            }
            Kind::QuitCommit => match played.quit {
                Some(true) if kept_marked.is_empty() => (Verdict::Pass, "QUIT +OK; the marked message is gone".into()),
                Some(true) => (Verdict::Fail, "QUIT answered +OK but the marked message is still there".into()),
                Some(false) => (Verdict::Info, "QUIT answered -ERR: the server says the commit failed".into()),
                None => (Verdict::Info, "QUIT got no answer: in doubt".into()),
            },
            Kind::AfterRset if gone_marked > 0 => {
                (Verdict::Fail, "the message marked, then unmarked by RSET, is gone without QUIT".into())
            }
            _ if gone_marked > 0 => (Verdict::Fail, "a marked message is gone although QUIT was never answered".into()),
            Kind::QuitReplyLost => (Verdict::Pass, "nothing was marked; nothing removed".into()),
            Kind::AfterRset if !r.marked.is_empty() => {
                (Verdict::Pass, "the message marked, then unmarked by RSET, is still there".into())
            }
            _ if !r.marked.is_empty() => (Verdict::Pass, "the marked message is still there".into()),
            _ => (Verdict::Pass, String::new()),
        }
    };
    r.verdict = verdict;
    if !note.is_empty() {
        observed.push_str("; ");
        observed.push_str(&note);
    }
    observed.push_str(&lock);
    r.observed = observed;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_fits_words_and_cuts_long_ones() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("", 5), vec![""]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("x abcdefghij", 4), vec!["x", "abcd", "efgh", "ij"]);
        for line in wrap("§6: marked messages survive a session that ends without QUIT", 12) {
            assert!(line.chars().count() <= 12, "{line:?}");
        }
    }

    #[test]
    fn every_rule_is_a_valid_profile() {
        for kind in [
            Kind::AfterGreeting,
            Kind::AfterUser,
            Kind::AfterPass,
            Kind::AfterDele,
            Kind::MidDownload,
            Kind::AfterRset,
            Kind::QuitReplyLost,
        ] {
            let toml = kind.rule(100).expect("a rule");
            let p = Profile::from_toml(&toml, kind.name(), kind.name()).unwrap_or_else(|e| panic!("{toml}\n{e}"));
            assert_eq!(p.rules.len(), 1);
        }
        assert!(Kind::QuitCommit.rule(0).is_none());
    }

    fn snap(count: u32, uids: Option<&[&str]>) -> Snapshot {
        Snapshot {
            count,
            uids: uids.map(|u| u.iter().zip(1..).map(|(uid, n)| (n, uid.to_string())).collect()),
            sizes: Vec::new(),
            octets: 0,
            locked: 0,
            waited: Duration::ZERO,
        }
    }

    fn judged(kind: Kind, marks: Vec<u32>, quit: Option<bool>, before: &Snapshot, after: &Snapshot) -> ScenarioResult {
        let mut r = skipped(kind, "");
        r.marked = marks.iter().map(|&m| before.ident(m)).collect();
        let plan = Plan { kind, marks, retr: None, size: 0, offset: 0, expected: String::new() };
        let played = Played { local: None, saw: vec![], quit };
        judge(&mut r, &plan, &played, true, before, after);
        r
    }

    #[test]
    fn verdicts_by_uid() {
        let before = snap(3, Some(&["a", "b", "c"]));
        let kept = snap(3, Some(&["a", "b", "c"]));
        let lost_a = snap(2, Some(&["b", "c"]));
        let lost_b = snap(2, Some(&["a", "c"]));
        assert_eq!(judged(Kind::AfterDele, vec![1], None, &before, &kept).verdict, Verdict::Pass);
        let r = judged(Kind::AfterDele, vec![1], None, &before, &lost_a);
        assert_eq!((r.verdict, r.removed.clone()), (Verdict::Fail, vec!["a".to_string()]));
        assert!(r.observed.contains("a (marked)"), "{}", r.observed);
        // An unmarked message gone is a failure wherever it happens.
        let r = judged(Kind::QuitCommit, vec![1], Some(true), &before, &lost_b);
        assert_eq!(r.verdict, Verdict::Fail);
        assert!(r.observed.contains("b (NOT marked)"), "{}", r.observed);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &lost_a).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &kept).verdict, Verdict::Fail);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(false), &before, &kept).verdict, Verdict::Info);
        let r = judged(Kind::QuitReplyLost, vec![1], None, &before, &lost_a);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Info, Some(true)));
        let r = judged(Kind::QuitReplyLost, vec![1], None, &before, &kept);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Info, Some(false)));
        let r = judged(Kind::QuitReplyLost, vec![], None, &before, &kept);
        assert_eq!((r.verdict, r.server_committed), (Verdict::Pass, None));
        // New mail is not a failure.
        let more = snap(4, Some(&["a", "b", "c", "d"]));
        let r = judged(Kind::AfterPass, vec![], None, &before, &more);
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.observed.contains("1 new"), "{}", r.observed);
    }

    #[test]
    fn verdicts_by_count_without_uidl() {
        let before = snap(3, None);
        let r = judged(Kind::AfterDele, vec![1], None, &before, &snap(2, None));
        assert_eq!(
            (r.verdict, r.marked.clone(), r.removed.clone()),
            (Verdict::Fail, vec!["#1".into()], vec!["#1".into()])
        );
        assert_eq!(judged(Kind::AfterDele, vec![1], None, &before, &snap(3, None)).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &snap(2, None)).verdict, Verdict::Pass);
        assert_eq!(judged(Kind::QuitCommit, vec![1], Some(true), &before, &snap(1, None)).verdict, Verdict::Fail);
    }

    #[test]
    fn clean_strips_control_characters() {
        assert_eq!(clean("ok\r\n\x1b[2J\u{9b}"), "ok\\x0d\\x0a\\x1b[2J\\u{9b}");
        assert!(clean(&"x".repeat(500)).chars().count() <= 121);
    }

    #[test]
    fn debug_hides_the_password() {
        let cfg = AuditConfig {
            server: "h:1".into(),
            user: "u".into(),
            password: "hunter2".into(),
            destructive: false,
            seed: 1,
            timeout: Duration::from_secs(1),
            lock_wait: Duration::from_secs(1),
            progress: false,
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }
}
