//! The relay: all of popfault's network I/O. It accepts clients, connects
//! upstream, and moves bytes both ways through the pure codec, tracker and
//! fault engine. The engine decides; [`Session::act`] is the one place that
//! carries decisions out, and [`Session::deliver`] the one place that
//! writes relayed bytes, so a fault lands at the exact byte.
//!
//! One task per session. Its two directions are two futures joined in that
//! task with a third that runs timers and manual cuts; they share the pure
//! state under a mutex that is never held across an `.await`. A direction
//! holds only bytes it has read and not yet written: at most one read's
//! worth, or one incomplete line (bounded by RFC 2449's limits).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::ReadHalf;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::control::Control;
use crate::driver::{Accept, Dir, Driver, RunInfo, SessionInfo, Transmit};
use crate::events::{Event, EventSink};
use crate::faults::{Engine, How, RefuseHow};

/// Bytes asked of the kernel per read, growing while reads come back full
/// (a bulk transfer). The least is enough for a typical answer (a message
/// of a few KB, a UIDL listing) to come in one read and go out in one
/// write: with 2 KiB, a 10 KB message took three of each. Idle sessions
/// hold no buffer whatever the size (see `spare`).
const READ_MIN: usize = 16 * 1024;
const READ_MAX: usize = 64 * 1024;

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
    /// Connections the kernel queues before they are accepted (capped by
    /// `net.core.somaxconn`).
    pub backlog: u32,
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
            backlog: DEFAULT_BACKLOG,
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
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Binds `cfg.listen` and relays every client to `cfg.upstream`, with the
/// faults of `control`'s profile.
pub async fn start(cfg: ProxyConfig, control: Arc<Control>, sink: EventSink) -> io::Result<ProxyHandle> {
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
    });
    let counter = AtomicU64::new(0);
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

/// What a session's futures share, apart from its driver.
struct SessionCtx {
    cfg: Arc<ProxyConfig>,
    sink: EventSink,
    /// The proxy is shutting down.
    shutdown: CancellationToken,
    /// This session is being cut (a fault, a manual cut, shutdown): every
    /// wait on it ends.
    cut: CancellationToken,
    /// `cut` as the directions see it, without the token's lock.
    cut_seen: AtomicBool,
    /// The driver queued something for a direction (noise, the proxy's
    /// own answer): a one-shot permit taken by that direction's wait.
    injected: [AtomicBool; 2],
    control: Arc<Control>,
}

fn lock(driver: &Mutex<Driver>) -> MutexGuard<'_, Driver> {
    // A panic elsewhere cannot leave the driver half-updated in a way that
    // matters more than losing the session, so poisoning is ignored.
    driver.lock().unwrap_or_else(|p| p.into_inner())
}

/// How one direction stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The reading side sent FIN; FIN passed on.
    Eof,
    /// The reading side reset, or writing to the other side failed.
    Reset,
    /// The session was cut (fault, manual, idle, shutdown).
    Cut,
}

/// A session's future. Not an `async fn`: those keep their arguments
/// twice (as arguments and as moved locals), and every idle session
/// carries this future whole.
fn run_session(mut client: TcpStream, ctx: SessionCtx, driver: Driver) -> impl Future<Output = ()> + Send {
    let _ = client.set_nodelay(true);
    let driver = Mutex::new(driver);
    async move {
        let number = lock(&driver).number();
        let remote = ctx.control.register(number);
        let s = Session { ctx: &ctx, driver: &driver };
        let ended_by = s.run(&mut client, &remote).await;
        ctx.control.unregister(number);
        let events = driver.into_inner().unwrap_or_else(|p| p.into_inner()).finish(ended_by, Instant::now());
        for ev in events {
            if let Event::SessionEnd(end) = &ev {
                info!(session = end.session, outcome = %end.outcome, user = ?end.user, ended_by = %end.ended_by, "session ended");
            }
            ctx.sink.emit(ev);
        }
    }
}

/// One session's I/O: the thin shell around its [`Driver`].
#[derive(Clone, Copy)]
struct Session<'a> {
    ctx: &'a SessionCtx,
    driver: &'a Mutex<Driver>,
}

