//! The relay: all of popfault's network I/O. It accepts clients, connects
//! upstream, and moves bytes both ways through the pure codec and tracker,
//! byte for byte. Faults (issue-built engine) decide; this module acts.
//!
//! One task per session. Its two directions are two futures joined in that
//! task, sharing the pure state under a mutex that is never held across an
//! `.await`. A direction only holds bytes it has read and not yet written:
//! at most one read's worth, or one incomplete line (bounded by RFC 2449).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::codec::{ClientEvent, Pop3Codec, ServerEvent};
use crate::events::{Event, EventSink, SessionEnd};
use crate::session::Tracker;

/// Bytes asked of the kernel per read.
const READ_SIZE: usize = 64 * 1024;

/// How the proxy runs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Where clients connect.
    pub listen: SocketAddr,
    /// The real server, `host:port`; resolved at each connect.
    pub upstream: String,
    /// Give up connecting upstream after this long (outcome `refused`).
    pub connect_timeout: Duration,
    /// Name of the fault profile, for events and the dashboard.
    pub profile: String,
}

impl ProxyConfig {
    /// A transparent proxy from `listen` to `upstream`.
    pub fn new(listen: SocketAddr, upstream: impl Into<String>) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream: upstream.into(),
            connect_timeout: Duration::from_secs(10),
            profile: "passthrough".into(),
        }
    }
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    /// The address it listens on (the real port when asked for port 0).
    pub local_addr: SocketAddr,
    stop: CancellationToken,
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

    /// Stops accepting and waits up to `drain` for live sessions to end on
    /// their own, then cuts the rest.
    pub async fn drain(mut self, drain: Duration) {
        let _ = tokio::time::timeout(drain, self.live.wait_for(|n| *n == 0)).await;
        self.shutdown().await;
    }

    /// Sessions in progress.
    pub fn live_sessions(&self) -> usize {
        *self.live.borrow()
    }
}

/// Binds `cfg.listen` and relays every client to `cfg.upstream`.
pub async fn start(cfg: ProxyConfig, sink: EventSink) -> io::Result<ProxyHandle> {
    let listener = TcpListener::bind(cfg.listen).await?;
    let local_addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let (live_tx, live) = watch::channel(0usize);
    let task = tokio::spawn(accept_loop(listener, Arc::new(cfg), sink, stop.clone(), live_tx));
    Ok(ProxyHandle { local_addr, stop, task, live })
}

async fn accept_loop(
    listener: TcpListener,
    cfg: Arc<ProxyConfig>,
    sink: EventSink,
    stop: CancellationToken,
    live: watch::Sender<usize>,
) {
    let counter = AtomicU64::new(0);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {
                live.send_replace(sessions.len());
                continue;
            }
            a = listener.accept() => a,
        };
        match accepted {
            Ok((client, peer)) => {
                let number = counter.fetch_add(1, Ordering::Relaxed) + 1;
                let ctx = SessionCtx { number, peer, cfg: cfg.clone(), sink: sink.clone(), stop: stop.child_token() };
                sessions.spawn(run_session(client, ctx));
                live.send_replace(sessions.len());
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, go on.
                warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    drop(listener);
    while sessions.join_next().await.is_some() {
        live.send_replace(sessions.len());
    }
    live.send_replace(0);
}

struct SessionCtx {
    number: u64,
    peer: SocketAddr,
    cfg: Arc<ProxyConfig>,
    sink: EventSink,
    stop: CancellationToken,
}

/// The pure state of one session, shared by its two directions.
struct Core {
    codec: Pop3Codec,
    tracker: Tracker,
    faults: Vec<String>,
    /// When each unanswered command was forwarded, oldest first, for
    /// latency; bounded like the codec's queue.
    inflight: VecDeque<(u64, Instant)>,
    /// The response being delivered now: (seq, command name).
    answering: Option<(u64, String)>,
}

impl Core {
    fn new() -> Core {
        Core {
            codec: Pop3Codec::new(),
            tracker: Tracker::new(),
            faults: Vec::new(),
            inflight: VecDeque::new(),
            answering: None,
        }
    }

    /// Microseconds since `seq` was forwarded, once its response is
    /// delivered in full.
    fn answered(&mut self, seq: u64, now: Instant) -> Option<u64> {
        while let Some(&(s, at)) = self.inflight.front() {
            if s > seq {
                return None;
            }
            self.inflight.pop_front();
            if s == seq {
                return Some(now.duration_since(at).as_micros() as u64);
            }
        }
        None
    }
}

fn lock(core: &Mutex<Core>) -> MutexGuard<'_, Core> {
    // A panic elsewhere cannot leave Core half-updated in a way that
    // matters more than losing the session, so poisoning is ignored.
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reading side sent FIN; FIN passed on.
    Eof,
    /// The reading side reset, or writing to the other side failed.
    Reset,
    /// The session was cut from outside (shutdown).
    Cancelled,
}

