//! `popfault proxy`: relay clients to a real POP3 server, with the
//! dashboard or headless, until a signal, `--duration` or q; then the drain,
//! the shutdown and the summary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::common::{
    RunError, Signals, Ui, check_upstream, events_verdict, listen_arg, load_profile, positive_secs, resolve_listen,
    say, say_err, seed_or_draw, warn_if_exposed, warn_if_upstream_down,
};
use crate::aggregate::Aggregator;
use crate::control::Control;
use crate::relay::{self, ClientTls, ProxyConfig, TlsConfig, UpstreamTls};
use crate::tls;
use crate::transcripts::Transcripts;

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
    /// Address to listen on, IP:PORT or HOST:PORT (loopback by default: it
    /// carries passwords).
    #[arg(long, default_value = "127.0.0.1:1110", value_parser = listen_arg)]
    pub listen: String,
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
    /// Without the dashboard, a one-line status on stderr every 2 s (on by
    /// default when stderr is a terminal).
    #[arg(long)]
    pub progress: bool,
    /// Write every event as a JSON line to this file (see docs/EVENTS.md).
    #[arg(long, value_name = "FILE")]
    pub events: Option<PathBuf>,
    /// Write each session's transcript (its commands with secrets as
    /// `***`, status lines, body sizes, faults, the end and why) to
    /// DIR/session-NNNNNN.txt when it ends: for a bug report.
    #[arg(long, value_name = "DIR")]
    pub transcripts: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// popfault's own TLS with the client and with the upstream (docs/TLS.md).
#[derive(Debug, Args)]
#[command(next_help_heading = "TLS (docs/TLS.md)")]
pub struct TlsArgs {
    /// TLS with clients. passthrough (the default: nothing to set up, never
    /// worse than a direct connection): plain POP3, a client's STLS goes to
    /// the server and the rest of its session is relayed unread. stls:
    /// popfault offers STLS and carries it out with its own certificate, so
    /// faults and outcomes work inside TLS. implicit: the listener is POP3S.
    /// none: plain only, popfault refuses STLS. stls and implicit need
    /// clients to trust popfault's CA (`popfault ca`).
    #[arg(long, value_enum, default_value_t = ClientTlsArg::Passthrough, verbatim_doc_comment)]
    pub client_tls: ClientTlsArg,
    /// TLS with the upstream: none, implicit (POP3S, e.g. port 995) or stls
    /// (popfault sends STLS before the client's first command).
    #[arg(long, value_enum, default_value_t = UpstreamTlsArg::None)]
    pub upstream_tls: UpstreamTlsArg,
    /// The directory of popfault's CA (made there if missing); default:
    /// what `popfault ca` shows.
    #[arg(long, value_name = "DIR")]
    pub ca: Option<PathBuf>,
    /// Trust the CA certificates in FILE (PEM) for the upstream instead of
    /// the system's.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Accept any upstream certificate and name (test servers with
    /// self-signed certificates); warned about at start.
    #[arg(long, conflicts_with = "upstream_ca")]
    pub upstream_insecure: bool,
    /// The name the upstream's certificate must carry, sent as SNI
    /// (default: the host of --upstream).
    #[arg(long, value_name = "NAME")]
    pub upstream_name: Option<String>,
    /// Write TLS secrets to FILE in the NSS key log format (as
    /// SSLKEYLOGFILE), to read a capture in Wireshark; warned about at start.
    #[arg(long, value_name = "FILE")]
    pub keylog: Option<PathBuf>,
    /// Seconds a TLS handshake (or the upstream's STLS) may take.
    #[arg(long, default_value_t = 10.0, value_parser = positive_secs)]
    pub handshake_timeout: f64,
}

/// `--client-tls`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientTlsArg {
    Passthrough,
    None,
    Implicit,
    Stls,
}

/// `--upstream-tls`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum UpstreamTlsArg {
    None,
    Implicit,
    Stls,
}