impl Session<'_> {
    /// Cuts the session: every wait on it ends.
    fn cut_now(&self) {
        self.ctx.cut_seen.store(true, Ordering::Release);
        self.ctx.cut.cancel();
    }

    fn is_cut(&self) -> bool {
        self.ctx.cut_seen.load(Ordering::Acquire)
    }

    fn paused(&self) -> bool {
        self.ctx.control.paused()
    }

    /// After the driver was told something: its events go out, a stop
    /// ends every wait, and output it queued for a direction is that
    /// direction's to take. Returns whether the task must be polled again.
    fn sync(&self, d: &mut Driver) -> bool {
        if d.has_events() {
            for ev in d.take_events() {
                if let Event::Fault { session, rule, action, point } = &ev {
                    info!(session, rule = %rule, point = %point, actions = %action, "fault");
                }
                self.ctx.sink.emit(ev);
            }
        }
        if d.is_stopped() && !self.is_cut() {
            self.cut_now();
        }
        if d.take_wake() {
            for permit in &self.ctx.injected {
                permit.store(true, Ordering::Release);
            }
            return true;
        }
        false
    }

    /// Has the session's task polled again, so that each direction's wait
    /// sees what was queued for it.
    async fn wake_task(&self) {
        std::future::poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        })
        .await
    }

    /// Returns `ended_by` when the shell knows better than the driver (a
    /// refusal, a failed connect).
    async fn run(self, client: &mut TcpStream, remote: &Notify) -> Option<String> {
        // === accept ===
        let accept = {
            let mut d = lock(self.driver);
            d.set_paused(self.paused());
            let a = d.accept(Instant::now());
            self.sync(&mut d);
            a
        };
        match accept {
            Accept::Connect => {}
            Accept::Refuse { how, text, rule } => return Some(Box::pin(self.refuse(client, how, &text, &rule)).await),
            Accept::Cut => {
                Box::pin(self.finish_cut(client, None)).await;
                return None;
            }
        }
        // A stall at accept holds the connect too.
        let hold = lock(self.driver).hold_until();
        if let Some(h) = hold {
            tokio::select! {
                _ = tokio::time::sleep_until(h.into()) => {}
                _ = self.ctx.cut.cancelled() => {}
            }
        }
        let mut server = match self.connect_upstream().await {
            Err(why) => {
                lock(self.driver).refused();
                // Mirror what a client sees from a dead server: a reset when
                // it refused, a close when it never answered.
                if why.starts_with("refused") {
                    let _ = client.set_zero_linger();
                }
                return Some(why);
            }
            Ok(s) => s,
        };
        let _ = server.set_nodelay(true);

        // === relay ===
        let (up, down) = {
            let (mut cr, mut cw) = client.split();
            let (mut sr, mut sw) = server.split();
            let mut pumps = std::pin::pin!(async {
                tokio::join!(self.pump(Dir::Up, &mut cr, &mut sw), self.pump(Dir::Down, &mut sr, &mut cw))
            });
            // Timers end only by cutting the session, which ends the pumps
            // too; when the pumps end first, the timers are dropped.
            tokio::select! {
                ends = &mut pumps => ends,
                () = gated(self.timers_and_cuts(remote)) => {
                    self.ctx.cut_seen.store(true, Ordering::Release);
                    pumps.await
                }
            }
        };
        if self.ctx.shutdown.is_cancelled() {
            lock(self.driver).shutdown();
        }

        if lock(self.driver).close().is_some() {
            Box::pin(self.finish_cut(client, Some(&mut server))).await;
            return None;
        }
        if up == End::Reset || down == End::Reset || self.ctx.shutdown.is_cancelled() {
            // A reset on one side becomes a reset on the other; a session
            // cut at shutdown is reset both ways, like a lost carrier.
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
        }
        None
    }

    /// Carries out a cut: rst / fin / silent per side, as the driver says.
    /// Silent sides are held open, read and ignored, until they close, the
    /// idle timeout, or shutdown.
    async fn finish_cut(&self, client: &mut TcpStream, server: Option<&mut TcpStream>) {
        let Some((for_client, for_server)) = lock(self.driver).close() else {
            let _ = client.set_zero_linger();
            return;
        };
        let mut silent: Vec<&mut TcpStream> = Vec::new();
        for (how, stream) in [(for_client, Some(client)), (for_server, server)] {
            let Some(stream) = stream else { continue };
            match how {
                How::Rst => {
                    let _ = stream.set_zero_linger();
                }
                How::Fin => {
                    let _ = stream.shutdown().await;
                }
                How::Silent => silent.push(stream),
            }
        }
        if !silent.is_empty() {
            self.hold_silent(silent).await;
        }
    }

    /// Keeps `streams` open and unanswered (the half-open line) until a
    /// peer closes, the idle timeout passes, or the proxy shuts down.
    async fn hold_silent(&self, streams: Vec<&mut TcpStream>) {
        let idle = self.ctx.cfg.idle_timeout;
        let drain = async {
            let mut futs = Vec::new();
            for s in streams {
                futs.push(async move {
                    let mut sink = [0u8; 4096];
                    // Read and drop: bounded memory whatever the peer sends.
                    while let Ok(n) = tokio::time::timeout(idle, s.read(&mut sink)).await {
                        if matches!(n, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                });
            }
            // The first side to close (or go idle) ends the hold.
            let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
            if !futs.is_empty() {
                let _ = futures_select_all(&mut futs).await;
            }
        };
        tokio::select! {
            _ = drain => {}
            _ = self.ctx.shutdown.cancelled() => {}
        }
    }

    async fn refuse(&self, client: &mut TcpStream, how: RefuseHow, text: &str, rule: &str) -> String {
        match how {
            RefuseHow::Rst => {
                let _ = client.set_zero_linger();
            }
            RefuseHow::Close => {
                let _ = client.shutdown().await;
            }
            RefuseHow::Err => {
                let mut line = text.as_bytes().to_vec();
                line.extend_from_slice(b"\r\n");
                let _ = client.write_all(&line).await;
                let _ = client.shutdown().await;
                lock(self.driver).refused_with(line.len());
            }
            RefuseHow::Hang => self.hold_silent(vec![client]).await,
        }
        format!("refused by fault: {rule}")
    }

    async fn connect_upstream(&self) -> Result<TcpStream, String> {
        let upstream = self.ctx.cfg.upstream.as_str();
        let connect = async {
            let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
            for addr in tokio::net::lookup_host(upstream).await? {
                match TcpStream::connect(addr).await {
                    Ok(s) => return Ok(s),
                    Err(e) => last = e,
                }
            }
            Err(last)
        };
        let limit = self.ctx.cfg.connect_timeout;
        tokio::select! {
            _ = self.ctx.cut.cancelled() => Err("upstream connect cancelled".into()),
            r = tokio::time::timeout(limit, connect) => match r {
                Err(_) => Err(format!("upstream connect timed out after {limit:?}")),
                Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => Err(format!("refused by upstream: {e}")),
                Ok(Err(e)) => Err(format!("upstream unreachable: {e}")),
                Ok(Ok(s)) => Ok(s),
            }
        }
    }

    /// Timer faults, manual cuts and the idle and greeting timeouts: the
    /// driver says when; this waits and tells it.
    async fn timers_and_cuts(&self, remote: &Notify) {
        loop {
            let at = lock(self.driver).poll_timeout();
            tokio::select! {
                _ = self.ctx.cut.cancelled() => return,
                _ = remote.notified() => {
                    let mut d = lock(self.driver);
                    d.cut_manual(Instant::now());
                    self.sync(&mut d);
                    return;
                }
                _ = tokio::time::sleep_until(at.into()) => {}
            }
            let (stopped, wake) = {
                let mut d = lock(self.driver);
                d.set_paused(self.paused());
                d.handle_timeout(Instant::now());
                (d.is_stopped(), self.sync(&mut d))
            };
            if stopped {
                return;
            }
            if wake {
                self.wake_task().await;
            }
        }
    }

    /// Moves one direction until EOF, reset or a cut, doing what the
    /// driver says. Holds at most one read's worth of bytes, released when
    /// idle so an idle session costs no buffer.
    async fn pump<R: Source, W: AsyncWrite + Unpin>(&self, dir: Dir, from: &mut R, to: &mut W) -> End {
        let mut buf: Vec<u8> = Vec::new();
        let mut want = READ_MIN;
        let end = loop {
            let (t, wake) = {
                let mut d = lock(self.driver);
                d.set_paused(self.paused());
                let t = d.poll_transmit(dir, &buf, Instant::now());
                (t, self.sync(&mut d))
            };
            if wake {
                self.wake_task().await;
            }
            match t {
                // Writes are boxed: an idle session should not carry a
                // write's state (RSS per session).
                Transmit::Write(range) => {
                    if let Err(e) = Box::pin(self.write(dir, to, &buf[range.clone()])).await {
                        break e;
                    }
                    self.written(dir, &buf, range.len());
                }
                Transmit::Own(bytes) => {
                    if let Err(e) = Box::pin(self.write(dir, to, &bytes)).await {
                        break e;
                    }
                    self.written(dir, &buf, bytes.len());
                }
                Transmit::Wait(at) => {
                    // Boxed: pacing and stalls are rare, and a sleep is big.
                    let cut = Box::pin(async {
                        tokio::select! {
                            _ = tokio::time::sleep_until(at.into()) => false,
                            _ = self.ctx.cut.cancelled() => true,
                        }
                    })
                    .await;
                    if cut {
                        self.ctx.cut_seen.store(true, Ordering::Release);
                        break End::Cut;
                    }
                }
                Transmit::Consumed(n) => {
                    buf.drain(..n);
                }
                Transmit::Eof => {
                    let _ = to.shutdown().await;
                    break End::Eof;
                }
                Transmit::Stop => break End::Cut,
                Transmit::NeedMore => {
                    if self.is_cut() {
                        // Cut from outside (shutdown): the driver learns it
                        // when the session ends.
                        break End::Cut;
                    }
                    // Read first, wait only when there is nothing: a stream
                    // in full flow never builds the wait machinery below.
                    if buf.capacity() == 0 {
                        buf = spare::take();
                    }
                    buf.reserve(want);
                    let room = buf.capacity() - buf.len();
                    match from.read_draining(&mut buf) {
                        Ok(n) => {
                            lock(self.driver).read(dir, n, Instant::now());
                            want = if n >= room { (want * 2).min(READ_MAX) } else { (want / 2).max(READ_MIN) };
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            if buf.is_empty() {
                                // Idle: hold no buffer while waiting, nor
                                // queues that are empty.
                                spare::give(std::mem::take(&mut buf));
                                lock(self.driver).shed();
                            }
                            if let Err(end) = self.wait(dir, from).await {
                                break end;
                            }
                        }
                        Err(e) => {
                            debug!(session = self.number(), ?dir, error = %e, "read failed");
                            let mut d = lock(self.driver);
                            d.read_failed(dir);
                            self.sync(&mut d);
                            break End::Reset;
                        }
                    }
                }
            }
        };
        spare::give(buf);
        end
    }

    fn number(&self) -> u64 {
        lock(self.driver).number()
    }

    /// A write the driver asked for is done.
    fn written(&self, dir: Dir, input: &[u8], n: usize) {
        self.ctx.control.count(dir == Dir::Up, n);
        let mut d = lock(self.driver);
        d.written(dir, input, Instant::now());
        self.sync(&mut d);
    }

    /// Waits until `from` is readable, something is queued toward `dir`,
    /// or the session is cut. Holds no waiter of its own but the socket's:
    /// every future of a session shares its task, which any of them waking
    /// re-polls whole (`join!`, `select!`), and a cut always wakes the
    /// timers' wait on the cut token. This keeps an idle session small.
    async fn wait<R: Source>(&self, dir: Dir, from: &R) -> Result<(), End> {
        std::future::poll_fn(|cx| {
            if self.is_cut() {
                return Poll::Ready(Err(End::Cut));
            }
            if self.ctx.injected[dir as usize].swap(false, Ordering::AcqRel) {
                return Poll::Ready(Ok(()));
            }
            match from.poll_ready(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => {
                    debug!(?dir, error = %e, "wait failed");
                    let mut d = lock(self.driver);
                    d.read_failed(dir);
                    self.sync(&mut d);
                    Poll::Ready(Err(End::Reset))
                }
            }
        })
        .await
    }

    /// Writes `bytes` toward `dir`'s destination, unless the session is cut.
    async fn write<W: AsyncWrite + Unpin>(&self, dir: Dir, to: &mut W, bytes: &[u8]) -> Result<(), End> {
        // Once cut, nothing more goes out. The flag is checked first, and the
        // token only while a write waits: polling the token takes its locks.
        if self.is_cut() {
            return Err(End::Cut);
        }
        tokio::select! {
            biased;
            r = to.write_all(bytes) => r.map_err(|e| {
                debug!(?dir, error = %e, "write failed");
                let mut d = lock(self.driver);
                d.write_failed(dir);
                self.sync(&mut d);
                End::Reset
            }),
            _ = self.ctx.cut.cancelled() => {
                self.ctx.cut_seen.store(true, Ordering::Release);
                Err(End::Cut)
            }
        }
    }
}

/// Read buffers of the smallest size, kept per thread for the next read:
/// a session gives its buffer back each time it goes idle, and a fresh one
/// each time would take malloc's slow path (it is bigger than malloc's
/// per-thread cache), thousands of times a second. A few are kept; an idle
/// session holds none.
mod spare {
    use std::cell::RefCell;

    const KEPT: usize = 16;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub(super) fn take() -> Vec<u8> {
        SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_default()
    }

    pub(super) fn give(mut buf: Vec<u8>) {
        if buf.capacity() != super::READ_MIN {
            return;
        }
        buf.clear();
        SPARE.with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < KEPT {
                s.push(buf);
            }
        });
    }
}