async fn run_session(mut client: TcpStream, ctx: SessionCtx) {
    let started = Instant::now();
    let _ = client.set_nodelay(true);
    ctx.sink.emit(Event::SessionStart {
        session: ctx.number,
        client: ctx.peer,
        upstream: ctx.cfg.upstream.clone(),
        profile: ctx.cfg.profile.clone(),
    });
    let core = Mutex::new(Core::new());

    let ended_by = match connect_upstream(&ctx).await {
        Err(why) => {
            lock(&core).tracker.set_refused();
            // Mirror what a client sees from a dead server: a reset when it
            // refused, a close when it never answered.
            if why.starts_with("refused") {
                let _ = client.set_zero_linger();
            }
            why
        }
        Ok(mut server) => {
            let _ = server.set_nodelay(true);
            relay(&mut client, &mut server, &core, &ctx).await
        }
    };

    let core = core.into_inner().unwrap_or_else(|p| p.into_inner());
    let t = &core.tracker;
    let end = SessionEnd {
        session: ctx.number,
        client: ctx.peer,
        upstream: ctx.cfg.upstream.clone(),
        user: t.user().map(str::to_owned),
        outcome: t.outcome(),
        state: t.state(),
        downloaded: t.downloads(),
        marked: t.marked(),
        at_risk: t.at_risk(),
        duplicates: 0,
        bytes_up: t.bytes_up(),
        bytes_down: t.bytes_down(),
        duration_ms: started.elapsed().as_millis() as u64,
        faults: core.faults.clone(),
        encrypted: t.encrypted(),
        violations: t.violations(),
        profile: ctx.cfg.profile.clone(),
        fingerprints: t.fingerprints().to_vec(),
        ended_by,
    };
    info!(session = end.session, outcome = %end.outcome, user = ?end.user, ended_by = %end.ended_by, "session ended");
    ctx.sink.emit(Event::SessionEnd(Box::new(end)));
}

