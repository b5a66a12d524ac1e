//! The command line. The binary is a thin shell around [`main`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use crate::aggregate::Aggregator;
use crate::control::Control;
use crate::dashboard::SharedModel;
use crate::faults::builtin;
use crate::relay::{self, ProxyConfig};
use crate::server::{self, Maildrop, ServerConfig};

/// A fault-injecting, POP3-aware man-in-the-middle proxy.
///
/// popfault sits between a POP3 client and server, parses both directions,
/// and reports what each session's end meant: committed, rolled back, in
/// doubt, refused.
#[derive(Debug, Parser)]
#[command(name = "popfault", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More logging (-v info, -vv debug, -vvv trace). Secrets are never logged.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Relay clients to a real POP3 server, tracking every session.
    Proxy(ProxyArgs),
    /// Run the embedded POP3 test server (users user1…userN).
    Serve(ServeArgs),
    /// Everything embedded: server, client workloads and proxy in one process.
    Demo(DemoArgs),
    /// List the built-in fault profiles, or print one as TOML.
    Profiles(ProfilesArgs),
    /// Validate a fault profile file; errors name file:line:column and the fix.
    CheckProfile(CheckProfileArgs),
    /// Check a real server's RFC 1939 behaviour under a matrix of cut points.
    Audit(crate::audit::AuditArgs),
}

/// `popfault profiles [show NAME]`
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub show: Option<ProfilesCommand>,
}

/// `popfault profiles show NAME`
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Print a built-in profile as TOML (a starting point for your own).
    Show {
        /// The profile's name.
        name: String,
    },
}

/// `popfault check-profile FILE`
#[derive(Debug, Args)]
pub struct CheckProfileArgs {
    /// The TOML file.
    pub file: PathBuf,
}

/// Options shared by the commands that run the proxy.
#[derive(Debug, Args)]
pub struct FaultArgs {
    /// Fault profile: a built-in name (`popfault profiles`) or a TOML file.
    #[arg(long, default_value = "passthrough")]
    pub profile: String,
    /// Seed for every random choice; the same seed replays the same faults
    /// for the same sessions. Drawn and printed when not given.
    #[arg(long)]
    pub seed: Option<u64>,
}

/// `popfault proxy`
#[derive(Debug, Args)]
pub struct ProxyArgs {
    /// Address to listen on (loopback by default: it carries passwords).
    #[arg(long, default_value = "127.0.0.1:1110")]
    pub listen: SocketAddr,
    /// The real server, HOST:PORT.
    #[arg(long)]
    pub upstream: String,
    #[command(flatten)]
    pub faults: FaultArgs,
    /// Cut a session after this many seconds without a byte either way.
    #[arg(long, default_value_t = 600.0, value_parser = positive_secs)]
    pub idle_timeout: f64,
    /// Give up on an upstream that accepts but does not greet within this
    /// many seconds (the session is `refused`).
    #[arg(long, default_value_t = 30.0, value_parser = positive_secs)]
    pub greeting_timeout: f64,
    /// Most sessions at once; more clients get `-ERR [SYS/TEMP] too many
    /// sessions` and are closed.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_sessions: u32,
    /// Seconds to wait for the upstream to accept a connection.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    pub connect_timeout: f64,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long, value_parser = positive_secs)]
    pub duration: Option<f64>,
    /// Seconds live sessions get to finish at shutdown before being cut
    /// (the listener closes at once; a second signal ends the drain).
    #[arg(long, default_value_t = 5.0, value_parser = non_negative_secs)]
    pub drain: f64,
    /// Listen backlog: connections the kernel queues before popfault
    /// accepts them (capped by net.core.somaxconn).
    #[arg(long, default_value_t = relay::DEFAULT_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,
    /// No dashboard: log, events and a summary at exit.
    #[arg(long)]
    pub headless: bool,
    /// Write every event as a JSON line to this file (see docs/EVENTS.md).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

/// `popfault serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2110")]
    pub listen: SocketAddr,
    /// Mailboxes user1 … userN.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub users: u32,
    /// Messages in each mailbox at start.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub messages: u32,
    /// Approximate size of each message in bytes.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(64..=1_073_741_824))]
    pub size: u64,
    /// Every user's password.
    #[arg(long, default_value = "secret")]
    pub password: String,
    /// Listen backlog: connections the kernel queues before they are
    /// accepted (capped by net.core.somaxconn).
    #[arg(long, default_value_t = relay::DEFAULT_BACKLOG, value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub backlog: u32,
}