/// What a pump reads from: the stream type is a parameter of the shell, so
/// that another transport (TLS) plugs in without touching the driver. A
/// source reads what it holds without waiting, and says when it may have
/// more; an idle direction then holds no buffer, only this wait.
pub(crate) trait Source {
    /// Reads what is there into `buf`'s spare room; `WouldBlock` when
    /// nothing is.
    fn read_draining(&mut self, buf: &mut Vec<u8>) -> io::Result<usize>;
    /// Ready when a read may find something (or an error).
    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Source for ReadHalf<'_> {
    /// A read that leaves room proves the socket drained, so it also clears
    /// tokio's readiness (as tokio's own `poll_read` does): the next wait
    /// then sleeps at once rather than costing a `recv` that says EAGAIN.
    /// The read happens inside `try_io` so that only the readiness it saw
    /// is cleared, never a newer one.
    fn read_draining(&mut self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let stream: &TcpStream = self.as_ref();
        let room = buf.capacity() - buf.len();
        let mut got = None;
        let r = stream.try_io(Interest::READABLE, || {
            let n = stream.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < room { Err(io::ErrorKind::WouldBlock.into()) } else { Ok(n) }
        });
        match got {
            Some(n) => Ok(n),
            None => r,
        }
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream: &TcpStream = self.as_ref();
        stream.poll_read_ready(cx)
    }
}