async fn connect_upstream(ctx: &SessionCtx) -> Result<TcpStream, String> {
    let connect = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for addr in tokio::net::lookup_host(ctx.cfg.upstream.as_str()).await? {
            match TcpStream::connect(addr).await {
                Ok(s) => return Ok(s),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    tokio::select! {
        _ = ctx.stop.cancelled() => Err("upstream connect cancelled".into()),
        r = tokio::time::timeout(ctx.cfg.connect_timeout, connect) => match r {
            Err(_) => Err(format!("upstream connect timed out after {:?}", ctx.cfg.connect_timeout)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!("refused by upstream: {e}")),
            Ok(Err(e)) => Err(format!("upstream unreachable: {e}")),
            Ok(Ok(s)) => Ok(s),
        }
    }
}

async fn relay(client: &mut TcpStream, server: &mut TcpStream, core: &Mutex<Core>, ctx: &SessionCtx) -> String {
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let (up, down) =
        tokio::join!(pump(Dir::Up, &mut cr, &mut sw, core, ctx), pump(Dir::Down, &mut sr, &mut cw, core, ctx),);
    let resets = up == End::Reset || down == End::Reset;
    if resets || up == End::Cancelled || down == End::Cancelled {
        // A reset on one side becomes a reset on the other; a cut session
        // is reset both ways, like a lost carrier.
        let _ = cr.as_ref().set_zero_linger();
        let _ = sr.as_ref().set_zero_linger();
    }
    match (up, down) {
        (End::Reset, _) => "reset by client".into(),
        (_, End::Reset) => "reset by server".into(),
        (End::Cancelled, _) | (_, End::Cancelled) => "cut at shutdown".into(),
        _ => "closed".into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// Client → server.
    Up,
    /// Server → client.
    Down,
}

/// Moves one direction until EOF, reset or cancellation. Holds at most one
/// read's worth of bytes, released when idle so an idle session costs no
/// buffer.
async fn pump(dir: Dir, from: &mut ReadHalf<'_>, to: &mut WriteHalf<'_>, core: &Mutex<Core>, ctx: &SessionCtx) -> End {
    let stop = &ctx.stop;
    let mut buf: Vec<u8> = Vec::new();
    let other_stop = stop.clone();
    loop {
        tokio::select! {
            _ = other_stop.cancelled() => return End::Cancelled,
            r = from.readable() => if r.is_err() { stop.cancel(); return End::Reset; },
        }
        buf.reserve(READ_SIZE);
        let n = match from.try_read_buf(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                debug!(?dir, error = %e, "read failed");
                stop.cancel();
                return End::Reset;
            }
        };
        if n == 0 {
            // Orderly close: whatever is held is an incomplete line; pass
            // it on as it is, then pass the FIN on (half-close).
            if !buf.is_empty() {
                if to.write_all(&buf).await.is_err() {
                    stop.cancel();
                    return End::Reset;
                }
                lock(core).tracker.on_unframed(dir == Dir::Up, buf.len());
            }
            let _ = to.shutdown().await;
            return End::Eof;
        }
        let mut start = 0;
        while start < buf.len() {
            let consumed = match dir {
                Dir::Up => {
                    let step = lock(core).codec.decode_client(&buf[start..]);
                    let Some(ev) = step.event else { break };
                    let bytes = &buf[start..start + step.consumed];
                    if write(to, bytes, stop).await.is_err() {
                        return End::Reset;
                    }
                    let mut c = lock(core);
                    if let ClientEvent::Command { cmd, .. } = &ev {
                        let seq = c.codec.forwarded(cmd);
                        if c.inflight.len() < crate::codec::framer::MAX_PENDING {
                            c.inflight.push_back((seq, Instant::now()));
                        }
                    }
                    c.tracker.on_client(&ev, bytes, true);
                    step.consumed
                }
                Dir::Down => {
                    let step = lock(core).codec.decode_server(&buf[start..]);
                    let Some(ev) = step.event else { break };
                    let bytes = &buf[start..start + step.consumed];
                    if write(to, bytes, stop).await.is_err() {
                        return End::Reset;
                    }
                    let mut c = lock(core);
                    c.tracker.on_server(&ev, bytes);
                    // A response is answered when its last byte is delivered.
                    let done = match &ev {
                        ServerEvent::Status { seq, cmd, multiline: false, .. } => Some((*seq, cmd.name().to_string())),
                        ServerEvent::Status { seq, cmd, multiline: true, .. } => {
                            c.answering = Some((*seq, cmd.name().to_string()));
                            None
                        }
                        ServerEvent::Body { end: true, .. } => c.answering.take(),
                        _ => None,
                    };
                    if let Some((seq, command)) = done {
                        if let Some(micros) = c.answered(seq, Instant::now()) {
                            ctx.sink.emit(Event::Latency { session: ctx.number, seq, command, micros });
                        }
                    }
                    step.consumed
                }
            };
            start += consumed;
        }
        buf.drain(..start);
        if buf.is_empty() {
            buf = Vec::new();
        }
    }
}

async fn write(to: &mut WriteHalf<'_>, bytes: &[u8], stop: &CancellationToken) -> io::Result<()> {
    let r = tokio::select! {
        _ = stop.cancelled() => Err(io::Error::new(io::ErrorKind::Interrupted, "cut")),
        r = to.write_all(bytes) => r,
    };
    if r.is_err() {
        stop.cancel();
    }
    r
}