/// `popfault demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// No dashboard: print a summary at the end.
    #[arg(long)]
    pub headless: bool,
    /// Fault profile: a built-in name or a TOML file (default: the demo mix).
    #[arg(long, default_value = "demo")]
    pub profile: String,
    /// Seed for every random choice (drawn and printed when not given).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run for this many seconds (default: 20 headless).
    #[arg(long, value_parser = positive_secs)]
    pub duration: Option<f64>,
    /// Mailboxes; odd users download-and-delete, even users leave mail on
    /// the server and track UIDL.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub users: u32,
    /// Messages in each mailbox at start.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub messages: u32,
    /// Write every event as a JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
}

fn positive_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a positive number of seconds")),
    }
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds (0 or more)")),
    }
}

/// The exit code of a run that ended in order and printed its summary, but
/// whose events file is incomplete (a write failed, lines were dropped, or
/// the summary line could not be written in time).
pub const EXIT_EVENTS_INCOMPLETE: u8 = 3;

/// Runs the command line; the exit code is 0 on success, 2 on bad input
/// (as clap does for usage errors), 1 when a run fails, 3
/// ([`EXIT_EVENTS_INCOMPLETE`]) when only the events file failed.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs on stderr would tear the dashboard: with it, -v logs to a file.
    let dashboard = match &cli.command {
        Command::Proxy(a) => !a.headless,
        Command::Demo(a) => !a.headless,
        _ => false,
    } && std::io::stdout().is_terminal();
    crate::logging::init(cli.verbose, dashboard);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("popfault: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Proxy(a) => proxy(a).await,
            Command::Serve(a) => serve(a).await,
            Command::Demo(a) => crate::demo::run(a).await,
            Command::Profiles(a) => profiles(a),
            Command::CheckProfile(a) => check_profile(a),
            Command::Audit(a) => crate::audit::run(a).await,
        }
    });
    crate::logging::flush();
    match result {
        Ok(code) => code,
        Err(e) => {
            say_err(&format!("popfault: {e:#}"));
            ExitCode::from(e.exit_code())
        }
    }
}

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
    fn exit_code(&self) -> u8 {
        match self {
            RunError::Usage(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

/// How a run shows itself: the live dashboard, or nothing (headless).
pub struct Ui {
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Cancelled when the person quits the dashboard (q, Ctrl-C).
    pub quit: CancellationToken,
    /// The dashboard's model, fed by the aggregator.
    pub model: Option<(SharedModel, Instant)>,
}

impl Ui {
    /// Prepares the dashboard when stdout is a terminal and not `headless`.
    pub fn new(headless: bool) -> Ui {
        let model =
            (!headless && std::io::stdout().is_terminal()).then(|| (crate::dashboard::shared_model(), Instant::now()));
        Ui { thread: None, quit: CancellationToken::new(), model }
    }

    /// Starts drawing (if the dashboard is on).
    pub fn start(&mut self, control: Arc<Control>, listen: String, upstream: String) {
        let Some((model, started)) = self.model.clone() else { return };
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

/// Resolves `HOST:PORT` now, so a typo is reported at start-up.
pub async fn check_upstream(upstream: &str) -> Result<(), RunError> {
    match tokio::net::lookup_host(upstream).await.map(|mut a| a.next()) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(RunError::Usage(format!("upstream {upstream}: no address"))),
        Err(e) => Err(RunError::Usage(format!("upstream {upstream}: cannot resolve ({e}); expected HOST:PORT"))),
    }
}

fn warn_if_exposed(addr: SocketAddr) {
    if !addr.ip().is_loopback() {
        eprintln!(
            "popfault: WARNING: listening on {addr}, not loopback. popfault is a man in the middle carrying passwords; \
             anyone who can reach this address can use it."
        );
    }
}

async fn proxy(a: ProxyArgs) -> Result<ExitCode, RunError> {
    // First: from here on no ending signal kills the run without a summary.
    let mut signals = Signals::catch();
    check_upstream(&a.upstream).await?;
    warn_if_exposed(a.listen);
    let profile = load_profile(&a.faults.profile)?;
    let seed = seed_or_draw(a.faults.seed);
    let profile_name = profile.name.clone();
    let control = Arc::new(Control::new(Arc::new(profile), seed));
    let mut ui = Ui::new(a.headless);
    let agg = Aggregator::with_model(a.events.as_deref(), ui.model.clone(), false)
        .map_err(|e| RunError::Usage(e.to_string()))?;
    let mut cfg = ProxyConfig::new(a.listen, a.upstream.clone());
    cfg.connect_timeout = Duration::from_secs_f64(a.connect_timeout);
    cfg.idle_timeout = Duration::from_secs_f64(a.idle_timeout);
    cfg.greeting_timeout = Duration::from_secs_f64(a.greeting_timeout);
    cfg.max_sessions = a.max_sessions as usize;
    cfg.backlog = a.backlog;
    let mut handle = relay::start(cfg, control.clone(), agg.sink())
        .await
        .map_err(|e| RunError::Usage(format!("cannot listen on {}: {e}", a.listen)))?;
    eprintln!(
        "popfault: proxy {} → {}, profile {profile_name}, seed {seed} (Ctrl-C to stop)",
        handle.local_addr, a.upstream
    );
    ui.start(control, handle.local_addr.to_string(), a.upstream.clone());
    let why = ui.wait(a.duration, &mut signals).await;
    ui.close().await;
    // Closed before anything else: a client arriving now is refused.
    handle.stop_accepting().await;
    say_err(&format!(
        "popfault: stopping ({why}); listener closed; draining live sessions ({}) for up to {}s \
         (a second signal ends the drain)",
        handle.live_sessions(),
        a.drain
    ));
    tokio::select! {
        _ = handle.wait_idle(Duration::from_secs_f64(a.drain)) => {}
        again = signals.recv() => say_err(&format!("popfault: {again} again: cutting the live sessions now")),
    }
    handle.shutdown().await;
    let (summary, _, report) =
        agg.finish_report(seed, &profile_name).await.map_err(|e| RunError::Failed(format!("summarising: {e}")))?;
    let mut out = summary.to_table();
    let code = events_verdict(report.as_ref(), &mut out);
    out.push('\n');
    say(&out);
    Ok(code)
}

/// Exit 0, or [`EXIT_EVENTS_INCOMPLETE`] with a line added to the summary
/// `out` when the events file is incomplete.
pub fn events_verdict(report: Option<&crate::aggregate::FileReport>, out: &mut String) -> ExitCode {
    match report {
        Some(r) if !r.complete() => {
            out.push_str(&format!("  WARNING: {}\n", r.describe()));
            ExitCode::from(EXIT_EVENTS_INCOMPLETE)
        }
        _ => ExitCode::SUCCESS,
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

async fn serve(a: ServeArgs) -> Result<ExitCode, RunError> {
    let mut signals = Signals::catch();
    warn_if_exposed(a.listen);
    let cfg = ServerConfig {
        users: a.users as usize,
        messages: a.messages as usize,
        size: a.size as usize,
        password: a.password,
    };
    let maildrop = Maildrop::new(&cfg);
    let listener =
        relay::bind(a.listen, a.backlog).map_err(|e| RunError::Usage(format!("cannot listen on {}: {e}", a.listen)))?;
    let addr = listener.local_addr().map_err(|e| RunError::Failed(e.to_string()))?;
    eprintln!(
        "popfault: POP3 server on {addr}: users user1…user{} with {} messages each (Ctrl-C to stop)",
        a.users, a.messages
    );
    server::serve(listener, maildrop.clone(), async {
        wait_for_end(None, &mut signals).await;
    })
    .await;
    let ledger = maildrop.ledger();
    say(&format!("popfault serve: {} messages deleted by QUIT\n", ledger.len()));
    Ok(ExitCode::SUCCESS)
}

/// Resolves `--profile`: a clear message (exit 2) when it is unusable.
pub fn load_profile(name_or_path: &str) -> Result<crate::faults::Profile, RunError> {
    builtin::load(name_or_path).map_err(|e| RunError::Usage(e.to_string()))
}

/// The given seed, or a fresh one (printed by the caller, for replay).
pub fn seed_or_draw(seed: Option<u64>) -> u64 {
    // Drawn seeds stay below 2^53 so JSON readers (jq, JavaScript) keep
    // them exact and a seed read back from the events file replays.
    seed.unwrap_or_else(|| rand::random::<u64>() >> 11)
}

fn profiles(a: ProfilesArgs) -> Result<ExitCode, RunError> {
    match a.show {
        None => {
            let all = builtin::builtins().map_err(|e| RunError::Failed(e.to_string()))?;
            let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in all {
                println!("{:<width$}  {}", p.name, p.summary);
            }
            println!("\n`popfault profiles show NAME` prints one as TOML; --profile takes a name or a file.");
        }
        Some(ProfilesCommand::Show { name }) => match builtin::BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => print!("{text}"),
            None => {
                let known: Vec<&str> = builtin::BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(RunError::Usage(format!("no built-in profile '{name}' (built-ins: {})", known.join(", "))));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn check_profile(a: CheckProfileArgs) -> Result<ExitCode, RunError> {
    match builtin::load_file(&a.file) {
        Ok(p) => {
            println!("{}: ok: profile '{}' with {} rule(s)", a.file.display(), p.name, p.rules.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(RunError::Usage(e.to_string())),
    }
}
