//! The audit's runner: the [`Auditor`] opens sessions straight to the
//! server (logging in again while the maildrop is locked) to take
//! [`Snapshot`]s, and for each scenario starts an in-process proxy with its
//! one-rule profile, plays the client's part through it and finds the
//! proxy's record of the session.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::AuditConfig;
use super::report::{Report, ScenarioResult, Verdict, clean};
use super::scenarios::{Kind, Plan, Played, RULE, Snapshot, judge, kinds, plan, skipped};
use crate::cli::common::RunError;
use crate::client::{ClientError, Pop3Client};
use crate::control::Control;
use crate::events::{Event, EventSink, SessionEnd};
use crate::faults::Profile;
use crate::relay::{self, ProxyConfig};

/// Pause after a cut session ended before looking at the maildrop, so a
/// server that does something on disconnect has done it.
const SETTLE: Duration = Duration::from_millis(300);

/// First pause between login attempts answered `-ERR [IN-USE]`; it doubles
/// up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between login attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

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
    let kinds = kinds(cfg.destructive);
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

    /// Runs one scenario from `before`. `Ok` carries the result and the
    /// maildrop afterwards; `Err` the result and why the audit cannot go on
    /// (the maildrop could not be looked at).
    async fn scenario(
        &mut self,
        kind: Kind,
        before: &Snapshot,
    ) -> Result<(ScenarioResult, Snapshot), (ScenarioResult, String)> {
        let plan = match plan(kind, before, self.cfg.destructive, self.lost_marked) {
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