/// Runs `fut`, polling it only when one of its own wakers fired. A
/// session's futures share one task, and `join!`/`select!` poll each of
/// them whenever any is woken: nearly every wake-up is for a pump, and the
/// timers' wait (the cut token, the manual cut, a sleep) takes locks each
/// time it is polled.
fn gated<F: Future>(fut: F) -> Gated<F> {
    let gate = Arc::new(Gate { woken: AtomicBool::new(true), task: OnceLock::new() });
    Gated { fut, waker: Waker::from(gate.clone()), gate }
}

pin_project_lite::pin_project! {
    /// See [`gated`]. A struct, not an `async fn`: that would hold `fut`
    /// twice in every session's state.
    struct Gated<F> {
        #[pin]
        fut: F,
        gate: Arc<Gate>,
        waker: Waker,
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let task = this.gate.task.get_or_init(|| cx.waker().clone());
        if !task.will_wake(cx.waker()) {
            // Polled on behalf of another task: no gate.
            return this.fut.poll(cx);
        }
        // Cleared before polling: a wake-up during the poll is kept.
        if !this.gate.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        this.fut.poll(&mut Context::from_waker(this.waker))
    }
}

/// The waker of a [`gated`] future: marks it woken, then wakes its task.
struct Gate {
    woken: AtomicBool,
    task: OnceLock<Waker>,
}

