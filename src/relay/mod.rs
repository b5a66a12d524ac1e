//! The relay: all of popfault's network I/O, a thin shell around the
//! socket-free session driver (`crate::driver`), which decodes, decides,
//! acts and tracks. This module accepts clients and runs one task per
//! session (`session`: connect, the two pumps, the timers' wait, closing as
//! the driver says); `io` has what the pumps read with and how they wait.
//!
//! A direction holds only bytes it has read and not yet written: at most
//! one read's worth, or one incomplete line a rule wants whole (bounded by
//! RFC 2449's limits).

mod conn;
mod io;
mod session;

pub use conn::{ClientTls, TlsConfig, UpstreamTls};

use std::io as stdio;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::control::Control;
use crate::driver::{ClientStls, Driver, RunInfo, SessionInfo};
use crate::events::EventSink;
use crate::faults::Engine;
use crate::transcripts::TranscriptSink;
use session::{SessionCtx, run_session};

/// Bytes asked of the kernel per read, growing while reads come back full
/// (a bulk transfer). The least is enough for a typical answer (a message
/// of a few KB, a UIDL listing) to come in one read and go out in one
/// write: with 2 KiB, a 10 KB message took three of each. Idle sessions
/// hold no buffer whatever the size (see `spare`).
pub(crate) const READ_MIN: usize = 16 * 1024;
pub(crate) const READ_MAX: usize = 64 * 1024;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The real server, `host:port`; resolved at each connect.
    pub upstream: String,
    /// Give up connecting upstream after this long (outcome `refused`).
    pub connect_timeout: Duration,
    /// Cut a session after this long without a byte either way.
    pub idle_timeout: Duration,
    /// Give up on an upstream that accepted but has not greeted after this
    /// long (outcome `refused`).
    pub greeting_timeout: Duration,
    /// Most sessions at once; more clients are told `-ERR [SYS/TEMP]` and
    /// closed.
    pub max_sessions: usize,
    /// Where each session's transcript goes (`--transcripts DIR`), if
    /// anywhere.
    pub transcripts: Option<TranscriptSink>,
    /// Connections the kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`).
    pub backlog: u32,
    /// popfault's own TLS with either side; `None`: plain both ways, a
    /// client's STLS relayed (`ClientTls::Passthrough`).
    pub tls: Option<Arc<TlsConfig>>,
    /// Sessions are numbered from this counter's value + 1; a proxy that is
    /// stopped and started again shares one, so numbers stay unique.
    pub numbering: Arc<AtomicU64>,
}

/// The default listen backlog. 128 (the old default of `listen`) made
/// clients of a flood wait for 1 s SYN retransmits; this is Linux's
/// default cap (`net.core.somaxconn`).
pub const DEFAULT_BACKLOG: u32 = 4096;

impl ProxyConfig {
    /// A proxy from `listen` to `upstream` with default timeouts.
    pub fn new(listen: SocketAddr, upstream: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream: upstream.into(),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(600),
            greeting_timeout: Duration::from_secs(30),
            max_sessions: 10_000,
            transcripts: None,
            backlog: DEFAULT_BACKLOG,
            tls: None,
            numbering: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    /// The address it listens on (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    /// Its live controls.
    pub control: Arc<Control>,
    stop: CancellationToken,
    /// Cancelled to close the listener (a child of `stop`).
    accepting: CancellationToken,
    /// True while the listener is open.
    listening: watch::Receiver<bool>,
    task: tokio::task::JoinHandle<()>,
    live: watch::Receiver<usize>,
}

impl ProxyHandle {
    /// Stops accepting, cuts live sessions (recording their outcomes) and
    /// waits for every session to end.
    pub async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }

    /// Closes the listener and returns once it is closed: from then on a
    /// new client is refused. Live sessions go on.
    pub async fn stop_accepting(&mut self) {
        self.accepting.cancel();
        // An error means the accept loop is gone, and its listener with it.
        let _ = self.listening.wait_for(|open| !*open).await;
    }

    /// Waits up to `limit` for every live session to end on its own; true
    /// if none is left.
    pub async fn wait_idle(&mut self, limit: Duration) -> bool {
        // An error means the accept loop is gone, and its sessions with it.
        tokio::time::timeout(limit, self.live.wait_for(|n| *n == 0)).await.is_ok()
    }

    /// Stops accepting and waits up to `drain` for live sessions to end on
    /// their own, then cuts the rest.
    pub async fn drain(mut self, drain: Duration) {
        self.stop_accepting().await;
        self.wait_idle(drain).await;
        self.shutdown().await;
    }

    /// Sessions in progress.
    pub fn live_sessions(&self) -> usize {
        *self.live.borrow()
    }
}

/// A listening socket on `addr` with this `backlog` (address reuse as
/// `TcpListener::bind` has it, so a restart does not wait for TIME_WAIT).
pub fn bind(addr: SocketAddr, backlog: u32) -> stdio::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Binds `cfg.listen` and relays every client to `cfg.upstream`, with the
/// faults of `control`'s profile.
pub async fn start(cfg: ProxyConfig, control: Arc<Control>, sink: EventSink) -> stdio::Result<ProxyHandle> {
    let listener = bind(cfg.listen, cfg.backlog)?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let accepting = stop.child_token();
    let (live_tx, live) = watch::channel(0usize);
    let (listening_tx, listening) = watch::channel(true);
    let task = tokio::spawn(accept_loop(
        listener,
        Arc::new(cfg),
        control.clone(),
        sink,
        (stop.clone(), accepting.clone()),
        (live_tx, listening_tx),
    ));
    Ok(ProxyHandle { local_addr, control, stop, accepting, listening, task, live })
}

