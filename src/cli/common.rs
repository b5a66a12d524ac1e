//! What the subcommands share: errors and exit codes, the seed, profile
//! loading, the signals that end a run, the dashboard thread ([`Ui`]) and
//! writing to a terminal that may be gone. The subcommand files use this
//! one and never each other, so the shell has no import cycle.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::aggregate::FileReport;
use crate::control::Control;
use crate::dashboard::SharedModel;
use crate::faults::{Profile, builtin};
use crate::session::Outcome;

/// The exit code of a run that ended in order and printed its summary, but
/// whose events file is incomplete (a write failed, lines were dropped, or
/// the summary line could not be written in time).
pub const EXIT_EVENTS_INCOMPLETE: u8 = 3;

/// Writes `text` to stdout. A terminal that went away (SIGHUP) or a closed
/// pipe is no reason to panic at the very end of a run.
pub fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Writes `line` and a newline to stderr, ignoring a stderr that is gone.
pub fn say_err(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A failed run: what to say and which exit code.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad input (address in use, unresolvable upstream…): exit 2.
    #[error("{0}")]
    Usage(String),
    /// Anything else: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl RunError {
    /// 2 for [`RunError::Usage`] (as clap does for usage errors), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

/// Exit 0, or [`EXIT_EVENTS_INCOMPLETE`] with a line added to the summary
/// `out` when the events file is incomplete.
pub fn events_verdict(report: Option<&FileReport>, out: &mut String) -> ExitCode {
    match report {
        Some(r) if !r.complete() => {
            out.push_str(&format!("  WARNING: {}\n", r.describe()));
            ExitCode::from(EXIT_EVENTS_INCOMPLETE)
        }
        _ => ExitCode::SUCCESS,
    }
}

/// Resolves `--profile`: a clear message (exit 2) when it is unusable.
pub fn load_profile(name_or_path: &str) -> Result<Profile, RunError> {
    builtin::load(name_or_path).map_err(|e| RunError::Usage(e.to_string()))
}

/// The given seed, or a fresh one (printed by the caller, for replay).
pub fn seed_or_draw(seed: Option<u64>) -> u64 {
    // Drawn seeds stay below 2^53 so JSON readers (jq, JavaScript) keep
    // them exact and a seed read back from the events file replays.
    seed.unwrap_or_else(|| rand::random::<u64>() >> 11)
}

/// Parses a `--duration`-like option: seconds, more than 0.
pub fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

/// Parses a `--listen` value: `IP:PORT`, or `HOST:PORT` to be resolved
/// at start-up (as `--upstream` is).
pub fn listen_arg(s: &str) -> Result<String, String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_string()),
        _ => Err(format!("invalid socket address syntax '{s}': expected HOST:PORT or IP:PORT (e.g. localhost:1110)")),
    }
}

/// The addresses a `--listen` value names, IPv4 first (a name such as
/// `localhost` usually has both).
pub async fn resolve_listen(listen: &str) -> Result<Vec<SocketAddr>, RunError> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return Ok(vec![addr]);
    }
    let host = listen.rsplit_once(':').map_or(listen, |(h, _)| h);
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host(listen)
        .await
        .map_err(|e| RunError::Usage(format!("--listen {listen}: cannot resolve the host '{host}' ({e})")))?
        .collect();
    addrs.sort_by_key(|a| a.is_ipv6());
    addrs.dedup();
    if addrs.is_empty() {
        return Err(RunError::Usage(format!("--listen {listen}: the host '{host}' has no address")));
    }
    Ok(addrs)
}

/// Resolves `HOST:PORT` now, so a typo is reported at start-up: a name
/// that does not resolve is said to be one, not a syntax error.
pub async fn check_upstream(upstream: &str) -> Result<(), RunError> {
    let host_port = upstream.rsplit_once(':').filter(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
    match tokio::net::lookup_host(upstream).await.map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(RunError::Usage(format!("upstream {upstream}: the host has no address"))),
        Err(e) => match host_port {
            Some((host, _)) => {
                Err(RunError::Usage(format!("upstream {upstream}: cannot resolve the host '{host}' ({e})")))
            }
            None => {
                Err(RunError::Usage(format!("upstream '{upstream}': expected HOST:PORT (e.g. pop.example.net:110)")))
            }
        },
    }
}

/// Tries the upstream once at start-up: when nothing accepts, every
/// session would be `refused` with no word at start. Says so, and the run
/// goes on (the server may come up later).
pub async fn warn_if_upstream_down(upstream: &str, limit: Duration) {
    let why = match tokio::time::timeout(limit, tokio::net::TcpStream::connect(upstream)).await {
        Ok(Ok(_)) => return,
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {:.1}s", limit.as_secs_f64()),
    };
    eprintln!(
        "popfault: warning: upstream {upstream} is not accepting connections ({why}); \
         running anyway, and every session is `refused` until it does"
    );
}

/// Warns on stderr when `addr` is reachable from beyond this machine.
pub fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        eprintln!(
            "popfault: WARNING: listening on {addr}, not loopback. popfault is a man in the middle carrying passwords; \
             anyone who can reach this address can use it."
        );
    }
}

/// How a run shows itself: the live dashboard, or nothing (headless).
pub struct Ui {
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Cancelled when the person quits the dashboard (q, Ctrl-C).
    pub quit: CancellationToken,
    /// The dashboard's model, fed by the aggregator (also when headless
    /// with a progress line, which reads it).
    pub model: Option<(SharedModel, Instant)>,
    /// The dashboard draws the model; otherwise a progress line reads it.
    dashboard: bool,
}