impl Wake for Gate {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        if let Some(task) = self.task.get() {
            task.wake_by_ref();
        }
    }
}

/// Resolves when the first of `futs` does (a tiny `select_all`, to avoid
/// a dependency for one use).
async fn futures_select_all<F: std::future::Future<Output = ()> + Unpin>(futs: &mut [F]) {
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

#[cfg(test)]
mod size_probe {
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
            let control =
                std::sync::Arc::new(super::Control::new(std::sync::Arc::new(crate::faults::Profile::passthrough()), 1));
            let stop = super::CancellationToken::new();
            let run = super::RunInfo {
                upstream: "127.0.0.1:1".into(),
                run_started: std::time::Instant::now(),
                idle_timeout: std::time::Duration::from_secs(600),
                greeting_timeout: std::time::Duration::from_secs(30),
                wants_progress: false,
            };
            let info = super::SessionInfo {
                number: 1,
                peer,
                seed: 1,
                started: std::time::Instant::now(),
                run: std::sync::Arc::new(run),
            };
            let driver = super::Driver::new(info, super::Engine::new(control.profile(), 1, 1));
            let ctx = super::SessionCtx {
                cfg: std::sync::Arc::new(super::ProxyConfig::new(addr, "127.0.0.1:1")),
                sink: super::EventSink::discard(),
                shutdown: stop.clone(),
                cut: stop.child_token(),
                cut_seen: Default::default(),
                injected: Default::default(),
                control: control.clone(),
            };
            let fut = super::run_session(s, ctx, driver);
            // Every idle session costs at least this much: keep it small
            // (rare fault paths and the relaying of a read are boxed; an idle
            // direction waits on its socket alone). See docs/PERFORMANCE.md.
            let size = std::mem::size_of_val(&fut);
            assert!(size <= 2304, "a session's future is {size} bytes");
        });
    }
}