/// `stop` cuts the sessions, `accepting` only closes the listener; `live`
/// counts the sessions, `listening` says whether the listener is open.
async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ProxyConfig>,
    control: Arc<Control>,
    sink: EventSink,
    (stop, accepting): (CancellationToken, CancellationToken),
    (live, listening): (watch::Sender<usize>, watch::Sender<bool>),
) {
    let started = Instant::now();
    let run = Arc::new(RunInfo {
        upstream: cfg.upstream.clone(),
        run_started: started,
        idle_timeout: cfg.idle_timeout,
        greeting_timeout: cfg.greeting_timeout,
        wants_progress: sink.wants_progress(),
        transcripts: cfg.transcripts.is_some() || sink.wants_transcripts(),
        client_stls: match cfg.tls.as_deref().map(|t| t.client) {
            None | Some(ClientTls::Passthrough) => ClientStls::Relay,
            Some(ClientTls::Stls) => ClientStls::Answer,
            // Inside a POP3S session, or with TLS off: no STLS.
            Some(ClientTls::None | ClientTls::Implicit) => ClientStls::Refuse,
        },
    });
    let counter = cfg.numbering.clone();
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            // Closing comes first: no client is accepted once it is asked.
            biased;
            _ = accepting.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                live.send_replace(sessions.len());
                continue;
            }
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) if sessions.len() >= cfg.max_sessions => {
                // Over the limit: say so, as a busy POP3 server would, and
                // close. Not a session: nothing is counted.
                warn!(%peer, limit = cfg.max_sessions, "too many sessions; turning a client away");
                tokio::spawn(async move {
                    let mut client = client;
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        client.write_all(b"-ERR [SYS/TEMP] too many sessions\r\n"),
                    )
                    .await;
                    let _ = client.shutdown().await;
                });
            }
            Ok((client, peer)) => {
                let number = counter.fetch_add(1, Ordering::Relaxed) + 1;
                let seed = control.seed();
                let info = SessionInfo { number, peer, seed, started: Instant::now(), run: run.clone() };
                let driver = Driver::new(info, Engine::new(control.profile(), seed, number));
                let ctx = SessionCtx {
                    cfg: cfg.clone(),
                    sink: sink.clone(),
                    shutdown: stop.clone(),
                    cut: stop.child_token(),
                    cut_seen: AtomicBool::new(false),
                    injected: [AtomicBool::new(false), AtomicBool::new(false)],
                    control: control.clone(),
                    transcribing: run.transcripts,
                };
                sessions.spawn(run_session(client, ctx, driver));
                live.send_replace(sessions.len());
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Closed now, not when the sessions are done: a new client is refused.
    drop(listener);
    listening.send_replace(false);
    while sessions.join_next().await.is_some() {
        live.send_replace(sessions.len());
    }
    live.send_replace(0);
}

#[cfg(test)]
mod size_probe {
    use super::*;

    #[test]
    fn a_session_future_stays_small() {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::from_std({
                std_listener.set_nonblocking(true).unwrap();
                std_listener
            })
            .unwrap();
            let addr = l.local_addr().unwrap();
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (s, peer) = l.accept().await.unwrap();
            drop(c);
            let control = std::sync::Arc::new(crate::control::Control::new(
                std::sync::Arc::new(crate::faults::Profile::passthrough()),
                1,
            ));
            let stop = CancellationToken::new();
            let run = super::RunInfo {
                upstream: "127.0.0.1:1".into(),
                run_started: std::time::Instant::now(),
                idle_timeout: std::time::Duration::from_secs(600),
                greeting_timeout: std::time::Duration::from_secs(30),
                wants_progress: false,
                transcripts: false,
                client_stls: Default::default(),
            };
            let info = super::SessionInfo {
                number: 1,
                peer,
                seed: 1,
                started: std::time::Instant::now(),
                run: std::sync::Arc::new(run),
            };
            let driver = super::Driver::new(info, super::Engine::new(control.profile(), 1, 1));
            let ctx = SessionCtx {
                cfg: std::sync::Arc::new(super::ProxyConfig::new(addr, "127.0.0.1:1")),
                sink: EventSink::discard(),
                shutdown: stop.clone(),
                cut: stop.child_token(),
                cut_seen: Default::default(),
                injected: Default::default(),
                control: control.clone(),
                transcribing: false,
            };
            let fut = run_session(s, ctx, driver);
            // Every idle session costs at least this much: keep it small
            // (rare fault paths and the relaying of a read are boxed; an idle
            // direction waits on its socket alone). See docs/PERFORMANCE.md.
            // 2304 before TLS; its state is boxed, but each direction's
            // input now lives in the session (kept across a handshake with
            // the client): 24 bytes more.
            let size = std::mem::size_of_val(&fut);
            assert!(size <= 2328, "a session's future is {size} bytes");
        });
    }
}