/// How often the headless progress line is written.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The headless progress line: sessions live and ended, outcomes so far
/// (those seen), faults fired.
pub fn progress_line(model: &SharedModel, elapsed: Duration) -> String {
    let m = model.lock().unwrap_or_else(|e| e.into_inner());
    let t = m.totals();
    let outcomes: Vec<String> = Outcome::ALL
        .iter()
        .filter(|o| t.outcome(**o) > 0)
        .map(|o| format!("{} {}", o.as_str(), t.outcome(*o)))
        .collect();
    let outcomes = if outcomes.is_empty() { "no outcomes yet".to_string() } else { outcomes.join(", ") };
    format!(
        "popfault: {:.0}s: sessions {} live, {} ended ({outcomes}); faults {}",
        elapsed.as_secs_f64(),
        m.live_count(),
        t.sessions,
        t.faults()
    )
}

impl Ui {
    /// Prepares the dashboard when stdout is a terminal and not `headless`.
    pub fn new(headless: bool) -> Ui {
        Ui::with_progress(headless, false)
    }

    /// Like [`Ui::new`]; without the dashboard, a progress line on stderr
    /// every [`PROGRESS_EVERY`] when stderr is a terminal or `progress`.
    pub fn with_progress(headless: bool, progress: bool) -> Ui {
        let dashboard = !headless && std::io::stdout().is_terminal();
        let progress = !dashboard && (progress || std::io::stderr().is_terminal());
        let model = (dashboard || progress).then(|| (crate::dashboard::shared_model(), Instant::now()));
        Ui { thread: None, quit: CancellationToken::new(), model, dashboard }
    }

    /// Starts drawing (if the dashboard is on).
    pub fn start(&mut self, control: Arc<Control>, listen: String, upstream: String) {
        let Some((model, started)) = self.model.clone() else { return };
        if !self.dashboard {
            let quit = self.quit.clone();
            self.thread = Some(std::thread::spawn(move || {
                let mut next = started + PROGRESS_EVERY;
                while !quit.is_cancelled() {
                    std::thread::sleep(Duration::from_millis(100));
                    if Instant::now() >= next {
                        say_err(&progress_line(&model, started.elapsed()));
                        next += PROGRESS_EVERY;
                    }
                }
                Ok(())
            }));
            return;
        }
        let header = crate::dashboard::Header { listen, upstream, seed: control.seed(), started };
        let profiles = builtin::builtins().unwrap_or_default();
        let quit = self.quit.clone();
        self.thread = Some(std::thread::spawn(move || crate::dashboard::run(model, control, header, profiles, quit)));
    }

    /// Waits for the end of the run: `duration`, one of `signals`, or q in
    /// the dashboard. Returns why, for the log line.
    pub async fn wait(&self, duration: Option<f64>, signals: &mut Signals) -> &'static str {
        tokio::select! {
            why = wait_for_end(duration, signals) => why,
            _ = self.quit.cancelled() => "quit",
        }
    }

    /// Closes the dashboard and restores the terminal (before any summary
    /// is printed).
    pub async fn close(mut self) {
        self.quit.cancel();
        if let Some(t) = self.thread.take() {
            match tokio::task::spawn_blocking(move || t.join()).await {
                Ok(Ok(Err(e))) => say_err(&format!("popfault: dashboard unavailable ({e}); ran headless")),
                Ok(Err(_)) => say_err("popfault: the dashboard stopped on an error"),
                _ => {}
            }
        }
    }
}

/// The signals that end a run: SIGINT (Ctrl-C), SIGTERM, SIGHUP (a closing
/// terminal), SIGQUIT, SIGUSR1 and SIGUSR2. Caught from [`Signals::catch`]
/// on, so that none of them kills the process before its summary; the
/// first ends the run, the next one the drain.
pub struct Signals {
    #[cfg(unix)]
    caught: Vec<(tokio::signal::unix::Signal, &'static str)>,
}

impl Signals {
    /// Starts catching (inside the runtime). A signal that cannot be caught
    /// keeps its default action.
    pub fn catch() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let kinds = [
                (SignalKind::interrupt(), "SIGINT"),
                (SignalKind::terminate(), "SIGTERM"),
                (SignalKind::hangup(), "SIGHUP"),
                (SignalKind::quit(), "SIGQUIT"),
                (SignalKind::user_defined1(), "SIGUSR1"),
                (SignalKind::user_defined2(), "SIGUSR2"),
            ];
            let caught = kinds.into_iter().filter_map(|(k, name)| signal(k).ok().map(|s| (s, name))).collect();
            Signals { caught }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// The next signal's name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            std::future::poll_fn(|cx| {
                for (s, name) in &mut self.caught {
                    if s.poll_recv(cx).is_ready() {
                        return std::task::Poll::Ready(*name);
                    }
                }
                std::task::Poll::Pending
            })
            .await
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => "Ctrl-C",
                Err(_) => std::future::pending().await,
            }
        }
    }
}

/// Resolves on one of `signals`, or after `duration` seconds; says which.
pub async fn wait_for_end(duration: Option<f64>, signals: &mut Signals) -> &'static str {
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(Duration::from_secs_f64(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = timer => "--duration",
        s = signals.recv() => s,
    }
}