impl TlsArgs {
    /// The relay's TLS configuration; `None` when popfault speaks no TLS.
    /// Makes popfault's CA when a client side needs it and it is missing.
    pub fn config(&self, upstream: &str) -> Result<Option<Arc<TlsConfig>>, RunError> {
        let client = match self.client_tls {
            ClientTlsArg::Passthrough => ClientTls::Passthrough,
            ClientTlsArg::None => ClientTls::None,
            ClientTlsArg::Implicit => ClientTls::Implicit,
            ClientTlsArg::Stls => ClientTls::Stls,
        };
        let up = match self.upstream_tls {
            UpstreamTlsArg::None => UpstreamTls::None,
            UpstreamTlsArg::Implicit => UpstreamTls::Implicit,
            UpstreamTlsArg::Stls => UpstreamTls::Stls,
        };
        let upstream_opts = self.upstream_ca.is_some() || self.upstream_insecure || self.upstream_name.is_some();
        if up == UpstreamTls::None && upstream_opts {
            return Err(RunError::Usage(
                "--upstream-ca, --upstream-insecure and --upstream-name need --upstream-tls implicit or stls".into(),
            ));
        }
        let client_side = matches!(client, ClientTls::Implicit | ClientTls::Stls);
        if self.ca.is_some() && !client_side {
            return Err(RunError::Usage("--ca needs --client-tls implicit or stls".into()));
        }
        if client == ClientTls::Passthrough && up == UpstreamTls::None {
            if self.keylog.is_some() {
                return Err(RunError::Usage(
                    "--keylog needs TLS of popfault's own (--client-tls implicit|stls or --upstream-tls implicit|stls)"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let keylog = match &self.keylog {
            Some(path) => {
                let k = tls::KeyLogFile::create(path)
                    .map_err(|e| RunError::Usage(format!("--keylog {}: {e}", path.display())))?;
                say_err(&format!(
                    "popfault: warning: writing TLS secrets to {} (--keylog): anyone who reads it can decrypt these sessions, passwords included",
                    path.display()
                ));
                Some(Arc::new(k))
            }
            None => None,
        };
        let leaves = if client_side {
            let dir = match &self.ca {
                Some(d) => d.clone(),
                None => tls::Ca::default_dir().map_err(|e| RunError::Usage(e.to_string()))?,
            };
            let (ca, created) = tls::Ca::load_or_create(&dir).map_err(|e| RunError::Usage(e.to_string()))?;
            if created {
                say_err(&format!(
                    "popfault: made a new CA in {}: clients must trust {} (see `popfault ca`)",
                    dir.display(),
                    ca.cert_path().display()
                ));
            }
            Some(Arc::new(tls::Leaves::new(Arc::new(ca), keylog.clone())))
        } else {
            None
        };
        let host = upstream_host(upstream);
        let (connector, upstream_name) = if up == UpstreamTls::None {
            (None, None)
        } else {
            let trust = if self.upstream_insecure {
                say_err(&format!(
                    "popfault: warning: --upstream-insecure: the upstream's certificate is not checked; anyone on the path to {upstream} can read and change these sessions"
                ));
                tls::UpstreamTrust::Insecure
            } else if let Some(file) = &self.upstream_ca {
                tls::UpstreamTrust::File(file.clone())
            } else {
                tls::UpstreamTrust::System
            };
            let config = tls::client_config(&trust, keylog.clone()).map_err(|e| RunError::Usage(e.to_string()))?;
            let name = self.upstream_name.clone().unwrap_or_else(|| host.clone());
            let spec =
                if name.contains(':') && !name.starts_with('[') { format!("[{name}]:0") } else { format!("{name}:0") };
            let name =
                tls::upstream_name(&spec).map_err(|e| RunError::Usage(format!("--upstream-name {name}: {e}")))?;
            (Some(config), Some(name))
        };
        Ok(Some(Arc::new(TlsConfig {
            client,
            leaves,
            upstream: up,
            connector,
            upstream_name,
            fallback_names: vec![host],
            handshake_timeout: Duration::from_secs_f64(self.handshake_timeout),
        })))
    }
}

impl TlsArgs {
    /// `, TLS client stls / upstream implicit` for the start line and the
    /// dashboard's header; empty when popfault speaks no TLS of its own.
    fn label(&self) -> String {
        let client = match self.client_tls {
            ClientTlsArg::Passthrough => None,
            ClientTlsArg::None => Some("none"),
            ClientTlsArg::Implicit => Some("implicit"),
            ClientTlsArg::Stls => Some("stls"),
        };
        let upstream = match self.upstream_tls {
            UpstreamTlsArg::None => None,
            UpstreamTlsArg::Implicit => Some("implicit"),
            UpstreamTlsArg::Stls => Some("stls"),
        };
        if client.is_none() && upstream.is_none() {
            return String::new();
        }
        format!(", TLS client {} / upstream {}", client.unwrap_or("passthrough"), upstream.unwrap_or("none"))
    }
}

/// The host of `host:port` (`[v6]:port` too), as a certificate names it.
fn upstream_host(upstream: &str) -> String {
    let host = upstream.rsplit_once(':').map_or(upstream, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']').to_string()
}

fn non_negative_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v >= 0.0 && v.is_finite() && v < 1e9 => Ok(v),
        _ => Err(format!("'{s}' is not a number of seconds (0 or more)")),
    }
}

/// Runs the proxy as the command line asked; the shutdown order is
/// docs/ARCHITECTURE.md's.
pub async fn run(a: ProxyArgs) -> Result<ExitCode, RunError> {
    // First: from here on no ending signal kills the run without a summary.
    let mut signals = Signals::catch();
    check_upstream(&a.upstream).await?;
    let listen = resolve_listen(&a.listen).await?;
    let profile = load_profile(&a.faults.profile)?;
    let seed = seed_or_draw(a.faults.seed);
    let profile_name = profile.name.clone();
    let control = Arc::new(Control::new(Arc::new(profile), seed));
    let mut ui = Ui::with_progress(a.headless, a.progress);
    let agg = Aggregator::with_model(a.events.as_deref(), ui.model.clone(), false)
        .map_err(|e| RunError::Usage(e.to_string()))?;
    let transcripts = match &a.transcripts {
        Some(dir) => Some(
            Transcripts::start(dir).map_err(|e| RunError::Usage(format!("--transcripts {}: {e}", dir.display())))?,
        ),
        None => None,
    };
    let tls = a.tls.config(&a.upstream)?;
    let config = |addr: SocketAddr| {
        let mut cfg = ProxyConfig::new(addr, a.upstream.clone());
        cfg.connect_timeout = Duration::from_secs_f64(a.connect_timeout);
        cfg.idle_timeout = Duration::from_secs_f64(a.idle_timeout);
        cfg.greeting_timeout = Duration::from_secs_f64(a.greeting_timeout);
        cfg.max_sessions = a.max_sessions as usize;
        cfg.backlog = a.backlog;
        cfg.transcripts = transcripts.as_ref().map(Transcripts::sink);
        cfg.tls = tls.clone();
        cfg
    };
    // A name may resolve to several addresses (localhost: 127.0.0.1 and
    // ::1): the first that binds is used, and named below.
    let mut bound = None;
    let mut last_error = None;
    for addr in &listen {
        match relay::start(config(*addr), control.clone(), agg.sink()).await {
            Ok(h) => {
                bound = Some(h);
                break;
            }
            Err(e) => last_error = Some(format!("cannot listen on {addr}: {e}")),
        }
    }
    let Some(mut handle) = bound else {
        return Err(RunError::Usage(last_error.unwrap_or_else(|| format!("cannot listen on {}", a.listen))));
    };
    warn_if_exposed(handle.local_addr);
    let resolved = if a.listen.parse::<SocketAddr>().is_ok() {
        String::new()
    } else {
        format!(" (--listen {} resolved to {})", a.listen, handle.local_addr)
    };
    let tls_label = a.tls.label();
    eprintln!(
        "popfault: proxy {} → {}, profile {profile_name}, seed {seed}{tls_label} (Ctrl-C to stop){resolved}",
        handle.local_addr, a.upstream
    );
    warn_if_upstream_down(&a.upstream, Duration::from_secs_f64(a.connect_timeout.min(3.0))).await;
    ui.start(control, handle.local_addr.to_string(), format!("{}{tls_label}", a.upstream));
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
    if let Some(t) = transcripts {
        match t.finish() {
            Ok((files, 0)) => say_err(&format!("popfault: {files} transcript(s) written")),
            Ok((files, dropped)) => say_err(&format!(
                "popfault: {files} transcript(s) written; {dropped} line(s) dropped (the writer fell behind)"
            )),
            Err(e) => say_err(&format!("popfault: warning: transcripts incomplete: {e}")),
        }
    }
    let (summary, _, report) =
        agg.finish_report(seed, &profile_name).await.map_err(|e| RunError::Failed(format!("summarising: {e}")))?;
    let mut out = summary.to_table();
    let code = events_verdict(report.as_ref(), &mut out);
    out.push('\n');
    say(&out);
    Ok(code)
}
